//! Servers' signing keys: ours as published (`GET /_matrix/key/v2/server`),
//! others' fetched from them (or from the configured notaries first),
//! checked (self-signed, for the server asked about, not expired; a
//! notary's answer signed by the notary too), kept in memory and in
//! `server_signing_keys` with their `old_verify_keys`, and handed on by the
//! notary API (`/_matrix/key/v2/query`) with our signature added.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use parking_lot::Mutex;
use ruma::api::federation::discovery::{
    ServerSigningKeys, get_remote_server_keys_batch, get_server_keys,
};
use ruma::serde::Base64;
use ruma::signatures::{PublicKeyMap, PublicKeySet};
use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, ServerName};

use super::{Client, FederationError};
use crate::clock::SharedClock;
use crate::config::TrustedKeyServer;
use crate::keys::SigningKey;
use crate::storage::Storage;
use crate::storage::server_keys::{ServerKeyResponseRow, ServerKeyRow};

/// How long others may cache our keys.
pub const OWN_KEY_VALIDITY_MS: i64 = 7 * 24 * 3600 * 1000;
/// A server's keys are fetched again at most this often (ms) while the
/// stored answer is valid.
const MIN_REFETCH_MS: i64 = 30_000;
/// Servers whose keys are kept in memory at most (the table keeps all).
const MAX_IN_MEMORY: usize = 10_000;

/// A configured notary: its name, and the keys its answers must carry
/// (`None`: its own published keys).
struct Notary {
    name: OwnedServerName,
    keys: Option<PublicKeySet>,
}

pub struct ServerKeys {
    storage: Storage,
    clock: SharedClock,
    client: Arc<Client>,
    signing_key: Arc<SigningKey>,
    notaries: Vec<Notary>,
    /// Each server's known keys, as the table holds them.
    memory: Mutex<HashMap<OwnedServerName, Arc<Vec<ServerKeyRow>>>>,
    /// One fetch per server at a time; the others wait for its result.
    fetching: Mutex<HashMap<OwnedServerName, Arc<tokio::sync::Mutex<()>>>>,
}

impl ServerKeys {
    pub fn new(
        storage: Storage,
        clock: SharedClock,
        client: Arc<Client>,
        signing_key: Arc<SigningKey>,
        trusted: &[TrustedKeyServer],
    ) -> anyhow::Result<Self> {
        let mut notaries = Vec::new();
        for t in trusted {
            let keys = if t.verify_keys.is_empty() {
                None
            } else {
                let mut set = PublicKeySet::new();
                for (id, key) in &t.verify_keys {
                    set.insert(id.clone(), Base64::parse(key)?);
                }
                Some(set)
            };
            notaries.push(Notary {
                name: ServerName::parse(&t.server_name)?,
                keys,
            });
        }
        Ok(Self {
            storage,
            clock,
            client,
            signing_key,
            notaries,
            memory: Mutex::default(),
            fetching: Mutex::default(),
        })
    }

    fn own_name(&self) -> &ServerName {
        self.client.server_name()
    }

    /// Our key answer: `server_name`, `verify_keys`, `old_verify_keys`,
    /// `valid_until_ts` (a week ahead), signed with the key it lists.
    pub fn own_keys(&self) -> Result<CanonicalJsonObject, FederationError> {
        let key = &self.signing_key;
        let public = STANDARD_NO_PAD.encode(key.key_pair.public_key());
        let body = serde_json::json!({
            "server_name": self.own_name(),
            "verify_keys": { key.key_id(): { "key": public } },
            "old_verify_keys": {},
            "valid_until_ts": self.clock.now_ms() + OWN_KEY_VALIDITY_MS,
        });
        let mut obj = to_object(body)?;
        self.sign(&mut obj)?;
        Ok(obj)
    }

    fn sign(&self, obj: &mut CanonicalJsonObject) -> Result<(), FederationError> {
        ruma::signatures::sign_json(self.own_name().as_str(), &self.signing_key.key_pair, obj)
            .map_err(|e| FederationError::Internal(e.to_string()))
    }

    /// The public key `key_id` of `server`, valid now: from memory, the
    /// table, or fetched (notaries first, then the server).
    pub async fn verify_key(
        &self,
        server: &ServerName,
        key_id: &str,
    ) -> Result<Base64, FederationError> {
        if server == self.own_name() {
            if key_id == self.signing_key.key_id() {
                return Ok(Base64::new(self.signing_key.key_pair.public_key().to_vec()));
            }
            return Err(FederationError::BadResponse(format!(
                "we have no key {key_id}"
            )));
        }
        let now = self.clock.now_ms();
        if let Some(key) = usable(&self.known(server).await?, key_id, now) {
            return Ok(key);
        }
        self.fetch(server, now).await?;
        usable(&self.known(server).await?, key_id, now).ok_or_else(|| {
            FederationError::BadResponse(format!("{server} publishes no valid key {key_id}"))
        })
    }

