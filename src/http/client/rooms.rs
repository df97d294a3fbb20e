//! Writing to rooms: `createRoom`, membership (`join`, `knock`, `invite`,
//! `leave`, `forget`, `kick`, `ban`, `unban`), `send`, `state` (PUT) and
//! `redact`.

use axum::extract::Path;
use axum::extract::State;
use axum::routing::{post, put};
use axum::{Json, Router};
use ruma::api::client::knock::knock_room;
use ruma::api::client::membership::{
    ban_user, forget_room, invite_user, join_room_by_id, join_room_by_id_or_alias, kick_user,
    leave_room, unban_user,
};
use ruma::api::client::message::send_message_event;
use ruma::api::client::redact::redact_event;
use ruma::api::client::room::create_room;
use ruma::api::client::state::send_state_event;
use ruma::events::TimelineEventType;
use ruma::{OwnedEventId, OwnedRoomId, RoomId, RoomVersionId, UserId};
use serde_json::{Map, Value, json};

use crate::error::{MatrixError, Result};
use crate::http::extract::{Auth, GuestAuth, JsonBody, Ruma, RumaResponse};
use crate::http::{AppState, ruma_route};
use crate::model::accounts::Requester;
use crate::services::room_admin::check_not_blocked;
use crate::services::rooms::create::{InitialState, Preset};
use crate::services::rooms::{CreateRoom, NewEvent, TxnRef};
use crate::services::{directory, guests, memberships, relations};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<create_room::v3::Request, _, _>(r, create);
    let r = ruma_route::<join_room_by_id::v3::Request, _, _>(r, join_by_id);
    let r = ruma_route::<join_room_by_id_or_alias::v3::Request, _, _>(r, join_by_id_or_alias);
    let r = ruma_route::<knock_room::v3::Request, _, _>(r, knock);
    let r = ruma_route::<invite_user::v3::Request, _, _>(r, invite);
    let r = ruma_route::<leave_room::v3::Request, _, _>(r, leave);
    let r = ruma_route::<forget_room::v3::Request, _, _>(r, forget);
    let r = ruma_route::<kick_user::v3::Request, _, _>(r, kick);
    let r = ruma_route::<ban_user::v3::Request, _, _>(r, ban);
    let r = ruma_route::<unban_user::v3::Request, _, _>(r, unban);
    let r = ruma_route::<send_message_event::v3::Request, _, _>(r, send);
    let r = ruma_route::<redact_event::v3::Request, _, _>(r, redact);
    let r = ruma_route::<send_state_event::v3::Request, _, _>(r, send_state);
    // The state key may be left out (an empty state key).
    r.route(
        "/_matrix/client/v3/rooms/{room_id}/state/{event_type}",
        put(send_state),
    )
    // Sending without a transaction id (deprecated, served by Synapse): each
    // call is a new event.
    .route(
        "/_matrix/client/v3/rooms/{room_id}/send/{event_type}",
        post(send_without_txn),
    )
    .route(
        "/_matrix/client/v3/rooms/{room_id}/state/{event_type}/",
        put(send_state),
    )
}

/// The `{displayname, avatar_url}` of a local user, for member events.
pub(crate) async fn member_profile(s: &AppState, user: &UserId) -> Result<Value> {
    let mut content = Map::new();
    if s.accounts.is_local(user)
        && let Ok(p) = s.profiles.get(user).await
    {
        content = p.member_content();
    }
    Ok(Value::Object(content))
}

/// The server-notices invite cannot be rejected, by any route (leave, kick
/// of oneself, a member state event); the room can be left once joined.
async fn check_can_reject(s: &AppState, room_id: &RoomId, user: &UserId) -> Result<()> {
    if s.rooms.membership(room_id, user).await?.as_deref() == Some("invite")
        && crate::services::notices::is_notice_room(s, user, room_id).await?
    {
        return Err(MatrixError::new(
            http::StatusCode::FORBIDDEN,
            ruma::api::error::ErrorKind::CannotLeaveServerNoticeRoom,
            "You cannot reject this invite",
        ));
    }
    Ok(())
}

