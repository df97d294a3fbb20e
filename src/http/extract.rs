//! Extractors shared by every handler: ruma request parsing, JSON bodies for
//! the non-ruma (admin) endpoints, and who is calling.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, RawPathParams, Request};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use ruma::api::error::{DeserializationError, FromHttpRequestError};
use ruma::api::path_builder::PathBuilder;
use ruma::api::{IncomingRequest, IncomingRequestExt, OutgoingResponse, OutgoingResponseExt};
use serde::de::DeserializeOwned;

use super::AppState;
use crate::error::MatrixError;
use crate::model::accounts::Requester;
use crate::services::uia::Operation;

/// A request parsed into its ruma type (path, query and body).
pub struct Ruma<T>(pub T);

impl<T: IncomingRequest + Send> FromRequest<AppState> for Ruma<T> {
    type Rejection = MatrixError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let args = path_args::<T>(&mut parts, state).await?;
        let body = normalize_legacy_auth(read_body(body, state).await?);
        parse_with_blank_retry::<T>(parts, &body, &args).map(Ruma)
    }
}

/// The path's parameters in order; routes that omit a trailing parameter
/// (`/state/{type}` for an empty state key) pass it as empty.
pub(crate) async fn path_args<T: IncomingRequest>(
    parts: &mut Parts,
    state: &AppState,
) -> Result<Vec<String>, MatrixError> {
    let params = RawPathParams::from_request_parts(parts, state)
        .await
        .map_err(|e| MatrixError::invalid_param(format!("Invalid path: {e}")))?;
    let mut args: Vec<String> = params.iter().map(|(_, v)| v.to_owned()).collect();
    let expected = T::PATH_BUILDER
        .all_paths()
        .next()
        .map(|p| p.matches('{').count())
        .unwrap_or(0);
    while args.len() < expected {
        args.push(String::new());
    }
    Ok(args)
}

/// Parses the request; an empty body where `{}` would do is `{}` (as
/// Synapse, wherever no field of the body is required), so the head is kept
/// for that retry. GET and HEAD have no body to retry with.
pub(crate) fn parse_with_blank_retry<T: IncomingRequest>(
    parts: Parts,
    body: &[u8],
    args: &[String],
) -> Result<T, MatrixError> {
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let head = (is_blank(body) && !matches!(parts.method, http::Method::GET | http::Method::HEAD))
        .then(|| head_of(&parts));
    match parse_ruma::<T>(parts, body, &arg_refs) {
        Ok(parsed) => Ok(parsed),
        Err(e) => {
            if let Some(head) = head
                && let Ok(parsed) = parse_ruma::<T>(head, b"{}", &arg_refs)
            {
                return Ok(parsed);
            }
            Err(e)
        }
    }
}

/// A request that user-interactive auth guards: the parsed request, and the
/// [`Operation`] a UIA session is bound to (its method, path, and body
/// without `auth`), so a session begun for one operation cannot complete
/// another.
pub struct UiaRuma<T> {
    pub req: T,
    pub op: Operation,
    head: Parts,
    args: Vec<String>,
    auth: Option<serde_json::Value>,
}

impl<T: IncomingRequest> UiaRuma<T> {
    /// This request again with another body (the parameters a UIA session
    /// remembers from its first request) and this request's `auth`.
    pub fn with_params(
        &self,
        params: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<T, MatrixError> {
        let mut body = params.clone();
        if let Some(auth) = &self.auth {
            body.insert("auth".to_owned(), auth.clone());
        }
        let bytes = serde_json::to_vec(&body).map_err(MatrixError::internal)?;
        parse_with_blank_retry::<T>(head_of(&self.head), &bytes, &self.args)
    }
}

impl<T: IncomingRequest + Send> FromRequest<AppState> for UiaRuma<T> {
    type Rejection = MatrixError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let args = path_args::<T>(&mut parts, state).await?;
        let body = normalize_legacy_auth(read_body(body, state).await?);
        let head = head_of(&parts);
        let parsed = parse_with_blank_retry::<T>(parts, &body, &args)?;
        // The body parsed, so it is JSON (or blank: no parameters).
        let mut params = match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        let auth = params.remove("auth");
        let op = Operation {
            method: head.method.to_string(),
            path: head.uri.path().to_owned(),
            params,
        };
        Ok(Self {
            req: parsed,
            op,
            head,
            args,
            auth,
        })
    }
}

