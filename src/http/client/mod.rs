//! Client-Server API handlers, one module per area of the spec.

mod account;
mod account_data;
mod appservice;
mod devices;
mod directory;
mod discovery;
mod filter;
mod key_backup;
mod keys;
mod legacy_sync;
mod media;
mod openid;
mod profile;
mod push;
mod pushers;
mod register;
mod report;
mod room_read;
mod room_upgrade;
pub(crate) mod rooms;
mod search;
mod session;
mod sliding_sync;
mod spaces;
mod sync;
mod thirdparty;
mod threepid;
mod to_device;
mod voip;

use axum::Router;

pub(crate) use media::is_media_upload;

use super::AppState;

pub fn routes() -> Router<AppState> {
    let r = Router::new();
    let r = discovery::routes(r);
    let r = session::routes(r);
    let r = account::routes(r);
    let r = account_data::routes(r);
    let r = register::routes(r);
    let r = report::routes(r);
    let r = devices::routes(r);
    let r = directory::routes(r);
    let r = profile::routes(r);
    let r = push::routes(r);
    let r = pushers::routes(r);
    let r = rooms::routes(r);
    let r = room_read::routes(r);
    let r = room_upgrade::routes(r);
    let r = filter::routes(r);
    let r = search::routes(r);
    let r = spaces::routes(r);
    let r = legacy_sync::routes(r);
    let r = to_device::routes(r);
    let r = key_backup::routes(r);
    let r = keys::routes(r);
    let r = media::routes(r);
    let r = threepid::routes(r);
    let r = thirdparty::routes(r);
    let r = appservice::routes(r);
    let r = openid::routes(r);
    let r = voip::routes(r);
    let r = sliding_sync::routes(r);
    sync::routes(r)
}

/// The request parsed by ruma, and its body's JSON object (empty when the
/// body is not one), which `patch` may change first: for the keys ruma's
/// type drops or requires where Synapse does not.
pub(crate) async fn ruma_and_body<T: ruma::api::IncomingRequest + Send>(
    s: &AppState,
    req: axum::extract::Request,
    patch: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>) -> bool,
) -> crate::error::Result<(T, serde_json::Map<String, serde_json::Value>)> {
    use axum::extract::FromRequest;
    let (parts, body) = req.into_parts();
    let mut bytes = super::extract::read_body(body, s).await?;
    let mut map = match serde_json::from_slice(&bytes) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    if patch(&mut map) {
        bytes = serde_json::to_vec(&map)
            .map_err(crate::error::MatrixError::internal)?
            .into();
    }
    let req = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
    let super::extract::Ruma(parsed) = super::extract::Ruma::<T>::from_request(req, s).await?;
    Ok((parsed, map))
}
