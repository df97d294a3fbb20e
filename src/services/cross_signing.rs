//! Cross-signing: `POST /keys/device_signing/upload` (a user's master,
//! self-signing and user-signing keys), `POST /keys/signatures/upload`
//! (signatures of devices and master keys made after the keys were
//! uploaded), and what `/keys/query` adds of both.
//!
//! Signatures are checked with ruma's ed25519 verification over the
//! canonical JSON of the signed object. A new key or signature is a
//! device-list change of the user ([`DeviceLists`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use ruma::api::client::keys::{upload_signatures, upload_signing_keys};
use ruma::encryption::CrossSigningKey;
use ruma::serde::Raw;
use ruma::serde::base64::{Base64, Standard};
use ruma::signatures::{SigningKeyAlgorithm, verify_canonical_json_bytes};
use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedUserId, UserId};
use serde_json::{Value, json};

use crate::error::{MatrixError, Result};
use crate::services::e2e_keys::DeviceLists;
use crate::services::stream::Stream;
use crate::storage::Storage;
use crate::storage::cross_signing::{CrossSigningKeyRow, ListChange, SignatureRow};

const MASTER: &str = "master";
const SELF_SIGNING: &str = "self_signing";
const USER_SIGNING: &str = "user_signing";

/// Whether an upload of cross-signing keys needs user-interactive auth.
#[derive(Debug, PartialEq, Eq)]
pub enum UploadAuth {
    /// The same keys are stored already: nothing to do, no auth.
    Unchanged,
    /// The user has no master key yet: the first upload needs no auth.
    FirstUpload,
    /// Existing keys are replaced: auth (password) is needed.
    Replace,
}

pub struct CrossSigning {
    storage: Storage,
    stream: Arc<Stream>,
    lists: Arc<DeviceLists>,
}

impl CrossSigning {
    pub fn new(storage: Storage, stream: Arc<Stream>, lists: Arc<DeviceLists>) -> Self {
        Self {
            storage,
            stream,
            lists,
        }
    }

    /// The user's stored cross-signing keys by type.
    async fn keys_of(&self, user: &UserId) -> Result<BTreeMap<String, CrossSigningKeyRow>> {
        Ok(self
            .storage
            .cross_signing_keys_of(&[user.as_str()])
            .await?
            .into_iter()
            .map(|k| (k.key_type.clone(), k))
            .collect())
    }

    /// Whether `req` needs auth (as Synapse, MSC3967): none for the first
    /// upload or for keys identical to the stored ones.
    pub async fn upload_auth(
        &self,
        user: &UserId,
        req: &upload_signing_keys::v3::Request,
    ) -> Result<UploadAuth> {
        let stored = self.keys_of(user).await?;
        let unchanged = uploaded(req).all(|(ty, raw)| {
            stored.get(ty).is_some_and(|k| {
                serde_json::from_str::<Value>(&k.key_json).ok()
                    == serde_json::from_str::<Value>(raw.json().get()).ok()
            })
        });
        Ok(if unchanged {
            UploadAuth::Unchanged
        } else if !stored.contains_key(MASTER) {
            UploadAuth::FirstUpload
        } else {
            UploadAuth::Replace
        })
    }

