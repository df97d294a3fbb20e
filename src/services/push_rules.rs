//! A user's push rules as they are stored and served: a JSON object with the
//! five kinds, each a list of rules in priority order, edited here.
//!
//! They are not edited as ruma's `Ruleset`, which types a room rule's id as a
//! room id and a sender rule's as a user id: the spec makes `rule_id` a
//! string, and Synapse (and sytest, with `#spam:example.com`) accept any. The
//! rules are evaluated as a `Ruleset` made by [`to_ruleset`], which leaves out
//! the rules ruma cannot type; such a rule could never match an event.

use ruma::push::{Action, PushCondition, Ruleset};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::error::{MatrixError, Result};

/// The rule kinds, in the order clients evaluate them.
pub const KINDS: [&str; 5] = ["override", "content", "room", "sender", "underride"];

/// The override rule that stays above every user rule.
const MASTER: &str = ".m.rule.master";

pub fn is_kind(kind: &str) -> bool {
    KINDS.contains(&kind)
}

fn list<'a>(rules: &'a Map<String, Value>, kind: &str) -> &'a [Value] {
    rules
        .get(kind)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// A kind's list, to change; every kind is there once [`merge_defaults`]
/// made the rules.
fn list_mut<'a>(rules: &'a mut Map<String, Value>, kind: &str) -> Result<&'a mut Vec<Value>> {
    rules
        .get_mut(kind)
        .and_then(Value::as_array_mut)
        .ok_or_else(|| MatrixError::internal(format!("push rules without a {kind} list")))
}

fn id_of(rule: &Value) -> Option<&str> {
    rule.get("rule_id").and_then(Value::as_str)
}

fn is_default(rule: &Value) -> bool {
    rule.get("default") == Some(&Value::Bool(true))
}

fn not_found() -> MatrixError {
    MatrixError::not_found("Push rule not found")
}

/// The stored rules with today's server defaults, as ruma's
/// `update_with_server_default` merges them: per kind `.m.rule.master`
/// first, then the user's own rules in their order, then the other server
/// defaults; a server default keeps the `enabled` and `actions` the user
/// gave it. Stored entries that are not rules are dropped.
pub fn merge_defaults(
    stored: &Map<String, Value>,
    defaults: &Map<String, Value>,
) -> Map<String, Value> {
    let mut merged = Map::new();
    for kind in KINDS {
        let old = list(stored, kind);
        let mut head = Vec::new();
        let mut tail = Vec::new();
        for default in list(defaults, kind) {
            let mut rule = default.clone();
            if let Some(prev) = old.iter().find(|r| id_of(r) == id_of(default)) {
                for field in ["enabled", "actions"] {
                    if let Some(v) = prev.get(field) {
                        rule[field] = v.clone();
                    }
                }
            }
            if id_of(&rule) == Some(MASTER) {
                head.push(rule);
            } else {
                tail.push(rule);
            }
        }
        head.extend(
            old.iter()
                .filter(|r| r.is_object() && id_of(r).is_some() && !is_default(r))
                .cloned(),
        );
        head.extend(tail);
        merged.insert(kind.to_owned(), Value::Array(head));
    }
    merged
}

/// The rules ruma can evaluate: each rule that parses as its kind's type.
pub fn to_ruleset(rules: &Map<String, Value>) -> Ruleset {
    fn typed<T: DeserializeOwned>(rules: &[Value]) -> impl Iterator<Item = T> + '_ {
        rules
            .iter()
            .filter_map(|r| serde_json::from_value(r.clone()).ok())
    }
    let mut set = Ruleset::new();
    set.override_.extend(typed(list(rules, "override")));
    set.content.extend(typed(list(rules, "content")));
    set.room.extend(typed(list(rules, "room")));
    set.sender.extend(typed(list(rules, "sender")));
    set.underride.extend(typed(list(rules, "underride")));
    set
}

/// The rule `rule_id` of `kind`; 404 when there is none.
pub fn get<'a>(rules: &'a Map<String, Value>, kind: &str, rule_id: &str) -> Result<&'a Value> {
    list(rules, kind)
        .iter()
        .find(|r| id_of(r) == Some(rule_id))
        .ok_or_else(not_found)
}

