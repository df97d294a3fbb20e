//! `GET /pushrules/` and `GET /pushrules/global/`: the spec's server-default
//! ruleset (user-defined rules come with the rooms issue).

use axum::{Json, Router};
use ruma::api::client::push::{get_pushrules_all, get_pushrules_global_scope};
use ruma::push::Ruleset;
use serde_json::{Value, json};

use crate::error::{MatrixError, Result};
use crate::http::extract::{GuestAuth, Ruma};
use crate::http::{AppState, ruma_route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<get_pushrules_all::v3::Request, _, _>(r, all);
    ruma_route::<get_pushrules_global_scope::v3::Request, _, _>(r, global)
}

/// The user's ruleset with all five kinds present: ruma omits empty kinds,
/// but clients (and Synapse) expect `content`, `room` and `sender` arrays too.
fn ruleset(r: &crate::storage::Requester) -> Result<Value> {
    let mut value = serde_json::to_value(Ruleset::server_default(&r.user_id()))
        .map_err(MatrixError::internal)?;
    let map = value
        .as_object_mut()
        .ok_or_else(|| MatrixError::internal("ruleset is not an object"))?;
    for kind in ["override", "content", "room", "sender", "underride"] {
        map.entry(kind).or_insert(json!([]));
    }
    add_legacy_mention_rules(map, &r.user_id);
    Ok(value)
}

/// The pre-`m.mentions` rules (deprecated in spec v1.7, dropped from ruma's
/// defaults) that Synapse still serves: clients that do not send
/// `m.mentions` rely on them to highlight a mention of a user's name or @room.
fn add_legacy_mention_rules(map: &mut serde_json::Map<String, Value>, user_id: &str) {
    let localpart = user_id
        .trim_start_matches('@')
        .split(':')
        .next()
        .unwrap_or_default();
    let highlight_sound =
        json!(["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]);
    let insert_after = |list: &mut Vec<Value>, after: &str, rule: Value| {
        let pos = list
            .iter()
            .position(|r| r["rule_id"] == after)
            .map(|p| p + 1)
            .unwrap_or(list.len());
        list.insert(pos, rule);
    };
    if let Some(Value::Array(overrides)) = map.get_mut("override") {
        insert_after(
            overrides,
            ".m.rule.is_user_mention",
            json!({
                "rule_id": ".m.rule.contains_display_name", "default": true, "enabled": true,
                "conditions": [{"kind": "contains_display_name"}],
                "actions": highlight_sound,
            }),
        );
        insert_after(
            overrides,
            ".m.rule.is_room_mention",
            json!({
                "rule_id": ".m.rule.roomnotif", "default": true, "enabled": true,
                "conditions": [
                    {"kind": "event_match", "key": "content.body", "pattern": "@room"},
                    {"kind": "sender_notification_permission", "key": "room"}
                ],
                "actions": ["notify", {"set_tweak": "highlight"}],
            }),
        );
    }
    if let Some(Value::Array(content)) = map.get_mut("content") {
        content.push(json!({
            "rule_id": ".m.rule.contains_user_name", "default": true, "enabled": true,
            "pattern": localpart,
            "actions": highlight_sound,
        }));
    }
}

async fn all(
    GuestAuth(r): GuestAuth,
    _: Ruma<get_pushrules_all::v3::Request>,
) -> Result<Json<Value>> {
    Ok(Json(json!({ "global": ruleset(&r)? })))
}

async fn global(
    GuestAuth(r): GuestAuth,
    _: Ruma<get_pushrules_global_scope::v3::Request>,
) -> Result<Json<Value>> {
    Ok(Json(ruleset(&r)?))
}
