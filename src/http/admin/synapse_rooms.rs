//! Synapse's room admin API in Synapse's shapes: list and query rooms,
//! members, state, messages, block, make_room_admin, force-join, and room
//! deletion as a tracked job with its status.

use axum::extract::{Path, Query, State};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use ruma::api::client::filter::RoomEventFilter;
use ruma::events::TimelineEventType;
use ruma::{RoomId, UserId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::{MatrixError, Result};
use crate::http::AppState;
use crate::http::admin::dendrite::parse_room_id;
use crate::http::client::rooms::{member_profile, resolve_room};
use crate::http::extract::{AdminAuth, JsonBody};
use crate::services::admin::{self, DeleteRoom};
use crate::services::room_admin::RoomInfo;
use crate::services::rooms::NewEvent;
use crate::services::{memberships, room_admin};

const V1: &str = "/_synapse/admin/v1";

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route(&format!("{V1}/rooms"), get(list))
        .route(&format!("{V1}/rooms/{{room_id}}/members"), get(members))
        .route(&format!("{V1}/rooms/{{room_id}}/state"), get(state))
        .route(&format!("{V1}/rooms/{{room_id}}/messages"), get(messages))
        .route(
            &format!("{V1}/rooms/{{room_id}}/block"),
            get(get_block).put(put_block),
        )
        .route(
            &format!("{V1}/rooms/{{room_id}}/make_room_admin"),
            post(make_room_admin),
        )
        .route(&format!("{V1}/join/{{room}}"), post(force_join))
        .route(
            &format!("{V1}/rooms/{{room_id}}"),
            get(details).delete(delete_room_v1),
        )
        .route("/_synapse/admin/v2/rooms/{room_id}", delete(delete_room))
        .route(
            "/_synapse/admin/v2/rooms/delete_status/{delete_id}",
            get(delete_status),
        )
        .route(
            "/_synapse/admin/v2/rooms/{room_id}/delete_status",
            get(delete_status_by_room),
        )
}

/// The fields of a room in the list (and in its details).
async fn room_summary(
    s: &AppState,
    room_id: &RoomId,
    version: &str,
    creator: &str,
    public: bool,
) -> Result<Value> {
    let state = s.rooms.current_state(room_id).await?;
    let field =
        |c: Option<Value>, k: &str| c.and_then(|c| c.get(k).cloned()).unwrap_or(Value::Null);
    let get = |ty: &'static str| {
        let state = state.clone();
        async move { s.rooms.state_content(&state, ty, "").await }
    };
    let (mut joined, mut joined_local) = (0, 0);
    for ((ty, sk), id) in state.iter() {
        if ty == "m.room.member"
            && let Some(p) = s.rooms.pdu(id.as_str()).await?
            && p.membership().as_deref() == Some("join")
        {
            joined += 1;
            if UserId::parse(sk).is_ok_and(|u| s.accounts.is_local(&u)) {
                joined_local += 1;
            }
        }
    }
    let create = get("m.room.create").await?;
    Ok(json!({
        "room_id": room_id,
        "name": field(get("m.room.name").await?, "name"),
        "canonical_alias": field(get("m.room.canonical_alias").await?, "alias"),
        "joined_members": joined,
        "joined_local_members": joined_local,
        "version": version,
        "creator": creator,
        "encryption": field(get("m.room.encryption").await?, "algorithm"),
        "federatable": create.as_ref().and_then(|c| c.get("m.federate")).and_then(Value::as_bool).unwrap_or(true),
        "public": public,
        "join_rules": field(get("m.room.join_rules").await?, "join_rule"),
        "guest_access": field(get("m.room.guest_access").await?, "guest_access"),
        "history_visibility": field(get("m.room.history_visibility").await?, "history_visibility"),
        "state_events": state.len(),
        "room_type": field(create, "type"),
    }))
}

#[derive(Deserialize)]
struct ListQuery {
    from: Option<String>,
    limit: Option<String>,
    order_by: Option<String>,
    dir: Option<String>,
    search_term: Option<String>,
    public_rooms: Option<String>,
    empty_rooms: Option<String>,
}

