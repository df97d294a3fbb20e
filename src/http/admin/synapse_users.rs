//! Synapse's user admin API, in Synapse's exact shapes: list (`v2`, `v3`),
//! query and create/modify (`v2/users/{id}`), deactivate, reset_password,
//! the admin flag, joined rooms, memberships, login-as, and devices.

use axum::extract::{Path, Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::{MatrixError, Result};
use crate::http::AppState;
use crate::http::extract::{AdminAuth, JsonBody};
use crate::model::accounts::AccountType;
use crate::model::devices::Device;
use crate::services::admin_users::{
    self, AdminUser, UserChanges, UserListFilter, UserListQuery, UserOrder, existing,
};
use crate::services::{admin, memberships};

const V1: &str = "/_synapse/admin/v1";
const V2: &str = "/_synapse/admin/v2";

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route(&format!("{V2}/users"), get(list_v2))
        .route("/_synapse/admin/v3/users", get(list_v3))
        .route(
            &format!("{V2}/users/{{user_id}}"),
            get(query).put(create_or_modify),
        )
        .route(&format!("{V1}/deactivate/{{user_id}}"), post(deactivate))
        .route(
            &format!("{V1}/reset_password/{{user_id}}"),
            post(reset_password),
        )
        .route(
            &format!("{V1}/users/{{user_id}}/admin"),
            get(get_admin).put(set_admin),
        )
        .route(
            &format!("{V1}/users/{{user_id}}/joined_rooms"),
            get(joined_rooms),
        )
        .route(
            &format!("{V1}/users/{{user_id}}/memberships"),
            get(memberships),
        )
        .route(&format!("{V1}/users/{{user_id}}/login"), post(login_as))
        .route(
            &format!("{V2}/users/{{user_id}}/devices"),
            get(devices).post(create_device),
        )
        .route(
            &format!("{V2}/users/{{user_id}}/devices/{{device_id}}"),
            get(device).put(rename_device).delete(delete_device),
        )
        .route(
            &format!("{V2}/users/{{user_id}}/delete_devices"),
            post(delete_devices),
        )
}

/// The list form of a user (`creation_ts` in milliseconds).
fn list_entry(u: &AdminUser) -> Value {
    json!({
        "name": u.user_id,
        "is_guest": u.account_type == AccountType::Guest,
        "admin": u.account_type == AccountType::Admin,
        "user_type": u.user_type,
        "deactivated": u.is_deactivated,
        "erased": u.erased,
        "shadow_banned": u.shadow_banned,
        "displayname": u.displayname,
        "avatar_url": u.avatar_url,
        "creation_ts": u.created_ts,
        "last_seen_ts": u.last_seen_ts,
        "locked": u.locked,
        "suspended": u.suspended,
        "appservice_id": u.appservice_id,
    })
}

/// The single-user form (`creation_ts` in seconds, as Synapse).
fn user_json(u: &AdminUser) -> Value {
    let mut v = list_entry(u);
    v["creation_ts"] = json!(u.created_ts / 1000);
    for (k, val) in [
        ("threepids", json!([])),
        ("external_ids", json!([])),
        ("consent_server_notice_sent", Value::Null),
        ("consent_version", Value::Null),
        ("consent_ts", Value::Null),
    ] {
        v[k] = val;
    }
    v
}

#[derive(Deserialize, Default)]
struct ListQuery {
    from: Option<String>,
    limit: Option<String>,
    user_id: Option<String>,
    name: Option<String>,
    guests: Option<String>,
    admins: Option<String>,
    deactivated: Option<String>,
    locked: Option<String>,
    order_by: Option<String>,
    dir: Option<String>,
}

/// Every `not_user_type` of the query (it may be given many times).
fn not_user_types(raw: Option<&str>) -> Vec<String> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == "not_user_type")
        .map(|(_, v)| v.into_owned())
        .collect()
}

