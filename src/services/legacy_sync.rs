//! The deprecated event stream and initial sync of the r0 API (`GET
//! /events`, `GET /events/{eventId}`, `GET /initialSync`,
//! `GET /rooms/{roomId}/initialSync`), which
//! older clients and sytest's fixtures still call and Synapse still serves.
//!
//! The stream runs over the same positions as `/sync`, with the same tokens
//! (`s{position}`), so an `end` of one is a `from` of the other, and it
//! long-polls on the same [`Stream`](crate::services::stream::Stream)
//! registrations. A window `(from, to]` yields, oldest first, the room
//! events of the user's joined rooms (and of rooms whose membership of the
//! user changed in the window, up to that change), then presence, typing,
//! receipts and account data, in Synapse's event shapes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ruma::api::client::filter::RoomEventFilter;
use ruma::events::room::member::MembershipState;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::{MatrixError, Result};
use crate::model::accounts::Requester;
use crate::model::pdu::{AsPdu, ClientEvent, Pdu};
use crate::model::viewer::ViewerTxns;
use crate::services::Services;
use crate::services::directory;
use crate::services::memberships;
use crate::services::rooms::timeline::topo_token;
use crate::services::stream::Topic;
use crate::services::sync::{parse_token, receipt_contents};
use crate::storage::{AccountDataRow, PresenceRow};

/// Room events per `/events` answer when the request names no limit (as
/// Synapse), and the most it honours.
const DEFAULT_STREAM_LIMIT: usize = 10;
const MAX_STREAM_LIMIT: usize = 1000;
/// Messages per room in an initial sync without a limit (as Synapse).
const DEFAULT_MESSAGES_LIMIT: usize = 10;
const MAX_MESSAGES_LIMIT: usize = 1000;
/// Longest long-poll honoured (as `/sync`).
const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// One entry of an `/events` chunk: a room event, or an ephemeral or
/// account data event in Synapse's shape.
#[derive(Serialize)]
#[serde(untagged)]
pub enum StreamEvent {
    Room(V1Event),
    Other(Value),
}

/// A room event as the r0 API shows it (Synapse's "client v1" format): the
/// client event with the sender repeated as `user_id`, which older clients
/// and sytest read (a member event's `user_id` is whose membership sytest
/// looks for in an initial sync's state).
#[derive(Serialize)]
pub struct V1Event {
    #[serde(flatten)]
    event: ClientEvent,
    user_id: OwnedUserId,
}

/// The events in the r0 API's form, for `viewer` (their transaction ids)
/// or for nobody in particular.
async fn v1_events<P: AsPdu>(
    s: &Services,
    pdus: &[P],
    viewer: Option<(&str, &str)>,
) -> Result<Vec<V1Event>> {
    let events = match viewer {
        Some(_) => s.rooms.client_events_raw(pdus, viewer).await?,
        None => {
            s.rooms
                .client_events_with(pdus, &ViewerTxns::default())
                .await?
        }
    };
    Ok(pdus
        .iter()
        .zip(events)
        .map(|(p, event)| V1Event {
            event,
            user_id: p.as_pdu().sender.clone(),
        })
        .collect())
}

/// The `/events` answer.
#[derive(Serialize)]
pub struct EventsResponse {
    pub chunk: Vec<StreamEvent>,
    pub start: String,
    pub end: String,
}

pub struct EventsRequest {
    /// A stream token; none means "from now".
    pub from: Option<String>,
    pub timeout: Duration,
    /// Only this room: one the user is joined to, or a world-readable one
    /// (peeking).
    pub room_id: Option<OwnedRoomId>,
    pub limit: Option<usize>,
}

/// What an `/events` request looks at.
enum Scope {
    /// The user's rooms (and their account data).
    Mine,
    /// One room the user is joined to.
    Joined(OwnedRoomId),
    /// One world-readable room the user is not joined to.
    Peek(OwnedRoomId),
}

