//! Account data (global and per room), tags, receipts, read markers, typing
//! and presence.

use std::time::Duration;

use axum::extract::State;
use axum::{Json, Router};
use ruma::api::client::config::{
    get_global_account_data, get_room_account_data, set_global_account_data, set_room_account_data,
};
use ruma::api::client::presence::{get_presence, set_presence};
use ruma::api::client::read_marker::set_read_marker;
use ruma::api::client::receipt::create_receipt;
use ruma::api::client::tag::{create_tag, delete_tag, get_tags};
use ruma::api::client::typing::create_typing_event;
use ruma::presence::PresenceState;
use ruma::{RoomId, UserId};
use serde_json::{Value, json};

use crate::error::{MatrixError, Result};
use crate::http::extract::{Auth, GuestAuth, Ruma, RumaResponse};
use crate::http::{AppState, ruma_route};
use crate::model::accounts::Requester;
use crate::services::relations;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<get_global_account_data::v3::Request, _, _>(r, get_global);
    let r = ruma_route::<set_global_account_data::v3::Request, _, _>(r, set_global);
    let r = ruma_route::<get_room_account_data::v3::Request, _, _>(r, get_room);
    let r = ruma_route::<set_room_account_data::v3::Request, _, _>(r, set_room);
    let r = ruma_route::<get_tags::v3::Request, _, _>(r, tags);
    let r = ruma_route::<create_tag::v3::Request, _, _>(r, put_tag);
    let r = ruma_route::<delete_tag::v3::Request, _, _>(r, remove_tag);
    let r = ruma_route::<create_receipt::v3::Request, _, _>(r, receipt);
    let r = ruma_route::<set_read_marker::v3::Request, _, _>(r, read_markers);
    let r = ruma_route::<create_typing_event::v3::Request, _, _>(r, typing);
    let r = ruma_route::<get_presence::v3::Request, _, _>(r, presence_get);
    ruma_route::<set_presence::v3::Request, _, _>(r, presence_set)
}

fn only_self(r: &Requester, user: &UserId) -> Result<()> {
    if r.user_id != user.as_str() {
        return Err(MatrixError::forbidden("Cannot access another user's data"));
    }
    Ok(())
}

fn raw_object<T>(raw: &ruma::serde::Raw<T>) -> Result<Value> {
    let v: Value =
        serde_json::from_str(raw.json().get()).map_err(|e| MatrixError::bad_json(e.to_string()))?;
    if !v.is_object() {
        return Err(MatrixError::bad_json("Content must be a JSON object"));
    }
    Ok(v)
}

/// Stored account data content as ruma carries it; 404 when there is none.
fn found<T>(content: Option<Value>) -> Result<ruma::serde::Raw<T>> {
    let content = content.ok_or_else(|| MatrixError::not_found("Account data not found"))?;
    serde_json::value::to_raw_value(&content)
        .map(ruma::serde::Raw::from_json)
        .map_err(MatrixError::internal)
}

/// Push rules are managed through `/pushrules`, not account data.
fn check_type(ty: &str) -> Result<()> {
    if ty == "m.push_rules" {
        return Err(MatrixError::new(
            http::StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::BadJson,
            "Use the /pushrules API to change push rules",
        ));
    }
    Ok(())
}

async fn get_global(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<get_global_account_data::v3::Request>,
) -> Result<RumaResponse<get_global_account_data::v3::Response>> {
    only_self(&r, &req.user_id)?;
    let v = s
        .account_data
        .get(&req.user_id, None, &req.event_type.to_string())
        .await?;
    Ok(RumaResponse(get_global_account_data::v3::Response::new(
        found(v)?,
    )))
}

async fn set_global(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<set_global_account_data::v3::Request>,
) -> Result<RumaResponse<set_global_account_data::v3::Response>> {
    only_self(&r, &req.user_id)?;
    let ty = req.event_type.to_string();
    check_type(&ty)?;
    s.account_data
        .set(&req.user_id, None, &ty, &raw_object(&req.data)?)
        .await?;
    Ok(RumaResponse(set_global_account_data::v3::Response::new()))
}

async fn get_room(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<get_room_account_data::v3::Request>,
) -> Result<RumaResponse<get_room_account_data::v3::Response>> {
    only_self(&r, &req.user_id)?;
    let v = s
        .account_data
        .get(
            &req.user_id,
            Some(&req.room_id),
            &req.event_type.to_string(),
        )
        .await?;
    Ok(RumaResponse(get_room_account_data::v3::Response::new(
        found(v)?,
    )))
}