async fn list(
    State(s): State<AppState>,
    _: AdminAuth,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>> {
    let from = super::query_count(q.from.as_deref(), "from", 0)? as usize;
    let limit = super::query_count(q.limit.as_deref(), "limit", 100)? as usize;
    let public_rooms = super::query_bool(q.public_rooms.as_deref(), "public_rooms")?;
    let empty_rooms = super::query_bool(q.empty_rooms.as_deref(), "empty_rooms")?;
    if q.search_term.as_deref() == Some("") {
        return Err(MatrixError::invalid_param("search_term cannot be empty"));
    }
    let order_by = q.order_by.as_deref().unwrap_or("name");
    let key = match order_by {
        "name" | "alphabetical" => "name",
        "size" | "joined_members" => "joined_members",
        "canonical_alias"
        | "joined_local_members"
        | "version"
        | "creator"
        | "encryption"
        | "federatable"
        | "public"
        | "join_rules"
        | "guest_access"
        | "history_visibility"
        | "state_events" => order_by,
        _ => return Err(MatrixError::invalid_param("Unknown order_by")),
    };
    let backwards = match q.dir.as_deref() {
        None | Some("f") => false,
        Some("b") => true,
        Some(_) => return Err(MatrixError::invalid_param("dir must be f or b")),
    };
    let mut rooms = Vec::new();
    for room in room_admin::all_rooms(&s).await? {
        let (room_id, public) = (&room.room_id, room.is_public);
        let summary =
            room_summary(&s, room_id, &room.version, room.creator.as_str(), public).await?;
        if public_rooms.is_some_and(|p| p != public) {
            continue;
        }
        if empty_rooms.is_some_and(|e| e != (summary["joined_members"] == 0)) {
            continue;
        }
        if let Some(term) = &q.search_term {
            let lower = term.to_lowercase();
            let name_hit = summary["name"]
                .as_str()
                .is_some_and(|n| n.to_lowercase().contains(&lower));
            let alias_hit = summary["canonical_alias"].as_str().is_some_and(|a| {
                a.trim_start_matches('#')
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .to_lowercase()
                    .contains(&lower)
            });
            if !(name_hit || alias_hit || room_id.as_str() == term) {
                continue;
            }
        }
        rooms.push(summary);
    }
    // Synapse sorts numbers biggest first and text A to Z (nulls last); dir=b reverses.
    rooms.sort_by(|a, b| {
        let (x, y) = (&a[key], &b[key]);
        let ord = match (x, y) {
            (Value::Number(x), Value::Number(y)) => y.as_i64().cmp(&x.as_i64()),
            (Value::Null, Value::Null) => std::cmp::Ordering::Equal,
            (Value::Null, _) => std::cmp::Ordering::Greater,
            (_, Value::Null) => std::cmp::Ordering::Less,
            _ => x.to_string().cmp(&y.to_string()),
        };
        ord.then_with(|| a["room_id"].as_str().cmp(&b["room_id"].as_str()))
    });
    if backwards {
        rooms.reverse();
    }
    let total = rooms.len();
    let page: Vec<Value> = rooms.into_iter().skip(from).take(limit).collect();
    let mut body = json!({ "rooms": page, "offset": from, "total_rooms": total });
    if from + limit < total {
        body["next_batch"] = json!(from + limit);
    }
    if from > 0 {
        body["prev_batch"] = json!(from.saturating_sub(limit));
    }
    Ok(Json(body))
}

async fn known(s: &AppState, raw: &str) -> Result<RoomInfo> {
    room_admin::room(s, &parse_room_id(raw)?).await
}

async fn details(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let room = known(&s, &raw).await?;
    let room_id = room.room_id;
    let mut v = room_summary(
        &s,
        &room_id,
        &room.version,
        room.creator.as_str(),
        room.is_public,
    )
    .await?;
    let state = s.rooms.current_state(&room_id).await?;
    let topic = s.rooms.state_content(&state, "m.room.topic", "").await?;
    let avatar = s.rooms.state_content(&state, "m.room.avatar", "").await?;
    let tombstone = s
        .rooms
        .state_content(&state, "m.room.tombstone", "")
        .await?;
    v["topic"] = topic
        .and_then(|c| c.get("topic").cloned())
        .unwrap_or(Value::Null);
    v["avatar"] = avatar
        .and_then(|c| c.get("url").cloned())
        .unwrap_or(Value::Null);
    v["tombstoned"] = json!(tombstone.is_some());
    v["replacement_room"] = tombstone
        .and_then(|c| c.get("replacement_room").cloned())
        .unwrap_or(Value::Null);
    v["forgotten"] = json!(false);
    let mut devices = 0;
    for member in memberships::joined_members(&s, &room_id).await? {
        if s.accounts.is_local(&member) {
            devices += s.sessions.devices(member.as_str()).await?.len();
        }
    }
    v["joined_local_devices"] = json!(devices);
    Ok(Json(v))
}

async fn members(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let room_id = known(&s, &raw).await?.room_id;
    let members = memberships::joined_members(&s, &room_id).await?;
    Ok(Json(json!({ "total": members.len(), "members": members })))
}

#[derive(Deserialize)]
struct StateQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
}

