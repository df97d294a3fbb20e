//! The rooms of a sliding sync answer: which a list's filters let through,
//! and each room's body (built from `/sync`'s pieces).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ruma::api::client::filter::RoomEventFilter;
use ruma::api::client::sync::sync_events::v5;
use ruma::directory::RoomTypeFilter;
use ruma::events::room::member::MembershipState;
use ruma::serde::Raw;
use ruma::{JsOption, OwnedMxcUri, OwnedRoomId, OwnedUserId, RoomId, UInt};
use serde_json::Value;

use super::{Candidate, ExtraFilters, RoomConfig, Sent};
use crate::error::{MatrixError, Result};
use crate::model::accounts::Requester;
use crate::model::pdu::Pdu;
use crate::model::state::StateMap;
use crate::services::Services;
use crate::services::account_data::IgnoredUsers;
use crate::services::notifications;
use crate::services::rooms::timeline::topo_token;
use crate::services::stream::Topic;
use crate::services::sync::{self, TimelineFor};
use crate::storage::events::{RoomMemberRow, StreamSpan};

/// At most this many heroes (as Synapse).
const MAX_HEROES: usize = 5;

/// Any value as a ruma `Raw` of some event type.
pub(super) fn raw<T>(value: &impl serde::Serialize) -> Result<Raw<T>> {
    let json = serde_json::value::to_raw_value(value).map_err(MatrixError::internal)?;
    Ok(Raw::from_json(json))
}

/// What the list filters look at: the user's `m.direct` rooms and tags
/// (from their room list, `room_lists.rs`), and the children of the spaces
/// a list filters by (read when first needed).
pub(crate) struct Facts {
    /// The rooms of the user's `m.direct`.
    direct: Arc<HashSet<OwnedRoomId>>,
    /// Tags by room.
    tags: Arc<HashMap<OwnedRoomId, HashSet<String>>>,
    /// The children of spaces a list filters by.
    space_children: HashMap<OwnedRoomId, HashSet<OwnedRoomId>>,
}

impl Facts {
    pub fn new(
        direct: Arc<HashSet<OwnedRoomId>>,
        tags: Arc<HashMap<OwnedRoomId, HashSet<String>>>,
    ) -> Self {
        Self {
            direct,
            tags,
            space_children: HashMap::new(),
        }
    }

    /// Whether the room is a direct chat: in `m.direct`, or an invite marked
    /// `is_direct` (as Synapse).
    pub fn is_dm(&self, c: &Candidate) -> bool {
        self.direct.contains(c.room_id())
            || (c.membership == MembershipState::Invite && c.invite_direct)
    }