/// `GET /events`: what happened after `from`, at once if anything did or
/// `timeout` is zero, else when something does or the timeout passes.
pub async fn events(s: &Services, who: &Requester, req: EventsRequest) -> Result<EventsResponse> {
    let scope = scope(s, who, req.room_id.as_deref()).await?;
    let from = req.from.as_deref().map(parse_token).transpose()?;
    if from.is_some_and(|from| from < 0) {
        return Err(MatrixError::invalid_param("Invalid from token"));
    }
    // Only a request that is answered changes the user's presence.
    if s.config.presence.enabled && !who.is_guest() {
        s.presence.note_reading_events(&who.user_id()).await?;
    }
    let now = s.stream.current();
    let from = from.map_or(now, |from| from.min(now));
    let limit = match req.limit {
        None | Some(0) => DEFAULT_STREAM_LIMIT,
        Some(l) => l.min(MAX_STREAM_LIMIT),
    };
    let deadline = Instant::now() + req.timeout.min(MAX_TIMEOUT);
    let (body, topics) = Box::pin(stream_window(s, who, &scope, from, now, limit)).await?;
    if !body.chunk.is_empty() || req.timeout.is_zero() {
        return Ok(body);
    }
    let registration = s.stream.register(&topics, now);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let woken = !remaining.is_zero() && s.stream.wait(&registration, remaining).await;
        let to = s.stream.current();
        let (body, _) = Box::pin(stream_window(s, who, &scope, from, to, limit)).await?;
        // Woken by something the window leaves out (another room's
        // presence, a position not readable yet): wait on.
        if !woken || !body.chunk.is_empty() {
            return Ok(body);
        }
    }
}

/// Which rooms a request covers: a guest must name a room; a named room must
/// be joined or world-readable (403 otherwise, 404 when unknown).
async fn scope(s: &Services, who: &Requester, room_id: Option<&RoomId>) -> Result<Scope> {
    let Some(room_id) = room_id else {
        if who.is_guest() {
            return Err(MatrixError::guest_forbidden());
        }
        return Ok(Scope::Mine);
    };
    s.rooms.known_version(room_id).await?;
    let user = who.user_id();
    if s.rooms.membership(room_id, &user).await?.as_deref() == Some("join") {
        return Ok(Scope::Joined(room_id.to_owned()));
    }
    if world_readable(s, room_id).await? {
        return Ok(Scope::Peek(room_id.to_owned()));
    }
    Err(MatrixError::forbidden(
        "You are not joined to this room and it is not world-readable",
    ))
}

async fn world_readable(s: &Services, room_id: &RoomId) -> Result<bool> {
    let current = s.rooms.current_state(room_id).await?;
    Ok(s.rooms
        .state_content(&current, "m.room.history_visibility", "")
        .await?
        .is_some_and(|c| c["history_visibility"] == "world_readable"))
}

/// A room whose events a window reads: up to which position, and the
/// user's membership now (for history visibility).
struct RoomRead {
    room_id: OwnedRoomId,
    upto: i64,
    membership: Option<String>,
}

/// The `/events` answer for `(from, to]` (`to` moves back to the last room
/// event returned when there were more than `limit`), and the stream topics
/// that could change it.
async fn stream_window(
    s: &Services,
    who: &Requester,
    scope: &Scope,
    from: i64,
    to: i64,
    limit: usize,
) -> Result<(EventsResponse, Vec<Topic>)> {
    let user = who.user_id();
    let (reads, rooms) = room_reads(s, &user, scope, from, to).await?;
    let (events, to) = room_events(s, &user, &reads, from, to, limit).await?;
    let viewer = (who.user_id.as_str(), who.device_id.as_str());
    let mut chunk: Vec<StreamEvent> = v1_events(s, &events, Some(viewer))
        .await?
        .into_iter()
        .map(StreamEvent::Room)
        .collect();
    let room_ids: Vec<&str> = rooms.iter().map(|r| r.as_str()).collect();
    // Each kind is read only when its stream topic moved after `from`.
    let changed = |topic: Topic| s.stream.changed_since(&[topic], from);
    // A presence change touches the rooms its user is joined to, and the user.
    let presence_topics: Vec<Topic> = rooms
        .iter()
        .map(|r| Topic::PresenceIn(r.clone()))
        .chain([Topic::User(user.clone())])
        .collect();
    if s.config.presence.enabled && s.stream.changed_since(&presence_topics, from) {
        let changes = s
            .storage
            .presence_in_rooms(&room_ids, user.as_str(), from, to)
            .await?;
        chunk.extend(
            changes
                .iter()
                .filter(|p| !p.is_unset())
                .map(|p| StreamEvent::Other(presence_event(s, p))),
        );
    }
    for room_id in &rooms {
        if let Some(users) = s.ephemeral.typing_since(room_id, Some(from)) {
            chunk.push(StreamEvent::Other(json!({
                "type": "m.typing",
                "room_id": room_id,
                "content": { "user_ids": users },
            })));
        }
    }
    if changed(Topic::Receipts) {
        let receipts = s
            .storage
            .receipts_in_rooms(&room_ids, user.as_str(), from, to)
            .await?;
        chunk.extend(
            receipt_events(receipts_sorted(receipt_contents(receipts))).map(StreamEvent::Other),
        );
    }
    if !matches!(scope, Scope::Peek(_)) && changed(Topic::User(user.clone())) {
        let data = s
            .storage
            .account_data_since(user.as_str(), from, to)
            .await?;
        chunk.extend(data.into_iter().map(|d| {
            let mut ev = account_data_event(&d);
            if let Some(room_id) = &d.room_id {
                ev["room_id"] = json!(room_id);
            }
            StreamEvent::Other(ev)
        }));
    }
    let mut topics: Vec<Topic> = rooms.into_iter().map(Topic::Room).collect();
    topics.push(Topic::User(user));
    if s.config.presence.enabled {
        topics.extend(presence_topics);
    }
    let body = EventsResponse {
        chunk,
        start: format!("s{from}"),
        end: format!("s{to}"),
    };
    Ok((body, topics))
}

