//! `GET /sync`.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::extract::State;
use axum::{Json, Router};
use ruma::api::client::filter::FilterDefinition;
use ruma::api::client::sync::sync_events;

use crate::error::{MatrixError, Result};
use crate::http::extract::{GuestAuth, RumaBoxed};
use crate::http::{AppState, ruma_route};
use crate::services::sync::{SyncRequest, SyncResponse, parse_token, sync};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    ruma_route::<sync_events::v3::Request, _, _>(r, get_sync)
}

async fn get_sync(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    RumaBoxed(req): RumaBoxed<sync_events::v3::Request>,
) -> Result<Json<SyncResponse>> {
    // Taken apart at once, so the parked long-poll does not keep the parsed
    // request's allocation.
    let sync_events::v3::Request {
        filter,
        since,
        full_state,
        timeout,
        set_presence,
        ..
    } = *req;
    let filter = match filter {
        None => default_filter(),
        Some(sync_events::v3::Filter::FilterDefinition(f)) => Arc::new(f),
        // Boxed, so this rare wait does not size the whole handler's future.
        Some(sync_events::v3::Filter::FilterId(id)) => Box::pin(s.filters.get(&r.user_id(), &id))
            .await
            .map(Arc::new)
            .map_err(|_| MatrixError::invalid_param(format!("Unknown filter {id}")))?,
        Some(_) => default_filter(),
    };
    let since = since.as_deref().map(parse_token).transpose()?;
    let body = sync(
        &s,
        &r,
        SyncRequest {
            since,
            set_presence,
            full_state,
            filter,
            timeout: timeout.unwrap_or(Duration::ZERO),
        },
    )
    .await?;
    Ok(Json(body))
}

/// The filter of a sync that names none: shared by every such long-poll.
fn default_filter() -> Arc<FilterDefinition> {
    static DEFAULT: LazyLock<Arc<FilterDefinition>> =
        LazyLock::new(|| Arc::new(FilterDefinition::default()));
    DEFAULT.clone()
}
