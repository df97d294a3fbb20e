//! Encryption across SDKs: a matrix-js-sdk user with its Rust crypto
//! (`initRustCrypto`, the npm package's WebAssembly build, under node; the
//! script is tests/clients/js/e2ee.mjs) and a matrix-sdk user in an encrypted
//! room each decrypt what the other sent; the js user's cross-signing
//! (bootstrapped as Element does) reaches matrix-sdk, and its key backup
//! holds the room's sessions (checked by the script). 4-11 s: the library's
//! backup loop waits a random 0-10 s before it uploads.
//!
//! The js packages come from `scripts/install-js-sdk`; `MYELIN_JS_CLIENT_DIR`
//! names the directory it printed (default: tests/clients/js). Without node or
//! the packages the test says why and passes, unless `MYELIN_REQUIRE_CLIENTS=1`
//! (set by scripts/test), where that fails it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use matrix_sdk::deserialized_responses::TimelineEventKind;
use matrix_sdk::room::Room;
use matrix_sdk::ruma::api::client::room::create_room::v3::{
    Request as CreateRoomRequest, RoomPreset,
};
use matrix_sdk::ruma::events::room::encryption::RoomEncryptionEventContent;
use matrix_sdk::ruma::events::room::message::{
    MessageType, RoomMessageEventContent, SyncRoomMessageEvent,
};
use matrix_sdk::ruma::events::{AnySyncMessageLikeEvent, AnySyncTimelineEvent, InitialStateEvent};
use matrix_sdk::ruma::{EventId, OwnedUserId};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};

use crate::sdk::{sync_once, sync_until};
use crate::server::{PASSWORD, TestServer};

/// Bound on the node script's whole run (it gives up itself after 120 s).
const SCRIPT_DEADLINE: Duration = Duration::from_secs(150);
/// Bound on the matrix-sdk side's waiting for the room key.
const DECRYPT_DEADLINE: Duration = Duration::from_secs(30);

/// The directory holding e2ee.mjs and its node_modules, or `None` (said on
/// stderr) when node or the packages are missing and clients are not required.
fn js_client_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("MYELIN_JS_CLIENT_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/js"),
            PathBuf::from,
        );
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let missing = if !node {
        Some("node is not on PATH".to_owned())
    } else if !dir
        .join("node_modules/matrix-js-sdk/package.json")
        .is_file()
    {
        Some(format!(
            "no matrix-js-sdk in {}/node_modules",
            dir.display()
        ))
    } else {
        None
    };
    let Some(why) = missing else {
        return Some(dir);
    };
    assert!(
        std::env::var("MYELIN_REQUIRE_CLIENTS").as_deref() != Ok("1"),
        "MYELIN_REQUIRE_CLIENTS=1 but {why}: run scripts/install-js-sdk and set \
         MYELIN_JS_CLIENT_DIR to the directory it prints"
    );
    eprintln!(
        "SKIPPED js interop test: {why} (scripts/install-js-sdk installs it; \
         MYELIN_JS_CLIENT_DIR names the directory)"
    );
    None
}

/// Reads the script's stdout up to the line starting with `tag`, keeping every
/// line in `transcript`; returns the JSON after the tag. Fails the test with
/// the transcript if the script ends first.
async fn next_tagged(
    lines: &mut Lines<BufReader<ChildStdout>>,
    tag: &str,
    transcript: &mut Vec<String>,
) -> Value {
    loop {
        let line = tokio::time::timeout(SCRIPT_DEADLINE, lines.next_line())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "e2ee.mjs: nothing within {SCRIPT_DEADLINE:?}; so far:\n{}",
                    transcript.join("\n")
                )
            })
            .expect("reading e2ee.mjs's stdout");
        let Some(line) = line else {
            panic!(
                "e2ee.mjs ended before printing `{tag}`; its output:\n{}",
                transcript.join("\n")
            );
        };
        transcript.push(line.clone());
        if let Some(json) = line.strip_prefix(tag) {
            return serde_json::from_str(json)
                .unwrap_or_else(|e| panic!("e2ee.mjs: `{line}` is not `{tag}JSON`: {e}"));
        }
    }
}

