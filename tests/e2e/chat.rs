//! Two users chat through matrix-sdk: log in, create a room with an invite,
//! the invitee sees it through /sync and joins, both send, both see every
//! message in order, /messages pages back, a topic is set, one leaves.

use matrix_sdk::RoomMemberships;
use matrix_sdk::RoomState;
use matrix_sdk::room::{MessagesOptions, Room};
use matrix_sdk::ruma::api::client::room::create_room::v3::Request as CreateRoomRequest;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::{EventId, OwnedTransactionId, OwnedUserId, uint};

use crate::sdk::{
    Msg, bodies, deserialize, messages, sync_once, sync_until, synced_messages, transaction_ids,
};
use crate::server::TestServer;

const ROOM_NAME: &str = "E2E room";
const TOPIC: &str = "a topic set through matrix-sdk";

/// Sends a text message through `room.send` with transaction id `txn` and
/// returns it as a [`Msg`].
async fn send_text(room: &Room, who: &str, body: &str, txn: &str) -> Msg {
    let resp = room
        .send(RoomMessageEventContent::text_plain(body))
        .with_transaction_id(OwnedTransactionId::from(txn))
        .await
        .unwrap_or_else(|e| panic!("{who}: SDK room.send({body:?}) failed: {e:?}"));
    Msg {
        sender: room.own_user_id().to_string(),
        body: body.to_owned(),
        event_id: resp.response.event_id.to_string(),
    }
}

