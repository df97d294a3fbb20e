//! What the event pipeline tells the rest of the server: the writer
//! (`rooms/writer.rs`) publishes every committed batch of events to the
//! subscribers registered at start-up (`Services::new`). Search indexing,
//! unread counts and the ephemeral messages' expiry listen here today; push, federation sending and application
//! services will too, so the room service never learns about them.
//!
//! A subscriber is called on the writer task, after the batch is committed
//! and before its stream positions complete (so before any `/sync` or
//! sender sees them): whatever it does there must be cheap (memory only).
//! Slower work (reading other events, say) goes to a task of its own, which
//! no client can cancel; if the senders must not be answered before that
//! work is done, the subscriber returns a [`Settled`] for the batch, which
//! each sender waits for (a sender that goes away stops waiting, the work
//! goes on).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use parking_lot::RwLock;
use ruma::OwnedEventId;

use crate::error::Result;
use crate::model::pdu::Pdu;

/// A boxed future that may cross threads.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One committed event as a subscriber sees it.
#[derive(Clone)]
pub struct Committed {
    /// The event, as cached (`stream_ordering` and `state_group` set).
    pub pdu: Arc<Pdu>,
    /// Its position in the global stream.
    pub pos: i64,
    /// For a redaction, the event it redacts.
    pub redacts: Option<OwnedEventId>,
}

/// Finds events by id (the room service's event cache, then the database),
/// for subscribers that need the events a new one points at.
pub trait EventLookup: Send + Sync {
    fn event<'a>(&'a self, event_id: &'a str) -> BoxFuture<'a, Result<Option<Arc<Pdu>>>>;

    /// The ids of the `m.replace` edits of an event.
    fn edits_of<'a>(&'a self, event_id: &'a str) -> BoxFuture<'a, Result<Vec<OwnedEventId>>>;
}

/// A batch of committed events, in stream order.
pub struct Batch {
    pub events: Arc<[Committed]>,
    /// Looks up other events (for the work a subscriber does off the
    /// writer task).
    pub lookup: Arc<dyn EventLookup>,
}

/// Something that listens to committed events.
pub trait Subscriber: Send + Sync {
    /// Called on the writer task for every committed batch (see the module
    /// docs: cheap work only). Returns a [`Settled`] when the batch's
    /// senders must wait for work it goes on with elsewhere.
    fn committed(&self, batch: &Batch) -> Option<Settled>;
}

/// Work a subscriber goes on with after [`Subscriber::committed`]: done
/// when its [`SettledWhenDropped`] is dropped.
#[derive(Clone)]
pub struct Settled(tokio::sync::watch::Receiver<()>);

/// The other end of a [`Settled`]: drop it when the work is done (also
/// when it failed, or its task ended).
pub struct SettledWhenDropped(#[allow(dead_code)] tokio::sync::watch::Sender<()>);

impl Settled {
    pub fn new() -> (SettledWhenDropped, Self) {
        let (tx, rx) = tokio::sync::watch::channel(());
        (SettledWhenDropped(tx), Self(rx))
    }

    /// Waits until the work is done.
    pub async fn wait(mut self) {
        // Nothing is ever sent: `changed` ends with an error once the
        // sender is dropped.
        while self.0.changed().await.is_ok() {}
    }
}

/// The subscribers, registered at start-up.
#[derive(Default)]
pub struct Subscribers(RwLock<Vec<Arc<dyn Subscriber>>>);

impl Subscribers {
    pub fn subscribe(&self, subscriber: Arc<dyn Subscriber>) {
        self.0.write().push(subscriber);
    }

    /// Hands a committed batch to every subscriber; returns what the
    /// senders wait for.
    pub fn publish(&self, batch: &Batch) -> Vec<Settled> {
        if batch.events.is_empty() {
            return Vec::new();
        }
        self.0
            .read()
            .iter()
            .filter_map(|s| s.committed(batch))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Settled;

    #[tokio::test]
    async fn settled_is_done_once_its_sender_is_dropped() {
        let (done, settled) = Settled::new();
        let waiting = tokio::spawn(settled.clone().wait());
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(done);
        waiting.await.unwrap();
        // Waiting after the fact ends at once.
        settled.wait().await;
    }
}
