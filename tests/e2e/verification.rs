//! Verification through matrix-sdk: both users bootstrap cross-signing
//! (password UIA as the SDK documents it), then verify each other with SAS
//! (request, ready, start, accept, keys, emoji and decimals compared, MACs,
//! done), once over to-device messages to the other's device and once in
//! their encrypted DM (the user verification Element starts). Afterwards
//! each SDK holds the other's identity and device as verified, /keys/query
//! serves each one's user-signing signature of the other's master key, and
//! a message between them carries a verified sender. Then a reset of
//! Alice's cross-signing keys needs password UIA, and Bob's SDK sees the
//! verification broken.

use matrix_sdk::Client;
use matrix_sdk::deserialized_responses::VerificationState;
use matrix_sdk::encryption::CrossSigningResetAuthType;
use matrix_sdk::encryption::identities::UserIdentity;
use matrix_sdk::encryption::verification::{Verification, VerificationRequest};
use matrix_sdk::room::Room;
use matrix_sdk::ruma::api::client::uiaa::AuthType;
use matrix_sdk::ruma::{OwnedUserId, UserId};
use serde_json::{Value, json};

use crate::crypto::{
    alice_and_bob, bootstrap_cross_signing, decrypted_messages, encrypted_dm, password_auth,
    send_text,
};
use crate::sdk::{sync_all_until, sync_until};
use crate::server::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sas_verification_over_to_device() {
    let p = Pair::cross_signed().await;
    // Alice asks to verify Bob's device; the request travels to-device.
    let bob_device_id = p.bob.device_id().expect("bob has a device");
    let bob_device = p
        .alice
        .encryption()
        .get_device(&p.bob_id, bob_device_id)
        .await
        .unwrap()
        .expect("alice: the SDK knows bob's device");
    let request = bob_device
        .request_verification()
        .await
        .unwrap_or_else(|e| panic!("alice: SDK request_verification failed: {e:?}"));
    assert_eq!(request.room_id(), None, "a to-device request");
    p.complete_sas(&request).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sas_verification_in_the_encrypted_dm() {
    let p = Pair::cross_signed().await;
    // Alice asks to verify Bob the user; the request is an (encrypted)
    // m.room.message of msgtype m.key.verification.request in their DM.
    let request = p.request_user_verification().await;
    assert_eq!(
        request.room_id(),
        Some(p.alice_room.room_id()),
        "an in-room request, in the DM"
    );
    p.complete_sas(&request).await;
}

/// After verifying Bob, Alice resets her cross-signing identity: replacing
/// the keys needs UIA (password), and Bob's SDK, told through
/// device_lists.changed, sees a verification violation (a previously
/// verified user whose identity changed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resetting_cross_signing_needs_uia_and_breaks_the_verification() {
    let p = Pair::cross_signed().await;
    let request = p.request_user_verification().await;
    p.complete_sas(&request).await;
    let old_master = identity(&p.bob, &p.alice_id)
        .await
        .unwrap()
        .master_key()
        .get_first_key()
        .map(|k| k.to_base64());

    let handle = p
        .alice
        .encryption()
        .reset_cross_signing()
        .await
        .unwrap_or_else(|e| panic!("alice: SDK reset_cross_signing failed: {e:?}"))
        .expect("replacing cross-signing keys needs auth");
    let CrossSigningResetAuthType::Uiaa(uiaa) = handle.auth_type() else {
        panic!("alice: a UIA challenge, not {:?}", handle.auth_type());
    };
    assert!(
        uiaa.flows.iter().any(|f| f.stages == [AuthType::Password]),
        "a password flow: {uiaa:?}"
    );
    let auth = password_auth("alice", uiaa.session.clone());
    handle
        .auth(Some(auth))
        .await
        .unwrap_or_else(|e| panic!("alice: SDK reset with password failed: {e:?}"));

    sync_all_until(&[(&p.bob, "bob")], "alice's new identity", async || {
        identity(&p.bob, &p.alice_id)
            .await
            .is_some_and(|i| i.master_key().get_first_key().map(|k| k.to_base64()) != old_master)
    })
    .await;
    let alice_seen_by_bob = identity(&p.bob, &p.alice_id).await.unwrap();
    assert!(
        !alice_seen_by_bob.is_verified(),
        "bob: alice's new identity is not verified"
    );
    assert!(
        alice_seen_by_bob.has_verification_violation(),
        "bob: alice was verified and changed her identity"
    );
}

