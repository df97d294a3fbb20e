//! What `/keys/query` answers for each local user, kept in memory
//! (`caches.device_keys` users, least recently used first out): their
//! devices' keys with `unsigned` added and their own signatures merged,
//! and their cross-signing keys likewise, as ready-to-write JSON.
//!
//! Coherence: [`DeviceLists`](crate::services::e2e_keys::DeviceLists)
//! forgets a user's entry right after every committed write that changes
//! what `/keys/query` answers for them (each such write is a device-list
//! change). A query that read the database before such a write must not
//! store what it read after the write forgot the entry: each forgetting
//! takes a generation, and an entry read at generation `g` is stored only
//! when the user was not forgotten after `g`.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::value::RawValue;

use crate::error::{MatrixError, Result};
use crate::storage::cross_signing::SignatureRow;

/// One user's part of a `/keys/query` answer, the same for every
/// requester, and the signatures of their keys only a signer sees.
#[derive(Debug, Default)]
pub struct UserKeys {
    /// Each device's keys, `unsigned` added, the owner's signatures merged.
    pub devices: Vec<(String, Box<RawValue>)>,
    /// Each cross-signing key's public key and JSON, the owner's
    /// signatures merged.
    pub master: Option<(String, Box<RawValue>)>,
    pub self_signing: Option<(String, Box<RawValue>)>,
    /// Shown to the user alone.
    pub user_signing: Option<(String, Box<RawValue>)>,
    /// Signatures of the user's keys made by other users, by signer: each
    /// is shown only to its signer.
    pub by_others: HashMap<String, Vec<SignatureRow>>,
}

impl UserKeys {
    /// Roughly the bytes the entry holds.
    fn size(&self) -> usize {
        let raw = |r: &Option<(String, Box<RawValue>)>| {
            r.as_ref().map_or(0, |(id, r)| id.len() + r.get().len())
        };
        self.devices
            .iter()
            .map(|(d, k)| d.len() + k.get().len())
            .sum::<usize>()
            + raw(&self.master)
            + raw(&self.self_signing)
            + raw(&self.user_signing)
            + self
                .by_others
                .values()
                .flatten()
                .map(|s| s.signature.len() + s.signer_key_id.len() + s.target_key_id.len())
                .sum::<usize>()
    }
}

struct Inner {
    entries: lru::LruCache<String, Arc<UserKeys>>,
    /// The generation of the last forgetting.
    generation: u64,
    /// The generation each recently forgotten user was forgotten at.
    forgotten: lru::LruCache<String, u64>,
    /// The newest generation among those `forgotten` no longer holds.
    floor: u64,
}

/// See the module.
pub struct KeyCache {
    inner: Mutex<Inner>,
    /// Hits and misses of [`KeyCache::get`].
    pub lookups: crate::metrics::CacheLookups,
}

impl KeyCache {
    pub fn new(users: NonZeroUsize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                entries: lru::LruCache::new(users),
                generation: 0,
                forgotten: lru::LruCache::new(users),
                floor: 0,
            }),
            lookups: crate::metrics::CacheLookups::default(),
        }
    }

    /// The generation to read the database at (before reading it).
    pub fn generation(&self) -> u64 {
        self.inner.lock().generation
    }

    /// The user's entry, if kept.
    pub fn get(&self, user: &str) -> Option<Arc<UserKeys>> {
        let found = self.inner.lock().entries.get(user).cloned();
        self.lookups.of(found)
    }

    /// Keeps `keys`, read from the database at `generation`, unless the
    /// user was forgotten since.
    pub fn put(&self, user: &str, keys: Arc<UserKeys>, generation: u64) {
        let mut inner = self.inner.lock();
        let forgotten_at = inner.forgotten.peek(user).copied().unwrap_or(inner.floor);
        if forgotten_at <= generation {
            inner.entries.put(user.to_owned(), keys);
        }
    }

    /// Forgets the user's entry: call it after the write is committed.
    pub fn forget(&self, user: &str) {
        let mut inner = self.inner.lock();
        inner.generation += 1;
        let generation = inner.generation;
        inner.entries.pop(user);
        if let Some((evicted, at)) = inner.forgotten.push(user.to_owned(), generation)
            && evicted != user
        {
            inner.floor = inner.floor.max(at);
        }
    }

    /// How many users' entries are kept, and roughly their bytes.
    pub fn sizes(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        let bytes = inner.entries.iter().map(|(u, k)| u.len() + k.size()).sum();
        (inner.entries.len(), bytes)
    }
}

/// A key's JSON with stored signatures added to its `signatures`.
pub(crate) fn merged(json: &str, sigs: Option<&Vec<SignatureRow>>) -> Result<Box<RawValue>> {
    let mut value: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(json).map_err(MatrixError::internal)?;
    if let Some(sigs) = sigs {
        let all = value
            .entry("signatures")
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        if let serde_json::Value::Object(all) = all {
            for s in sigs {
                let by = all
                    .entry(s.signer_user_id.clone())
                    .or_insert_with(|| serde_json::Value::Object(Default::default()));
                if let serde_json::Value::Object(by) = by {
                    by.insert(
                        s.signer_key_id.clone(),
                        serde_json::Value::String(s.signature.clone()),
                    );
                }
            }
        }
    }
    serde_json::value::to_raw_value(&value).map_err(MatrixError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(n: usize) -> KeyCache {
        KeyCache::new(NonZeroUsize::new(n).unwrap())
    }

    #[test]
    fn a_read_before_a_forgetting_is_not_kept() {
        let c = cache(4);
        let at = c.generation();
        c.forget("@a:x");
        c.put("@a:x", Arc::default(), at);
        assert!(c.get("@a:x").is_none());
        let at = c.generation();
        c.put("@a:x", Arc::default(), at);
        assert!(c.get("@a:x").is_some());
        c.forget("@a:x");
        assert!(c.get("@a:x").is_none());
    }

    /// With the user's forgetting pushed out of the bounded record, a read
    /// older than any forgetting no longer recorded is still refused.
    #[test]
    fn an_evicted_forgetting_still_refuses_older_reads() {
        let c = cache(1);
        let at = c.generation();
        c.forget("@a:x");
        c.forget("@b:x");
        c.put("@a:x", Arc::default(), at);
        assert!(c.get("@a:x").is_none());
        c.put("@c:x", Arc::default(), c.generation());
        assert!(c.get("@c:x").is_some());
    }
}