/// A user who may be invited: local and existing (federation comes later).
async fn check_invitee(s: &AppState, user: &UserId) -> Result<()> {
    if !s.accounts.is_local(user) {
        return Err(MatrixError::invalid_param(
            "Inviting users of other servers needs federation, not available yet",
        ));
    }
    let mut account = s.accounts.get(user).await?;
    // An unknown user an application service's namespace holds: the
    // service may create it now (as Synapse).
    if account.is_none() && s.appservices.query_user(user.as_str()).await {
        account = s.accounts.get(user).await?;
    }
    match account {
        Some(a) if !a.is_deactivated => Ok(()),
        _ => Err(MatrixError::not_found(format!(
            "User {user} does not exist"
        ))),
    }
}

fn raw_to_value<T>(raw: &ruma::serde::Raw<T>) -> Result<Value> {
    serde_json::from_str(raw.json().get()).map_err(|e| MatrixError::bad_json(e.to_string()))
}

async fn create(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<create_room::v3::Request>,
) -> Result<RumaResponse<create_room::v3::Response>> {
    let creator = r.user_id();
    let version = req
        .room_version
        .clone()
        .unwrap_or_else(|| s.rooms.default_version().clone());
    let creation_content = match &req.creation_content {
        Some(raw) => match raw_to_value(raw)? {
            Value::Object(mut m) => {
                // The server decides these.
                for key in ["creator", "room_version", "additional_creators"] {
                    m.remove(key);
                }
                m
            }
            _ => return Err(MatrixError::bad_json("creation_content must be an object")),
        },
        None => Map::new(),
    };
    let preset = match req.preset.as_ref().map(|p| p.as_str()) {
        Some("private_chat") => Preset::PrivateChat,
        Some("trusted_private_chat") => Preset::TrustedPrivateChat,
        Some("public_chat") => Preset::PublicChat,
        Some(other) => return Err(MatrixError::bad_json(format!("Unknown preset {other}"))),
        None if req.visibility == ruma::api::client::room::Visibility::Public => Preset::PublicChat,
        None => Preset::PrivateChat,
    };
    let mut initial_state = Vec::new();
    for raw in &req.initial_state {
        let v = raw_to_value(raw)?;
        let ty = v
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| MatrixError::bad_json("initial_state event without type"))?;
        let sk = v
            .get("state_key")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let content = v.get("content").cloned().unwrap_or_else(|| json!({}));
        initial_state.push(InitialState {
            event_type: ty.to_owned(),
            state_key: sk.to_owned(),
            content,
        });
    }
    let power_level_override = match &req.power_level_content_override {
        Some(raw) => match raw_to_value(raw)? {
            Value::Object(m) => Some(m),
            _ => {
                return Err(MatrixError::bad_json(
                    "power_level_content_override must be an object",
                ));
            }
        },
        None => None,
    };
    let alias = match &req.room_alias_name {
        Some(name) => {
            if name.is_empty() || name.contains(':') || name.chars().any(char::is_whitespace) {
                return Err(MatrixError::invalid_param(
                    "room_alias_name must be a plain local name",
                ));
            }
            let alias = format!("#{name}:{}", s.server_name);
            ruma::RoomAliasId::parse(&alias)
                .map_err(|e| MatrixError::invalid_param(format!("Invalid alias: {e}")))?;
            s.appservices
                .check_alias_use(&alias, r.app_service.as_deref())?;
            // Reserved by create_room: taken is 400 M_ROOM_IN_USE, no room.
            Some(alias)
        }
        None => None,
    };
    for invitee in &req.invite {
        check_invitee(&s, invitee).await?;
    }
    let room_id = s
        .rooms
        .create_room(CreateRoom {
            creator: creator.clone(),
            version,
            creation_content,
            preset,
            name: req.name.clone(),
            topic: req.topic.clone(),
            invite: req.invite.clone(),
            is_direct: req.is_direct,
            initial_state,
            power_level_override,
            canonical_alias: alias,
            creator_member_content: member_profile(&s, &creator).await?,
            room_id: None,
        })
        .await?;
    if req.visibility == ruma::api::client::room::Visibility::Public {
        directory::publish(&s, &room_id, true).await?;
    }
    tracing::info!(%room_id, %creator, "room created");
    Ok(RumaResponse(create_room::v3::Response::new(room_id)))
}

