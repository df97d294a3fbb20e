//! The HTTP layer: routing, cross-cutting middleware, and thin handlers that
//! parse a request, call a service and shape the response.
//!
//! - `client/`: the Client-Server API (`/_matrix/client/...`, `/.well-known`)
//! - `admin/`: the Dendrite (`/_dendrite/admin`) and Synapse (`/_synapse/admin`) admin APIs

pub mod admin;
pub mod client;
pub mod extract;
mod federation;
pub mod observe;
pub mod serve;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use http::{HeaderValue, Method, StatusCode, header};
use hyper::body::{Frame, SizeHint};
use ruma::api::IncomingRequest;
use ruma::api::path_builder::PathBuilder;
use tower_http::cors::{Any, CorsLayer};

use crate::error::MatrixError;
use crate::services::Services;

pub type AppState = Arc<Services>;

/// Builds the whole application: every route plus the middleware stack,
/// with [`body_guard`] outermost.
pub fn app(state: AppState) -> Router {
    let guard = middleware::from_fn_with_state(state.clone(), body_guard);
    app_without_body_guard(state).layer(guard)
}

/// [`app`] without [`body_guard`], for requests that have no body: the
/// guard has nothing to do for them, and a boxed middleware around a parked
/// long-poll would stay allocated for as long as it waits.
pub fn app_without_body_guard(state: AppState) -> Router {
    let observe = observe::ObserveLayer::new(&state);
    let inner = Router::new()
        .merge(client::routes())
        .merge(admin::routes(&state))
        .merge(federation::routes())
        .merge(observe::routes())
        .route_layer(observe::AroundLayer(observe::RouteTemplate))
        .fallback(|| async { MatrixError::unrecognized(StatusCode::NOT_FOUND) })
        .method_not_allowed_fallback(|| async {
            MatrixError::unrecognized(StatusCode::METHOD_NOT_ALLOWED)
        })
        .with_state(state);

    // Rewriting r0 paths must happen before routing, so the inner router is
    // the fallback service of an outer one that only carries middleware.
    let rewritten = tower::ServiceBuilder::new()
        .layer(middleware::from_fn(rewrite_r0))
        .service(inner);

    Router::new()
        .fallback_service(rewritten)
        .layer(middleware::from_fn(options_and_json_errors))
        .layer(
            CorsLayer::new()
                .allow_origin(Any)
                .allow_methods([
                    Method::GET,
                    Method::HEAD,
                    Method::POST,
                    Method::PUT,
                    Method::DELETE,
                    Method::OPTIONS,
                ])
                .allow_headers([
                    header::HeaderName::from_static("x-requested-with"),
                    header::CONTENT_TYPE,
                    header::AUTHORIZATION,
                    header::ACCEPT,
                    header::ORIGIN,
                    header::DATE,
                ]),
        )
        .layer(
            tower_http::compression::CompressionLayer::new().compress_when(
                tower_http::compression::predicate::Predicate::and(
                    tower_http::compression::predicate::DefaultPredicate::new(),
                    not_a_file,
                ),
            ),
        )
        // Its events go in the `request` span `observe` opened.
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(|_: &Request| tracing::Span::none()),
        )
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            MatrixError::internal("a request handler panicked").into_response()
        }))
        .layer(observe)
}

/// Files (media downloads, the only answers with a `Content-Disposition`)
/// go out as stored: streamed with their `Content-Length`, never compressed.
fn not_a_file(
    _: StatusCode,
    _: http::Version,
    headers: &http::HeaderMap,
    _: &http::Extensions,
) -> bool {
    !headers.contains_key(header::CONTENT_DISPOSITION)
}

/// Bounds how long a request body may take to arrive
/// (`limits.body_read_timeout_secs`, a media upload's
/// `media.upload_timeout_secs`, counted from when its headers were read), and keeps the connection usable after a response sent before the
/// request's body was read (an early 401, 403, 404 or 413): the rest of a
/// small body (at most [`DRAIN_BYTES`]) is read and dropped before the
/// response goes out; a larger one, or one that does not arrive in time,
/// closes the connection, and `Connection: close` tells the client so.
async fn body_guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    if body.is_end_stream() {
        // No body (most GETs, the long-polling /sync among them): nothing to guard.
        return next.run(Request::from_parts(parts, body)).await;
    }
    let timeout = Duration::from_secs(if client::is_media_upload(&parts) {
        state.config.media.upload_timeout_secs
    } else {
        state.config.limits.body_read_timeout_secs
    });
    let shared = Arc::new(BodyState::default());
    let guarded = GuardedBody {
        inner: body,
        shared: shared.clone(),
        deadline: tokio::time::Instant::now() + timeout,
        sleep: None,
    };
    let mut resp = next
        .run(Request::from_parts(parts, Body::new(guarded)))
        .await;
    if !shared.done.load(Ordering::Acquire) {
        let rest = shared.rest.lock().take();
        let drained = match rest {
            Some(rest) => drain(rest).await,
            None => false,
        };
        if !drained {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    resp
}

/// The most of an unread request body [`body_guard`] reads to keep the
/// connection open.
const DRAIN_BYTES: u64 = 64 * 1024;

/// Reads the rest of a body nobody wanted, if it is small; true when it is
/// all read (its deadline still applies).
async fn drain(mut rest: GuardedBody) -> bool {
    if rest.size_hint().lower() > DRAIN_BYTES {
        return false;
    }
    let mut read = 0u64;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut rest).poll_frame(cx)).await {
        let Ok(frame) = frame else {
            return false;
        };
        if let Some(data) = frame.data_ref() {
            read += data.len() as u64;
            if read > DRAIN_BYTES {
                return false;
            }
        }
    }
    true
}

