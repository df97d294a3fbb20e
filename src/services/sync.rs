//! `/sync`: assembling what changed for a user between two stream positions,
//! and long-polling until something does.
//!
//! Tokens are `s{position}` in the global stream. A room is looked at only if
//! its newest event is past `since` (an in-memory lookup), so idle syncers cost
//! almost nothing per wake-up.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ruma::api::client::filter::{FilterDefinition, RoomEventFilter};
use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::{Map, Value, json};

use crate::error::{MatrixError, Result};
use crate::services::Services;
use crate::services::filtering;
use crate::services::rooms::timeline::topo_token;
use crate::services::rooms::{Pdu, StateMap, row_to_pdu};
use crate::storage::Requester;

/// Timeline events per room when the filter sets no limit (as Synapse).
const DEFAULT_TIMELINE_LIMIT: usize = 10;
/// Longest long-poll honoured.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);

pub struct SyncRequest {
    pub since: Option<i64>,
    pub full_state: bool,
    pub filter: FilterDefinition,
    pub timeout: Duration,
}

pub fn parse_token(token: &str) -> Result<i64> {
    token
        .strip_prefix('s')
        .unwrap_or(token)
        .split('_')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| MatrixError::invalid_param(format!("Invalid sync token {token:?}")))
}

/// Answers a sync: at once if there is something new (or no `since`), else
/// when something arrives or the timeout passes.
pub async fn sync(s: &Services, who: &Requester, req: SyncRequest) -> Result<Value> {
    let deadline = Instant::now() + req.timeout.min(MAX_TIMEOUT);
    let mut rx = s.stream.subscribe();
    loop {
        let to = *rx.borrow_and_update();
        let (body, has_updates) = build(s, who, &req, to).await?;
        if has_updates || req.since.is_none() || req.full_state {
            return Ok(body);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Ok(body);
        }
        if tokio::time::timeout(remaining, rx.changed()).await.is_err() {
            // Timed out: answer with the position we have now.
            let to = *rx.borrow();
            return Ok(build(s, who, &req, to).await?.0);
        }
    }
}

