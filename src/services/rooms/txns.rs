//! Which client transactions each device has sent, kept in memory so that a
//! new transaction id (nearly every send) is known to be new without a query.
//!
//! A send first asks whether its transaction id already made an event (a
//! retry). `event_transactions` knows. For a device this filter has loaded,
//! it holds a hash of every (scope, transaction id) the device has in the
//! database or in the write queue, so a hash it lacks means "never sent"; a
//! hash it holds means only "maybe", and the database decides. A collision
//! or a purged row costs a query, never a wrong answer.
//!
//! Loading a device ([`super::Rooms::transaction_event`]): make its entry,
//! note the last stream position handed out, wait until every position up to
//! it is written, then read the device's rows. An event queued before the
//! entry existed is in the database by then; one queued after it went into
//! the entry ([`SentTxns::note`], called once the event has its position).
//!
//! Memory is bounded: past `max_total` hashes in all, the filter forgets
//! every device (each loads again on its next send), and a device with more
//! than `max_device` transactions is not held: it asks the database each
//! time, as every device did before this filter.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

use parking_lot::Mutex;

/// What the filter knows about one transaction id.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Known {
    /// The device never sent it: no event to look up.
    New,
    /// The device may have sent it: ask the database.
    Maybe,
    /// The device is not loaded: load it (or ask the database).
    Unloaded,
}

pub(super) struct SentTxns {
    max_total: usize,
    max_device: usize,
    inner: Mutex<Inner>,
}

impl Inner {
    fn device(&self, user: &str, device: &str) -> Option<&Device> {
        self.devices.get(user)?.get(device)
    }

    fn device_mut(&mut self, user: &str, device: &str) -> Option<&mut Device> {
        self.devices.get_mut(user)?.get_mut(device)
    }

    fn remove(&mut self, user: &str, device: &str) {
        if let Some(devices) = self.devices.get_mut(user) {
            devices.remove(device);
            if devices.is_empty() {
                self.devices.remove(user);
            }
        }
    }
}

#[derive(Default)]
struct Inner {
    /// By user id, then device id: looked up by `&str`, so the checks on
    /// every send allocate nothing.
    devices: HashMap<String, HashMap<String, Device>>,
    /// Hashes held in all.
    total: usize,
    next_epoch: u64,
}

struct Device {
    /// Told apart from an entry made after the filter forgot this one.
    epoch: u64,
    state: Load,
    hashes: HashSet<u32>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Load {
    /// Being read from the database; `hashes` holds what was queued since.
    Loading,
    Loaded,
    /// More than `max_device` transactions: always ask the database.
    TooMany,
}

/// A short hash of a transaction's scope and id. The same in every call (a
/// fixed-key hasher); short because a collision only costs a query.
fn hash(scope: &str, txn: &str) -> u32 {
    let h = BuildHasherDefault::<DefaultHasher>::default().hash_one((scope, txn));
    (h ^ (h >> 32)) as u32
}

impl SentTxns {
    /// The server's limits: 2^18 hashes in all (a few MiB at most), and
    /// devices with up to 2^16 transactions.
    pub fn new() -> Self {
        Self::with_limits(1 << 18, 1 << 16)
    }

    /// Hashes held in all.
    pub fn hashes(&self) -> usize {
        self.inner.lock().total
    }

