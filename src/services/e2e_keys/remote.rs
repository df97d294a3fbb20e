//! Other servers' users' devices and keys: asked of their server
//! (`/user/keys/query`, `/user/keys/claim`, `/user/devices/{userId}`), kept
//! in `remote_devices` and `remote_cross_signing_keys` (a full list each
//! time one is fetched), and answered from there when their server does
//! not answer. A server that fails with nothing stored goes to `failures`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ruma::api::federation::device::get_devices;
use ruma::api::federation::keys::{claim_keys, get_keys};
use ruma::{OwnedDeviceId, OwnedServerName, OwnedUserId, UserId};
use serde_json::{Value, json};

use super::{E2eKeys, with_unsigned};
use crate::error::{MatrixError, Result};
use crate::services::federation::{Client, FederationError};
use crate::services::key_cache::UserKeys;
use crate::storage::remote_devices::RemoteDeviceList;

/// How long `/keys/query` and `/keys/claim` wait for other servers unless
/// the request says (the spec's default `timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A server's failure as `/keys/query` and `/keys/claim` report it (as
/// Synapse: the remote status, else 503).
fn failure(e: &FederationError) -> Value {
    let status = match e {
        FederationError::Remote { status, .. } => status.as_u16(),
        _ => 503,
    };
    json!({ "status": status, "message": e.to_string() })
}

fn timed_out() -> Value {
    json!({ "status": 503, "message": "Timed out waiting for the server" })
}

/// The keys a `/user/keys/query` or `/user/devices` answer lists for
/// `user`, checked (each device's keys name the user and device) and
/// without `unsigned` (the display name is kept apart).
fn list_of(
    user: &UserId,
    devices: impl IntoIterator<Item = (String, Option<String>, Value)>,
    master: Option<Value>,
    self_signing: Option<Value>,
) -> RemoteDeviceList {
    let mut list = RemoteDeviceList::default();
    for (device_id, name, mut keys) in devices {
        if keys["user_id"] != user.as_str() || keys["device_id"] != device_id.as_str() {
            continue;
        }
        if let Some(obj) = keys.as_object_mut() {
            obj.remove("unsigned");
        }
        list.devices.push((device_id, name, keys.to_string()));
    }
    for (kind, key) in [("master", master), ("self_signing", self_signing)] {
        if let Some(key) = key
            && key["user_id"] == user.as_str()
        {
            list.cross_signing.push((kind.to_owned(), key.to_string()));
        }
    }
    list
}

/// A stored or fetched list as `/keys/query`'s fragment.
fn user_keys(list: &RemoteDeviceList) -> Result<UserKeys> {
    let mut keys = UserKeys::default();
    for (device_id, name, json) in &list.devices {
        keys.devices
            .push((device_id.clone(), with_unsigned(json, name.as_deref())?));
    }
    for (kind, json) in &list.cross_signing {
        let value: Value = serde_json::from_str(json).map_err(MatrixError::internal)?;
        let id = value["keys"]
            .as_object()
            .and_then(|k| k.keys().next().cloned())
            .unwrap_or_default();
        let raw = serde_json::value::RawValue::from_string(json.clone())
            .map_err(MatrixError::internal)?;
        match kind.as_str() {
            "master" => keys.master = Some((id, raw)),
            "self_signing" => keys.self_signing = Some((id, raw)),
            _ => {}
        }
    }
    Ok(keys)
}

/// `requested` split by the users' servers.
fn by_server<T: Clone>(
    requested: &BTreeMap<OwnedUserId, T>,
) -> BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, T>> {
    let mut out: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, T>> = BTreeMap::new();
    for (user, value) in requested {
        out.entry(user.server_name().to_owned())
            .or_default()
            .insert(user.clone(), value.clone());
    }
    out
}

/// What other servers answered for `/keys/query`.
pub(super) struct RemoteAnswer {
    pub keys: Vec<(OwnedUserId, Arc<UserKeys>)>,
    pub failures: BTreeMap<String, Value>,
}

impl E2eKeys {
    fn client(&self) -> Option<&Arc<Client>> {
        self.federation.as_ref()
    }

