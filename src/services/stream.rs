//! The global stream: one monotonic position orders everything a client
//! syncs (events now; receipts, typing, account data later).
//!
//! Positions are handed out in order but persisted concurrently (rooms are
//! written in parallel), so the position readers may use is the highest one
//! below which every position has been persisted. Waiters (long-polling
//! `/sync`) are woken when it advances.

use std::collections::BTreeSet;

use parking_lot::Mutex;
use tokio::sync::watch;

pub struct Stream {
    inner: Mutex<Inner>,
    current: watch::Sender<i64>,
}

struct Inner {
    next: i64,
    in_flight: BTreeSet<i64>,
}

/// A reserved position; call [`Stream::complete`] once persisted (or abandoned).
#[must_use]
pub struct Reservation(pub i64);

impl Stream {
    /// `max_persisted` is the highest position found in the database.
    pub fn new(max_persisted: i64) -> Self {
        Self {
            inner: Mutex::new(Inner {
                next: max_persisted + 1,
                in_flight: BTreeSet::new(),
            }),
            current: watch::channel(max_persisted).0,
        }
    }

    pub fn reserve(&self) -> Reservation {
        let mut inner = self.inner.lock();
        let pos = inner.next;
        inner.next += 1;
        inner.in_flight.insert(pos);
        Reservation(pos)
    }

    /// Marks a position finished (written or rolled back) and advances the
    /// readable position past every finished one.
    pub fn complete(&self, r: Reservation) {
        let mut inner = self.inner.lock();
        inner.in_flight.remove(&r.0);
        let readable = match inner.in_flight.first() {
            Some(first) => first - 1,
            None => inner.next - 1,
        };
        drop(inner);
        self.current.send_if_modified(|cur| {
            if readable > *cur {
                *cur = readable;
                true
            } else {
                false
            }
        });
    }

    /// The highest position below which everything is persisted.
    pub fn current(&self) -> i64 {
        *self.current.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.current.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_position_waits_for_gaps() {
        let s = Stream::new(10);
        let a = s.reserve();
        let b = s.reserve();
        assert_eq!((a.0, b.0), (11, 12));
        s.complete(b);
        assert_eq!(s.current(), 10, "11 is still in flight");
        s.complete(a);
        assert_eq!(s.current(), 12);
    }
}
