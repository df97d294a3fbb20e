//! Helpers for the encryption scenarios: an encrypted DM as Element makes
//! one, sending text, reading what the SDK decrypted, and password UIA.

use matrix_sdk::deserialized_responses::{TimelineEvent, TimelineEventKind};
use matrix_sdk::room::Room;
use matrix_sdk::ruma::api::client::uiaa::{
    AuthData, MatrixUserIdentifier, Password, UserIdentifier,
};
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::{RoomId, UserId};
use matrix_sdk::sync::SyncResponse;
use matrix_sdk::{Client, RoomState};

use crate::sdk::{Msg, messages, sync_once, sync_until};
use crate::server::{PASSWORD, TestServer};

/// Alice and Bob logged in, each after a first sync (which uploads the
/// device's keys: the SDK's outgoing requests follow every sync).
pub async fn alice_and_bob(s: &TestServer) -> (Client, Client) {
    let alice = s.logged_in("alice").await;
    let bob = s.logged_in("bob").await;
    sync_once(&alice, "alice").await;
    sync_once(&bob, "bob").await;
    (alice, bob)
}

/// A further device of the existing user `localpart`: a new client with a
/// new in-memory store, logged in with the password, after a first sync
/// (so its device keys are on the server).
pub async fn another_device(s: &TestServer, localpart: &str) -> Client {
    let client = s
        .login(localpart, &format!("e2e {localpart}, another device"))
        .await;
    sync_once(&client, localpart).await;
    client
}

/// Alice creates a DM with Bob through `create_dm` (is_direct, the
/// trusted_private_chat preset and `m.room.encryption` in `initial_state`,
/// as Element does); Bob joins; both SDKs see the room encrypted with both
/// joined. Returns (alice's room, bob's room).
pub async fn encrypted_dm(s: &TestServer, alice: &Client, bob: &Client) -> (Room, Room) {
    let bob_id = UserId::parse(s.user_id("bob")).unwrap();
    let alice_room = alice
        .create_dm(&bob_id)
        .await
        .unwrap_or_else(|e| panic!("alice: SDK create_dm failed: {e:?}"));
    let room_id = alice_room.room_id().to_owned();
    sync_until(bob, "bob", "the DM invite", |r| {
        r.rooms.invited.contains_key(&room_id)
    })
    .await;
    let invited = bob
        .get_room(&room_id)
        .expect("bob: the SDK knows the invite");
    invited
        .join()
        .await
        .unwrap_or_else(|e| panic!("bob: SDK room.join failed: {e:?}"));
    sync_until(bob, "bob", "the DM under rooms.join", |r| {
        r.rooms.joined.contains_key(&room_id)
    })
    .await;
    let bob_room = bob.get_room(&room_id).expect("bob: the SDK knows the DM");
    assert_eq!(bob_room.state(), RoomState::Joined);
    sync_until(alice, "alice", "bob's join (2 joined members)", |_| {
        alice_room.joined_members_count() == 2
    })
    .await;
    for (who, room) in [("alice", &alice_room), ("bob", &bob_room)] {
        let encrypted = room
            .latest_encryption_state()
            .await
            .unwrap_or_else(|e| panic!("{who}: SDK latest_encryption_state failed: {e:?}"))
            .is_encrypted();
        assert!(encrypted, "{who}: the SDK sees the DM as encrypted");
    }
    (alice_room, bob_room)
}

/// Sends a text message through `room.send` (the SDK shares the room key
/// and encrypts) and returns the event id.
pub async fn send_text(room: &Room, who: &str, body: &str) -> String {
    room.send(RoomMessageEventContent::text_plain(body))
        .await
        .unwrap_or_else(|e| panic!("{who}: SDK room.send({body:?}) failed: {e:?}"))
        .response
        .event_id
        .to_string()
}

/// The m.room.message events among `events` (in order), each of which the
/// SDK must have decrypted: a message that arrived in plaintext, or an
/// `m.room.encrypted` event the SDK could not decrypt, fails the test.
pub fn decrypted_messages(who: &str, events: &[TimelineEvent]) -> Vec<Msg> {
    let mut out = Vec::new();
    for ev in events {
        match &ev.kind {
            TimelineEventKind::Decrypted(_) => {
                out.extend(messages(std::slice::from_ref(ev)));
            }
            TimelineEventKind::UnableToDecrypt { event, utd_info } => panic!(
                "{who}: the SDK could not decrypt {} ({utd_info:?})",
                event.json().get()
            ),
            TimelineEventKind::PlainText { .. } => assert!(
                messages(std::slice::from_ref(ev)).is_empty(),
                "{who}: a message arrived in plaintext in an encrypted room: {}",
                ev.raw().json().get()
            ),
        }
    }
    out
}

/// [`decrypted_messages`] of `room_id`'s joined timeline in one sync response.
pub fn synced_decrypted(who: &str, resp: &SyncResponse, room_id: &RoomId) -> Vec<Msg> {
    resp.rooms
        .joined
        .get(room_id)
        .map(|j| decrypted_messages(who, &j.timeline.events))
        .unwrap_or_default()
}

/// Syncs `client` until `room_id` has delivered `n` decrypted messages in
/// total, and returns them.
pub async fn sync_decrypted(client: &Client, who: &str, room_id: &RoomId, n: usize) -> Vec<Msg> {
    let mut seen = Vec::new();
    sync_until(client, who, &format!("{n} decrypted messages"), |r| {
        seen.extend(synced_decrypted(who, r, room_id));
        seen.len() >= n
    })
    .await;
    seen
}

/// m.login.password for the UIA session `session`, as the SDK's examples do.
pub fn password_auth(localpart: &str, session: Option<String>) -> AuthData {
    let mut password = Password::new(
        UserIdentifier::Matrix(MatrixUserIdentifier::new(localpart.to_owned())),
        PASSWORD.to_owned(),
    );
    password.session = session;
    AuthData::Password(password)
}

/// Bootstraps cross-signing the way the SDK documents it: without auth
/// first, and when the server answers with a UIA challenge, again with the
/// password and the challenge's session.
pub async fn bootstrap_cross_signing(client: &Client, localpart: &str) {
    let encryption = client.encryption();
    if let Err(e) = encryption.bootstrap_cross_signing(None).await {
        let Some(uiaa) = e.as_uiaa_response() else {
            panic!("{localpart}: SDK bootstrap_cross_signing failed: {e:?}");
        };
        encryption
            .bootstrap_cross_signing(Some(password_auth(localpart, uiaa.session.clone())))
            .await
            .unwrap_or_else(|e| {
                panic!("{localpart}: SDK bootstrap_cross_signing with password failed: {e:?}")
            });
    }
    let status = encryption
        .cross_signing_status()
        .await
        .expect("the SDK has an Olm machine");
    assert!(
        status.is_complete(),
        "{localpart}: cross-signing is complete after bootstrap: {status:?}"
    );
}
