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
