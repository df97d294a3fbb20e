//! Cross-signing (sytest 41end-to-end-keys/08-cross-signing): `POST
//! /keys/device_signing/upload`, `POST /keys/signatures/upload`, the keys
//! and signatures `/keys/query` answers, `/sync` `device_lists`, and
//! deactivation. Keys are real ed25519 keys, signed through ruma.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

const UPLOAD: &str = "/_matrix/client/v3/keys/device_signing/upload";

/// A user's three cross-signing keys: the self- and user-signing keys
/// signed by the master key.
struct Keys {
    master: SigningKey,
    ssk: SigningKey,
    usk: SigningKey,
}

impl Keys {
    fn new() -> Self {
        Self {
            master: SigningKey::generate(),
            ssk: SigningKey::generate(),
            usk: SigningKey::generate(),
        }
    }

    fn master_key(&self, user: &str) -> Value {
        self.master.cross_signing_key(user, "master")
    }

    /// The upload body of all three.
    fn body(&self, user: &str) -> Value {
        json!({
            "master_key": self.master_key(user),
            "self_signing_key": self.master.sign(user, &self.ssk.cross_signing_key(user, "self_signing")),
            "user_signing_key": self.master.sign(user, &self.usk.cross_signing_key(user, "user_signing")),
        })
    }
}

/// Uploads `keys` for a user without keys yet (no UIA needed).
async fn set_up(server: &TestServer, who: &Session) -> Keys {
    let keys = Keys::new();
    let r = upload_signing_keys(server, who, keys.body(&who.user_id)).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    assert_eq!(r.1, json!({}));
    keys
}

/// A signature upload's answer without failures (`failures` empty or
/// absent: ruma leaves an empty map out; sytest accepts both).
#[track_caller]
fn assert_no_failures(b: &Value) {
    assert!(b.get("failures").is_none_or(|f| f == &json!({})), "{b}");
}

fn ed(public: &str) -> String {
    format!("ed25519:{public}")
}

/// sytest "Can upload self-signing keys": the first upload needs no UIA;
/// the owner's query answers all three keys as uploaded, another user's
/// the master and self-signing keys only (never the user-signing key).
#[tokio::test]
async fn first_upload_then_query() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let keys = set_up(&server, &alice).await;
    let body = keys.body(&alice.user_id);
    let own = query_keys(&server, &alice, json!({ &alice.user_id: [] })).await;
    assert_eq!(own["master_keys"][&alice.user_id], body["master_key"]);
    assert_eq!(
        own["self_signing_keys"][&alice.user_id],
        body["self_signing_key"]
    );
    assert_eq!(
        own["user_signing_keys"][&alice.user_id],
        body["user_signing_key"]
    );
    let theirs = query_keys(&server, &bob, json!({ &alice.user_id: [] })).await;
    assert_eq!(theirs["master_keys"][&alice.user_id], body["master_key"]);
    assert_eq!(
        theirs["self_signing_keys"][&alice.user_id],
        body["self_signing_key"]
    );
    assert!(
        theirs["user_signing_keys"].get(&alice.user_id).is_none(),
        "{theirs}"
    );
    // A user without keys: none answered.
    let none = query_keys(&server, &alice, json!({ &bob.user_id: [] })).await;
    assert!(none["master_keys"].get(&bob.user_id).is_none(), "{none}");
}