/// What [`body_guard`] learns from the body it handed on.
#[derive(Default)]
struct BodyState {
    /// The body was read to its end.
    done: AtomicBool,
    /// The body, handed back when it was dropped before its end.
    rest: parking_lot::Mutex<Option<GuardedBody>>,
}

/// The error a request body ends with when it took too long to arrive.
#[derive(Debug)]
pub(crate) struct BodyTimeout;

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("timed out reading the request body")
    }
}

impl std::error::Error for BodyTimeout {}

/// A request body that records whether it was read to its end (and, dropped
/// before it, hands itself back), and fails with [`BodyTimeout`] once its
/// deadline passes.
struct GuardedBody {
    inner: Body,
    shared: Arc<BodyState>,
    deadline: tokio::time::Instant,
    /// Made on the first wait only: most bodies arrive with their headers.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.shared.done.store(true, Ordering::Release);
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => {
                if this.inner.is_end_stream() {
                    this.shared.done.store(true, Ordering::Release);
                }
                Poll::Ready(Some(frame))
            }
            Poll::Pending => {
                let deadline = this.deadline;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyTimeout)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for GuardedBody {
    fn drop(&mut self) {
        if self.shared.done.load(Ordering::Acquire) {
            return;
        }
        let rest = GuardedBody {
            inner: std::mem::take(&mut self.inner),
            // Handed back once: the rest does not hand itself back again.
            shared: Arc::new(BodyState {
                done: AtomicBool::new(true),
                rest: parking_lot::Mutex::new(None),
            }),
            deadline: self.deadline,
            sleep: self.sleep.take(),
        };
        *self.shared.rest.lock() = Some(rest);
    }
}

/// `/_matrix/client/r0/...` is served as `/_matrix/client/v3/...`.
async fn rewrite_r0(mut req: Request, next: Next) -> Response {
    const R0: &str = "/_matrix/client/r0/";
    if req.uri().path().starts_with(R0) {
        let pq = req
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or_default();
        let rewritten = format!("/_matrix/client/v3/{}", &pq[R0.len()..]);
        if let Ok(uri) = rewritten.parse() {
            *req.uri_mut() = uri;
        }
    }
    next.run(req).await
}

/// Answers every OPTIONS request with 200 before any auth, and turns any
/// non-JSON error response (from the framework or a layer) into a Matrix error.
async fn options_and_json_errors(req: Request, next: Next) -> Response {
    if req.method() == Method::OPTIONS {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{}",
        )
            .into_response();
    }
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let err = match status {
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
                MatrixError::unrecognized(status)
            }
            StatusCode::PAYLOAD_TOO_LARGE => MatrixError::too_large("Request body too large"),
            StatusCode::BAD_REQUEST => MatrixError::invalid_param("Invalid request"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => MatrixError::not_json("Expected a JSON body"),
            s if s.is_server_error() => MatrixError::internal(format!("{s} from a layer")),
            s => MatrixError::unknown(s, s.canonical_reason().unwrap_or("Error")),
        };
        return err.into_response();
    }
    resp
}

/// The longest search term accepted (user directory, admin user filters), in
/// bytes: longer than any user id (255) or display name could match, and far
/// below SQLite's 50,000-byte limit on a `LIKE` pattern.
pub const MAX_SEARCH_TERM_BYTES: usize = 1024;

/// Refuses a search term longer than [`MAX_SEARCH_TERM_BYTES`] with 400
/// `M_INVALID_PARAM` naming `param`.
pub fn check_search_term(term: Option<&str>, param: &str) -> Result<(), MatrixError> {
    match term {
        Some(t) if t.len() > MAX_SEARCH_TERM_BYTES => Err(MatrixError::invalid_param(format!(
            "{param} is too long (at most {MAX_SEARCH_TERM_BYTES} bytes)"
        ))),
        _ => Ok(()),
    }
}

/// Registers `handler` at every path ruma knows for the endpoint `R` (stable
/// and unstable; r0 paths are reached through [`rewrite_r0`]).
pub fn ruma_route<R, H, T>(router: Router<AppState>, handler: H) -> Router<AppState>
where
    R: IncomingRequest,
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = method_filter(&R::METHOD);
    let mut router = router;
    for path in R::PATH_BUILDER.all_paths() {
        if path.starts_with("/_matrix/client/r0/") {
            continue;
        }
        router = router.route(path, on(filter, handler.clone()));
    }
    router
}

pub fn method_filter(m: &Method) -> MethodFilter {
    match *m {
        Method::GET => MethodFilter::GET,
        Method::POST => MethodFilter::POST,
        Method::PUT => MethodFilter::PUT,
        Method::DELETE => MethodFilter::DELETE,
        Method::PATCH => MethodFilter::PATCH,
        Method::HEAD => MethodFilter::HEAD,
        _ => MethodFilter::OPTIONS,
    }
}
