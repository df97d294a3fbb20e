//! `POST /_matrix/client/v1/appservice/{appserviceId}/ping`: an application
//! service asks the homeserver to call its `/_matrix/app/v1/ping`
//! (`services/appservices.rs`), to check both directions work.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use ruma::api::client::appservice::request_ping;

use crate::error::{MatrixError, Result};
use crate::http::extract::{Auth, Ruma, RumaResponse};
use crate::http::{AppState, ruma_route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    ruma_route::<request_ping::v1::Request, _, _>(r, ping)
}

async fn ping(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<request_ping::v1::Request>,
) -> Result<RumaResponse<request_ping::v1::Response>> {
    // As Synapse: only a service's own token may ping it.
    let Some(service) = r
        .app_service
        .as_deref()
        .and_then(|id| s.appservices.all().iter().find(|a| a.id == id))
    else {
        return Err(MatrixError::forbidden(
            "Only application services can use the /appservice/ping endpoint",
        ));
    };
    if service.id != req.appservice_id {
        return Err(MatrixError::forbidden(
            "Mismatching application service ID in path",
        ));
    }
    let ms = s
        .appservices
        .ping(service, req.transaction_id.as_ref().map(|t| t.as_str()))
        .await?;
    Ok(RumaResponse(request_ping::v1::Response::new(
        Duration::from_millis(ms),
    )))
}
