//! What other servers ask about local users and aliases, each request
//! authenticated ([`Federated`]): `/query/profile`, `/query/directory`,
//! `/user/devices/{userId}`, `/user/keys/query`, `/user/keys/claim`.
//! Users and aliases of other servers are 400 (as Synapse); device names
//! are not shared (Synapse's default `allow_device_name_lookup_over_federation`).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::{Json, Router};
use ruma::api::federation::device::get_devices;
use ruma::api::federation::keys::{claim_keys, get_keys};
use ruma::api::federation::query::{get_profile_information, get_room_information};
use ruma::{OwnedUserId, UserId};
use serde_json::{Map, Value, json};

use super::Federated;
use crate::error::{MatrixError, Result};
use crate::http::extract::{JsonText, RumaResponse};
use crate::http::{AppState, ruma_route};

pub(super) fn routes(router: Router<AppState>) -> Router<AppState> {
    let router = ruma_route::<get_profile_information::v1::Request, _, _>(router, profile);
    let router = ruma_route::<get_room_information::v1::Request, _, _>(router, directory);
    let router = ruma_route::<get_devices::v1::Request, _, _>(router, devices);
    let router = ruma_route::<get_keys::v1::Request, _, _>(router, keys_query);
    ruma_route::<claim_keys::v1::Request, _, _>(router, keys_claim)
}

fn local_only(s: &AppState, user: &UserId) -> Result<()> {
    if s.accounts.is_local(user) {
        Ok(())
    } else {
        Err(MatrixError::invalid_param(
            "User is not hosted on this homeserver",
        ))
    }
}

/// The user's profile, or only `field` of it; 404 `M_NOT_FOUND` for an
/// unknown user.
async fn profile(
    State(s): State<AppState>,
    Federated { req, .. }: Federated<get_profile_information::v1::Request>,
) -> Result<Json<Value>> {
    local_only(&s, &req.user_id)?;
    let p = s.profiles.get(&req.user_id).await?;
    let mut all = Map::new();
    if let Some(name) = p.displayname {
        all.insert("displayname".into(), name.into());
    }
    if let Some(url) = p.avatar_url {
        all.insert("avatar_url".into(), url.into());
    }
    all.extend(s.profiles.fields(&req.user_id).await?);
    if let Some(field) = &req.field {
        all.retain(|k, _| k == field.as_str());
    }
    Ok(Json(Value::Object(all)))
}

/// The room a local alias points at, with this server as the one to join
/// through; 404 `M_NOT_FOUND` for an unknown alias.
async fn directory(
    State(s): State<AppState>,
    Federated { req, .. }: Federated<get_room_information::v1::Request>,
) -> Result<RumaResponse<get_room_information::v1::Response>> {
    if req.room_alias.server_name() != s.server_name {
        return Err(MatrixError::invalid_param(
            "Room alias is not hosted on this homeserver",
        ));
    }
    let room_id = crate::services::directory::resolve_alias(&s, req.room_alias.as_str()).await?;
    Ok(RumaResponse(get_room_information::v1::Response::new(
        room_id,
        vec![s.server_name.clone()],
    )))
}

/// The keys of the requested local users' devices (as `/keys/query`
/// reads them, without device names), master and self-signing keys.
async fn local_keys(
    s: &AppState,
    requested: &BTreeMap<OwnedUserId, Vec<ruma::OwnedDeviceId>>,
) -> Result<Value> {
    let local: BTreeMap<OwnedUserId, Vec<ruma::OwnedDeviceId>> = requested
        .iter()
        .filter(|(u, _)| s.accounts.is_local(u))
        .map(|(u, d)| (u.clone(), d.clone()))
        .collect();
    let answer = s.e2e_keys.query_for_server(&local).await?;
    let mut value: Value =
        serde_json::from_str(&answer.to_json()?).map_err(MatrixError::internal)?;
    if let Some(users) = value.get_mut("device_keys").and_then(Value::as_object_mut) {
        for device in users
            .values_mut()
            .filter_map(Value::as_object_mut)
            .flat_map(|d| d.values_mut())
        {
            if let Some(unsigned) = device.get_mut("unsigned").and_then(Value::as_object_mut) {
                unsigned.remove("device_display_name");
                if unsigned.is_empty()
                    && let Some(obj) = device.as_object_mut()
                {
                    obj.remove("unsigned");
                }
            }
        }
    }
    if let Some(obj) = value.as_object_mut() {
        obj.remove("failures");
        obj.remove("user_signing_keys");
        for key in ["device_keys", "master_keys", "self_signing_keys"] {
            obj.entry(key).or_insert_with(|| json!({}));
        }
    }
    Ok(value)
}

/// `{"user_id", "stream_id", "devices": [{"device_id", "keys"}],
/// "master_key", "self_signing_key"}`; an unknown user has no devices.
async fn devices(
    State(s): State<AppState>,
    Federated { req, .. }: Federated<get_devices::v1::Request>,
) -> Result<Json<Value>> {
    local_only(&s, &req.user_id)?;
    let requested = BTreeMap::from([(req.user_id.clone(), Vec::new())]);
    let keys = local_keys(&s, &requested).await?;
    let user = req.user_id.as_str();
    let devices: Vec<Value> = keys["device_keys"][user]
        .as_object()
        .map(|d| {
            d.iter()
                .map(|(id, k)| json!({ "device_id": id, "keys": k }))
                .collect()
        })
        .unwrap_or_default();
    let mut out = json!({
        "user_id": user,
        "stream_id": s.stream.current(),
        "devices": devices,
    });
    for (from, to) in [
        ("master_keys", "master_key"),
        ("self_signing_keys", "self_signing_key"),
    ] {
        if let Some(k) = keys[from].get(user) {
            out[to] = k.clone();
        }
    }
    Ok(Json(out))
}

/// `{"device_keys", "master_keys", "self_signing_keys"}` of the local
/// users asked for (others are left out).
async fn keys_query(
    State(s): State<AppState>,
    Federated { req, .. }: Federated<get_keys::v1::Request>,
) -> Result<JsonText> {
    let value = local_keys(&s, &req.device_keys).await?;
    Ok(JsonText(value.to_string()))
}

/// One key per requested local device (a one-time key, else its fallback
/// key), as `/keys/claim` hands them out.
async fn keys_claim(
    State(s): State<AppState>,
    Federated { origin, req }: Federated<claim_keys::v1::Request>,
) -> Result<Json<Value>> {
    tracing::debug!(%origin, users = req.one_time_keys.len(), "one-time keys claimed over federation");
    let mut local = req.one_time_keys;
    local.retain(|u, _| s.accounts.is_local(u));
    let claimed = s
        .e2e_keys
        .claim(&local, crate::services::e2e_keys::DEFAULT_TIMEOUT)
        .await?;
    Ok(Json(json!({ "one_time_keys": claimed.one_time_keys })))
}
