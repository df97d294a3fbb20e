//! Reading rooms: `/event`, `/state`, `/members`, `/joined_members`,
//! `/messages`, `/context` and `/joined_rooms`. History visibility applies to
//! every one (see `services/rooms/visibility.rs`).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use ruma::api::Direction;
use ruma::api::client::context::get_context;
use ruma::api::client::filter::RoomEventFilter;
use ruma::api::client::membership::{get_member_events, joined_members, joined_rooms};
use ruma::api::client::message::get_message_events;
use ruma::api::client::room::{get_event_by_timestamp, get_room_event};
use ruma::api::client::state::{get_state_event_for_key, get_state_events};
use ruma::serde::Raw;
use ruma::{OwnedRoomId, RoomId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue as RawJsonValue;

use crate::error::{MatrixError, Result};
use std::collections::BTreeMap;

use crate::http::extract::{GuestAuth, Ruma, RumaResponse};
use crate::http::{AppState, ruma_route};
use crate::model::accounts::Requester;
use crate::model::pdu::{AsPdu, ClientEvent, Pdu};
use crate::model::state::StateMap;
use crate::services::memberships;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<get_room_event::v3::Request, _, _>(r, event);
    let r = ruma_route::<get_state_events::v3::Request, _, _>(r, state);
    let r = ruma_route::<get_state_event_for_key::v3::Request, _, _>(r, state_for_key);
    let r = ruma_route::<get_member_events::v3::Request, _, _>(r, members);
    let r = ruma_route::<joined_members::v3::Request, _, _>(r, joined_members);
    let r = ruma_route::<joined_rooms::v3::Request, _, _>(r, joined_rooms);
    let r = ruma_route::<get_message_events::v3::Request, _, _>(r, messages);
    let r = ruma_route::<get_context::v3::Request, _, _>(r, context);
    let r = ruma_route::<get_event_by_timestamp::v1::Request, _, _>(r, timestamp_to_event);
    r.route(
        "/_matrix/client/v3/rooms/{room_id}/state/{event_type}",
        get(state_for_key),
    )
    .route(
        "/_matrix/client/v3/rooms/{room_id}/state/{event_type}/",
        get(state_for_key),
    )
}

fn viewer(r: &Requester) -> Option<(&str, &str)> {
    Some((r.user_id.as_str(), r.device_id.as_str()))
}

/// The client form of events, as JSON text (never parsed again).
async fn raw_events<T, P: AsPdu>(s: &AppState, r: &Requester, pdus: &[P]) -> Result<Vec<Raw<T>>> {
    Ok(s.rooms
        .client_events_raw(pdus, viewer(r))
        .await?
        .iter()
        .map(|event| Raw::from_json(event.to_raw()))
        .collect())
}

/// The client form of one event.
async fn raw_event(s: &AppState, r: &Requester, pdu: &Pdu) -> Result<ClientEvent> {
    s.rooms
        .client_events_raw(std::slice::from_ref(pdu), viewer(r))
        .await?
        .pop()
        .ok_or_else(|| MatrixError::internal("no client form of the event"))
}

async fn state_pdus(s: &AppState, state: &StateMap) -> Result<Vec<Pdu>> {
    let mut pdus = Vec::with_capacity(state.len());
    for id in state.values() {
        if let Some(p) = s.rooms.pdu(id.as_str()).await? {
            pdus.push(p);
        }
    }
    pdus.sort_by_key(|p| p.stream_ordering);
    Ok(pdus)
}

async fn event(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<get_room_event::v3::Request>,
) -> Result<RumaResponse<get_room_event::v3::Response>> {
    s.rooms.known_version(&req.room_id).await?;
    let not_found = || MatrixError::not_found("Event not found");
    let pdu = s
        .rooms
        .pdu(req.event_id.as_str())
        .await?
        .ok_or_else(not_found)?;
    if pdu.room_id != req.room_id {
        return Err(not_found());
    }
    let user = r.user_id();
    let current = s.rooms.membership(&req.room_id, &user).await?;
    if !s.rooms.can_see(&user, &pdu, current.as_deref()).await? {
        return Err(not_found());
    }
    let event = raw_event(&s, &r, &pdu).await?;
    Ok(RumaResponse(get_room_event::v3::Response::new(
        Raw::from_json(event.to_raw()),
    )))
}

async fn state(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<get_state_events::v3::Request>,
) -> Result<RumaResponse<get_state_events::v3::Response>> {
    let state = s.rooms.readable_state(&req.room_id, &r.user_id()).await?;
    let pdus = state_pdus(&s, &state).await?;
    Ok(RumaResponse(get_state_events::v3::Response::new(
        raw_events(&s, &r, &pdus).await?,
    )))
}

