//! The global stream: one monotonic position orders everything a client
//! syncs (events now; receipts, typing, account data later).
//!
//! Positions are handed out in order but persisted concurrently (rooms are
//! written in parallel), so the position readers may use is the highest one
//! below which every position has been persisted. A long-polling `/sync`
//! registers for its topics ([`Stream::register`]) and is woken only when a
//! position that touched one of them becomes readable: a message in one room
//! wakes that room's syncers, not every connected client.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use ruma::{OwnedDeviceId, OwnedRoomId, OwnedUserId};
use tokio::sync::{Notify, watch};

/// What a stream position changed, as far as waiting `/sync`s care: a
/// room (its events, receipts, typing), a user (their account data, or a
/// membership of theirs anywhere), anyone's presence, or one device's
/// to-device inbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    Room(OwnedRoomId),
    User(OwnedUserId),
    /// The presence of the room's joined members (a change of a user's
    /// presence touches each room they are joined to, so only the syncs of
    /// users who share a room with them wake).
    PresenceIn(OwnedRoomId),
    /// Anyone's read receipt in any room (besides its room's topic), so an
    /// incremental `/sync` reads receipts only when one was written.
    Receipts,
    /// A to-device message for one device of a user: only that device's
    /// syncs wake, and only they read its inbox.
    Device(OwnedUserId, OwnedDeviceId),
    /// A change of the devices or keys of this user or of someone sharing
    /// a room with them (`services/e2e_keys.rs`).
    DeviceLists(OwnedUserId),
}

/// A map keyed by topics, hashed fast: a to-device send touches one topic
/// per recipient device, a thousand for a large room's key share.
type TopicMap<V> = HashMap<Topic, V, foldhash::fast::RandomState>;

pub struct Stream {
    inner: Mutex<Inner>,
    current: watch::Sender<i64>,
    /// The last position that changed each topic. A writer records it
    /// before completing the position, so a waiter woken at a position sees
    /// every topic changed up to it.
    touched: Mutex<TopicMap<i64>>,
    /// Touches of positions not yet readable, woken when they become so.
    pending: Mutex<Vec<(i64, Topic)>>,
    /// Waiting `/sync`s by topic (dead entries are dropped as the lists
    /// are walked or grow).
    waiters: Mutex<TopicMap<Vec<Weak<Notify>>>>,
    /// The position at start-up: what touched which topic before it is not
    /// known.
    floor: i64,
    /// Set at shutdown: every parked long-poll answers at once, as if its
    /// timeout had passed ([`Stream::close`]).
    closing: watch::Sender<bool>,
    /// Parked long-polls woken so far ([`Stream::wakeups`]).
    wakeups: std::sync::atomic::AtomicU64,
}

/// A waiter's registration for its topics; [`Registration::notified`]
/// returns when a position touching one of them becomes readable (or one
/// did between registering and waiting). Dropping it unregisters.
pub struct Registration {
    notify: Arc<Notify>,
}

impl Registration {
    pub async fn notified(&self) {
        self.notify.notified().await
    }
}

struct Inner {
    next: i64,
    in_flight: BTreeSet<i64>,
}

/// A reserved position; call [`Stream::complete`] once persisted (or
/// abandoned). Dropping it completes it too, so a request cancelled
/// half-way (its client went away) cannot leave its position in flight,
/// which would stall every `/sync`.
#[must_use]
pub struct Reservation {
    stream: Arc<Stream>,
    pos: i64,
    done: bool,
}

impl Reservation {
    pub fn pos(&self) -> i64 {
        self.pos
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            self.stream.finish(&[self.pos]);
        }
    }
}

impl Stream {
    /// `max_persisted` is the highest position found in the database.
    pub fn new(max_persisted: i64) -> Self {
        Self {
            inner: Mutex::new(Inner {
                next: max_persisted + 1,
                in_flight: BTreeSet::new(),
            }),
            current: watch::channel(max_persisted).0,
            touched: Mutex::new(TopicMap::default()),
            pending: Mutex::new(Vec::new()),
            waiters: Mutex::new(TopicMap::default()),
            floor: max_persisted,
            wakeups: std::sync::atomic::AtomicU64::new(0),
            closing: watch::channel(false).0,
        }
    }

