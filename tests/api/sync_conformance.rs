//! `/sync` as sytest's 31sync, 10apidoc/09synced, 44account_data and
//! 49ignore expect it: one test per cause (test names say which sytest
//! tests they stand for).

use serde_json::{Value, json};

use crate::harness::*;

fn events(v: &Value) -> &Vec<Value> {
    v.as_array().unwrap_or_else(|| panic!("not an array: {v}"))
}

fn rooms_section_is_empty(body: &Value, section: &str) -> bool {
    body["rooms"][section]
        .as_object()
        .is_none_or(|rooms| rooms.is_empty())
}

async fn sync_filtered(
    server: &TestServer,
    who: &Session,
    since: Option<&str>,
    filter: &Value,
) -> Value {
    let mut query = format!("timeout=0&{}", filter_param(filter));
    if let Some(since) = since {
        query.push_str(&format!("&since={}", enc(since)));
    }
    sync(server, who, &query).await
}

/// The state event sytest's 31sync/06state filters for.
async fn set_madeup_state(server: &TestServer, who: &Session, room: &str) {
    set_state(
        server,
        who,
        room,
        "a.madeup.test.state",
        "",
        json!({"my_key": 1}),
    )
    .await;
}

/// sytest "Newly joined room has correct timeline in incremental sync": a
/// room joined since the last sync has a limited timeline (its events start
/// somewhere in the room's history), as Synapse.
#[tokio::test]
async fn newly_joined_room_timeline_is_limited() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let filter = json!({"room": {"timeline": {"types": ["m.room.message"], "limit": 10},
                                 "state": {"types": []}}});
    for i in 0..4 {
        send_text(&server, &alice, &room, &format!("test1-{i}")).await;
    }
    let since = next_batch(&sync_filtered(&server, &bob, None, &filter).await);
    for i in 0..4 {
        send_text(&server, &alice, &room, &format!("test2-{i}")).await;
    }
    join(&server, &bob, &room).await;

    let body = sync_filtered(&server, &bob, Some(&since), &filter).await;
    let timeline = &joined_room(&body, &room)["timeline"];
    assert_eq!(bodies(&timeline["events"]).len(), 8, "{timeline}");
    assert_eq!(timeline["limited"], true, "{timeline}");

    // A room the user was already in is limited only when events are left out.
    send_text(&server, &alice, &room, "later").await;
    let body = sync_filtered(&server, &bob, Some(&next_batch(&body)), &filter).await;
    let timeline = &joined_room(&body, &room)["timeline"];
    assert_eq!(bodies(&timeline["events"]), ["later"], "{timeline}");
    assert_eq!(timeline["limited"], false, "{timeline}");
}

/// sytest "When user joins and leaves a room in the same batch, the full
/// state is still included in the next sync" and "Previously left rooms
/// don't appear in the leave section of sync".
#[tokio::test]
async fn left_rooms_in_incremental_syncs() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({})).await;
    set_madeup_state(&server, &alice, &room).await;
    invite(&server, &alice, &room, &bob.user_id).await;
    let filter = json!({"room": {"timeline": {"types": []},
                                 "state": {"types": ["a.madeup.test.state"]},
                                 "ephemeral": {"types": []},
                                 "include_leave": true},
                        "presence": {"types": []}});
    let since = next_batch(&sync_filtered(&server, &bob, None, &filter).await);
    join(&server, &bob, &room).await;
    leave(&server, &bob, &room).await;

    // Joined and left in one window: the whole (filtered) state.
    let body = sync_filtered(&server, &bob, Some(&since), &filter).await;
    let left = &body["rooms"]["leave"][&room];
    let state = events(&left["state"]["events"]);
    assert_eq!(state.len(), 1, "{left}");
    assert_eq!(state[0]["type"], "a.madeup.test.state", "{left}");
    assert_eq!(state[0]["content"]["my_key"], 1, "{left}");

    // Shown once: the next incremental sync (with include_leave) leaves it
    // out, though the room goes on.
    let since = next_batch(&body);
    let other = create_room(&server, &bob, json!({})).await;
    send_text(&server, &alice, &room, "after bob left").await;
    let filter = json!({"room": {"timeline": {"limit": 1}, "include_leave": true}});
    let body = sync_filtered(&server, &bob, Some(&since), &filter).await;
    assert!(rooms_section_is_empty(&body, "leave"), "{body}");
    joined_room(&body, &other);

    // An initial sync with include_leave still has it, a full-state one too.
    let body = sync_filtered(&server, &bob, None, &filter).await;
    assert!(body["rooms"]["leave"].get(&room).is_some(), "{body}");
    let query = format!(
        "timeout=0&full_state=true&since={}&{}",
        enc(&since),
        filter_param(&filter)
    );
    let body = sync(&server, &bob, &query).await;
    assert!(body["rooms"]["leave"].get(&room).is_some(), "{body}");
}

