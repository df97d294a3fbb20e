//! Synapse's media admin API, in Synapse's shapes: a user's media (list,
//! delete), one media id (info, delete, quarantine, protect), old media
//! deleted by last access and size, a room's media (list, quarantine), a
//! user's media quarantined, the remote media cache purge, and per-user
//! media statistics.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::dendrite::parse_room_id;
use super::{query_bool, query_count};
use crate::error::{MatrixError, Result};
use crate::http::AppState;
use crate::http::extract::AdminAuth;
use crate::services::admin_users::existing;
use crate::services::media::admin::{
    MediaRow, OldMedia, Page, StatsFilter, media_order_column, stats_order_column,
};

const V1: &str = "/_synapse/admin/v1";

type Params = Query<HashMap<String, String>>;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route(
        &format!("{V1}/users/{{user_id}}/media"),
        get(user_media).delete(delete_user_media),
    )
    .route(
        &format!("{V1}/media/{{server_name}}/{{media_id}}"),
        get(media_info).delete(delete_media),
    )
    .route(&format!("{V1}/media/delete"), post(delete_old))
    .route(
        &format!("{V1}/media/{{server_name}}/delete"),
        post(delete_old_on),
    )
    .route(
        &format!("{V1}/media/quarantine/{{server_name}}/{{media_id}}"),
        post(|State(s), AdminAuth(a), Path(p)| async move {
            set_quarantined(s, &a.user_id, p, true).await
        }),
    )
    .route(
        &format!("{V1}/media/unquarantine/{{server_name}}/{{media_id}}"),
        post(|State(s), AdminAuth(a), Path(p)| async move {
            set_quarantined(s, &a.user_id, p, false).await
        }),
    )
    .route(
        &format!("{V1}/media/protect/{{media_id}}"),
        post(|State(s), _: AdminAuth, Path(id)| set_protected(s, id, true)),
    )
    .route(
        &format!("{V1}/media/unprotect/{{media_id}}"),
        post(|State(s), _: AdminAuth, Path(id)| set_protected(s, id, false)),
    )
    .route(&format!("{V1}/room/{{room_id}}/media"), get(room_media))
    .route(
        &format!("{V1}/room/{{room_id}}/media/quarantine"),
        post(quarantine_room),
    )
    .route(
        &format!("{V1}/quarantine_media/{{room_id}}"),
        post(quarantine_room),
    )
    .route(
        &format!("{V1}/user/{{user_id}}/media/quarantine"),
        post(quarantine_user),
    )
    .route(&format!("{V1}/purge_media_cache"), post(purge_media_cache))
    .route(&format!("{V1}/statistics/users/media"), get(statistics))
}

/// `dir`: `f` (the default) or `b`.
fn backwards(q: &HashMap<String, String>) -> Result<bool> {
    match q.get("dir").map(String::as_str) {
        None | Some("f") => Ok(false),
        Some("b") => Ok(true),
        Some(_) => Err(MatrixError::invalid_param("dir must be f or b")),
    }
}

/// `from` and `limit` (default 100).
fn paging(q: &HashMap<String, String>) -> Result<(i64, i64)> {
    Ok((
        query_count(q.get("from").map(String::as_str), "from", 0)?,
        query_count(q.get("limit").map(String::as_str), "limit", 100)?,
    ))
}

/// The page of a user's media asked for: with neither `order_by` nor `dir`,
/// newest first (as Synapse); else `order_by` (default `created_ts`) in
/// the direction of `dir` (default forwards).
fn user_media_page(q: &HashMap<String, String>) -> Result<Page> {
    let (from, limit) = paging(q)?;
    let (order_by, backwards) = if !q.contains_key("order_by") && !q.contains_key("dir") {
        ("created_ts", true)
    } else {
        let column = q.get("order_by").map_or("created_ts", String::as_str);
        let column = media_order_column(column)
            .ok_or_else(|| MatrixError::invalid_param("Unknown value for order_by"))?;
        (column, backwards(q)?)
    };
    Ok(Page {
        from,
        limit,
        order_by,
        backwards,
    })
}