/// Parses a request into its ruma type, mapping failures to Matrix errors.
fn parse_ruma<T: IncomingRequest>(
    parts: Parts,
    body: &[u8],
    args: &[&str],
) -> Result<T, MatrixError> {
    let http_req = http::Request::from_parts(parts, body);
    // ruma may panic on some malformed bodies; that is bad input, not our crash.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        T::try_from_http_request(http_req, args)
    }))
    .map_err(|_| MatrixError::bad_json("Malformed request body"))?
    .map_err(|e| deserialization_error(e, body))
}

/// The request line and headers, without the extensions (ruma reads none).
pub(crate) fn head_of(parts: &Parts) -> Parts {
    let mut head = http::Request::new(()).into_parts().0;
    head.method = parts.method.clone();
    head.uri = parts.uri.clone();
    head.version = parts.version;
    head.headers = parts.headers.clone();
    head
}

/// An empty body, or one of whitespace only.
fn is_blank(body: &[u8]) -> bool {
    body.iter().all(u8::is_ascii_whitespace)
}

/// [`Ruma`], boxed. For a handler that parks (the long-polling `/sync`): a
/// handler's future is as large as everything it holds, for as long as it
/// waits, and a parsed request can be a kilobyte or more (a sync filter).
pub struct RumaBoxed<T>(pub Box<T>);

impl<T: IncomingRequest + Send> FromRequest<AppState> for RumaBoxed<T> {
    type Rejection = MatrixError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let Ruma(parsed) = Box::pin(Ruma::<T>::from_request(req, state)).await?;
        Ok(Self(Box::new(parsed)))
    }
}

fn deserialization_error(e: FromHttpRequestError, body: &[u8]) -> MatrixError {
    match e {
        FromHttpRequestError::Deserialization(DeserializationError::Json(err)) => {
            json_body_error(&err, body)
        }
        FromHttpRequestError::Deserialization(DeserializationError::Ident(err)) => {
            MatrixError::invalid_param(format!("Invalid identifier: {err}"))
        }
        FromHttpRequestError::Deserialization(DeserializationError::Query(err)) => {
            MatrixError::invalid_param(format!("Invalid query parameters: {err}"))
        }
        FromHttpRequestError::MethodMismatch { .. } => {
            MatrixError::unrecognized(http::StatusCode::METHOD_NOT_ALLOWED)
        }
        other => MatrixError::bad_json(format!("Invalid request: {other}")),
    }
}

/// A body that did not read as its type: 400 `M_NOT_JSON` when it is not
/// JSON at all, else 400 `M_BAD_JSON` (JSON of the wrong shape).
pub(crate) fn json_body_error(err: &serde_json::Error, body: &[u8]) -> MatrixError {
    // Skipping a string does not check its UTF-8: invalid UTF-8 anywhere is not JSON.
    if !body.is_empty()
        && (std::str::from_utf8(body).is_err()
            || serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err())
    {
        MatrixError::not_json(format!("Body is not valid JSON: {err}"))
    } else {
        MatrixError::bad_json(format!("Invalid request body: {err}"))
    }
}

/// Rewrites what older clients send in a user-interactive `auth` object into
/// what the spec (and ruma) expect, as Synapse does: an `auth` without a
/// `type` is no attempt at all (the client wants the flows), and
/// `m.login.password` with a top-level `user` becomes an `m.id.user` identifier.
fn normalize_legacy_auth(body: Bytes) -> Bytes {
    if memchr::memmem::find(&body, b"\"auth\"").is_none() {
        return body;
    }
    let Ok(serde_json::Value::Object(mut map)) = serde_json::from_slice::<serde_json::Value>(&body)
    else {
        return body;
    };
    let Some(serde_json::Value::Object(auth)) = map.get_mut("auth") else {
        return body;
    };
    if !auth.contains_key("type") {
        map.remove("auth");
    } else if auth.get("type").and_then(|t| t.as_str()) == Some("m.login.password")
        && !auth.contains_key("identifier")
        && let Some(user) = auth.remove("user")
    {
        auth.insert(
            "identifier".into(),
            serde_json::json!({ "type": "m.id.user", "user": user }),
        );
    } else {
        return body;
    }
    serde_json::to_vec(&map).map(Bytes::from).unwrap_or(body)
}