/// Resolves `#alias:server` (local aliases only until federation) or a room id.
pub(crate) async fn resolve_room(s: &AppState, id_or_alias: &str) -> Result<OwnedRoomId> {
    if id_or_alias.starts_with('#') {
        return directory::resolve_alias(s, id_or_alias).await;
    }
    OwnedRoomId::try_from(id_or_alias)
        .map_err(|e| MatrixError::invalid_param(format!("Invalid room id: {e}")))
}

/// `extra` is the rest of the join body: like Synapse, its keys go into the
/// member event's content (sytest "POST /join/:room_id can join a room with
/// custom content"), except those the server decides. A guest joins only
/// rooms that admit guests (`guests::check_join`).
async fn do_join(
    s: &AppState,
    room_id: &RoomId,
    r: &Requester,
    reason: Option<&str>,
    mut extra: Map<String, Value>,
) -> Result<()> {
    let user = &r.user;
    check_not_blocked(s, room_id).await?;
    s.rooms.known_version(room_id).await?;
    for key in [
        "membership",
        "displayname",
        "avatar_url",
        "reason",
        "third_party_signed",
        "join_authorised_via_users_server",
    ] {
        extra.remove(key);
    }
    if let Value::Object(profile) = member_profile(s, user).await? {
        extra.extend(profile);
    }
    guests::check_join(s, r, room_id, &mut extra).await?;
    s.rooms
        .join(room_id, user, Value::Object(extra), reason)
        .await?;
    // The join stands whatever this does: it only copies the user's tags and
    // push rule when the room replaced another.
    if let Err(e) = crate::services::room_upgrade::carry_user_state_on_join(s, user, room_id).await
    {
        tracing::warn!(%user, %room_id, error = %e.message(), "could not carry the user's state into the upgraded room");
    }
    Ok(())
}

async fn join_by_id(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    raw: axum::extract::Request,
) -> Result<RumaResponse<join_room_by_id::v3::Response>> {
    let (req, extra) =
        super::ruma_and_body::<join_room_by_id::v3::Request>(&s, raw, |_| false).await?;
    do_join(&s, &req.room_id, &r, req.reason.as_deref(), extra).await?;
    Ok(RumaResponse(join_room_by_id::v3::Response::new(
        req.room_id,
    )))
}

async fn join_by_id_or_alias(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    raw: axum::extract::Request,
) -> Result<RumaResponse<join_room_by_id_or_alias::v3::Response>> {
    let (req, extra) =
        super::ruma_and_body::<join_room_by_id_or_alias::v3::Request>(&s, raw, |_| false).await?;
    let room_id = resolve_room(&s, req.room_id_or_alias.as_str()).await?;
    do_join(&s, &room_id, &r, req.reason.as_deref(), extra).await?;
    Ok(RumaResponse(join_room_by_id_or_alias::v3::Response::new(
        room_id,
    )))
}

/// Knocks on a local room; `via` and `server_name` matter only for rooms of
/// other servers (federation comes later).
async fn knock(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<knock_room::v3::Request>,
) -> Result<RumaResponse<knock_room::v3::Response>> {
    let room_id = resolve_room(&s, req.room_id_or_alias.as_str()).await?;
    check_not_blocked(&s, &room_id).await?;
    s.rooms.known_version(&room_id).await?;
    let user = r.user_id();
    let profile = member_profile(&s, &user).await?;
    s.rooms
        .knock(&room_id, &user, profile, req.reason.as_deref())
        .await?;
    Ok(RumaResponse(knock_room::v3::Response::new(room_id)))
}