/// Alice and Bob in an encrypted DM, both with cross-signing bootstrapped
/// and each other's identity known (not verified).
struct Pair {
    s: TestServer,
    alice: Client,
    bob: Client,
    alice_id: OwnedUserId,
    bob_id: OwnedUserId,
    alice_room: Room,
}

impl Pair {
    async fn cross_signed() -> Self {
        let s = TestServer::start().await;
        let (alice, bob) = alice_and_bob(&s).await;
        let alice_id = UserId::parse(s.user_id("alice")).unwrap();
        let bob_id = UserId::parse(s.user_id("bob")).unwrap();
        let (alice_room, _) = encrypted_dm(&s, &alice, &bob).await;
        bootstrap_cross_signing(&alice, "alice").await;
        bootstrap_cross_signing(&bob, "bob").await;
        // Each learns the other's new identity through device_lists.changed
        // and /keys/query.
        let both = [(&alice, "alice"), (&bob, "bob")];
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
        Self {
            s,
            alice,
            bob,
            alice_id,
            bob_id,
            alice_room,
        }
    }

    /// Alice asks to verify Bob the user (`UserIdentity::request_verification`).
    async fn request_user_verification(&self) -> VerificationRequest {
        identity(&self.alice, &self.bob_id)
            .await
            .expect("alice: bob's identity")
            .request_verification()
            .await
            .unwrap_or_else(|e| panic!("alice: SDK request_verification (user) failed: {e:?}"))
    }

    /// From Alice's `request` (sent) to both identities verified, then the
    /// checks of the module comment.
    async fn complete_sas(&self, request: &VerificationRequest) {
        let (alice, bob, alice_id, bob_id) =
            (&self.alice, &self.bob, &*self.alice_id, &*self.bob_id);
        let both = [(alice, "alice"), (bob, "bob")];
        let flow_id = request.flow_id().to_owned();

        let mut bob_request = None;
        sync_all_until(
            &[(bob, "bob")],
            "alice's verification request",
            async || {
                bob_request = bob
                    .encryption()
                    .get_verification_request(alice_id, &flow_id)
                    .await;
                bob_request.is_some()
            },
        )
        .await;
        bob_request
            .unwrap()
            .accept()
            .await
            .unwrap_or_else(|e| panic!("bob: SDK accept request failed: {e:?}"));
        sync_all_until(
            &[(alice, "alice")],
            "bob's m.key.verification.ready",
            async || request.is_ready(),
        )
        .await;

        let alice_sas = request
            .start_sas()
            .await
            .unwrap_or_else(|e| panic!("alice: SDK start_sas failed: {e:?}"))
            .expect("alice: SAS started");
        let mut bob_sas = None;
        sync_all_until(
            &[(bob, "bob")],
            "alice's m.key.verification.start",
            async || {
                bob_sas = bob
                    .encryption()
                    .get_verification(alice_id, &flow_id)
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
            is_verified(alice, bob_id).await && is_verified(bob, alice_id).await
        })
        .await;
        self.assert_verified().await;
    }

    /// Each side's view after a successful verification.
    async fn assert_verified(&self) {
        let (alice, bob) = (&self.alice, &self.bob);
        for (client, who, other) in [(alice, "alice", &self.bob_id), (bob, "bob", &self.alice_id)] {
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
            // The SDK uploaded a user-signing signature of the other's master
            // key: /keys/query serves it.
            let master = query_master_key(&self.s, client, other).await;
            let signers: Vec<String> = master["signatures"]
                .as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default();
            assert!(
                signers.contains(&client.user_id().unwrap().to_string()),
                "{who}: /keys/query shows {who}'s signature on {other}'s master key: {master}"
            );
        }

        // A message from Bob to Alice now carries a verified sender. The SDK
        // judges a Megolm session's sender when the room key arrives, so Bob
        // starts a new one: in the in-room flow his current session (which
        // carried the verification events) predates the verification.
        let room_id = self.alice_room.room_id().to_owned();
        let bob_room = bob.get_room(&room_id).unwrap();
        bob_room
            .discard_room_key()
            .await
            .unwrap_or_else(|e| panic!("bob: SDK discard_room_key failed: {e:?}"));
        send_text(&bob_room, "bob", "B1: verified now").await;
        let mut info = None;
        sync_until(alice, "alice", "bob's message", |r| {
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
