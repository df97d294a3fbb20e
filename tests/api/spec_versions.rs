//! `/versions` is checked: for each spec version it advertises, every
//! endpoint that version (or an earlier one) has is routed. The endpoints
//! and the version that added each are in `spec_endpoints.txt`; each is
//! called with a valid request by a registered user, and a 404 or 405
//! `M_UNRECOGNIZED` (the answer for a route Myelin does not have) fails.

use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::*;

const ENDPOINTS: &str = include_str!("spec_endpoints.txt");
const PASSWORD: &str = "spec check password";

/// A spec version, `(1, 5)` for `v1.5`.
type Version = (u32, u32);

fn parse_version(v: &str) -> Option<Version> {
    let (major, minor) = v.trim_start_matches('v').split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// One line of `spec_endpoints.txt`.
#[derive(Debug)]
struct Endpoint {
    version: Version,
    method: Method,
    path: String,
    fresh: bool,
    admin: bool,
    gap: bool,
    condition: Option<String>,
    body: Option<String>,
}

/// The next space-separated word of `rest`, which moves past it.
fn next_word(rest: &mut &str) -> String {
    let (w, r) = rest.split_once(' ').unwrap_or((rest, ""));
    let w = w.to_owned();
    *rest = r.trim_start();
    w
}

fn endpoints() -> Vec<Endpoint> {
    let mut out = Vec::new();
    for line in ENDPOINTS.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut rest = line;
        let version =
            parse_version(&next_word(&mut rest)).unwrap_or_else(|| panic!("bad version: {line}"));
        let method = Method::from_bytes(next_word(&mut rest).as_bytes()).unwrap();
        let path = next_word(&mut rest);
        let mut e = Endpoint {
            version,
            method,
            path,
            fresh: false,
            admin: false,
            gap: false,
            condition: None,
            body: None,
        };
        loop {
            if rest.starts_with('{') {
                e.body = Some(rest.to_owned());
                break;
            }
            match next_word(&mut rest).as_str() {
                "" => break,
                "fresh" => e.fresh = true,
                "admin" => e.admin = true,
                "gap" => e.gap = true,
                w if w.starts_with("if=") => e.condition = Some(w[3..].to_owned()),
                w => panic!("unknown flag {w:?} in: {line}"),
            }
        }
        out.push(e);
    }
    out
}

/// Who calls, and what the placeholders stand for.
struct Caller {
    session: Session,
    room: String,
    event: String,
    password: String,
}

struct Checker<'a> {
    server: &'a TestServer,
    main: Caller,
    other: Session,
    admin: Session,
    media: String,
    backup_version: String,
    txn: AtomicU64,
    fresh_users: AtomicU64,
}