/// Reads the whole body, at most `limits.max_request_bytes` of it: a larger
/// declared `Content-Length` is 413 `M_TOO_LARGE` before a byte is read, and
/// a body that grows past the cap while being read (chunked) is cut off with
/// the same error. A body that takes too long to arrive is 408
/// (see [`super::body_guard`]).
pub(crate) async fn read_body(
    body: axum::body::Body,
    state: &AppState,
) -> Result<Bytes, MatrixError> {
    let limit = state.config.limits.max_request_bytes;
    if axum::body::HttpBody::size_hint(&body).lower() > limit as u64 {
        return Err(too_large(Some(limit)));
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|e| body_read_error(&e, Some(limit), MatrixError::bad_json))
}

/// 413 for a body over `limit` bytes (named when known).
fn too_large(limit: Option<usize>) -> MatrixError {
    match limit {
        Some(limit) => MatrixError::too_large(format!(
            "Request body too large: the limit is {limit} bytes"
        )),
        None => MatrixError::too_large("Request body too large"),
    }
}

/// The answer to a request body that could not be read: 413 past a length
/// limit (`limit`, when the reader set one), 408 after
/// [`super::body_guard`]'s deadline, else `other` (the connection broke, the
/// body was malformed) with the reason.
pub(crate) fn body_read_error(
    e: &axum::Error,
    limit: Option<usize>,
    other: impl FnOnce(String) -> MatrixError,
) -> MatrixError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return too_large(limit);
        }
        if err.is::<super::BodyTimeout>() {
            return MatrixError::unknown(
                http::StatusCode::REQUEST_TIMEOUT,
                "Timed out reading the request body",
            );
        }
        source = err.source();
    }
    other(format!("Cannot read request body: {e}"))
}

/// A JSON object body for endpoints ruma has no type for (the admin APIs).
/// An empty body counts as `{}` when `{}` is a valid `T` (every field
/// optional), as Synapse; otherwise it, like any unparseable body, is 400
/// `M_NOT_JSON`. Wrong fields are 400 `M_BAD_JSON`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = MatrixError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let body = read_body(req.into_body(), state).await?;
        match parse_json(&body) {
            Err(e) if is_blank(&body) => parse_json(b"{}").map_err(|_| e),
            parsed => parsed,
        }
        .map(JsonBody)
    }
}

/// Like [`JsonBody`], but an empty body is always 400 `M_NOT_JSON`: for a body
/// with a field the handler requires although its type lets it default
/// (Dendrite's `resetPassword` wants `password`, and answers no body so).
pub struct RequiredJsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for RequiredJsonBody<T> {
    type Rejection = MatrixError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let body = read_body(req.into_body(), state).await?;
        parse_json(&body).map(RequiredJsonBody)
    }
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, MatrixError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| MatrixError::not_json(format!("Body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(MatrixError::bad_json("Body must be a JSON object"));
    }
    serde_json::from_value(value)
        .map_err(|e| MatrixError::bad_json(format!("Invalid request body: {e}")))
}

/// A ruma response, serialized as ruma defines it.
pub struct RumaResponse<T>(pub T);

impl<T: OutgoingResponse> IntoResponse for RumaResponse<T> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<bytes::BytesMut>() {
            Ok(resp) => resp
                .map(|b| axum::body::Body::from(b.freeze()))
                .into_response(),
            Err(e) => MatrixError::internal(format!("serializing response: {e}")).into_response(),
        }
    }
}

/// A JSON body written already (200, `application/json`): for answers
/// built from cached JSON fragments rather than from ruma's types.
pub struct JsonText(pub String);

impl IntoResponse for JsonText {
    fn into_response(self) -> Response {
        ([(http::header::CONTENT_TYPE, "application/json")], self.0).into_response()
    }
}

/// The caller's IP address (the forwarded client's when the peer is a
/// trusted proxy, see [`crate::net::client_ip`]) and user agent.
pub struct ClientInfo {
    pub ip: String,
    pub user_agent: String,
}

impl ClientInfo {
    fn from_parts(parts: &Parts, state: &AppState) -> Self {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ci| {
                crate::net::client_ip(ci.0.ip(), &parts.headers, &state.config.trusted_proxies)
                    .to_string()
            })
            .unwrap_or_default();
        let user_agent = parts
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Self { ip, user_agent }
    }
}

impl FromRequestParts<AppState> for ClientInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self::from_parts(parts, state))
    }
}

/// The access token of a request: `Authorization: Bearer` or `?access_token=`.
fn access_token(parts: &Parts) -> Result<String, MatrixError> {
    if let Some(h) = parts.headers.get(http::header::AUTHORIZATION) {
        let value = h
            .to_str()
            .map_err(|_| MatrixError::missing_token("Invalid Authorization header"))?;
        return match value.split_once(' ') {
            Some((scheme, token))
                if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
            {
                Ok(token.trim().to_owned())
            }
            _ => Err(MatrixError::missing_token("Invalid Authorization header")),
        };
    }
    let query = parts.uri.query().unwrap_or_default();
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| MatrixError::missing_token("Missing access token"))
}

