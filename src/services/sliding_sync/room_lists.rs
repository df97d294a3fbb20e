//! Each syncing user's rooms, kept in memory, so a first response sorts
//! and windows a user's rooms without reading every membership from the
//! database (issue 21): per room the user's membership and its position,
//! an invite's sender and `is_direct`; per user their `m.direct` rooms and
//! tags; per room (shared by every list holding it) its two newest
//! `bump_stamp` positions, whether it is encrypted and its type.
//!
//! A list is read from the database once, when its user first syncs, and
//! kept up to date from then on by the event pipeline (member events, the
//! events that bump a room, `m.room.encryption`) and by account data
//! changes (`m.direct`, `m.tag`). Each change carries its stream position
//! and a newer one always wins, so the order in which the database read and
//! the changes arrive does not matter: a list (and a room's facts) is put
//! in place *before* its read starts, so a change committed after the read
//! began is heard by the list, and one committed before is in the read.
//!
//! Memory: whole users are kept, least recently synced first out, while
//! the rooms over all lists stay within `caches.sliding_sync_rooms`; a
//! room's facts live as long as a list holds the room. An evicted user's
//! list is read again at their next sync.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use ruma::events::room::member::MembershipState;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::Value;

use super::BUMP_TYPES;
use crate::error::Result;
use crate::services::Services;
use crate::services::account_data::{AccountDataChange, AccountDataListener};
use crate::services::pipeline::{Batch, Settled, Subscriber};

/// The users' room lists and the facts of their rooms.
pub(crate) struct RoomLists {
    users: Mutex<Users>,
    rooms: Mutex<RoomIndex>,
    /// The most rooms kept over all lists (whole users go beyond it).
    max_entries: usize,
}

struct Users {
    /// Least recently synced first out (by [`RoomLists::shrink`]).
    lru: lru::LruCache<OwnedUserId, Arc<UserRooms>>,
    /// The rooms over the lists in `lru`: every change of a list in it is
    /// made under this lock, so the count stays exact.
    entries: usize,
}

/// The facts of every room some list holds (the pipeline updates them
/// here); an entry whose facts no list holds any more is dropped when the
/// index next grows past `clean_at`.
struct RoomIndex {
    map: HashMap<OwnedRoomId, Weak<RoomFacts>>,
    clean_at: usize,
}

impl RoomIndex {
    /// The room's facts, made (unread) when no list holds them.
    fn get_or_make(&mut self, room_id: &RoomId) -> Arc<RoomFacts> {
        if let Some(facts) = self.map.get(room_id).and_then(Weak::upgrade) {
            return facts;
        }
        let facts = Arc::new(RoomFacts {
            room_id: room_id.to_owned(),
            inner: Mutex::default(),
        });
        self.map.insert(room_id.to_owned(), Arc::downgrade(&facts));
        if self.map.len() >= self.clean_at {
            self.map.retain(|_, w| w.strong_count() > 0);
            self.clean_at = (self.map.len() * 2).max(1024);
        }
        facts
    }

    fn get(&self, room_id: &RoomId) -> Option<Arc<RoomFacts>> {
        self.map.get(room_id).and_then(Weak::upgrade)
    }
}

