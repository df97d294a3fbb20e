//! One module per scenario.
//!
//! - `startup`: start time and idle memory of a local Myelin binary.
//! - `rss`: the memory of any running process, by pid.
//! - The load scenarios, which drive any homeserver by URL through
//!   [`crate::client`] and [`crate::load`]: `send`, `wakeup`, `initial_sync`,
//!   `join`, `idle_syncers`, `admin` (which can also start a Myelin), and
//!   `e2e` (`keys-query`, `keys-claim`, `to-device`: issue 19's encryption paths),
//!   `sliding_sync` (`sliding-sync`, `sliding-sync-wakeup`) and `push_fanout`
//!   (issue 21: Element X's sync and push), `appservice` (issue 23:
//!   transactions to an application service, received by a fake one).
//! - `media`: uploads, downloads, thumbnails, and memory during concurrent
//!   big downloads (issue 20).
//! - `large`: a large server written in bulk into a Myelin's database,
//!   against a small one (`large-fixture`).
//! - `smoke`: every load scenario at a tiny size against a Myelin it starts.

pub mod admin;
pub mod appservice;
pub mod e2e;
pub mod idle_syncers;
pub mod initial_sync;
pub mod join;
pub mod large;
pub mod media;
pub mod push_fanout;
pub mod rss;
pub mod send;
pub mod sliding_sync;
pub mod smoke;
pub mod startup;
pub mod wakeup;
