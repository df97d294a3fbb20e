//! Plain data types every layer above storage shares: the PDU and its
//! client forms, room state maps, a viewer's transaction ids, who made a
//! request, devices, the words the user directory matches, the stored body
//! of a to-device send. A leaf: it
//! imports ruma, serde and `crate::error` only, never services or storage.

pub mod accounts;
pub mod devices;
pub mod pdu;
pub mod state;
pub mod to_device;
pub mod user_words;
pub mod viewer;
