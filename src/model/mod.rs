//! Plain event types every layer above storage shares: the PDU and its
//! client forms, room state maps, a viewer's transaction ids. Imports
//! ruma, serde and `crate::error` only, never services or storage.

pub mod pdu;
pub mod state;
pub mod viewer;