    /// The remote users' keys, each server asked once (all at once, within
    /// `timeout`); a full list fetched is stored; a server that fails
    /// answers from what is stored, else goes to `failures`.
    pub(super) async fn query_remote(
        &self,
        users: &BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
        timeout: Duration,
    ) -> Result<RemoteAnswer> {
        let asked = by_server(users)
            .into_iter()
            .map(|(server, users)| async move {
                let answer = match self.client() {
                    None => Err(None),
                    Some(client) => {
                        let request = get_keys::v1::Request::new(users.clone());
                        match tokio::time::timeout(timeout, client.send(&server, request)).await {
                            Ok(Ok(r)) => Ok(r),
                            Ok(Err(e)) => Err(Some(failure(&e))),
                            Err(_) => Err(Some(timed_out())),
                        }
                    }
                };
                (server, users, answer)
            });
        let mut out = RemoteAnswer {
            keys: Vec::new(),
            failures: BTreeMap::new(),
        };
        for (server, users, answer) in futures_util::future::join_all(asked).await {
            match answer {
                Ok(response) => {
                    for (user, wanted) in &users {
                        let raw = |m: &BTreeMap<OwnedUserId, ruma::serde::Raw<_>>| {
                            m.get(user)
                                .and_then(|r| serde_json::from_str::<Value>(r.json().get()).ok())
                        };
                        let devices = response
                            .device_keys
                            .get(user)
                            .into_iter()
                            .flatten()
                            .filter_map(|(d, k)| {
                                Some((
                                    d.to_string(),
                                    None,
                                    serde_json::from_str(k.json().get()).ok()?,
                                ))
                            });
                        let list = list_of(
                            user,
                            devices,
                            raw(&response.master_keys),
                            raw(&response.self_signing_keys),
                        );
                        if wanted.is_empty() {
                            self.store_remote(user, 0, &list).await?;
                        }
                        out.keys.push((user.clone(), Arc::new(user_keys(&list)?)));
                    }
                }
                Err(reason) => {
                    let mut missing = false;
                    for user in users.keys() {
                        match self.storage.remote_devices(user.as_str()).await? {
                            Some(list) => {
                                out.keys.push((user.clone(), Arc::new(user_keys(&list)?)))
                            }
                            None => missing = true,
                        }
                    }
                    if missing {
                        out.failures.insert(
                            server.to_string(),
                            reason.unwrap_or_else(
                                || json!({"status": 503, "message": "Federation is not available"}),
                            ),
                        );
                    }
                }
            }
        }
        Ok(out)
    }

    async fn store_remote(
        &self,
        user: &UserId,
        stream_id: i64,
        list: &RemoteDeviceList,
    ) -> Result<()> {
        let before = self.storage.remote_devices(user.as_str()).await?;
        self.storage
            .replace_remote_devices(user.as_str(), stream_id, crate::storage::now_ms(), list)
            .await?;
        let same = before
            .as_ref()
            .is_some_and(|b| b.devices == list.devices && b.cross_signing == list.cross_signing);
        if !same {
            self.lists.changed(user).await?;
        }
        Ok(())
    }

    /// One-time keys of remote devices, each server asked once within
    /// `timeout`; what they hand out is merged into `resp`.
    pub(super) async fn claim_remote(
        &self,
        requested: &BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, ruma::OneTimeKeyAlgorithm>>,
        timeout: Duration,
        resp: &mut ruma::api::client::keys::claim_keys::v3::Response,
    ) {
        let asked = by_server(requested)
            .into_iter()
            .map(|(server, claims)| async move {
                let answer = match self.client() {
                    None => Err(json!({"status": 503, "message": "Federation is not available"})),
                    Some(client) => {
                        let request = claim_keys::v1::Request::new(claims);
                        match tokio::time::timeout(timeout, client.send(&server, request)).await {
                            Ok(Ok(r)) => Ok(r),
                            Ok(Err(e)) => Err(failure(&e)),
                            Err(_) => Err(timed_out()),
                        }
                    }
                };
                (server, answer)
            });
        for (server, answer) in futures_util::future::join_all(asked).await {
            match answer {
                Ok(r) => {
                    for (user, devices) in r.one_time_keys {
                        if user.server_name() == server {
                            resp.one_time_keys.entry(user).or_default().extend(devices);
                        }
                    }
                }
                Err(reason) => {
                    resp.failures.insert(server.to_string(), reason);
                }
            }
        }
    }

    /// `POST /_dendrite/admin/refreshDevices/{userID}`: `user`'s devices
    /// fetched from their server now (`/user/devices/{userId}`), stored, and
    /// a device-list change recorded (local users sharing a room see it);
    /// the device ids fetched.
    pub async fn refresh_remote_devices(&self, user: &UserId) -> Result<Vec<String>> {
        let Some(client) = self.client() else {
            return Err(MatrixError::unknown(
                http::StatusCode::BAD_GATEWAY,
                "Federation is not available",
            ));
        };
        let response = client
            .send(
                user.server_name(),
                get_devices::v1::Request::new(user.to_owned()),
            )
            .await
            .map_err(|e| e.to_client("Failed to fetch the devices"))?;
        if response.user_id != user {
            return Err(MatrixError::unknown(
                http::StatusCode::BAD_GATEWAY,
                "The server answered for another user",
            ));
        }
        let devices = response.devices.iter().filter_map(|d| {
            Some((
                d.device_id.to_string(),
                d.device_display_name.clone(),
                serde_json::from_str(d.keys.json().get()).ok()?,
            ))
        });
        let json = |k: &Option<ruma::serde::Raw<_>>| {
            k.as_ref().and_then(|r: &ruma::serde::Raw<_>| {
                serde_json::from_str::<Value>(r.json().get()).ok()
            })
        };
        let list = list_of(
            user,
            devices,
            json(&response.master_key),
            json(&response.self_signing_key),
        );
        let stream_id = i64::try_from(u64::from(response.stream_id)).unwrap_or(i64::MAX);
        self.store_remote(user, stream_id, &list).await?;
        Ok(list.devices.iter().map(|(id, _, _)| id.clone()).collect())
    }
}