async fn build(s: &Services, who: &Requester, req: &SyncRequest, to: i64) -> Result<(Value, bool)> {
    let user = who.user_id();
    let since = req.since.filter(|since| *since <= to);
    let room_filter = &req.filter.room;
    let forgotten: HashSet<String> = s
        .storage
        .forgotten_rooms(user.as_str())
        .await?
        .into_iter()
        .collect();
    // Account data, receipts and typing changed in the window, by room.
    let from = since.unwrap_or(0);
    let mut global_data = Vec::new();
    let mut room_data: HashMap<String, Vec<Value>> = HashMap::new();
    for (room, ty, content) in s
        .storage
        .account_data_since(user.as_str(), from, to)
        .await?
    {
        let content: Value = serde_json::from_str(&content).unwrap_or_else(|_| json!({}));
        let ev = json!({ "type": ty, "content": content });
        if room.is_empty() {
            global_data.push(ev);
        } else {
            room_data.entry(room).or_default().push(ev);
        }
    }
    if since.is_none() && !global_data.iter().any(|e| e["type"] == "m.push_rules") {
        let rules = s.account_data.push_rules_json(&user).await?;
        global_data.push(json!({ "type": "m.push_rules", "content": { "global": rules } }));
    }
    let mut receipts: HashMap<String, Value> = HashMap::new();
    for r in s.storage.receipts_since(from, to).await? {
        if r.receipt_type == "m.read.private" && r.user_id != user.as_str() {
            continue;
        }
        let mut entry = json!({ "ts": r.ts });
        if !r.thread_id.is_empty() {
            entry["thread_id"] = json!(r.thread_id);
        }
        let content = receipts
            .entry(r.room_id.clone())
            .or_insert_with(|| json!({}));
        content[r.event_id.as_str()][r.receipt_type.as_str()][r.user_id.as_str()] = entry;
    }

    let rules = s.account_data.push_rules(&user).await?;
    let mut join = Map::new();
    let mut invite = Map::new();
    let mut leave = Map::new();
    let mut joined_rooms = Vec::new();
    for (room, membership, member_pos) in s.storage.rooms_for_user(user.as_str()).await? {
        let room_id = OwnedRoomId::try_from(room.as_str()).map_err(MatrixError::internal)?;
        if room_filter.not_rooms.contains(&room_id)
            || room_filter
                .rooms
                .as_ref()
                .is_some_and(|r| !r.contains(&room_id))
        {
            continue;
        }
        let latest = s.rooms.latest_position(&room_id).await?;
        let changed = since.is_none_or(|since| latest > since);
        match membership.as_str() {
            "join" => {
                joined_rooms.push(room_id.clone());
                let typing = s.ephemeral.typing_since(&room_id, since);
                let mut ephemeral = Vec::new();
                if let Some(users) = typing {
                    ephemeral.push(json!({ "type": "m.typing", "content": { "user_ids": users } }));
                }
                if let Some(content) = receipts.remove(&room) {
                    ephemeral.push(json!({ "type": "m.receipt", "content": content }));
                }
                let data = room_data.remove(&room).unwrap_or_default();
                // Joined since the last sync: the room is new to the client,
                // so it gets the whole picture, as on an initial sync.
                let room_since = match since {
                    Some(since)
                        if member_pos > since && !was_joined(s, &room_id, &user, since).await? =>
                    {
                        None
                    }
                    other => other,
                };
                if changed || req.full_state || !ephemeral.is_empty() || !data.is_empty() {
                    let mut body =
                        joined_room(s, who, &user, &room_id, room_since, to, req, &rules).await?;
                    body["ephemeral"]["events"] = json!(ephemeral);
                    body["account_data"]["events"] = json!(data);
                    join.insert(room.clone(), body);
                }
            }
            "invite" if since.is_none_or(|since| member_pos > since) => {
                invite.insert(
                    room.clone(),
                    json!({ "invite_state": { "events": invite_state(s, &room_id, &user).await? } }),
                );
            }
            "leave" | "ban" => {
                let in_window = since.is_some_and(|since| member_pos > since && member_pos <= to);
                let wanted = in_window || room_filter.include_leave;
                if wanted && !forgotten.contains(&room) {
                    leave.insert(
                        room.clone(),
                        left_room(s, who, &user, &room_id, since, member_pos, req).await?,
                    );
                }
            }
            _ => {}
        }
    }
    let presence = if s.config.presence.enabled {
        presence_events(s, &user, &joined_rooms, from, to).await?
    } else {
        Vec::new()
    };
    let has_updates = !join.is_empty()
        || !invite.is_empty()
        || !leave.is_empty()
        || !global_data.is_empty()
        || !presence.is_empty();
    let body = json!({
        "next_batch": format!("s{to}"),
        "rooms": { "join": join, "invite": invite, "leave": leave, "knock": {} },
        "account_data": { "events": global_data },
        "presence": { "events": presence },
        "to_device": { "events": [] },
        "device_lists": { "changed": [], "left": [] },
        "device_one_time_keys_count": {},
    });
    Ok((body, has_updates))
}

/// Presence changes of the user and of everyone sharing a joined room.
async fn presence_events(
    s: &Services,
    user: &UserId,
    joined: &[OwnedRoomId],
    from: i64,
    to: i64,
) -> Result<Vec<Value>> {
    let changes = s.storage.presence_since(from, to).await?;
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    let mut visible: HashSet<String> = HashSet::from([user.to_string()]);
    for room in joined {
        visible.extend(s.storage.room_members(room.as_str(), "join").await?);
    }
    Ok(changes
        .iter()
        .filter(|p| visible.contains(&p.user_id))
        .map(|p| {
            json!({
                "type": "m.presence",
                "sender": p.user_id,
                "content": crate::services::presence::content(p),
            })
        })
        .collect())
}

fn timeline_limit(filter: &RoomEventFilter) -> usize {
    filter
        .limit
        .map(|l| u64::from(l) as usize)
        .unwrap_or(DEFAULT_TIMELINE_LIMIT)
        .clamp(1, 1000)
}

