//! `/profile/{userId}` and its `displayname` and `avatar_url` fields.

use axum::Router;
use axum::extract::State;
use ruma::api::client::profile::{
    get_avatar_url, get_display_name, get_profile, set_avatar_url, set_display_name,
};
use ruma::{OwnedMxcUri, UserId};

use crate::error::{MatrixError, Result};
use crate::http::extract::{GuestAuth, Ruma, RumaResponse};
use crate::http::{AppState, ruma_route};
use crate::services::memberships;
use crate::services::profiles::Profile;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<get_profile::v3::Request, _, _>(r, profile);
    let r = ruma_route::<get_display_name::v3::Request, _, _>(r, get_displayname);
    let r = ruma_route::<set_display_name::v3::Request, _, _>(r, set_displayname);
    let r = ruma_route::<get_avatar_url::v3::Request, _, _>(r, get_avatar);
    ruma_route::<set_avatar_url::v3::Request, _, _>(r, set_avatar)
}

/// Profiles of remote users need federation; until then they are unknown.
async fn lookup(s: &AppState, user_id: &UserId) -> Result<Profile> {
    if !s.accounts.is_local(user_id) {
        return Err(MatrixError::not_found("Profile not found"));
    }
    s.profiles.get(user_id).await
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
    let p = lookup(&s, &req.user_id).await?;
    let mut value = serde_json::Map::new();
    if let Some(name) = p.displayname {
        value.insert("displayname".into(), name.into());
    }
    if let Some(url) = p.avatar_url {
        value.insert("avatar_url".into(), url.into());
    }
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
    if req.displayname.as_ref().is_some_and(|n| n.len() > 256) {
        return Err(MatrixError::bad_json(
            "displayname is too long (at most 256 bytes)",
        ));
    }
    s.profiles
        .set_displayname(&req.user_id, req.displayname.as_deref())
        .await?;
    memberships::copy_profile_to_rooms(&s, &req.user_id).await?;
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
    s.profiles
        .set_avatar_url(&req.user_id, req.avatar_url.as_ref().map(|u| u.as_str()))
        .await?;
    memberships::copy_profile_to_rooms(&s, &req.user_id).await?;
    Ok(RumaResponse(set_avatar_url::v3::Response::new()))
}