/// `next_token` when there may be more after this page (as Synapse).
fn with_next_token(mut body: Value, from: i64, limit: i64, len: usize, total: i64) -> Value {
    if from + limit < total {
        body["next_token"] = json!(from + len as i64);
    }
    body
}

/// One media in a user's list.
fn list_entry(m: &MediaRow) -> Value {
    json!({
        "media_id": m.media_id,
        "media_type": m.content_type,
        "media_length": m.size,
        "upload_name": m.upload_name,
        "created_ts": m.created_ts,
        "last_access_ts": m.last_access_ts.unwrap_or(m.created_ts),
        "quarantined_by": m.quarantined_by,
        "safe_from_quarantine": m.safe_from_quarantine,
    })
}

fn deleted(ids: Vec<String>) -> Json<Value> {
    let total = ids.len();
    Json(json!({ "deleted_media": ids, "total": total }))
}

/// The existing local user of the path, and the page of their media asked for.
async fn user_and_page(
    s: &AppState,
    raw: &str,
    q: &HashMap<String, String>,
) -> Result<(ruma::OwnedUserId, Page)> {
    let (user, _) = existing(s, raw).await?;
    Ok((user, user_media_page(q)?))
}

async fn user_media(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
    Query(q): Params,
) -> Result<Json<Value>> {
    let (user, page) = user_and_page(&s, &raw, &q).await?;
    let (rows, total) = s.media.user_media(&user, page).await?;
    let body = json!({ "media": rows.iter().map(list_entry).collect::<Vec<_>>(), "total": total });
    Ok(Json(with_next_token(
        body,
        page.from,
        page.limit,
        rows.len(),
        total,
    )))
}

async fn delete_user_media(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
    Query(q): Params,
) -> Result<Json<Value>> {
    let (user, page) = user_and_page(&s, &raw, &q).await?;
    Ok(deleted(s.media.delete_user_media(&user, page).await?))
}

async fn media_info(
    State(s): State<AppState>,
    _: AdminAuth,
    Path((server_name, media_id)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let m = s.media.media_info(&server_name, &media_id).await?;
    Ok(Json(json!({ "media_info": {
        "media_origin": Value::Null,
        "user_id": m.uploader,
        "media_id": m.media_id,
        "media_type": m.content_type,
        "media_length": m.size,
        "upload_name": m.upload_name,
        "created_ts": m.created_ts,
        "filesystem_id": Value::Null,
        "url_cache": Value::Null,
        "last_access_ts": m.last_access_ts.unwrap_or(m.created_ts),
        "quarantined_by": m.quarantined_by,
        "authenticated": m.authenticated,
        "safe_from_quarantine": m.safe_from_quarantine,
        "sha256": m.sha256,
    }})))
}

async fn delete_media(
    State(s): State<AppState>,
    _: AdminAuth,
    Path((server_name, media_id)): Path<(String, String)>,
) -> Result<Json<Value>> {
    Ok(deleted(s.media.delete_one(&server_name, &media_id).await?))
}

/// A required timestamp in milliseconds (`before_ts`): 400 when missing,
/// negative, or so small it must be seconds (as Synapse).
fn before_ts(q: &HashMap<String, String>) -> Result<i64> {
    let raw = q
        .get("before_ts")
        .ok_or_else(|| MatrixError::missing_param("Missing integer query parameter before_ts"))?;
    let ts = query_count(Some(raw), "before_ts", 0)?;
    // December 1970 in milliseconds, August 2920 in seconds.
    if ts < 30_000_000_000 {
        return Err(MatrixError::invalid_param(
            "Query parameter before_ts you provided is from the year 1970. \
             Double check that you are providing a timestamp in milliseconds.",
        ));
    }
    Ok(ts)
}

async fn delete_old(
    State(s): State<AppState>,
    _: AdminAuth,
    Query(q): Params,
) -> Result<Json<Value>> {
    let old = OldMedia {
        before_ts: before_ts(&q)?,
        size_gt: query_count(q.get("size_gt").map(String::as_str), "size_gt", 0)?,
        keep_profiles: query_bool(q.get("keep_profiles").map(String::as_str), "keep_profiles")?
            .unwrap_or(true),
    };
    Ok(deleted(s.media.delete_old(old).await?))
}

/// The older path of [`delete_old`], which names the server (this one).
async fn delete_old_on(
    State(s): State<AppState>,
    auth: AdminAuth,
    Path(server_name): Path<String>,
    q: Params,
) -> Result<Json<Value>> {
    if server_name != s.server_name.as_str() {
        return Err(MatrixError::unknown(
            http::StatusCode::BAD_REQUEST,
            "Can only delete local media",
        ));
    }
    delete_old(State(s), auth, q).await
}

/// Quarantine (`quarantine`) or release one media id.
async fn set_quarantined(
    s: AppState,
    admin: &str,
    (server_name, media_id): (String, String),
    quarantine: bool,
) -> Result<Json<Value>> {
    let by = quarantine.then_some(admin);
    s.media.quarantine_one(&server_name, &media_id, by).await?;
    Ok(Json(json!({})))
}

/// Protect (`protect`) or unprotect one local media id.
async fn set_protected(s: AppState, media_id: String, protect: bool) -> Result<Json<Value>> {
    s.media.set_protected(&media_id, protect).await?;
    Ok(Json(json!({})))
}

async fn room_media(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&raw)?;
    let media = s.media.room_media(room_id.as_str()).await?;
    Ok(Json(
        json!({ "local": media.local, "remote": media.remote }),
    ))
}

