//! Account data, global and per room (tags are the room type `m.tag`), and
//! the user's push rules (kept as the global `m.push_rules` account data,
//! which is also how clients receive them in `/sync`).

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::Mutex;
use ruma::push::Ruleset;
use ruma::{OwnedUserId, RoomId, UserId};
use serde_json::{Map, Value, json};

use crate::error::{MatrixError, Result};
use crate::services::notifications::UnreadCounts;
use crate::services::push_rules;
use crate::services::stream::{Stream, Topic};
use crate::storage::Storage;

pub struct AccountData {
    storage: Storage,
    stream: Arc<Stream>,
    /// Unread counts were made with the old push rules: forgotten on change.
    unread: Arc<UnreadCounts>,
    /// Recently used rulesets (every `/sync` with new events evaluates
    /// them); a user's entry goes when their rules are stored. The counter
    /// counts such stores, so a load that raced one is not cached.
    rules: UserCache<Ruleset>,
    /// Recently read ignore lists (`m.ignored_user_list`), kept as `rules`.
    ignored: UserCache<IgnoredUsers>,
    /// Who hears of each stored change (registered at start-up).
    listeners: parking_lot::RwLock<Vec<Arc<dyn AccountDataListener>>>,
}

/// Something that keeps what it needs of account data up to date: told of
/// every stored change on the storing request, after the store and before
/// its stream position completes (so before any sync sees it). Cheap work
/// only (memory).
pub trait AccountDataListener: Send + Sync {
    fn stored(&self, change: &AccountDataChange<'_>);
}

/// One stored piece of account data (global when `room` is `None`).
pub struct AccountDataChange<'a> {
    pub user: &'a UserId,
    pub room: Option<&'a RoomId>,
    pub data_type: &'a str,
    pub content: &'a Value,
    /// The stream position it was stored at.
    pub pos: i64,
}

/// Something read per user from their account data, parsed and kept for
/// recent users. A store of the user's data forgets their entry and counts
/// itself, so a load that raced a store is not kept.
struct UserCache<T>(
    Mutex<(u64, lru::LruCache<OwnedUserId, Arc<T>>)>,
    crate::metrics::CacheLookups,
);

impl<T> UserCache<T> {
    fn new() -> Self {
        Self(
            Mutex::new((0, lru::LruCache::new(RULES_CACHE_SIZE))),
            crate::metrics::CacheLookups::default(),
        )
    }

    /// The cached value, or the store count to hand to [`UserCache::put`].
    fn get(&self, user: &UserId) -> std::result::Result<Arc<T>, u64> {
        let mut cache = self.0.lock();
        let found = cache.1.get(user).cloned();
        self.1.of(found).ok_or(cache.0)
    }

    fn put(&self, user: &UserId, stores: u64, value: Arc<T>) {
        let mut cache = self.0.lock();
        if cache.0 == stores {
            cache.1.put(user.to_owned(), value);
        }
    }

    fn len(&self) -> usize {
        self.0.lock().1.len()
    }

    fn forget(&self, user: &UserId) {
        let mut cache = self.0.lock();
        cache.0 += 1;
        cache.1.pop(user);
    }
}

/// The users a user ignores (spec, "Ignoring Users").
pub type IgnoredUsers = HashSet<OwnedUserId>;

/// How many users' push rules [`AccountData`] keeps parsed (a few KiB each).
const RULES_CACHE_SIZE: std::num::NonZeroUsize = std::num::NonZeroUsize::new(256).unwrap();

impl AccountData {
    pub fn new(storage: Storage, stream: Arc<Stream>, unread: Arc<UnreadCounts>) -> Self {
        Self {
            storage,
            stream,
            unread,
            rules: UserCache::new(),
            ignored: UserCache::new(),
            listeners: parking_lot::RwLock::new(Vec::new()),
        }
    }

    /// Registers a listener for every later change (at start-up).
    pub fn subscribe(&self, listener: Arc<dyn AccountDataListener>) {
        self.listeners.write().push(listener);
    }

    /// Stores `content` (a JSON object) under `data_type`, globally when
    /// `room` is `None`.
    pub async fn set(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        data_type: &str,
        content: &Value,
    ) -> Result<()> {
        if !content.is_object() {
            return Err(MatrixError::bad_json(
                "Account data content must be a JSON object",
            ));
        }
        let json = serde_json::to_string(content).map_err(MatrixError::internal)?;
        let r = self.stream.reserve();
        let pos = r.pos();
        self.stream.touch(Topic::User(user.to_owned()), pos);
        let result = self
            .storage
            .set_account_data(
                user.as_str(),
                room.map(|r| r.as_str()).unwrap_or(""),
                data_type,
                &json,
                pos,
            )
            .await;
        if room.is_none() && data_type == "m.push_rules" {
            self.rules.forget(user);
            self.unread.forget_user(user);
        }
        if room.is_none() && data_type == "m.ignored_user_list" {
            self.ignored.forget(user);
        }
        if result.is_ok() {
            let change = AccountDataChange {
                user,
                room,
                data_type,
                content,
                pos,
            };
            for listener in self.listeners.read().iter() {
                listener.stored(&change);
            }
        }
        self.stream.complete(r);
        Ok(result?)
    }

    pub async fn get(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        data_type: &str,
    ) -> Result<Option<Value>> {
        match self
            .storage
            .account_data(
                user.as_str(),
                room.map(|r| r.as_str()).unwrap_or(""),
                data_type,
            )
            .await?
        {
            Some(json) => Ok(Some(
                serde_json::from_str(&json).map_err(MatrixError::internal)?,
            )),
            None => Ok(None),
        }
    }