/// sytest "Current state appears in timeline in private history" (and its
/// "with many messages before/after" variants): an event of the current
/// state is in the timeline even when history visibility hides the time it
/// was sent, and the timeline reads past hidden events to find it.
#[tokio::test]
async fn current_state_in_timeline_in_private_history() {
    let server = TestServer::start().await;
    let creator = server.user("creator").await;
    let syncer = server.user("syncer").await;
    let invitee = server.user("invitee").await;
    let room = create_room(&server, &creator, json!({"preset": "public_chat"})).await;
    join(&server, &syncer, &room).await;
    set_state(
        &server,
        &creator,
        &room,
        "m.room.history_visibility",
        "",
        json!({"history_visibility": "joined"}),
    )
    .await;
    invite(&server, &creator, &room, &invitee.user_id).await;
    let since = sync_token(&server, &syncer).await;
    leave(&server, &syncer, &room).await;
    join(&server, &invitee, &room).await;
    for i in 0..15 {
        send_text(&server, &creator, &room, &format!("hidden {i}")).await;
    }
    join(&server, &syncer, &room).await;

    let body = sync_since(&server, &syncer, &since).await;
    let timeline = &joined_room(&body, &room)["timeline"];
    let found = events(&timeline["events"]).iter().any(|e| {
        e["type"] == "m.room.member"
            && e["state_key"] == invitee.user_id.as_str()
            && e["content"]["membership"] == "join"
    });
    assert!(found, "no join of the invitee: {timeline}");
    assert!(bodies(&timeline["events"]).is_empty(), "{timeline}");
}

/// sytest "A change to displayname should not result in a full state sync"
/// and "Can pass a JSON filter as a query parameter": an incremental sync
/// leaves out a room whose events are all filtered out; `limit: 0` gives an
/// empty timeline.
#[tokio::test]
async fn filtered_out_rooms_and_empty_timelines() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    set_madeup_state(&server, &alice, &room).await;
    let filter = json!({"room": {"timeline": {"types": []},
                                 "state": {"types": ["a.madeup.test.state"]},
                                 "ephemeral": {"types": []}},
                        "presence": {"types": []}});
    let body = sync_filtered(&server, &alice, None, &filter).await;
    assert_eq!(
        events(&joined_room(&body, &room)["state"]["events"]).len(),
        1,
        "{body}"
    );
    let since = next_batch(&body);
    set_state(
        &server,
        &alice,
        &room,
        "m.room.member",
        &alice.user_id,
        json!({"membership": "join", "displayname": "boris"}),
    )
    .await;
    send_text(&server, &alice, &room, "filtered out").await;
    let body = sync_filtered(&server, &alice, Some(&since), &filter).await;
    assert!(rooms_section_is_empty(&body, "join"), "{body}");

    let filter = json!({"room": {"state": {"types": ["m.room.member"]},
                                 "timeline": {"limit": 0}}});
    let body = sync_filtered(&server, &alice, None, &filter).await;
    let r = joined_room(&body, &room);
    assert!(events(&r["timeline"]["events"]).is_empty(), "{r}");
    assert_eq!(r["timeline"]["limited"], true, "{r}");
    let state = events(&r["state"]["events"]);
    assert_eq!(state.len(), 1, "{r}");
    assert_eq!(state[0]["type"], "m.room.member", "{r}");
}

/// sytest "Named room comes with just joined member count summary" and
/// "Room summary counts change when membership changes": heroes only for a
/// room with neither a name nor a canonical alias.
#[tokio::test]
async fn summary_heroes_only_without_a_name() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let filter = json!({"room": {"state": {"lazy_load_members": true}}});
    let body = sync_filtered(&server, &alice, None, &filter).await;
    assert_eq!(
        joined_room(&body, &room)["summary"],
        json!({"m.joined_member_count": 2, "m.invited_member_count": 0,
               "m.heroes": [bob.user_id]}),
    );

    set_state(
        &server,
        &alice,
        &room,
        "m.room.name",
        "",
        json!({"name": "A room name"}),
    )
    .await;
    let body = sync_filtered(&server, &alice, None, &filter).await;
    assert_eq!(
        joined_room(&body, &room)["summary"],
        json!({"m.joined_member_count": 2, "m.invited_member_count": 0}),
    );

    // A name blanked out names nothing: heroes again.
    set_state(&server, &alice, &room, "m.room.name", "", json!({})).await;
    let body = sync_filtered(&server, &alice, None, &filter).await;
    assert_eq!(
        joined_room(&body, &room)["summary"]["m.heroes"],
        json!([bob.user_id])
    );
}

