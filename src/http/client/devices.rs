//! `/devices` and `/delete_devices`.

use axum::Router;
use axum::extract::State;
use ruma::api::client::device::{
    Device, delete_device, delete_devices, get_device, get_devices, update_device,
};
use ruma::{MilliSecondsSinceUnixEpoch, OwnedDeviceId, UInt};

use crate::error::{MatrixError, Result};
use crate::http::extract::{Auth, Ruma, RumaResponse};
use crate::http::{AppState, ruma_route};
use crate::storage::DeviceRow;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<get_devices::v3::Request, _, _>(r, list);
    let r = ruma_route::<get_device::v3::Request, _, _>(r, get);
    let r = ruma_route::<update_device::v3::Request, _, _>(r, update);
    let r = ruma_route::<delete_device::v3::Request, _, _>(r, delete);
    ruma_route::<delete_devices::v3::Request, _, _>(r, delete_many)
}

pub(crate) fn to_device(d: DeviceRow) -> Device {
    let mut dev = Device::new(OwnedDeviceId::from(d.device_id));
    dev.display_name = d.display_name;
    dev.last_seen_ip = d.last_seen_ip;
    dev.last_seen_ts = d
        .last_seen_ts
        .and_then(|ts| UInt::try_from(ts).ok())
        .map(MilliSecondsSinceUnixEpoch);
    dev
}

fn unknown_device() -> MatrixError {
    MatrixError::not_found("Unknown device")
}

async fn list(
    State(s): State<AppState>,
    Auth(r): Auth,
    _: Ruma<get_devices::v3::Request>,
) -> Result<RumaResponse<get_devices::v3::Response>> {
    let devices = s
        .sessions
        .devices(&r.user_id)
        .await?
        .into_iter()
        .map(to_device)
        .collect();
    Ok(RumaResponse(get_devices::v3::Response::new(devices)))
}

async fn get(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<get_device::v3::Request>,
) -> Result<RumaResponse<get_device::v3::Response>> {
    let d = s
        .sessions
        .device(&r.user_id, req.device_id.as_str())
        .await?
        .ok_or_else(unknown_device)?;
    Ok(RumaResponse(get_device::v3::Response::new(to_device(d))))
}

async fn update(
    State(s): State<AppState>,
    Auth(r): Auth,
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
    Ruma(req): Ruma<delete_device::v3::Request>,
) -> Result<RumaResponse<delete_device::v3::Response>> {
    if s.sessions
        .device(&r.user_id, req.device_id.as_str())
        .await?
        .is_none()
    {
        return Err(unknown_device());
    }
    s.uia
        .require_password(req.auth.as_ref(), &r.user_id(), &s.accounts)
        .await?;
    s.sessions
        .delete_devices(&r.user_id, &[req.device_id.to_string()])
        .await?;
    Ok(RumaResponse(delete_device::v3::Response::new()))
}

async fn delete_many(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<delete_devices::v3::Request>,
) -> Result<RumaResponse<delete_devices::v3::Response>> {
    s.uia
        .require_password(req.auth.as_ref(), &r.user_id(), &s.accounts)
        .await?;
    let ids: Vec<String> = req.devices.iter().map(|d| d.to_string()).collect();
    s.sessions.delete_devices(&r.user_id, &ids).await?;
    Ok(RumaResponse(delete_devices::v3::Response::new()))
}
