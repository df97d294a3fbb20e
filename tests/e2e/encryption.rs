//! Two users talk in an encrypted DM through matrix-sdk with its Olm
//! machine: device keys and one-time keys uploaded, Olm sessions claimed,
//! Megolm room keys sent to-device, and each side reads the other's
//! plaintext, through /sync and through /messages.

use matrix_sdk::room::MessagesOptions;

use crate::crypto::{alice_and_bob, decrypted_messages, encrypted_dm, send_text, sync_decrypted};
use crate::sdk::bodies;
use crate::server::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_dm_each_reads_the_others_plaintext() {
    let s = TestServer::start().await;
    let (alice, bob) = alice_and_bob(&s).await;

    let (alice_room, bob_room) = encrypted_dm(&s, &alice, &bob).await;
    let room_id = alice_room.room_id().to_owned();

    let a1 = send_text(&alice_room, "alice", "A1: secret hello").await;
    let a2 = send_text(&alice_room, "alice", "A2: only you can read this").await;
    let seen = sync_decrypted(&bob, "bob", &room_id, 2).await;
    assert_eq!(
        bodies(&seen),
        ["A1: secret hello", "A2: only you can read this"],
        "bob decrypts alice's messages"
    );
    assert_eq!(
        [seen[0].event_id.as_str(), seen[1].event_id.as_str()],
        [a1.as_str(), a2.as_str()]
    );
    assert!(seen.iter().all(|m| m.sender == s.user_id("alice")));

    let b1 = send_text(&bob_room, "bob", "B1: read you loud and clear").await;
    let seen = sync_decrypted(&alice, "alice", &room_id, 3).await;
    assert_eq!(
        bodies(&seen),
        [
            "A1: secret hello",
            "A2: only you can read this",
            "B1: read you loud and clear"
        ],
        "alice decrypts her own messages and bob's"
    );
    assert_eq!(seen[2].event_id, b1);
    assert_eq!(seen[2].sender, s.user_id("bob"));

    // The ciphertext on the server: /messages gives m.room.encrypted events
    // that each SDK decrypts to the same plaintext, newest first.
    for (who, room) in [("alice", &alice_room), ("bob", &bob_room)] {
        let page = room
            .messages(MessagesOptions::backward())
            .await
            .unwrap_or_else(|e| panic!("{who}: SDK room.messages failed: {e:?}"));
        assert_eq!(
            bodies(&decrypted_messages(who, &page.chunk)),
            [
                "B1: read you loud and clear",
                "A2: only you can read this",
                "A1: secret hello"
            ],
            "{who}: /messages decrypted"
        );
        let encrypted = page
            .chunk
            .iter()
            .filter(|ev| ev.encryption_info().is_some())
            .count();
        assert_eq!(encrypted, 3, "{who}: three events arrived encrypted");
    }
}