/// sytest "Latest account data appears in v2 /sync": the filter's account
/// data types apply, to `m.push_rules` too; the newest content of a type.
#[tokio::test]
async fn account_data_filters() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let room_data = |ty: &str| {
        format!(
            "/_matrix/client/v3/user/{}/rooms/{}/account_data/{}",
            enc(&alice.user_id),
            enc(&room),
            enc(ty)
        )
    };
    for (global, in_room) in [("frogs", "dogs"), ("cats", "rats")] {
        put_account_data(
            &server,
            &alice,
            "my.test.type",
            json!({"cats_or_rats": global}),
        )
        .await;
        let (st, b) = server
            .put(
                &room_data("my.test.type"),
                alice.token(),
                json!({"cats_or_rats": in_room}),
            )
            .await;
        assert_eq!(st, 200, "{b}");
    }
    put_account_data(&server, &alice, "other.type", json!({})).await;

    let filter = json!({"account_data": {"types": ["my.test.type"]}});
    let body = sync_filtered(&server, &alice, None, &filter).await;
    assert_eq!(
        body["account_data"]["events"],
        json!([{"type": "my.test.type", "content": {"cats_or_rats": "cats"}}]),
    );
    assert_eq!(
        joined_room(&body, &room)["account_data"]["events"],
        json!([{"type": "my.test.type", "content": {"cats_or_rats": "rats"}}]),
    );

    // Unfiltered: the push rules come too; `not_types` leaves them out.
    let body = sync(&server, &alice, "timeout=0").await;
    assert!(
        event_of_type(&body["account_data"]["events"], "m.push_rules").is_some(),
        "{body}"
    );
    let filter = json!({"account_data": {"not_types": ["m.push_rules"]},
                        "room": {"account_data": {"not_types": ["my.*"]}}});
    let body = sync_filtered(&server, &alice, None, &filter).await;
    let global = &body["account_data"]["events"];
    assert!(event_of_type(global, "m.push_rules").is_none(), "{body}");
    assert!(event_of_type(global, "other.type").is_some(), "{body}");
    assert!(event_of_type(global, "my.test.type").is_some(), "{body}");
    assert!(
        events(&joined_room(&body, &room)["account_data"]["events"]).is_empty(),
        "{body}"
    );
}

