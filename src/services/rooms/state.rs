//! Room state storage: state groups. Each state event starts a new group
//! holding only what it changed (a delta on its parent group); every
//! `MAX_STATE_CHAIN` deltas a full snapshot is written instead. The state at
//! any event is its group resolved up the chain; resolved maps are cached.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{MatrixError, Result};
use crate::metrics::CacheLookups;
use crate::model::state::StateMap;
use crate::storage::Storage;

/// How many state entries (summed over the cached groups) the cache holds
/// at most, about 150 bytes each: big rooms have big maps, so the bound is
/// on entries, not on groups. The least recently used groups go first.
const CACHE_ENTRIES: usize = 100_000;

pub struct StateCache {
    storage: Storage,
    cache: Mutex<Cached>,
    /// Whether [`StateCache::load`] found the asked group cached.
    pub lookups: CacheLookups,
}

struct Cached {
    groups: lru::LruCache<i64, (Arc<StateMap>, i64)>,
    entries: usize,
}

impl Cached {
    fn get(&mut self, group: i64) -> Option<(Arc<StateMap>, i64)> {
        self.groups.get(&group).cloned()
    }
}

impl StateCache {
    /// State entries held, summed over the cached groups.
    pub fn entries(&self) -> usize {
        self.cache.lock().entries
    }

    pub fn new(storage: Storage) -> Self {
        Self {
            storage,
            cache: Mutex::new(Cached {
                groups: lru::LruCache::unbounded(),
                entries: 0,
            }),
            lookups: CacheLookups::default(),
        }
    }

    pub fn insert(&self, group: i64, state: Arc<StateMap>, chain_length: i64) {
        let mut cache = self.cache.lock();
        let size = state.len().max(1);
        if let Some((old, _)) = cache.groups.put(group, (state, chain_length)) {
            cache.entries -= old.len().max(1);
        }
        cache.entries += size;
        while cache.entries > CACHE_ENTRIES && cache.groups.len() > 1 {
            match cache.groups.pop_lru() {
                Some((_, (old, _))) => cache.entries -= old.len().max(1),
                None => break,
            }
        }
    }

    /// The full state of a group and its chain length. Group 0 is the empty
    /// state (before a room's create event).
    pub async fn load(&self, group: i64) -> Result<(Arc<StateMap>, i64)> {
        if group == 0 {
            return Ok((Arc::default(), 0));
        }
        let cached = self.cache.lock().get(group);
        if let Some(hit) = self.lookups.of(cached) {
            return Ok(hit);
        }
        // Walk up to the nearest snapshot (or cached ancestor), then apply
        // the deltas from oldest to newest.
        let mut deltas = Vec::new();
        let mut base: Option<Arc<StateMap>> = None;
        let mut cursor = Some(group);
        let mut chain_length = None;
        while let Some(g) = cursor {
            if let Some((state, _)) = self.cache.lock().get(g) {
                base = Some(state);
                break;
            }
            let row = self
                .storage
                .state_group(g)
                .await?
                .ok_or_else(|| MatrixError::internal(format!("missing state group {g}")))?;
            chain_length.get_or_insert(row.chain_length);
            deltas.push(row.entries);
            cursor = row.prev_group;
        }
        let mut state = base.map(|b| (*b).clone()).unwrap_or_default();
        for entries in deltas.into_iter().rev() {
            for e in entries {
                state.insert((e.event_type, e.state_key), e.event_id);
            }
        }
        let state = Arc::new(state);
        let chain_length = chain_length.unwrap_or(0);
        self.insert(group, state.clone(), chain_length);
        Ok((state, chain_length))
    }
}
