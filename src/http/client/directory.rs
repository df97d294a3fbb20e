//! Aliases (`/directory/room/{alias}`, `/rooms/{id}/aliases`), the public
//! room directory (`/directory/list/room`, `/publicRooms`), application
//! services' network lists (`/directory/list/appservice/{networkId}/{roomId}`),
//! the user directory and `/relations`.

use axum::extract::{Path, State};
use axum::routing::put;
use axum::{Json, Router};
use ruma::RoomId;
use ruma::api::Direction;
use ruma::api::client::alias::{create_alias, delete_alias, get_alias};
use ruma::api::client::directory::{
    get_public_rooms, get_public_rooms_filtered, get_room_visibility,
};
use ruma::api::client::relations::{
    get_relating_events, get_relating_events_with_rel_type,
    get_relating_events_with_rel_type_and_event_type,
};
use ruma::api::client::room::{Visibility, aliases};
use ruma::api::client::threads::get_threads::{self, v1::IncludeThreads};
use ruma::api::client::user_directory::search_users;
use ruma::directory::RoomNetwork;
use ruma::events::AnyMessageLikeEvent;
use ruma::serde::Raw;
use serde_json::{Value, json};

use crate::error::{MatrixError, Result};
use crate::http::extract::{Auth, GuestAuth, JsonBody, Ruma, RumaResponse};
use crate::http::{AppState, ruma_route};
use crate::model::accounts::Requester;
use crate::services::directory::{self, RoomList};
use crate::services::relations::{self, RelationsQuery};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<create_alias::v3::Request, _, _>(r, put_alias);
    let r = ruma_route::<get_alias::v3::Request, _, _>(r, get_alias_room);
    let r = ruma_route::<delete_alias::v3::Request, _, _>(r, remove_alias);
    let r = ruma_route::<aliases::v3::Request, _, _>(r, room_aliases);
    let r = ruma_route::<get_room_visibility::v3::Request, _, _>(r, get_visibility);
    let r = r
        .route(
            "/_matrix/client/v3/directory/list/room/{room_id}",
            put(set_visibility),
        )
        .route(
            "/_matrix/client/r0/directory/list/room/{room_id}",
            put(set_visibility),
        );
    let r = r.route(
        "/_matrix/client/v3/directory/list/appservice/{network_id}/{room_id}",
        put(publish_in_network).delete(unpublish_from_network),
    );
    let r = ruma_route::<get_public_rooms::v3::Request, _, _>(r, public_rooms);
    let r = ruma_route::<get_public_rooms_filtered::v3::Request, _, _>(r, public_rooms_filtered);
    let r = ruma_route::<search_users::v3::Request, _, _>(r, user_search);
    let r = ruma_route::<get_relating_events::v1::Request, _, _>(r, relations);
    let r = ruma_route::<get_threads::v1::Request, _, _>(r, threads);
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
) -> Result<RumaResponse<create_alias::v3::Response>> {
    directory::create_alias(&s, &r, &req.room_alias, &req.room_id).await?;
    Ok(RumaResponse(create_alias::v3::Response::new()))
}

async fn get_alias_room(
    State(s): State<AppState>,
    Ruma(req): Ruma<get_alias::v3::Request>,
) -> Result<RumaResponse<get_alias::v3::Response>> {
    let room = directory::resolve_alias(&s, req.room_alias.as_str()).await?;
    Ok(RumaResponse(get_alias::v3::Response::new(
        room,
        vec![s.server_name.clone()],
    )))
}

async fn remove_alias(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<delete_alias::v3::Request>,
) -> Result<RumaResponse<delete_alias::v3::Response>> {
    directory::delete_alias(&s, &r, &req.room_alias).await?;
    Ok(RumaResponse(delete_alias::v3::Response::new()))
}

async fn room_aliases(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<aliases::v3::Request>,
) -> Result<RumaResponse<aliases::v3::Response>> {
    let aliases = directory::room_aliases(&s, &r, &req.room_id).await?;
    Ok(RumaResponse(aliases::v3::Response::new(aliases)))
}

async fn get_visibility(
    State(s): State<AppState>,
    Ruma(req): Ruma<get_room_visibility::v3::Request>,
) -> Result<RumaResponse<get_room_visibility::v3::Response>> {
    let visibility = if directory::is_public(&s, &req.room_id).await? {
        Visibility::Public
    } else {
        Visibility::Private
    };
    Ok(RumaResponse(get_room_visibility::v3::Response::new(
        visibility,
    )))
}

