//! POST /user_directory/search: who finds whom (sytest 52user-directory and
//! Synapse's rules: users sharing a joined room with the searcher, and
//! users joined to a room whose join rule is public or whose history is
//! world-readable), guests and deactivated users never, word-prefix
//! matching, the result shape, the rooms' directory flags and words after a
//! migration, and the errors.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

const SEARCH: &str = "/_matrix/client/v3/user_directory/search";

/// The user ids `who` finds with `term`.
async fn found(server: &TestServer, who: &Session, term: &str) -> Vec<String> {
    let (st, body) = server
        .post(SEARCH, who.token(), json!({"search_term": term}))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["limited"], false, "{body}");
    field_of_each(&body["results"], "user_id")
}

/// Whether `who` finds `target` by its display name `name`.
async fn finds(server: &TestServer, who: &Session, name: &str, target: &Session) -> bool {
    found(server, who, name).await.contains(&target.user_id)
}

/// Alice's private room (private_chat preset) with Bob invited and joined;
/// Bob is named `name`. Carol shares no room with either.
struct PrivateRoom {
    alice: Session,
    bob: Session,
    carol: Session,
    room: String,
}

async fn private_room(server: &TestServer, name: &str) -> PrivateRoom {
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    set_displayname(server, &bob, name).await;
    let room = create_room(
        server,
        &alice,
        json!({"preset": "private_chat", "invite": [bob.user_id]}),
    )
    .await;
    join(server, &bob, &room).await;
    PrivateRoom {
        alice,
        bob,
        carol,
        room,
    }
}

/// Who finds Bob: (Alice, who shares the room; Carol, who does not; Bob
/// himself).
async fn who_finds_bob(server: &TestServer, p: &PrivateRoom, name: &str) -> (bool, bool, bool) {
    (
        finds(server, &p.alice, name, &p.bob).await,
        finds(server, &p.carol, name, &p.bob).await,
        finds(server, &p.bob, name, &p.bob).await,
    )
}

fn join_rule(rule: &str) -> Value {
    json!({"join_rule": rule})
}

fn history(visibility: &str) -> Value {
    json!({"history_visibility": visibility})
}

const JOIN_RULES: &str = "m.room.join_rules";
const HISTORY: &str = "m.room.history_visibility";

/// Bob, named "Bobby {word}", in Alice's private room: at first only Alice
/// finds him, and Bob does not find himself through a room he shares
/// (sytest: "User initially not in directory"). Then Alice sets each state
/// in turn, and after each who finds Bob is checked: (Alice, Carol, Bob).
async fn follow_changes(word: &str, steps: &[(&str, Value, (bool, bool, bool))]) {
    let server = TestServer::start().await;
    let p = private_room(&server, &format!("Bobby {word}")).await;
    assert_eq!(who_finds_bob(&server, &p, word).await, (true, false, false));
    for (ty, content, expected) in steps {
        set_state(&server, &p.alice, &p.room, ty, "", content.clone()).await;
        assert_eq!(
            who_finds_bob(&server, &p, word).await,
            *expected,
            "after {ty} {content}"
        );
    }
}

#[tokio::test]
async fn members_appear_and_disappear_when_join_rules_change() {
    follow_changes(
        "Joinrule",
        &[
            (JOIN_RULES, join_rule("public"), (true, true, true)),
            (JOIN_RULES, join_rule("invite"), (true, false, false)),
        ],
    )
    .await;
}

#[tokio::test]
async fn members_appear_and_disappear_when_history_visibility_changes() {
    follow_changes(
        "visible",
        &[
            (HISTORY, history("world_readable"), (true, true, true)),
            (HISTORY, history("shared"), (true, false, false)),
        ],
    )
    .await;
}

/// The join rule going back to invite leaves the room public while its
/// history is world-readable.
#[tokio::test]
async fn members_stay_while_history_is_world_readable() {
    follow_changes(
        "stays",
        &[
            (JOIN_RULES, join_rule("public"), (true, true, true)),
            (HISTORY, history("world_readable"), (true, true, true)),
            (JOIN_RULES, join_rule("invite"), (true, true, true)),
            (HISTORY, history("shared"), (true, false, false)),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_public_room_shows_its_members_until_they_leave() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    set_displayname(&server, &bob, "Bobby Leaver").await;
    // Public by its join rule, not listed in the room directory.
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    assert!(!finds(&server, &bob, "leaver", &bob).await);

    join(&server, &bob, &room).await;
    assert!(finds(&server, &carol, "leaver", &bob).await);
    assert!(finds(&server, &bob, "leaver", &bob).await);

    leave(&server, &bob, &room).await;
    assert!(!finds(&server, &carol, "leaver", &bob).await);
    assert!(!finds(&server, &alice, "leaver", &bob).await);
    assert!(!finds(&server, &bob, "leaver", &bob).await);
}

#[tokio::test]
async fn results_carry_display_name_and_avatar() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    set_displayname(&server, &bob, "Bobby Pictured").await;
    let avatar = "mxc://example.org/bobface";
    let path = format!(
        "/_matrix/client/v3/profile/{}/avatar_url",
        enc(&bob.user_id)
    );
    let (st, b) = server
        .put(&path, bob.token(), json!({"avatar_url": avatar}))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;

    let (st, body) = server
        .post(SEARCH, alice.token(), json!({"search_term": "PICTURED"}))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({
            "results": [{"user_id": bob.user_id, "display_name": "Bobby Pictured",
                         "avatar_url": avatar}],
            "limited": false,
        })
    );
}