async fn list(s: &AppState, q: ListQuery, raw: Option<String>, v3: bool) -> Result<Json<Value>> {
    let from = super::query_count(q.from.as_deref(), "from", 0)?;
    let limit = super::query_count(q.limit.as_deref(), "limit", 100)?;
    let deactivated = super::query_bool(q.deactivated.as_deref(), "deactivated")?;
    crate::http::check_search_term(q.user_id.as_deref(), "user_id")?;
    crate::http::check_search_term(q.name.as_deref(), "name")?;
    let filter = UserListFilter {
        user_id: q.user_id,
        name: q.name,
        guests: super::query_bool(q.guests.as_deref(), "guests")?.unwrap_or(true),
        admins: super::query_bool(q.admins.as_deref(), "admins")?,
        // v2: deactivated accounts are listed only when asked for;
        // v3: true/false filter, absent lists everyone.
        deactivated: if v3 {
            deactivated
        } else if deactivated == Some(true) {
            None
        } else {
            Some(false)
        },
        locked: super::query_bool(q.locked.as_deref(), "locked")?.unwrap_or(false),
        not_user_types: not_user_types(raw.as_deref()),
        order_by: UserOrder::parse(q.order_by.as_deref().unwrap_or("name"))?.column(),
        backwards: match q.dir.as_deref() {
            None | Some("f") => false,
            Some("b") => true,
            Some(_) => return Err(MatrixError::invalid_param("dir must be f or b")),
        },
    };
    let query = UserListQuery {
        filter,
        from,
        limit,
    };
    let page = admin_users::list(s, query).await?;
    let (rows, total) = (page.users, page.total);
    let mut body =
        json!({ "users": rows.iter().map(list_entry).collect::<Vec<_>>(), "total": total });
    if from + (rows.len() as i64) < total {
        body["next_token"] = json!((from + rows.len() as i64).to_string());
    }
    Ok(Json(body))
}

async fn list_v2(
    State(s): State<AppState>,
    _: AdminAuth,
    Query(q): Query<ListQuery>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    list(&s, q, raw, false).await
}

async fn list_v3(
    State(s): State<AppState>,
    _: AdminAuth,
    Query(q): Query<ListQuery>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    list(&s, q, raw, true).await
}

async fn query(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let (_, row) = existing(&s, &raw).await?;
    Ok(Json(user_json(&row)))
}

fn opt_str<'a>(body: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(v)) => Ok(Some(v)),
        Some(_) => Err(MatrixError::invalid_param(format!(
            "{key} must be a string"
        ))),
    }
}

fn opt_bool(body: &Map<String, Value>, key: &str) -> Result<Option<bool>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(MatrixError::invalid_param(format!(
            "{key} must be a boolean"
        ))),
    }
}

/// `Some(None)` for an explicit null: a field that can be cleared.
fn opt_nullable_str<'a>(
    body: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<Option<&'a str>>> {
    match body.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(t)) => Ok(Some(Some(t.as_str()))),
        Some(_) => Err(MatrixError::invalid_param(format!(
            "{key} must be a string or null"
        ))),
    }
}

/// `PUT /_synapse/admin/v2/users/{userId}`: 201 and the user when created,
/// 200 and the user when modified.
async fn create_or_modify(
    State(s): State<AppState>,
    AdminAuth(me): AdminAuth,
    Path(raw): Path<String>,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<impl IntoResponse> {
    let user = s.accounts.parse_local_user_id(&raw)?;
    let changes = UserChanges {
        password: opt_str(&body, "password")?,
        displayname: opt_str(&body, "displayname")?,
        avatar_url: opt_str(&body, "avatar_url")?,
        admin: opt_bool(&body, "admin")?,
        deactivated: opt_bool(&body, "deactivated")?,
        locked: opt_bool(&body, "locked")?,
        logout_devices: opt_bool(&body, "logout_devices")?.unwrap_or(true),
        user_type: opt_nullable_str(&body, "user_type")?,
    };
    let (created, row) = admin_users::create_or_modify(&s, &me, &user, changes).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(user_json(&row))))
}

#[derive(Deserialize)]
struct DeactivateBody {
    #[serde(default)]
    erase: bool,
}

async fn deactivate(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
    JsonBody(body): JsonBody<DeactivateBody>,
) -> Result<Json<Value>> {
    let (user, _) = existing(&s, &raw).await?;
    admin::deactivate_user(&s, &user, body.erase).await?;
    Ok(Json(json!({ "id_server_unbind_result": "success" })))
}

#[derive(Deserialize)]
struct ResetBody {
    new_password: Option<String>,
    #[serde(default = "yes")]
    logout_devices: bool,
}

fn yes() -> bool {
    true
}

async fn reset_password(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
    JsonBody(body): JsonBody<ResetBody>,
) -> Result<Json<Value>> {
    let Some(new_password) = &body.new_password else {
        return Err(MatrixError::missing_param("Missing param: new_password"));
    };
    let (user, _) = existing(&s, &raw).await?;
    admin_users::reset_password(&s, &user, new_password, body.logout_devices).await?;
    Ok(Json(json!({})))
}

async fn get_admin(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let (_, row) = existing(&s, &raw).await?;
    Ok(Json(
        json!({ "admin": row.account_type == AccountType::Admin }),
    ))
}

#[derive(Deserialize)]
struct AdminBody {
    admin: bool,
}