/// sytest "Fails to replace cross-signing keys with no auth": replacing
/// keys needs the password (401 challenge, wrong password 401
/// `M_FORBIDDEN`); the same keys again need none (MSC3967, as Synapse).
#[tokio::test]
async fn replacing_keys_needs_uia() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let keys = set_up(&server, &alice).await;
    let again = upload_signing_keys(&server, &alice, keys.body(&alice.user_id)).await;
    assert_eq!(
        again.0,
        StatusCode::OK,
        "identical keys need no UIA: {}",
        again.1
    );
    let only_master = json!({"master_key": keys.master_key(&alice.user_id)});
    let again = upload_signing_keys(&server, &alice, only_master).await;
    assert_eq!(
        again.0,
        StatusCode::OK,
        "a subset of the stored keys: {}",
        again.1
    );

    let new = Keys::new();
    let challenge = upload_signing_keys(&server, &alice, new.body(&alice.user_id)).await;
    let session = assert_uia_challenge(&challenge, "m.login.password");
    let mut wrong = new.body(&alice.user_id);
    wrong["auth"] = password_auth("alice", "wrongpassword", &session);
    let r = upload_signing_keys(&server, &alice, wrong).await;
    assert_eq!(r.0, StatusCode::UNAUTHORIZED, "{}", r.1);
    assert_eq!(r.1["errcode"], "M_FORBIDDEN", "{}", r.1);
    let q = query_keys(&server, &alice, json!({ &alice.user_id: [] })).await;
    assert_eq!(
        q["master_keys"][&alice.user_id],
        keys.master_key(&alice.user_id)
    );

    let r = with_uia(
        &server,
        FirstRound::Challenge,
        UiaRequest::post(UPLOAD, alice.token(), new.body(&alice.user_id)),
        "alice",
        "password123",
    )
    .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let q = query_keys(&server, &alice, json!({ &alice.user_id: [] })).await;
    assert_eq!(
        q["master_keys"][&alice.user_id],
        new.master_key(&alice.user_id)
    );
    assert_eq!(
        q["self_signing_keys"][&alice.user_id],
        new.body(&alice.user_id)["self_signing_key"]
    );
}

/// sytest "Fails to upload self-signing key without master key", and each
/// bad key: 400 with Synapse's errcode, and nothing stored (a bad key
/// beside a good master key stores neither).
#[tokio::test]
async fn bad_keys_are_rejected() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let a = alice.user_id.as_str();
    let keys = Keys::new();
    let ssk = keys
        .master
        .sign(a, &keys.ssk.cross_signing_key(a, "self_signing"));
    let forged = SigningKey::generate().sign(a, &keys.ssk.cross_signing_key(a, "self_signing"));
    let cases = [
        (
            "no master key",
            json!({"self_signing_key": ssk}),
            "M_MISSING_PARAM",
        ),
        (
            "self-signing key not signed by the master key",
            json!({"master_key": keys.master_key(a), "self_signing_key": keys.ssk.cross_signing_key(a, "self_signing")}),
            "M_INVALID_SIGNATURE",
        ),
        (
            "signed by another key",
            json!({"master_key": keys.master_key(a), "self_signing_key": forged}),
            "M_INVALID_SIGNATURE",
        ),
        (
            "another user's key",
            json!({"master_key": keys.master.cross_signing_key("@bob:localhost", "master")}),
            "M_INVALID_PARAM",
        ),
        (
            "wrong usage",
            json!({"master_key": keys.master.cross_signing_key(a, "self_signing")}),
            "M_INVALID_PARAM",
        ),
        (
            "two keys",
            json!({"master_key": {"user_id": a, "usage": ["master"], "keys": {"ed25519:A": "A", "ed25519:B": "B"}}}),
            "M_INVALID_PARAM",
        ),
        (
            "key id not the key",
            json!({"master_key": {"user_id": a, "usage": ["master"], "keys": {"ed25519:A": "B"}}}),
            "M_INVALID_PARAM",
        ),
        (
            "not a key",
            json!({"master_key": {"usage": "master"}}),
            "M_BAD_JSON",
        ),
    ];
    for (what, body, errcode) in cases {
        let r = upload_signing_keys(&server, &alice, body).await;
        assert_error_for(what, &r, 400, errcode);
    }
    let q = query_keys(&server, &alice, json!({ a: [] })).await;
    assert!(q["master_keys"].get(a).is_none(), "nothing stored: {q}");
    let r = server.post(UPLOAD, None, keys.body(a)).await;
    assert_error(&r, 401, "M_MISSING_TOKEN");
}

