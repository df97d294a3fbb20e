//! Small conformance causes found by sytest: push rule paths and ids,
//! sending without a transaction id, event size limits, typing without a
//! timeout, invalid UTF-8, redacting across rooms, kicks, repeated state,
//! custom join content, and `/messages`' `end`. Each test names the sytest
//! tests it follows.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

const RULES: &str = "/_matrix/client/v3/pushrules";

fn rule_ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|r| r["rule_id"].as_str().expect("rule_id").to_owned())
        .collect()
}

fn user_rule_ids(list: &Value) -> Vec<String> {
    rule_ids(list)
        .into_iter()
        .filter(|id| !id.starts_with('.'))
        .collect()
}

async fn add_rule(
    server: &TestServer,
    who: &Session,
    kind: &str,
    id: &str,
    query: &str,
    body: Value,
) {
    let path = format!("{RULES}/global/{kind}/{}{query}", enc(id));
    let (st, b) = server.put(&path, who.token(), body).await;
    assert_eq!(st, StatusCode::OK, "PUT {path}: {b}");
    assert_eq!(b, json!({}));
}

/// sytest 61push/02add_rules.pl "Can add global push rule for
/// room/sender/content/override/underride": any rule id (a room rule's
/// `#spam:example.com` too), read back as the rule, in its kind's list
/// (`/pushrules/global/{kind}/`), in the scope, in the whole ruleset, and
/// through `/enabled` and `/actions`.
#[tokio::test]
async fn push_rules_of_every_kind_can_be_added_and_read() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let cond = json!([{"kind": "event_match", "key": "content.msgtype", "pattern": "m.notice"}]);
    for (kind, id, extra) in [
        ("room", "#spam:example.com", json!({})),
        ("sender", "@bob:example.com", json!({})),
        (
            "content",
            "my_content_rule",
            json!({"pattern": "my_pattern"}),
        ),
        ("override", "my_override_rule", json!({"conditions": cond})),
        (
            "underride",
            "my_underride_rule",
            json!({"conditions": cond}),
        ),
        ("content", "тест", json!({"pattern": "тест"})),
    ] {
        let mut body = extra.clone();
        body["actions"] = json!(["notify"]);
        add_rule(&server, &alice, kind, id, "", body).await;
        let path = format!("{RULES}/global/{kind}/{}", enc(id));
        let (st, rule) = server.get(&path, alice.token()).await;
        assert_eq!(st, StatusCode::OK, "{rule}");
        assert_eq!(rule["rule_id"], id);
        assert_eq!(rule["enabled"], true);
        assert_eq!(rule["default"], false);
        assert_eq!(rule["actions"], json!(["notify"]));

        let (st, list) = server
            .get(&format!("{RULES}/global/{kind}/"), alice.token())
            .await;
        assert_eq!(st, StatusCode::OK, "{list}");
        assert!(rule_ids(&list).contains(&id.to_owned()), "{list}");
        let (st, scope) = server.get(&format!("{RULES}/global/"), alice.token()).await;
        assert_eq!(st, StatusCode::OK, "{scope}");
        assert_eq!(scope[kind], list);
        let (_, all) = server.get(&format!("{RULES}/"), alice.token()).await;
        assert_eq!(all["global"][kind], list);

        let (st, b) = server.get(&format!("{path}/enabled"), alice.token()).await;
        assert_eq!((st, b), (StatusCode::OK, json!({"enabled": true})));
        let (st, b) = server.get(&format!("{path}/actions"), alice.token()).await;
        assert_eq!((st, b), (StatusCode::OK, json!({"actions": ["notify"]})));
    }
    // Adding the same rule again replaces it in place.
    add_rule(
        &server,
        &alice,
        "sender",
        "@bob:example.com",
        "",
        json!({"actions": ["notify"]}),
    )
    .await;
    let (_, list) = server
        .get(&format!("{RULES}/global/sender/"), alice.token())
        .await;
    assert_eq!(user_rule_ids(&list), ["@bob:example.com"]);
}

