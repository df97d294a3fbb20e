//! Aliases (`/directory/room/{alias}`, `/rooms/{id}/aliases`), the public
//! room directory (`/directory/list/room`, `/publicRooms`), the user
//! directory and `/relations`.

use axum::extract::State;
use axum::{Json, Router};
use ruma::api::Direction;
use ruma::api::client::alias::{create_alias, delete_alias, get_alias};
use ruma::api::client::directory::{
    get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility,
};
use ruma::api::client::relations::{
    get_relating_events, get_relating_events_with_rel_type,
    get_relating_events_with_rel_type_and_event_type,
};
use ruma::api::client::room::{Visibility, aliases};
use ruma::api::client::user_directory::search_users;
use ruma::{OwnedRoomId, RoomId};
use serde_json::{Value, json};

use crate::error::{MatrixError, Result};
use crate::http::extract::{Auth, GuestAuth, Ruma};
use crate::http::{AppState, ruma_route};
use crate::services::rooms::row_to_pdu;
use crate::storage::Requester;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<create_alias::v3::Request, _, _>(r, put_alias);
    let r = ruma_route::<get_alias::v3::Request, _, _>(r, get_alias_room);
    let r = ruma_route::<delete_alias::v3::Request, _, _>(r, remove_alias);
    let r = ruma_route::<aliases::v3::Request, _, _>(r, room_aliases);
    let r = ruma_route::<get_room_visibility::v3::Request, _, _>(r, get_visibility);
    let r = ruma_route::<set_room_visibility::v3::Request, _, _>(r, set_visibility);
    let r = ruma_route::<get_public_rooms::v3::Request, _, _>(r, public_rooms);
    let r = ruma_route::<get_public_rooms_filtered::v3::Request, _, _>(r, public_rooms_filtered);
    let r = ruma_route::<search_users::v3::Request, _, _>(r, user_search);
    let r = ruma_route::<get_relating_events::v1::Request, _, _>(r, relations);
    let r = ruma_route::<get_relating_events_with_rel_type::v1::Request, _, _>(r, relations_rel);
    ruma_route::<get_relating_events_with_rel_type_and_event_type::v1::Request, _, _>(
        r,
        relations_rel_type,
    )
}

async fn put_alias(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<create_alias::v3::Request>,
) -> Result<Json<Value>> {
    if req.room_alias.server_name() != s.server_name {
        return Err(MatrixError::invalid_param(
            "Aliases of other servers cannot be created here",
        ));
    }
    s.rooms.known_version(&req.room_id).await?;
    if !s
        .storage
        .insert_alias(req.room_alias.as_str(), req.room_id.as_str(), &r.user_id)
        .await?
    {
        return Err(MatrixError::unknown(
            http::StatusCode::CONFLICT,
            "Room alias already exists",
        ));
    }
    Ok(Json(json!({})))
}

async fn get_alias_room(
    State(s): State<AppState>,
    Ruma(req): Ruma<get_alias::v3::Request>,
) -> Result<Json<Value>> {
    let room = s
        .storage
        .alias_room(req.room_alias.as_str())
        .await?
        .ok_or_else(|| MatrixError::not_found("Room alias not found"))?;
    Ok(Json(json!({ "room_id": room, "servers": [s.server_name] })))
}

/// The alias's creator, a server admin, or whoever may change the room's
/// canonical alias may delete it.
async fn remove_alias(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<delete_alias::v3::Request>,
) -> Result<Json<Value>> {
    let alias = req.room_alias.as_str();
    let room = s
        .storage
        .alias_room(alias)
        .await?
        .ok_or_else(|| MatrixError::not_found("Room alias not found"))?;
    let creator = s.storage.alias_creator(alias).await?;
    let room_id = OwnedRoomId::try_from(room).map_err(MatrixError::internal)?;
    // The admin check reads the account: last.
    let allowed = creator.as_deref() == Some(r.user_id.as_str())
        || s.rooms
            .can_send_state(&room_id, &r.user_id(), "m.room.canonical_alias")
            .await?
        || s.sessions.admin_now(&r).await?;
    if !allowed {
        return Err(MatrixError::forbidden("You may not delete this alias"));
    }
    s.storage.delete_alias(alias).await?;
    Ok(Json(json!({})))
}

async fn room_aliases(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<aliases::v3::Request>,
) -> Result<Json<Value>> {
    // Members (or anyone, for a world-readable room) may list the aliases;
    // server admins may for any room, as on Synapse (admin tools rely on it).
    // The admin check reads the account: only when the first one refuses.
    if let Err(refused) = s.rooms.readable_state(&req.room_id, &r.user_id()).await {
        if !s.sessions.admin_now(&r).await? {
            return Err(refused);
        }
        s.rooms.known_version(&req.room_id).await?;
    }
    Ok(Json(
        json!({ "aliases": s.storage.room_aliases(req.room_id.as_str()).await? }),
    ))
}