async fn quarantine_room(
    State(s): State<AppState>,
    AdminAuth(admin): AdminAuth,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&raw)?;
    let n = s
        .media
        .quarantine_room(room_id.as_str(), &admin.user_id)
        .await?;
    Ok(Json(json!({ "num_quarantined": n })))
}

async fn quarantine_user(
    State(s): State<AppState>,
    AdminAuth(admin): AdminAuth,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let (user, _) = existing(&s, &raw).await?;
    let n = s.media.quarantine_user(&user, &admin.user_id).await?;
    Ok(Json(json!({ "num_quarantined": n })))
}

/// The cache of remote media: there is none yet (no federation), so
/// nothing to purge; the parameters are checked as Synapse does.
async fn purge_media_cache(_: AdminAuth, Query(q): Params) -> Result<Json<Value>> {
    before_ts(&q)?;
    Ok(Json(json!({ "deleted": 0 })))
}

async fn statistics(
    State(s): State<AppState>,
    _: AdminAuth,
    Query(q): Params,
) -> Result<Json<Value>> {
    let (from, limit) = paging(&q)?;
    let order_by = stats_order_column(q.get("order_by").map_or("user_id", String::as_str))
        .ok_or_else(|| MatrixError::invalid_param("Unknown value for order_by"))?;
    let from_ts = query_count(q.get("from_ts").map(String::as_str), "from_ts", 0)?;
    let until_ts = match q.get("until_ts") {
        None => None,
        Some(raw) => {
            let until = query_count(Some(raw), "until_ts", 0)?;
            if until <= from_ts {
                return Err(MatrixError::invalid_param(
                    "Query parameter until_ts must be greater than from_ts.",
                ));
            }
            Some(until)
        }
    };
    let search_term = q.get("search_term").map(String::as_str);
    if search_term == Some("") {
        return Err(MatrixError::invalid_param(
            "Query parameter search_term cannot be an empty string.",
        ));
    }
    crate::http::check_search_term(search_term, "search_term")?;
    let page = Page {
        from,
        limit,
        order_by,
        backwards: backwards(&q)?,
    };
    let filter = StatsFilter {
        from_ts,
        until_ts,
        search_term,
    };
    let (rows, total) = s.media.usage(filter, page).await?;
    let users: Vec<Value> = rows
        .iter()
        .map(|u| {
            json!({
                "user_id": u.user_id,
                "displayname": u.displayname,
                "media_count": u.media_count,
                "media_length": u.media_length,
            })
        })
        .collect();
    let body = json!({ "users": users, "total": total });
    Ok(Json(with_next_token(body, from, limit, rows.len(), total)))
}