async fn invite(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<invite_user::v3::Request>,
) -> Result<RumaResponse<invite_user::v3::Response>> {
    let invite_user::v3::InvitationRecipient::UserId(recipient) = &req.recipient else {
        return Err(MatrixError::new(
            http::StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::ThreepidMediumNotSupported,
            "Third-party invites are not supported",
        ));
    };
    s.rooms.known_version(&req.room_id).await?;
    check_not_blocked(&s, &req.room_id).await?;
    check_invitee(&s, &recipient.user_id).await?;
    let profile = member_profile(&s, &recipient.user_id).await?;
    s.rooms
        .invite(
            &req.room_id,
            &r.user_id(),
            &recipient.user_id,
            profile,
            false,
            recipient.reason.as_deref(),
        )
        .await?;
    Ok(RumaResponse(invite_user::v3::Response::new()))
}

async fn leave(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<leave_room::v3::Request>,
) -> Result<RumaResponse<leave_room::v3::Response>> {
    s.rooms.known_version(&req.room_id).await?;
    let user = r.user_id();
    check_can_reject(&s, &req.room_id, &user).await?;
    s.rooms
        .leave(&req.room_id, &user, &user, req.reason.as_deref())
        .await?;
    Ok(RumaResponse(leave_room::v3::Response::new()))
}

async fn forget(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<forget_room::v3::Request>,
) -> Result<RumaResponse<forget_room::v3::Response>> {
    memberships::forget(&s, &r.user_id(), &req.room_id).await?;
    Ok(RumaResponse(forget_room::v3::Response::new()))
}

async fn kick(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<kick_user::v3::Request>,
) -> Result<RumaResponse<kick_user::v3::Response>> {
    s.rooms.known_version(&req.room_id).await?;
    let sender = r.user_id();
    if req.user_id == sender {
        check_can_reject(&s, &req.room_id, &req.user_id).await?;
        s.rooms
            .leave(&req.room_id, &sender, &req.user_id, req.reason.as_deref())
            .await?;
    } else {
        s.rooms
            .kick(&req.room_id, &sender, &req.user_id, req.reason.as_deref())
            .await?;
    }
    Ok(RumaResponse(kick_user::v3::Response::new()))
}

async fn ban(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<ban_user::v3::Request>,
) -> Result<RumaResponse<ban_user::v3::Response>> {
    s.rooms.known_version(&req.room_id).await?;
    s.rooms
        .ban(
            &req.room_id,
            &r.user_id(),
            &req.user_id,
            req.reason.as_deref(),
        )
        .await?;
    Ok(RumaResponse(ban_user::v3::Response::new()))
}

async fn unban(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<unban_user::v3::Request>,
) -> Result<RumaResponse<unban_user::v3::Response>> {
    s.rooms.known_version(&req.room_id).await?;
    if s.rooms
        .membership(&req.room_id, &req.user_id)
        .await?
        .as_deref()
        != Some("ban")
    {
        return Err(MatrixError::forbidden("The user is not banned"));
    }
    s.rooms
        .leave(
            &req.room_id,
            &r.user_id(),
            &req.user_id,
            req.reason.as_deref(),
        )
        .await?;
    Ok(RumaResponse(unban_user::v3::Response::new()))
}

/// Sending needs the sender to be joined; say so plainly rather than with
/// the auth rules' wording.
async fn require_joined(s: &AppState, room_id: &RoomId, user: &UserId) -> Result<RoomVersionId> {
    let version = s.rooms.known_version(room_id).await?;
    if s.rooms.membership(room_id, user).await?.as_deref() != Some("join") {
        return Err(MatrixError::forbidden("You are not joined to this room"));
    }
    Ok(version)
}

