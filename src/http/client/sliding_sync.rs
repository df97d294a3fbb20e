//! `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`:
//! simplified sliding sync (MSC4186).

use axum::Router;
use axum::extract::{Request, State};
use ruma::api::client::sync::sync_events::v5;

use crate::error::Result;
use crate::http::extract::{Auth, RumaResponse};
use crate::http::{AppState, ruma_route};
use crate::services::sliding_sync::{ExtraFilters, SlidingRequest, sliding_sync};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    ruma_route::<v5::Request, _, _>(r, post_sync)
}

/// ruma's request type, and the list filters it leaves out (`spaces`,
/// `tags`, `not_tags`) read from the body.
async fn post_sync(
    State(s): State<AppState>,
    Auth(r): Auth,
    req: Request,
) -> Result<RumaResponse<v5::Response>> {
    let (parsed, body) = super::ruma_and_body::<v5::Request>(&s, req, |_| false).await?;
    let extra_filters = ExtraFilters::from_body(&body);
    drop(body);
    let answer = Box::pin(sliding_sync(
        &s,
        &r,
        SlidingRequest {
            req: parsed,
            extra_filters,
        },
    ))
    .await?;
    Ok(RumaResponse(answer))
}