/// One user's rooms.
pub(crate) struct UserRooms {
    state: RwLock<UserState>,
    /// Held while the list is read from the database (once).
    loading: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct UserState {
    /// Whether the database read is merged in (until then the list holds
    /// only what changed since it was put in place).
    loaded: bool,
    rooms: HashMap<OwnedRoomId, Member>,
    /// `m.direct`'s rooms, and the position they were stored at.
    direct: (i64, Arc<HashSet<OwnedRoomId>>),
    /// `m.tag`'s names per room (copied when changed), and each room's
    /// position.
    tags: Arc<HashMap<OwnedRoomId, HashSet<String>>>,
    tag_positions: HashMap<OwnedRoomId, i64>,
}

/// The user's membership of one room.
pub(crate) struct Member {
    pub membership: MembershipState,
    /// The stream position of the member event.
    pub pos: i64,
    /// An invite's sender.
    pub inviter: Option<OwnedUserId>,
    /// An invite marked `is_direct`.
    pub invite_direct: bool,
    pub room: Arc<RoomFacts>,
}

impl Member {
    /// Whether a member event at `pos` is news to this entry.
    fn older_than(&self, pos: i64) -> bool {
        self.pos < pos
    }
}

/// A member event as the lists keep it.
struct MemberChange {
    membership: MembershipState,
    pos: i64,
    inviter: Option<OwnedUserId>,
    invite_direct: bool,
}

impl UserState {
    /// Applies a member event unless the list has a newer one; whether the
    /// room is new to the list.
    fn apply_member(
        &mut self,
        room_id: &RoomId,
        change: MemberChange,
        index: &mut RoomIndex,
    ) -> bool {
        if let Some(m) = self.rooms.get_mut(room_id) {
            if m.older_than(change.pos) {
                m.membership = change.membership;
                m.pos = change.pos;
                m.inviter = change.inviter;
                m.invite_direct = change.invite_direct;
            }
            return false;
        }
        self.rooms.insert(
            room_id.to_owned(),
            Member {
                membership: change.membership,
                pos: change.pos,
                inviter: change.inviter,
                invite_direct: change.invite_direct,
                room: index.get_or_make(room_id),
            },
        );
        true
    }

    fn apply_direct(&mut self, pos: i64, content: &Value) {
        if pos > self.direct.0 {
            self.direct = (pos, Arc::new(direct_rooms(content)));
        }
    }

    fn apply_tags(&mut self, room_id: &RoomId, pos: i64, content: &Value) {
        if self.tag_positions.get(room_id).is_some_and(|p| *p >= pos) {
            return;
        }
        self.tag_positions.insert(room_id.to_owned(), pos);
        let names = tag_names(content);
        let tags = Arc::make_mut(&mut self.tags);
        if names.is_empty() {
            tags.remove(room_id);
        } else {
            tags.insert(room_id.to_owned(), names);
        }
    }
}

/// The rooms of an `m.direct` content (user → rooms).
fn direct_rooms(content: &Value) -> HashSet<OwnedRoomId> {
    content
        .as_object()
        .into_iter()
        .flat_map(|map| map.values())
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|r| r.as_str().and_then(|r| RoomId::parse(r).ok()))
        .collect()
}