/// Syncs `room`'s client and fetches `event_id` until the SDK decrypts it;
/// returns the decrypted event's sender, body and sending device.
async fn decrypted_text(room: &Room, event_id: &EventId) -> (String, String, Option<String>) {
    let start = Instant::now();
    loop {
        // The sync brings the room key (to-device); /event then decrypts.
        sync_once(&room.client(), "bob").await;
        let ev = room
            .event(event_id, None)
            .await
            .unwrap_or_else(|e| panic!("bob: SDK room.event({event_id}) failed: {e:?}"));
        if let TimelineEventKind::Decrypted(d) = &ev.kind {
            let text = match ev.raw().deserialize() {
                Ok(AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(
                    SyncRoomMessageEvent::Original(m),
                ))) => match m.content.msgtype {
                    MessageType::Text(t) => (m.sender.to_string(), t.body),
                    other => panic!("bob: {event_id} decrypted to msgtype {}", other.msgtype()),
                },
                other => panic!("bob: {event_id} decrypted to {other:?}"),
            };
            let device = d
                .encryption_info
                .sender_device
                .as_ref()
                .map(ToString::to_string);
            return (text.0, text.1, device);
        }
        assert!(
            start.elapsed() < DECRYPT_DEADLINE,
            "bob: {event_id} still not decrypted after {DECRYPT_DEADLINE:?}: {:?}",
            ev.kind
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_sdk_rust_crypto_and_matrix_sdk_decrypt_each_other() {
    let Some(js_dir) = js_client_dir() else {
        return;
    };
    let s = TestServer::start().await;
    s.register("js_alice").await;
    let alice_id = s.user_id("js_alice");
    let bob = s.logged_in("bob").await;
    // The first sync uploads bob's device keys and one-time keys.
    sync_once(&bob, "bob").await;

    // bob creates an encrypted room and invites the js user.
    let mut req = CreateRoomRequest::new();
    req.preset = Some(RoomPreset::PrivateChat);
    req.invite = vec![OwnedUserId::try_from(alice_id.as_str()).unwrap()];
    req.initial_state = vec![
        InitialStateEvent::with_empty_state_key(
            RoomEncryptionEventContent::with_recommended_defaults(),
        )
        .to_raw_any(),
    ];
    let room = bob
        .create_room(req)
        .await
        .unwrap_or_else(|e| panic!("bob: SDK create_room failed: {e:?}"));
    let room_id = room.room_id().to_owned();
    sync_until(&bob, "bob", "the new room under rooms.join", |r| {
        r.rooms.joined.contains_key(&room_id)
    })
    .await;
    assert!(
        room.latest_encryption_state()
            .await
            .expect("bob: encryption state")
            .is_encrypted(),
        "bob: the SDK does not see the room as encrypted"
    );

    // The js user joins and sends; the script prints what it sent.
    let body = "an encrypted hello from matrix-js-sdk's Rust crypto";
    let reply = "and an encrypted answer from matrix-sdk";
    let mut child = Command::new("node")
        .arg(js_dir.join("e2ee.mjs"))
        .args([
            s.base_url.as_str(),
            alice_id.as_str(),
            PASSWORD,
            room_id.as_str(),
            body,
            reply,
        ])
        .current_dir(&js_dir)
        .stdout(Stdio::piped())
        // Its stderr (the library's log at MYELIN_JS_SDK_LOG, crashes) shows as is.
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node e2ee.mjs starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut transcript = Vec::new();
    let sent = next_tagged(&mut lines, "sent ", &mut transcript).await;
    let event_id = EventId::parse(sent["event_id"].as_str().expect("sent.event_id"))
        .expect("sent.event_id is an event id");
    let js_device = sent["device_id"]
        .as_str()
        .expect("sent.device_id")
        .to_owned();

    // matrix-sdk decrypts exactly what the js user sent, from that device.
    let (sender, text, device) = decrypted_text(&room, &event_id).await;
    assert_eq!(sender, alice_id, "sender of {event_id}");
    assert_eq!(text, body, "decrypted body of {event_id}");
    assert_eq!(
        device.as_deref(),
        Some(js_device.as_str()),
        "sending device"
    );

    // bob answers, encrypted; the js user decrypts it and says so.
    let answer = room
        .send(RoomMessageEventContent::text_plain(reply))
        .await
        .unwrap_or_else(|e| panic!("bob: SDK room.send failed: {e:?}"));
    let received = next_tagged(&mut lines, "received ", &mut transcript).await;
    assert_eq!(
        received["event_id"].as_str(),
        Some(answer.response.event_id.as_str()),
        "the event the js user decrypted; its output:\n{}",
        transcript.join("\n")
    );
    assert_eq!(
        received["sender"].as_str(),
        Some(bob.user_id().unwrap().as_str())
    );

    while let Some(line) = lines.next_line().await.expect("reading e2ee.mjs's stdout") {
        transcript.push(line);
    }
    let status = tokio::time::timeout(SCRIPT_DEADLINE, child.wait())
        .await
        .expect("e2ee.mjs exits")
        .expect("waiting for e2ee.mjs");
    eprintln!("e2ee.mjs:\n{}", transcript.join("\n"));
    assert!(
        status.success(),
        "e2ee.mjs: {status}; its output:\n{}",
        transcript.join("\n")
    );
}