/// Timeline events of a room in `(since, to]`, oldest first, visible to the
/// user and matching the filter; and whether older ones were left out.
async fn timeline(
    s: &Services,
    user: &UserId,
    room_id: &RoomId,
    since: Option<i64>,
    to: i64,
    filter: &RoomEventFilter,
) -> Result<(Vec<Pdu>, bool)> {
    let limit = timeline_limit(filter);
    // Filters apply before the limit: with type or sender conditions, look
    // further back (bounded) to fill the timeline with matching events.
    let narrowing = filter.types.is_some()
        || !filter.not_types.is_empty()
        || filter.senders.is_some()
        || !filter.not_senders.is_empty()
        || filter.url_filter.is_some();
    let fetch = if narrowing {
        (limit * 5).max(50)
    } else {
        limit + 1
    } as i64;
    let rows = s
        .storage
        .room_events_in_stream(room_id.as_str(), since.unwrap_or(0), to, fetch)
        .await?;
    let exhausted = (rows.len() as i64) < fetch;
    let mut matching = Vec::new();
    for row in rows {
        let pdu = row_to_pdu(row)?;
        if filtering::matches(filter, &pdu) {
            matching.push(pdu);
            if matching.len() > limit {
                break;
            }
        }
    }
    // More matching events than the limit, or unexamined older events: a gap.
    let limited = matching.len() > limit || !exhausted;
    matching.truncate(limit);
    matching.reverse();
    let pdus = s.rooms.filter_visible(user, room_id, matching).await?;
    Ok((pdus, limited))
}

/// Whether the user was joined to the room at a stream position.
async fn was_joined(s: &Services, room_id: &RoomId, user: &UserId, pos: i64) -> Result<bool> {
    let state = state_at_position(s, room_id, pos).await?;
    Ok(s.rooms
        .state_content(&state, "m.room.member", user.as_str())
        .await?
        .and_then(|c| {
            c.get("membership")
                .and_then(Value::as_str)
                .map(|m| m == "join")
        })
        == Some(true))
}

/// The room state at a stream position.
async fn state_at_position(s: &Services, room_id: &RoomId, pos: i64) -> Result<Arc<StateMap>> {
    match s
        .storage
        .room_event_at_stream(room_id.as_str(), pos)
        .await?
    {
        Some(row) => s.rooms.state_after(row.state_group.unwrap_or(0)).await,
        None => Ok(Arc::default()),
    }
}

/// The `state` section: the state at the start of the timeline, in full for
/// an initial or full-state sync, else only what changed since `since`.
#[allow(clippy::too_many_arguments)]
async fn state_section(
    s: &Services,
    who: &Requester,
    user: &UserId,
    room_id: &RoomId,
    since: Option<i64>,
    full_state: bool,
    timeline: &[Pdu],
    end_state: Arc<StateMap>,
    filter: &RoomEventFilter,
) -> Result<Vec<Value>> {
    let start = match timeline.first() {
        Some(first) => s.rooms.state_before(first).await?,
        None => end_state,
    };
    let previous = match (since, full_state) {
        (Some(since), false) => Some(state_at_position(s, room_id, since).await?),
        _ => None,
    };
    let lazy = !filter.lazy_load_options.is_disabled();
    let wanted_members: HashSet<&str> = timeline
        .iter()
        .map(|p| p.sender.as_str())
        .chain([user.as_str()])
        .collect();
    let in_timeline: HashSet<&str> = timeline.iter().map(|p| p.event_id.as_str()).collect();
    let mut pdus = Vec::new();
    for (key, id) in start.iter() {
        if previous
            .as_ref()
            .is_some_and(|prev| prev.get(key) == Some(id))
            || in_timeline.contains(id.as_str())
        {
            continue;
        }
        if lazy && key.0 == "m.room.member" && !wanted_members.contains(key.1.as_str()) {
            continue;
        }
        if let Some(p) = s.rooms.pdu(id.as_str()).await?
            && filtering::matches(filter, &p)
        {
            pdus.push(p);
        }
    }
    pdus.sort_by_key(|p| p.stream_ordering);
    s.rooms
        .client_events(&pdus, Some((who.user_id.as_str(), who.device_id.as_str())))
        .await
}

/// Heroes and member counts from the room's current state.
async fn summary(s: &Services, user: &UserId, room_id: &RoomId) -> Result<Value> {
    let (mut joined, mut invited) = (0, 0);
    let mut heroes = Vec::new();
    for (member, membership) in s.storage.joined_and_invited(room_id.as_str()).await? {
        if membership == "join" {
            joined += 1;
        } else {
            invited += 1;
        }
        if member != user.as_str() && heroes.len() < 5 {
            heroes.push(member);
        }
    }
    Ok(json!({
        "m.heroes": heroes,
        "m.joined_member_count": joined,
        "m.invited_member_count": invited,
    }))
}