async fn set_room(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<set_room_account_data::v3::Request>,
) -> Result<RumaResponse<set_room_account_data::v3::Response>> {
    only_self(&r, &req.user_id)?;
    let ty = req.event_type.to_string();
    check_type(&ty)?;
    s.rooms.known_version(&req.room_id).await?;
    s.account_data
        .set(
            &req.user_id,
            Some(&req.room_id),
            &ty,
            &raw_object(&req.data)?,
        )
        .await?;
    Ok(RumaResponse(set_room_account_data::v3::Response::new()))
}

async fn current_tags(s: &AppState, user: &UserId, room: &RoomId) -> Result<Value> {
    Ok(s.account_data
        .get(user, Some(room), "m.tag")
        .await?
        .and_then(|v| v.get("tags").cloned())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({})))
}

// JSON: ruma's `TagInfo` keeps only `order` and would drop a stored tag's other fields.
async fn tags(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<get_tags::v3::Request>,
) -> Result<Json<Value>> {
    only_self(&r, &req.user_id)?;
    Ok(Json(
        json!({ "tags": current_tags(&s, &req.user_id, &req.room_id).await? }),
    ))
}

async fn put_tag(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<create_tag::v3::Request>,
) -> Result<RumaResponse<create_tag::v3::Response>> {
    only_self(&r, &req.user_id)?;
    let mut tags = current_tags(&s, &req.user_id, &req.room_id).await?;
    let info = serde_json::to_value(&req.tag_info).map_err(MatrixError::internal)?;
    tags[req.tag.as_str()] = info;
    s.account_data
        .set(
            &req.user_id,
            Some(&req.room_id),
            "m.tag",
            &json!({ "tags": tags }),
        )
        .await?;
    Ok(RumaResponse(create_tag::v3::Response::new()))
}

async fn remove_tag(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<delete_tag::v3::Request>,
) -> Result<RumaResponse<delete_tag::v3::Response>> {
    only_self(&r, &req.user_id)?;
    let mut tags = current_tags(&s, &req.user_id, &req.room_id).await?;
    if let Some(map) = tags.as_object_mut() {
        map.remove(&req.tag);
    }
    s.account_data
        .set(
            &req.user_id,
            Some(&req.room_id),
            "m.tag",
            &json!({ "tags": tags }),
        )
        .await?;
    Ok(RumaResponse(delete_tag::v3::Response::new()))
}

/// Receipts and markers need the user in the room and the event in it;
/// the event's stream position.
async fn check_event_in_room(
    s: &AppState,
    r: &Requester,
    room: &RoomId,
    event_id: &str,
) -> Result<i64> {
    if s.rooms.membership(room, &r.user_id()).await?.as_deref() != Some("join") {
        return Err(MatrixError::forbidden("You are not joined to this room"));
    }
    match s.rooms.pdu(event_id).await? {
        Some(p) if p.room_id == room => Ok(p.stream_ordering),
        _ => Err(MatrixError::not_found("Event not found")),
    }
}

async fn receipt(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<create_receipt::v3::Request>,
) -> Result<RumaResponse<create_receipt::v3::Response>> {
    let event_pos = check_event_in_room(&s, &r, &req.room_id, req.event_id.as_str()).await?;
    let user = r.user_id();
    // As Synapse: a thread id is a non-empty string, never on a fully-read
    // marker, and names the thread the event is in (`main`: none).
    if let Some(thread) = req.thread.as_str() {
        if thread.is_empty() {
            return Err(MatrixError::invalid_param(
                "thread_id must be a non-empty string",
            ));
        }
        if req.receipt_type.as_str() == "m.fully_read" {
            return Err(MatrixError::invalid_param(
                "thread_id is not compatible with m.fully_read receipts",
            ));
        }
        if !relations::in_thread(&s, req.event_id.as_str(), thread).await? {
            return Err(MatrixError::invalid_param(format!(
                "event_id {} is not related to thread {thread}",
                req.event_id
            )));
        }
    }
    match req.receipt_type.as_str() {
        "m.fully_read" => {
            s.account_data
                .set(
                    &user,
                    Some(&req.room_id),
                    "m.fully_read",
                    &json!({ "event_id": req.event_id }),
                )
                .await?;
        }
        ty @ ("m.read" | "m.read.private") => {
            let thread = req.thread.as_str().map(str::to_owned);
            s.ephemeral
                .set_receipt(
                    &req.room_id,
                    &user,
                    ty,
                    (&req.event_id, event_pos),
                    thread.as_deref(),
                )
                .await?;
            crate::services::pushers::receipt_sent(&s, &user).await;
        }
        other => {
            return Err(MatrixError::invalid_param(format!(
                "Unknown receipt type {other}"
            )));
        }
    }
    Ok(RumaResponse(create_receipt::v3::Response::new()))
}

