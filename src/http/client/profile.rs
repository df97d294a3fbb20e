//! `/profile/{userId}`, its `displayname` and `avatar_url` fields, and
//! custom profile fields (spec v1.16, MSC4133's unstable paths too):
//! `GET/PUT/DELETE /profile/{userId}/{keyName}`.
//!
//! The custom field endpoints read their path and body by hand, so that
//! errors come in Synapse's order and codes (a bad key name before the
//! body, a missing key 400 `M_MISSING_PARAM`, `null` 400
//! `M_INVALID_PARAM`); `displayname` and `avatar_url` keep their own
//! routes, and reach the same changes (member events updated) through the
//! generic ones.

use axum::extract::{Path, State};
use axum::routing::delete;
use axum::{Json, Router};
use ruma::api::client::profile::{
    delete_profile_field, get_avatar_url, get_display_name, get_profile, get_profile_field,
    set_avatar_url, set_display_name, set_profile_field,
};
use ruma::{OwnedMxcUri, OwnedUserId, UserId};
use serde_json::{Value, json};

use crate::error::{MatrixError, Result};
use crate::http::extract::{GuestAuth, JsonBody, Ruma, RumaResponse};
use crate::http::{AppState, ruma_route};
use crate::services::memberships;
use crate::services::profiles::{Profile, check_field_name};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<get_profile::v3::Request, _, _>(r, profile);
    let r = ruma_route::<get_display_name::v3::Request, _, _>(r, get_displayname);
    let r = ruma_route::<set_display_name::v3::Request, _, _>(r, set_displayname);
    let r = ruma_route::<get_avatar_url::v3::Request, _, _>(r, get_avatar);
    let r = ruma_route::<set_avatar_url::v3::Request, _, _>(r, set_avatar);
    let r = ruma_route::<get_profile_field::v3::Request, _, _>(r, get_field);
    let r = ruma_route::<set_profile_field::v3::Request, _, _>(r, set_field);
    let r = ruma_route::<delete_profile_field::v3::Request, _, _>(r, delete_field);
    // The two standard fields' own paths take DELETE too (v1.16).
    let r = r.route(
        "/_matrix/client/v3/profile/{user_id}/displayname",
        delete(
            |s: State<AppState>, a: GuestAuth, Path(user_id): Path<String>| async move {
                delete_field(s, a, Path((user_id, "displayname".to_owned()))).await
            },
        ),
    );
    r.route(
        "/_matrix/client/v3/profile/{user_id}/avatar_url",
        delete(
            |s: State<AppState>, a: GuestAuth, Path(user_id): Path<String>| async move {
                delete_field(s, a, Path((user_id, "avatar_url".to_owned()))).await
            },
        ),
    )
}

fn parse_user(user_id: &str) -> Result<OwnedUserId> {
    UserId::parse(user_id).map_err(|_| MatrixError::invalid_param("Invalid user id"))
}

/// Guests may change their display name and avatar only.
fn guest_may_change(requester: &crate::model::accounts::Requester, field: &str) -> Result<()> {
    if requester.is_guest() && !crate::services::profiles::is_standard_field(field) {
        return Err(MatrixError::guest_forbidden());
    }
    Ok(())
}

/// Sets (or with `None` clears) `displayname` or `avatar_url`, and copies
/// the profile into the member events of the user's joined rooms.
async fn set_standard(
    s: &AppState,
    user_id: &UserId,
    field: &str,
    value: Option<&str>,
) -> Result<()> {
    if field == "displayname" {
        if value.is_some_and(|n| n.len() > 256) {
            return Err(MatrixError::bad_json(
                "displayname is too long (at most 256 bytes)",
            ));
        }
        s.profiles.set_displayname(user_id, value).await?;
    } else {
        if value.is_some_and(|u| u.len() > 1000) {
            return Err(MatrixError::bad_json(
                "avatar_url is too long (at most 1000 bytes)",
            ));
        }
        s.profiles.set_avatar_url(user_id, value).await?;
    }
    memberships::copy_profile_to_rooms(s, user_id).await
}