async fn set_admin(
    State(s): State<AppState>,
    AdminAuth(me): AdminAuth,
    Path(raw): Path<String>,
    JsonBody(body): JsonBody<AdminBody>,
) -> Result<Json<Value>> {
    let (user, _) = existing(&s, &raw).await?;
    admin_users::set_admin(&s, &me, &user, body.admin).await?;
    Ok(Json(json!({})))
}

async fn joined_rooms(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let (user, _) = existing(&s, &raw).await?;
    let rooms = memberships::joined_rooms(&s, &user).await?;
    Ok(Json(json!({ "total": rooms.len(), "joined_rooms": rooms })))
}

async fn memberships(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let (user, _) = existing(&s, &raw).await?;
    let mut map = Map::new();
    for m in memberships::memberships(&s, &user).await? {
        map.insert(m.room_id, json!(m.membership));
    }
    Ok(Json(json!({ "memberships": map })))
}

/// `POST /_synapse/admin/v1/users/{userId}/login` `{"valid_until_ms"?}`:
/// a token acting as the user (not yourself, as Synapse), which stops
/// working at `valid_until_ms` when given.
async fn login_as(
    State(s): State<AppState>,
    AdminAuth(me): AdminAuth,
    Path(raw): Path<String>,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<Json<Value>> {
    let (user, row) = existing(&s, &raw).await?;
    admin_users::check_login_as(&me, &user, &row)?;
    let valid_until_ms = match body.get("valid_until_ms") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_i64().filter(|t| *t >= 0).ok_or_else(|| {
            MatrixError::invalid_param("valid_until_ms must be a non-negative integer")
        })?),
    };
    let access_token = admin_users::login_as(&s, &me, &user, valid_until_ms).await?;
    Ok(Json(json!({ "access_token": access_token })))
}

fn device_json(d: &Device) -> Value {
    json!({
        "device_id": d.device_id,
        "display_name": d.display_name,
        "last_seen_ip": d.last_seen_ip,
        "last_seen_user_agent": d.last_seen_user_agent,
        "last_seen_ts": d.last_seen_ts,
        "user_id": d.user_id,
    })
}

async fn devices(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let (user, _) = existing(&s, &raw).await?;
    let devices: Vec<Value> = s
        .sessions
        .devices(user.as_str())
        .await?
        .iter()
        .map(|d| {
            let mut v = device_json(d);
            v["dehydrated"] = json!(false);
            v
        })
        .collect();
    Ok(Json(json!({ "total": devices.len(), "devices": devices })))
}

#[derive(Deserialize)]
struct NewDevice {
    device_id: String,
}

async fn create_device(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
    JsonBody(body): JsonBody<NewDevice>,
) -> Result<Json<Value>> {
    let (user, _) = existing(&s, &raw).await?;
    admin_users::ensure_device(&s, &user, &body.device_id).await?;
    Ok(Json(json!({})))
}

async fn existing_device(
    s: &AppState,
    raw: &str,
    device: &str,
) -> Result<(ruma::OwnedUserId, Device)> {
    let (user, _) = existing(s, raw).await?;
    let d = s
        .sessions
        .device(user.as_str(), device)
        .await?
        .ok_or_else(|| MatrixError::not_found("Device not found"))?;
    Ok((user, d))
}

async fn device(
    State(s): State<AppState>,
    _: AdminAuth,
    Path((raw, device)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let (_, d) = existing_device(&s, &raw, &device).await?;
    Ok(Json(device_json(&d)))
}

#[derive(Deserialize)]
struct Rename {
    #[serde(default)]
    display_name: Option<String>,
}

async fn rename_device(
    State(s): State<AppState>,
    _: AdminAuth,
    Path((raw, device)): Path<(String, String)>,
    JsonBody(body): JsonBody<Rename>,
) -> Result<Json<Value>> {
    let (user, _) = existing_device(&s, &raw, &device).await?;
    s.sessions
        .rename_device(user.as_str(), &device, body.display_name.as_deref())
        .await?;
    Ok(Json(json!({})))
}

async fn delete_device(
    State(s): State<AppState>,
    _: AdminAuth,
    Path((raw, device)): Path<(String, String)>,
) -> Result<Json<Value>> {
    // An unknown device is 404, as for GET and PUT (and the client API).
    let (user, _) = existing_device(&s, &raw, &device).await?;
    s.sessions.delete_devices(user.as_str(), &[device]).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct DeleteMany {
    devices: Vec<String>,
}

async fn delete_devices(
    State(s): State<AppState>,
    _: AdminAuth,
    Path(raw): Path<String>,
    JsonBody(body): JsonBody<DeleteMany>,
) -> Result<Json<Value>> {
    let (user, _) = existing(&s, &raw).await?;
    s.sessions
        .delete_devices(user.as_str(), &body.devices)
        .await?;
    Ok(Json(json!({})))
}