impl<'a> Checker<'a> {
    async fn new(server: &'a TestServer) -> Self {
        let main = Self::caller(server, "spec_user").await;
        let other = server.user("spec_other").await;
        let admin = server.admin("spec_admin").await;
        join(server, &other, &main.room).await;
        let media = upload(server, &main.session, b"checked", Some("text/plain"), None).await;
        let (st, backup) = server
            .post(
                "/_matrix/client/v3/room_keys/version",
                main.session.token(),
                json!({
                    "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
                    "auth_data": {"public_key": "abc"},
                }),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{backup}");
        Self {
            server,
            main,
            other,
            admin,
            media,
            backup_version: backup["version"].as_str().unwrap().to_owned(),
            txn: AtomicU64::new(0),
            fresh_users: AtomicU64::new(0),
        }
    }

    /// A new user with a public room of its own holding one message.
    async fn caller(server: &TestServer, localpart: &str) -> Caller {
        let session = server.register(localpart, PASSWORD, false).await;
        let room = create_room(server, &session, json!({"preset": "public_chat"})).await;
        let event = send_text(server, &session, &room, "hello").await;
        Caller {
            session,
            room,
            event,
            password: PASSWORD.to_owned(),
        }
    }

    fn fill(&self, text: &str, who: &Caller, pending: &str) -> String {
        let server_name = &self.server.server_name;
        let mut out = text
            .replace("{userId}", &who.session.user_id)
            .replace("{otherUserId}", &self.other.user_id)
            .replace("{deviceId}", &who.session.device_id)
            .replace("{roomIdOrAlias}", &who.room)
            .replace("{roomId}", &who.room)
            .replace("{eventId}", &who.event)
            .replace("{roomAlias}", &format!("#spec-check:{server_name}"))
            .replace("{serverName}", server_name)
            .replace("{mediaId}", &self.media)
            .replace("{pendingMediaId}", pending)
            .replace("{version}", &self.backup_version)
            .replace("{password}", &who.password);
        while out.contains("{txnId}") {
            let n = self.txn.fetch_add(1, Ordering::Relaxed);
            out = out.replacen("{txnId}", &format!("spec{n}"), 1);
        }
        out
    }

    /// Path segments are sent as they are, but for the ids in them.
    fn fill_path(&self, path: &str, who: &Caller, pending: &str) -> String {
        let filled = self.fill(path, who, pending);
        let (path, query) = filled.split_once('?').unwrap_or((&filled, ""));
        let path: Vec<String> = path
            .split('/')
            .map(|seg| {
                if seg.starts_with(['!', '$', '@', '#']) {
                    enc(seg)
                } else {
                    seg.to_owned()
                }
            })
            .collect();
        let mut out = path.join("/");
        if !query.is_empty() {
            out.push('?');
            out.push_str(&query.replace('@', "%40").replace(':', "%3A"));
        }
        out
    }

    /// Calls the endpoint; the status and JSON body (`Null` when the body
    /// is not JSON, as a download's).
    async fn call(&self, e: &Endpoint) -> (StatusCode, Value) {
        let fresh;
        let who = if e.fresh {
            let n = self.fresh_users.fetch_add(1, Ordering::Relaxed);
            fresh = Self::caller(self.server, &format!("spec_fresh{n}")).await;
            &fresh
        } else {
            &self.main
        };
        let token = if e.admin {
            self.admin.access_token.clone()
        } else {
            who.session.access_token.clone()
        };
        let pending = if e.path.contains("{pendingMediaId}") {
            let (st, created) = self
                .server
                .post("/_matrix/media/v1/create", Some(&token), json!({}))
                .await;
            assert_eq!(st, StatusCode::OK, "{created}");
            media_id_of(self.server, &created["content_uri"])
        } else {
            String::new()
        };
        let path = self.fill_path(&e.path, who, &pending);
        let mut req = self
            .server
            .client
            .request(e.method.clone(), self.server.url(&path))
            .bearer_auth(&token);
        if path.starts_with("/_matrix/media/v3/upload") {
            req = req.header("Content-Type", "text/plain").body("checked");
        } else if let Some(body) = &e.body {
            let body: Value = serde_json::from_str(&self.fill(body, who, &pending))
                .unwrap_or_else(|err| panic!("bad body for {}: {err}", e.path));
            req = req.json(&body);
        } else if matches!(e.method, Method::POST | Method::PUT) {
            req = req.json(&json!({}));
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let bytes = resp.bytes().await.expect("body read");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Why an endpoint the spec makes conditional is not served, or what is
    /// wrong: `None` when the condition does not hold on this server.
    async fn condition_problem(&self, condition: &str) -> Option<String> {
        let token = self.main.session.token();
        match condition {
            "sso" => {
                let (_, login) = self.server.get("/_matrix/client/v3/login", None).await;
                let sso = login["flows"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|f| f["type"] == "m.login.sso");
                sso.then(|| "GET /login offers m.login.sso".to_owned())
            }
            "login_token" => {
                let (_, caps) = self
                    .server
                    .get("/_matrix/client/v3/capabilities", token)
                    .await;
                (caps["capabilities"]["m.get_login_token"]["enabled"] == true)
                    .then(|| "m.get_login_token is enabled".to_owned())
            }
            "oauth" => {
                // The spec's answer of a server without the OAuth 2.0 API.
                let answer = self
                    .server
                    .get("/_matrix/client/v1/auth_metadata", None)
                    .await;
                (answer.0 != StatusCode::NOT_FOUND || answer.1["errcode"] != "M_UNRECOGNIZED")
                    .then(|| format!("auth_metadata answered {answer:?}"))
            }
            "support" => {
                // With no contact configured, the spec's answer is a 404.
                let (st, body) = self.server.get("/.well-known/matrix/support", None).await;
                let ok = (st == StatusCode::OK
                    && (body.get("contacts").is_some() || body.get("support_page").is_some()))
                    || st == StatusCode::NOT_FOUND;
                (!ok).then(|| format!("/.well-known/matrix/support answered {st} {body}"))
            }
            // Served by a Policy Server's host, which a homeserver is not.
            "policy_server" => None,
            other => Some(format!("unknown condition {other}")),
        }
    }
}

/// Whether the answer is the one for a route the server does not have.
fn unrouted(answer: &(StatusCode, Value)) -> bool {
    answer.1["errcode"] == "M_UNRECOGNIZED"
        && matches!(
            answer.0,
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
        )
}

#[tokio::test]
async fn every_advertised_version_has_its_endpoints_routed() {
    let server = TestServer::start().await;
    let (st, body) = server.get("/_matrix/client/versions", None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let advertised: Vec<Version> = body["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str().and_then(parse_version))
        .collect();
    let all = endpoints();
    let known = all.iter().map(|e| e.version).max().unwrap();
    let newest = advertised.iter().copied().max().expect("a v1.x version");
    assert!(
        newest <= known,
        "v{}.{} is advertised but spec_endpoints.txt knows versions up to v{}.{}: add its endpoints",
        newest.0,
        newest.1,
        known.0,
        known.1
    );
    let checker = Checker::new(&server).await;
    let mut problems = Vec::new();
    for e in all.iter().filter(|e| e.version <= newest) {
        if let Some(condition) = &e.condition {
            if let Some(p) = checker.condition_problem(condition).await {
                problems.push(format!("{} {} (if={condition}): {p}", e.method, e.path));
            }
            continue;
        }
        let answer = checker.call(e).await;
        if e.gap {
            if !unrouted(&answer) {
                problems.push(format!(
                    "{} {} is served now ({}): drop its `gap` flag and README's note",
                    e.method, e.path, answer.0
                ));
            }
            continue;
        }
        if unrouted(&answer) {
            problems.push(format!(
                "v{}.{}: {} {} is not served ({} {})",
                e.version.0, e.version.1, e.method, e.path, answer.0, answer.1
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "advertised up to v{}.{}, but:\n{}",
        newest.0,
        newest.1,
        problems.join("\n")
    );
}

#[test]
fn the_endpoint_list_parses_and_is_ordered() {
    let all = endpoints();
    assert!(all.len() > 150, "{} endpoints", all.len());
    assert!(
        all.windows(2).all(|w| w[0].version <= w[1].version),
        "spec_endpoints.txt is in version order"
    );
    assert!(all.iter().any(|e| e.version == (1, 19)));
}