/// `{keyName: value}`; 404 `M_NOT_FOUND` for a field not set (or a user
/// not known), and `null` for an unset `displayname` or `avatar_url`.
async fn get_field(
    State(s): State<AppState>,
    Path((user_id, field)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    check_field_name(&field)?;
    if !s.accounts.is_local(&user_id) {
        let value = s
            .federation
            .remote_profile(&user_id, Some(&field))
            .await?
            .remove(&field);
        let value = match value {
            Some(v) => v,
            None if matches!(field.as_str(), "displayname" | "avatar_url") => Value::Null,
            None => return Err(MatrixError::not_found("Profile field not found")),
        };
        return Ok(Json(json!({ field: value })));
    }
    let p = lookup(&s, &user_id).await?;
    let value = match field.as_str() {
        "displayname" => json!(p.displayname),
        "avatar_url" => json!(p.avatar_url),
        _ => s.profiles.field(&user_id, &field).await?,
    };
    Ok(Json(json!({ field: value })))
}

async fn set_field(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Path((user_id, field)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    guest_may_change(&r, &field)?;
    check_field_name(&field)?;
    let value = body
        .get(&field)
        .ok_or_else(|| MatrixError::missing_param(format!("Missing key '{field}'")))?;
    if value.is_null() {
        return Err(MatrixError::invalid_param(format!(
            "'{field}' can not be null"
        )));
    }
    only_self(&r, &user_id)?;
    if crate::services::profiles::is_standard_field(&field) {
        let text = value
            .as_str()
            .ok_or_else(|| MatrixError::invalid_param(format!("'{field}' must be a string")))?;
        set_standard(&s, &user_id, &field, Some(text)).await?;
    } else {
        s.profiles.set_field(&user_id, &field, value).await?;
    }
    Ok(Json(json!({})))
}

/// Removes a field; `displayname` and `avatar_url` are cleared.
async fn delete_field(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Path((user_id, field)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let user_id = parse_user(&user_id)?;
    guest_may_change(&r, &field)?;
    check_field_name(&field)?;
    only_self(&r, &user_id)?;
    if crate::services::profiles::is_standard_field(&field) {
        set_standard(&s, &user_id, &field, None).await?;
    } else {
        s.profiles.delete_field(&user_id, &field).await?;
    }
    Ok(Json(json!({})))
}

/// A user's `displayname` and `avatar_url`; a remote user's asked of
/// their server.
async fn lookup(s: &AppState, user_id: &UserId) -> Result<Profile> {
    if !s.accounts.is_local(user_id) {
        let remote = s.federation.remote_profile(user_id, None).await?;
        let text = |k: &str| remote.get(k).and_then(Value::as_str).map(str::to_owned);
        return Ok(Profile {
            displayname: text("displayname"),
            avatar_url: text("avatar_url"),
        });
    }
    match s.profiles.get(user_id).await {
        // An unknown user an application service's namespace holds: the
        // service may create it now.
        Err(e)
            if e.status == http::StatusCode::NOT_FOUND
                && s.appservices.query_user(user_id.as_str()).await =>
        {
            s.profiles.get(user_id).await
        }
        other => other,
    }
}

fn only_self(requester: &crate::model::accounts::Requester, user_id: &UserId) -> Result<()> {
    if requester.user_id != user_id.as_str() {
        return Err(MatrixError::forbidden(
            "You cannot change another user's profile",
        ));
    }
    Ok(())
}

async fn profile(
    State(s): State<AppState>,
    Ruma(req): Ruma<get_profile::v3::Request>,
) -> Result<RumaResponse<get_profile::v3::Response>> {
    if !s.accounts.is_local(&req.user_id) {
        let remote = s.federation.remote_profile(&req.user_id, None).await?;
        let data = serde_json::from_value(remote.into()).map_err(MatrixError::internal)?;
        let mut resp = get_profile::v3::Response::new();
        resp.data = data;
        return Ok(RumaResponse(resp));
    }
    let p = lookup(&s, &req.user_id).await?;
    let mut value = serde_json::Map::new();
    if let Some(name) = p.displayname {
        value.insert("displayname".into(), name.into());
    }
    if let Some(url) = p.avatar_url {
        value.insert("avatar_url".into(), url.into());
    }
    value.extend(s.profiles.fields(&req.user_id).await?);
    let data = serde_json::from_value(value.into()).map_err(MatrixError::internal)?;
    let mut resp = get_profile::v3::Response::new();
    resp.data = data;
    Ok(RumaResponse(resp))
}

async fn get_displayname(
    State(s): State<AppState>,
    Ruma(req): Ruma<get_display_name::v3::Request>,
) -> Result<RumaResponse<get_display_name::v3::Response>> {
    let p = lookup(&s, &req.user_id).await?;
    Ok(RumaResponse(get_display_name::v3::Response::new(
        p.displayname,
    )))
}

async fn set_displayname(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<set_display_name::v3::Request>,
) -> Result<RumaResponse<set_display_name::v3::Response>> {
    only_self(&r, &req.user_id)?;
    set_standard(&s, &req.user_id, "displayname", req.displayname.as_deref()).await?;
    Ok(RumaResponse(set_display_name::v3::Response::new()))
}

async fn get_avatar(
    State(s): State<AppState>,
    Ruma(req): Ruma<get_avatar_url::v3::Request>,
) -> Result<RumaResponse<get_avatar_url::v3::Response>> {
    let p = lookup(&s, &req.user_id).await?;
    Ok(RumaResponse(get_avatar_url::v3::Response::new(
        p.avatar_url.map(OwnedMxcUri::from),
    )))
}

async fn set_avatar(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<set_avatar_url::v3::Request>,
) -> Result<RumaResponse<set_avatar_url::v3::Response>> {
    only_self(&r, &req.user_id)?;
    let url = req.avatar_url.as_ref().map(|u| u.as_str());
    set_standard(&s, &req.user_id, "avatar_url", url).await?;
    Ok(RumaResponse(set_avatar_url::v3::Response::new()))
}