async fn state_for_key(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<get_state_event_for_key::v3::Request>,
) -> Result<RumaResponse<get_state_event_for_key::v3::Response>> {
    let state = s.rooms.readable_state(&req.room_id, &r.user_id()).await?;
    let not_found = || MatrixError::not_found("State event not found");
    let id = state
        .get(&(req.event_type.to_string(), req.state_key.clone()))
        .ok_or_else(not_found)?;
    let pdu = s.rooms.pdu(id.as_str()).await?.ok_or_else(not_found)?;
    let ev = raw_event(&s, &r, &pdu).await?;
    let body = if req.format == get_state_event_for_key::v3::StateEventFormat::Event {
        ev.to_raw()
    } else {
        match ev.content() {
            Some(content) => content.to_owned(),
            None => RawJsonValue::from_string("{}".to_owned()).map_err(MatrixError::internal)?,
        }
    };
    Ok(RumaResponse(get_state_event_for_key::v3::Response::new(
        body,
    )))
}

async fn members(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<get_member_events::v3::Request>,
) -> Result<RumaResponse<get_member_events::v3::Response>> {
    let user = r.user_id();
    let state = memberships::members_state(&s, &user, &req.room_id, req.at.as_deref()).await?;
    let mut pdus = Vec::new();
    for ((ty, _), id) in state.iter() {
        if ty != "m.room.member" {
            continue;
        }
        let Some(p) = s.rooms.pdu(id.as_str()).await? else {
            continue;
        };
        let m = p.membership().unwrap_or_default();
        if req
            .membership
            .as_ref()
            .is_some_and(|want| want.as_str() != m)
        {
            continue;
        }
        if req
            .not_membership
            .as_ref()
            .is_some_and(|not| not.as_str() == m)
        {
            continue;
        }
        pdus.push(p);
    }
    pdus.sort_by_key(|p| p.stream_ordering);
    Ok(RumaResponse(get_member_events::v3::Response::new(
        raw_events(&s, &r, &pdus).await?,
    )))
}

/// `/joined_members`'s answer, as ruma's `joined_members::v3::Response`.
#[derive(Serialize)]
struct JoinedMembers {
    joined: BTreeMap<String, JoinedMember>,
}

/// ruma's `RoomMember`, but a missing display name or avatar is sent as null (as Synapse does), not left out.
#[derive(Serialize)]
struct JoinedMember {
    display_name: Option<Box<RawJsonValue>>,
    avatar_url: Option<Box<RawJsonValue>>,
}

/// The profile fields of a member event's content, each its own JSON value.
#[derive(Deserialize, Default)]
struct MemberProfile {
    #[serde(default)]
    displayname: Option<Box<RawJsonValue>>,
    #[serde(default)]
    avatar_url: Option<Box<RawJsonValue>>,
}

async fn joined_members(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<joined_members::v3::Request>,
) -> Result<Json<JoinedMembers>> {
    let state = s.rooms.readable_state(&req.room_id, &r.user_id()).await?;
    let mut joined = BTreeMap::new();
    for ((ty, sk), id) in state.iter() {
        if ty != "m.room.member" {
            continue;
        }
        let Some(p) = s.rooms.pdu(id.as_str()).await? else {
            continue;
        };
        if p.membership().as_deref() == Some("join") {
            let profile: MemberProfile = serde_json::from_str(p.content.get()).unwrap_or_default();
            let member = JoinedMember {
                display_name: profile.displayname,
                avatar_url: profile.avatar_url,
            };
            joined.insert(sk.clone(), member);
        }
    }
    Ok(Json(JoinedMembers { joined }))
}

async fn joined_rooms(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    _: Ruma<joined_rooms::v3::Request>,
) -> Result<RumaResponse<joined_rooms::v3::Response>> {
    let rooms = memberships::joined_rooms(&s, &r.user_id()).await?;
    Ok(RumaResponse(joined_rooms::v3::Response::new(rooms)))
}

/// Member events for the senders of `events` (lazy-loading members).
async fn lazy_members(
    s: &AppState,
    r: &Requester,
    room_id: &RoomId,
    events: &[Pdu],
) -> Result<Vec<ClientEvent>> {
    let state = s.rooms.current_state(room_id).await?;
    let mut senders: Vec<&str> = events.iter().map(|p| p.sender.as_str()).collect();
    senders.sort_unstable();
    senders.dedup();
    let mut members = Vec::new();
    for sender in senders {
        if let Some(id) = state.get(&("m.room.member".to_owned(), sender.to_owned()))
            && let Some(p) = s.rooms.pdu(id.as_str()).await?
        {
            members.push(p);
        }
    }
    s.rooms.client_events_raw(&members, viewer(r)).await
}