    pub fn with_limits(max_total: usize, max_device: usize) -> Self {
        Self {
            max_total,
            max_device,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The most rows a load reads: one more than a device may hold, to
    /// tell a device with too many.
    pub fn load_limit(&self) -> usize {
        self.max_device + 1
    }

    pub fn check(&self, user: &str, device: &str, scope: &str, txn: &str) -> Known {
        let inner = self.inner.lock();
        match inner.device(user, device) {
            None => Known::Unloaded,
            Some(d) => match d.state {
                Load::Loaded if !d.hashes.contains(&hash(scope, txn)) => Known::New,
                Load::Loaded | Load::Loading | Load::TooMany => Known::Maybe,
            },
        }
    }

    /// Records a transaction queued for writing. Call it after the event's
    /// stream position is reserved (see the module's comment).
    pub fn note(&self, user: &str, device: &str, scope: &str, txn: &str) {
        let mut inner = self.inner.lock();
        let Some(d) = inner.device_mut(user, device) else {
            return;
        };
        if d.state == Load::TooMany || !d.hashes.insert(hash(scope, txn)) {
            return;
        }
        inner.total += 1;
        self.forget_all_if_full(&mut inner);
    }

    /// Starts loading a device: makes its entry and returns the load, to be
    /// finished with the device's rows. `None` if the device is loaded or
    /// being loaded. A load dropped unfinished (its request went away while
    /// it waited) counts as failed, so the device is not left half-loaded.
    pub fn begin(&self, user: &str, device: &str) -> Option<Loading<'_>> {
        let epoch = self.begin_load(user, device)?;
        Some(Loading {
            txns: self,
            user: user.to_owned(),
            device: device.to_owned(),
            epoch,
            finished: false,
        })
    }

    fn begin_load(&self, user: &str, device: &str) -> Option<u64> {
        let mut inner = self.inner.lock();
        if inner.device(user, device).is_some() {
            return None;
        }
        let epoch = inner.next_epoch;
        inner.next_epoch += 1;
        inner.devices.entry(user.to_owned()).or_default().insert(
            device.to_owned(),
            Device {
                epoch,
                state: Load::Loading,
                hashes: HashSet::new(),
            },
        );
        Some(epoch)
    }

    /// Ends a load begun at `epoch` with the device's rows, or with `None`
    /// if they could not be read (the entry goes; the next send tries again).
    /// Does nothing if the filter forgot the device meanwhile.
    fn finish_load(
        &self,
        user: &str,
        device: &str,
        epoch: u64,
        rows: Option<Vec<(String, String)>>,
    ) {
        let mut inner = self.inner.lock();
        let Some(d) = inner.device_mut(user, device) else {
            return;
        };
        if d.epoch != epoch || d.state != Load::Loading {
            return;
        }
        let Some(rows) = rows else {
            let held = d.hashes.len();
            inner.remove(user, device);
            inner.total -= held;
            return;
        };
        let before = d.hashes.len();
        if rows.len() > self.max_device {
            d.state = Load::TooMany;
            d.hashes = HashSet::new();
            inner.total -= before;
            return;
        }
        d.hashes
            .extend(rows.iter().map(|(scope, txn)| hash(scope, txn)));
        d.state = Load::Loaded;
        let added = d.hashes.len() - before;
        inner.total += added;
        self.forget_all_if_full(&mut inner);
    }

    fn forget_all_if_full(&self, inner: &mut Inner) {
        if inner.total > self.max_total {
            inner.devices.clear();
            inner.total = 0;
        }
    }

    #[cfg(test)]
    fn total(&self) -> usize {
        self.inner.lock().total
    }
}

/// A device's load in progress ([`SentTxns::begin`]).
pub(super) struct Loading<'a> {
    txns: &'a SentTxns,
    user: String,
    device: String,
    epoch: u64,
    finished: bool,
}

impl Loading<'_> {
    /// Ends the load with the device's rows, or `None` if they could not be
    /// read.
    pub fn finish(mut self, rows: Option<Vec<(String, String)>>) {
        self.finished = true;
        self.txns
            .finish_load(&self.user, &self.device, self.epoch, rows);
    }
}

