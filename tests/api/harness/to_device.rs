//! Send-to-device helpers: a send, and the `to_device` events of a sync.

use reqwest::StatusCode;
use serde_json::Value;

use super::{Session, TestServer, enc};

/// PUT /sendToDevice/{ty}/{txn} with `{"messages": messages}`; the answer
/// as it is.
pub async fn try_send_to_device(
    server: &TestServer,
    who: &Session,
    ty: &str,
    txn: &str,
    messages: Value,
) -> (StatusCode, Value) {
    let path = format!("/_matrix/client/v3/sendToDevice/{}/{}", enc(ty), enc(txn));
    server
        .put(
            &path,
            who.token(),
            serde_json::json!({ "messages": messages }),
        )
        .await
}

/// [`try_send_to_device`], asserting 200 and the empty object.
pub async fn send_to_device(
    server: &TestServer,
    who: &Session,
    ty: &str,
    txn: &str,
    messages: Value,
) {
    let resp = try_send_to_device(server, who, ty, txn, messages).await;
    assert_eq!(
        resp,
        (StatusCode::OK, serde_json::json!({})),
        "sendToDevice {ty}/{txn}"
    );
}

/// `to_device.events` of a sync body, asserting it is an array.
pub fn to_device_events(body: &Value) -> Vec<Value> {
    body["to_device"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("to_device.events: {body}"))
        .clone()
}

/// Messages waiting for `who`'s device in the database: stored sends that
/// name the device (its user id then device id, as a send's body lists
/// its recipients) above the position its acknowledgement reached.
pub async fn inbox_rows(server: &TestServer, who: &Session) -> i64 {
    let (user, device) = (
        super::sql_quote(&who.user_id),
        super::sql_quote(&who.device_id),
    );
    let names = if super::backend() == "postgres" {
        format!("position(convert_to('{user}{device}', 'UTF8') in body) > 0")
    } else {
        format!("instr(body, CAST('{user}{device}' AS BLOB)) > 0")
    };
    server
        .sql_count(&format!(
            "SELECT COUNT(*) FROM to_device_sends WHERE {names} AND stream_ordering > COALESCE(
                (SELECT position FROM to_device_acks WHERE user_id = '{user}' AND device_id = '{device}'), 0)"
        ))
        .await
}

/// Sends stored: a send stays until every recipient device acknowledged
/// it or was deleted.
pub async fn stored_sends(server: &TestServer) -> i64 {
    server
        .sql_count("SELECT COUNT(*) FROM to_device_sends")
        .await
}
