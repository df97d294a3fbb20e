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
use ruma::api::client::room::get_room_event;
use ruma::api::client::state::{get_state_event_for_key, get_state_events};
use ruma::{OwnedRoomId, RoomId};
use serde_json::{Map, Value, json};

use crate::error::{MatrixError, Result};
use crate::http::extract::{GuestAuth, Ruma};
use crate::http::{AppState, ruma_route};
use crate::services::rooms::{Pdu, StateMap};
use crate::storage::Requester;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<get_room_event::v3::Request, _, _>(r, event);
    let r = ruma_route::<get_state_events::v3::Request, _, _>(r, state);
    let r = ruma_route::<get_state_event_for_key::v3::Request, _, _>(r, state_for_key);
    let r = ruma_route::<get_member_events::v3::Request, _, _>(r, members);
    let r = ruma_route::<joined_members::v3::Request, _, _>(r, joined_members);
    let r = ruma_route::<joined_rooms::v3::Request, _, _>(r, joined_rooms);
    let r = ruma_route::<get_message_events::v3::Request, _, _>(r, messages);
    let r = ruma_route::<get_context::v3::Request, _, _>(r, context);
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
) -> Result<Json<Value>> {
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
    Ok(Json(s.rooms.client_event(&pdu, viewer(&r)).await?))
}

async fn state(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<get_state_events::v3::Request>,
) -> Result<Json<Value>> {
    let state = s.rooms.readable_state(&req.room_id, &r.user_id()).await?;
    let pdus = state_pdus(&s, &state).await?;
    Ok(Json(Value::Array(
        s.rooms.client_events(&pdus, viewer(&r)).await?,
    )))
}

async fn state_for_key(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<get_state_event_for_key::v3::Request>,
) -> Result<Json<Value>> {
    let state = s.rooms.readable_state(&req.room_id, &r.user_id()).await?;
    let not_found = || MatrixError::not_found("State event not found");
    let id = state
        .get(&(req.event_type.to_string(), req.state_key.clone()))
        .ok_or_else(not_found)?;
    let pdu = s.rooms.pdu(id.as_str()).await?.ok_or_else(not_found)?;
    let ev = s.rooms.client_event(&pdu, viewer(&r)).await?;
    if req.format == get_state_event_for_key::v3::StateEventFormat::Event {
        return Ok(Json(ev));
    }
    Ok(Json(
        ev.get("content").cloned().unwrap_or_else(|| json!({})),
    ))
}

async fn members(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<get_member_events::v3::Request>,
) -> Result<Json<Value>> {
    let user = r.user_id();
    let mut state = s.rooms.readable_state(&req.room_id, &user).await?;
    if let Some(at) = &req.at {
        // The members as of a sync token, if the user could see the room then.
        let pos = crate::services::rooms::timeline::inclusive_stream_position(at)
            .ok_or_else(|| MatrixError::invalid_param("Invalid `at` token"))?;
        if let Some(row) = s
            .storage
            .room_event_at_stream(req.room_id.as_str(), pos)
            .await?
        {
            let at_state = s.rooms.state_after(row.state_group.unwrap_or(0)).await?;
            let then = at_state.get(&("m.room.member".to_owned(), user.to_string()));
            let world = s
                .rooms
                .state_content(&at_state, "m.room.history_visibility", "")
                .await?;
            let world = world.and_then(|c| {
                c["history_visibility"]
                    .as_str()
                    .map(|v| v == "world_readable")
            });
            if then.is_some() || world == Some(true) {
                state = at_state;
            }
        }
    }
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
    Ok(Json(
        json!({ "chunk": s.rooms.client_events(&pdus, viewer(&r)).await? }),
    ))
}

async fn joined_members(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<joined_members::v3::Request>,
) -> Result<Json<Value>> {
    let state = s.rooms.readable_state(&req.room_id, &r.user_id()).await?;
    let mut joined = Map::new();
    for ((ty, sk), id) in state.iter() {
        if ty != "m.room.member" {
            continue;
        }
        let Some(p) = s.rooms.pdu(id.as_str()).await? else {
            continue;
        };
        if p.membership().as_deref() == Some("join") {
            let c = p.content_value();
            joined.insert(
                sk.clone(),
                json!({ "display_name": c.get("displayname"), "avatar_url": c.get("avatar_url") }),
            );
        }
    }
    Ok(Json(json!({ "joined": joined })))
}

async fn joined_rooms(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    _: Ruma<joined_rooms::v3::Request>,
) -> Result<Json<Value>> {
    let rooms: Vec<String> = s
        .storage
        .rooms_for_user(&r.user_id)
        .await?
        .into_iter()
        .filter(|m| m.membership == ruma::events::room::member::MembershipState::Join)
        .map(|m| m.room_id.to_string())
        .collect();
    Ok(Json(json!({ "joined_rooms": rooms })))
}

/// Member events for the senders of `events` (lazy-loading members).
async fn lazy_members(
    s: &AppState,
    r: &Requester,
    room_id: &RoomId,
    events: &[Pdu],
) -> Result<Vec<Value>> {
    let state = s.rooms.current_state(room_id).await?;
    let mut senders: Vec<&str> = events.iter().map(|p| p.sender.as_str()).collect();
    senders.sort_unstable();
    senders.dedup();
    let mut out = Vec::new();
    for sender in senders {
        if let Some(id) = state.get(&("m.room.member".to_owned(), sender.to_owned()))
            && let Some(p) = s.rooms.pdu(id.as_str()).await?
        {
            out.push(s.rooms.client_event(&p, viewer(r)).await?);
        }
    }
    Ok(out)
}

async fn check_can_read(s: &AppState, room_id: &OwnedRoomId, r: &Requester) -> Result<()> {
    s.rooms
        .readable_state(room_id, &r.user_id())
        .await
        .map(|_| ())
}

async fn messages(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<get_message_events::v3::Request>,
) -> Result<Json<Value>> {
    check_can_read(&s, &req.room_id, &r).await?;
    let limit = u64::from(req.limit).clamp(1, 1000) as usize;
    let backwards = req.dir == Direction::Backward;
    let page = s
        .rooms
        .messages(
            &req.room_id,
            Some(&r.user_id()),
            req.from.as_deref(),
            req.to.as_deref(),
            backwards,
            limit,
            &req.filter,
        )
        .await?;
    let mut body = json!({
        "chunk": s.rooms.client_events(&page.events, viewer(&r)).await?,
        "start": page.start,
    });
    if let Some(end) = page.end {
        body["end"] = json!(end);
    }
    if !req.filter.lazy_load_options.is_disabled() {
        body["state"] = json!(lazy_members(&s, &r, &req.room_id, &page.events).await?);
    }
    Ok(Json(body))
}

async fn context(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<get_context::v3::Request>,
) -> Result<Json<Value>> {
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
    Ok(Json(json!({
        "event": s.rooms.client_event(&pdu, viewer(&r)).await?,
        "events_before": s.rooms.client_events(&before.events, viewer(&r)).await?,
        "events_after": s.rooms.client_events(&after.events, viewer(&r)).await?,
        "start": before.end.unwrap_or(before.start),
        "end": after.end.unwrap_or(after.start),
        "state": s.rooms.client_events(&state_events, viewer(&r)).await?,
    })))
}
