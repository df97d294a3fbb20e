//! `/register`, `/register/available` and the registration-token validity check.

use axum::Router;
use axum::extract::State;
use ruma::api::client::account::{
    check_registration_token_validity, get_username_availability, register,
};

use crate::error::{MatrixError, Result};
use crate::http::extract::{LoginRateLimit, Ruma, RumaResponse};
use crate::http::{AppState, ruma_route};
use crate::model::accounts::AccountType;
use crate::services::accounts::Registration;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<register::v3::Request, _, _>(r, register);
    let r = ruma_route::<get_username_availability::v3::Request, _, _>(r, available);
    ruma_route::<check_registration_token_validity::v1::Request, _, _>(r, token_validity)
}

async fn register(
    State(s): State<AppState>,
    _: LoginRateLimit,
    Ruma(req): Ruma<register::v3::Request>,
) -> Result<RumaResponse<register::v3::Response>> {
    let guest = req.kind == register::RegistrationKind::Guest;
    let cfg = &s.config.registration;
    if guest && !cfg.allow_guests {
        return Err(MatrixError::guest_forbidden());
    }
    if !guest && !cfg.enabled {
        return Err(MatrixError::forbidden("Registration is disabled"));
    }
    let (localpart, token) = if guest {
        (None, None)
    } else {
        // Check the request itself before asking the client to authenticate,
        // as Synapse does, so the user learns of a taken name first.
        let localpart = match &req.username {
            Some(u) => {
                let lp = s.accounts.validate_localpart(u)?;
                if !s.accounts.is_available(&lp).await? {
                    return Err(MatrixError::user_in_use());
                }
                Some(lp)
            }
            None => None,
        };
        match req.password.as_deref() {
            None | Some("") => return Err(MatrixError::missing_param("Missing password")),
            Some(p) => crate::services::passwords::validate(p)?,
        }
        let token = s
            .uia
            .require_registration(
                req.auth.as_ref(),
                cfg.requires_token,
                &s.registration_tokens,
            )
            .await?;
        (localpart, token)
    };
    let user_id = s
        .accounts
        .register(Registration {
            localpart: localpart.as_deref(),
            password: if guest { None } else { req.password.as_deref() },
            account_type: if guest {
                AccountType::Guest
            } else {
                AccountType::User
            },
            displayname: None,
            user_type: None,
            registration_token: token.as_deref(),
        })
        .await?;
    tracing::info!(%user_id, guest, "registered a new account");
    let mut resp = register::v3::Response::new(user_id.clone());
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
        resp.device_id = Some(session.device_id.into());
    }
    Ok(RumaResponse(resp))
}

async fn available(
    State(s): State<AppState>,
    Ruma(req): Ruma<get_username_availability::v3::Request>,
) -> Result<RumaResponse<get_username_availability::v3::Response>> {
    let lp = s.accounts.validate_localpart(&req.username)?;
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