    /// `POST /keys/device_signing/upload` (auth already settled): checks
    /// every key (the caller's own, the right usage, one ed25519 key; the
    /// self- and user-signing keys signed by the master key, the uploaded
    /// one or the stored one: 400 `M_MISSING_PARAM` without one, as
    /// Synapse) and stores them all or none.
    pub async fn upload_keys(
        &self,
        user: &UserId,
        req: &upload_signing_keys::v3::Request,
    ) -> Result<()> {
        let stored = self.keys_of(user).await?;
        let master = match &req.master_key {
            Some(raw) => Some(checked_key(user, raw, MASTER)?),
            None => None,
        };
        let master_id = match (&master, stored.get(MASTER)) {
            (Some(m), _) | (None, Some(m)) => Some(m.key_id.clone()),
            (None, None) => None,
        };
        let mut rows: Vec<CrossSigningKeyRow> = master.into_iter().collect();
        for (ty, raw) in [
            (SELF_SIGNING, &req.self_signing_key),
            (USER_SIGNING, &req.user_signing_key),
        ] {
            let Some(raw) = raw else { continue };
            let key = checked_key(user, raw, ty)?;
            let Some(master_id) = &master_id else {
                return Err(MatrixError::missing_param(format!(
                    "No master key available to verify the {ty} key"
                )));
            };
            let object = object_of(&key.key_json)?;
            if verify(&object, user.as_str(), master_id, master_id).is_err() {
                return Err(MatrixError::invalid_signature(format!(
                    "Invalid signature on the {ty} key"
                )));
            }
            rows.push(key);
        }
        if rows.is_empty() {
            return Ok(());
        }
        // A new user-signing key alone concerns only its owner (as Synapse).
        let public = rows.iter().any(|k| k.key_type != USER_SIGNING);
        let (r, only_for) = if public {
            (self.lists.reserve_change(user).await?, None)
        } else {
            (self.lists.reserve_private_change(user), Some(user.as_str()))
        };
        let change = ListChange {
            user_id: user.as_str(),
            at: r.pos(),
            only_for,
        };
        let stored = self
            .storage
            .store_cross_signing_keys(user.as_str(), &rows, &change)
            .await;
        self.lists.forget_keys(user.as_str());
        self.stream.complete(r);
        Ok(stored?)
    }

    /// `POST /keys/signatures/upload`: each signature made by the caller's
    /// keys is checked and stored; those that fail are answered per key in
    /// `failures` (the others are stored).
    pub async fn upload_signatures(
        &self,
        user: &UserId,
        signed: &BTreeMap<OwnedUserId, upload_signatures::v3::SignedKeys>,
    ) -> Result<upload_signatures::v3::Response> {
        let own = self.keys_of(user).await?;
        let mut rows = Vec::new();
        let mut failures: BTreeMap<OwnedUserId, BTreeMap<String, Value>> = BTreeMap::new();
        for (target, keys) in signed {
            let targets = if target == user {
                own.clone()
            } else {
                self.keys_of(target).await?
            };
            for (key_id, json) in keys.iter() {
                let found = match object_of(json.get()) {
                    Ok(object) => {
                        self.check_signature(user, (target, &targets), &own, key_id, &object)
                            .await
                    }
                    Err(e) => Err(e),
                };
                match found {
                    Ok(found) => rows.extend(found),
                    Err(e) => {
                        failures.entry(target.clone()).or_default().insert(
                            key_id.to_owned(),
                            json!({
                                "errcode": e.errcode(),
                                "error": e.message(),
                            }),
                        );
                    }
                }
            }
        }
        if !rows.is_empty() {
            self.store_signatures(user, &rows).await?;
        }
        let mut resp = upload_signatures::v3::Response::new();
        resp.failures = serde_json::from_value(json!(failures)).map_err(MatrixError::internal)?;
        Ok(resp)
    }

    /// Stores signatures made by `user` with the device-list changes they
    /// make: of `user`'s own keys, seen by all who share a room with them;
    /// of another user's key, seen by `user` alone (as Synapse).
    async fn store_signatures(&self, user: &UserId, rows: &[SignatureRow]) -> Result<()> {
        let mut targets: Vec<&str> = rows.iter().map(|r| r.target_user_id.as_str()).collect();
        targets.sort_unstable();
        targets.dedup();
        let mut reserved = Vec::new();
        let mut changes = Vec::new();
        for target in targets {
            let (r, only_for) = if target == user.as_str() {
                // A failure drops (and so finishes) those reserved before.
                (self.lists.reserve_change(user).await?, None)
            } else {
                (self.lists.reserve_private_change(user), Some(user.as_str()))
            };
            changes.push(ListChange {
                user_id: target,
                at: r.pos(),
                only_for,
            });
            reserved.push(r);
        }
        let stored = self
            .storage
            .store_cross_signing_signatures(rows, &changes)
            .await;
        // The targets' answers change (one signed by another user is kept
        // with the target's, shown to the signer alone).
        for change in &changes {
            self.lists.forget_keys(change.user_id);
        }
        self.stream.complete_many(reserved);
        Ok(stored?)
    }

