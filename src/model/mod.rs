//! Plain data types shared by every layer (handlers, services, storage).
//! A leaf: it imports ruma and serde only, never another module of the crate.

pub mod accounts;
pub mod devices;