/// sytest "Ignore user in existing room", "Ignore invite in full sync" and
/// "Ignore invite in incremental sync": `m.ignored_user_list` hides the
/// ignored users' invites and messages (spec, "Ignoring Users").
#[tokio::test]
async fn ignored_users_are_hidden() {
    let server = TestServer::start().await;
    let user1 = server.user("user1").await;
    let user2 = server.user("user2").await;
    let user3 = server.user("user3").await;
    let room = create_room(&server, &user1, json!({"preset": "public_chat"})).await;
    join(&server, &user2, &room).await;
    join(&server, &user3, &room).await;
    for who in [&user1, &user2, &user3] {
        send_text(&server, who, &room, "Message").await;
    }
    let filter = json!({"account_data": {"types": ["m.ignored_user_list"]},
                        "presence": {"types": []},
                        "room": {"timeline": {"types": ["m.room.message"]},
                                 "state": {"types": ["m.room.member"]}}});
    let body = sync_filtered(&server, &user1, None, &filter).await;
    assert_eq!(
        bodies(&joined_room(&body, &room)["timeline"]["events"]).len(),
        3
    );
    let since = next_batch(&body);

    // An invite from user2 before the ignore, another after.
    let invite_room1 = create_room(&server, &user2, json!({})).await;
    invite(&server, &user2, &invite_room1, &user1.user_id).await;
    let body = sync_filtered(&server, &user1, Some(&since), &filter).await;
    assert!(
        body["rooms"]["invite"].get(&invite_room1).is_some(),
        "{body}"
    );
    put_account_data(
        &server,
        &user1,
        "m.ignored_user_list",
        json!({"ignored_users": {user2.user_id.clone(): {}}}),
    )
    .await;
    let invite_room2 = create_room(&server, &user2, json!({})).await;
    invite(&server, &user2, &invite_room2, &user1.user_id).await;

    // Full sync: only user1's and user3's messages, no invites.
    let body = sync_filtered(&server, &user1, None, &filter).await;
    let r = joined_room(&body, &room);
    let senders: Vec<&str> = events(&r["timeline"]["events"])
        .iter()
        .map(|e| e["sender"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        senders,
        [user1.user_id.as_str(), user3.user_id.as_str()],
        "{r}"
    );
    assert_eq!(member_keys(&r["state"]["events"]).len(), 3, "{r}");
    assert!(rooms_section_is_empty(&body, "invite"), "{body}");
    // Nor in /messages.
    let (st, page) = server
        .get(&room_path(&room, "/messages?dir=b&limit=20"), user1.token())
        .await;
    assert_eq!(st, 200, "{page}");
    let chunk = events(&page["chunk"]);
    assert!(!chunk.is_empty(), "{page}");
    let from_user2: Vec<&Value> = chunk
        .iter()
        .filter(|e| e["sender"] == user2.user_id.as_str())
        .collect();
    // Their state events (the join) still come, their messages not.
    assert!(!from_user2.is_empty(), "{page}");
    assert!(
        from_user2.iter().all(|e| e["state_key"].is_string()),
        "{page}"
    );

    // Incremental: no invite either; a room with only an ignored user's
    // message is left out; others' messages still come.
    let body = sync_filtered(&server, &user1, Some(&since), &filter).await;
    assert!(rooms_section_is_empty(&body, "invite"), "{body}");
    let since = next_batch(&body);
    send_text(&server, &user2, &room, "Message2").await;
    let body = sync_filtered(&server, &user1, Some(&since), &filter).await;
    assert!(rooms_section_is_empty(&body, "join"), "{body}");
    let since = next_batch(&body);
    send_text(&server, &user3, &room, "Message3").await;
    let body = sync_filtered(&server, &user1, Some(&since), &filter).await;
    assert_eq!(
        bodies(&joined_room(&body, &room)["timeline"]["events"]),
        ["Message3"]
    );

    // Unignored: user2's messages come again.
    put_account_data(
        &server,
        &user1,
        "m.ignored_user_list",
        json!({"ignored_users": {}}),
    )
    .await;
    let body = sync_filtered(&server, &user1, None, &filter).await;
    assert_eq!(
        bodies(&joined_room(&body, &room)["timeline"]["events"]).len(),
        5,
        "{body}"
    );
}

/// The members (state key, membership) in a room's state section.
fn state_members(body: &Value, room: &str) -> Vec<(String, String)> {
    let mut members: Vec<(String, String)> = body["rooms"]["join"][room]["state"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["type"] == "m.room.member")
                .map(|e| {
                    let key = e["state_key"].as_str().unwrap_or_default().to_owned();
                    let membership = e["content"]["membership"].as_str().unwrap_or_default();
                    (key, membership.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    members.sort();
    members
}

fn joined_as(users: &[&Session]) -> Vec<(String, String)> {
    let mut members: Vec<(String, String)> = users
        .iter()
        .map(|u| (u.user_id.clone(), "join".to_owned()))
        .collect();
    members.sort();
    members
}

async fn fill(server: &TestServer, who: &Session, room: &str, n: usize) {
    for i in 0..n {
        send_text(server, who, room, &format!("filler {i}")).await;
    }
}

/// sytest "The only membership state included in an incremental sync is
/// for senders in the timeline", "Gapped incremental syncs include all state
/// changes", "Old leaves are present in gapped incremental syncs", "Old
/// members are included in gappy incr LL sync if they start speaking",
/// "Members from the gap are included in gappy incr LL sync" and "We do
/// send redundant membership state across incremental syncs if asked".
#[tokio::test]
async fn lazy_loaded_members_in_incremental_syncs() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let charlie = server.user("charlie").await;
    let dave = server.user("dave").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "name": "LL"}),
    )
    .await;
    join(&server, &bob, &room).await;
    join(&server, &charlie, &room).await;
    fill(&server, &bob, &room, 10).await;
    let filter = json!({"room": {"state": {"lazy_load_members": true}, "timeline": {"limit": 10}}});
    let body = sync_filtered(&server, &alice, None, &filter).await;
    assert_eq!(
        state_members(&body, &room),
        joined_as(&[&alice, &bob]),
        "{body}"
    );
    // A public room's state as Synapse makes it: no guest access event.
    let mut types: Vec<&str> = events(&joined_room(&body, &room)["state"]["events"])
        .iter()
        .filter_map(|e| e["type"].as_str())
        .filter(|t| *t != "m.room.member")
        .collect();
    types.sort_unstable();
    assert_eq!(
        types,
        [
            "m.room.create",
            "m.room.history_visibility",
            "m.room.join_rules",
            "m.room.name",
            "m.room.power_levels"
        ],
    );
    let first = next_batch(&body);

    // Not gapped: the new speaker's (unchanged) member event, once.
    send_text(&server, &charlie, &room, "Message from charlie").await;
    let body = sync_filtered(&server, &alice, Some(&first), &filter).await;
    assert_eq!(
        state_members(&body, &room),
        joined_as(&[&charlie]),
        "{body}"
    );
    let body = sync_filtered(&server, &alice, Some(&next_batch(&body)), &filter).await;
    assert!(rooms_section_is_empty(&body, "join"), "{body}");
    let since = next_batch(&body);

    // Gapped: who joined in the gap comes though silent; charlie was sent.
    join(&server, &dave, &room).await;
    fill(&server, &charlie, &room, 12).await;
    let body = sync_filtered(&server, &alice, Some(&since), &filter).await;
    assert_eq!(joined_room(&body, &room)["timeline"]["limited"], true);
    assert_eq!(state_members(&body, &room), joined_as(&[&dave]), "{body}");

    // An old leave in the gap.
    let since = next_batch(&body);
    leave(&server, &dave, &room).await;
    fill(&server, &charlie, &room, 12).await;
    let body = sync_filtered(&server, &alice, Some(&since), &filter).await;
    let left = vec![(dave.user_id.clone(), "leave".to_owned())];
    assert_eq!(state_members(&body, &room), left, "{body}");

    // Another device was sent nothing yet: an old member who starts
    // speaking in a gapped sync comes with their member event.
    let alice2 = server.login("alice", "password123").await;
    let body = sync_filtered(&server, &alice2, Some(&first), &filter).await;
    assert_eq!(
        state_members(&body, &room),
        vec![
            (charlie.user_id.clone(), "join".to_owned()),
            left[0].clone()
        ],
        "{body}"
    );

    // include_redundant_members: the speakers' member events every time.
    let redundant = json!({"room": {"state": {"lazy_load_members": true,
                                               "include_redundant_members": true},
                                    "timeline": {"limit": 10}}});
    let since = next_batch(&body);
    send_text(&server, &bob, &room, "New message from bob").await;
    send_text(&server, &charlie, &room, "New message from charlie").await;
    let body = sync_filtered(&server, &alice, Some(&since), &redundant).await;
    assert_eq!(
        state_members(&body, &room),
        joined_as(&[&bob, &charlie]),
        "{body}"
    );
    let body = sync_filtered(&server, &alice, Some(&since), &filter).await;
    assert_eq!(state_members(&body, &room), Vec::new(), "{body}");
}

