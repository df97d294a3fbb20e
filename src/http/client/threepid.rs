//! Third-party identifiers on the account (`/account/3pid...`) and the
//! `requestToken` endpoints that would send a validation email or SMS.
//!
//! Myelin sends neither and keeps no 3PIDs, so it answers as Synapse does
//! with no email or SMS configured: no 3PIDs, `requestToken` 400
//! `M_THREEPID_MEDIUM_NOT_SUPPORTED` (before reading the body), adding one
//! 400 `M_THREEPID_AUTH_FAILED` (no validated session can exist), deleting
//! or unbinding one succeeds with `id_server_unbind_result: no-support`.
//! `/capabilities` says `m.3pid_changes: false`.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use http::StatusCode;
use ruma::api::client::account::{
    ThirdPartyIdRemovalStatus, add_3pid, bind_3pid, delete_3pid, get_3pids,
    request_3pid_management_token_via_email, request_3pid_management_token_via_msisdn,
    request_password_change_token_via_email, request_password_change_token_via_msisdn,
    request_registration_token_via_email, request_registration_token_via_msisdn, unbind_3pid,
};
use ruma::api::error::ErrorKind;
use ruma::thirdparty::Medium;
use serde_json::{Value, json};

use crate::error::{MatrixError, Result};
use crate::http::extract::{Auth, JsonBody, Ruma, RumaResponse, UiaRuma};
use crate::http::{AppState, ruma_route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<get_3pids::v3::Request, _, _>(r, list);
    let r = r.route("/_matrix/client/v3/account/3pid", post(add_deprecated));
    let r = ruma_route::<add_3pid::v3::Request, _, _>(r, add);
    let r = ruma_route::<bind_3pid::v3::Request, _, _>(r, bind);
    let r = ruma_route::<delete_3pid::v3::Request, _, _>(r, delete);
    let r = ruma_route::<unbind_3pid::v3::Request, _, _>(r, unbind);
    let r =
        ruma_route::<request_3pid_management_token_via_email::v3::Request, _, _>(r, async || {
            no_email("Adding an email to your account is disabled on this server")
        });
    let r = ruma_route::<request_registration_token_via_email::v3::Request, _, _>(r, async || {
        no_email("Email-based registration has been disabled on this server")
    });
    let r =
        ruma_route::<request_password_change_token_via_email::v3::Request, _, _>(r, async || {
            no_email("Email-based password resets have been disabled on this server")
        });
    let r =
        ruma_route::<request_3pid_management_token_via_msisdn::v3::Request, _, _>(r, async || {
            no_email("Adding phone numbers to user account is not supported by this homeserver")
        });
    let r = ruma_route::<request_registration_token_via_msisdn::v3::Request, _, _>(r, async || {
        no_email("Registration by phone number is not supported on this homeserver")
    });
    ruma_route::<request_password_change_token_via_msisdn::v3::Request, _, _>(r, async || {
        no_email("Password resets by phone number are not supported on this homeserver")
    })
}

/// The answer of every `requestToken`: this server validates no medium.
fn no_email(message: &str) -> Result<Json<Value>> {
    Err(MatrixError::new(
        StatusCode::BAD_REQUEST,
        ErrorKind::ThreepidMediumNotSupported,
        message,
    ))
}

fn no_validated_session() -> MatrixError {
    MatrixError::new(
        StatusCode::BAD_REQUEST,
        ErrorKind::ThreepidAuthFailed,
        "No validated 3pid session found",
    )
}

/// Synapse accepts only these two media for deletion and unbinding.
fn check_medium(medium: &Medium) -> Result<()> {
    match medium {
        Medium::Email | Medium::Msisdn => Ok(()),
        _ => Err(MatrixError::bad_json("medium must be email or msisdn")),
    }
}

/// By hand: ruma's response leaves an empty `threepids` out, and Element's
/// settings read the key (Synapse always sends it).
async fn list(Auth(_): Auth, _: Ruma<get_3pids::v3::Request>) -> Json<Value> {
    Json(json!({ "threepids": [] }))
}

/// The deprecated `POST /account/3pid`: `three_pid_creds` (or
/// `threePidCreds`) names a validation session, which cannot exist here.
async fn add_deprecated(Auth(_): Auth, JsonBody(body): JsonBody<Value>) -> Result<Json<Value>> {
    let creds = body
        .get("three_pid_creds")
        .or_else(|| body.get("threePidCreds"))
        .filter(|c| !c.is_null())
        .ok_or_else(|| MatrixError::missing_param("Missing param three_pid_creds"))?;
    for key in ["client_secret", "sid"] {
        if creds.get(key).is_none() {
            return Err(MatrixError::missing_param(format!(
                "Missing params: ['{key}']"
            )));
        }
    }
    Err(no_validated_session())
}

/// After user-interactive authentication, as Synapse: the session named
/// cannot have been validated.
async fn add(
    State(s): State<AppState>,
    Auth(r): Auth,
    UiaRuma { req, op, .. }: UiaRuma<add_3pid::v3::Request>,
) -> Result<Json<Value>> {
    s.uia
        .require_password(req.auth.as_ref(), &op, &r.user_id(), &s.accounts)
        .await?;
    Err(no_validated_session())
}

/// Binding goes through an identity server, which this server does not talk to.
async fn bind(Auth(_): Auth, _: Ruma<bind_3pid::v3::Request>) -> Result<Json<Value>> {
    Err(MatrixError::new(
        StatusCode::FORBIDDEN,
        ErrorKind::ThreepidDenied,
        "This homeserver does not bind third-party identifiers on identity servers",
    ))
}

/// Nothing to delete; succeeds as Synapse does for an unknown 3PID.
async fn delete(
    Auth(_): Auth,
    Ruma(req): Ruma<delete_3pid::v3::Request>,
) -> Result<RumaResponse<delete_3pid::v3::Response>> {
    check_medium(&req.medium)?;
    Ok(RumaResponse(delete_3pid::v3::Response::new(
        ThirdPartyIdRemovalStatus::NoSupport,
    )))
}

/// No identity server knows a binding made through this server.
async fn unbind(Auth(_): Auth, Ruma(req): Ruma<unbind_3pid::v3::Request>) -> Result<Json<Value>> {
    check_medium(&req.medium)?;
    Ok(Json(json!({ "id_server_unbind_result": "no-support" })))
}