/// sytest "Changing master key notifies local users": a key upload and a
/// signature upload each reach the user's own sync and a room member's;
/// the device signed by the self-signing key shows both signatures to
/// both.
#[tokio::test]
async fn signed_device_reaches_room_members() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    shared_room(&server, &alice, &[&bob]).await;
    let device_keys = own_device_keys(&alice);
    upload_keys(&server, &alice, json!({"device_keys": device_keys})).await;
    let (mut alice_since, mut bob_since) = (
        sync_token(&server, &alice).await,
        sync_token(&server, &bob).await,
    );
    let mut both_see_alice = async || {
        for (who, since) in [(&alice, &mut alice_since), (&bob, &mut bob_since)] {
            let b = sync_since(&server, who, since).await;
            assert_eq!(b["device_lists"]["changed"], json!([alice.user_id]), "{b}");
            *since = next_batch(&b);
        }
    };
    let keys = set_up(&server, &alice).await;
    both_see_alice().await;

    let a = alice.user_id.as_str();
    let mut unsigned = device_keys.clone();
    unsigned.as_object_mut().unwrap().remove("signatures");
    let signed = keys.ssk.sign(a, &unsigned);
    let b = upload_signatures(&server, &alice, json!({ a: { &alice.device_id: signed } })).await;
    assert_no_failures(&b);
    both_see_alice().await;
    let cross = signed["signatures"][a][ed(&keys.ssk.public)].clone();
    let own = device_keys["signatures"][a][format!("ed25519:{}", alice.device_id)].clone();
    for who in [&alice, &bob] {
        let q = query_keys(&server, who, json!({ a: [] })).await;
        assert_eq!(
            q["device_keys"][a][&alice.device_id]["signatures"][a],
            json!({ format!("ed25519:{}", alice.device_id): own, ed(&keys.ssk.public): cross }),
            "{q}"
        );
    }
}