async fn state(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
    Query(q): Query<StateQuery>,
) -> Result<Json<Value>> {
    let room_id = known(&s, &raw).await?.room_id;
    let state = s.rooms.current_state(&room_id).await?;
    let mut pdus = Vec::new();
    for ((ty, _), id) in state.iter() {
        if q.kind.as_deref().is_some_and(|k| k != ty) {
            continue;
        }
        if let Some(p) = s.rooms.pdu(id.as_str()).await? {
            pdus.push(p);
        }
    }
    pdus.sort_by_key(|p| p.stream_ordering);
    let mut events = Vec::new();
    for p in &pdus {
        events.push(s.rooms.client_event(p, None).await?);
    }
    Ok(Json(json!({ "state": events })))
}

#[derive(Deserialize)]
struct MessagesQuery {
    from: Option<String>,
    to: Option<String>,
    dir: Option<String>,
    limit: Option<String>,
    filter: Option<String>,
}

async fn messages(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
    Query(q): Query<MessagesQuery>,
) -> Result<Json<Value>> {
    let room_id = known(&s, &raw).await?.room_id;
    let backwards = match q.dir.as_deref() {
        None | Some("b") => true,
        Some("f") => false,
        Some(_) => return Err(MatrixError::invalid_param("dir must be f or b")),
    };
    let limit = (super::query_count(q.limit.as_deref(), "limit", 10)? as usize).clamp(1, 1000);
    let filter: RoomEventFilter = match &q.filter {
        Some(f) => serde_json::from_str(f)
            .map_err(|e| MatrixError::invalid_param(format!("Invalid filter: {e}")))?,
        None => RoomEventFilter::default(),
    };
    let page = s
        .rooms
        .messages(
            &room_id,
            None,
            q.from.as_deref(),
            q.to.as_deref(),
            backwards,
            limit,
            &filter,
        )
        .await?;
    let mut chunk = Vec::new();
    for p in &page.events {
        chunk.push(s.rooms.client_event(p, None).await?);
    }
    let mut body = json!({ "chunk": chunk, "start": page.start });
    if let Some(end) = page.end {
        body["end"] = json!(end);
    }
    Ok(Json(body))
}

async fn get_block(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&raw)?;
    Ok(Json(match room_admin::blocked_by(&s, &room_id).await? {
        Some(by) => json!({ "block": true, "user_id": by }),
        None => json!({ "block": false }),
    }))
}

#[derive(Deserialize)]
struct BlockBody {
    block: bool,
}

async fn put_block(
    State(s): State<AppState>,
    AdminAuth(me): AdminAuth,
    Path(raw): Path<String>,
    JsonBody(body): JsonBody<BlockBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&raw)?;
    room_admin::set_blocked(&s, &room_id, &me.user_id, body.block).await?;
    Ok(Json(json!({ "block": body.block })))
}

#[derive(Deserialize, Default)]
struct TargetBody {
    #[serde(default)]
    user_id: Option<String>,
}

