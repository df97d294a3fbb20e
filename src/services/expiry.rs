//! Ephemeral messages (MSC2228, `rooms.ephemeral_messages`): a message whose
//! content has `org.matrix.self_destruct_after` (a time in ms) is pruned by
//! its room version's redaction rules once that time passes, as Synapse
//! "expires" it: clients then get it with its content emptied, and it
//! leaves the search index.
//!
//! The time is written with the event (`event_expiry`, in the event's own
//! transaction), so it survives a restart. The worker (`lifecycle.rs`)
//! looks once a second at the earliest time it knows ([`MessageExpiry`]:
//! read from the database as the server starts and after each pass, lowered by every
//! committed event that asks to be pruned) and prunes each due message in
//! a transaction of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::config::RoomsConfig;
use crate::error::Result;
use crate::services::Services;
use crate::services::pipeline::{Batch, Settled, Subscriber, Subscribers};
use crate::storage::expiry::ExpiryRow;

/// Messages pruned per pass (the rest at the next tick).
const PER_PASS: i64 = 100;
/// After a failed pass, how long until the next try (ms).
const RETRY_MS: i64 = 60_000;

/// The earliest time a known message is to be pruned at.
pub struct MessageExpiry {
    /// `i64::MAX` when none is due.
    next: AtomicI64,
}

impl MessageExpiry {
    /// When `rooms.ephemeral_messages` is on: a new one, hearing of every
    /// committed event, that knows the earliest time stored. Read here, while
    /// the server starts, so the worker touches the database only when a
    /// message is due (a server with none never does).
    pub async fn subscribed(
        rooms: &RoomsConfig,
        subscribers: &Subscribers,
        storage: &crate::storage::Storage,
    ) -> sqlx::Result<Option<Arc<Self>>> {
        if !rooms.ephemeral_messages {
            return Ok(None);
        }
        let next = storage.next_expiry().await?.unwrap_or(i64::MAX);
        let expiry = Arc::new(Self {
            next: AtomicI64::new(next),
        });
        subscribers.subscribe(expiry.clone());
        Ok(Some(expiry))
    }

    /// Whether a pass is due at `now`.
    pub fn due(&self, now: i64) -> bool {
        self.next.load(Ordering::Acquire) <= now
    }
}

impl Subscriber for MessageExpiry {
    /// Every committed message that asks to be pruned brings the next pass
    /// forward (its row is written by then, so the pass finds it).
    fn committed(&self, batch: &Batch) -> Option<Settled> {
        for event in batch.events.iter() {
            if let Some(at) = event.pdu.self_destruct_after() {
                self.next.fetch_min(at, Ordering::AcqRel);
            }
        }
        None
    }
}

/// Prunes every message whose time came, then reads when the next one is
/// due. A message committed meanwhile lowers that time itself.
pub async fn expire_due(s: &Services, expiry: &MessageExpiry) -> Result<()> {
    let now = s.clock.now_ms();
    expiry.next.store(i64::MAX, Ordering::Release);
    let passed = prune_due(s, now).await;
    let next = match &passed {
        Ok(()) => s
            .storage
            .next_expiry()
            .await
            .unwrap_or(Some(now + RETRY_MS)),
        Err(_) => Some(now + RETRY_MS),
    };
    expiry
        .next
        .fetch_min(next.unwrap_or(i64::MAX), Ordering::AcqRel);
    passed
}

async fn prune_due(s: &Services, now: i64) -> Result<()> {
    loop {
        let due = s.storage.due_expiries(now, PER_PASS).await?;
        let more = due.len() as i64 == PER_PASS;
        for row in due {
            prune(s, &row).await?;
        }
        if !more {
            return Ok(());
        }
    }
}

/// One message: its pruned form stored and its expiry gone (one
/// transaction), then out of the event cache and the search index.
async fn prune(s: &Services, row: &ExpiryRow) -> Result<()> {
    let pruned = match s.rooms.pdu_shared(row.event_id.as_str()).await? {
        Some(pdu) => {
            let version = s.rooms.known_version(&row.room_id).await?;
            pdu.pruned_text(&version)
        }
        None => None,
    };
    // A reindex running now could put the old text back.
    let _no_reindex = match &s.search {
        Some(search) => Some(search.purge_guard().await),
        None => None,
    };
    s.storage
        .expire_event(row.event_id.as_str(), pruned.as_deref())
        .await?;
    s.rooms.forget_events(std::slice::from_ref(&row.event_id));
    if let Some(search) = &s.search {
        search.delete_events(&[row.stream_ordering])?;
    }
    tracing::debug!(event_id = %row.event_id, "ephemeral message expired");
    Ok(())
}