/// The rooms whose events a window reads, and the rooms whose ephemeral
/// events it reads (the joined or named ones).
async fn room_reads(
    s: &Services,
    user: &UserId,
    scope: &Scope,
    from: i64,
    to: i64,
) -> Result<(Vec<RoomRead>, Vec<OwnedRoomId>)> {
    match scope {
        Scope::Joined(room_id) | Scope::Peek(room_id) => {
            let membership = s.rooms.membership(room_id, user).await?;
            let read = RoomRead {
                room_id: room_id.clone(),
                upto: to,
                membership,
            };
            Ok((vec![read], vec![room_id.clone()]))
        }
        Scope::Mine => {
            let mut reads = Vec::new();
            let mut joined = Vec::new();
            for m in s.storage.rooms_for_user(user.as_str()).await? {
                if m.membership == MembershipState::Join {
                    joined.push(m.room_id.clone());
                    reads.push(RoomRead {
                        room_id: m.room_id,
                        upto: to,
                        membership: Some("join".to_owned()),
                    });
                } else if m.stream_ordering > from && m.stream_ordering <= to {
                    // Invited, left, kicked or banned in the window: the
                    // room's events up to that change (the change included).
                    reads.push(RoomRead {
                        room_id: m.room_id,
                        upto: m.stream_ordering,
                        membership: Some(m.membership.as_str().to_owned()),
                    });
                }
            }
            Ok((reads, joined))
        }
    }
}

/// The first `limit` room events after `from` across the rooms, oldest
/// first, that the user may see; and the window's end: `to`, or the last
/// event taken when more were left.
async fn room_events(
    s: &Services,
    user: &UserId,
    reads: &[RoomRead],
    from: i64,
    to: i64,
    limit: usize,
) -> Result<(Vec<Arc<Pdu>>, i64)> {
    let mut all: Vec<(usize, Arc<Pdu>)> = Vec::new();
    let mut more = false;
    for (i, read) in reads.iter().enumerate() {
        // Nothing new in the room (an in-memory lookup): no query.
        if s.rooms.latest_position(&read.room_id).await? <= from {
            continue;
        }
        let rows = s
            .storage
            .room_events_window(read.room_id.as_str(), (from, read.upto), limit as i64, true)
            .await?;
        more |= rows.len() >= limit;
        for row in rows {
            all.push((i, s.rooms.pdu_from_row(row)?));
        }
    }
    all.sort_by_key(|(_, p)| p.stream_ordering);
    let mut end = to;
    if more || all.len() > limit {
        all.truncate(limit);
        if let Some((_, last)) = all.last() {
            end = last.stream_ordering;
        }
    }
    // History visibility, room by room; the order stays the stream's.
    let mut by_read: HashMap<usize, Vec<Arc<Pdu>>> = HashMap::new();
    for (i, p) in &all {
        by_read.entry(*i).or_default().push(p.clone());
    }
    let mut visible: HashSet<Arc<str>> = HashSet::new();
    for (i, pdus) in by_read {
        let read = &reads[i];
        for p in s
            .rooms
            .filter_visible_as(user, read.membership.as_deref(), pdus)
            .await?
        {
            visible.insert(Arc::from(p.event_id.as_str()));
        }
    }
    let events = all
        .into_iter()
        .map(|(_, p)| p)
        .filter(|p| visible.contains(p.event_id.as_str()))
        .collect();
    Ok((events, end))
}