impl Drop for Loading<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.txns
                .finish_load(&self.user, &self.device, self.epoch, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize) -> Option<Vec<(String, String)>> {
        Some(
            (0..n)
                .map(|i| ("send:!r".to_owned(), format!("t{i}")))
                .collect(),
        )
    }

    #[test]
    fn an_unloaded_device_is_unloaded_and_notes_to_it_are_dropped() {
        let f = SentTxns::with_limits(100, 10);
        assert_eq!(f.check("@a:x", "D", "s", "t"), Known::Unloaded);
        f.note("@a:x", "D", "s", "t");
        assert_eq!(f.check("@a:x", "D", "s", "t"), Known::Unloaded);
        assert_eq!(f.total(), 0);
    }

    #[test]
    fn a_loaded_device_answers_new_only_for_what_it_never_sent() {
        let f = SentTxns::with_limits(100, 10);
        let epoch = f.begin_load("@a:x", "D").unwrap();
        assert_eq!(
            f.check("@a:x", "D", "send:!r", "t0"),
            Known::Maybe,
            "loading"
        );
        f.finish_load("@a:x", "D", epoch, rows(3));
        assert_eq!(f.check("@a:x", "D", "send:!r", "t0"), Known::Maybe);
        assert_eq!(f.check("@a:x", "D", "send:!r", "t2"), Known::Maybe);
        assert_eq!(f.check("@a:x", "D", "send:!r", "t3"), Known::New);
        assert_eq!(f.check("@a:x", "D", "send:!other", "t0"), Known::New);
        assert_eq!(f.check("@a:x", "E", "send:!r", "t0"), Known::Unloaded);
        f.note("@a:x", "D", "send:!r", "t3");
        assert_eq!(f.check("@a:x", "D", "send:!r", "t3"), Known::Maybe);
        assert_eq!(f.total(), 4);
        assert_eq!(f.begin_load("@a:x", "D"), None, "already loaded");
    }

    #[test]
    fn what_is_queued_while_loading_is_kept() {
        let f = SentTxns::with_limits(100, 10);
        let epoch = f.begin_load("@a:x", "D").unwrap();
        assert_eq!(f.begin_load("@a:x", "D"), None, "one load at a time");
        f.note("@a:x", "D", "send:!r", "queued");
        f.finish_load("@a:x", "D", epoch, rows(2));
        assert_eq!(f.check("@a:x", "D", "send:!r", "queued"), Known::Maybe);
        assert_eq!(f.check("@a:x", "D", "send:!r", "t1"), Known::Maybe);
        assert_eq!(f.total(), 3);
    }

    #[test]
    fn a_failed_load_leaves_the_device_unloaded() {
        let f = SentTxns::with_limits(100, 10);
        let epoch = f.begin_load("@a:x", "D").unwrap();
        f.note("@a:x", "D", "send:!r", "queued");
        f.finish_load("@a:x", "D", epoch, None);
        assert_eq!(f.check("@a:x", "D", "send:!r", "queued"), Known::Unloaded);
        assert_eq!(f.total(), 0);
        assert!(f.begin_load("@a:x", "D").is_some());
    }

    #[test]
    fn a_load_dropped_unfinished_leaves_the_device_unloaded() {
        let f = SentTxns::with_limits(100, 10);
        let loading = f.begin("@a:x", "D").unwrap();
        assert!(f.begin("@a:x", "D").is_none());
        assert_eq!(f.check("@a:x", "D", "send:!r", "t"), Known::Maybe);
        drop(loading);
        assert_eq!(f.check("@a:x", "D", "send:!r", "t"), Known::Unloaded);
        f.begin("@a:x", "D").unwrap().finish(rows(1));
        assert_eq!(f.check("@a:x", "D", "send:!r", "t0"), Known::Maybe);
        assert_eq!(f.check("@a:x", "D", "send:!r", "t"), Known::New);
    }

    #[test]
    fn a_device_with_too_many_always_asks_the_database() {
        let f = SentTxns::with_limits(100, 10);
        let epoch = f.begin_load("@a:x", "D").unwrap();
        f.finish_load("@a:x", "D", epoch, rows(f.load_limit()));
        assert_eq!(f.check("@a:x", "D", "send:!r", "never"), Known::Maybe);
        f.note("@a:x", "D", "send:!r", "more");
        assert_eq!(f.total(), 0);
        assert_eq!(f.begin_load("@a:x", "D"), None);
    }

    #[test]
    fn past_the_total_every_device_is_forgotten_and_late_loads_are_dropped() {
        let f = SentTxns::with_limits(10, 8);
        let a = f.begin_load("@a:x", "A").unwrap();
        let b = f.begin_load("@b:x", "B").unwrap();
        f.finish_load("@a:x", "A", a, rows(8));
        assert_eq!(f.total(), 8);
        for i in 0..3 {
            f.note("@a:x", "A", "send:!r", &format!("new{i}"));
        }
        assert_eq!(f.total(), 0, "11 > 10: forgotten");
        assert_eq!(f.check("@a:x", "A", "send:!r", "t0"), Known::Unloaded);
        // B's load began before the forgetting: its rows may miss what was
        // noted to the forgotten entry, so they are not taken.
        f.finish_load("@b:x", "B", b, rows(1));
        assert_eq!(f.check("@b:x", "B", "send:!r", "x"), Known::Unloaded);
        // A load begun again is a new epoch; the old one's end is ignored.
        let b2 = f.begin_load("@b:x", "B").unwrap();
        f.finish_load("@b:x", "B", b, rows(1));
        assert_eq!(
            f.check("@b:x", "B", "send:!r", "x"),
            Known::Maybe,
            "still loading"
        );
        f.finish_load("@b:x", "B", b2, rows(1));
        assert_eq!(f.check("@b:x", "B", "send:!r", "x"), Known::New);
    }
}
