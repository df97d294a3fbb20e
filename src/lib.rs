//! Myelin: a Matrix homeserver.
//!
//! Layers, top to bottom (see ARCHITECTURE.md):
//! - [`http`]: routing, middleware and thin handlers (client and admin APIs);
//! - [`services`]: the domain logic;
//! - [`storage`]: SQL over SQLite or PostgreSQL.

pub mod backup;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod model;
pub mod net;
pub mod server;
pub mod services;
pub mod storage;