/// Pages back through the whole room with `limit` events a page, following
/// `end` until the server says there is nothing more.
async fn page_back_all(
    room: &Room,
    who: &str,
    limit: u32,
) -> Vec<matrix_sdk::deserialized_responses::TimelineEvent> {
    let mut all = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..50 {
        let mut opts = MessagesOptions::backward();
        opts.limit = limit.into();
        opts.from = from.clone();
        let page = room
            .messages(opts)
            .await
            .unwrap_or_else(|e| panic!("{who}: SDK room.messages(from {from:?}) failed: {e:?}"));
        assert!(
            page.chunk.len() <= limit as usize,
            "{who}: /messages returned {} events for limit {limit}",
            page.chunk.len()
        );
        all.extend(page.chunk);
        match page.end {
            Some(end) => {
                assert_ne!(
                    Some(&end),
                    from.as_ref(),
                    "{who}: /messages end token did not move"
                );
                from = Some(end);
            }
            None => return all,
        }
    }
    panic!("{who}: /messages paging did not end after 50 pages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_chat_through_matrix_sdk() {
    let s = TestServer::start().await;
    let alice = s.logged_in("alice").await;
    let bob = s.logged_in("bob").await;
    let alice_id = s.user_id("alice");
    let bob_id = s.user_id("bob");
    assert_eq!(
        alice.user_id().map(|u| u.to_string()),
        Some(alice_id.clone())
    );
    assert_eq!(bob.user_id().map(|u| u.to_string()), Some(bob_id.clone()));

    // Initial syncs, as a client does right after login.
    sync_once(&alice, "alice").await;
    sync_once(&bob, "bob").await;

    // Alice creates a room and invites Bob.
    let mut req = CreateRoomRequest::new();
    req.name = Some(ROOM_NAME.to_owned());
    req.invite = vec![OwnedUserId::try_from(bob_id.as_str()).unwrap()];
    let alice_room = alice
        .create_room(req)
        .await
        .unwrap_or_else(|e| panic!("alice: SDK create_room failed: {e:?}"));
    let room_id = alice_room.room_id().to_owned();
    sync_until(&alice, "alice", "the new room under rooms.join", |r| {
        r.rooms.joined.contains_key(&room_id)
    })
    .await;
    assert_eq!(alice_room.state(), RoomState::Joined);
    assert_eq!(alice_room.name().as_deref(), Some(ROOM_NAME));

    // Bob sees the invite through sync and joins.
    sync_until(&bob, "bob", "the invite under rooms.invite", |r| {
        r.rooms.invited.contains_key(&room_id)
    })
    .await;
    let invited = bob
        .get_room(&room_id)
        .expect("bob: the SDK knows the invited room");
    assert_eq!(invited.state(), RoomState::Invited);
    assert_eq!(
        invited.name().as_deref(),
        Some(ROOM_NAME),
        "bob: room name from the invite's stripped state"
    );
    let invite = invited
        .invite_details()
        .await
        .unwrap_or_else(|e| panic!("bob: SDK invite_details failed: {e:?}"));
    assert_eq!(invite.inviter_id.as_str(), alice_id, "inviter");
    assert!(bob.invited_rooms().iter().any(|r| r.room_id() == room_id));

    invited
        .join()
        .await
        .unwrap_or_else(|e| panic!("bob: SDK room.join failed: {e:?}"));
    sync_until(&bob, "bob", "the room under rooms.join", |r| {
        r.rooms.joined.contains_key(&room_id)
    })
    .await;
    let bob_room = bob
        .get_room(&room_id)
        .expect("bob: the SDK knows the joined room");
    assert_eq!(bob_room.state(), RoomState::Joined);
    assert_eq!(bob_room.name().as_deref(), Some(ROOM_NAME));

    // Alice sees Bob's join (room summary's joined member count).
    sync_until(&alice, "alice", "bob's join (2 joined members)", |_| {
        alice_room.joined_members_count() == 2
    })
    .await;
    let mut members: Vec<String> = alice_room
        .members(RoomMemberships::JOIN)
        .await
        .unwrap_or_else(|e| panic!("alice: SDK room.members failed: {e:?}"))
        .iter()
        .map(|m| m.user_id().to_string())
        .collect();
    members.sort();
    assert_eq!(
        members,
        [alice_id.clone(), bob_id.clone()],
        "joined members"
    );

    // Both send; each sees every message, in order, through sync.
    let mut alice_seen: Vec<Msg> = Vec::new();
    let mut bob_seen: Vec<Msg> = Vec::new();
    let a1 = send_text(&alice_room, "alice", "A1: hello Bob", "txn-a1").await;
    let a2 = send_text(&alice_room, "alice", "A2: are you there?", "txn-a2").await;
    sync_until(&bob, "bob", "alice's two messages", |r| {
        bob_seen.extend(synced_messages(r, &room_id));
        bob_seen.len() >= 2
    })
    .await;
    let b1 = send_text(&bob_room, "bob", "B1: hi Alice", "txn-b1").await;
    let b2 = send_text(&bob_room, "bob", "B2: yes, here", "txn-b2").await;
    sync_until(&bob, "bob", "his own two messages", |r| {
        bob_seen.extend(synced_messages(r, &room_id));
        bob_seen.len() >= 4
    })
    .await;
    let mut alice_txns = Vec::new();
    sync_until(&alice, "alice", "all four messages", |r| {
        alice_seen.extend(synced_messages(r, &room_id));
        alice_txns.extend(transaction_ids(r, &room_id));
        alice_seen.len() >= 4
    })
    .await;
    let expected = vec![a1.clone(), a2.clone(), b1.clone(), b2.clone()];
    assert_eq!(alice_seen, expected, "alice's synced messages, in order");
    assert_eq!(bob_seen, expected, "bob's synced messages, in order");
    // The sending device sees its transaction ids (what local echo matches on).
    for (msg, txn) in [(&a1, "txn-a1"), (&a2, "txn-a2")] {
        assert!(
            alice_txns.contains(&(msg.event_id.clone(), Some(txn.to_owned()))),
            "alice's own {} carries unsigned.transaction_id {txn}: {alice_txns:?}",
            msg.body
        );
    }
    for (id, txn) in &alice_txns {
        if *id == b1.event_id || *id == b2.event_id {
            assert_eq!(
                *txn, None,
                "bob's transaction id leaked to alice's device: {id}"
            );
        }
    }

    // One event by id, and an event with its context.
    let b1_id = EventId::parse(&b1.event_id).unwrap();
    let fetched = alice_room
        .event(&b1_id, None)
        .await
        .unwrap_or_else(|e| panic!("alice: SDK room.event (GET /event) failed: {e:?}"));
    assert_eq!(
        messages(std::slice::from_ref(&fetched)),
        std::slice::from_ref(&b1),
        "GET /event"
    );
    let a2_id = EventId::parse(&a2.event_id).unwrap();
    let ctx = alice_room
        .event_with_context(&a2_id, false, uint!(4), None)
        .await
        .unwrap_or_else(|e| {
            panic!("alice: SDK room.event_with_context (GET /context) failed: {e:?}")
        });
    assert_eq!(
        ctx.event
            .as_ref()
            .map(|e| messages(std::slice::from_ref(e))),
        Some(vec![a2.clone()]),
        "/context event"
    );
    assert_eq!(
        messages(&ctx.events_before).first(),
        Some(&a1),
        "/context events_before starts with the event just before"
    );
    assert_eq!(
        messages(&ctx.events_after).first(),
        Some(&b1),
        "/context events_after starts with the event just after"
    );

    // /messages backwards from the end: newest first.
    let page = bob_room
        .messages(MessagesOptions::backward())
        .await
        .unwrap_or_else(|e| panic!("bob: SDK room.messages failed: {e:?}"));
    let reversed: Vec<Msg> = expected.iter().rev().cloned().collect();
    assert_eq!(
        messages(&page.chunk),
        reversed,
        "bob: first /messages page (dir=b), newest first"
    );

    // The whole history in pages of 3, down to the create event.
    let all = page_back_all(&alice_room, "alice", 3).await;
    assert_eq!(
        bodies(&messages(&all)),
        bodies(&reversed),
        "alice: paging back through /messages"
    );
    let mut ids: Vec<String> = all
        .iter()
        .filter_map(|e| e.event_id())
        .map(|e| e.to_string())
        .collect();
    assert_eq!(ids.len(), all.len(), "every paged event has an event_id");
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        all.len(),
        "/messages paging returned an event twice"
    );
    let last = all.last().expect("history is not empty");
    assert_eq!(
        deserialize(last).event_type().to_string(),
        "m.room.create",
        "the oldest event is the room's create event"
    );

    // A topic, seen by both after sync.
    alice_room
        .set_room_topic(TOPIC)
        .await
        .unwrap_or_else(|e| panic!("alice: SDK set_room_topic failed: {e:?}"));
    sync_until(&bob, "bob", "the topic", |_| {
        bob_room.topic().as_deref() == Some(TOPIC)
    })
    .await;
    sync_until(&alice, "alice", "the topic", |_| {
        alice_room.topic().as_deref() == Some(TOPIC)
    })
    .await;

    // Bob leaves: the room moves to rooms.leave and shows as left.
    bob_room
        .leave()
        .await
        .unwrap_or_else(|e| panic!("bob: SDK room.leave failed: {e:?}"));
    sync_until(&bob, "bob", "the room under rooms.leave", |r| {
        r.rooms.left.contains_key(&room_id)
    })
    .await;
    let left = bob
        .get_room(&room_id)
        .expect("bob: the SDK still knows the left room");
    assert_eq!(left.state(), RoomState::Left);
    assert!(bob.left_rooms().iter().any(|r| r.room_id() == room_id));
    assert!(!bob.joined_rooms().iter().any(|r| r.room_id() == room_id));
    sync_until(&alice, "alice", "bob's leave (1 joined member)", |_| {
        alice_room.joined_members_count() == 1
    })
    .await;

    // History visibility "shared": Bob still reads what happened while he was in.
    let after_leave = page_back_all(&left, "bob (left)", 10).await;
    assert_eq!(
        bodies(&messages(&after_leave)),
        bodies(&reversed),
        "bob after leaving: /messages still shows the messages from while he was joined"
    );

    // Forgetting the left room removes it from the client.
    left.forget()
        .await
        .unwrap_or_else(|e| panic!("bob: SDK room.forget failed: {e:?}"));
    assert!(
        bob.get_room(&room_id).is_none(),
        "bob: the forgotten room is gone"
    );
}