async fn check_can_read(s: &AppState, room_id: &OwnedRoomId, r: &Requester) -> Result<()> {
    s.rooms
        .readable_state(room_id, &r.user_id())
        .await
        .map(|_| ())
}

/// ruma's `get_message_events::v3::Response`, but `state` is sent (even empty) whenever members are lazy-loaded.
#[derive(Serialize)]
struct Messages {
    chunk: Vec<ClientEvent>,
    start: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    end: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<Vec<ClientEvent>>,
}

async fn messages(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<get_message_events::v3::Request>,
) -> Result<Json<Messages>> {
    check_can_read(&s, &req.room_id, &r).await?;
    let limit = u64::from(req.limit).clamp(1, 1000) as usize;
    let backwards = req.dir == Direction::Backward;
    let filter = req.filter;
    let mut page = s
        .rooms
        .messages(
            &req.room_id,
            Some(&r.user_id()),
            req.from.as_deref(),
            req.to.as_deref(),
            backwards,
            limit,
            &filter,
        )
        .await?;
    s.account_data
        .drop_ignored(&r.user_id(), &mut page.events)
        .await?;
    let state = if filter.lazy_load_options.is_disabled() {
        None
    } else {
        Some(lazy_members(&s, &r, &req.room_id, &page.events).await?)
    };
    Ok(Json(Messages {
        chunk: s.rooms.client_events_raw(&page.events, viewer(&r)).await?,
        start: page.start,
        end: page.end,
        state,
    }))
}

/// `GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event?ts=&dir=`:
/// the closest event to `ts` in `dir` the requester may see (local events:
/// Myelin does not federate); 404 `M_NOT_FOUND` when there is none.
async fn timestamp_to_event(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<get_event_by_timestamp::v1::Request>,
) -> Result<RumaResponse<get_event_by_timestamp::v1::Response>> {
    check_can_read(&s, &req.room_id, &r).await?;
    let ts = i64::from(req.ts.get());
    let backwards = req.dir == Direction::Backward;
    let pdu = s
        .rooms
        .event_near_time(&req.room_id, &r.user_id(), ts, backwards)
        .await?
        .ok_or_else(|| {
            let dir = if backwards { "b" } else { "f" };
            MatrixError::not_found(format!("Unable to find event from {ts} in direction {dir}"))
        })?;
    Ok(RumaResponse(get_event_by_timestamp::v1::Response::new(
        pdu.event_id.clone(),
        pdu.origin_server_ts,
    )))
}

/// ruma's `get_context::v3::Response`, but `events_before`, `events_after` and `state` are sent even when empty.
#[derive(Serialize)]
struct Context {
    event: ClientEvent,
    events_before: Vec<ClientEvent>,
    events_after: Vec<ClientEvent>,
    start: String,
    end: String,
    state: Vec<ClientEvent>,
}

async fn context(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<get_context::v3::Request>,
) -> Result<Json<Context>> {
    check_can_read(&s, &req.room_id, &r).await?;
    let user = r.user_id();
    let not_found = || MatrixError::not_found("Event not found");
    let pdu = s
        .rooms
        .pdu(req.event_id.as_str())
        .await?
        .ok_or_else(not_found)?;
    let current = s.rooms.membership(&req.room_id, &user).await?;
    if pdu.room_id != req.room_id || !s.rooms.can_see(&user, &pdu, current.as_deref()).await? {
        return Err(not_found());
    }
    let limit = u64::from(req.limit).min(1000) as usize;
    let filter: &RoomEventFilter = &req.filter;
    let (before, after) = s
        .rooms
        .context(&req.room_id, &user, &pdu, limit, filter)
        .await?;
    let state = s.rooms.state_at(&pdu).await?;
    let state_events = state_pdus(&s, &state).await?;
    let state_events: Vec<Pdu> = if !filter.lazy_load_options.is_disabled() {
        let mut senders: Vec<&str> = before
            .events
            .iter()
            .chain(after.events.iter())
            .map(|p| p.sender.as_str())
            .collect();
        senders.push(pdu.sender.as_str());
        state_events
            .into_iter()
            .filter(|p| {
                p.kind.to_string() != "m.room.member"
                    || senders.contains(&p.state_key.as_deref().unwrap_or(""))
            })
            .collect()
    } else {
        state_events
    };
    Ok(Json(Context {
        event: raw_event(&s, &r, &pdu).await?,
        events_before: s
            .rooms
            .client_events_raw(&before.events, viewer(&r))
            .await?,
        events_after: s.rooms.client_events_raw(&after.events, viewer(&r)).await?,
        start: before.end.unwrap_or(before.start),
        end: after.end.unwrap_or(after.start),
        state: s.rooms.client_events_raw(&state_events, viewer(&r)).await?,
    }))
}