    /// The signatures to store of one signed key `key_id` of `target`: a
    /// device of the caller's signed by their self-signing key, the
    /// caller's master key signed by their devices, or another user's
    /// master key signed by the caller's user-signing key.
    async fn check_signature(
        &self,
        user: &UserId,
        (target, target_keys): (&UserId, &BTreeMap<String, CrossSigningKeyRow>),
        own: &BTreeMap<String, CrossSigningKeyRow>,
        key_id: &str,
        object: &CanonicalJsonObject,
    ) -> Result<Vec<SignatureRow>> {
        let master = target_keys.get(MASTER);
        if target != user {
            let usk = own
                .get(USER_SIGNING)
                .ok_or_else(|| MatrixError::not_found("No user-signing key found"))?;
            let master = master
                .filter(|m| m.key_id == key_id)
                .ok_or_else(|| MatrixError::not_found("Unknown master key"))?;
            same_content(object, &master.key_json)?;
            let signer = format!("ed25519:{}", usk.key_id);
            let signature = verify(object, user.as_str(), &signer, &usk.key_id)?;
            return Ok(vec![row(target, key_id, user, signer, signature)]);
        }
        if let Some(master) = master.filter(|m| m.key_id == key_id) {
            // The caller's devices sign their master key.
            same_content(object, &master.key_json)?;
            let by_devices = signatures_by(object, user)
                .into_iter()
                .filter(|(signer, _)| *signer != format!("ed25519:{key_id}"));
            let mut out = Vec::new();
            for (signer, _) in by_devices {
                let device = signer.strip_prefix("ed25519:").unwrap_or_default();
                let public = self.device_ed25519(user, device).await?.ok_or_else(|| {
                    MatrixError::invalid_signature("Signature by an unknown device")
                })?;
                let signature = verify(object, user.as_str(), &signer, &public)?;
                out.push(row(target, key_id, user, signer, signature));
            }
            if out.is_empty() {
                return Err(MatrixError::invalid_signature("No device signature"));
            }
            return Ok(out);
        }
        // One of the caller's devices, signed by their self-signing key.
        let ssk = own
            .get(SELF_SIGNING)
            .ok_or_else(|| MatrixError::not_found("No self-signing key found"))?;
        let stored = self
            .storage
            .device_keys_json(user.as_str(), key_id)
            .await?
            .ok_or_else(|| MatrixError::not_found("Unknown device"))?;
        same_content(object, &stored)?;
        let signer = format!("ed25519:{}", ssk.key_id);
        let signature = verify(object, user.as_str(), &signer, &ssk.key_id)?;
        Ok(vec![row(target, key_id, user, signer, signature)])
    }

    /// A device's ed25519 public key from its stored device keys.
    async fn device_ed25519(&self, user: &UserId, device: &str) -> Result<Option<String>> {
        let Some(json) = self.storage.device_keys_json(user.as_str(), device).await? else {
            return Ok(None);
        };
        let keys: Value = serde_json::from_str(&json).map_err(MatrixError::internal)?;
        Ok(keys["keys"][format!("ed25519:{device}")]
            .as_str()
            .map(str::to_owned))
    }
}

/// The keys an upload carries, by type.
fn uploaded(
    req: &upload_signing_keys::v3::Request,
) -> impl Iterator<Item = (&'static str, &Raw<CrossSigningKey>)> {
    [
        (MASTER, &req.master_key),
        (SELF_SIGNING, &req.self_signing_key),
        (USER_SIGNING, &req.user_signing_key),
    ]
    .into_iter()
    .filter_map(|(ty, k)| k.as_ref().map(|k| (ty, k)))
}

