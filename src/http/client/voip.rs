//! `GET /voip/turnServer`: TURN credentials from config `turn`
//! (`services/turn.rs`), `{}` when none are configured, as Synapse.

use axum::extract::State;
use axum::{Json, Router};
use ruma::api::client::voip::get_turn_server_info;
use serde_json::{Value, json};

use crate::error::{MatrixError, Result};
use crate::http::extract::GuestAuth;
use crate::http::{AppState, ruma_route};
use crate::services::turn;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    ruma_route::<get_turn_server_info::v3::Request, _, _>(r, turn_server)
}

async fn turn_server(State(s): State<AppState>, GuestAuth(r): GuestAuth) -> Result<Json<Value>> {
    if r.is_guest() && !s.config.turn.allow_guests {
        return Err(MatrixError::guest_forbidden());
    }
    match turn::credentials(&s.config.turn, &r.user_id, s.clock.now_ms()) {
        Some(c) => Ok(Json(
            serde_json::to_value(c).map_err(MatrixError::internal)?,
        )),
        None => Ok(Json(json!({}))),
    }
}
