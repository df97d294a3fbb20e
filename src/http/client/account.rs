//! `/account/whoami`, `/account/password`, `/account/deactivate`.

use axum::Router;
use axum::extract::State;
use ruma::api::client::account::{ThirdPartyIdRemovalStatus, change_password, deactivate, whoami};

use crate::error::Result;
use crate::http::extract::{Auth, GuestAuth, Ruma, RumaResponse, UiaRuma};
use crate::http::{AppState, ruma_route};
use crate::services::admin;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<whoami::v3::Request, _, _>(r, whoami);
    let r = ruma_route::<change_password::v3::Request, _, _>(r, change_password);
    ruma_route::<deactivate::v3::Request, _, _>(r, deactivate)
}

async fn whoami(
    GuestAuth(r): GuestAuth,
    _: Ruma<whoami::v3::Request>,
) -> RumaResponse<whoami::v3::Response> {
    let mut resp = whoami::v3::Response::new(r.user_id(), r.is_guest());
    // An application service acting without a device has none to name.
    resp.device_id = (!r.device_id.is_empty()).then(|| r.device_id.clone().into());
    RumaResponse(resp)
}

async fn change_password(
    State(s): State<AppState>,
    Auth(r): Auth,
    UiaRuma { req, op, .. }: UiaRuma<change_password::v3::Request>,
) -> Result<RumaResponse<change_password::v3::Response>> {
    let user_id = r.user_id();
    s.uia
        .require_password(req.auth.as_ref(), &op, &user_id, &s.accounts)
        .await?;
    s.accounts.set_password(&user_id, &req.new_password).await?;
    if req.logout_devices {
        s.sessions
            .delete_all_devices(&r.user_id, Some(&r.device_id))
            .await?;
    }
    Ok(RumaResponse(change_password::v3::Response::new()))
}

async fn deactivate(
    State(s): State<AppState>,
    Auth(r): Auth,
    UiaRuma { req, op, .. }: UiaRuma<deactivate::v3::Request>,
) -> Result<RumaResponse<deactivate::v3::Response>> {
    let user_id = r.user_id();
    // As Synapse: a service deactivates its own users without
    // user-interactive authentication (it has no password to give).
    if r.app_service.is_none() {
        s.uia
            .require_password(req.auth.as_ref(), &op, &user_id, &s.accounts)
            .await?;
    }
    // As Synapse: the account leaves its rooms too, and with `erase` its
    // events are served redacted to those who join later.
    admin::deactivate_user(&s, &user_id, req.erase).await?;
    Ok(RumaResponse(deactivate::v3::Response::new(
        ThirdPartyIdRemovalStatus::NoSupport,
    )))
}
