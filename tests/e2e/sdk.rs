//! Small helpers over matrix-sdk: sync until something holds, and pull the
//! messages out of timelines.

use std::time::{Duration, Instant};

use matrix_sdk::Client;
use matrix_sdk::config::SyncSettings;
use matrix_sdk::deserialized_responses::TimelineEvent;
use matrix_sdk::ruma::RoomId;
use matrix_sdk::ruma::events::room::message::SyncRoomMessageEvent;
use matrix_sdk::ruma::events::{AnySyncMessageLikeEvent, AnySyncTimelineEvent};
use matrix_sdk::sync::SyncResponse;

/// How long a test waits for something to arrive through /sync.
const SYNC_DEADLINE: Duration = Duration::from_secs(15);

/// One m.room.message as the SDK saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub sender: String,
    pub body: String,
    pub event_id: String,
}

/// One /sync with the SDK (reusing its previous `since` token), short long-poll.
pub async fn sync_once(client: &Client, who: &str) -> SyncResponse {
    client
        .sync_once(SyncSettings::default().timeout(Duration::from_millis(300)))
        .await
        .unwrap_or_else(|e| panic!("{who}: SDK sync_once failed: {e:?}"))
}

/// Syncs until `done` returns true for a response (every response is shown to
/// it, in order), failing the test after [`SYNC_DEADLINE`] with `what`.
pub async fn sync_until(
    client: &Client,
    who: &str,
    what: &str,
    mut done: impl FnMut(&SyncResponse) -> bool,
) {
    let start = Instant::now();
    loop {
        let resp = sync_once(client, who).await;
        if done(&resp) {
            return;
        }
        assert!(
            start.elapsed() < SYNC_DEADLINE,
            "{who}: gave up after {SYNC_DEADLINE:?} waiting for {what} through /sync"
        );
    }
}

/// Syncs each of `clients` once, in turn, until `done` holds afterwards:
/// what lets to-device messages, device-list changes and key uploads flow
/// between several clients. Fails the test after [`SYNC_DEADLINE`] with `what`.
pub async fn sync_all_until(
    clients: &[(&Client, &str)],
    what: &str,
    mut done: impl AsyncFnMut() -> bool,
) {
    let start = Instant::now();
    loop {
        for (client, who) in clients {
            sync_once(client, who).await;
        }
        if done().await {
            return;
        }
        assert!(
            start.elapsed() < SYNC_DEADLINE,
            "gave up after {SYNC_DEADLINE:?} waiting for {what} through /sync"
        );
    }
}

/// The m.room.message events among `events`, in the order given. Every event
/// must deserialize as a timeline event, or the test fails with its JSON.
pub fn messages(events: &[TimelineEvent]) -> Vec<Msg> {
    events
        .iter()
        .filter_map(|ev| match deserialize(ev) {
            AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(
                SyncRoomMessageEvent::Original(m),
            )) => Some(Msg {
                sender: m.sender.to_string(),
                body: m.content.body().to_owned(),
                event_id: m.event_id.to_string(),
            }),
            _ => None,
        })
        .collect()
}

pub fn deserialize(ev: &TimelineEvent) -> AnySyncTimelineEvent {
    ev.raw().deserialize().unwrap_or_else(|e| {
        panic!(
            "the SDK cannot deserialize a timeline event the server sent ({e}): {}",
            ev.raw().json().get()
        )
    })
}

/// The messages in `room_id`'s timeline in one sync response (joined or left).
pub fn synced_messages(resp: &SyncResponse, room_id: &RoomId) -> Vec<Msg> {
    let mut out = Vec::new();
    if let Some(j) = resp.rooms.joined.get(room_id) {
        out.extend(messages(&j.timeline.events));
    }
    if let Some(l) = resp.rooms.left.get(room_id) {
        out.extend(messages(&l.timeline.events));
    }
    out
}

/// Bodies only, for readable assertions.
pub fn bodies(msgs: &[Msg]) -> Vec<&str> {
    msgs.iter().map(|m| m.body.as_str()).collect()
}

/// (event_id, unsigned.transaction_id) of every timeline event in `room_id`
/// (joined) in one sync response, read from the raw JSON.
pub fn transaction_ids(resp: &SyncResponse, room_id: &RoomId) -> Vec<(String, Option<String>)> {
    let Some(j) = resp.rooms.joined.get(room_id) else {
        return Vec::new();
    };
    j.timeline
        .events
        .iter()
        .map(|ev| {
            let v: serde_json::Value =
                serde_json::from_str(ev.raw().json().get()).expect("event JSON");
            (
                v["event_id"].as_str().unwrap_or_default().to_owned(),
                v["unsigned"]["transaction_id"].as_str().map(str::to_owned),
            )
        })
        .collect()
}
