//! End-to-end tests driven by a real client library, matrix-sdk (in-memory
//! store, no encryption), against a Myelin started in-process. One binary,
//! separate from tests/api (the black-box HTTP suite), because of the SDK's
//! compile cost: `cargo test --test e2e`.
//!
//! `RUST_LOG=matrix_sdk=debug cargo test --test e2e -- --nocapture` logs
//! every request the SDK sends.
#![allow(
    clippy::too_many_lines,
    reason = "a test reads best as one scenario, top to bottom"
)]

#[path = "../common/scratch.rs"]
mod scratch;
mod sdk;
mod server;

mod chat; // two users: create room, invite, join, send, sync, /messages, topic, leave
mod history; // limited timeline + /messages from prev_batch, redaction
mod js_interop; // matrix-js-sdk's Rust crypto (node) and matrix-sdk decrypt each other
mod room_state; // the full room state in the first sync after a join
mod startup; // versions, capabilities, login, whoami, devices, push rules, filter, display name
