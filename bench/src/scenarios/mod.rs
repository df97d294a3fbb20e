//! One module per scenario.
//!
//! - `startup`: start time and idle memory of a local Myelin binary.
//! - `rss`: the memory of any running process, by pid.
//!
//! Planned (the load tool; they drive any homeserver by URL through
//! [`crate::client`]): `send`, `wakeup`, `initial-sync`, `join`, `idle-syncers`.

pub mod rss;
pub mod startup;