    /// Whether the room passes a list's filters (all of them).
    pub async fn matches(
        &mut self,
        s: &Services,
        c: &Candidate,
        filters: Option<&v5::request::ListFilters>,
        extra: &ExtraFilters,
    ) -> Result<bool> {
        if let Some(f) = filters {
            if let Some(want) = f.is_invite
                && want != (c.membership == MembershipState::Invite)
            {
                return Ok(false);
            }
            if let Some(want) = f.is_dm
                && want != self.is_dm(c)
            {
                return Ok(false);
            }
            if let Some(want) = f.is_encrypted
                && want != c.room.encrypted(s).await?
            {
                return Ok(false);
            }
            if !f.room_types.is_empty() || !f.not_room_types.is_empty() {
                let ty = c.room.room_type(s).await?;
                let is = |filter: &RoomTypeFilter| filter.as_str() == ty.as_deref();
                if f.not_room_types.iter().any(is) {
                    return Ok(false);
                }
                if !f.room_types.is_empty() && !f.room_types.iter().any(is) {
                    return Ok(false);
                }
            }
        }
        if let Some(spaces) = &extra.spaces {
            let mut found = false;
            for space in spaces {
                if self.children(s, space).await?.contains(c.room_id()) {
                    found = true;
                    break;
                }
            }
            if !found {
                return Ok(false);
            }
        }
        if extra.tags.is_some() || !extra.not_tags.is_empty() {
            let room_tags = self.tags.get(c.room_id());
            let has = |t: &String| room_tags.is_some_and(|r| r.contains(t));
            if extra.not_tags.iter().any(has) {
                return Ok(false);
            }
            if let Some(wanted) = &extra.tags
                && !wanted.iter().any(has)
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The rooms a space names as children (`m.space.child` with `via`).
    async fn children(&mut self, s: &Services, space: &RoomId) -> Result<&HashSet<OwnedRoomId>> {
        if !self.space_children.contains_key(space) {
            let mut children = HashSet::new();
            if let Ok(state) = s.rooms.current_state(space).await {
                for ((ty, key), _) in state.iter() {
                    if ty != "m.space.child" {
                        continue;
                    }
                    let content = s.rooms.state_content(&state, ty, key).await?;
                    let has_via = content
                        .as_ref()
                        .and_then(|c| c.get("via"))
                        .and_then(Value::as_array)
                        .is_some_and(|v| !v.is_empty());
                    if has_via && let Ok(child) = RoomId::parse(key.as_str()) {
                        children.insert(child);
                    }
                }
            }
            self.space_children.insert(space.to_owned(), children);
        }
        Ok(&self.space_children[space])
    }
}

/// Builds room bodies for one answer.
pub(crate) struct Builder<'a> {
    s: &'a Services,
    who: &'a Requester,
    user: OwnedUserId,
    /// The connection's previous position (`None` on its first request).
    since: Option<i64>,
    to: i64,
    ignored: Arc<IgnoredUsers>,
    rules: Option<Arc<ruma::push::Ruleset>>,
    receipts: Option<HashMap<OwnedRoomId, Vec<ruma::OwnedEventId>>>,
    /// What [`Builder::prefetch`] read for the rooms sent afresh, all
    /// rooms in one round trip per kind.
    read: Prefetched,
}

/// Reads made for many rooms together ([`Builder::prefetch`]); a room
/// absent here is read on its own.
#[derive(Default)]
struct Prefetched {
    /// Joined and invited members (every prefetched room has an entry).
    members: HashMap<OwnedRoomId, Arc<Vec<RoomMemberRow>>>,
    /// Timeline candidates, newest first, of rooms sent afresh.
    timelines: HashMap<OwnedRoomId, Vec<Arc<Pdu>>>,
    /// Unread counts so far and the events after them (newest first), of
    /// joined rooms sent afresh.
    unread: HashMap<OwnedRoomId, (notifications::Counted, Vec<Arc<Pdu>>)>,
}

/// Whether a room is sent afresh: new to the connection, its config asks
/// for more, or its membership changed from an invite or knock (or back
/// in after leaving).
pub(crate) fn sent_afresh(c: &Candidate, config: &RoomConfig, sent: Option<&Sent>) -> bool {
    sent.is_none_or(|t| {
        config.widens(&t.config)
            || (t.membership != c.membership && t.membership != MembershipState::Join)
    })
}

impl<'a> Builder<'a> {
    pub async fn new(
        s: &'a Services,
        who: &'a Requester,
        since: Option<i64>,
        to: i64,
    ) -> Result<Self> {
        let user = who.user_id();
        let ignored = s.account_data.ignored_users(&user).await?;
        Ok(Self {
            s,
            who,
            user,
            since,
            to,
            ignored,
            rules: None,
            receipts: None,
            read: Prefetched::default(),
        })
    }

    /// Reads what the rooms sent afresh need (their members, timelines
    /// and unread events) for all of them at once, as `/sync` does: a
    /// first answer of a 20-room window is then a handful of queries, not
    /// a few per room. [`Builder::room`] takes each room's part.
    pub async fn prefetch(&mut self, rooms: &[(&Candidate, &Arc<RoomConfig>)]) -> Result<()> {
        let s = self.s;
        let wanted: Vec<(&Candidate, &Arc<RoomConfig>)> = rooms
            .iter()
            .copied()
            .filter(|(c, _)| {
                matches!(
                    c.membership,
                    MembershipState::Join | MembershipState::Leave | MembershipState::Ban
                )
            })
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = wanted.iter().map(|(c, _)| c.room_id().as_str()).collect();
        let mut members = s.storage.rooms_joined_and_invited(&ids).await?;
        for (c, _) in &wanted {
            let m = members.remove(c.room_id()).unwrap_or_default();
            self.read.members.insert(c.room_id().clone(), Arc::new(m));
        }
        let spans: Vec<StreamSpan> = wanted
            .iter()
            .filter(|(_, config)| config.timeline_limit > 0)
            .map(|(c, config)| StreamSpan {
                room_id: c.room_id().as_str(),
                from: 0,
                to: self.end(c),
                limit: sync::timeline_fetch(&timeline_filter(config.timeline_limit)),
            })
            .collect();
        if !spans.is_empty() {
            let refs = s.storage.rooms_events_in_stream(&spans, None).await?;
            self.read.timelines = s.rooms.pdus_for_refs(refs).await?;
        }
        self.prefetch_unread(&wanted).await
    }

