//! Server-side key backup through matrix-sdk: Alice turns on recovery
//! (secret storage and a key backup, as Element's "set up recovery"), talks
//! with Bob in an encrypted DM, her SDK uploads the room keys; then she
//! logs in on a second device with an empty store, where the history is
//! undecryptable, recovers with her recovery key (which also cross-signs
//! the new device, as her first device sees), downloads the room keys
//! from the backup and reads the old messages through /messages.

use matrix_sdk::deserialized_responses::TimelineEventKind;
use matrix_sdk::encryption::backups::BackupState;
use matrix_sdk::encryption::recovery::RecoveryState;
use matrix_sdk::room::MessagesOptions;
use serde_json::Value;

use crate::crypto::{
    alice_and_bob, another_device, bootstrap_cross_signing, decrypted_messages, encrypted_dm,
    send_text, sync_decrypted,
};
use crate::sdk::{bodies, sync_all_until};
use crate::server::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_restored_on_a_second_device_decrypts_the_history() {
    let s = TestServer::start().await;
    let (alice, bob) = alice_and_bob(&s).await;
    let (alice_room, bob_room) = encrypted_dm(&s, &alice, &bob).await;
    let room_id = alice_room.room_id().to_owned();
    bootstrap_cross_signing(&alice, "alice").await;

    let recovery = alice.encryption().recovery();
    let recovery_key = recovery
        .enable()
        .wait_for_backups_to_upload()
        .await
        .unwrap_or_else(|e| panic!("alice: SDK recovery().enable() failed: {e:?}"));
    assert_eq!(recovery.state(), RecoveryState::Enabled, "alice: recovery");
    assert_eq!(
        alice.encryption().backups().state(),
        BackupState::Enabled,
        "alice: backups"
    );

    // Two messages of Alice's (her outbound session), one of Bob's (a room
    // key Alice receives to-device); all three sessions' keys go to backup.
    send_text(&alice_room, "alice", "A1: before the new phone").await;
    send_text(&alice_room, "alice", "A2: still before").await;
    sync_decrypted(&bob, "bob", &room_id, 2).await;
    send_text(&bob_room, "bob", "B1: noted").await;
    sync_decrypted(&alice, "alice", &room_id, 3).await;
    alice
        .encryption()
        .backups()
        .wait_for_steady_state()
        .await
        .unwrap_or_else(|e| panic!("alice: SDK backups().wait_for_steady_state failed: {e:?}"));
    let version = backup_version(&s, alice.access_token().as_deref().unwrap()).await;
    assert_eq!(
        version["count"], 2,
        "the server's backup holds Alice's and Bob's sessions: {version}"
    );

    // Alice's second device: a new client, a new in-memory store.
    let alice2 = another_device(&s, "alice").await;
    assert_ne!(alice2.device_id(), alice.device_id(), "a new device");
    let room2 = alice2
        .get_room(&room_id)
        .expect("alice2: the SDK knows the DM after the first sync");
    let history = || async {
        room2
            .messages(MessagesOptions::backward())
            .await
            .unwrap_or_else(|e| panic!("alice2: SDK room.messages failed: {e:?}"))
            .chunk
    };
    let undecryptable = history()
        .await
        .iter()
        .filter(|ev| matches!(ev.kind, TimelineEventKind::UnableToDecrypt { .. }))
        .count();
    assert_eq!(
        undecryptable, 3,
        "alice2: without the backup, the three messages cannot be decrypted"
    );

    let recovery2 = alice2.encryption().recovery();
    recovery2
        .recover(&recovery_key)
        .await
        .unwrap_or_else(|e| panic!("alice2: SDK recovery().recover(key) failed: {e:?}"));
    assert_eq!(
        recovery2.state(),
        RecoveryState::Enabled,
        "alice2: recovery"
    );
    assert!(
        alice2.encryption().backups().are_enabled().await,
        "alice2: the SDK is connected to the backup"
    );
    // The recovery also brought the cross-signing keys: alice2 signed its
    // own device, and her first device sees it verified after a sync.
    let status = alice2.encryption().cross_signing_status().await.unwrap();
    assert!(
        status.is_complete(),
        "alice2: cross-signing keys: {status:?}"
    );
    let alice_id = alice2.user_id().unwrap().to_owned();
    let alice2_device = alice2.device_id().unwrap().to_owned();
    let both = [(&alice2, "alice2"), (&alice, "alice")];
    sync_all_until(&both, "alice2 cross-signed, seen by alice", async || {
        alice
            .encryption()
            .get_device(&alice_id, &alice2_device)
            .await
            .unwrap()
            .is_some_and(|d| d.is_cross_signed_by_owner() && d.is_verified())
    })
    .await;

    alice2
        .encryption()
        .backups()
        .download_room_keys_for_room(&room_id)
        .await
        .unwrap_or_else(|e| panic!("alice2: SDK download_room_keys_for_room failed: {e:?}"));
    assert_eq!(
        bodies(&decrypted_messages("alice2", &history().await)),
        ["B1: noted", "A2: still before", "A1: before the new phone"],
        "alice2: the history decrypted with the keys from the backup"
    );
}

/// `GET /room_keys/version` (the current backup) with `token`, plain HTTP.
async fn backup_version(s: &TestServer, token: &str) -> Value {
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/_matrix/client/v3/room_keys/version",
            s.base_url
        ))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET /room_keys/version");
    assert!(
        resp.status().is_success(),
        "GET /room_keys/version: {}",
        resp.status()
    );
    resp.json().await.expect("backup version JSON")
}
