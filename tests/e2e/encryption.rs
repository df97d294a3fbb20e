//! Two users talk in an encrypted DM through matrix-sdk with its Olm
//! machine: device keys and one-time keys uploaded, Olm sessions claimed,
//! Megolm room keys sent to-device, and each side reads the other's
//! plaintext, through /sync and through /messages.

use matrix_sdk::Client;
use matrix_sdk::deserialized_responses::VerificationState;
use matrix_sdk::encryption::identities::UserIdentity;
use matrix_sdk::encryption::verification::Verification;
use matrix_sdk::room::MessagesOptions;
use matrix_sdk::ruma::UserId;
use serde_json::{Value, json};

use crate::crypto::{
    alice_and_bob, bootstrap_cross_signing, decrypted_messages, encrypted_dm, send_text,
    sync_decrypted,
};
use crate::sdk::{bodies, sync_all_until, sync_until};
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

/// Both users bootstrap cross-signing, then verify each other with SAS over
/// to-device messages (a verification request to the other's device, ready,
/// start, accept, keys, emoji compared, MACs, done): afterwards each SDK
/// holds the other's identity as verified, the user-signing signatures are
/// on the server for everyone to see, and a message between them carries a
/// verified sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_signing_then_sas_verification_over_to_device() {
    let s = TestServer::start().await;
    let (alice, bob) = alice_and_bob(&s).await;
    let alice_id = UserId::parse(s.user_id("alice")).unwrap();
    let bob_id = UserId::parse(s.user_id("bob")).unwrap();
    let (alice_room, _bob_room) = encrypted_dm(&s, &alice, &bob).await;
    let both = [(&alice, "alice"), (&bob, "bob")];

    bootstrap_cross_signing(&alice, "alice").await;
    bootstrap_cross_signing(&bob, "bob").await;
    // Each learns the other's new identity through device_lists.changed and
    // /keys/query.
    sync_all_until(&both, "each other's cross-signing identity", async || {
        identity(&alice, &bob_id).await.is_some() && identity(&bob, &alice_id).await.is_some()
    })
    .await;
    for (client, who, other) in [(&alice, "alice", &bob_id), (&bob, "bob", &alice_id)] {
        assert!(
            !is_verified(client, other).await,
            "{who}: {other} is not verified before SAS"
        );
    }

    // Alice asks to verify Bob's device; the request travels to-device.
    let bob_device_id = bob.device_id().expect("bob has a device").to_owned();
    let bob_device = alice
        .encryption()
        .get_device(&bob_id, &bob_device_id)
        .await
        .unwrap()
        .expect("alice: the SDK knows bob's device");
    let alice_request = bob_device
        .request_verification()
        .await
        .unwrap_or_else(|e| panic!("alice: SDK request_verification failed: {e:?}"));
    assert_eq!(alice_request.room_id(), None, "a to-device request");
    let flow_id = alice_request.flow_id().to_owned();

    let mut bob_request = None;
    sync_all_until(
        &[(&bob, "bob")],
        "alice's verification request",
        async || {
            bob_request = bob
                .encryption()
                .get_verification_request(&alice_id, &flow_id)
                .await;
            bob_request.is_some()
        },
    )
    .await;
    let bob_request = bob_request.unwrap();
    bob_request
        .accept()
        .await
        .unwrap_or_else(|e| panic!("bob: SDK accept request failed: {e:?}"));
    sync_all_until(
        &[(&alice, "alice")],
        "bob's m.key.verification.ready",
        async || alice_request.is_ready(),
    )
    .await;

    let alice_sas = alice_request
        .start_sas()
        .await
        .unwrap_or_else(|e| panic!("alice: SDK start_sas failed: {e:?}"))
        .expect("alice: SAS started");
    let mut bob_sas = None;
    sync_all_until(
        &[(&bob, "bob")],
        "alice's m.key.verification.start",
        async || {
            bob_sas = bob
                .encryption()
                .get_verification(&alice_id, &flow_id)
                .await
                .and_then(Verification::sas);
            bob_sas.is_some()
        },
    )
    .await;
    let bob_sas = bob_sas.unwrap();
    // Bob accepts the start; for Alice, who started, accepting is a no-op.
    for (who, sas) in [("bob", &bob_sas), ("alice", &alice_sas)] {
        sas.accept()
            .await
            .unwrap_or_else(|e| panic!("{who}: SDK SAS accept failed: {e:?}"));
    }
    sync_all_until(&both, "the SAS keys exchanged", async || {
        alice_sas.can_be_presented() && bob_sas.can_be_presented()
    })
    .await;

    // What each user would compare on screen.
    let alice_emoji = alice_sas.emoji().expect("alice: emoji");
    let bob_emoji = bob_sas.emoji().expect("bob: emoji");
    assert_eq!(alice_emoji, bob_emoji, "both show the same emoji");
    assert_eq!(
        alice_sas.decimals(),
        bob_sas.decimals(),
        "both show the same decimals"
    );
    for (who, sas) in [("alice", &alice_sas), ("bob", &bob_sas)] {
        sas.confirm()
            .await
            .unwrap_or_else(|e| panic!("{who}: SDK SAS confirm failed: {e:?}"));
    }
    sync_all_until(&both, "both SAS done", async || {
        alice_sas.is_done() && bob_sas.is_done()
    })
    .await;
    assert!(!alice_sas.is_cancelled() && !bob_sas.is_cancelled());
    // Each SDK signs the other's master key with its user-signing key and
    // uploads the signature; the server reports the change back to the
    // signer alone in device_lists.changed, the SDK queries again.
    sync_all_until(&both, "each other's identity verified", async || {
        is_verified(&alice, &bob_id).await && is_verified(&bob, &alice_id).await
    })
    .await;

    for (client, who, other) in [(&alice, "alice", &bob_id), (&bob, "bob", &alice_id)] {
        let device = client
            .encryption()
            .get_user_devices(other)
            .await
            .unwrap()
            .devices()
            .next()
            .expect("the other's device");
        assert!(
            device.is_verified(),
            "{who}: {other}'s device is verified after SAS"
        );
    }

    // The SDK uploaded a user-signing signature of the other's master key:
    // /keys/query serves it.
    for (client, who, other) in [(&alice, "alice", &bob_id), (&bob, "bob", &alice_id)] {
        let master = query_master_key(&s, client, other).await;
        let signers: Vec<String> = master["signatures"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        assert!(
            signers.contains(&client.user_id().unwrap().to_string()),
            "{who}: /keys/query shows {who}'s signature on {other}'s master key: {master}"
        );
    }

    // A message from Bob to Alice now carries a verified sender.
    let room_id = alice_room.room_id().to_owned();
    let bob_room = bob.get_room(&room_id).unwrap();
    send_text(&bob_room, "bob", "B1: verified now").await;
    let mut info = None;
    sync_until(&alice, "alice", "bob's message", |r| {
        if let Some(j) = r.rooms.joined.get(&room_id) {
            for ev in &j.timeline.events {
                if decrypted_messages("alice", std::slice::from_ref(ev))
                    .iter()
                    .any(|m| m.body == "B1: verified now")
                {
                    info = ev.encryption_info().cloned();
                }
            }
        }
        info.is_some()
    })
    .await;
    let info = info.unwrap();
    assert!(
        info.verification_state == VerificationState::Verified,
        "alice: bob's message is from a verified device: {:?}",
        info.verification_state
    );
}

/// `POST /keys/query` for `user` with `client`'s access token (plain HTTP):
/// the master key as the server serves it.
async fn query_master_key(s: &TestServer, client: &Client, user: &UserId) -> Value {
    let token = client.access_token().expect("logged in");
    let resp: Value = reqwest::Client::new()
        .post(format!("{}/_matrix/client/v3/keys/query", s.base_url))
        .bearer_auth(token)
        .json(&json!({"device_keys": {user.as_str(): []}}))
        .send()
        .await
        .expect("keys/query")
        .json()
        .await
        .expect("keys/query JSON");
    resp["master_keys"][user.as_str()].clone()
}

/// Whether `client`'s SDK holds `other`'s identity as verified.
async fn is_verified(client: &Client, other: &UserId) -> bool {
    identity(client, other)
        .await
        .is_some_and(|i| i.is_verified())
}

/// `other`'s cross-signing identity as `client`'s SDK holds it.
async fn identity(client: &Client, other: &UserId) -> Option<UserIdentity> {
    client
        .encryption()
        .get_user_identity(other)
        .await
        .unwrap_or_else(|e| panic!("SDK get_user_identity({other}) failed: {e:?}"))
}