/// An uploaded cross-signing key, checked: it parses, is `user`'s, has
/// usage `ty` and exactly one ed25519 key (400 `M_INVALID_PARAM`).
fn checked_key(user: &UserId, raw: &Raw<CrossSigningKey>, ty: &str) -> Result<CrossSigningKeyRow> {
    raw.deserialize()
        .map_err(|e| MatrixError::bad_json(format!("Invalid {ty} key: {e}")))?;
    let mut value: serde_json::Map<String, Value> = serde_json::from_str(raw.json().get())
        .map_err(|e| MatrixError::bad_json(format!("Invalid {ty} key: {e}")))?;
    value.remove("unsigned");
    if value.get("user_id").and_then(Value::as_str) != Some(user.as_str()) {
        return Err(MatrixError::invalid_param(format!(
            "The {ty} key must be for the requester's own user"
        )));
    }
    let usage_ok = value["usage"]
        .as_array()
        .is_some_and(|u| u.iter().any(|x| x.as_str() == Some(ty)));
    if !usage_ok {
        return Err(MatrixError::invalid_param(format!(
            "Invalid {ty} key usage"
        )));
    }
    let keys = value["keys"].as_object().cloned().unwrap_or_default();
    let key_id = match keys.iter().next() {
        Some((id, Value::String(public)))
            if keys.len() == 1 && id.strip_prefix("ed25519:") == Some(public.as_str()) =>
        {
            public.clone()
        }
        _ => {
            return Err(MatrixError::invalid_param(format!(
                "The {ty} key must hold one ed25519 key, named by itself"
            )));
        }
    };
    Ok(CrossSigningKeyRow {
        user_id: user.to_string(),
        key_type: ty.to_owned(),
        key_id,
        key_json: serde_json::to_string(&value).map_err(MatrixError::internal)?,
    })
}

fn object_of(json: &str) -> Result<CanonicalJsonObject> {
    serde_json::from_str(json)
        .map_err(|e| MatrixError::bad_json(format!("Invalid signed key: {e}")))
}

/// 400 `M_UNKNOWN` when the signed object is not the stored key
/// (signatures and `unsigned` aside), as Synapse.
fn same_content(object: &CanonicalJsonObject, stored: &str) -> Result<()> {
    let strip = |mut o: CanonicalJsonObject| {
        o.remove("signatures");
        o.remove("unsigned");
        o
    };
    let stored: CanonicalJsonObject =
        serde_json::from_str(stored).map_err(MatrixError::internal)?;
    if strip(object.clone()) != strip(stored) {
        return Err(MatrixError::unknown(
            http::StatusCode::BAD_REQUEST,
            "Key does not match",
        ));
    }
    Ok(())
}

/// `(key id, signature)` of `user`'s signatures on `object`.
fn signatures_by(object: &CanonicalJsonObject, user: &UserId) -> Vec<(String, String)> {
    let Some(CanonicalJsonValue::Object(sigs)) = object.get("signatures") else {
        return Vec::new();
    };
    let Some(CanonicalJsonValue::Object(mine)) = sigs.get(user.as_str()) else {
        return Vec::new();
    };
    mine.iter()
        .filter_map(|(k, v)| match v {
            CanonicalJsonValue::String(s) => Some((k.clone(), s.clone())),
            _ => None,
        })
        .collect()
}

/// Verifies `signer`'s signature `key_id` (`ed25519:...`) on `object`
/// against `public` (unpadded base64); the signature when valid, 400
/// `M_INVALID_SIGNATURE` otherwise (missing included).
fn verify(
    object: &CanonicalJsonObject,
    signer: &str,
    key_id: &str,
    public: &str,
) -> Result<String> {
    let key_id = if key_id.starts_with("ed25519:") {
        key_id.to_owned()
    } else {
        format!("ed25519:{key_id}")
    };
    let invalid = || MatrixError::invalid_signature("Invalid signature");
    let Ok(user) = UserId::parse(signer) else {
        return Err(invalid());
    };
    let signature = signatures_by(object, &user)
        .into_iter()
        .find(|(k, _)| *k == key_id)
        .map(|(_, s)| s)
        .ok_or_else(invalid)?;
    let public = Base64::<Standard>::parse(public).map_err(|_| invalid())?;
    let raw_sig = Base64::<Standard>::parse(&signature).map_err(|_| invalid())?;
    let canonical =
        ruma::signatures::to_canonical_json_string_for_signing(object).map_err(|_| invalid())?;
    verify_canonical_json_bytes(
        &SigningKeyAlgorithm::Ed25519,
        public.as_bytes(),
        raw_sig.as_bytes(),
        canonical.as_bytes(),
    )
    .map_err(|_| invalid())?;
    Ok(signature)
}

fn row(
    target: &UserId,
    key_id: &str,
    signer: &UserId,
    signer_key_id: String,
    signature: String,
) -> SignatureRow {
    SignatureRow {
        target_user_id: target.to_string(),
        target_key_id: key_id.to_owned(),
        signer_user_id: signer.to_string(),
        signer_key_id,
        signature,
    }
}
