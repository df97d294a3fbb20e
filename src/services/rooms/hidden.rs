//! What purges and erasure hide from clients, as Synapse does:
//!
//! - a history purge starts the room's timeline at its purge point (the
//!   room's *history floor*, a depth): the state events kept below it are
//!   no longer served in `/messages`, `/context` or `/sync` timelines, nor
//!   counted as unread;
//! - the events of an erased user (deactivated with `erase`) are served
//!   redacted to anyone who was not joined to the room when they were sent.
//!
//! Both are read on every timeline, so both are kept in memory: loaded from
//! the database at first use, updated by whoever changes them. Rooms never
//! purged and servers without erased users pay a map lookup.

use std::collections::{HashMap, HashSet};

use parking_lot::Mutex;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use tokio::sync::OnceCell;

use super::Rooms;
use crate::error::Result;
use crate::model::pdu::Pdu;

#[derive(Default)]
pub(super) struct Hidden {
    floors: OnceCell<Mutex<HashMap<OwnedRoomId, i64>>>,
    erased: OnceCell<Mutex<HashSet<OwnedUserId>>>,
}

impl Hidden {
    /// (rooms with a history floor, erased accounts) as loaded so far.
    pub(super) fn sizes(&self) -> (usize, usize) {
        (
            self.floors.get().map_or(0, |f| f.lock().len()),
            self.erased.get().map_or(0, |e| e.lock().len()),
        )
    }
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

    async fn erased(&self) -> Result<&Mutex<HashSet<OwnedUserId>>> {
        self.hidden
            .erased
            .get_or_try_init(|| async {
                let users = self.storage.erased_users().await?;
                Ok(Mutex::new(users.into_iter().collect()))
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

    /// Notes that an account was erased, or is no longer (already stored
    /// on the account).
    pub async fn note_erased(&self, user: &UserId, erased: bool) -> Result<()> {
        let mut set = self.erased().await?.lock();
        if erased {
            set.insert(user.to_owned());
        } else {
            set.remove(user);
        }
        Ok(())
    }

    /// Whether `viewer` gets `pdu` redacted because its sender was erased:
    /// unless the viewer is the sender or was joined to the room when it
    /// was sent (Synapse's rule).
    pub(super) async fn erased_for(&self, viewer: &str, pdu: &Pdu) -> Result<bool> {
        if pdu.sender.as_str() == viewer || !self.erased().await?.lock().contains(&pdu.sender) {
            return Ok(false);
        }
        let Ok(viewer) = UserId::parse(viewer) else {
            return Ok(true);
        };
        let before = self.state_before(pdu).await?;
        Ok(self.membership_in(&before, &viewer).await?.as_deref() != Some("join"))
    }
}
