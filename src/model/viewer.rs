//! Which transaction ids a viewer is shown.

use std::collections::HashMap;

use crate::model::pdu::{Pdu, SentWith};

/// The transaction ids a viewer (a user's device) is shown: only for the
/// events that device sent, from the event's own record or, for events read
/// without it, from a lookup (`Rooms::transaction_ids`).
#[derive(Default)]
pub struct ViewerTxns {
    viewer: Option<(String, String)>,
    looked_up: HashMap<String, String>,
}

impl ViewerTxns {
    /// For `device` of `user`, with the transaction ids looked up (by event
    /// id) for its events read without their row.
    pub fn new(user: &str, device: &str, looked_up: HashMap<String, String>) -> Self {
        Self {
            viewer: Some((user.to_owned(), device.to_owned())),
            looked_up,
        }
    }

    /// The viewing user, if known.
    pub fn user(&self) -> Option<&str> {
        self.viewer.as_ref().map(|(user, _)| user.as_str())
    }

    /// The transaction id the viewer sent `pdu` with, if it did.
    pub fn get<'p>(&'p self, pdu: &'p Pdu) -> Option<&'p str> {
        let (user, device) = self.viewer.as_ref()?;
        if pdu.sender.as_str() != user {
            return None;
        }
        match &pdu.sent_with {
            SentWith::Txn { device: d, txn } if **d == **device => Some(txn),
            SentWith::Unknown => self
                .looked_up
                .get(pdu.event_id.as_str())
                .map(String::as_str),
            _ => None,
        }
    }
}