#[allow(clippy::too_many_arguments)]
async fn joined_room(
    s: &Services,
    who: &Requester,
    user: &UserId,
    room_id: &RoomId,
    since: Option<i64>,
    to: i64,
    req: &SyncRequest,
    rules: &ruma::push::Ruleset,
) -> Result<Value> {
    let filter = &req.filter.room;
    let (events, limited) = timeline(s, user, room_id, since, to, &filter.timeline).await?;
    let current = s.rooms.current_state(room_id).await?;
    let end_state = state_at_position(s, room_id, to).await?;
    // With a limited timeline the state section still covers the gap: it is
    // the difference between the state at `since` and at the timeline start.
    let state = state_section(
        s,
        who,
        user,
        room_id,
        since,
        req.full_state,
        &events,
        end_state,
        &filter.state,
    )
    .await?;
    // Evaluate the rules as the client sees them (legacy mention rules included).
    let (notify, highlight) =
        crate::services::notifications::unread_counts(s, user, room_id, &current, rules, to)
            .await?;
    let prev_batch = match events.first() {
        Some(first) => topo_token(first),
        None => format!("s{to}"),
    };
    Ok(json!({
        "timeline": {
            "events": s.rooms.client_events(&events, Some((who.user_id.as_str(), who.device_id.as_str()))).await?,
            "limited": limited,
            "prev_batch": prev_batch,
        },
        "state": { "events": state },
        "summary": summary(s, user, room_id).await?,
        "unread_notifications": { "highlight_count": highlight, "notification_count": notify },
        "ephemeral": { "events": [] },
        "account_data": { "events": [] },
    }))
}

async fn left_room(
    s: &Services,
    who: &Requester,
    user: &UserId,
    room_id: &RoomId,
    since: Option<i64>,
    leave_pos: i64,
    req: &SyncRequest,
) -> Result<Value> {
    let filter = &req.filter.room;
    // Up to and including the leave event; nothing after it.
    let (events, limited) = timeline(s, user, room_id, since, leave_pos, &filter.timeline).await?;
    let end_state = state_at_position(s, room_id, leave_pos).await?;
    let state = state_section(
        s,
        who,
        user,
        room_id,
        since,
        req.full_state,
        &events,
        end_state,
        &filter.state,
    )
    .await?;
    let prev_batch = events
        .first()
        .map(topo_token)
        .unwrap_or_else(|| format!("s{leave_pos}"));
    Ok(json!({
        "timeline": { "events": s.rooms.client_events(&events, Some((who.user_id.as_str(), who.device_id.as_str()))).await?, "limited": limited, "prev_batch": prev_batch },
        "state": { "events": state },
        "account_data": { "events": [] },
    }))
}

/// Stripped state an invitee sees: the room's public face and the invite.
async fn invite_state(s: &Services, room_id: &RoomId, user: &UserId) -> Result<Vec<Value>> {
    let state = s.rooms.current_state(room_id).await?;
    let mut out = Vec::new();
    for (ty, sk) in [
        ("m.room.create", ""),
        ("m.room.join_rules", ""),
        ("m.room.name", ""),
        ("m.room.avatar", ""),
        ("m.room.canonical_alias", ""),
        ("m.room.encryption", ""),
        ("m.room.topic", ""),
    ] {
        if let Some(id) = state.get(&(ty.to_owned(), sk.to_owned()))
            && let Some(p) = s.rooms.pdu(id.as_str()).await?
        {
            out.push(p.to_stripped());
        }
    }
    if let Some(id) = state.get(&("m.room.member".to_owned(), user.to_string()))
        && let Some(invite) = s.rooms.pdu(id.as_str()).await?
    {
        if let Some(inviter) = state.get(&("m.room.member".to_owned(), invite.sender.to_string()))
            && let Some(p) = s.rooms.pdu(inviter.as_str()).await?
        {
            out.push(p.to_stripped());
        }
        let mut ev = invite.to_stripped();
        ev["event_id"] = json!(invite.event_id);
        ev["origin_server_ts"] = json!(invite.origin_server_ts);
        out.push(ev);
    }
    Ok(out)
}