async fn get_visibility(
    State(s): State<AppState>,
    Ruma(req): Ruma<get_room_visibility::v3::Request>,
) -> Result<Json<Value>> {
    let room = s
        .storage
        .room(req.room_id.as_str())
        .await?
        .ok_or_else(|| MatrixError::not_found("Room not found"))?;
    Ok(Json(
        json!({ "visibility": if room.is_public { "public" } else { "private" } }),
    ))
}

async fn set_visibility(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<set_room_visibility::v3::Request>,
) -> Result<Json<Value>> {
    s.rooms.known_version(&req.room_id).await?;
    if !s
        .rooms
        .can_send_state(&req.room_id, &r.user_id(), "m.room.canonical_alias")
        .await?
        && !s.sessions.admin_now(&r).await?
    {
        return Err(MatrixError::forbidden(
            "You may not change this room's visibility",
        ));
    }
    s.storage
        .set_room_public(req.room_id.as_str(), req.visibility == Visibility::Public)
        .await?;
    Ok(Json(json!({})))
}

/// A room as the directory shows it.
async fn chunk(s: &AppState, room_id: &RoomId) -> Result<Value> {
    let state = s.rooms.current_state(room_id).await?;
    let content = |ty: &'static str| {
        let state = state.clone();
        async move { s.rooms.state_content(&state, ty, "").await }
    };
    let field =
        |v: Option<Value>, key: &str| v.and_then(|c| c.get(key).cloned()).filter(|v| !v.is_null());
    let mut joined_count = 0;
    for ((ty, _), id) in state.iter() {
        if ty == "m.room.member"
            && let Some(p) = s.rooms.pdu(id.as_str()).await?
            && p.membership().as_deref() == Some("join")
        {
            joined_count += 1;
        }
    }
    let mut out = json!({
        "room_id": room_id,
        "num_joined_members": joined_count,
        "world_readable": field(content("m.room.history_visibility").await?, "history_visibility")
            == Some(json!("world_readable")),
        "guest_can_join": field(content("m.room.guest_access").await?, "guest_access") == Some(json!("can_join")),
        "join_rule": field(content("m.room.join_rules").await?, "join_rule").unwrap_or(json!("invite")),
    });
    for (key, ty, field_name) in [
        ("name", "m.room.name", "name"),
        ("topic", "m.room.topic", "topic"),
        ("canonical_alias", "m.room.canonical_alias", "alias"),
        ("avatar_url", "m.room.avatar", "url"),
        ("room_type", "m.room.create", "type"),
    ] {
        if let Some(v) = field(content(ty).await?, field_name) {
            out[key] = v;
        }
    }
    Ok(out)
}

async fn directory_page(
    s: &AppState,
    limit: Option<u64>,
    since: Option<&str>,
    term: Option<&str>,
) -> Result<Value> {
    let mut rooms = Vec::new();
    for room in s.storage.public_rooms().await? {
        let room_id = OwnedRoomId::try_from(room).map_err(MatrixError::internal)?;
        rooms.push(chunk(s, &room_id).await?);
    }
    if let Some(term) = term.map(str::to_lowercase).filter(|t| !t.is_empty()) {
        rooms.retain(|r| {
            ["name", "topic", "canonical_alias", "room_id"]
                .iter()
                .any(|k| {
                    r[*k]
                        .as_str()
                        .is_some_and(|v| v.to_lowercase().contains(&term))
                })
        });
    }
    rooms.sort_by(|a, b| {
        b["num_joined_members"]
            .as_u64()
            .cmp(&a["num_joined_members"].as_u64())
            .then_with(|| a["room_id"].as_str().cmp(&b["room_id"].as_str()))
    });
    let total = rooms.len();
    let offset: usize = match since {
        Some(t) => t
            .strip_prefix('n')
            .or_else(|| t.strip_prefix('p'))
            .unwrap_or(t)
            .parse()
            .map_err(|_| MatrixError::invalid_param("Invalid since token"))?,
        None => 0,
    };
    let limit = limit.map(|l| l as usize).unwrap_or(total.max(1)).max(1);
    let page: Vec<Value> = rooms.into_iter().skip(offset).take(limit).collect();
    let mut body = json!({ "chunk": page, "total_room_count_estimate": total });
    if offset + limit < total {
        body["next_batch"] = json!(format!("n{}", offset + limit));
    }
    if offset > 0 {
        body["prev_batch"] = json!(format!("p{}", offset.saturating_sub(limit)));
    }
    Ok(body)
}

fn local_only(s: &AppState, server: Option<&ruma::ServerName>) -> Result<()> {
    match server {
        Some(sv) if sv != s.server_name => Err(MatrixError::invalid_param(
            "Other servers' directories need federation, not available yet",
        )),
        _ => Ok(()),
    }
}

async fn public_rooms(
    State(s): State<AppState>,
    Ruma(req): Ruma<get_public_rooms::v3::Request>,
) -> Result<Json<Value>> {
    local_only(&s, req.server.as_deref())?;
    Ok(Json(
        directory_page(&s, req.limit.map(u64::from), req.since.as_deref(), None).await?,
    ))
}

