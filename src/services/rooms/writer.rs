//! The group commit: every new event goes to one writer task, which writes
//! whatever has queued up since its last write in one transaction.
//!
//! An append builds, signs and authorizes its event under the room's lock,
//! advances the room head in memory, queues the event here and releases
//! the lock; it answers its client once the writer reports the event
//! committed. So the next event of the room is built while this one is
//! written, and a burst of events costs one transaction and one wake-up of
//! the waiting `/sync`s instead of one each.
//!
//! The writer runs as its own task: a client that goes away mid-request
//! cannot cancel a write half-way or leave its stream position in flight
//! (which would stall every `/sync`).
//!
//! Once a batch is committed the writer publishes its events to the
//! pipeline's subscribers (`services/pipeline.rs`: search, unread counts),
//! before the positions complete, and each sender waits for what those
//! subscribers ask it to (search indexing: see `search::Indexer`).
//!
//! If a batch fails, its events are retried one at a time, so a bad event
//! fails only itself and the events of its room built on it. Such a room's
//! head is marked failed (a flag it shares with the events queued on it and
//! its copy of the current state): the next append reloads it
//! from the database, and queued events built on the old head fail.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use ruma::{OwnedRoomId, RoomId};
use tokio::sync::{mpsc, oneshot};

use crate::error::{MatrixError, Result};
use crate::model::pdu::Pdu;
use crate::services::pipeline::{Batch, Committed, EventLookup, Settled, Subscribers};
use crate::services::stream::{Reservation, Stream};
use crate::services::workers::{Stage, Stop, Workers};
use crate::storage::Storage;
use crate::storage::events::PersistEvent;

/// At most this many events go in one transaction.
const MAX_BATCH: usize = 256;

/// One event waiting to be written.
pub(super) struct PendingWrite {
    pub row: PersistEvent,
    pub room_id: OwnedRoomId,
    /// The failure flag of the room head it was built on.
    pub head_failed: HeadFailed,
    pub reservation: Reservation,
    /// The event as cached.
    pub pdu: Arc<Pdu>,
    /// Answered once the event is committed, with what the sender waits
    /// for before it answers its client.
    pub done: oneshot::Sender<Result<Vec<Settled>>>,
    /// When it was queued (`myelin_event_writer_queue_wait_seconds`).
    pub queued: std::time::Instant,
}

/// Set once an event built on a room head could not be written: the head
/// is then ahead of the database for good, so it is reloaded, and the
/// events still queued on it fail. The head, its copy of the current state
/// (`Rooms::current`) and each event queued on it share one flag, so the
/// flag lives exactly as long as they do (no server-wide set of failed
/// heads to grow).
#[derive(Clone, Default)]
pub(super) struct HeadFailed(Arc<AtomicBool>);

impl HeadFailed {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// What the writer updates once events are committed.
pub(super) struct Writer {
    pub storage: Storage,
    pub stream: Arc<Stream>,
    pub latest: Arc<Mutex<lru::LruCache<OwnedRoomId, i64>>>,
    pub events: Arc<Mutex<lru::LruCache<String, Arc<Pdu>>>>,
    pub subscribers: Arc<Subscribers>,
    pub lookup: Arc<dyn EventLookup>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Writer {
    /// Starts the writer task on `rx` (see [`Stage::Drain`]). At shutdown
    /// it stops taking events (a later append fails) and writes every
    /// event already queued; it also ends when every sender is dropped.
    pub fn start(self, rx: mpsc::UnboundedReceiver<PendingWrite>, workers: &Workers) {
        workers.spawn("event writer", Stage::Drain, move |stop| self.run(rx, stop));
    }

    async fn run(self, mut rx: mpsc::UnboundedReceiver<PendingWrite>, mut stop: Stop) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            tokio::select! {
                biased;
                n = rx.recv_many(&mut batch, MAX_BATCH) => {
                    if n == 0 {
                        return;
                    }
                    self.write(std::mem::take(&mut batch)).await;
                }
                () = stop.requested() => break,
            }
        }
        rx.close();
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            self.write(std::mem::take(&mut batch)).await;
        }
    }

    async fn write(&self, batch: Vec<PendingWrite>) {
        // Events built on a head whose write failed before fail at once.
        let mut results: Vec<Result<()>> = batch
            .iter()
            .map(|w| match w.head_failed.is_set() {
                true => Err(built_on_failed()),
                false => Ok(()),
            })
            .collect();
        let live: Vec<usize> = (0..batch.len()).filter(|&i| results[i].is_ok()).collect();
        let rows: Vec<&PersistEvent> = live.iter().map(|&i| &batch[i].row).collect();
        let started = std::time::Instant::now();
        for w in &batch {
            self.metrics
                .writer_queue_wait
                .observe(started.duration_since(w.queued).as_secs_f64());
        }
        let written = self.storage.persist_events(&rows).await;
        self.metrics
            .commit_duration
            .observe(started.elapsed().as_secs_f64());
        self.metrics.commit_batch.observe(rows.len() as f64);
        if let Err(e) = written {
            tracing::warn!(error = %e, events = rows.len(), "group commit failed; writing its events one at a time");
            let mut failed: HashSet<&RoomId> = HashSet::new();
            for &i in &live {
                let item = &batch[i];
                if failed.contains(&*item.room_id) {
                    results[i] = Err(built_on_failed());
                    continue;
                }
                if let Err(e) = self.storage.persist_events(&[&item.row]).await {
                    failed.insert(&*item.room_id);
                    results[i] = Err(e.into());
                }
            }
        }

        // Everything a reader consults goes in before the positions
        // complete: a `/sync` woken at a position must find its events.
        {
            let mut latest = self.latest.lock();
            for (item, result) in batch.iter().zip(&results) {
                if result.is_ok() {
                    let last = latest.get_or_insert_mut_ref(&item.room_id, || 0);
                    *last = (*last).max(item.row.stream_ordering);
                }
            }
        }
        {
            let mut events = self.events.lock();
            for (item, result) in batch.iter().zip(&results) {
                match (result, &item.pdu.redacts) {
                    (Ok(()), Some(target)) => {
                        // The cached copy of the target does not know it is redacted.
                        events.pop(target.as_str());
                    }
                    (Err(_), _) => {
                        events.pop(item.row.event_id.as_str());
                    }
                    _ => {}
                }
            }
        }
        for (item, result) in batch.iter().zip(&results) {
            if result.is_err() {
                item.head_failed.set();
            }
        }
        // Subscribers hear of the batch before its positions complete, so
        // nothing a reader or a sender sees can be ahead of them.
        let committed: Arc<[Committed]> = batch
            .iter()
            .zip(&results)
            .filter(|(_, result)| result.is_ok())
            .map(|(item, _)| Committed {
                pdu: item.pdu.clone(),
                pos: item.row.stream_ordering,
                redacts: item.pdu.redacts.clone(),
            })
            .collect();
        self.metrics.events_persisted.inc_by(committed.len() as u64);
        let settled = self.subscribers.publish(&Batch {
            events: committed,
            lookup: self.lookup.clone(),
        });
        let mut reservations = Vec::with_capacity(batch.len());
        let mut answers = Vec::with_capacity(batch.len());
        for (item, result) in batch.into_iter().zip(results) {
            reservations.push(item.reservation);
            answers.push((item.done, result));
        }
        self.stream.complete_many(reservations);
        for (done, result) in answers {
            // The client may have gone; the event is written all the same.
            let _ = done.send(result.map(|()| settled.clone()));
        }
    }
}

fn built_on_failed() -> MatrixError {
    MatrixError::internal("an earlier event of this room could not be stored")
}