    /// Shutdown: wakes every parked long-poll, and any that parks later,
    /// as if its timeout had passed, so it answers with what it has.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Waits (at most `timeout`) for a position touching one of the
    /// registration's topics; whether one came. `false` at once when the
    /// server is shutting down ([`Stream::close`]).
    pub async fn wait(&self, registration: &Registration, timeout: std::time::Duration) -> bool {
        let mut closing = self.closing.subscribe();
        tokio::select! {
            woken = tokio::time::timeout(timeout, registration.notified()) => woken.is_ok(),
            _ = closing.wait_for(|c| *c) => false,
        }
    }

    /// Records that `pos` changed `topic` (call before completing `pos`).
    pub fn touch(&self, topic: Topic, pos: i64) {
        {
            let mut touched = self.touched.lock();
            let last = touched.entry(topic.clone()).or_insert(pos);
            *last = (*last).max(pos);
        }
        self.pending.lock().push((pos, topic));
    }

    /// [`Stream::touch`] for many topics at one position, each lock taken
    /// once (a to-device send touches a topic per recipient device).
    pub fn touch_many(&self, topics: Vec<Topic>, pos: i64) {
        {
            let mut touched = self.touched.lock();
            for topic in &topics {
                match touched.get_mut(topic) {
                    Some(last) => *last = (*last).max(pos),
                    None => {
                        touched.insert(topic.clone(), pos);
                    }
                }
            }
        }
        self.pending
            .lock()
            .extend(topics.into_iter().map(|t| (pos, t)));
    }

    /// Registers a waiter for `topics`. If one of them changed after
    /// `since` already, the first [`Registration::notified`] returns at once
    /// (the caller then checks what is readable).
    pub fn register(&self, topics: &[Topic], since: i64) -> Registration {
        let notify = Arc::new(Notify::new());
        {
            let mut waiters = self.waiters.lock();
            for topic in topics {
                let list = waiters.entry(topic.clone()).or_default();
                // Amortized clean-up of waiters that went away.
                if list.len() >= 8 && list.len().is_power_of_two() {
                    list.retain(|w| w.strong_count() > 0);
                }
                list.push(Arc::downgrade(&notify));
            }
        }
        if self.touched_after(topics, since) {
            notify.notify_one();
        }
        Registration { notify }
    }

    /// How many times a parked long-poll was woken (a count for metrics).
    pub fn wakeups(&self) -> u64 {
        self.wakeups.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many registrations (parked long-polls) are alive now: a
    /// measure of load, and what tests wait on before acting on a parked
    /// `/sync` instead of sleeping.
    pub fn waiting(&self) -> usize {
        let waiters = self.waiters.lock();
        let live: std::collections::HashSet<*const Notify> = waiters
            .values()
            .flatten()
            .filter(|w| w.strong_count() > 0)
            .map(Weak::as_ptr)
            .collect();
        live.len()
    }

    /// Wakes the waiters of the topics touched at positions up to `readable`.
    fn wake(&self, readable: i64) {
        let due: Vec<Topic> = {
            let mut pending = self.pending.lock();
            if pending.is_empty() {
                return;
            }
            pending
                .extract_if(.., |(pos, _)| *pos <= readable)
                .map(|(_, topic)| topic)
                .collect()
        };
        let mut waiters = self.waiters.lock();
        for topic in due {
            if let Some(list) = waiters.get_mut(&topic) {
                list.retain(|w| match w.upgrade() {
                    Some(n) => {
                        n.notify_one();
                        self.wakeups
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        true
                    }
                    None => false,
                });
                if list.is_empty() {
                    waiters.remove(&topic);
                }
            }
        }
    }

    /// Whether any of the topics may have changed after `since`: yes when
    /// `since` is from before start-up, else as [`Stream::touched_after`].
    pub fn changed_since(&self, topics: &[Topic], since: i64) -> bool {
        since < self.floor || self.touched_after(topics, since)
    }

    /// Whether any of the topics changed after `since` (this process's
    /// writes only).
    pub fn touched_after(&self, topics: &[Topic], since: i64) -> bool {
        let touched = self.touched.lock();
        topics
            .iter()
            .any(|t| touched.get(t).is_some_and(|pos| *pos > since))
    }

    pub fn reserve(self: &Arc<Self>) -> Reservation {
        let mut inner = self.inner.lock();
        let pos = inner.next;
        inner.next += 1;
        inner.in_flight.insert(pos);
        Reservation {
            stream: self.clone(),
            pos,
            done: false,
        }
    }

    /// Marks a position finished (written or rolled back) and advances the
    /// readable position past every finished one.
    pub fn complete(&self, r: Reservation) {
        self.complete_many([r]);
    }

    /// Completes several positions at once: waiters wake once.
    pub fn complete_many(&self, rs: impl IntoIterator<Item = Reservation>) {
        let positions: Vec<i64> = rs
            .into_iter()
            .map(|mut r| {
                r.done = true;
                r.pos
            })
            .collect();
        self.finish(&positions);
    }

    fn finish(&self, positions: &[i64]) {
        let mut inner = self.inner.lock();
        for pos in positions {
            inner.in_flight.remove(pos);
        }
        let readable = match inner.in_flight.first() {
            Some(first) => first - 1,
            None => inner.next - 1,
        };
        drop(inner);
        let advanced = self.current.send_if_modified(|cur| {
            if readable > *cur {
                *cur = readable;
                true
            } else {
                false
            }
        });
        if advanced {
            self.wake(readable);
        }
    }

    /// The highest position handed out so far (maybe not yet completed).
    pub fn last_reserved(&self) -> i64 {
        self.inner.lock().next - 1
    }

    /// Waits until every position up to `pos` is completed (at most
    /// `timeout`); whether it got there.
    pub async fn wait_for(&self, pos: i64, timeout: std::time::Duration) -> bool {
        let mut rx = self.current.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|cur| *cur >= pos))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The highest position below which everything is persisted.
    pub fn current(&self) -> i64 {
        *self.current.borrow()
    }
}

