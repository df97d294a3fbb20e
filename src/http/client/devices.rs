//! `/devices` and `/delete_devices`.

use axum::extract::State;
use axum::{Json, Router};
use ruma::api::client::device::{
    delete_device, delete_devices, get_device, get_devices, update_device,
};
use serde_json::{Value, json};

use crate::error::{MatrixError, Result};
use crate::http::extract::{Auth, GuestAuth, Ruma, RumaResponse, UiaRuma};
use crate::http::{AppState, ruma_route};
use crate::model::devices::Device;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<get_devices::v3::Request, _, _>(r, list);
    let r = ruma_route::<get_device::v3::Request, _, _>(r, get);
    let r = ruma_route::<update_device::v3::Request, _, _>(r, update);
    let r = ruma_route::<delete_device::v3::Request, _, _>(r, delete);
    ruma_route::<delete_devices::v3::Request, _, _>(r, delete_many)
}

/// A device as the spec shapes it. Built by hand rather than with ruma's
/// `Device`, which leaves out unset fields: clients such as matrix-nio require
/// `last_seen_ip` and `last_seen_ts` to be present (null when never seen), as
/// Synapse sends them.
pub(crate) fn device_json(d: Device) -> Value {
    json!({
        "device_id": d.device_id,
        "display_name": d.display_name,
        "last_seen_ip": d.last_seen_ip,
        "last_seen_ts": d.last_seen_ts,
    })
}

fn unknown_device() -> MatrixError {
    MatrixError::not_found("Unknown device")
}

async fn list(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    _: Ruma<get_devices::v3::Request>,
) -> Result<Json<Value>> {
    let devices: Vec<Value> = s
        .sessions
        .devices(&r.user_id)
        .await?
        .into_iter()
        .map(device_json)
        .collect();
    Ok(Json(json!({ "devices": devices })))
}

async fn get(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<get_device::v3::Request>,
) -> Result<Json<Value>> {
    let d = s
        .sessions
        .device(&r.user_id, req.device_id.as_str())
        .await?
        .ok_or_else(unknown_device)?;
    Ok(Json(device_json(d)))
}

async fn update(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<update_device::v3::Request>,
) -> Result<RumaResponse<update_device::v3::Response>> {
    if !s
        .sessions
        .rename_device(
            &r.user_id,
            req.device_id.as_str(),
            req.display_name.as_deref(),
        )
        .await?
    {
        return Err(unknown_device());
    }
    Ok(RumaResponse(update_device::v3::Response::new()))
}

async fn delete(
    State(s): State<AppState>,
    Auth(r): Auth,
    UiaRuma { req, op, .. }: UiaRuma<delete_device::v3::Request>,
) -> Result<RumaResponse<delete_device::v3::Response>> {
    if s.sessions
        .device(&r.user_id, req.device_id.as_str())
        .await?
        .is_none()
    {
        return Err(unknown_device());
    }
    s.uia
        .require_password(req.auth.as_ref(), &op, &r.user_id(), &s.accounts)
        .await?;
    s.sessions
        .delete_devices(&r.user_id, &[req.device_id.to_string()])
        .await?;
    Ok(RumaResponse(delete_device::v3::Response::new()))
}

async fn delete_many(
    State(s): State<AppState>,
    Auth(r): Auth,
    UiaRuma { req, op, .. }: UiaRuma<delete_devices::v3::Request>,
) -> Result<RumaResponse<delete_devices::v3::Response>> {
    s.uia
        .require_password(req.auth.as_ref(), &op, &r.user_id(), &s.accounts)
        .await?;
    let ids: Vec<String> = req.devices.iter().map(|d| d.to_string()).collect();
    s.sessions.delete_devices(&r.user_id, &ids).await?;
    Ok(RumaResponse(delete_devices::v3::Response::new()))
}
