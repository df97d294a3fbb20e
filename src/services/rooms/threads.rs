//! Thread summaries in event answers: a thread root a user is shown carries
//! `unsigned.m.relations.m.thread` (`latest_event` in the client form the
//! viewer would see, `count`, `current_user_participated`).
//!
//! Only rooms that have threads cost a query: the rooms with a thread reply
//! are known in memory (read once at first use, and every thread reply adds
//! its room when it is built, before it is written). Then one query per
//! answer (`Storage::thread_summaries`) covers all its events of those rooms.

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::Mutex;
use ruma::{OwnedRoomId, RoomId};
use serde::Serialize;

use super::Rooms;
use crate::error::{MatrixError, Result};
use crate::model::pdu::{AsPdu, ClientEvent, Pdu};
use crate::model::viewer::ViewerTxns;

/// The rooms known to have a thread reply. A room may stay after its
/// threads are gone (a purge, redactions): that costs a query, never a
/// wrong answer.
#[derive(Default)]
pub(super) struct ThreadRooms {
    rooms: Mutex<HashSet<OwnedRoomId>>,
    loaded: tokio::sync::OnceCell<()>,
}

#[derive(Serialize)]
struct Aggregations<'a> {
    #[serde(rename = "m.thread")]
    thread: ThreadAggregation<'a>,
}

#[derive(Serialize)]
struct ThreadAggregation<'a> {
    latest_event: &'a ClientEvent,
    count: i64,
    current_user_participated: bool,
}

/// The rel_type of a thread reply.
pub const THREAD: &str = "m.thread";

impl Rooms {
    /// Notes an event's relation before it is written: a thread reply
    /// makes its room one with threads.
    pub(super) fn note_relation(&self, room_id: &RoomId, relation: Option<&(String, String)>) {
        if relation.is_some_and(|(_, rel_type)| rel_type == THREAD) {
            self.thread_rooms.rooms.lock().insert(room_id.to_owned());
        }
    }

    /// Whether the room has (or had) a thread reply.
    pub async fn has_threads(&self, room_id: &RoomId) -> Result<bool> {
        self.thread_rooms
            .loaded
            .get_or_try_init(|| async {
                let rooms = self.storage.rooms_with_threads().await?;
                self.thread_rooms.rooms.lock().extend(rooms);
                Ok::<_, MatrixError>(())
            })
            .await?;
        Ok(self.thread_rooms.rooms.lock().contains(room_id))
    }

    /// Adds the thread summaries to the client forms `out` of `pdus` (in
    /// the same order) for the viewer of `txns`; nothing without a viewer.
    pub(super) async fn add_thread_summaries<P: AsPdu>(
        &self,
        pdus: &[P],
        out: &mut [ClientEvent],
        txns: &ViewerTxns,
    ) -> Result<()> {
        let Some(viewer) = txns.user() else {
            return Ok(());
        };
        let mut roots: Vec<&str> = Vec::new();
        let mut last: Option<(&RoomId, bool)> = None;
        for held in pdus {
            let pdu = held.as_pdu();
            let threaded = match last {
                Some((room, threaded)) if room == &*pdu.room_id => threaded,
                _ => {
                    let threaded = self.has_threads(&pdu.room_id).await?;
                    last = Some((&pdu.room_id, threaded));
                    threaded
                }
            };
            if threaded && pdu.redacted_by.is_none() {
                roots.push(pdu.event_id.as_str());
            }
        }
        if roots.is_empty() {
            return Ok(());
        }
        let summaries = self.storage.thread_summaries(&roots, viewer).await?;
        if summaries.is_empty() {
            return Ok(());
        }
        for (held, form) in pdus.iter().zip(out.iter_mut()) {
            let root = held.as_pdu();
            let Some(summary) = summaries.get(&root.event_id) else {
                continue;
            };
            let Some(latest) = self.pdu_shared(summary.latest_event_id.as_str()).await? else {
                continue;
            };
            let latest: [Arc<Pdu>; 1] = [latest];
            let Some(latest_event) = self.client_forms(&latest, txns).await?.pop() else {
                continue;
            };
            let aggregations = Aggregations {
                thread: ThreadAggregation {
                    latest_event: &latest_event,
                    count: summary.count,
                    current_user_participated: summary.viewer_replied
                        || root.sender.as_str() == viewer,
                },
            };
            form.set_relations(
                serde_json::value::to_raw_value(&aggregations).map_err(MatrixError::internal)?,
            );
        }
        Ok(())
    }
}