/// sytest "Can request federation format via the filter": timeline events
/// as servers exchange them, with their event id.
#[tokio::test]
async fn federation_event_format() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let msg = send_text(&server, &alice, &room, "Test message").await;
    let filter = json!({"event_format": "federation", "room": {"timeline": {"limit": 1}}});
    let body = sync_filtered(&server, &alice, None, &filter).await;
    let r = joined_room(&body, &room);
    let timeline = events(&r["timeline"]["events"]);
    assert_eq!(timeline.len(), 1, "{r}");
    let ev = &timeline[0];
    for key in [
        "event_id",
        "content",
        "room_id",
        "sender",
        "origin_server_ts",
        "type",
        "prev_events",
        "auth_events",
        "depth",
        "hashes",
        "signatures",
    ] {
        assert!(ev.get(key).is_some(), "{key} missing: {ev}");
    }
    assert_eq!(ev["event_id"], msg.as_str());
    assert_eq!(ev["content"]["body"], "Test message");
    assert!(ev["unsigned"]["age"].is_u64(), "{ev}");

    // The client format has none of the federation fields.
    let body = sync(&server, &alice, "timeout=0").await;
    let timeline = &joined_room(&body, &room)["timeline"]["events"];
    let ev = events(timeline).last().expect("an event");
    assert!(
        ev.get("prev_events").is_none() && ev.get("hashes").is_none(),
        "{ev}"
    );
}