    /// [`Builder::prefetch`]'s unread events of the joined rooms: after
    /// the counts made so far, in one read.
    async fn prefetch_unread(&mut self, wanted: &[(&Candidate, &Arc<RoomConfig>)]) -> Result<()> {
        let mut counted = Vec::new();
        for (c, _) in wanted {
            if c.membership != MembershipState::Join {
                continue;
            }
            let state = self.s.rooms.current_state(c.room_id()).await?;
            counted.push((
                c.room_id().clone(),
                self.counted_so_far(c.room_id(), &state).await?,
            ));
        }
        self.read.unread = self.events_after_counts(counted).await?;
        Ok(())
    }

    /// The room's unread counts made so far (resumed as `/sync` resumes
    /// them, from the user's read position).
    async fn counted_so_far(
        &mut self,
        room_id: &RoomId,
        state: &StateMap,
    ) -> Result<notifications::Counted> {
        let pos = self.read_position(room_id, state).await?;
        Ok(self.s.unread.resume(&self.user, room_id, pos, self.to))
    }

    /// Each room's counts so far with the events after them, newest first
    /// (none when the counts reach the answer's end), in one read.
    async fn events_after_counts(
        &self,
        counted: Vec<(OwnedRoomId, notifications::Counted)>,
    ) -> Result<HashMap<OwnedRoomId, (notifications::Counted, Vec<Arc<Pdu>>)>> {
        let spans: Vec<StreamSpan> = counted
            .iter()
            .filter(|(_, so_far)| so_far.upto < self.to)
            .map(|(room_id, so_far)| StreamSpan {
                room_id: room_id.as_str(),
                from: so_far.upto,
                to: self.to,
                limit: notifications::MAX_COUNTED,
            })
            .collect();
        let mut unread = if spans.is_empty() {
            HashMap::new()
        } else {
            let refs = self
                .s
                .storage
                .rooms_events_in_stream(&spans, Some(self.user.as_str()))
                .await?;
            self.s.rooms.pdus_for_refs(refs).await?
        };
        Ok(counted
            .into_iter()
            .map(|(room_id, so_far)| {
                let events = unread.remove(&room_id).unwrap_or_default();
                (room_id, (so_far, events))
            })
            .collect())
    }

    /// Where a room's answer ends: now, or a left room at the leave.
    fn end(&self, c: &Candidate) -> i64 {
        if c.membership == MembershipState::Join {
            self.to
        } else {
            c.member_pos
        }
    }

    /// The room's joined and invited members (prefetched or read now).
    async fn members(&self, room_id: &RoomId) -> Result<Arc<Vec<RoomMemberRow>>> {
        if let Some(m) = self.read.members.get(room_id) {
            return Ok(m.clone());
        }
        Ok(Arc::new(
            self.s
                .storage
                .rooms_joined_and_invited(&[room_id.as_str()])
                .await?
                .remove(room_id)
                .unwrap_or_default(),
        ))
    }

