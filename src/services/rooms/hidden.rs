//! What purges hide from clients, as Synapse does: a history purge starts
//! the room's timeline at its purge point (the room's *history floor*, a
//! depth): the state events kept below it are no longer served in
//! `/messages`, `/context` or `/sync` timelines.
//!
//! Read on every timeline, so kept in memory: loaded from the database at
//! first use, updated by whoever changes it. Rooms never purged pay a map
//! lookup.

use std::collections::HashMap;

use parking_lot::Mutex;
use ruma::{OwnedRoomId, RoomId};
use tokio::sync::OnceCell;

use super::Rooms;
use crate::error::Result;

#[derive(Default)]
pub(super) struct Hidden {
    floors: OnceCell<Mutex<HashMap<OwnedRoomId, i64>>>,
}

impl Rooms {
    async fn floors(&self) -> Result<&Mutex<HashMap<OwnedRoomId, i64>>> {
        self.hidden
            .floors
            .get_or_try_init(|| async {
                let rows = self.storage.history_floors().await?;
                let map = rows
                    .into_iter()
                    .filter_map(|(room, depth)| Some((OwnedRoomId::try_from(room).ok()?, depth)))
                    .collect();
                Ok(Mutex::new(map))
            })
            .await
    }

    /// The depth the room's timeline starts at after history purges (0:
    /// never purged). Events below it are not served in timelines.
    pub async fn history_floor(&self, room_id: &RoomId) -> Result<i64> {
        Ok(self
            .floors()
            .await?
            .lock()
            .get(room_id)
            .copied()
            .unwrap_or(0))
    }

    /// Notes a history purge's new floor (already stored with the purge).
    pub async fn raise_history_floor(&self, room_id: &RoomId, depth: i64) -> Result<()> {
        let mut floors = self.floors().await?.lock();
        let floor = floors.entry(room_id.to_owned()).or_insert(depth);
        *floor = (*floor).max(depth);
        Ok(())
    }

    /// Forgets a purged room's floor (the room is gone).
    pub async fn forget_history_floor(&self, room_id: &RoomId) -> Result<()> {
        self.floors().await?.lock().remove(room_id);
        Ok(())
    }
}