/// `PUT /directory/list/room/{roomId}`: publishes the room in the
/// server's directory (`"visibility": "public"`, the default as the spec
/// and Synapse say) or unlists it (`"private"`). The body is read by hand:
/// ruma's type requires `visibility`.
async fn set_visibility(
    State(s): State<AppState>,
    Auth(r): Auth,
    Path(room_id): Path<String>,
    JsonBody(body): JsonBody<serde_json::Map<String, Value>>,
) -> Result<Json<Value>> {
    let public = visibility_in(&body)?;
    let room_id = network_room_id(&room_id)?;
    directory::set_visibility(&s, &r, &room_id, public).await?;
    Ok(Json(json!({})))
}

/// A directory body's `visibility`: public (also when absent) or private;
/// anything else 400 `M_BAD_JSON` (as Synapse), not a way to unlist.
fn visibility_in(body: &serde_json::Map<String, Value>) -> Result<bool> {
    match body.get("visibility") {
        None => Ok(true),
        Some(v) if v == "public" => Ok(true),
        Some(v) if v == "private" => Ok(false),
        Some(_) => Err(MatrixError::bad_json(
            "visibility must be \"public\" or \"private\"",
        )),
    }
}

/// `PUT /directory/list/appservice/{networkId}/{roomId}`: an application
/// service publishes a room in (`"visibility": "public"`, the default as
/// Synapse) or removes it from (`"private"`) its list of that network. The
/// body is read by hand: ruma's type requires `visibility`, Synapse does not.
async fn publish_in_network(
    State(s): State<AppState>,
    Auth(r): Auth,
    Path((network_id, room_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<serde_json::Map<String, Value>>,
) -> Result<Json<Value>> {
    let public = visibility_in(&body)?;
    let room_id = network_room_id(&room_id)?;
    directory::set_appservice_visibility(&s, &r, &network_id, &room_id, public).await?;
    Ok(Json(json!({})))
}

/// `DELETE /directory/list/appservice/{networkId}/{roomId}` (Synapse's, and
/// sytest's): the same as `PUT` with `"private"`.
async fn unpublish_from_network(
    State(s): State<AppState>,
    Auth(r): Auth,
    Path((network_id, room_id)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let room_id = network_room_id(&room_id)?;
    directory::set_appservice_visibility(&s, &r, &network_id, &room_id, false).await?;
    Ok(Json(json!({})))
}

fn network_room_id(raw: &str) -> Result<ruma::OwnedRoomId> {
    RoomId::parse(raw)
        .map_err(|e| MatrixError::invalid_param(format!("Invalid room id {raw:?}: {e}")))
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
    list: &RoomList,
    limit: Option<u64>,
    since: Option<&str>,
    term: Option<&str>,
) -> Result<Value> {
    let mut rooms = Vec::new();
    for room_id in directory::public_rooms(s, list).await? {
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
    // As Synapse and the spec: the GET form has no network parameters and
    // reads the main directory only.
    Ok(Json(
        directory_page(
            &s,
            &RoomList::Main,
            req.limit.map(u64::from),
            req.since.as_deref(),
            None,
        )
        .await?,
    ))
}

async fn public_rooms_filtered(
    State(s): State<AppState>,
    GuestAuth(_): GuestAuth,
    Ruma(req): Ruma<get_public_rooms_filtered::v3::Request>,
) -> Result<Json<Value>> {
    local_only(&s, req.server.as_deref())?;
    // ruma refuses `include_all_networks` with `third_party_instance_id`
    // (400, as Synapse).
    let list = match &req.room_network {
        RoomNetwork::All => RoomList::All,
        RoomNetwork::ThirdParty(instance) => RoomList::third_party(instance)?,
        _ => RoomList::Main,
    };
    let term = req.filter.generic_search_term.as_deref();
    Ok(Json(
        directory_page(
            &s,
            &list,
            req.limit.map(u64::from),
            req.since.as_deref(),
            term,
        )
        .await?,
    ))
}

async fn user_search(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<search_users::v3::Request>,
) -> Result<Json<Value>> {
    crate::http::check_search_term(Some(&req.search_term), "search_term")?;
    let limit = u64::from(req.limit).clamp(1, 1000) as usize;
    let found = directory::search_users(&s, &r, &req.search_term, limit).await?;
    let results: Vec<Value> = found
        .results
        .into_iter()
        .map(|u| json!({ "user_id": u.user_id, "display_name": u.display_name, "avatar_url": u.avatar_url }))
        .collect();
    Ok(Json(
        json!({ "results": results, "limited": found.limited }),
    ))
}

/// A page of relations as the requester sees them, and the next page's token.
async fn relations_page(
    s: &AppState,
    r: &Requester,
    room_id: &RoomId,
    q: RelationsQuery<'_>,
) -> Result<(Vec<Raw<AnyMessageLikeEvent>>, Option<String>)> {
    let page = relations::page(s, r, room_id, q).await?;
    let viewer = Some((r.user_id.as_str(), r.device_id.as_str()));
    let chunk = s
        .rooms
        .client_events(&page.events, viewer)
        .await?
        .iter()
        .map(|event| {
            serde_json::value::to_raw_value(event)
                .map(Raw::from_json)
                .map_err(MatrixError::internal)
        })
        .collect::<Result<_>>()?;
    Ok((chunk, page.next_batch))
}

/// `/threads`: the room's thread roots, newest activity first.
async fn threads(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<get_threads::v1::Request>,
) -> Result<RumaResponse<get_threads::v1::Response>> {
    let participated = match req.include {
        IncludeThreads::All => false,
        IncludeThreads::Participated => true,
        other => {
            return Err(MatrixError::invalid_param(format!(
                "include must be all or participated, not {}",
                other.as_str()
            )));
        }
    };
    let limit = req.limit.map(u64::from);
    let page = relations::threads(
        &s,
        &r,
        &req.room_id,
        participated,
        req.from.as_deref(),
        limit,
    )
    .await?;
    let viewer = Some((r.user_id.as_str(), r.device_id.as_str()));
    let chunk = s
        .rooms
        .client_events_raw(&page.roots, viewer)
        .await?
        .iter()
        .map(|event| Raw::from_json(event.to_raw()))
        .collect();
    let mut response = get_threads::v1::Response::new(chunk);
    response.next_batch = page.next_batch;
    Ok(RumaResponse(response))
}

/// The page a `/relations` request asks for, of any rel_type and event type.
fn query<'a>(
    event_id: &'a ruma::EventId,
    from: Option<&'a str>,
    limit: Option<ruma::UInt>,
    (dir, recurse): (Direction, bool),
) -> RelationsQuery<'a> {
    RelationsQuery {
        event_id: event_id.as_str(),
        rel_type: None,
        event_type: None,
        from,
        limit: limit.map(u64::from),
        forwards: dir == Direction::Forward,
        recurse,
    }
}

/// The `recursion_depth` of an answer: present when `recurse` was asked.
fn recursion_depth(recurse: bool) -> Option<ruma::UInt> {
    recurse.then(|| ruma::UInt::from(relations::RECURSION_DEPTH))
}

async fn relations(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<get_relating_events::v1::Request>,
) -> Result<RumaResponse<get_relating_events::v1::Response>> {
    let q = query(
        &req.event_id,
        req.from.as_deref(),
        req.limit,
        (req.dir, req.recurse),
    );
    let (chunk, next_batch) = relations_page(&s, &r, &req.room_id, q).await?;
    let mut response = get_relating_events::v1::Response::new(chunk);
    response.next_batch = next_batch;
    response.recursion_depth = recursion_depth(req.recurse);
    Ok(RumaResponse(response))
}

async fn relations_rel(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<get_relating_events_with_rel_type::v1::Request>,
) -> Result<RumaResponse<get_relating_events_with_rel_type::v1::Response>> {
    let rel = req.rel_type.to_string();
    let q = RelationsQuery {
        rel_type: Some(&rel),
        ..query(
            &req.event_id,
            req.from.as_deref(),
            req.limit,
            (req.dir, req.recurse),
        )
    };
    let (chunk, next_batch) = relations_page(&s, &r, &req.room_id, q).await?;
    let mut response = get_relating_events_with_rel_type::v1::Response::new(chunk);
    response.next_batch = next_batch;
    response.recursion_depth = recursion_depth(req.recurse);
    Ok(RumaResponse(response))
}

async fn relations_rel_type(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<get_relating_events_with_rel_type_and_event_type::v1::Request>,
) -> Result<RumaResponse<get_relating_events_with_rel_type_and_event_type::v1::Response>> {
    let (rel, ty) = (req.rel_type.to_string(), req.event_type.to_string());
    let q = RelationsQuery {
        rel_type: Some(&rel),
        event_type: Some(&ty),
        ..query(
            &req.event_id,
            req.from.as_deref(),
            req.limit,
            (req.dir, req.recurse),
        )
    };
    let (chunk, next_batch) = relations_page(&s, &r, &req.room_id, q).await?;
    let mut response = get_relating_events_with_rel_type_and_event_type::v1::Response::new(chunk);
    response.next_batch = next_batch;
    response.recursion_depth = recursion_depth(req.recurse);
    Ok(RumaResponse(response))
}