    /// The user's push rules for evaluation (see [`push_rules::to_ruleset`]),
    /// from the cache when there.
    pub async fn push_rules_shared(&self, user: &UserId) -> Result<Arc<Ruleset>> {
        let stores = match self.rules.get(user) {
            Ok(rules) => return Ok(rules),
            Err(stores) => stores,
        };
        let rules = Arc::new(push_rules::to_ruleset(&self.push_rules_json(user).await?));
        self.rules.put(user, stores, rules.clone());
        Ok(rules)
    }

    /// The users `user` ignores, from the cache when there.
    pub async fn ignored_users(&self, user: &UserId) -> Result<Arc<IgnoredUsers>> {
        let stores = match self.ignored.get(user) {
            Ok(ignored) => return Ok(ignored),
            Err(stores) => stores,
        };
        let content = self.get(user, None, "m.ignored_user_list").await?;
        let ignored: IgnoredUsers = content
            .as_ref()
            .and_then(|c| c.get("ignored_users"))
            .and_then(Value::as_object)
            .map(|users| {
                users
                    .keys()
                    .filter_map(|u| UserId::parse(u.as_str()).ok())
                    .collect()
            })
            .unwrap_or_default();
        let ignored = Arc::new(ignored);
        self.ignored.put(user, stores, ignored.clone());
        Ok(ignored)
    }

    /// Drops the events of users `user` ignores but their state events
    /// (spec, "Ignoring Users": the client no longer receives their events,
    /// state events excepted).
    pub async fn drop_ignored(
        &self,
        user: &UserId,
        events: &mut Vec<crate::model::pdu::Pdu>,
    ) -> Result<()> {
        let ignored = self.ignored_users(user).await?;
        if !ignored.is_empty() {
            events.retain(|p| p.state_key.is_some() || !ignored.contains(&p.sender));
        }
        Ok(())
    }

    /// The ruleset as clients see it: the stored rules with new server
    /// defaults merged in, or the server defaults.
    pub async fn push_rules_json(&self, user: &UserId) -> Result<Map<String, Value>> {
        let defaults = server_default_json(user)?;
        let stored = self.get(user, None, "m.push_rules").await?;
        let stored = match stored.as_ref().and_then(|v| v.get("global")) {
            Some(Value::Object(global)) => global.clone(),
            _ => Map::new(),
        };
        Ok(push_rules::merge_defaults(&stored, &defaults))
    }

    /// Stores the ruleset in the shape clients read (in `/sync` too).
    pub async fn set_push_rules_json(
        &self,
        user: &UserId,
        rules: Map<String, Value>,
    ) -> Result<()> {
        let content = json!({ "global": rules });
        self.set(user, None, "m.push_rules", &content).await
    }
}

/// A ruleset with all five kinds present (ruma omits empty ones).
fn ruleset_json(rules: &Ruleset) -> Result<Value> {
    let mut value = serde_json::to_value(rules).map_err(MatrixError::internal)?;
    let map = value
        .as_object_mut()
        .ok_or_else(|| MatrixError::internal("ruleset is not an object"))?;
    for kind in ["override", "content", "room", "sender", "underride"] {
        map.entry(kind).or_insert(json!([]));
    }
    Ok(value)
}

/// The server-default rules: ruma's, plus the legacy mention rules, as real
/// rules that users can disable and that the evaluator applies.
fn server_default_json(user: &UserId) -> Result<Map<String, Value>> {
    let mut value = ruleset_json(&Ruleset::server_default(user))?;
    let map = value
        .as_object_mut()
        .ok_or_else(|| MatrixError::internal("ruleset is not an object"))?;
    add_legacy_mention_rules(map, user.as_str());
    Ok(std::mem::take(map))
}

/// The pre-`m.mentions` rules (deprecated in spec v1.7, dropped from ruma's
/// defaults) that Synapse still serves: clients that do not send
/// `m.mentions` rely on them to highlight a mention of a user's name or @room.
fn add_legacy_mention_rules(map: &mut serde_json::Map<String, Value>, user_id: &str) {
    let localpart = user_id
        .trim_start_matches('@')
        .split(':')
        .next()
        .unwrap_or_default();
    let highlight_sound =
        json!(["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]);
    let insert_after = |list: &mut Vec<Value>, after: &str, rule: Value| {
        let pos = list
            .iter()
            .position(|r| r["rule_id"] == after)
            .map(|p| p + 1)
            .unwrap_or(list.len());
        list.insert(pos, rule);
    };
    if let Some(Value::Array(overrides)) = map.get_mut("override") {
        insert_after(
            overrides,
            ".m.rule.is_user_mention",
            json!({
                "rule_id": ".m.rule.contains_display_name", "default": true, "enabled": true,
                "conditions": [{"kind": "contains_display_name"}],
                "actions": highlight_sound,
            }),
        );
        insert_after(
            overrides,
            ".m.rule.is_room_mention",
            json!({
                "rule_id": ".m.rule.roomnotif", "default": true, "enabled": true,
                "conditions": [
                    {"kind": "event_match", "key": "content.body", "pattern": "@room"},
                    {"kind": "sender_notification_permission", "key": "room"}
                ],
                "actions": ["notify", {"set_tweak": "highlight"}],
            }),
        );
    }
    if let Some(Value::Array(content)) = map.get_mut("content") {
        content.push(json!({
            "rule_id": ".m.rule.contains_user_name", "default": true, "enabled": true,
            "pattern": localpart,
            "actions": highlight_sound,
        }));
    }
}

impl crate::services::workers::CacheSizes for AccountData {
    fn cache_sizes(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("push_rules", self.rules.len()),
            ("ignored_users", self.ignored.len()),
        ]
    }

    fn cache_lookups(&self) -> Vec<(&'static str, &crate::metrics::CacheLookups)> {
        vec![
            ("push_rules", &self.rules.1),
            ("ignored_users", &self.ignored.1),
        ]
    }
}
