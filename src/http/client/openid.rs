//! `POST /user/{userId}/openid/request_token` (`services/openid.rs`); the
//! token is checked by the federation `/openid/userinfo`.

use axum::Router;
use axum::extract::State;
use ruma::api::client::account::request_openid_token;

use crate::error::{MatrixError, Result};
use crate::http::extract::{Auth, Ruma, RumaResponse};
use crate::http::{AppState, ruma_route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    ruma_route::<request_openid_token::v3::Request, _, _>(r, request_token)
}

async fn request_token(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<request_openid_token::v3::Request>,
) -> Result<RumaResponse<request_openid_token::v3::Response>> {
    if req.user_id.as_str() != r.user_id {
        return Err(MatrixError::forbidden(
            "Cannot request tokens for other users.",
        ));
    }
    let issued = s.openid.issue(&r.user_id).await?;
    Ok(RumaResponse(request_openid_token::v3::Response::new(
        issued.access_token,
        ruma::authentication::TokenType::Bearer,
        s.server_name.clone(),
        std::time::Duration::from_secs(issued.expires_in_secs),
    )))
}