/// `GET /events/{eventId}`: one event by id, in client form, if the user
/// may see it (404 otherwise, as `/rooms/{roomId}/event/{eventId}`).
pub async fn event(s: &Services, who: &Requester, event_id: &str) -> Result<V1Event> {
    let not_found = || MatrixError::not_found("Event not found");
    let pdu = s.rooms.pdu(event_id).await?.ok_or_else(not_found)?;
    let user = who.user_id();
    let current = s.rooms.membership(&pdu.room_id, &user).await?;
    if !s.rooms.can_see(&user, &pdu, current.as_deref()).await? {
        return Err(not_found());
    }
    let viewer = (who.user_id.as_str(), who.device_id.as_str());
    v1_events(s, std::slice::from_ref(&pdu), Some(viewer))
        .await?
        .pop()
        .ok_or_else(not_found)
}

/// An `m.presence` event as the r0 API shows it: the user in the content.
fn presence_event(s: &Services, p: &PresenceRow) -> Value {
    let mut content = s.presence.content(p);
    content["user_id"] = json!(p.user_id);
    json!({ "type": "m.presence", "sender": p.user_id, "content": content })
}

fn account_data_event(d: &AccountDataRow) -> Value {
    let content: Value = serde_json::from_str(&d.content).unwrap_or_else(|_| json!({}));
    json!({ "type": d.data_type, "content": content })
}

fn receipts_sorted(by_room: HashMap<OwnedRoomId, Value>) -> Vec<(OwnedRoomId, Value)> {
    let mut rooms: Vec<(OwnedRoomId, Value)> = by_room.into_iter().collect();
    rooms.sort_by(|a, b| a.0.cmp(&b.0));
    rooms
}

fn receipt_events(rooms: Vec<(OwnedRoomId, Value)>) -> impl Iterator<Item = Value> {
    rooms.into_iter().map(
        |(room_id, content)| json!({ "type": "m.receipt", "room_id": room_id, "content": content }),
    )
}

/// The `/initialSync` answer.
#[derive(Serialize)]
pub struct InitialSyncResponse {
    pub end: String,
    pub rooms: Vec<RoomSnapshot>,
    pub presence: Vec<Value>,
    pub account_data: Vec<Value>,
    pub receipts: Vec<Value>,
}

/// One room of an initial sync, or the answer of a room's initial sync
/// (which adds `presence` and `receipts`).
#[derive(Serialize)]
pub struct RoomSnapshot {
    pub room_id: OwnedRoomId,
    /// Left out for a user peeking into a world-readable room (as Synapse).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub membership: Option<String>,
    /// For an invite: who sent it, and the invite event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inviter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invite: Option<V1Event>,
    pub messages: Messages,
    pub state: Vec<V1Event>,
    /// `public` when listed in the room directory, else `private`.
    pub visibility: &'static str,
    pub account_data: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipts: Option<Vec<Value>>,
}

/// The newest messages of a room, oldest first: `start` pages back from the
/// first of them (`/messages`), `end` is the stream token they reach.
#[derive(Serialize)]
pub struct Messages {
    pub chunk: Vec<V1Event>,
    pub start: String,
    pub end: String,
}

/// `limit` and `archived` of an initial sync.
pub struct InitialSyncRequest {
    pub limit: Option<usize>,
    pub archived: bool,
}

fn messages_limit(limit: Option<usize>) -> usize {
    limit
        .unwrap_or(DEFAULT_MESSAGES_LIMIT)
        .min(MAX_MESSAGES_LIMIT)
}