async fn public_rooms_filtered(
    State(s): State<AppState>,
    Auth(_): Auth,
    Ruma(req): Ruma<get_public_rooms_filtered::v3::Request>,
) -> Result<Json<Value>> {
    local_only(&s, req.server.as_deref())?;
    let term = req.filter.generic_search_term.as_deref();
    Ok(Json(
        directory_page(&s, req.limit.map(u64::from), req.since.as_deref(), term).await?,
    ))
}

async fn user_search(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<search_users::v3::Request>,
) -> Result<Json<Value>> {
    crate::http::check_search_term(Some(&req.search_term), "search_term")?;
    let limit = u64::from(req.limit).clamp(1, 1000) as i64;
    let rows = s
        .storage
        .search_user_directory(&r.user_id, &req.search_term, limit + 1)
        .await?;
    let limited = rows.len() as i64 > limit;
    let results: Vec<Value> = rows
        .into_iter()
        .take(limit as usize)
        .map(|u| json!({ "user_id": u.user_id, "display_name": u.displayname, "avatar_url": u.avatar_url }))
        .collect();
    Ok(Json(json!({ "results": results, "limited": limited })))
}

#[allow(clippy::too_many_arguments)]
async fn relations_page(
    s: &AppState,
    r: &Requester,
    room_id: &RoomId,
    event_id: &str,
    rel_type: Option<&str>,
    event_type: Option<&str>,
    from: Option<&str>,
    limit: Option<u64>,
    dir: Direction,
) -> Result<Value> {
    let user = r.user_id();
    s.rooms.readable_state(room_id, &user).await?;
    let parent = s
        .rooms
        .pdu(event_id)
        .await?
        .filter(|p| p.room_id == room_id);
    let current = s.rooms.membership(room_id, &user).await?;
    match &parent {
        Some(p) if s.rooms.can_see(&user, p, current.as_deref()).await? => {}
        _ => return Err(MatrixError::not_found("Event not found")),
    }
    let from = match from {
        Some(t) => Some(
            t.rsplit('_')
                .next()
                .and_then(|v| v.trim_start_matches(['s', 't', 'r']).parse::<i64>().ok())
                .ok_or_else(|| MatrixError::invalid_param("Invalid from token"))?,
        ),
        None => None,
    };
    let forwards = dir == Direction::Forward;
    let limit = limit.unwrap_or(50).clamp(1, 1000) as i64;
    let rows = s
        .storage
        .relations(
            room_id.as_str(),
            event_id,
            rel_type,
            event_type,
            from,
            forwards,
            limit + 1,
        )
        .await?;
    let more = rows.len() as i64 > limit;
    let mut pdus = Vec::new();
    for row in rows.into_iter().take(limit as usize) {
        let pdu = row_to_pdu(row)?;
        // A redacted event no longer relates to anything (its relation is gone).
        if pdu.redacted_by.is_none() {
            pdus.push(pdu);
        }
    }
    let next = more
        .then(|| pdus.last().map(|p| format!("r{}", p.stream_ordering)))
        .flatten();
    let pdus = s.rooms.filter_visible(&user, room_id, pdus).await?;
    let mut chunk = Vec::new();
    for p in &pdus {
        chunk.push(
            s.rooms
                .client_event(p, Some((r.user_id.as_str(), r.device_id.as_str())))
                .await?,
        );
    }
    let mut body = json!({ "chunk": chunk });
    if let Some(n) = next {
        body["next_batch"] = json!(n);
    }
    Ok(body)
}

async fn relations(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<get_relating_events::v1::Request>,
) -> Result<Json<Value>> {
    let limit = req.limit.map(u64::from);
    Ok(Json(
        relations_page(
            &s,
            &r,
            &req.room_id,
            req.event_id.as_str(),
            None,
            None,
            req.from.as_deref(),
            limit,
            req.dir,
        )
        .await?,
    ))
}

async fn relations_rel(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<get_relating_events_with_rel_type::v1::Request>,
) -> Result<Json<Value>> {
    let rel = req.rel_type.to_string();
    let limit = req.limit.map(u64::from);
    Ok(Json(
        relations_page(
            &s,
            &r,
            &req.room_id,
            req.event_id.as_str(),
            Some(&rel),
            None,
            req.from.as_deref(),
            limit,
            req.dir,
        )
        .await?,
    ))
}

async fn relations_rel_type(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<get_relating_events_with_rel_type_and_event_type::v1::Request>,
) -> Result<Json<Value>> {
    let rel = req.rel_type.to_string();
    let ty = req.event_type.to_string();
    let limit = req.limit.map(u64::from);
    Ok(Json(
        relations_page(
            &s,
            &r,
            &req.room_id,
            req.event_id.as_str(),
            Some(&rel),
            Some(&ty),
            req.from.as_deref(),
            limit,
            req.dir,
        )
        .await?,
    ))
}