/// Resolves the token, records last-seen, and applies the client rate limit.
/// `fresh`: see [`crate::services::sessions::Sessions::authenticate`].
async fn authenticate(
    parts: &Parts,
    state: &AppState,
    fresh: bool,
) -> Result<Requester, MatrixError> {
    let token = access_token(parts)?;
    let mut limited = true;
    let requester = if let Some(service) = state.appservices.by_token(&token) {
        // An application service acts as its sender, or as the user and
        // device the query names.
        let query = |name: &str| {
            url::form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        limited = service.rate_limited;
        state
            .appservices
            .requester(
                service,
                query("user_id").as_deref(),
                query("org.matrix.msc3202.device_id").as_deref(),
            )
            .await?
    } else {
        let client = ClientInfo::from_parts(parts, state);
        state
            .sessions
            .authenticate(&token, &client.ip, &client.user_agent, fresh)
            .await?
    };
    if let Some(limiter) = &state.client_limiter
        && limited
        && !requester.is_admin()
        && (parts.uri.path().starts_with("/_matrix/client/")
            || parts.uri.path().starts_with("/_matrix/media/"))
        // Long-polling /sync is how clients wait; it is not limited (as Synapse).
        && !parts.uri.path().ends_with("/sync")
        && let Err(wait) = limiter.check(&format!("{}/{}", requester.user_id, requester.device_id))
        // Admins are exempt, a promotion made by hand included.
        && !state.sessions.admin_now(&requester).await?
    {
        return Err(MatrixError::limit_exceeded(wait));
    }
    Ok(requester)
}

/// A caller within the per-IP limit on login and registration attempts
/// (`rate_limits.login_*`). Checked from the request head, so before the
/// body is read.
pub struct LoginRateLimit;

impl FromRequestParts<AppState> for LoginRateLimit {
    type Rejection = MatrixError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(limiter) = &state.login_limiter {
            let client = ClientInfo::from_parts(parts, state);
            limiter
                .check(&client.ip)
                .map_err(MatrixError::limit_exceeded)?;
        }
        Ok(Self)
    }
}

/// A logged-in caller who is not a guest.
pub struct Auth(pub Requester);

/// A logged-in caller; guests allowed.
pub struct GuestAuth(pub Requester);

/// A caller who may or may not be logged in (guests allowed): `None` when
/// the request carries no access token; a token given must be valid.
pub struct MaybeAuth(pub Option<Requester>);

/// A logged-in server admin (account type 3, read from the database now,
/// never from the token cache).
pub struct AdminAuth(pub Requester);

impl FromRequestParts<AppState> for Auth {
    type Rejection = MatrixError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let r = authenticate(parts, state, false).await?;
        if r.is_guest() {
            return Err(MatrixError::guest_forbidden());
        }
        Ok(Self(r))
    }
}

impl FromRequestParts<AppState> for GuestAuth {
    type Rejection = MatrixError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        authenticate(parts, state, false).await.map(Self)
    }
}

/// Whether the request carries an access token (header or query).
fn has_token(parts: &Parts) -> bool {
    parts.headers.contains_key(http::header::AUTHORIZATION)
        || url::form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
            .any(|(k, _)| k == "access_token")
}

/// The access token as sent, unresolved (`None` without one): for the
/// endpoints an application service calls with its `as_token` before any
/// user exists (`m.login.application_service` registration and login).
pub struct RawToken(pub Option<String>);

impl FromRequestParts<AppState> for RawToken {
    type Rejection = MatrixError;
    async fn from_request_parts(
        parts: &mut Parts,
        _state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if !has_token(parts) {
            return Ok(Self(None));
        }
        access_token(parts).map(|t| Self(Some(t)))
    }
}

impl FromRequestParts<AppState> for MaybeAuth {
    type Rejection = MatrixError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if !has_token(parts) {
            return Ok(Self(None));
        }
        authenticate(parts, state, false)
            .await
            .map(|r| Self(Some(r)))
    }
}

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = MatrixError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let r = authenticate(parts, state, true).await?;
        if r.is_guest() {
            return Err(MatrixError::guest_forbidden());
        }
        if !r.is_admin() {
            return Err(MatrixError::not_admin());
        }
        Ok(Self(r))
    }
}
