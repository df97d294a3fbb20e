//! The room state a client holds after joining: a client builds its whole
//! picture of a room (power levels, creator, join rule, history visibility,
//! the other members) from the `state` block and the timeline of the first
//! /sync that shows the room under rooms.join. For a room joined since the
//! `since` token that has to be the full state, not the changes since then.

use matrix_sdk::ruma::api::client::room::create_room::v3::Request as CreateRoomRequest;
use matrix_sdk::ruma::events::room::history_visibility::HistoryVisibility;
use matrix_sdk::ruma::events::room::join_rules::JoinRule;
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId, UserId};
use matrix_sdk::sync::{JoinedRoomUpdate, State};
use matrix_sdk::{Client, RoomState};

use crate::sdk::{deserialize, sync_once, sync_until};
use crate::server::TestServer;

/// The state event types (with state keys) one joined-room sync update
/// carries, from its `state` block and its timeline.
fn state_in_update(update: &JoinedRoomUpdate) -> Vec<String> {
    let mut out = Vec::new();
    let state = match &update.state {
        State::Before(events) | State::After(events) => events,
    };
    for raw in state {
        let ty = raw
            .get_field::<String>("type")
            .ok()
            .flatten()
            .unwrap_or_default();
        let key = raw
            .get_field::<String>("state_key")
            .ok()
            .flatten()
            .unwrap_or_default();
        out.push(format!("{ty}|{key}"));
    }
    for ev in &update.timeline.events {
        if let matrix_sdk::ruma::events::AnySyncTimelineEvent::State(s) = deserialize(ev) {
            out.push(format!("{}|{}", s.event_type(), s.state_key()));
        }
    }
    out
}

/// What is missing from `who`'s picture of the room, as readable lines.
async fn missing_room_state(
    client: &Client,
    who: &str,
    room_id: &OwnedRoomId,
    delivered: &[String],
    creator: &UserId,
    other: &UserId,
) -> Vec<String> {
    let mut problems = Vec::new();
    for needed in [
        "m.room.create|".to_owned(),
        "m.room.power_levels|".to_owned(),
        "m.room.join_rules|".to_owned(),
        "m.room.history_visibility|".to_owned(),
        format!("m.room.member|{creator}"),
        format!("m.room.member|{other}"),
    ] {
        if !delivered.contains(&needed) && !problems.iter().any(|p: &String| p.contains(&needed)) {
            problems.push(format!(
                "{who}: the first /sync with the room under rooms.join did not carry {needed} (state + timeline had: {delivered:?})"
            ));
        }
    }
    let room = client.get_room(room_id).expect("the SDK knows the room");
    assert_eq!(room.state(), RoomState::Joined);
    if let Err(e) = room.power_levels().await {
        problems.push(format!("{who}: SDK room.power_levels() fails: {e}"));
    }
    if room.creators().as_deref() != Some(&[creator.to_owned()][..]) {
        problems.push(format!(
            "{who}: SDK room.creators() is {:?}, expected [{creator}]",
            room.creators()
        ));
    }
    if room.join_rule() != Some(JoinRule::Invite) {
        problems.push(format!(
            "{who}: SDK room.join_rule() is {:?}, expected Invite",
            room.join_rule()
        ));
    }
    if room.history_visibility() != Some(HistoryVisibility::Shared) {
        problems.push(format!(
            "{who}: SDK room.history_visibility() is {:?}, expected Shared",
            room.history_visibility()
        ));
    }
    match room.get_member_no_sync(other).await {
        Ok(Some(_)) => {}
        other_result => problems.push(format!(
            "{who}: SDK room.get_member_no_sync({other}) (from synced state only) is {other_result:?}"
        )),
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_sync_after_joining_carries_the_full_room_state() {
    let s = TestServer::start().await;
    let alice = s.logged_in("alice").await;
    let bob = s.logged_in("bob").await;
    let alice_id: OwnedUserId = s.user_id("alice").try_into().unwrap();
    let bob_id: OwnedUserId = s.user_id("bob").try_into().unwrap();
    sync_once(&alice, "alice").await;
    sync_once(&bob, "bob").await;

    let mut req = CreateRoomRequest::new();
    req.invite = vec![bob_id.clone()];
    let room_id = alice
        .create_room(req)
        .await
        .unwrap_or_else(|e| panic!("alice: SDK create_room failed: {e:?}"))
        .room_id()
        .to_owned();

    sync_until(&bob, "bob", "the invite", |r| {
        r.rooms.invited.contains_key(&room_id)
    })
    .await;
    bob.get_room(&room_id)
        .expect("bob: invited room")
        .join()
        .await
        .unwrap_or_else(|e| panic!("bob: SDK room.join failed: {e:?}"));
    let mut bob_delivered = Vec::new();
    sync_until(&bob, "bob", "the room under rooms.join", |r| {
        match r.rooms.joined.get(&room_id) {
            Some(update) => {
                bob_delivered = state_in_update(update);
                true
            }
            None => false,
        }
    })
    .await;

    let mut alice_delivered = Vec::new();
    sync_until(&alice, "alice", "the room with bob joined", |r| {
        if let Some(update) = r.rooms.joined.get(&room_id) {
            alice_delivered.extend(state_in_update(update));
        }
        alice_delivered.contains(&format!("m.room.member|{bob_id}"))
    })
    .await;

    let mut problems = missing_room_state(
        &alice,
        "alice (creator)",
        &room_id,
        &alice_delivered,
        &alice_id,
        &bob_id,
    )
    .await;
    problems.extend(
        missing_room_state(
            &bob,
            "bob (joined after an invite)",
            &room_id,
            &bob_delivered,
            &alice_id,
            &alice_id,
        )
        .await,
    );
    assert!(
        problems.is_empty(),
        "room state missing from the SDK's picture of the room after /sync \
         (the first sync that shows a newly joined room must carry the full state at the \
         start of the timeline, not only the changes since `since`):\n{}",
        problems.join("\n")
    );
}
