//! Third-party networks (`/thirdparty/...`): the protocols application
//! services bridge to. Myelin has no application services yet, so it
//! answers as Synapse without any: no protocols, no users, no locations.

use axum::{Json, Router};
use ruma::api::client::thirdparty::{
    get_location_for_protocol, get_location_for_room_alias, get_protocol, get_protocols,
    get_user_for_protocol, get_user_for_user_id,
};
use serde_json::{Value, json};

use crate::error::{MatrixError, Result};
use crate::http::extract::{GuestAuth, Ruma, RumaResponse};
use crate::http::{AppState, ruma_route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<get_protocols::v3::Request, _, _>(r, protocols);
    let r = ruma_route::<get_protocol::v3::Request, _, _>(r, protocol);
    // The lookups answer `[]` whatever the query (Synapse asks each
    // interested application service, and there are none), so the query
    // is not parsed: a missing `alias` or `userid` is no error there.
    let r = ruma_route::<get_location_for_protocol::v3::Request, _, _>(r, nothing_found);
    let r = ruma_route::<get_location_for_room_alias::v3::Request, _, _>(r, nothing_found);
    let r = ruma_route::<get_user_for_protocol::v3::Request, _, _>(r, nothing_found);
    ruma_route::<get_user_for_user_id::v3::Request, _, _>(r, nothing_found)
}

async fn protocols(
    GuestAuth(_): GuestAuth,
    _: Ruma<get_protocols::v3::Request>,
) -> RumaResponse<get_protocols::v3::Response> {
    RumaResponse(get_protocols::v3::Response::new(Default::default()))
}

async fn protocol(
    GuestAuth(_): GuestAuth,
    Ruma(req): Ruma<get_protocol::v3::Request>,
) -> Result<Json<Value>> {
    Err(MatrixError::not_found(format!(
        "Unknown protocol {}",
        req.protocol
    )))
}

async fn nothing_found(GuestAuth(_): GuestAuth) -> Json<Value> {
    Json(json!([]))
}