/// `GET /initialSync`: every room the user is joined or invited to (and
/// left, with `archived`), their global account data, the presence of
/// everyone sharing a room and the receipts of the joined rooms.
pub async fn initial_sync(
    s: &Services,
    who: &Requester,
    req: InitialSyncRequest,
) -> Result<InitialSyncResponse> {
    let user = who.user_id();
    let to = s.stream.current();
    let limit = messages_limit(req.limit);
    let data = s.storage.account_data_since(user.as_str(), 0, to).await?;
    let (global, mut by_room) = split_account_data(data);
    let forgotten: HashSet<OwnedRoomId> = s
        .storage
        .forgotten_rooms(user.as_str())
        .await?
        .into_iter()
        .collect();
    let mut rooms = Vec::new();
    let mut joined: Vec<OwnedRoomId> = Vec::new();
    for m in s.storage.rooms_for_user(user.as_str()).await? {
        let room_data = by_room.remove(m.room_id.as_str()).unwrap_or_default();
        let snapshot = match m.membership {
            MembershipState::Join => {
                joined.push(m.room_id.clone());
                room_snapshot(s, who, &m.room_id, Seen::Joined, limit, to).await?
            }
            MembershipState::Invite => invited_room(s, who, &m.room_id, to).await?,
            MembershipState::Leave if req.archived && !forgotten.contains(&m.room_id) => {
                room_snapshot(s, who, &m.room_id, Seen::Left(m.stream_ordering), limit, to).await?
            }
            _ => continue,
        };
        rooms.push(RoomSnapshot {
            account_data: room_data,
            ..snapshot
        });
    }
    let room_ids: Vec<&str> = joined.iter().map(|r| r.as_str()).collect();
    // The user and everyone sharing a joined room; who is offline is left
    // out here (as Synapse), not in a room's own initial sync.
    let presence = if s.config.presence.enabled {
        s.storage
            .presence_in_rooms(&room_ids, user.as_str(), 0, to)
            .await?
            .iter()
            .filter(|p| p.state != "offline")
            .map(|p| presence_event(s, p))
            .collect()
    } else {
        Vec::new()
    };
    let receipts = receipts_of(s, &user, &room_ids, to).await?;
    Ok(InitialSyncResponse {
        end: format!("s{to}"),
        rooms,
        presence,
        account_data: global,
        receipts,
    })
}

/// `GET /rooms/{roomId}/initialSync`: a room the user is joined to, left
/// (as it was when they left) or may read as world-readable; 403 otherwise.
pub async fn room_initial_sync(
    s: &Services,
    who: &Requester,
    room_id: &RoomId,
    limit: Option<usize>,
) -> Result<RoomSnapshot> {
    let user = who.user_id();
    // 404 for an unknown room, 403 for one the user may not read.
    s.rooms.readable_state(room_id, &user).await?;
    let to = s.stream.current();
    let member = s
        .rooms
        .current_state_pdu(room_id, "m.room.member", user.as_str())
        .await?;
    let seen = match member.as_ref().and_then(|m| m.membership()).as_deref() {
        Some("join") => Seen::Joined,
        Some("leave" | "ban") => Seen::Left(member.as_ref().map_or(to, |m| m.stream_ordering)),
        _ => Seen::Peeking,
    };
    let snapshot = room_snapshot(s, who, room_id, seen, messages_limit(limit), to).await?;
    let data = s.storage.account_data_since(user.as_str(), 0, to).await?;
    let account_data = split_account_data(data)
        .1
        .remove(room_id.as_str())
        .unwrap_or_default();
    let (presence, receipts) = if matches!(seen, Seen::Left(_)) {
        (Vec::new(), Vec::new())
    } else {
        (
            members_presence(s, &user, room_id, to).await?,
            receipts_of(s, &user, &[room_id.as_str()], to).await?,
        )
    };
    Ok(RoomSnapshot {
        account_data,
        presence: Some(presence),
        receipts: Some(receipts),
        ..snapshot
    })
}

/// How the user sees a room in an initial sync.
#[derive(Clone, Copy)]
enum Seen {
    Joined,
    /// Left (or banned) at this stream position: the room as it was then.
    Left(i64),
    /// Not a member of a world-readable room.
    Peeking,
}

/// A joined, left or peeked room: its state and newest messages as the
/// user may see them (without account data, presence and receipts).
async fn room_snapshot(
    s: &Services,
    who: &Requester,
    room_id: &RoomId,
    seen: Seen,
    limit: usize,
    to: i64,
) -> Result<RoomSnapshot> {
    let user = who.user_id();
    let (membership, end, state) = match seen {
        Seen::Joined => (Some("join"), to, s.rooms.current_state(room_id).await?),
        Seen::Peeking => (None, to, s.rooms.current_state(room_id).await?),
        Seen::Left(at) => (
            Some("leave"),
            at,
            s.rooms.readable_state(room_id, &user).await?,
        ),
    };
    let from = match seen {
        Seen::Left(at) => Some(format!("s{at}")),
        _ => None,
    };
    let page = s
        .rooms
        .messages(
            room_id,
            Some(&user),
            from.as_deref(),
            None,
            true,
            limit,
            &RoomEventFilter::default(),
        )
        .await?;
    let mut events = page.events;
    events.reverse();
    let viewer = (who.user_id.as_str(), who.device_id.as_str());
    let start = events
        .first()
        .map(topo_token)
        .unwrap_or_else(|| format!("s{end}"));
    let chunk = v1_events(s, &events, Some(viewer)).await?;
    let mut state_pdus = Vec::with_capacity(state.len());
    for id in state.values() {
        if let Some(p) = s.rooms.pdu_shared(id.as_str()).await? {
            state_pdus.push(p);
        }
    }
    state_pdus.sort_by_key(|p| p.stream_ordering);
    let state = v1_events(s, &state_pdus, None).await?;
    let messages = Messages {
        chunk,
        start,
        end: format!("s{end}"),
    };
    Ok(RoomSnapshot {
        state,
        ..RoomSnapshot::new(s, room_id, membership, messages).await?
    })
}