    /// What is known of `server`'s keys (memory, else the table).
    async fn known(&self, server: &ServerName) -> Result<Arc<Vec<ServerKeyRow>>, FederationError> {
        if let Some(k) = self.memory.lock().get(server) {
            return Ok(k.clone());
        }
        let rows = Arc::new(
            self.storage
                .server_keys(server.as_str())
                .await
                .map_err(|e| FederationError::Internal(e.to_string()))?,
        );
        self.remember(server, rows.clone());
        Ok(rows)
    }

    fn remember(&self, server: &ServerName, rows: Arc<Vec<ServerKeyRow>>) {
        let mut memory = self.memory.lock();
        if memory.len() >= MAX_IN_MEMORY {
            memory.clear();
        }
        memory.insert(server.to_owned(), rows);
    }

    /// Fetches `server`'s keys unless another task just did (valid keys
    /// stored since `asked_at`) or they were fetched in the last
    /// [`MIN_REFETCH_MS`]: from each notary, then from the server.
    async fn fetch(&self, server: &ServerName, asked_at: i64) -> Result<(), FederationError> {
        let lock = self
            .fetching
            .lock()
            .entry(server.to_owned())
            .or_default()
            .clone();
        let guard = lock.lock().await;
        let done = async {
            // Fetched meanwhile, or so recently that a request naming a
            // key the server does not publish cannot make us ask again.
            if let Some(stored) = self.stored_response(server).await?
                && stored.fetched_ts >= asked_at.min(self.clock.now_ms() - MIN_REFETCH_MS)
                && stored.valid_until_ts >= asked_at
            {
                return Ok(());
            }
            let mut errors = Vec::new();
            for notary in &self.notaries {
                match self.fetch_from_notary(notary, server).await {
                    Ok(()) => return Ok(()),
                    Err(e) => errors.push(format!("notary {}: {e}", notary.name)),
                }
            }
            match self.fetch_direct(server).await {
                Ok(()) => Ok(()),
                Err(e) if errors.is_empty() => Err(e),
                Err(e) => Err(FederationError::BadResponse(format!(
                    "{}; {server}: {e}",
                    errors.join("; ")
                ))),
            }
        }
        .await;
        drop(guard);
        let mut fetching = self.fetching.lock();
        if Arc::strong_count(&lock) <= 2 {
            fetching.remove(server);
        }
        done
    }

    async fn stored_response(
        &self,
        server: &ServerName,
    ) -> Result<Option<ServerKeyResponseRow>, FederationError> {
        self.storage
            .server_key_response(server.as_str())
            .await
            .map_err(|e| FederationError::Internal(e.to_string()))
    }

    /// `GET /_matrix/key/v2/server` of the server itself.
    async fn fetch_direct(&self, server: &ServerName) -> Result<(), FederationError> {
        let response = self
            .client
            .send_unsigned(server, get_server_keys::v2::Request::new())
            .await?;
        let checked = self.check(server, response.server_key.json().get(), None)?;
        self.store(server, checked).await
    }

