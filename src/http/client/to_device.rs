//! `PUT /sendToDevice/{eventType}/{txnId}`; delivery is `/sync`'s
//! `to_device` (`services/to_device.rs`).
//!
//! The body is read in place ([`SendBody`]) rather than into ruma's request
//! type: a key share to a large room names a thousand devices, and owning
//! every id and content was the largest part of the send's cost. Its path
//! is ruma's.

use axum::Router;
use axum::extract::{Request, State};
use ruma::api::client::to_device::send_event_to_device;

use crate::error::Result;
use crate::http::extract::{GuestAuth, RumaResponse, json_body_error, path_args, read_body};
use crate::http::{AppState, ruma_route};
use crate::model::to_device::SendBody;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    ruma_route::<send_event_to_device::v3::Request, _, _>(r, send)
}

/// Guests may send too: the spec lists send-to-device among their endpoints.
async fn send(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    req: Request,
) -> Result<RumaResponse<send_event_to_device::v3::Response>> {
    let (mut parts, body) = req.into_parts();
    let args = path_args::<send_event_to_device::v3::Request>(&mut parts, &s).await?;
    let [event_type, txn_id] = args.as_slice() else {
        return Err(crate::error::MatrixError::internal(
            "sendToDevice routed without its two path parameters",
        ));
    };
    let body = read_body(body, &s).await?;
    // A blank body is `{}`, as for every ruma-parsed request (and then lacks
    // `messages`).
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &body
    };
    let parsed: SendBody<'_> =
        serde_json::from_slice(text).map_err(|e| json_body_error(&e, text))?;
    s.to_device
        .send(&r, event_type, txn_id, &parsed.messages)
        .await?;
    Ok(RumaResponse(send_event_to_device::v3::Response::new()))
}