#[tokio::test]
async fn guests_and_deactivated_users_never_appear() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let dora = server.user("dora").await;
    let gus = server.user("gus").await;
    set_displayname(&server, &dora, "Hidden Dora").await;
    set_displayname(&server, &gus, "Hidden Gus").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &dora, &room).await;
    join(&server, &gus, &room).await;
    let mut both = found(&server, &alice, "hidden").await;
    both.sort();
    let mut expected = vec![dora.user_id.clone(), gus.user_id.clone()];
    expected.sort();
    assert_eq!(both, expected);

    // Gus becomes a guest account (set in the database: guests cannot join
    // rooms here yet), Dora deactivates hers.
    server
        .sql(&format!(
            "UPDATE accounts SET account_type = 2 WHERE user_id = '{}'",
            sql_quote(&gus.user_id)
        ))
        .await;
    deactivate(&server, &dora, "dora").await;
    assert_eq!(found(&server, &alice, "hidden").await, Vec::<String>::new());
}

/// As Synapse matches: every word of the term begins a word of the user's
/// localpart or display name, whatever the case; inside a word is no match;
/// a renamed user is found by the new name only; a term without words
/// finds no one.
#[tokio::test]
async fn each_word_of_the_term_begins_a_word_of_the_user() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("robert_smith").await;
    set_displayname(&server, &bob, "Bobby Tables-Builder").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;

    let bob_only = std::slice::from_ref(&bob.user_id);
    for term in [
        "rob",
        "SMI",
        "robert_smith",
        "bobby",
        "builder",
        "tab bui",
        "Bobby Tables-Builder",
        "@robert_smith",
        "  bobby!  ",
    ] {
        assert_eq!(found(&server, &alice, term).await, bob_only, "{term}");
    }
    for term in ["obby", "uilder", "bobby x", "smithy", "", " ", "@:!"] {
        assert_eq!(
            found(&server, &alice, term).await,
            Vec::<String>::new(),
            "{term:?}"
        );
    }

    set_displayname(&server, &bob, "Roberto").await;
    assert_eq!(found(&server, &alice, "bobby").await, Vec::<String>::new());
    assert_eq!(found(&server, &alice, "roberto").await, bob_only);
}

/// Rooms made before the directory flags existed get them from their
/// current state, and profiles their directory words, when the migration
/// runs (re-run here on both databases).
#[tokio::test]
async fn the_migration_sets_existing_rooms_flags() {
    let mut server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let erin = server.user("erin").await;
    set_displayname(&server, &bob, "Migrated Bob").await;
    set_displayname(&server, &erin, "Migrated Erin").await;
    let by_rule = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &by_rule).await;
    let by_history = create_room(
        &server,
        &alice,
        json!({"preset": "private_chat", "invite": [erin.user_id]}),
    )
    .await;
    join(&server, &erin, &by_history).await;
    set_state(
        &server,
        &alice,
        &by_history,
        "m.room.history_visibility",
        "",
        history("world_readable"),
    )
    .await;

    server
        .sql("UPDATE rooms SET join_rule_public = 0, world_readable = 0")
        .await;
    assert_eq!(
        found(&server, &carol, "migrated").await,
        Vec::<String>::new()
    );
    server
        .sql("ALTER TABLE rooms DROP COLUMN join_rule_public")
        .await;
    server
        .sql("ALTER TABLE rooms DROP COLUMN world_readable")
        .await;
    server.sql("DROP TABLE user_directory_words").await;
    server
        .sql("DELETE FROM schema_migrations WHERE version = 15")
        .await;
    server.restart().await;

    let mut ids = found(&server, &carol, "migrated").await;
    ids.sort();
    let mut expected = vec![bob.user_id.clone(), erin.user_id.clone()];
    expected.sort();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn bad_searches_are_refused() {
    let server = TestServer::start_with(|c| c.registration.allow_guests = true).await;
    let alice = server.user("alice").await;
    for (body, errcode) in [
        (json!({}), "M_BAD_JSON"),
        (json!({"limit": 5}), "M_BAD_JSON"),
        (json!({"search_term": 7}), "M_BAD_JSON"),
        (json!({"search_term": "a", "limit": -1}), "M_BAD_JSON"),
        (json!({"search_term": "a", "limit": "ten"}), "M_BAD_JSON"),
    ] {
        assert_error_for(
            &body.to_string(),
            &server.post(SEARCH, alice.token(), body.clone()).await,
            400,
            errcode,
        );
    }
    let (st, body) = server
        .request_raw(reqwest::Method::POST, SEARCH, alice.token(), "{not json")
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errcode"], "M_NOT_JSON", "{body}");
    assert_error(
        &server
            .post(SEARCH, Some("not-a-token"), json!({"search_term": "a"}))
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    let guest = server.guest().await;
    assert_error(
        &server
            .post(SEARCH, guest.token(), json!({"search_term": "a"}))
            .await,
        403,
        "M_GUEST_ACCESS_FORBIDDEN",
    );
}
