//! `GET /_matrix/key/v2/server` (our keys, self-signed) and the notary API:
//! `GET /_matrix/key/v2/query/{serverName}` and `POST /_matrix/key/v2/query`,
//! each server's keys as it signed them, signed by us too
//! (`services/federation/keys.rs`). No request signature is needed.

use axum::extract::State;
use axum::{Json, Router};
use ruma::api::federation::discovery::{get_remote_server_keys, get_remote_server_keys_batch};
use ruma::{CanonicalJsonObject, ServerName};
use serde_json::{Value, json};

use crate::error::{MatrixError, Result};
use crate::http::extract::Ruma;
use crate::http::{AppState, ruma_route};

pub(super) fn routes(router: Router<AppState>) -> Router<AppState> {
    // The paths with a key id that spec r0.1 had and sytest still calls (as
    // Synapse, the key id is ignored: every key is given).
    let router = router
        .route(
            "/_matrix/key/v2/server/{key_id}",
            axum::routing::get(server_keys),
        )
        .route(
            "/_matrix/key/v2/query/{server_name}/{key_id}",
            axum::routing::get(query_one_by_key_id),
        );
    let router = ruma_route::<get_remote_server_keys::v2::Request, _, _>(router, query_one);
    ruma_route::<get_remote_server_keys_batch::v2::Request, _, _>(router, query_batch)
}

/// `{"server_name", "verify_keys", "old_verify_keys", "valid_until_ts",
/// "signatures"}`, signed with the key it lists.
pub(super) async fn server_keys(State(s): State<AppState>) -> Result<Json<Value>> {
    let obj = s
        .federation
        .keys
        .own_keys()
        .map_err(|e| MatrixError::internal(e.to_string()))?;
    Ok(Json(to_value(&obj)?))
}

/// One server's keys: `{"server_keys": [...]}` (empty when none can be had).
async fn query_one(
    State(s): State<AppState>,
    Ruma(req): Ruma<get_remote_server_keys::v2::Request>,
) -> Result<Json<Value>> {
    let min = i64::from(req.minimum_valid_until_ts.get());
    let found = answer(&s, &req.server_name, min).await?;
    Ok(Json(
        json!({ "server_keys": found.into_iter().collect::<Vec<_>>() }),
    ))
}

#[derive(serde::Deserialize)]
struct MinimumValid {
    minimum_valid_until_ts: Option<i64>,
}

/// `GET /_matrix/key/v2/query/{serverName}/{keyId}`: as without the key id.
async fn query_one_by_key_id(
    State(s): State<AppState>,
    axum::extract::Path((server_name, _key_id)): axum::extract::Path<(String, String)>,
    query: std::result::Result<
        axum::extract::Query<MinimumValid>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<Json<Value>> {
    let server = ServerName::parse(&server_name)
        .map_err(|e| MatrixError::invalid_param(format!("Invalid server name: {e}")))?;
    let min = query
        .map_err(|e| MatrixError::invalid_param(e.body_text()))?
        .0
        .minimum_valid_until_ts
        .unwrap_or(0);
    let found = answer(&s, &server, min).await?;
    Ok(Json(
        json!({ "server_keys": found.into_iter().collect::<Vec<_>>() }),
    ))
}

/// Several servers' keys; a criterion's `minimum_valid_until_ts` defaults
/// to now.
async fn query_batch(
    State(s): State<AppState>,
    Ruma(req): Ruma<get_remote_server_keys_batch::v2::Request>,
) -> Result<Json<Value>> {
    let now = s.clock.now_ms();
    let mut out = Vec::new();
    for (server, criteria) in &req.server_keys {
        let min = criteria
            .values()
            .filter_map(|c| c.minimum_valid_until_ts)
            .map(|t| i64::from(t.get()))
            .max()
            .unwrap_or(now);
        out.extend(answer(&s, server, min).await?);
    }
    Ok(Json(json!({ "server_keys": out })))
}

async fn answer(s: &AppState, server: &ServerName, min: i64) -> Result<Option<Value>> {
    match s.federation.keys.notary_answer(server, min).await {
        Ok(Some(obj)) => Ok(Some(to_value(&obj)?)),
        Ok(None) => Ok(None),
        Err(e) => Err(MatrixError::internal(e.to_string())),
    }
}

fn to_value(obj: &CanonicalJsonObject) -> Result<Value> {
    serde_json::to_value(obj).map_err(MatrixError::internal)
}
