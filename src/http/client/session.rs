//! `/login` and `/logout`.

use axum::extract::{FromRequest, Request, State};
use axum::routing::post;
use axum::{Json, Router};
use ruma::api::client::session::{get_login_types, login, logout, logout_all};
use ruma::api::client::uiaa::UserIdentifier;
use serde_json::{Map, Value};

use crate::error::{MatrixError, Result};
use crate::http::extract::{
    GuestAuth, LoginRateLimit, RawToken, RequiredJsonBody, Ruma, RumaResponse, read_body,
};
use crate::http::{AppState, ruma_route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<get_login_types::v3::Request, _, _>(r, login_types);
    let r = ruma_route::<login::v3::Request, _, _>(r, login);
    let r = ruma_route::<logout::v3::Request, _, _>(r, logout);
    let r = r.route("/_matrix/client/v3/refresh", post(refresh));
    ruma_route::<logout_all::v3::Request, _, _>(r, logout_all)
}

/// `POST /refresh`: no refresh token is ever issued, so none is valid. The
/// body is read as JSON rather than by ruma's type, so that a missing or
/// malformed `refresh_token` is answered as Synapse answers it.
async fn refresh(
    State(s): State<AppState>,
    RequiredJsonBody(body): RequiredJsonBody<Map<String, Value>>,
) -> Result<Json<Value>> {
    match s.sessions.refresh(body.get("refresh_token"))? {}
}

/// The login request. ruma's login body parser assumes a `type` field, so a
/// body without one is rejected as bad input before it runs.
struct LoginBody(login::v3::Request);

impl FromRequest<AppState> for LoginBody {
    type Rejection = MatrixError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self> {
        let (parts, body) = req.into_parts();
        let bytes = read_body(body, state).await?;
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Err(e) => {
                return Err(MatrixError::not_json(format!(
                    "Body is not valid JSON: {e}"
                )));
            }
            Ok(v) => check_login_fields(&v)?,
        }
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        let Ruma(parsed) = Ruma::from_request(req, state).await?;
        Ok(Self(parsed))
    }
}

/// What Synapse checks of a login body before its type: `refresh_token`,
/// when present, must be a boolean (`null` included: 400 `M_UNKNOWN`), and
/// `type` must be a string.
fn check_login_fields(body: &Value) -> Result<()> {
    if body.get("refresh_token").is_some_and(|r| !r.is_boolean()) {
        return Err(MatrixError::unknown(
            http::StatusCode::BAD_REQUEST,
            "`refresh_token` should be true or false.",
        ));
    }
    if !body.get("type").is_some_and(Value::is_string) {
        return Err(MatrixError::bad_json("Missing login type"));
    }
    Ok(())
}

async fn login_types(
    State(s): State<AppState>,
    _: Ruma<get_login_types::v3::Request>,
) -> RumaResponse<get_login_types::v3::Response> {
    use get_login_types::v3::{ApplicationServiceLoginType, LoginType, PasswordLoginType};
    let mut flows = vec![LoginType::Password(PasswordLoginType::new())];
    if !s.appservices.is_empty() {
        flows.push(LoginType::ApplicationService(
            ApplicationServiceLoginType::new(),
        ));
    }
    RumaResponse(get_login_types::v3::Response::new(flows))
}

#[allow(deprecated)] // the legacy `user` field is still sent by older clients and tools
async fn login(
    State(s): State<AppState>,
    _: LoginRateLimit,
    RawToken(token): RawToken,
    LoginBody(req): LoginBody,
) -> Result<RumaResponse<login::v3::Response>> {
    if let login::v3::LoginInfo::ApplicationService(a) = &req.login_info {
        let service = s.appservices.by_request_token(token.as_deref())?;
        let user = login_user(a.identifier.as_ref(), a.user.as_ref())?;
        let user_id = s.accounts.resolve_login_user(&user)?;
        s.appservices.check_login(service, &user_id).await?;
        return logged_in(&s, &req, user_id).await;
    }
    let login::v3::LoginInfo::Password(p) = &req.login_info else {
        return Err(MatrixError::unknown(
            http::StatusCode::BAD_REQUEST,
            format!("Unknown login type {}", req.login_info.login_type()),
        ));
    };
    let user = login_user(p.identifier.as_ref(), p.user.as_ref())?;
    let user_id = s.accounts.resolve_login_user(&user)?;
    let account = s.accounts.check_password(&user_id, &p.password).await?;
    if account.locked {
        return Err(MatrixError::new(
            http::StatusCode::UNAUTHORIZED,
            ruma::api::error::ErrorKind::UserLocked,
            "User account has been locked",
        ));
    }
    logged_in(&s, &req, user_id).await
}

/// The user a login names: an `m.id.user` identifier or the legacy `user`.
fn login_user(identifier: Option<&UserIdentifier>, user: Option<&String>) -> Result<String> {
    match (identifier, user) {
        (Some(UserIdentifier::Matrix(m)), _) => Ok(m.user.clone()),
        (None, Some(user)) => Ok(user.clone()),
        (Some(_), _) => Err(MatrixError::forbidden(
            "Only m.id.user identifiers are supported",
        )),
        (None, None) => Err(MatrixError::bad_json("Missing identifier")),
    }
}

/// A new session on the requested (or a new) device.
#[allow(deprecated)] // `home_server`: older clients still read it
async fn logged_in(
    s: &AppState,
    req: &login::v3::Request,
    user_id: ruma::OwnedUserId,
) -> Result<RumaResponse<login::v3::Response>> {
    let session = s
        .sessions
        .create(
            user_id.as_str(),
            req.device_id.as_ref().map(|d| d.as_str()),
            req.initial_device_display_name.as_deref(),
        )
        .await?;
    let mut resp =
        login::v3::Response::new(user_id, session.access_token, session.device_id.into());
    resp.home_server = Some(s.server_name.clone());
    Ok(RumaResponse(resp))
}

async fn logout(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    _: Ruma<logout::v3::Request>,
) -> Result<RumaResponse<logout::v3::Response>> {
    s.sessions
        .delete_devices(&r.user_id, std::slice::from_ref(&r.device_id))
        .await?;
    Ok(RumaResponse(logout::v3::Response::new()))
}

async fn logout_all(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    _: Ruma<logout_all::v3::Request>,
) -> Result<RumaResponse<logout_all::v3::Response>> {
    s.sessions.delete_all_devices(&r.user_id, None).await?;
    Ok(RumaResponse(logout_all::v3::Response::new()))
}