    /// `POST /_matrix/key/v2/query` to a notary, its answer for `server`
    /// signed by both.
    async fn fetch_from_notary(
        &self,
        notary: &Notary,
        server: &ServerName,
    ) -> Result<(), FederationError> {
        let notary_keys = match &notary.keys {
            Some(k) => k.clone(),
            None => self.current_keys(&notary.name).await?,
        };
        let mut query = BTreeMap::new();
        query.insert(server.to_owned(), BTreeMap::new());
        let response = self
            .client
            .send_unsigned(
                &notary.name,
                get_remote_server_keys_batch::v2::Request::new(query),
            )
            .await?;
        let mut last_error = None;
        for raw in &response.server_keys {
            match self.check(server, raw.json().get(), Some((&notary.name, &notary_keys))) {
                Ok(checked) => return self.store(server, checked).await,
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            FederationError::BadResponse(format!("the notary has no keys of {server}"))
        }))
    }

    /// Every current key of `server`, fetched when none is valid now.
    async fn current_keys(&self, server: &ServerName) -> Result<PublicKeySet, FederationError> {
        let now = self.clock.now_ms();
        let mut set = current_set(&self.known(server).await?, now);
        if set.is_empty() {
            self.fetch_direct(server).await?;
            set = current_set(&self.known(server).await?, now);
        }
        Ok(set)
    }

    /// A key answer checked: JSON of [`ServerSigningKeys`]'s shape, for
    /// `server`, valid now, signed by `server` with a key it lists (and by
    /// the notary, when one relayed it).
    fn check(
        &self,
        server: &ServerName,
        json: &str,
        notary: Option<(&OwnedServerName, &PublicKeySet)>,
    ) -> Result<Checked, FederationError> {
        let bad = |m: String| FederationError::BadResponse(m);
        let obj: CanonicalJsonObject =
            serde_json::from_str(json).map_err(|e| bad(format!("not canonical JSON: {e}")))?;
        let keys: ServerSigningKeys =
            serde_json::from_str(json).map_err(|e| bad(format!("not a key answer: {e}")))?;
        if keys.server_name != server {
            return Err(bad(format!(
                "the answer is for {}, not {server}",
                keys.server_name
            )));
        }
        let valid_until = i64::from(keys.valid_until_ts.get());
        if valid_until < self.clock.now_ms() {
            return Err(bad(format!(
                "the keys of {server} expired (valid_until_ts)"
            )));
        }
        let mut own = PublicKeySet::new();
        for (id, k) in &keys.verify_keys {
            own.insert(id.to_string(), k.key.clone());
        }
        let mut map = PublicKeyMap::new();
        map.insert(server.to_string(), own);
        let mut signers = vec![server.as_str()];
        if let Some((name, set)) = notary {
            map.insert(name.to_string(), set.clone());
            signers.push(name.as_str());
        }
        ruma::signatures::verify_json(&map, &only_signatures_of(&obj, &signers))
            .map_err(|e| bad(format!("signature check failed: {e}")))?;
        Ok(Checked { obj, keys })
    }

    async fn store(&self, server: &ServerName, checked: Checked) -> Result<(), FederationError> {
        let Checked { obj, keys } = checked;
        let valid_until = i64::from(keys.valid_until_ts.get());
        let mut rows: Vec<ServerKeyRow> = keys
            .old_verify_keys
            .iter()
            .map(|(id, k)| {
                let expired = i64::from(k.expired_ts.get());
                ServerKeyRow {
                    key_id: id.to_string(),
                    public_key: k.key.encode(),
                    valid_until_ts: expired,
                    expired_ts: Some(expired),
                }
            })
            .collect();
        rows.extend(keys.verify_keys.iter().map(|(id, k)| ServerKeyRow {
            key_id: id.to_string(),
            public_key: k.key.encode(),
            valid_until_ts: valid_until,
            expired_ts: None,
        }));
        let response = ServerKeyResponseRow {
            body: serde_json::to_string(&obj)
                .map_err(|e| FederationError::Internal(e.to_string()))?,
            valid_until_ts: valid_until,
            fetched_ts: self.clock.now_ms(),
        };
        self.storage
            .store_server_keys(server.as_str(), &response, &rows)
            .await
            .map_err(|e| FederationError::Internal(e.to_string()))?;
        self.memory.lock().remove(server);
        Ok(())
    }

    /// The notary API's answer for one server: our own keys, else the
    /// stored answer when valid until `minimum_valid_until_ts`, else one
    /// fetched now (the stored one when that fails), each signed by us
    /// too. Nothing at all: `None`.
    pub async fn notary_answer(
        &self,
        server: &ServerName,
        minimum_valid_until_ts: i64,
    ) -> Result<Option<CanonicalJsonObject>, FederationError> {
        if server == self.own_name() {
            return self.own_keys().map(Some);
        }
        let mut stored = self.stored_response(server).await?;
        if stored
            .as_ref()
            .is_none_or(|s| s.valid_until_ts < minimum_valid_until_ts)
        {
            match self.fetch(server, self.clock.now_ms()).await {
                Ok(()) => stored = self.stored_response(server).await?,
                Err(e) => tracing::debug!(%server, error = %e, "notary: cannot fetch keys"),
            }
        }
        let Some(stored) = stored else {
            return Ok(None);
        };
        let mut obj: CanonicalJsonObject = serde_json::from_str(&stored.body)
            .map_err(|e| FederationError::Internal(e.to_string()))?;
        self.sign(&mut obj)?;
        Ok(Some(obj))
    }
}

struct Checked {
    obj: CanonicalJsonObject,
    keys: ServerSigningKeys,
}

/// `key_id` among `rows` when it is a current key valid at `now`.
fn usable(rows: &[ServerKeyRow], key_id: &str, now: i64) -> Option<Base64> {
    rows.iter()
        .find(|r| r.key_id == key_id && r.expired_ts.is_none() && r.valid_until_ts >= now)
        .and_then(|r| Base64::parse(&r.public_key).ok())
}

fn current_set(rows: &[ServerKeyRow], now: i64) -> PublicKeySet {
    rows.iter()
        .filter(|r| r.expired_ts.is_none() && r.valid_until_ts >= now)
        .filter_map(|r| Some((r.key_id.clone(), Base64::parse(&r.public_key).ok()?)))
        .collect()
}

/// `obj` with only the signatures of `signers` (a relayed answer may carry
/// others that cannot be checked here).
fn only_signatures_of(obj: &CanonicalJsonObject, signers: &[&str]) -> CanonicalJsonObject {
    let mut copy = obj.clone();
    if let Some(CanonicalJsonValue::Object(sigs)) = copy.get_mut("signatures") {
        sigs.retain(|name, _| signers.contains(&name.as_str()));
    }
    copy
}

fn to_object(value: serde_json::Value) -> Result<CanonicalJsonObject, FederationError> {
    match CanonicalJsonValue::try_from(value) {
        Ok(CanonicalJsonValue::Object(obj)) => Ok(obj),
        _ => Err(FederationError::Internal("not a JSON object".into())),
    }
}