/// Each signature failure, per key: a bad signature, an unknown device, a
/// device whose keys differ from the stored ones, a user without a
/// self- or user-signing key; good signatures beside them are stored.
#[tokio::test]
async fn signature_failures() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let a = alice.user_id.as_str();
    let device_keys = own_device_keys(&alice);
    upload_keys(&server, &alice, json!({"device_keys": device_keys})).await;

    // No self-signing key yet: 404 M_NOT_FOUND.
    let b = upload_signatures(
        &server,
        &alice,
        json!({ a: { &alice.device_id: device_keys } }),
    )
    .await;
    assert_eq!(
        b["failures"][a][&alice.device_id]["errcode"], "M_NOT_FOUND",
        "{b}"
    );
    // No user-signing key (bob has none) for another user's key.
    let bob_keys = set_up(&server, &bob).await;
    let bob_master = bob_keys.master_key(&bob.user_id);
    let b = upload_signatures(
        &server,
        &alice,
        json!({ &bob.user_id: { &bob_keys.master.public: bob_master } }),
    )
    .await;
    assert_eq!(
        b["failures"][&bob.user_id][&bob_keys.master.public]["errcode"], "M_NOT_FOUND",
        "{b}"
    );

    let keys = set_up(&server, &alice).await;
    let mut unsigned = device_keys.clone();
    unsigned.as_object_mut().unwrap().remove("signatures");
    let forged = SigningKey::generate();
    let forged_sig = {
        let mut s = forged.sign(a, &unsigned);
        let sig = s["signatures"][a][ed(&forged.public)].take();
        s["signatures"] = json!({ a: { ed(&keys.ssk.public): sig } });
        s
    };
    let mut changed = keys.ssk.sign(a, &unsigned);
    changed["algorithms"] = json!(["other"]);
    let b = upload_signatures(
        &server,
        &alice,
        json!({ a: {
            &alice.device_id: forged_sig,
            "NOSUCHDEVICE": keys.ssk.sign(a, &json!({"user_id": a, "device_id": "NOSUCHDEVICE"})),
        } }),
    )
    .await;
    let f = &b["failures"][a];
    assert_eq!(f[&alice.device_id]["errcode"], "M_INVALID_SIGNATURE", "{b}");
    assert_eq!(f["NOSUCHDEVICE"]["errcode"], "M_NOT_FOUND", "{b}");
    // Keys other than the stored ones: Synapse's 400 "Key does not match"
    // (M_UNKNOWN). The master key signed by an unknown device, or by none.
    let master = keys.master_key(a);
    let by_ghost = forged.sign_as_device(a, "GHOST", &master);
    let b = upload_signatures(&server, &alice, json!({ a: { &alice.device_id: changed } })).await;
    assert_eq!(
        b["failures"][a][&alice.device_id]["errcode"], "M_UNKNOWN",
        "{b}"
    );
    for signed in [by_ghost, master] {
        let b = upload_signatures(
            &server,
            &alice,
            json!({ a: { &keys.master.public: signed } }),
        )
        .await;
        let f = &b["failures"][a][&keys.master.public];
        assert_eq!(f["errcode"], "M_INVALID_SIGNATURE", "{b}");
    }
    // A bad signature on another user's master key; an unknown key id.
    let b = upload_signatures(
        &server,
        &alice,
        json!({ &bob.user_id: {
            &bob_keys.master.public: forged.sign(a, &bob_master),
            "NOTAKEY": bob_master,
        } }),
    )
    .await;
    let f = &b["failures"][&bob.user_id];
    assert_eq!(
        f[&bob_keys.master.public]["errcode"], "M_INVALID_SIGNATURE",
        "{b}"
    );
    assert_eq!(f["NOTAKEY"]["errcode"], "M_NOT_FOUND", "{b}");
    let q = query_keys(&server, &alice, json!({ a: [], &bob.user_id: [] })).await;
    assert_eq!(
        q["device_keys"][a][&alice.device_id]["signatures"], device_keys["signatures"],
        "nothing stored: {q}"
    );
    assert_eq!(q["master_keys"][&bob.user_id], bob_master, "{q}");
}

/// The master key signed by a device, and another user's master key
/// signed by the user-signing key: merged into `/keys/query`; the latter
/// only for the signer (as Synapse), the former for everyone.
#[tokio::test]
async fn master_key_signatures_merge_into_query() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let (a, bo) = (alice.user_id.as_str(), bob.user_id.as_str());
    let device = SigningKey::generate();
    let mut device_keys = json!({
        "user_id": a,
        "device_id": alice.device_id,
        "algorithms": ["m.megolm.v1.aes-sha2"],
        "keys": { format!("ed25519:{}", alice.device_id): device.public },
    });
    // The device key pair's version is its public key; sign under the
    // device id as a client does.
    device_keys = device.sign_as_device(a, &alice.device_id, &device_keys);
    upload_keys(&server, &alice, json!({"device_keys": device_keys})).await;
    let keys = set_up(&server, &alice).await;
    let bob_keys = set_up(&server, &bob).await;

    let by_device = device.sign_as_device(a, &alice.device_id, &keys.master_key(a));
    let by_usk = keys.usk.sign(a, &bob_keys.master_key(bo));
    let b = upload_signatures(
        &server,
        &alice,
        json!({
            a: { &keys.master.public: by_device },
            bo: { &bob_keys.master.public: by_usk },
        }),
    )
    .await;
    assert_no_failures(&b);
    let device_sig = by_device["signatures"][a][format!("ed25519:{}", alice.device_id)].clone();
    let usk_sig = by_usk["signatures"][a][ed(&keys.usk.public)].clone();

    for who in [&alice, &carol] {
        let q = query_keys(&server, who, json!({ a: [] })).await;
        assert_eq!(
            q["master_keys"][a]["signatures"][a][format!("ed25519:{}", alice.device_id)],
            device_sig,
            "{q}"
        );
    }
    let q = query_keys(&server, &alice, json!({ bo: [] })).await;
    assert_eq!(
        q["master_keys"][bo]["signatures"][a][ed(&keys.usk.public)],
        usk_sig,
        "{q}"
    );
    let q = query_keys(&server, &carol, json!({ bo: [] })).await;
    assert_eq!(
        q["master_keys"][bo],
        bob_keys.master_key(bo),
        "not carol's to see: {q}"
    );
}

