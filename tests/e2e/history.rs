//! A busy room: more messages arrive than one /sync timeline holds, so the
//! client gets a limited timeline and fills the gap with /messages from
//! prev_batch; then a redaction reaches the other side.

use matrix_sdk::room::MessagesOptions;
use matrix_sdk::ruma::api::client::room::create_room::v3::Request as CreateRoomRequest;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::events::{AnySyncMessageLikeEvent, AnySyncTimelineEvent};
use matrix_sdk::ruma::{EventId, OwnedUserId};

use crate::sdk::{bodies, deserialize, messages, sync_once, sync_until};
use crate::server::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_sync_gap_is_filled_by_messages_and_redactions_arrive() {
    let s = TestServer::start().await;
    let alice = s.logged_in("alice").await;
    let bob = s.logged_in("bob").await;
    sync_once(&alice, "alice").await;
    sync_once(&bob, "bob").await;

    let mut req = CreateRoomRequest::new();
    req.invite = vec![OwnedUserId::try_from(s.user_id("bob")).unwrap()];
    let alice_room = alice
        .create_room(req)
        .await
        .unwrap_or_else(|e| panic!("alice: SDK create_room failed: {e:?}"));
    let room_id = alice_room.room_id().to_owned();
    sync_until(&bob, "bob", "the invite", |r| {
        r.rooms.invited.contains_key(&room_id)
    })
    .await;
    bob.get_room(&room_id)
        .unwrap()
        .join()
        .await
        .unwrap_or_else(|e| panic!("bob: SDK room.join failed: {e:?}"));
    sync_until(&bob, "bob", "the joined room", |r| {
        r.rooms.joined.contains_key(&room_id)
    })
    .await;
    let bob_room = bob.get_room(&room_id).unwrap();

    // 15 messages while Bob is not syncing; the default timeline limit is 10.
    let mut sent = Vec::new();
    for i in 1..=15 {
        let body = format!("M{i}");
        let r = alice_room
            .send(RoomMessageEventContent::text_plain(&body))
            .await
            .unwrap_or_else(|e| panic!("alice: SDK room.send({body}) failed: {e:?}"));
        sent.push((body, r.response.event_id));
    }
    let all_bodies: Vec<&str> = sent.iter().map(|(b, _)| b.as_str()).collect();

    let mut prev_batch = None;
    let mut synced = Vec::new();
    let mut limited = false;
    sync_until(&bob, "bob", "M15", |r| {
        if let Some(j) = r.rooms.joined.get(&room_id) {
            if synced.is_empty() {
                limited = j.timeline.limited;
                prev_batch = j.timeline.prev_batch.clone();
            }
            synced.extend(messages(&j.timeline.events));
        }
        synced.last().is_some_and(|m| m.body == "M15")
    })
    .await;
    assert_eq!(
        bodies(&synced),
        all_bodies[5..],
        "bob: the limited timeline holds the newest 10"
    );
    assert!(
        limited,
        "bob: timeline.limited must be true when 15 events did not fit"
    );
    let prev_batch = prev_batch.expect("bob: a limited timeline has prev_batch");

    // Fill the gap: /messages backwards from prev_batch.
    let mut opts = MessagesOptions::backward();
    opts.from = Some(prev_batch.clone());
    opts.limit = 5u32.into();
    let page = bob_room.messages(opts).await.unwrap_or_else(|e| {
        panic!("bob: SDK room.messages(from prev_batch {prev_batch}) failed: {e:?}")
    });
    assert_eq!(
        bodies(&messages(&page.chunk)),
        ["M5", "M4", "M3", "M2", "M1"],
        "bob: /messages from prev_batch returns exactly the events before the timeline"
    );

    // Alice redacts M15; Bob sees the redaction and the redacted event.
    let m15: &EventId = &sent[14].1;
    alice_room
        .redact(m15, Some("typo"), None)
        .await
        .unwrap_or_else(|e| panic!("alice: SDK room.redact failed: {e:?}"));
    sync_until(&bob, "bob", "the redaction of M15", |r| {
        r.rooms.joined.get(&room_id).is_some_and(|j| {
            j.timeline.events.iter().any(|ev| {
                matches!(
                    deserialize(ev),
                    AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomRedaction(red))
                        if red.as_original().and_then(|o| o.content.redacts.as_deref()) == Some(m15)
                )
            })
        })
    })
    .await;
    let fetched = bob_room
        .event(m15, None)
        .await
        .unwrap_or_else(|e| panic!("bob: SDK room.event(M15) failed: {e:?}"));
    match deserialize(&fetched) {
        AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(m)) => {
            assert!(
                m.as_original().is_none(),
                "bob: M15 is redacted after the redaction"
            )
        }
        other => panic!("bob: M15 fetched as {other:?}"),
    }
}
