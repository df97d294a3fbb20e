//! Token-bucket rate limiting, keyed by (user, device) for client requests and
//! by IP address for login and registration.
//!
//! At most `capacity` buckets are kept, least recently used first out: a
//! bucket idle for `burst / per_second` has refilled and holds no state, so
//! only a flood of more distinct keys than that within one refill time
//! forgets a partly spent bucket early. No sweep scans the table.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<lru::LruCache<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// The limiters `rate_limits` configures: for client requests and for
    /// logins (`None` each when rate limits are off).
    pub fn client_and_login(config: &crate::config::Config) -> (Option<Self>, Option<Self>) {
        let rl = &config.rate_limits;
        let max_buckets = config.caches.rate_limit_buckets;
        if !rl.enabled {
            return (None, None);
        }
        (
            Some(Self::new(rl.per_second, rl.burst, max_buckets)),
            Some(Self::new(rl.login_per_second, rl.login_burst, max_buckets)),
        )
    }

    pub fn new(per_second: f64, burst: u32, capacity: usize) -> Self {
        Self {
            per_second,
            burst: burst as f64,
            buckets: Mutex::new(crate::services::expiring::bounded_lru(capacity)),
        }
    }

    /// Takes one token for `key`, or says how long to wait for the next one.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        let bucket = buckets.get_or_insert_mut_ref(key, || Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }
}

impl crate::services::workers::CacheSizes for RateLimiter {
    fn cache_sizes(&self) -> Vec<(&'static str, usize)> {
        vec![("buckets", self.buckets.lock().len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_limited() {
        let rl = RateLimiter::new(0.5, 2, 100);
        assert!(rl.check("a").is_ok());
        assert!(rl.check("a").is_ok());
        let wait = rl.check("a").unwrap_err();
        assert!(
            wait > Duration::from_secs(1) && wait <= Duration::from_secs(2),
            "{wait:?}"
        );
        assert!(rl.check("b").is_ok(), "keys are independent");
    }

    #[test]
    fn bounded_least_recently_used_first() {
        let rl = RateLimiter::new(0.001, 1, 2);
        assert!(rl.check("a").is_ok());
        assert!(rl.check("b").is_ok());
        assert!(rl.check("a").is_err(), "a is spent (and now most recent)");
        assert!(rl.check("c").is_ok(), "c evicts b, the least recently used");
        assert_eq!(rl.buckets.lock().len(), 2, "the bound holds");
        assert!(rl.check("a").is_err(), "a was kept");
        assert!(
            rl.check("b").is_ok(),
            "b was forgotten: a full bucket again"
        );
    }
}