/// The tag names of an `m.tag` content.
fn tag_names(content: &Value) -> HashSet<String> {
    content
        .get("tags")
        .and_then(Value::as_object)
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

/// What the lists know of a room, shared by every list holding it.
pub(crate) struct RoomFacts {
    pub room_id: OwnedRoomId,
    inner: Mutex<FactsInner>,
}

#[derive(Default)]
struct FactsInner {
    /// The two newest positions of [`BUMP_TYPES`] events known (newest
    /// first): the room's two newest once `bumps_loaded`.
    bumps: (Option<i64>, Option<i64>),
    bumps_loaded: bool,
    /// An `m.room.encryption` state event was seen (by the pipeline, or in
    /// the current state read when `state_loaded`).
    encrypted: bool,
    /// The create event's `type`, once read.
    room_type: Option<Option<String>>,
}

impl FactsInner {
    /// Keeps `pos` if it is one of the two newest.
    fn note_bump(&mut self, pos: i64) {
        match self.bumps {
            (Some(a), _) if a == pos => {}
            (_, Some(b)) if b == pos => {}
            (None, _) => self.bumps.0 = Some(pos),
            (Some(a), _) if pos > a => self.bumps = (Some(pos), Some(a)),
            (Some(_), b) if b.is_none_or(|b| pos > b) => self.bumps.1 = Some(pos),
            _ => {}
        }
    }

    /// The newest bump at or before `to`, when the two kept decide it:
    /// `Some(None)` when the room has none.
    fn bump_at(&self, to: i64) -> Option<Option<i64>> {
        if !self.bumps_loaded {
            return None;
        }
        match self.bumps {
            (None, _) => Some(None),
            (Some(a), _) if a <= to => Some(Some(a)),
            (Some(_), Some(b)) if b <= to => Some(Some(b)),
            // Both newer than `to` (or only one known): older ones are not kept.
            _ => None,
        }
    }
}

impl RoomFacts {
    /// The stream position of the room's newest [`BUMP_TYPES`] event at or
    /// before `to` (from memory unless the room's newest two are both
    /// after it, or the room was never read).
    pub async fn bump_stamp(&self, s: &Services, to: i64) -> Result<Option<i64>> {
        let room_id = &self.room_id;
        if let Some(known) = self.inner.lock().bump_at(to) {
            return Ok(known);
        }
        if !self.inner.lock().bumps_loaded {
            // Read after the facts were put in place: newer bumps came
            // through the pipeline already or are in this read.
            let newest = s
                .storage
                .room_newest_of_types(room_id.as_str(), BUMP_TYPES, (0, i64::MAX))
                .await?;
            let mut f = self.inner.lock();
            if let Some(pos) = newest {
                f.note_bump(pos);
            }
            f.bumps_loaded = true;
            if let Some(known) = f.bump_at(to) {
                return Ok(known);
            }
        }
        Ok(s.storage
            .room_newest_of_types(room_id.as_str(), BUMP_TYPES, (0, to))
            .await?)
    }

    /// Reads the newest bump of the rooms whose facts were never read, all
    /// together ([`RoomFacts::bump_stamp`] reads one room alone).
    pub async fn load_bumps(s: &Services, rooms: &[&Arc<RoomFacts>]) -> Result<()> {
        let unread: Vec<&Arc<RoomFacts>> = rooms
            .iter()
            .filter(|f| !f.inner.lock().bumps_loaded)
            .copied()
            .collect();
        if unread.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = unread.iter().map(|f| f.room_id.as_str()).collect();
        // Read after the facts were put in place (see `bump_stamp`).
        let newest = s.storage.rooms_newest_of_types(&ids, BUMP_TYPES).await?;
        for facts in unread {
            let mut f = facts.inner.lock();
            if let Some(pos) = newest.get(&facts.room_id) {
                f.note_bump(*pos);
            }
            f.bumps_loaded = true;
        }
        Ok(())
    }

    /// A bump position known without the database, if any.
    pub fn known_bump(&self, to: i64) -> Option<Option<i64>> {
        self.inner.lock().bump_at(to)
    }

    /// Whether the room has an `m.room.encryption` state event.
    pub async fn encrypted(&self, s: &Services) -> Result<bool> {
        self.load_state(s).await?;
        Ok(self.inner.lock().encrypted)
    }

    /// The room's type (`m.space`, …), from its create event.
    pub async fn room_type(&self, s: &Services) -> Result<Option<String>> {
        self.load_state(s).await?;
        Ok(self.inner.lock().room_type.clone().flatten())
    }

    /// Reads the encryption and the type from the current state, once.
    async fn load_state(&self, s: &Services) -> Result<()> {
        if self.inner.lock().room_type.is_some() {
            return Ok(());
        }
        let (encrypted, room_type) = match s.rooms.current_state(&self.room_id).await {
            Ok(state) => {
                let encrypted = state
                    .get(&("m.room.encryption".to_owned(), String::new()))
                    .is_some();
                let room_type = s
                    .rooms
                    .state_content(&state, "m.room.create", "")
                    .await?
                    .and_then(|c| c.get("type").and_then(Value::as_str).map(str::to_owned));
                (encrypted, room_type)
            }
            Err(_) => (false, None),
        };
        let mut f = self.inner.lock();
        f.encrypted |= encrypted;
        f.room_type = Some(room_type);
        Ok(())
    }
}

/// What one answer takes of a user's list: what it made of the rooms, and
/// the user's `m.direct` rooms and tags.
pub(crate) struct ListView<T> {
    pub rooms: Vec<T>,
    pub direct: Arc<HashSet<OwnedRoomId>>,
    pub tags: Arc<HashMap<OwnedRoomId, HashSet<String>>>,
}

impl RoomLists {
    pub fn new(max_entries: usize) -> Self {
        Self {
            users: Mutex::new(Users {
                lru: lru::LruCache::unbounded(),
                entries: 0,
            }),
            rooms: Mutex::new(RoomIndex {
                map: HashMap::new(),
                clean_at: 1024,
            }),
            max_entries: max_entries.max(1),
        }
    }

    /// What `take` makes of each of the user's rooms (the list is read
    /// from the database at the user's first sync), with their `m.direct`
    /// rooms and tags.
    pub async fn view<T>(
        &self,
        s: &Services,
        user: &UserId,
        take: impl FnMut(&Member) -> Option<T>,
    ) -> Result<ListView<T>> {
        let list = self.list(user);
        if !list.state.read().loaded {
            self.load(s, user, &list).await?;
        }
        let state = list.state.read();
        Ok(ListView {
            rooms: state.rooms.values().filter_map(take).collect(),
            direct: state.direct.1.clone(),
            tags: state.tags.clone(),
        })
    }

    /// The user's list (put in place, unread, if absent), made the most
    /// recently used; other users' lists go while the rooms kept are over
    /// the bound.
    fn list(&self, user: &UserId) -> Arc<UserRooms> {
        let mut users = self.users.lock();
        let list = match users.lru.get(user) {
            Some(list) => list.clone(),
            None => {
                let list = Arc::new(UserRooms {
                    state: RwLock::new(UserState::default()),
                    loading: tokio::sync::Mutex::new(()),
                });
                users.lru.put(user.to_owned(), list.clone());
                list
            }
        };
        self.shrink(&mut users);
        list
    }

    /// Drops the least recently synced lists while the rooms kept are over
    /// the bound (never the last list).
    fn shrink(&self, users: &mut Users) {
        while users.entries > self.max_entries && users.lru.len() > 1 {
            let Some((_, gone)) = users.lru.pop_lru() else {
                break;
            };
            let n = gone.state.read().rooms.len();
            users.entries = users.entries.saturating_sub(n);
        }
    }

    /// Reads the user's memberships, `m.direct` and tags, and merges them
    /// into the list (changes heard meanwhile stay when newer).
    async fn load(&self, s: &Services, user: &UserId, list: &Arc<UserRooms>) -> Result<()> {
        let _loading = list.loading.lock().await;
        if list.state.read().loaded {
            return Ok(());
        }
        let rows = s.storage.rooms_for_user(user.as_str()).await?;
        let mut members = Vec::with_capacity(rows.len());
        for row in rows {
            let (mut inviter, mut invite_direct) = (None, false);
            if row.membership == MembershipState::Invite
                && let Some(pdu) = s
                    .rooms
                    .current_state_pdu(&row.room_id, "m.room.member", user.as_str())
                    .await?
            {
                invite_direct = is_direct(pdu.content.get());
                inviter = Some(pdu.sender);
            }
            let change = MemberChange {
                membership: row.membership,
                pos: row.stream_ordering,
                inviter,
                invite_direct,
            };
            members.push((row.room_id, change));
        }
        let data = s
            .storage
            .account_data_of_types(user.as_str(), ("m.direct", "m.tag"))
            .await?;
        let mut users = self.users.lock();
        let mut index = self.rooms.lock();
        let counted = users.lru.peek(user).is_some_and(|l| Arc::ptr_eq(l, list));
        let mut state = list.state.write();
        let mut added = 0;
        for (room_id, change) in members {
            if state.apply_member(&room_id, change, &mut index) {
                added += 1;
            }
        }
        for (row, pos) in data {
            let Ok(content) = serde_json::from_str::<Value>(&row.content) else {
                continue;
            };
            match (row.room_id, row.data_type.as_str()) {
                (None, "m.direct") => state.apply_direct(pos, &content),
                (Some(room_id), "m.tag") => state.apply_tags(&room_id, pos, &content),
                _ => {}
            }
        }
        state.loaded = true;
        drop(state);
        if counted {
            users.entries += added;
            self.shrink(&mut users);
        }
        Ok(())
    }

    /// Forgets a purged room in every list.
    pub fn forget_room(&self, room_id: &RoomId) {
        let mut users = self.users.lock();
        let mut removed = 0;
        for (_, list) in users.lru.iter() {
            let mut state = list.state.write();
            if state.rooms.remove(room_id).is_some() {
                removed += 1;
            }
            if state.tag_positions.remove(room_id).is_some() {
                Arc::make_mut(&mut state.tags).remove(room_id);
            }
        }
        users.entries = users.entries.saturating_sub(removed);
        self.rooms.lock().map.remove(room_id);
    }

    /// (users kept, rooms over their lists, rooms with facts).
    pub fn sizes(&self) -> (usize, usize, usize) {
        let users = self.users.lock();
        (users.lru.len(), users.entries, self.rooms.lock().map.len())
    }
}

/// Whether a member event's content is marked `is_direct`.
fn is_direct(content: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Field {
        is_direct: Option<bool>,
    }
    serde_json::from_str::<Field>(content)
        .ok()
        .and_then(|f| f.is_direct)
        == Some(true)
}

impl Subscriber for RoomLists {
    fn committed(&self, batch: &Batch) -> Option<Settled> {
        let mut locks = None;
        for e in batch.events.iter() {
            let pdu = &e.pdu;
            let kind = pdu.kind.to_string();
            let bumps = BUMP_TYPES.contains(&kind.as_str());
            let encryption = kind == "m.room.encryption" && pdu.state_key.as_deref() == Some("");
            let member = match (kind.as_str(), pdu.state_key.as_deref()) {
                ("m.room.member", Some(sk)) => <&UserId>::try_from(sk).ok(),
                _ => None,
            };
            if !bumps && !encryption && member.is_none() {
                continue;
            }
            let (users, index) =
                locks.get_or_insert_with(|| (self.users.lock(), self.rooms.lock()));
            if let Some(user) = member
                && let Some(list) = users.lru.peek(user).cloned()
            {
                let membership = pdu
                    .membership_str()
                    .map(|m| MembershipState::from(m.as_ref()))
                    .unwrap_or(MembershipState::Leave);
                let invite = membership == MembershipState::Invite;
                let change = MemberChange {
                    invite_direct: invite && is_direct(pdu.content.get()),
                    inviter: invite.then(|| pdu.sender.clone()),
                    membership,
                    pos: e.pos,
                };
                if list.state.write().apply_member(&pdu.room_id, change, index) {
                    users.entries += 1;
                }
            }
            if (bumps || encryption)
                && let Some(facts) = index.get(&pdu.room_id)
            {
                let mut f = facts.inner.lock();
                if bumps {
                    f.note_bump(e.pos);
                }
                if encryption {
                    f.encrypted = true;
                }
            }
        }
        None
    }
}

impl AccountDataListener for RoomLists {
    fn stored(&self, change: &AccountDataChange<'_>) {
        let wanted = matches!(
            (change.room.is_some(), change.data_type),
            (false, "m.direct") | (true, "m.tag")
        );
        if !wanted {
            return;
        }
        let Some(list) = self.users.lock().lru.peek(change.user).cloned() else {
            return;
        };
        let mut state = list.state.write();
        match change.room {
            None => state.apply_direct(change.pos, change.content),
            Some(room_id) => state.apply_tags(room_id, change.pos, change.content),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FactsInner;

    #[test]
    fn the_two_newest_bumps_decide_a_position_before_the_newest() {
        let mut f = FactsInner::default();
        f.note_bump(10);
        // Not read from the database yet: nothing is known.
        assert_eq!(f.bump_at(20), None);
        f.bumps_loaded = true;
        assert_eq!(f.bump_at(20), Some(Some(10)));
        // Only one known and it is after the position: older ones are not kept.
        assert_eq!(f.bump_at(5), None);
        for pos in [30, 20, 30, 15] {
            f.note_bump(pos);
        }
        assert_eq!(f.bumps, (Some(30), Some(20)));
        assert_eq!(f.bump_at(35), Some(Some(30)));
        assert_eq!(f.bump_at(25), Some(Some(20)));
        assert_eq!(f.bump_at(19), None);
        let empty = FactsInner {
            bumps_loaded: true,
            ..FactsInner::default()
        };
        assert_eq!(empty.bump_at(5), Some(None));
    }
}
