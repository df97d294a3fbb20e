//! Lists read out of JSON answers (ids of every item, sets to compare).

use std::collections::BTreeSet;

use serde_json::Value;

/// The strings of `items` as a set (to compare lists whose order does not matter).
pub fn set<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> BTreeSet<String> {
    items.into_iter().map(|s| s.as_ref().to_owned()).collect()
}

/// `field` of every object in the array `items`, in order; each must be a string.
#[track_caller]
pub fn field_of_each(items: &Value, field: &str) -> Vec<String> {
    items
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {items}"))
        .iter()
        .map(|item| {
            item[field]
                .as_str()
                .unwrap_or_else(|| panic!("{field} is not a string: {item}"))
                .to_owned()
        })
        .collect()
}

/// The `room_id`s of a list of rooms, in order.
#[track_caller]
pub fn room_ids(rooms: &Value) -> Vec<String> {
    field_of_each(rooms, "room_id")
}

/// The device ids of a GET /devices answer, sorted.
#[track_caller]
pub fn device_ids(body: &Value) -> Vec<String> {
    let mut ids = field_of_each(&body["devices"], "device_id");
    ids.sort();
    ids
}

/// The rule ids of one kind (`override`, `content`...) in a push ruleset, in order.
#[track_caller]
pub fn rule_ids(ruleset: &Value, kind: &str) -> Vec<String> {
    field_of_each(&ruleset[kind], "rule_id")
}
