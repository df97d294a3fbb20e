//! The one error type every handler returns: a Matrix error body
//! `{"errcode","error",...}` (built from ruma's `ErrorKind`) with its HTTP status,
//! or a user-interactive-auth challenge.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use ruma::api::client::uiaa::UiaaInfo;
use ruma::api::error::{
    ErrorKind, LimitExceededErrorData, RetryAfter, StandardErrorBody, UnknownTokenErrorData,
};

#[derive(Debug)]
pub struct MatrixError {
    pub status: StatusCode,
    pub body: ErrorPayload,
}

#[derive(Debug)]
pub enum ErrorPayload {
    Standard(StandardErrorBody),
    /// A 401 user-interactive-auth response (flows, session, and maybe an error).
    Uiaa(Box<UiaaInfo>),
}

pub type Result<T, E = MatrixError> = std::result::Result<T, E>;

impl MatrixError {
    pub fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorPayload::Standard(StandardErrorBody::new(kind, message.into())),
        }
    }

    pub fn errcode(&self) -> String {
        match &self.body {
            ErrorPayload::Standard(b) => b.kind.errcode().to_string(),
            ErrorPayload::Uiaa(_) => "UIAA".into(),
        }
    }

    pub fn message(&self) -> &str {
        match &self.body {
            ErrorPayload::Standard(b) => &b.message,
            ErrorPayload::Uiaa(_) => "user-interactive authentication required",
        }
    }

    pub fn bad_json(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::BadJson, msg)
    }
    pub fn not_json(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::NotJson, msg)
    }
    pub fn invalid_param(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidParam, msg)
    }
    pub fn missing_param(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::MissingParam, msg)
    }
    /// 400 `M_INVALID_SIGNATURE` (ruma has no variant for it).
    pub fn invalid_signature(msg: impl Into<String>) -> Self {
        let kind = serde_json::from_value(serde_json::json!({"errcode": "M_INVALID_SIGNATURE"}))
            .unwrap_or(ErrorKind::Unknown);
        Self::new(StatusCode::BAD_REQUEST, kind, msg)
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorKind::NotFound, msg)
    }
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorKind::Forbidden, msg)
    }
    pub fn unrecognized(status: StatusCode) -> Self {
        Self::new(status, ErrorKind::Unrecognized, "Unrecognized request")
    }
    pub fn missing_token(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorKind::MissingToken, msg)
    }
    pub fn unknown_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorKind::UnknownToken(UnknownTokenErrorData::new()),
            "Unknown access token",
        )
    }
    pub fn guest_forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            ErrorKind::GuestAccessForbidden,
            "Guest access not allowed",
        )
    }
    pub fn not_admin() -> Self {
        Self::forbidden("You are not a server admin")
    }
    pub fn user_in_use() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::UserInUse,
            "User ID already taken",
        )
    }
    pub fn invalid_username(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidUsername, msg)
    }
    pub fn weak_password(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::WeakPassword, msg)
    }
    pub fn too_large(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorKind::TooLarge, msg)
    }
    pub fn unknown(status: StatusCode, msg: impl Into<String>) -> Self {
        Self::new(status, ErrorKind::Unknown, msg)
    }
    pub fn limit_exceeded(retry_after: Duration) -> Self {
        let mut data = LimitExceededErrorData::new();
        data.retry_after = Some(RetryAfter::Delay(retry_after));
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::LimitExceeded(data),
            "Too many requests",
        )
    }
    /// Our own bug or an infrastructure failure: logged, answered with 500 M_UNKNOWN.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::unknown(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
    }
    pub fn uiaa(info: UiaaInfo) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            body: ErrorPayload::Uiaa(Box::new(info)),
        }
    }
}

impl From<sqlx::Error> for MatrixError {
    fn from(e: sqlx::Error) -> Self {
        Self::internal(format!("database: {e}"))
    }
}

impl From<anyhow::Error> for MatrixError {
    fn from(e: anyhow::Error) -> Self {
        Self::internal(format!("{e:#}"))
    }
}

impl IntoResponse for MatrixError {
    fn into_response(self) -> Response {
        let mut retry_after_secs = None;
        let body = match &self.body {
            ErrorPayload::Standard(b) => {
                if let ErrorKind::LimitExceeded(LimitExceededErrorData {
                    retry_after: Some(RetryAfter::Delay(d)),
                    ..
                }) = &b.kind
                {
                    retry_after_secs = Some(d.as_secs().max(1));
                }
                serde_json::to_vec(b)
            }
            // `completed` is always there, empty before any stage passed (as
            // Synapse; ruma leaves an empty list out).
            ErrorPayload::Uiaa(info) => serde_json::to_value(info).and_then(|mut v| {
                if let Some(map) = v.as_object_mut() {
                    map.entry("completed")
                        .or_insert_with(|| serde_json::Value::Array(Vec::new()));
                }
                serde_json::to_vec(&v)
            }),
        }
        .unwrap_or_else(|_| br#"{"errcode":"M_UNKNOWN","error":"Internal server error"}"#.to_vec());
        let mut resp = (
            self.status,
            [(http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if let Some(secs) = retry_after_secs {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, secs.into());
        }
        resp
    }
}