    /// The room's body, and what the connection was sent; `None` when the
    /// connection has everything of it already.
    pub async fn room(
        &mut self,
        c: &Candidate,
        config: &Arc<RoomConfig>,
        sent: Option<&Sent>,
        facts: &Facts,
    ) -> Result<Option<(v5::response::Room, Sent)>> {
        let s = self.s;
        // Sent afresh: a room new to the connection, one whose config asks
        // for more, or one whose membership changed from an invite or knock
        // (or back in after leaving).
        let initial = sent_afresh(c, config, sent);
        let mut room = v5::response::Room::new();
        room.bump_stamp = Some(uint(c.bump_stamp));
        room.is_dm = Some(facts.is_dm(c));
        if initial {
            room.initial = Some(true);
        }
        let mut new_sent = Sent {
            at: self.to,
            config: config.clone(),
            membership: c.membership.clone(),
            counts: (0, 0),
            lazy: sent
                .filter(|_| !initial)
                .map(|t| t.lazy.clone())
                .unwrap_or_default(),
        };
        match c.membership {
            MembershipState::Invite | MembershipState::Knock => {
                if !initial {
                    return Ok(None);
                }
                self.invite(&mut room, c).await?;
                return Ok(Some((room, new_sent)));
            }
            MembershipState::Join | MembershipState::Leave | MembershipState::Ban => {}
            _ => return Ok(None),
        }
        // Nothing touched the room since it was sent (no event, receipt or
        // typing): nothing to say, and its counts are what was sent.
        if let Some(t) = sent.filter(|_| !initial)
            && t.membership == c.membership
            && !s
                .stream
                .changed_since(&[Topic::Room(c.room_id().clone())], t.at)
        {
            return Ok(None);
        }
        let joined = c.membership == MembershipState::Join;
        // A left room ends at the leave.
        let end = self.end(c);
        let room_since = if initial { None } else { sent.map(|t| t.at) };
        let state = if joined {
            s.rooms.current_state(c.room_id()).await?
        } else {
            sync::state_at_position(s, c.room_id(), end).await?
        };
        let latest = s.rooms.latest_position(c.room_id()).await?.min(end);
        let new_events = room_since.is_none_or(|since| latest > since);
        let counts = if joined {
            self.unread_counts(c.room_id(), &state).await?
        } else {
            (0, 0)
        };
        new_sent.counts = counts;
        if !initial && !new_events && sent.is_some_and(|t| t.counts == counts) {
            return Ok(None);
        }
        room.unread_notifications.notification_count = Some(uint(counts.0 as i64));
        room.unread_notifications.highlight_count = Some(uint(counts.1 as i64));
        let (events, limited) = if config.timeline_limit == 0 || !new_events {
            (Vec::new(), new_events && room_since.is_none() && latest > 0)
        } else {
            let current = joined.then_some(&*state);
            self.timeline(c, config.timeline_limit, room_since, end, current)
                .await?
        };
        room.limited = limited;
        room.num_live = Some(uint(
            self.since
                .map(|since| events.iter().filter(|p| p.stream_ordering > since).count())
                .unwrap_or(0) as i64,
        ));
        room.prev_batch = Some(match events.first() {
            Some(first) => topo_token(first),
            None => format!("s{end}"),
        });
        // Required state, and the name, avatar and heroes it decides.
        let before = match room_since {
            Some(since) => Some(sync::state_at_position(s, c.room_id(), since).await?),
            None => None,
        };
        let changed =
            |key: &(String, String)| before.as_ref().is_none_or(|b| b.get(key) != state.get(key));
        let required = self
            .required_state(&state, config, &events, &changed, &mut new_sent.lazy)
            .await?;
        room.required_state = required;
        self.summary(&mut room, c, &state, &changed, initial)
            .await?;
        room.timeline = self.client_timeline(&events).await?;
        Ok(Some((room, new_sent)))
    }

    /// Up to `limit` events of the room in `(since, end]` the user may see,
    /// and whether older ones were left out (`/sync`'s timeline).
    async fn timeline(
        &mut self,
        c: &Candidate,
        limit: usize,
        since: Option<i64>,
        end: i64,
        current: Option<&StateMap>,
    ) -> Result<(Vec<Arc<Pdu>>, bool)> {
        let filter = timeline_filter(limit);
        // Prefetched for a room sent afresh, read from its start (a room
        // prefetched without an entry had no event in the span).
        let prefetched = if since.is_none() && self.read.members.contains_key(c.room_id()) {
            Some(self.read.timelines.remove(c.room_id()).unwrap_or_default())
        } else {
            None
        };
        let timeline_for = TimelineFor {
            room_id: c.room_id(),
            membership: if current.is_some() { "join" } else { "leave" },
            since,
            ignored: &self.ignored,
            current,
        };
        match prefetched {
            Some(read) => {
                sync::timeline_from_pdus(self.s, &self.user, &timeline_for, read, &filter).await
            }
            None => sync::timeline(self.s, &self.user, &timeline_for, end, &filter).await,
        }
    }

    /// An invite's (or knock's) stripped state, and the name in it.
    async fn invite(&self, room: &mut v5::response::Room, c: &Candidate) -> Result<()> {
        let state = sync::invite_state(self.s, c.room_id(), &self.user, &self.ignored)
            .await?
            .unwrap_or_default();
        room.name = stripped_name(&state);
        room.invite_state = Some(state.iter().map(raw).collect::<Result<_>>()?);
        Ok(())
    }