/// Makes the target (the calling admin by default) a member with the
/// highest power, acting as the most powerful local member.
async fn make_room_admin(
    State(s): State<AppState>,
    AdminAuth(me): AdminAuth,
    Path(raw): Path<String>,
    JsonBody(body): JsonBody<TargetBody>,
) -> Result<Json<Value>> {
    let room_id = known(&s, &raw).await?.room_id;
    let target = s
        .accounts
        .parse_local_user_id(body.user_id.as_deref().unwrap_or(&me.user_id))?;
    s.accounts.get_existing(&target).await?;
    let operator = room_admin::room_operator(&s, &room_id).await?;
    if s.rooms.membership(&room_id, &target).await?.as_deref() != Some("join") {
        if s.rooms.membership(&room_id, &target).await?.as_deref() != Some("invite") {
            s.rooms
                .invite(&room_id, &operator, &target, json!({}), false, None)
                .await?;
        }
        s.rooms
            .join(&room_id, &target, member_profile(&s, &target).await?, None)
            .await?;
    }
    let state = s.rooms.current_state(&room_id).await?;
    let mut content = s
        .rooms
        .state_content(&state, "m.room.power_levels", "")
        .await?
        .unwrap_or_else(|| json!({}));
    let levels = s.rooms.power_levels(&room_id, &state).await?;
    let top = levels.for_user(&operator);
    let power = match top {
        ruma::events::room::power_levels::UserPowerLevel::Int(i) => json!(i),
        _ => json!(100),
    };
    if content.get("users").is_none_or(|u| !u.is_object()) {
        content["users"] = Value::Object(Map::new());
    }
    content["users"][target.as_str()] = power;
    s.rooms
        .append(NewEvent {
            room_id: &room_id,
            sender: &operator,
            kind: TimelineEventType::RoomPowerLevels,
            state_key: Some(String::new()),
            content,
            txn: None,
            redacts: None,
            origin_server_ts: None,
        })
        .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct JoinBody {
    user_id: String,
}

/// Joins a local user to a room: directly if they may, else invited first
/// by a local member who can.
async fn force_join(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
    JsonBody(body): JsonBody<JoinBody>,
) -> Result<Json<Value>> {
    let room_id = resolve_room(&s, &raw).await?;
    s.rooms.known_version(&room_id).await?;
    let user = s.accounts.parse_local_user_id(&body.user_id)?;
    s.accounts.get_existing(&user).await?;
    let profile = member_profile(&s, &user).await?;
    if s.rooms
        .join(&room_id, &user, profile.clone(), None)
        .await
        .is_err()
    {
        let operator = room_admin::room_operator(&s, &room_id).await?;
        s.rooms
            .invite(&room_id, &operator, &user, json!({}), false, None)
            .await?;
        s.rooms.join(&room_id, &user, profile, None).await?;
    }
    Ok(Json(json!({ "room_id": room_id })))
}

#[derive(Deserialize)]
struct DeleteBody {
    #[serde(default)]
    block: bool,
    #[serde(default = "yes")]
    purge: bool,
    #[serde(default)]
    new_room_user_id: Option<String>,
    #[serde(default)]
    room_name: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

fn yes() -> bool {
    true
}

/// `DELETE /_synapse/admin/v2/rooms/{roomId}`: starts the deletion job.
/// The options of a room deletion from its request (both API versions).
async fn delete_options(s: &AppState, me: &str, body: DeleteBody) -> Result<DeleteRoom> {
    let new_room_user_id = match &body.new_room_user_id {
        Some(u) => {
            let u = s.accounts.parse_local_user_id(u)?;
            s.accounts.get_existing(&u).await?;
            Some(u)
        }
        None => None,
    };
    Ok(DeleteRoom {
        block: body.block,
        purge: body.purge,
        new_room_user_id,
        room_name: body.room_name,
        message: body.message,
        requester: me.to_owned(),
    })
}

/// `DELETE /_synapse/admin/v2/rooms/{roomId}`: a tracked job; `{"delete_id"}`.
async fn delete_room(
    State(s): State<AppState>,
    AdminAuth(me): AdminAuth,
    Path(raw): Path<String>,
    JsonBody(body): JsonBody<DeleteBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&raw)?;
    let opts = delete_options(&s, &me.user_id, body).await?;
    let id = admin::start_room_delete(&s, room_id, opts).await?;
    Ok(Json(json!({ "delete_id": id })))
}

/// `DELETE /_synapse/admin/v1/rooms/{roomId}`: the same deletion, answered
/// when done with `{"kicked_users", "failed_to_kick_users", "local_aliases",
/// "new_room_id"}`.
async fn delete_room_v1(
    State(s): State<AppState>,
    AdminAuth(me): AdminAuth,
    Path(raw): Path<String>,
    JsonBody(body): JsonBody<DeleteBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&raw)?;
    // A room never seen can only be blocked (as Synapse).
    if !body.block {
        s.rooms.known_version(&room_id).await?;
    }
    let opts = delete_options(&s, &me.user_id, body).await?;
    let done = admin::delete_room_now(&s, room_id, opts).await?;
    Ok(Json(
        serde_json::to_value(done).map_err(MatrixError::internal)?,
    ))
}

async fn delete_status(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let job = s
        .jobs
        .room_job(&id)
        .await?
        .ok_or_else(|| MatrixError::not_found("Unknown delete id"))?;
    Ok(Json(
        serde_json::to_value(job).map_err(MatrixError::internal)?,
    ))
}

async fn delete_status_by_room(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&raw)?;
    let jobs = s.jobs.room_jobs_for(room_id.as_str()).await?;
    if jobs.is_empty() {
        return Err(MatrixError::not_found("No deletion for this room"));
    }
    Ok(Json(json!({ "results": jobs })))
}
