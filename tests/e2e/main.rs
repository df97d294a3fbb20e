//! End-to-end tests driven by a real client library, matrix-sdk (in-memory
//! stores, its `e2e-encryption` feature on), against a Myelin started
//! in-process. One binary, separate from tests/api (the black-box HTTP
//! suite), because of the SDK's compile cost: `cargo test --test e2e`.
//!
//! Besides plain chat, the encryption suite (issue 19's matrix-sdk client
//! test) runs the SDK's Olm machine against the server: an encrypted DM
//! where each side reads the other's plaintext (`encryption`); cross-signing
//! bootstrap and SAS verification, over to-device and in the DM, until both
//! identities are verified, then a reset of the keys with password UIA that
//! the other side sees break the verification (`verification`); a key
//! backup restored with the recovery key on a second device that then
//! decrypts the history (`backup_restore`); a deleted device dropped from
//! the room key's recipients (`device_deletion`). Media (`media`): attachments,
//! thumbnails and an avatar through the authenticated endpoints.
//! Each waits on what the SDK reports after bounded `sync_once` loops.
//!
//! `RUST_LOG=matrix_sdk=debug cargo test --test e2e -- --nocapture` logs
//! every request the SDK sends.
#![allow(
    clippy::too_many_lines,
    reason = "a test reads best as one scenario, top to bottom"
)]

mod crypto;
#[path = "../common/scratch.rs"]
mod scratch;
mod sdk;
mod server;

mod backup_restore; // alice's key backup restored on her second device
mod chat; // two users: create room, invite, join, send, sync, /messages, topic, leave
mod device_deletion; // a deleted device stops receiving room keys
mod element_x; // matrix-sdk-ui (Element X): room list, latest event, unread counts, timeline, upgrade, space
mod encryption; // an encrypted DM: each side reads the other's plaintext
mod history; // limited timeline + /messages from prev_batch, redaction
mod js_interop; // matrix-js-sdk's Rust crypto (node) and matrix-sdk decrypt each other
mod media; // send_attachment of an image and a file, downloads and a thumbnail, an avatar a third user sees
mod room_state; // the full room state in the first sync after a join
mod startup; // versions, capabilities, login, whoami, devices, push rules, filter, display name
mod verification; // cross-signing, SAS over to-device and in the DM, a reset with UIA