/// Deactivation deletes the user's cross-signing keys and every signature
/// of or by them.
#[tokio::test]
async fn deactivation_deletes_keys_and_signatures() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let keys = set_up(&server, &alice).await;
    let bob_keys = set_up(&server, &bob).await;
    let b = upload_signatures(
        &server,
        &alice,
        json!({ &bob.user_id: { &bob_keys.master.public: keys.usk.sign(&alice.user_id, &bob_keys.master_key(&bob.user_id)) } }),
    )
    .await;
    assert_no_failures(&b);
    // Alice's keys and the signatures she made.
    let rows = async || {
        let alice_id = sql_quote(&alice.user_id);
        (
            server
                .sql_count(&format!(
                    "SELECT COUNT(*) FROM e2e_cross_signing_keys WHERE user_id = '{alice_id}'"
                ))
                .await,
            server
                .sql_count(&format!(
                    "SELECT COUNT(*) FROM e2e_cross_signing_signatures WHERE signer_user_id = '{alice_id}'"
                ))
                .await,
        )
    };
    assert_eq!(rows().await, (3, 1));
    deactivate(&server, &alice, "alice").await;
    assert_eq!(rows().await, (0, 0));
    let q = query_keys(&server, &bob, json!({ &alice.user_id: [] })).await;
    assert!(q["master_keys"].get(&alice.user_id).is_none(), "{q}");
}

/// sytest "Changing user-signing key notifies local users": a new
/// user-signing key (uploaded with the legacy password `auth`, no
/// session) reaches its owner's sync only; signing another user's master
/// key makes that user `changed` for the signer alone, even without a
/// shared room.
#[tokio::test]
async fn user_signing_changes_are_private() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    shared_room(&server, &alice, &[&bob]).await;
    let a = alice.user_id.as_str();
    let keys = Keys::new();
    let master_only = json!({"master_key": keys.master_key(a)});
    let r = upload_signing_keys(&server, &alice, master_only).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let carol_keys = set_up(&server, &carol).await;
    upload_keys(&server, &bob, json!({"device_keys": own_device_keys(&bob)})).await;
    let (alice_since, bob_since) = (
        sync_token(&server, &alice).await,
        sync_token(&server, &bob).await,
    );

    let usk = keys
        .master
        .sign(a, &keys.usk.cross_signing_key(a, "user_signing"));
    let r = upload_signing_keys(
        &server,
        &alice,
        json!({
            "auth": {"type": "m.login.password", "user": a, "password": "password123"},
            "user_signing_key": usk,
        }),
    )
    .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let b = sync_since(&server, &alice, &alice_since).await;
    assert_eq!(b["device_lists"]["changed"], json!([a]), "{b}");
    let alice_since = next_batch(&b);

    let c = carol.user_id.as_str();
    let signed = keys.usk.sign(a, &carol_keys.master_key(c));
    let b = upload_signatures(
        &server,
        &alice,
        json!({ c: { &carol_keys.master.public: signed } }),
    )
    .await;
    assert_no_failures(&b);
    let b = sync_since(&server, &alice, &alice_since).await;
    assert_eq!(b["device_lists"]["changed"], json!([c]), "{b}");
    // Bob's own new device makes his sync read the change table: alice's
    // private changes are not in it for him.
    server.login("bob", "password123").await;
    let b = sync_since(&server, &bob, &bob_since).await;
    assert_eq!(b["device_lists"]["changed"], json!([bob.user_id]), "{b}");
}
