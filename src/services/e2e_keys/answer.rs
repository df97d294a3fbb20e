//! The body of a `/keys/query` answer, written straight from each user's
//! cached fragments ([`UserKeys`]): no per-request maps of user and device
//! ids, no copy of a fragment unless the requester's own signatures have to
//! be merged into it. The shape is ruma's `get_keys::v3::Response`: empty
//! top-level maps are left out; a requested user with no (matching) devices
//! gets an empty device map.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use ruma::{OwnedDeviceId, UserId};
use serde::ser::{Error as _, Serialize, SerializeMap, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::error::Result;
use crate::services::key_cache::{UserKeys, merged};
use crate::storage::cross_signing::SignatureRow;

/// One local user's part of the answer.
pub(super) struct Found<'a> {
    pub user: &'a UserId,
    /// The devices asked for; empty: all of them.
    pub wanted: &'a [OwnedDeviceId],
    pub keys: Arc<UserKeys>,
}

/// What `/keys/query` answers `requester`.
pub struct KeysAnswer<'a> {
    /// `None`: another server asks (no user-signing keys, no one's own
    /// signatures of others' keys).
    pub(super) requester: Option<&'a UserId>,
    pub(super) failures: BTreeMap<String, Value>,
    pub(super) found: Vec<Found<'a>>,
}

/// Which cross-signing key a top-level map holds.
#[derive(Clone, Copy)]
enum CrossSigning {
    Master,
    SelfSigning,
    /// Shown to its owner alone.
    UserSigning,
}

impl KeysAnswer<'_> {
    /// The answer as `get_keys::v3::Response` JSON text.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string(self).map_err(crate::error::MatrixError::internal)
    }

    fn cross_signing<'k>(
        &self,
        found: &'k Found<'_>,
        kind: CrossSigning,
    ) -> Option<&'k (String, Box<RawValue>)> {
        match kind {
            CrossSigning::Master => found.keys.master.as_ref(),
            CrossSigning::SelfSigning => found.keys.self_signing.as_ref(),
            CrossSigning::UserSigning if Some(found.user) == self.requester => {
                found.keys.user_signing.as_ref()
            }
            CrossSigning::UserSigning => None,
        }
    }

    /// `json` of key `key_id` with the signatures the requester made of it
    /// merged in (borrowed when there are none).
    fn with_requesters<'k>(
        &self,
        found: &Found<'_>,
        key_id: &str,
        json: &'k RawValue,
    ) -> Result<Cow<'k, RawValue>> {
        let theirs: Vec<SignatureRow> = found
            .keys
            .by_others
            .get(self.requester.map_or("", |r| r.as_str()))
            .into_iter()
            .flatten()
            .filter(|s| s.target_key_id == key_id)
            .cloned()
            .collect();
        if theirs.is_empty() {
            Ok(Cow::Borrowed(json))
        } else {
            Ok(Cow::Owned(merged(json.get(), Some(&theirs))?))
        }
    }
}

impl Serialize for KeysAnswer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        if !self.failures.is_empty() {
            map.serialize_entry("failures", &self.failures)?;
        }
        if !self.found.is_empty() {
            map.serialize_entry("device_keys", &DeviceKeys(self))?;
        }
        for (field, kind) in [
            ("master_keys", CrossSigning::Master),
            ("self_signing_keys", CrossSigning::SelfSigning),
            ("user_signing_keys", CrossSigning::UserSigning),
        ] {
            if self
                .found
                .iter()
                .any(|f| self.cross_signing(f, kind).is_some())
            {
                map.serialize_entry(field, &CrossSigningKeys(self, kind))?;
            }
        }
        map.end()
    }
}

/// `device_keys`: user → device → keys.
struct DeviceKeys<'r, 'a>(&'r KeysAnswer<'a>);

impl Serialize for DeviceKeys<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.found.len()))?;
        for found in &self.0.found {
            map.serialize_entry(found.user.as_str(), &Devices(self.0, found))?;
        }
        map.end()
    }
}

/// One user's devices.
struct Devices<'r, 'a>(&'r KeysAnswer<'a>, &'r Found<'a>);

impl Serialize for Devices<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let Devices(answer, found) = *self;
        let mut map = s.serialize_map(None)?;
        for (device, json) in &found.keys.devices {
            if !found.wanted.is_empty() && !found.wanted.iter().any(|d| d.as_str() == device) {
                continue;
            }
            let json = answer
                .with_requesters(found, device, json)
                .map_err(|e| S::Error::custom(format!("{e:?}")))?;
            map.serialize_entry(device, &*json)?;
        }
        map.end()
    }
}

/// One of the cross-signing maps: user → key.
struct CrossSigningKeys<'r, 'a>(&'r KeysAnswer<'a>, CrossSigning);

impl Serialize for CrossSigningKeys<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let CrossSigningKeys(answer, kind) = *self;
        let mut map = s.serialize_map(None)?;
        for found in &answer.found {
            if let Some((key_id, json)) = answer.cross_signing(found, kind) {
                let json = answer
                    .with_requesters(found, key_id, json)
                    .map_err(|e| S::Error::custom(format!("{e:?}")))?;
                map.serialize_entry(found.user.as_str(), &*json)?;
            }
        }
        map.end()
    }
}