async fn send(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<send_message_event::v3::Request>,
) -> Result<RumaResponse<send_message_event::v3::Response>> {
    let user = r.user_id();
    let scope = format!("send:{}", req.room_id);
    if let Some(existing) = s
        .rooms
        .transaction_event(&r.user_id, &r.device_id, &scope, req.txn_id.as_str())
        .await?
    {
        return Ok(RumaResponse(send_message_event::v3::Response::new(
            existing,
        )));
    }
    let content = raw_to_value(&req.body)?;
    let txn = Some(TxnRef {
        device: &r.device_id,
        scope: scope.as_str(),
        txn: req.txn_id.as_str(),
    });
    let event_id = send_message(
        &s,
        &req.room_id,
        &user,
        &req.event_type.to_string(),
        content,
        txn,
        massaged_ts(&r, req.timestamp),
    )
    .await?;
    Ok(RumaResponse(send_message_event::v3::Response::new(
        event_id,
    )))
}

/// `POST /rooms/{roomId}/send/{eventType}`: as `send`, without a
/// transaction id (sytest "POST /rooms/:room_id/send/:event_type sends a
/// message").
async fn send_without_txn(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Path((room_id, event_type)): Path<(String, String)>,
    JsonBody(content): JsonBody<Map<String, Value>>,
) -> Result<Json<Value>> {
    let room_id = OwnedRoomId::try_from(room_id)
        .map_err(|e| MatrixError::invalid_param(format!("Invalid room id: {e}")))?;
    let event_id = send_message(
        &s,
        &room_id,
        &r.user_id(),
        &event_type,
        Value::Object(content),
        None,
        None,
    )
    .await?;
    Ok(Json(json!({ "event_id": event_id })))
}

/// The `ts` of a send: honoured for application services only (timestamp
/// massaging), as Synapse.
fn massaged_ts(r: &Requester, ts: Option<ruma::MilliSecondsSinceUnixEpoch>) -> Option<i64> {
    r.app_service.as_ref()?;
    ts.map(|t| i64::from(t.get()))
}

/// Appends a message event from a joined sender.
async fn send_message(
    s: &AppState,
    room_id: &RoomId,
    user: &UserId,
    event_type: &str,
    content: Value,
    txn: Option<TxnRef<'_>>,
    origin_server_ts: Option<i64>,
) -> Result<OwnedEventId> {
    require_joined(s, room_id, user).await?;
    if !content.is_object() {
        return Err(MatrixError::bad_json("Event content must be an object"));
    }
    relations::check_new(s, user, event_type, &content).await?;
    let pdu = s
        .rooms
        .append(NewEvent {
            room_id,
            sender: user,
            kind: TimelineEventType::from(event_type.to_owned()),
            state_key: None,
            content,
            txn,
            redacts: None,
            origin_server_ts,
        })
        .await?;
    Ok(pdu.event_id)
}

async fn send_state(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<send_state_event::v3::Request>,
) -> Result<RumaResponse<send_state_event::v3::Response>> {
    let user = r.user_id();
    s.rooms.known_version(&req.room_id).await?;
    let mut content = raw_to_value(&req.body)?;
    if !content.is_object() {
        return Err(MatrixError::bad_json("Event content must be an object"));
    }
    let kind = req.event_type.to_string();
    if kind == "m.room.create" {
        return Err(MatrixError::forbidden("m.room.create cannot be sent"));
    }
    if kind == "m.room.member" {
        // Membership changes go through their own endpoints' checks too, but
        // the auth rules are what decide.
        UserId::parse(&req.state_key)
            .map_err(|_| MatrixError::bad_json("m.room.member state_key must be a user id"))?;
        if req.state_key == user.as_str()
            && content.get("membership").and_then(Value::as_str) != Some("join")
        {
            check_can_reject(&s, &req.room_id, &user).await?;
        }
        guests::check_member_state(&s, &r, &req.room_id, &req.state_key, &mut content).await?;
    } else if s.rooms.membership(&req.room_id, &user).await?.as_deref() != Some("join") {
        return Err(MatrixError::forbidden("You are not joined to this room"));
    }
    if kind == "m.room.canonical_alias" {
        check_canonical_alias(&s, &req.room_id, &content).await?;
    }
    let pdu = s
        .rooms
        .append(NewEvent {
            room_id: &req.room_id,
            sender: &user,
            kind: TimelineEventType::from(kind.clone()),
            state_key: Some(req.state_key.clone()),
            content,
            txn: None,
            redacts: None,
            origin_server_ts: massaged_ts(&r, req.timestamp),
        })
        .await?;
    // The state event stands whatever this does (each guest's leave is
    // its own event).
    if let Err(e) = guests::after_state_event(&s, &req.room_id, &kind, &pdu.content_value()).await {
        tracing::warn!(room_id = %req.room_id, error = %e.message(), "could not check the room's guests after a state change");
    }
    Ok(RumaResponse(send_state_event::v3::Response::new(
        pdu.event_id,
    )))
}

