//! `/register`, `/register/available` and the registration-token validity check.

use axum::extract::State;
use axum::{Json, Router};
use ruma::api::client::account::{
    check_registration_token_validity, get_username_availability, register,
};

use ruma::OwnedUserId;
use serde::Serialize;

use crate::error::{MatrixError, Result};
use crate::http::extract::{LoginRateLimit, RawToken, Ruma, RumaResponse, UiaRuma};
use crate::http::{AppState, ruma_route};
use crate::model::accounts::AccountType;
use crate::services::accounts::Registration;
use crate::services::guests;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<register::v3::Request, _, _>(r, register);
    let r = ruma_route::<get_username_availability::v3::Request, _, _>(r, available);
    ruma_route::<check_registration_token_validity::v1::Request, _, _>(r, token_validity)
}

async fn register(
    State(s): State<AppState>,
    _: LoginRateLimit,
    RawToken(token): RawToken,
    uia_req: UiaRuma<register::v3::Request>,
) -> Result<Json<Registered>> {
    if uia_req.req.login_type == Some(register::LoginType::ApplicationService) {
        return appservice_register(&s, token.as_deref(), &uia_req.req).await;
    }
    let guest = uia_req.req.kind == register::RegistrationKind::Guest;
    let cfg = &s.config.registration;
    if guest && !cfg.allow_guests {
        return Err(MatrixError::guest_forbidden());
    }
    if !guest && !cfg.enabled {
        return Err(MatrixError::forbidden("Registration is disabled"));
    }
    if guest {
        let user_id = s.accounts.register(registration(None, None, None)).await?;
        tracing::info!(%user_id, guest, "registered a new account");
        return login_after(&s, &uia_req.req, user_id).await;
    }
    let bound = s.uia.bind(uia_req.req.auth.as_ref(), &uia_req.op, None)?;
    // A request that continues a session without parameters has the ones
    // the session remembers from its first request.
    let req = if uia_req.op.params.is_empty() && !bound.params.is_empty() {
        uia_req.with_params(&bound.params)?
    } else {
        uia_req.req
    };
    // Check the request itself before asking the client to authenticate,
    // as Synapse does, so the user learns of a taken name first. The name
    // this session already registered is not taken from it.
    let localpart = match &req.username {
        Some(u) => Some(s.accounts.validate_localpart(u)?),
        None => None,
    };
    if let Some(lp) = &localpart {
        s.appservices
            .check_user_not_reserved(s.accounts.user_id(lp)?.as_str(), None)?;
    }
    // A guest upgrading to a full account names its own localpart and
    // token (spec "Guest Access"); its name is not taken from it.
    let upgrade = match bound.registered {
        Some(_) => None,
        None => {
            guests::upgrade_target(&s, req.guest_access_token.as_deref(), localpart.as_deref())
                .await?
        }
    };
    if let Some(lp) = &localpart {
        let ours = bound
            .registered
            .as_ref()
            .is_some_and(|r| r.localpart() == lp);
        if !ours && upgrade.is_none() && !s.accounts.is_available(lp).await? {
            return Err(MatrixError::user_in_use());
        }
    }
    if let Some(p) = req.password.as_deref().filter(|p| !p.is_empty()) {
        crate::services::passwords::validate(p)?;
    }
    let token = s
        .uia
        .require_registration(
            &bound,
            req.auth.as_ref(),
            cfg.requires_token,
            &s.registration_tokens,
        )
        .await?;
    // Repeating a completed registration answers with its account (a new
    // login), as Synapse does.
    if let Some(user_id) = bound.registered.clone() {
        return login_after(&s, &req, user_id).await;
    }
    let password = match req.password.as_deref() {
        None | Some("") => return Err(MatrixError::missing_param("Missing password")),
        Some(p) => p,
    };
    if let Some(user_id) = upgrade {
        s.accounts.upgrade_guest(&user_id, password).await?;
        s.uia.note_registered(&bound, &user_id);
        tracing::info!(%user_id, "upgraded a guest account to a full one");
        return login_after(&s, &req, user_id).await;
    }
    let user_id = s
        .accounts
        .register(registration(
            localpart.as_deref(),
            Some(password),
            token.as_deref(),
        ))
        .await?;
    s.uia.note_registered(&bound, &user_id);
    tracing::info!(%user_id, guest, "registered a new account");
    login_after(&s, &req, user_id).await
}

/// `m.login.application_service` registration: no UIA, even with
/// registration closed; the `as_token` names the service.
async fn appservice_register(
    s: &AppState,
    token: Option<&str>,
    req: &register::v3::Request,
) -> Result<Json<Registered>> {
    let service = s.appservices.by_request_token(token)?;
    let Some(localpart) = req.username.as_deref() else {
        return Err(MatrixError::missing_param(
            "Desired username is missing or not a string",
        ));
    };
    let user_id = s
        .appservices
        .register(service, &s.accounts, localpart)
        .await?;
    tracing::info!(%user_id, appservice = %service.id, "registered an application service user");
    login_after(s, req, user_id).await
}

/// A new account: a user's with a password, or a guest's without.
fn registration<'a>(
    localpart: Option<&'a str>,
    password: Option<&'a str>,
    registration_token: Option<&'a str>,
) -> Registration<'a> {
    Registration {
        localpart,
        password,
        account_type: if password.is_some() {
            AccountType::User
        } else {
            AccountType::Guest
        },
        displayname: None,
        user_type: None,
        registration_token,
        appservice_id: None,
    }
}

/// `/register`'s answer. Named here rather than ruma's type, which writes
/// `"device_id": null` when the login is inhibited: the spec (and sytest's
/// "registration with inhibit_login inhibits login") want no key at all.
#[derive(Serialize)]
struct Registered {
    user_id: OwnedUserId,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_id: Option<String>,
}

/// The registration's answer: the account, and a login on a new device
/// unless the request inhibits it.
async fn login_after(
    s: &AppState,
    req: &register::v3::Request,
    user_id: OwnedUserId,
) -> Result<Json<Registered>> {
    let mut resp = Registered {
        user_id: user_id.clone(),
        access_token: None,
        device_id: None,
    };
    if !req.inhibit_login {
        let session = s
            .sessions
            .create(
                user_id.as_str(),
                req.device_id.as_ref().map(|d| d.as_str()),
                req.initial_device_display_name.as_deref(),
            )
            .await?;
        resp.access_token = Some(session.access_token);
        resp.device_id = Some(session.device_id);
    }
    Ok(Json(resp))
}

async fn available(
    State(s): State<AppState>,
    Ruma(req): Ruma<get_username_availability::v3::Request>,
) -> Result<RumaResponse<get_username_availability::v3::Response>> {
    let lp = s.accounts.validate_localpart(&req.username)?;
    s.appservices
        .check_user_not_reserved(s.accounts.user_id(&lp)?.as_str(), None)?;
    if !s.accounts.is_available(&lp).await? {
        return Err(MatrixError::user_in_use());
    }
    Ok(RumaResponse(get_username_availability::v3::Response::new(
        true,
    )))
}

async fn token_validity(
    State(s): State<AppState>,
    Ruma(req): Ruma<check_registration_token_validity::v1::Request>,
) -> Result<RumaResponse<check_registration_token_validity::v1::Response>> {
    Ok(RumaResponse(
        check_registration_token_validity::v1::Response::new(
            s.registration_tokens.is_valid(&req.token).await?,
        ),
    ))
}
