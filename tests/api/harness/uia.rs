//! User-interactive auth: the challenge, the password stage, a whole round.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Session, TestServer, password_login};

/// The `auth` dict of an `m.login.password` stage (identifier form).
pub fn password_auth(user: &str, password: &str, session: &str) -> Value {
    let mut auth = password_login(user, password);
    auth["session"] = json!(session);
    auth
}

/// Asserts a UIA body offers a flow of exactly `[stage]`, has `params`
/// and a non-empty session; returns the session.
#[track_caller]
pub fn assert_uia_flow(body: &Value, stage: &str) -> String {
    let flows = body["flows"]
        .as_array()
        .unwrap_or_else(|| panic!("no flows: {body}"));
    assert!(
        flows.iter().any(|f| f["stages"] == json!([stage])),
        "no {stage} flow: {body}"
    );
    assert!(body["params"].is_object(), "params missing: {body}");
    let session = body["session"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {body}"));
    assert!(!session.is_empty(), "empty session: {body}");
    session.to_owned()
}

/// Asserts a UIA challenge: 401 and [`assert_uia_flow`]; returns the session.
#[track_caller]
pub fn assert_uia_challenge(resp: &(StatusCode, Value), stage: &str) -> String {
    assert_eq!(
        resp.0,
        StatusCode::UNAUTHORIZED,
        "expected the UIA 401: {}",
        resp.1
    );
    assert_uia_flow(&resp.1, stage)
}

/// POSTs `body` without `auth` to start a UIA session: the answer must be a
/// 401 without an errcode, and with a session. Returns (body, session).
pub async fn uia_start(
    s: &TestServer,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> (Value, String) {
    let (st, resp) = s.post(path, token, body.clone()).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{path} without auth: {resp}");
    assert!(
        resp.get("errcode").is_none() || resp["errcode"].is_null(),
        "first UIA round has no errcode: {resp}"
    );
    let session = resp["session"]
        .as_str()
        .unwrap_or_else(|| panic!("UIA session: {resp}"))
        .to_owned();
    (resp, session)
}

/// Whether the first round of [`with_uia`] must be the challenge.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum FirstRound {
    /// The first answer must be the m.login.password challenge.
    Challenge,
    /// An answer other than 401 (a validation error the server raises
    /// before UIA) is returned as it is.
    ChallengeOrAnswer,
}

/// A request behind UIA: method, path, access token and body (without `auth`).
pub struct UiaRequest<'a> {
    pub method: Method,
    pub path: &'a str,
    pub token: Option<&'a str>,
    pub body: Value,
}

impl<'a> UiaRequest<'a> {
    pub fn post(path: &'a str, token: Option<&'a str>, body: Value) -> Self {
        Self {
            method: Method::POST,
            path,
            token,
            body,
        }
    }

    pub fn delete(path: &'a str, token: Option<&'a str>, body: Value) -> Self {
        Self {
            method: Method::DELETE,
            path,
            token,
            body,
        }
    }
}

/// Sends `req` without `auth`, then again with m.login.password UIA (as
/// `user`/`password`) in the session the challenge gave.
pub async fn with_uia(
    s: &TestServer,
    first: FirstRound,
    req: UiaRequest<'_>,
    user: &str,
    password: &str,
) -> (StatusCode, Value) {
    let answer = s
        .request(
            req.method.clone(),
            req.path,
            req.token,
            Some(req.body.clone()),
        )
        .await;
    if first == FirstRound::ChallengeOrAnswer && answer.0 != StatusCode::UNAUTHORIZED {
        return answer;
    }
    let session = assert_uia_challenge(&answer, "m.login.password");
    let mut body = req.body;
    body["auth"] = password_auth(user, password, &session);
    s.request(req.method, req.path, req.token, Some(body)).await
}

/// Deactivates `who`'s account through the client API (UIA as `localpart`
/// with password "password123"); asserts 200.
pub async fn deactivate(server: &TestServer, who: &Session, localpart: &str) {
    deactivate_with(server, who, localpart, json!({})).await;
}

/// [`deactivate`] with a request body (`{"erase": true}`).
pub async fn deactivate_with(server: &TestServer, who: &Session, localpart: &str, body: Value) {
    let (st, body) = with_uia(
        server,
        FirstRound::Challenge,
        UiaRequest::post("/_matrix/client/v3/account/deactivate", who.token(), body),
        localpart,
        "password123",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "deactivate {localpart}: {body}");
}
