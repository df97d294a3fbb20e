//! End-to-end key helpers: device keys signed by the device's own ed25519
//! key (as real clients send them), uploads, queries and claims.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{Session, TestServer};

/// A device's identity keys for `user`/`device`, self-signed with a fresh
/// ed25519 key through ruma (canonical JSON, like a client's olm account).
pub fn signed_device_keys(user: &str, device: &str) -> Value {
    use ruma::signatures::Ed25519KeyPair;
    let der = Ed25519KeyPair::generate();
    let pair = Ed25519KeyPair::from_der(&der, device.to_owned()).expect("parse the key");
    let public =
        ruma::serde::Base64::<ruma::serde::base64::Standard>::new(pair.public_key().to_vec())
            .encode();
    let keys = json!({
        "user_id": user,
        "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{device}"): "3C5BFWi2Y8MaVvjM8M22DBmh24PmgR0nPvJOIArzgyI",
            format!("ed25519:{device}"): public,
        },
    });
    let mut object: ruma::CanonicalJsonObject = serde_json::from_value(keys).unwrap();
    ruma::signatures::sign_json(user, &pair, &mut object).expect("sign the device keys");
    serde_json::to_value(object).unwrap()
}

/// [`signed_device_keys`] for the session's own device.
pub fn own_device_keys(who: &Session) -> Value {
    signed_device_keys(&who.user_id, &who.device_id)
}

/// POST /keys/upload with `body`; the answer as it is.
pub async fn try_upload_keys(
    server: &TestServer,
    who: &Session,
    body: Value,
) -> (StatusCode, Value) {
    server
        .post("/_matrix/client/v3/keys/upload", who.token(), body)
        .await
}

/// [`try_upload_keys`], asserting 200; the answer.
pub async fn upload_keys(server: &TestServer, who: &Session, body: Value) -> Value {
    let (st, b) = try_upload_keys(server, who, body).await;
    assert_eq!(st, StatusCode::OK, "keys/upload: {b}");
    b
}

/// POST /keys/query for `{user: devices}`, asserting 200.
pub async fn query_keys(server: &TestServer, who: &Session, device_keys: Value) -> Value {
    let (st, b) = server
        .post(
            "/_matrix/client/v3/keys/query",
            who.token(),
            json!({ "device_keys": device_keys }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "keys/query: {b}");
    b
}

/// POST /keys/claim for `{user: {device: algorithm}}`, asserting 200.
pub async fn claim_keys(server: &TestServer, who: &Session, one_time_keys: Value) -> Value {
    let (st, b) = server
        .post(
            "/_matrix/client/v3/keys/claim",
            who.token(),
            json!({ "one_time_keys": one_time_keys }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "keys/claim: {b}");
    b
}

/// GET /keys/changes for `(from, to]` (sync tokens), asserting 200.
pub async fn key_changes(server: &TestServer, who: &Session, from: &str, to: &str) -> Value {
    let path = format!(
        "/_matrix/client/v3/keys/changes?from={}&to={}",
        super::enc(from),
        super::enc(to)
    );
    let (st, b) = server.get(&path, who.token()).await;
    assert_eq!(st, StatusCode::OK, "keys/changes: {b}");
    b
}

/// An ed25519 signing key of a test client (a cross-signing or device
/// key), its public half as unpadded base64.
pub struct SigningKey {
    pub pair: ruma::signatures::Ed25519KeyPair,
    pub public: String,
}

impl SigningKey {
    /// A fresh key; `version` names it in signatures (`ed25519:<version>`),
    /// the public key itself for a cross-signing key.
    pub fn generate() -> Self {
        use ruma::signatures::Ed25519KeyPair;
        let der = Ed25519KeyPair::generate();
        let probe = Ed25519KeyPair::from_der(&der, String::new()).expect("parse the key");
        let public =
            ruma::serde::Base64::<ruma::serde::base64::Standard>::new(probe.public_key().to_vec())
                .encode();
        let pair = Ed25519KeyPair::from_der(&der, public.clone()).expect("parse the key");
        Self { pair, public }
    }

    /// `object` with `user`'s signature by this key added (canonical JSON,
    /// through ruma, as a client signs).
    pub fn sign(&self, user: &str, object: &Value) -> Value {
        let mut object: ruma::CanonicalJsonObject =
            serde_json::from_value(object.clone()).expect("a JSON object");
        ruma::signatures::sign_json(user, &self.pair, &mut object).expect("sign");
        serde_json::to_value(object).unwrap()
    }

    /// `object` signed by this key as device `device`'s key, under the name
    /// `ed25519:<device>` (its other signatures dropped).
    pub fn sign_as_device(&self, user: &str, device: &str, object: &Value) -> Value {
        let mut signed = self.sign(user, object);
        let sig = signed["signatures"][user][format!("ed25519:{}", self.public)].take();
        signed["signatures"] = json!({ user: { format!("ed25519:{device}"): sig } });
        signed
    }

    /// The unsigned cross-signing key of `user` with `usage` holding this
    /// key.
    pub fn cross_signing_key(&self, user: &str, usage: &str) -> Value {
        json!({
            "user_id": user,
            "usage": [usage],
            "keys": { format!("ed25519:{}", self.public): self.public },
        })
    }
}

/// POST /keys/device_signing/upload with `body`; the answer as it is.
pub async fn upload_signing_keys(
    server: &TestServer,
    who: &Session,
    body: Value,
) -> (StatusCode, Value) {
    server
        .post(
            "/_matrix/client/v3/keys/device_signing/upload",
            who.token(),
            body,
        )
        .await
}

/// POST /keys/signatures/upload with `body`, asserting 200; the answer.
pub async fn upload_signatures(server: &TestServer, who: &Session, body: Value) -> Value {
    let (st, b) = server
        .post(
            "/_matrix/client/v3/keys/signatures/upload",
            who.token(),
            body,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "keys/signatures/upload: {b}");
    b
}