/// sytest "New rules appear before old rules by default", "Can add global
/// push rule before/after an existing rule", "Can delete a push rule",
/// "Can disable a push rule".
#[tokio::test]
async fn push_rules_order_delete_and_disable() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let notify = json!({"actions": ["notify"]});
    add_rule(
        &server,
        &alice,
        "room",
        "#a:example.com",
        "",
        notify.clone(),
    )
    .await;
    add_rule(
        &server,
        &alice,
        "room",
        "#b:example.com",
        "",
        notify.clone(),
    )
    .await;
    let room_list = || async {
        let (st, b) = server
            .get(&format!("{RULES}/global/room/"), alice.token())
            .await;
        assert_eq!(st, StatusCode::OK, "{b}");
        user_rule_ids(&b)
    };
    assert_eq!(room_list().await, ["#b:example.com", "#a:example.com"]);
    add_rule(
        &server,
        &alice,
        "room",
        "#c:example.com",
        "?before=%23a:example.com",
        notify.clone(),
    )
    .await;
    assert_eq!(
        room_list().await,
        ["#b:example.com", "#c:example.com", "#a:example.com"]
    );
    add_rule(
        &server,
        &alice,
        "room",
        "#d:example.com",
        "?after=%23b:example.com",
        notify.clone(),
    )
    .await;
    assert_eq!(
        room_list().await,
        [
            "#b:example.com",
            "#d:example.com",
            "#c:example.com",
            "#a:example.com"
        ]
    );

    let a = format!("{RULES}/global/room/{}", enc("#a:example.com"));
    let (st, b) = server
        .put(
            &format!("{a}/enabled"),
            alice.token(),
            json!({"enabled": false}),
        )
        .await;
    assert_eq!((st, b), (StatusCode::OK, json!({})));
    let (_, rule) = server.get(&a, alice.token()).await;
    assert_eq!(rule["enabled"], false);

    let (st, b) = server.delete(&a, alice.token(), None).await;
    assert_eq!((st, b), (StatusCode::OK, json!({})));
    assert_eq!(
        room_list().await,
        ["#b:example.com", "#d:example.com", "#c:example.com"]
    );
    assert_error(&server.get(&a, alice.token()).await, 404, "M_NOT_FOUND");
}

/// sytest "Trying to add push rule with ... fails with 400" and "Trying to
/// get push rules with ... fails with 400": malformed paths are 400
/// `M_UNRECOGNIZED` (as Synapse), bad bodies 400; `/pushrules` without the
/// slash stays 404 and an unknown rule 404.
#[tokio::test]
async fn malformed_push_rule_paths_are_400() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let notify = json!({"actions": ["notify"]});
    for path in [
        "/",
        "/not_a_scope/room/%23spam:example.com",
        "/global",
        "/global/room",
        "/global/room/",
        "/global/not_a_template/foo",
        "/global/override/.m.rule.master/not_an_attr",
    ] {
        let resp = server
            .put(&format!("{RULES}{path}"), alice.token(), notify.clone())
            .await;
        assert_error(&resp, 400, "M_UNRECOGNIZED");
    }
    for path in [
        "/global",
        "/global/room",
        "/not_a_scope/",
        "/global/not_a_template/",
        "/global/override/.m.rule.master/not_an_attr",
    ] {
        assert_error(
            &server.get(&format!("{RULES}{path}"), alice.token()).await,
            400,
            "M_UNRECOGNIZED",
        );
    }
    for (path, body) in [
        ("/global/override/my_id", json!({"actions": ["notify"]})),
        (
            "/global/underride/my_id",
            json!({"actions": ["notify"], "conditions": [{}]}),
        ),
        ("/global/content/my_id", json!({"actions": ["notify"]})),
        ("/global/room/%23my_room:example.com", json!({})),
        (
            "/global/room/%23my_room:example.com",
            json!({"actions": ["not_an_action"]}),
        ),
        (
            "/global/override/.m.rule.master/enabled",
            json!({"enabled": "not a boolean"}),
        ),
    ] {
        let resp = server
            .put(&format!("{RULES}{path}"), alice.token(), body)
            .await;
        assert_error(&resp, 400, "M_BAD_JSON");
    }
    for path in [
        "/global/room/%23fo%5Co:example.com",
        "/global/room/.reserved",
    ] {
        let resp = server
            .put(&format!("{RULES}{path}"), alice.token(), notify.clone())
            .await;
        assert_error(&resp, 400, "M_INVALID_PARAM");
    }
    let (st, _) = server.get(RULES, alice.token()).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_error(
        &server
            .get(
                &format!("{RULES}/global/override/not_a_rule_id"),
                alice.token(),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    // Nothing above added a rule.
    let (_, all) = server.get(&format!("{RULES}/"), alice.token()).await;
    for kind in ["override", "content", "room", "sender", "underride"] {
        assert!(user_rule_ids(&all["global"][kind]).is_empty(), "{all}");
    }
}
