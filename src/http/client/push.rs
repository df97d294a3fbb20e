//! `GET /pushrules/` and `GET /pushrules/global/`: the spec's server-default
//! ruleset (user-defined rules come with the rooms issue).

use axum::{Json, Router};
use ruma::api::client::push::{get_pushrules_all, get_pushrules_global_scope};
use ruma::push::Ruleset;
use serde_json::{Value, json};

use crate::error::{MatrixError, Result};
use crate::http::extract::{GuestAuth, Ruma};
use crate::http::{AppState, ruma_route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<get_pushrules_all::v3::Request, _, _>(r, all);
    ruma_route::<get_pushrules_global_scope::v3::Request, _, _>(r, global)
}

/// The user's ruleset with all five kinds present: ruma omits empty kinds,
/// but clients (and Synapse) expect `content`, `room` and `sender` arrays too.
fn ruleset(r: &crate::storage::Requester) -> Result<Value> {
    let mut value = serde_json::to_value(Ruleset::server_default(&r.user_id()))
        .map_err(MatrixError::internal)?;
    let map = value
        .as_object_mut()
        .ok_or_else(|| MatrixError::internal("ruleset is not an object"))?;
    for kind in ["override", "content", "room", "sender", "underride"] {
        map.entry(kind).or_insert(json!([]));
    }
    Ok(value)
}

async fn all(
    GuestAuth(r): GuestAuth,
    _: Ruma<get_pushrules_all::v3::Request>,
) -> Result<Json<Value>> {
    Ok(Json(json!({ "global": ruleset(&r)? })))
}

async fn global(
    GuestAuth(r): GuestAuth,
    _: Ruma<get_pushrules_global_scope::v3::Request>,
) -> Result<Json<Value>> {
    Ok(Json(ruleset(&r)?))
}
