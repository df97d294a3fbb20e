//! `GET /sync`.

use std::time::Duration;

use axum::extract::State;
use axum::{Json, Router};
use ruma::api::client::filter::FilterDefinition;
use ruma::api::client::sync::sync_events;

use crate::error::{MatrixError, Result};
use crate::http::extract::{GuestAuth, Ruma};
use crate::http::{AppState, ruma_route};
use crate::services::sync::{SyncRequest, SyncResponse, parse_token, sync};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    ruma_route::<sync_events::v3::Request, _, _>(r, get_sync)
}

async fn get_sync(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<sync_events::v3::Request>,
) -> Result<Json<SyncResponse>> {
    let filter = match req.filter {
        None => FilterDefinition::default(),
        Some(sync_events::v3::Filter::FilterDefinition(f)) => f,
        Some(sync_events::v3::Filter::FilterId(id)) => s
            .filters
            .get(&r.user_id(), &id)
            .await
            .map_err(|_| MatrixError::invalid_param(format!("Unknown filter {id}")))?,
        Some(_) => FilterDefinition::default(),
    };
    let since = req.since.as_deref().map(parse_token).transpose()?;
    let body = sync(
        &s,
        &r,
        SyncRequest {
            since,
            full_state: req.full_state,
            filter,
            timeout: req.timeout.unwrap_or(Duration::ZERO),
        },
    )
    .await?;
    Ok(Json(body))
}
