//! Bounded sets of random tokens (UIA sessions, registration nonces) that
//! expire a fixed time after they were issued.
//!
//! Tokens are kept in issue order, which with one time-to-live is also
//! expiry order: expiring looks only at the oldest, and when the set is
//! full the oldest goes first. No operation scans the set.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Tokens, each with a value (a UIA session's state), that expire `ttl`
/// after they were issued.
pub struct ExpiringMap<V> {
    ttl: Duration,
    /// Issue order; never promoted by a lookup (`peek`/`contains`/`pop`).
    tokens: Mutex<lru::LruCache<String, (Instant, V)>>,
}

impl<V> ExpiringMap<V> {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            tokens: Mutex::new(bounded_lru(capacity)),
        }
    }

    /// Adds a token issued now (forgetting the oldest when full).
    pub fn insert(&self, token: String, value: V) {
        self.insert_at(token, value, Instant::now());
    }

    /// Whether the token was issued and has not expired.
    pub fn contains(&self, token: &str) -> bool {
        self.with_at(token, Instant::now(), |_| ()).is_some()
    }

    /// Runs `f` on a live token's value (which it may change), `None` when
    /// the token is unknown or expired. Does not make the token younger.
    pub fn with<R>(&self, token: &str, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        self.with_at(token, Instant::now(), f)
    }

    /// Removes the token; true if it was live.
    pub fn remove(&self, token: &str) -> bool {
        self.remove_at(token, Instant::now())
    }

    fn insert_at(&self, token: String, value: V, now: Instant) {
        let mut tokens = self.tokens.lock();
        self.expire(&mut tokens, now);
        tokens.push(token, (now, value));
    }

    fn with_at<R>(&self, token: &str, now: Instant, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        let mut tokens = self.tokens.lock();
        self.expire(&mut tokens, now);
        tokens.peek_mut(token).map(|(_, v)| f(v))
    }

    fn remove_at(&self, token: &str, now: Instant) -> bool {
        let mut tokens = self.tokens.lock();
        self.expire(&mut tokens, now);
        tokens.pop(token).is_some()
    }

    /// Drops the expired tokens, oldest first, stopping at the first live one.
    fn expire(&self, tokens: &mut lru::LruCache<String, (Instant, V)>, now: Instant) {
        while tokens
            .peek_lru()
            .is_some_and(|(_, (issued, _))| now.saturating_duration_since(*issued) >= self.ttl)
        {
            tokens.pop_lru();
        }
    }

    /// How many tokens are held (expired ones included until the next use).
    pub fn len(&self) -> usize {
        self.tokens.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Tokens without a value (registration nonces).
pub struct ExpiringSet(ExpiringMap<()>);

impl ExpiringSet {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self(ExpiringMap::new(ttl, capacity))
    }

    /// Adds a token issued now (forgetting the oldest when full).
    pub fn insert(&self, token: String) {
        self.0.insert(token, ());
    }

    /// Whether the token was issued and has not expired.
    pub fn contains(&self, token: &str) -> bool {
        self.0.contains(token)
    }

    /// Removes the token; true if it was live.
    pub fn remove(&self, token: &str) -> bool {
        self.0.remove(token)
    }

    #[cfg(test)]
    fn insert_at(&self, token: String, now: Instant) {
        self.0.insert_at(token, (), now);
    }

    #[cfg(test)]
    fn contains_at(&self, token: &str, now: Instant) -> bool {
        self.0.with_at(token, now, |()| ()).is_some()
    }

    #[cfg(test)]
    fn remove_at(&self, token: &str, now: Instant) -> bool {
        self.0.remove_at(token, now)
    }

    /// How many tokens are held (expired ones included until the next use).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An LRU cache bounded at `capacity` entries (at least one) whose table
/// grows with its entries. `lru::LruCache::new` sizes its table for the
/// whole bound at once, and clears that table's control bytes, so every
/// bound paid its memory at start-up whether the entries ever came.
pub fn bounded_lru<K: std::hash::Hash + Eq, V>(capacity: usize) -> lru::LruCache<K, V> {
    let mut cache = lru::LruCache::unbounded();
    cache.resize(NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN));
    cache
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn full_set_forgets_the_oldest() {
        let s = ExpiringSet::new(TTL, 3);
        let t0 = Instant::now();
        for (i, t) in ["a", "b", "c", "d"].into_iter().enumerate() {
            s.insert_at(t.into(), t0 + Duration::from_secs(i as u64));
        }
        assert_eq!(s.len(), 3, "the bound holds");
        let now = t0 + Duration::from_secs(5);
        assert!(!s.contains_at("a", now), "the oldest went first");
        // A lookup does not make a token younger.
        assert!(s.contains_at("b", now));
        s.insert_at("e".into(), now);
        assert!(!s.contains_at("b", now));
        assert!(s.contains_at("c", now) && s.contains_at("d", now) && s.contains_at("e", now));
    }

    #[test]
    fn tokens_expire_in_issue_order() {
        let s = ExpiringSet::new(TTL, 100);
        let t0 = Instant::now();
        s.insert_at("old".into(), t0);
        s.insert_at("new".into(), t0 + Duration::from_secs(30));
        let later = t0 + TTL;
        assert!(!s.contains_at("old", later), "expired at its TTL");
        assert_eq!(s.len(), 1, "and dropped");
        assert!(s.contains_at("new", later));
        assert!(!s.remove_at("new", t0 + Duration::from_secs(90)), "expired");
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn remove_is_single_use() {
        let s = ExpiringSet::new(TTL, 10);
        s.insert("n".into());
        assert!(s.remove("n"));
        assert!(!s.remove("n"));
        assert!(!s.remove("never issued"));
        assert!(!s.contains("n"));
    }

    #[test]
    fn a_bounded_lru_holds_its_bound_without_sizing_for_it() {
        let mut cache = bounded_lru::<u32, u32>(3);
        assert_eq!(cache.cap().get(), 3);
        for i in 0..10 {
            cache.put(i, i);
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.peek_lru(), Some((&7, &7)));
        let big = bounded_lru::<u64, u64>(1_000_000);
        assert_eq!(big.cap().get(), 1_000_000);
        assert!(big.is_empty());
    }
}
