//! `PUT /sendToDevice/{eventType}/{txnId}`; delivery is `/sync`'s
//! `to_device` (`services/to_device.rs`).

use axum::Router;
use axum::extract::State;
use ruma::api::client::to_device::send_event_to_device;

use crate::error::Result;
use crate::http::extract::{GuestAuth, Ruma, RumaResponse};
use crate::http::{AppState, ruma_route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    ruma_route::<send_event_to_device::v3::Request, _, _>(r, send)
}

/// Guests may send too: the spec lists send-to-device among their endpoints.
async fn send(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<send_event_to_device::v3::Request>,
) -> Result<RumaResponse<send_event_to_device::v3::Response>> {
    s.to_device
        .send(
            &r,
            &req.event_type.to_string(),
            req.txn_id.as_str(),
            &req.messages,
        )
        .await?;
    Ok(RumaResponse(send_event_to_device::v3::Response::new()))
}