impl crate::services::workers::CacheSizes for Stream {
    fn cache_sizes(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("touched_topics", self.touched.lock().len()),
            ("waiting_topics", self.waiters.lock().len()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_position_waits_for_gaps() {
        let s = Arc::new(Stream::new(10));
        let a = s.reserve();
        let b = s.reserve();
        assert_eq!((a.pos(), b.pos()), (11, 12));
        s.complete(b);
        assert_eq!(s.current(), 10, "11 is still in flight");
        s.complete(a);
        assert_eq!(s.current(), 12);
    }

    #[test]
    fn a_dropped_reservation_is_completed() {
        let s = Arc::new(Stream::new(10));
        let a = s.reserve();
        let b = s.reserve();
        drop(a);
        assert_eq!(s.current(), 11);
        s.complete_many([b]);
        assert_eq!(s.current(), 12);
        let c = s.reserve();
        let _d = s.reserve();
        drop(c);
        assert_eq!(s.current(), 13, "14 is still held");
    }

    fn room(name: &str) -> Topic {
        Topic::Room(OwnedRoomId::try_from(format!("!{name}:example.org")).unwrap())
    }

    async fn woken(r: &Registration) -> bool {
        tokio::time::timeout(std::time::Duration::from_millis(20), r.notified())
            .await
            .is_ok()
    }

    /// One change at a time: touched, then completed.
    fn change(s: &Arc<Stream>, topic: &Topic) -> Reservation {
        let r = s.reserve();
        s.touch(topic.clone(), r.pos());
        r
    }

    #[tokio::test]
    async fn a_waiter_wakes_only_when_its_topic_becomes_readable() {
        let s = Arc::new(Stream::new(0));
        let reg = s.register(&[room("a")], 0);
        s.complete(change(&s, &room("b")));
        assert!(!woken(&reg).await, "another room's event does not wake it");
        let held = s.reserve();
        let mine = change(&s, &room("a"));
        s.complete(mine);
        assert!(!woken(&reg).await, "its event is not readable yet");
        s.complete(held);
        assert!(woken(&reg).await, "woken once its event is readable");
        assert!(!woken(&reg).await, "once");
    }

    #[tokio::test]
    async fn a_change_before_registering_wakes_at_once() {
        let s = Arc::new(Stream::new(0));
        s.complete(change(&s, &room("a")));
        assert!(woken(&s.register(&[room("a")], 0)).await);
        assert!(
            !woken(&s.register(&[room("a")], 1)).await,
            "nothing after 1"
        );
    }

    #[tokio::test]
    async fn waiters_that_went_away_are_forgotten() {
        let s = Arc::new(Stream::new(0));
        let kept = s.register(&[room("a")], 0);
        for _ in 0..100 {
            drop(s.register(&[room("a")], 0));
        }
        assert!(
            s.waiters.lock()[&room("a")].len() < 100,
            "cleaned as the list grows"
        );
        s.complete(change(&s, &room("a")));
        assert!(woken(&kept).await);
        assert_eq!(
            s.waiters.lock()[&room("a")].len(),
            1,
            "only the live one is left"
        );
        drop(kept);
        s.complete(change(&s, &room("a")));
        assert!(!s.waiters.lock().contains_key(&room("a")));
    }
}