/// A room the user is invited to: the invite and who sent it, no messages
/// or state (as Synapse).
async fn invited_room(
    s: &Services,
    who: &Requester,
    room_id: &RoomId,
    to: i64,
) -> Result<RoomSnapshot> {
    let invite = s
        .rooms
        .current_state_pdu(room_id, "m.room.member", who.user_id.as_str())
        .await?;
    let viewer = (who.user_id.as_str(), who.device_id.as_str());
    let (inviter, invite) = match invite {
        Some(p) => (
            Some(p.sender.to_string()),
            v1_events(s, std::slice::from_ref(&p), Some(viewer))
                .await?
                .pop(),
        ),
        None => (None, None),
    };
    let messages = Messages {
        chunk: Vec::new(),
        start: format!("s{to}"),
        end: format!("s{to}"),
    };
    Ok(RoomSnapshot {
        inviter,
        invite,
        ..RoomSnapshot::new(s, room_id, Some("invite"), messages).await?
    })
}

impl RoomSnapshot {
    /// A room's section with its messages and directory visibility; the
    /// rest empty.
    async fn new(
        s: &Services,
        room_id: &RoomId,
        membership: Option<&str>,
        messages: Messages,
    ) -> Result<Self> {
        let public = directory::is_public(s, room_id).await?;
        Ok(Self {
            room_id: room_id.to_owned(),
            membership: membership.map(str::to_owned),
            inviter: None,
            invite: None,
            messages,
            state: Vec::new(),
            visibility: if public { "public" } else { "private" },
            account_data: Vec::new(),
            presence: None,
            receipts: None,
        })
    }
}

/// The presence of each joined member of the room (offline for those who
/// never set one, as Synapse shows them in a room's initial sync).
async fn members_presence(
    s: &Services,
    user: &UserId,
    room_id: &RoomId,
    to: i64,
) -> Result<Vec<Value>> {
    if !s.config.presence.enabled {
        return Ok(Vec::new());
    }
    let rows = s
        .storage
        .presence_in_rooms(&[room_id.as_str()], user.as_str(), 0, to)
        .await?;
    let mut by_user: HashMap<OwnedUserId, PresenceRow> =
        rows.into_iter().map(|p| (p.user_id.clone(), p)).collect();
    Ok(memberships::joined_members(s, room_id)
        .await?
        .into_iter()
        .map(|member| match by_user.remove(&member) {
            Some(p) => presence_event(s, &p),
            None => json!({
                "type": "m.presence",
                "sender": member,
                "content": { "presence": "offline", "user_id": member },
            }),
        })
        .collect())
}

/// The rooms' receipts up to `to`, as `m.receipt` events.
async fn receipts_of(s: &Services, user: &UserId, rooms: &[&str], to: i64) -> Result<Vec<Value>> {
    if rooms.is_empty() {
        return Ok(Vec::new());
    }
    let rows = s
        .storage
        .receipts_in_rooms(rooms, user.as_str(), 0, to)
        .await?;
    Ok(receipt_events(receipts_sorted(receipt_contents(rows))).collect())
}

/// Global account data events, and room account data events by room (both
/// `{type, content}`).
fn split_account_data(data: Vec<AccountDataRow>) -> (Vec<Value>, HashMap<String, Vec<Value>>) {
    let mut global = Vec::new();
    let mut by_room: HashMap<String, Vec<Value>> = HashMap::new();
    for d in data {
        let ev = account_data_event(&d);
        match d.room_id {
            None => global.push(ev),
            Some(room_id) => by_room.entry(room_id.to_string()).or_default().push(ev),
        }
    }
    (global, by_room)
}