async fn read_markers(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<set_read_marker::v3::Request>,
) -> Result<RumaResponse<set_read_marker::v3::Response>> {
    let user = r.user_id();
    if let Some(e) = &req.fully_read {
        check_event_in_room(&s, &r, &req.room_id, e.as_str()).await?;
        s.account_data
            .set(
                &user,
                Some(&req.room_id),
                "m.fully_read",
                &json!({ "event_id": e }),
            )
            .await?;
    }
    let mut read = false;
    for (ty, e) in [
        ("m.read", &req.read_receipt),
        ("m.read.private", &req.private_read_receipt),
    ] {
        if let Some(e) = e {
            let event_pos = check_event_in_room(&s, &r, &req.room_id, e.as_str()).await?;
            s.ephemeral
                .set_receipt(&req.room_id, &user, ty, (e, event_pos), None)
                .await?;
            read = true;
        }
    }
    if read {
        crate::services::pushers::receipt_sent(&s, &user).await;
    }
    Ok(RumaResponse(set_read_marker::v3::Response::new()))
}

/// Synapse's timeout for `typing: true` without one (sytest "PUT
/// /rooms/:room_id/typing/:user_id sets typing notification" sends none).
const DEFAULT_TYPING_TIMEOUT_MS: u64 = 30_000;

async fn typing(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    raw: axum::extract::Request,
) -> Result<RumaResponse<create_typing_event::v3::Response>> {
    let (req, _) = super::ruma_and_body::<create_typing_event::v3::Request>(&s, raw, |body| {
        let add = body.get("typing") == Some(&Value::Bool(true)) && !body.contains_key("timeout");
        if add {
            body.insert("timeout".into(), json!(DEFAULT_TYPING_TIMEOUT_MS));
        }
        add
    })
    .await?;
    only_self(&r, &req.user_id)?;
    if s.rooms
        .membership(&req.room_id, &req.user_id)
        .await?
        .as_deref()
        != Some("join")
    {
        return Err(MatrixError::forbidden("You are not joined to this room"));
    }
    match req.state {
        create_typing_event::v3::Typing::Yes(info) => {
            s.ephemeral
                .set_typing(&req.room_id, &req.user_id, true, info.timeout)
        }
        create_typing_event::v3::Typing::No => {
            s.ephemeral
                .set_typing(&req.room_id, &req.user_id, false, Duration::ZERO)
        }
    }
    Ok(RumaResponse(create_typing_event::v3::Response::new()))
}

async fn presence_get(
    State(s): State<AppState>,
    Auth(_): Auth,
    Ruma(req): Ruma<get_presence::v3::Request>,
) -> Result<RumaResponse<get_presence::v3::Response>> {
    if !s.config.presence.enabled {
        return Err(MatrixError::forbidden(
            "Presence is disabled on this server",
        ));
    }
    if !s.accounts.is_local(&req.user_id) || s.accounts.get(&req.user_id).await?.is_none() {
        return Err(MatrixError::not_found("Unknown user"));
    }
    let status = s.presence.get(&req.user_id).await?;
    let mut resp = get_presence::v3::Response::new(PresenceState::from(status.state.as_str()));
    resp.status_msg = status.status_msg;
    resp.currently_active = status.currently_active;
    resp.last_active_ago = status.last_active_ago.map(Duration::from_millis);
    Ok(RumaResponse(resp))
}

async fn presence_set(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<set_presence::v3::Request>,
) -> Result<RumaResponse<set_presence::v3::Response>> {
    only_self(&r, &req.user_id)?;
    if s.config.presence.enabled {
        s.presence
            .set(
                &req.user_id,
                req.presence.as_str(),
                req.status_msg.as_deref(),
            )
            .await?;
    }
    Ok(RumaResponse(set_presence::v3::Response::new()))
}