/// Aliases in `m.room.canonical_alias` must point at this room (M_BAD_ALIAS).
async fn check_canonical_alias(s: &AppState, room_id: &RoomId, content: &Value) -> Result<()> {
    let mut aliases: Vec<&str> = Vec::new();
    if let Some(a) = content.get("alias").and_then(Value::as_str) {
        aliases.push(a);
    }
    if let Some(list) = content.get("alt_aliases").and_then(Value::as_array) {
        aliases.extend(list.iter().filter_map(Value::as_str));
    }
    for alias in aliases {
        let parsed = ruma::RoomAliasId::parse(alias)
            .map_err(|e| MatrixError::invalid_param(format!("Invalid alias: {e}")))?;
        if !directory::is_local_alias_of(s, &parsed, room_id).await? {
            return Err(MatrixError::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::BadAlias,
                format!("Alias {alias} does not point to this room"),
            ));
        }
    }
    Ok(())
}

async fn redact(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<redact_event::v3::Request>,
) -> Result<RumaResponse<redact_event::v3::Response>> {
    let user = r.user_id();
    let scope = format!("redact:{}:{}", req.room_id, req.event_id);
    if let Some(existing) = s
        .rooms
        .transaction_event(&r.user_id, &r.device_id, &scope, req.txn_id.as_str())
        .await?
    {
        return Ok(RumaResponse(redact_event::v3::Response::new(existing)));
    }
    require_joined(&s, &req.room_id, &user).await?;
    let target = match s.rooms.pdu(req.event_id.as_str()).await? {
        Some(target) if target.room_id == req.room_id => target,
        // As Synapse (sytest "PUT /redact disallows redaction of event in
        // different room"): 400, not 404.
        Some(_) => {
            return Err(MatrixError::invalid_param(
                "The event is in a different room",
            ));
        }
        None => return Err(MatrixError::not_found("Event not found")),
    };
    // The auth rules let any member send a redaction (servers check the power
    // when applying it); refuse up front what would not apply.
    let state = s.rooms.current_state(&req.room_id).await?;
    let levels = s.rooms.power_levels(&req.room_id, &state).await?;
    let allowed = if target.sender == user {
        levels.user_can_redact_own_event(&user)
    } else {
        levels.user_can_redact_event_of_other(&user)
    };
    if !allowed {
        return Err(MatrixError::forbidden(
            "You do not have the power to redact this event",
        ));
    }
    let mut content = json!({});
    if let Some(reason) = &req.reason {
        content["reason"] = json!(reason);
    }
    let pdu = s
        .rooms
        .append(NewEvent {
            room_id: &req.room_id,
            sender: &user,
            kind: TimelineEventType::RoomRedaction,
            state_key: None,
            content,
            txn: Some(TxnRef {
                device: &r.device_id,
                scope: &scope,
                txn: req.txn_id.as_str(),
            }),
            redacts: Some(req.event_id.clone()),
            origin_server_ts: None,
        })
        .await?;
    Ok(RumaResponse(redact_event::v3::Response::new(pdu.event_id)))
}
