//! A deleted device stops receiving room keys: Bob has two devices in an
//! encrypted DM with Alice; he deletes one (`delete_devices` with password
//! UIA); the server reports the change in Alice's device_lists.changed, her
//! SDK no longer lists the device, rotates the room key for her next
//! message, and Bob's remaining device still decrypts it. The server side
//! (the deleted device's keys and to-device inbox gone) is tested in
//! tests/api/e2e_keys.rs and tests/api/to_device.rs.

use std::sync::Arc;

use matrix_sdk::Client;
use matrix_sdk::deserialized_responses::{EncryptionInfo, TimelineEvent};
use matrix_sdk::ruma::api::error::ErrorKind;
use matrix_sdk::ruma::{OwnedDeviceId, RoomId, UserId};

use crate::crypto::{
    alice_and_bob, another_device, decrypted_messages, encrypted_dm, password_auth, send_text,
};
use crate::sdk::{sync_all_until, sync_until};
use crate::server::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_device_is_dropped_from_the_room_key_recipients() {
    let s = TestServer::start().await;
    let (alice, bob) = alice_and_bob(&s).await;
    let bob_id = UserId::parse(s.user_id("bob")).unwrap();
    // Bob's second device, keys uploaded before the DM exists.
    let bob2 = another_device(&s, "bob").await;
    let bob1_device = bob.device_id().unwrap().to_owned();
    let bob2_device = bob2.device_id().unwrap().to_owned();

    let (alice_room, _) = encrypted_dm(&s, &alice, &bob).await;
    let room_id = alice_room.room_id().to_owned();
    assert_eq!(
        bob_devices(&alice, &bob_id).await,
        sorted([bob1_device.clone(), bob2_device.clone()]),
        "alice: both of bob's devices"
    );

    // Both of Bob's devices decrypt the first message.
    send_text(&alice_room, "alice", "A1: to both phones").await;
    let (on_bob1, first_session) = next_decrypted(&bob, "bob", &room_id).await;
    let (on_bob2, session_bob2) = next_decrypted(&bob2, "bob2", &room_id).await;
    assert_eq!(on_bob1, "A1: to both phones");
    assert_eq!(on_bob2, "A1: to both phones");
    assert_eq!(first_session, session_bob2, "one room key for both");

    // Bob deletes his second device from the first, with password UIA.
    let devices = [bob2_device.clone()];
    let uiaa = match bob.delete_devices(&devices, None).await {
        Err(e) => e
            .as_uiaa_response()
            .cloned()
            .unwrap_or_else(|| panic!("bob: delete_devices without auth: {e:?}")),
        Ok(_) => panic!("bob: delete_devices without auth succeeded"),
    };
    bob.delete_devices(&devices, Some(password_auth("bob", uiaa.session)))
        .await
        .unwrap_or_else(|e| panic!("bob: SDK delete_devices with password failed: {e:?}"));
    let err = bob2
        .whoami()
        .await
        .expect_err("bob2: the deleted device's token is revoked");
    assert!(
        matches!(
            err.client_api_error_kind(),
            Some(ErrorKind::UnknownToken(_))
        ),
        "bob2: M_UNKNOWN_TOKEN after the deletion: {err:?}"
    );

    // Alice's SDK learns of it through /sync and /keys/query.
    sync_all_until(
        &[(&alice, "alice")],
        "bob's device list without bob2",
        async || bob_devices(&alice, &bob_id).await == [bob1_device.clone()],
    )
    .await;

    // Her next message uses a new room key, shared with bob1 only, which
    // still decrypts it.
    send_text(&alice_room, "alice", "A2: to the phone that is left").await;
    let (on_bob1, second_session) = next_decrypted(&bob, "bob", &room_id).await;
    assert_eq!(on_bob1, "A2: to the phone that is left");
    assert_ne!(
        first_session, second_session,
        "alice's SDK rotated the room key after bob's device was deleted"
    );
}

/// The device ids of `user` that `client`'s SDK lists, sorted.
async fn bob_devices(client: &Client, user: &UserId) -> Vec<OwnedDeviceId> {
    sorted(
        client
            .encryption()
            .get_user_devices(user)
            .await
            .unwrap_or_else(|e| panic!("SDK get_user_devices({user}) failed: {e:?}"))
            .keys()
            .map(ToOwned::to_owned),
    )
}

fn sorted(ids: impl IntoIterator<Item = OwnedDeviceId>) -> Vec<OwnedDeviceId> {
    let mut ids: Vec<_> = ids.into_iter().collect();
    ids.sort();
    ids
}

/// Syncs `client` until one new message arrives in `room_id`, decrypted;
/// returns its body and the Megolm session it was encrypted with.
async fn next_decrypted(client: &Client, who: &str, room_id: &RoomId) -> (String, String) {
    let mut found: Option<(String, Arc<EncryptionInfo>)> = None;
    sync_until(client, who, "a decrypted message", |r| {
        let events: &[TimelineEvent] = r
            .rooms
            .joined
            .get(room_id)
            .map_or(&[], |j| &j.timeline.events);
        for ev in events {
            if let Some(m) = decrypted_messages(who, std::slice::from_ref(ev)).pop() {
                found = Some((m.body, ev.encryption_info().cloned().expect("decrypted")));
            }
        }
        found.is_some()
    })
    .await;
    let (body, info) = found.unwrap();
    let session = info.session_id().expect("a Megolm session id").to_owned();
    (body, session)
}