    /// The name, avatar, member counts and heroes: on a room sent afresh,
    /// and when what decides them changed.
    async fn summary(
        &self,
        room: &mut v5::response::Room,
        c: &Candidate,
        state: &StateMap,
        changed: &impl Fn(&(String, String)) -> bool,
        initial: bool,
    ) -> Result<()> {
        let s = self.s;
        let name_key = ("m.room.name".to_owned(), String::new());
        let name = s
            .rooms
            .state_content(state, "m.room.name", "")
            .await?
            .and_then(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
            .filter(|n| !n.is_empty());
        if changed(&name_key) {
            room.name = name.clone();
        }
        let avatar_key = ("m.room.avatar".to_owned(), String::new());
        if changed(&avatar_key) {
            let url: Option<OwnedMxcUri> = s
                .rooms
                .state_content(state, "m.room.avatar", "")
                .await?
                .and_then(|c| c.get("url").and_then(Value::as_str).map(OwnedMxcUri::from))
                .filter(|u| !u.as_str().is_empty());
            room.avatar = match (url, initial) {
                (Some(url), _) => JsOption::Some(url),
                (None, true) => JsOption::Undefined,
                (None, false) => JsOption::Null,
            };
        }
        let members_changed = state
            .iter()
            .any(|(k, _)| k.0 == "m.room.member" && changed(k));
        if members_changed || initial {
            let members = self.members(c.room_id()).await?;
            let joined_count = members
                .iter()
                .filter(|m| m.membership == MembershipState::Join)
                .count();
            room.joined_count = Some(uint(joined_count as i64));
            room.invited_count = Some(uint((members.len() - joined_count) as i64));
            if name.is_none() {
                room.heroes = Some(self.heroes(state, &members).await?);
            }
        }
        Ok(())
    }

    /// Timeline events in their client form, with this device's
    /// transaction ids.
    async fn client_timeline(
        &self,
        events: &[Arc<Pdu>],
    ) -> Result<Vec<Raw<ruma::events::AnySyncTimelineEvent>>> {
        let s = self.s;
        let refs: Vec<&Pdu> = events.iter().map(|p| &**p).collect();
        let txns = s
            .rooms
            .transaction_ids(
                &refs,
                self.who.user_id.as_str(),
                self.who.device_id.as_str(),
            )
            .await?;
        drop(refs);
        s.rooms
            .client_events_with(events, &txns)
            .await?
            .iter()
            .map(raw)
            .collect()
    }

    /// The state events the config asks for: on a room sent afresh all that
    /// match, else those changed since; `$LAZY` members of the timeline's
    /// senders not sent to the connection yet, `$ME` the user's own.
    async fn required_state(
        &self,
        state: &StateMap,
        config: &RoomConfig,
        timeline: &[Arc<Pdu>],
        changed: &impl Fn(&(String, String)) -> bool,
        lazy_sent: &mut HashSet<OwnedUserId>,
    ) -> Result<Vec<Raw<ruma::events::AnySyncStateEvent>>> {
        let me = self.user.as_str();
        let mut wanted_all = false;
        let mut types: HashSet<&str> = HashSet::new();
        let mut keys_any_type: HashSet<&str> = HashSet::new();
        let mut pairs: HashSet<(&str, &str)> = HashSet::new();
        let mut lazy = false;
        for (ty, key) in &config.required_state {
            let key = if key == "$ME" { me } else { key.as_str() };
            match (ty.as_str(), key) {
                ("*", "*") => wanted_all = true,
                ("*", key) => {
                    keys_any_type.insert(key);
                }
                (ty, "*") => {
                    types.insert(ty);
                }
                ("m.room.member", "$LAZY") => lazy = true,
                (ty, key) => {
                    pairs.insert((ty, key));
                }
            }
        }
        let senders: HashSet<&str> = if lazy {
            timeline.iter().map(|p| p.sender.as_str()).collect()
        } else {
            HashSet::new()
        };
        let mut pdus: Vec<Arc<Pdu>> = Vec::new();
        let mut lazy_now: Vec<OwnedUserId> = Vec::new();
        for (key, id) in state.iter() {
            let (ty, sk) = (key.0.as_str(), key.1.as_str());
            let explicit = wanted_all
                || types.contains(ty)
                || keys_any_type.contains(sk)
                || pairs.contains(&(ty, sk));
            let lazy_member = ty == "m.room.member"
                && senders.contains(sk)
                && !lazy_sent.iter().any(|u| u.as_str() == sk);
            let wanted = (explicit && changed(key)) || lazy_member;
            if !wanted {
                continue;
            }
            if lazy_member && let Ok(u) = OwnedUserId::try_from(sk) {
                lazy_now.push(u);
            }
            if let Some(p) = self.s.rooms.pdu_shared(id.as_str()).await? {
                pdus.push(p);
            }
        }
        lazy_sent.extend(lazy_now);
        pdus.sort_by_key(|p| p.stream_ordering);
        self.s
            .rooms
            .client_events_with(&pdus, &crate::model::viewer::ViewerTxns::default())
            .await?
            .iter()
            .map(raw)
            .collect()
    }

    /// Up to [`MAX_HEROES`] members other than the user (joined first, then
    /// invited), with their display names and avatars.
    async fn heroes(
        &self,
        state: &StateMap,
        members: &[RoomMemberRow],
    ) -> Result<Vec<v5::response::Hero>> {
        let mut ordered: Vec<&RoomMemberRow> =
            members.iter().filter(|m| m.user_id != self.user).collect();
        ordered.sort_by_key(|m| m.membership != MembershipState::Join);
        let mut heroes = Vec::new();
        for m in ordered.into_iter().take(MAX_HEROES) {
            let content = self
                .s
                .rooms
                .state_content(state, "m.room.member", m.user_id.as_str())
                .await?;
            let mut hero = v5::response::Hero::new(m.user_id.clone());
            let field = |f: &str| {
                content
                    .as_ref()
                    .and_then(|c| c.get(f))
                    .and_then(Value::as_str)
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
            };
            hero.name = field("displayname");
            hero.avatar = field("avatar_url").map(OwnedMxcUri::from);
            heroes.push(hero);
        }
        Ok(heroes)
    }

    /// The user's main-timeline read position in the room.
    async fn read_position(&mut self, room_id: &RoomId, state: &StateMap) -> Result<i64> {
        let s = self.s;
        if self.receipts.is_none() {
            self.receipts = Some(s.storage.all_main_receipts(self.user.as_str()).await?);
        }
        let receipts = self
            .receipts
            .as_ref()
            .and_then(|r| r.get(room_id))
            .cloned()
            .unwrap_or_default();
        notifications::read_position(s, &self.user, state, receipts).await
    }

    /// `(notification_count, highlight_count)` of a joined room, counted as
    /// `/sync` counts (resuming the counts it made).
    async fn unread_counts(&mut self, room_id: &RoomId, state: &StateMap) -> Result<(u64, u64)> {
        let s = self.s;
        let read = match self.read.unread.remove(room_id) {
            Some(read) => Some(read),
            None => {
                let so_far = self.counted_so_far(room_id, state).await?;
                self.events_after_counts(vec![(room_id.to_owned(), so_far)])
                    .await?
                    .remove(room_id)
            }
        };
        let (mut so_far, unread) = read.ok_or_else(|| {
            MatrixError::internal(format!("no unread counts were read for {room_id}"))
        })?;
        if so_far.upto >= self.to {
            return Ok((so_far.notify, so_far.highlight));
        }
        if self.rules.is_none() {
            self.rules = Some(s.account_data.push_rules_shared(&self.user).await?);
        }
        let rules = self.rules.clone().unwrap_or_default();
        let joined = self
            .members(room_id)
            .await?
            .iter()
            .filter(|m| m.membership == MembershipState::Join)
            .count() as u32;
        let (n, h) =
            notifications::count_unread(s, &self.user, room_id, state, joined, &rules, unread)
                .await?;
        so_far.notify += n;
        so_far.highlight += h;
        so_far.upto = self.to;
        s.unread.store(&self.user, room_id, so_far);
        Ok((so_far.notify, so_far.highlight))
    }
}

/// The timeline filter of a room config's `timeline_limit`.
fn timeline_filter(limit: usize) -> RoomEventFilter {
    let mut filter = RoomEventFilter::default();
    filter.limit = Some(uint(limit as i64));
    filter
}

/// The name in an invite's stripped state.
fn stripped_name(state: &[Value]) -> Option<String> {
    state
        .iter()
        .find(|e| e["type"] == "m.room.name")
        .and_then(|e| e["content"]["name"].as_str())
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
}

pub(super) fn uint(n: i64) -> UInt {
    UInt::try_from(n.max(0) as u64).unwrap_or(UInt::MAX)
}