/// The user rule a client's PUT body describes (as Synapse requires):
/// `actions` for every kind, a `pattern` for a content rule, `conditions`
/// (each with a `kind`) for an override or underride rule. A room or sender
/// rule's id is what it matches, and may be any string.
pub fn new_rule(kind: &str, rule_id: &str, body: &Map<String, Value>) -> Result<Value> {
    if rule_id.is_empty() {
        return Err(MatrixError::invalid_param("The rule id is empty"));
    }
    if rule_id.starts_with('.') {
        return Err(MatrixError::invalid_param(
            "Rule ids starting with '.' are reserved for server-default rules",
        ));
    }
    if rule_id.contains(['/', '\\']) {
        return Err(MatrixError::invalid_param(
            "A rule id may not contain slashes",
        ));
    }
    let mut rule = json!({
        "rule_id": rule_id,
        "default": false,
        "enabled": true,
        "actions": check_actions(body.get("actions"))?,
    });
    match kind {
        "content" => {
            let pattern = body
                .get("pattern")
                .and_then(Value::as_str)
                .ok_or_else(|| MatrixError::bad_json("A content rule needs a pattern"))?;
            rule["pattern"] = json!(pattern);
        }
        "override" | "underride" => {
            let conditions = body
                .get("conditions")
                .and_then(Value::as_array)
                .ok_or_else(|| MatrixError::bad_json("This rule needs conditions"))?;
            for c in conditions {
                if c.get("kind").and_then(Value::as_str).is_none() {
                    return Err(MatrixError::bad_json("A condition needs a kind"));
                }
                serde_json::from_value::<PushCondition>(c.clone())
                    .map_err(|e| MatrixError::bad_json(format!("Invalid condition: {e}")))?;
            }
            rule["conditions"] = Value::Array(conditions.clone());
        }
        _ => {}
    }
    Ok(rule)
}

/// A rule's `actions`: a list of the spec's actions (`notify`, and the
/// deprecated `dont_notify` and `coalesce` Synapse still accepts) and tweaks.
pub fn check_actions(actions: Option<&Value>) -> Result<Value> {
    let list = actions
        .and_then(Value::as_array)
        .ok_or_else(|| MatrixError::bad_json("The rule needs a list of actions"))?;
    for action in list {
        let known = match action {
            Value::String(s) => matches!(s.as_str(), "notify" | "dont_notify" | "coalesce"),
            Value::Object(o) => {
                o.get("set_tweak").is_some_and(Value::is_string)
                    && serde_json::from_value::<Action>(action.clone()).is_ok()
            }
            _ => false,
        };
        if !known {
            return Err(MatrixError::bad_json(format!("Unknown action {action}")));
        }
    }
    Ok(Value::Array(list.clone()))
}

/// Adds `rule` (made by [`new_rule`]) to `kind`, or replaces the rule with
/// its id, keeping that one's `enabled`. A new rule, or one placed with
/// `before`/`after` (ids of user rules of the same kind), moves there; a new
/// rule without them becomes the user's first (below `.m.rule.master`).
pub fn insert(
    rules: &mut Map<String, Value>,
    kind: &str,
    mut rule: Value,
    before: Option<&str>,
    after: Option<&str>,
) -> Result<()> {
    if before.or(after).is_some_and(|a| a.starts_with('.')) {
        return Err(MatrixError::invalid_param(
            "A rule cannot be placed relative to a server-default rule",
        ));
    }
    let id = id_of(&rule).unwrap_or_default().to_owned();
    let list = list_mut(rules, kind)?;
    let existing = list.iter().position(|r| id_of(r) == Some(id.as_str()));
    if let Some(i) = existing
        && let Some(enabled) = list[i].get("enabled")
    {
        rule["enabled"] = enabled.clone();
    }
    if let Some(i) = existing
        && before.is_none()
        && after.is_none()
    {
        list[i] = rule;
        return Ok(());
    }
    let mut rest = list.clone();
    if let Some(i) = existing {
        rest.remove(i);
    }
    let index_of = |anchor: &str| {
        rest.iter()
            .position(|r| id_of(r) == Some(anchor))
            .ok_or_else(not_found)
    };
    let mut at = rest.iter().take_while(|r| id_of(r) == Some(MASTER)).count();
    if let Some(a) = after {
        at = index_of(a)? + 1;
    }
    if let Some(b) = before {
        let i = index_of(b)?;
        if after.is_some() && i < at {
            return Err(MatrixError::invalid_param(
                "The rule named by before comes before the one named by after",
            ));
        }
        at = i;
    }
    rest.insert(at, rule);
    *list = rest;
    Ok(())
}

/// Removes the user rule `rule_id` of `kind`: 404 when there is none, 403
/// for a server-default rule.
pub fn remove(rules: &mut Map<String, Value>, kind: &str, rule_id: &str) -> Result<()> {
    let list = list_mut(rules, kind)?;
    let i = list
        .iter()
        .position(|r| id_of(r) == Some(rule_id))
        .ok_or_else(not_found)?;
    if is_default(&list[i]) {
        return Err(MatrixError::forbidden(
            "Server-default rules cannot be removed",
        ));
    }
    list.remove(i);
    Ok(())
}

/// Sets `attr` (`enabled` or `actions`, checked by the caller) of the rule
/// `rule_id` of `kind`; 404 when there is none.
pub fn set_attr(
    rules: &mut Map<String, Value>,
    kind: &str,
    rule_id: &str,
    attr: &str,
    value: Value,
) -> Result<()> {
    let rule = list_mut(rules, kind)?
        .iter_mut()
        .find(|r| id_of(r) == Some(rule_id))
        .ok_or_else(not_found)?;
    rule[attr] = value;
    Ok(())
}
