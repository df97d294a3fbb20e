//! What operators watch from the HTTP side: each request's id (a log span
//! and the `X-Request-Id` header) and its metrics (by route template),
//! `GET /health` on the client listener, and the metrics listener's own
//! router (`GET /metrics`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, Method, StatusCode, header};
use tracing::Instrument;

use super::AppState;
use crate::error::MatrixError;
use crate::metrics::Metrics;

/// The header that carries a request's id, in the answer (and from a
/// trusted proxy, in the request).
pub const REQUEST_ID: &str = "x-request-id";

/// `GET /health` on the client listener.
pub fn routes() -> Router<AppState> {
    Router::new().route("/health", get(health))
}

/// 200 `OK` (as Synapse) while the database answers; 503 when it does not.
async fn health(State(s): State<AppState>) -> Response {
    match s.health().await {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "OK",
        )
            .into_response(),
        Err(_) => MatrixError::unknown(
            StatusCode::SERVICE_UNAVAILABLE,
            "The database is unreachable",
        )
        .into_response(),
    }
}

/// The metrics listener's router: `GET /metrics` in the Prometheus text
/// format; anything else 404.
pub fn metrics_app(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        s.metrics_text().await,
    )
        .into_response()
}

/// A tower layer that does something as a request comes in and something
/// to its answer: [`ObserveLayer`] and [`RouteTemplateLayer`] are two.
#[derive(Clone)]
pub struct AroundLayer<A>(pub A);

/// What an [`AroundLayer`] does: [`Around::start`] sees the request and
/// returns what its [`Finish`] needs, and the span the request runs in.
pub trait Around {
    type Pending: Finish;
    fn start(&self, req: &Request) -> (Self::Pending, tracing::Span);
}

/// Done to the answer; dropped without being called when the request is
/// dropped unanswered (a client that went away).
pub trait Finish {
    fn finish(self, resp: &mut Response);
}

impl<S, A: Clone> tower::Layer<S> for AroundLayer<A> {
    type Service = AroundService<S, A>;

    fn layer(&self, inner: S) -> AroundService<S, A> {
        AroundService {
            inner,
            around: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AroundService<S, A> {
    inner: S,
    around: A,
}

impl<S, A> tower::Service<Request> for AroundService<S, A>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
    A: Around,
{
    type Response = Response;
    type Error = Infallible;
    type Future = AroundFuture<S::Future, A::Pending>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let (pending, span) = self.around.start(&req);
        let inner = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        AroundFuture {
            inner: inner.instrument(span),
            pending: Some(pending),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner future, run in the request's span; its answer finished.
    pub struct AroundFuture<F, P> {
        #[pin]
        inner: tracing::instrument::Instrumented<F>,
        pending: Option<P>,
    }
}

impl<F, P> Future for AroundFuture<F, P>
where
    F: Future<Output = Result<Response, Infallible>>,
    P: Finish,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Poll::Ready(Ok(mut resp)) = this.inner.poll(cx) else {
            return Poll::Pending;
        };
        if let Some(pending) = this.pending.take() {
            pending.finish(&mut resp);
        }
        Poll::Ready(Ok(resp))
    }
}

/// The outermost layer of the client listener's routes: gives each request
/// an id (a trusted proxy's `X-Request-Id`, or a new one), runs it in an
/// info-level `request` span that carries the id (so every log line the
/// request causes shows it), answers with the id in `X-Request-Id`, and,
/// while metrics are served (`metrics.listen`), counts it by route
/// template, method and status.
pub type ObserveLayer = AroundLayer<Observe>;

impl ObserveLayer {
    pub fn new(state: &AppState) -> Self {
        AroundLayer(Observe {
            proxies: state.config.trusted_proxies.clone().into(),
            metrics: state
                .config
                .metrics
                .listen
                .is_some()
                .then(|| state.metrics.clone()),
        })
    }
}

#[derive(Clone)]
pub struct Observe {
    proxies: Arc<[crate::net::Cidr]>,
    metrics: Option<Arc<Metrics>>,
}

impl Around for Observe {
    type Pending = Done;

    fn start(&self, req: &Request) -> (Done, tracing::Span) {
        let id = request_id(req, &self.proxies);
        let span = tracing::info_span!(
            "request",
            request_id = id.to_str().unwrap_or_default(),
            method = %req.method(),
            path = %req.uri().path(),
        );
        let counted = self.metrics.clone().map(|metrics| {
            metrics.http_in_flight.inc();
            Counted {
                metrics,
                method: method_label(req.method()),
                started: Instant::now(),
            }
        });
        (Done { id, counted }, span)
    }
}

/// What [`Observe`] does to the answer: its id, and its metrics.
pub struct Done {
    id: HeaderValue,
    counted: Option<Counted>,
}

/// A request counted in flight, to count once answered.
struct Counted {
    metrics: Arc<Metrics>,
    method: &'static str,
    started: Instant,
}

impl Drop for Counted {
    /// Answered or not (a client that went away drops the request), the
    /// request is no longer in flight.
    fn drop(&mut self) {
        self.metrics.http_in_flight.dec();
    }
}

impl Finish for Done {
    fn finish(self, resp: &mut Response) {
        if let Some(c) = &self.counted {
            let route = resp
                .extensions()
                .get::<MatchedPath>()
                .map_or("unmatched", MatchedPath::as_str);
            let status = resp.status();
            c.metrics
                .http_requests
                .with_label_values(&[route, c.method, status.as_str()])
                .inc();
            c.metrics
                .http_duration
                .with_label_values(&[route, c.method])
                .observe(c.started.elapsed().as_secs_f64());
        }
        resp.headers_mut().insert(REQUEST_ID, self.id);
    }
}

/// The request's id: a trusted proxy's `X-Request-Id` (up to 64 letters,
/// digits, `.`, `_`, `-`), else 16 random hex digits.
fn request_id(req: &Request, proxies: &[crate::net::Cidr]) -> HeaderValue {
    let from_proxy = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(peer)| proxies.iter().any(|c| c.contains(peer.ip())));
    if from_proxy
        && let Some(given) = req.headers().get(REQUEST_ID)
        && (1..=64).contains(&given.len())
        && given
            .as_bytes()
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return given.clone();
    }
    let id = format!("{:016x}", rand::random::<u64>());
    HeaderValue::from_str(&id).expect("hex digits are a valid header value")
}

/// The method as a label: the standard ones by name, anything else `other`
/// (so a client cannot make new series).
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// A layer for the routes themselves (`Router::route_layer`): copies the
/// matched route template into the response's extensions, where
/// [`ObserveLayer`] (outside the router) finds it.
pub type RouteTemplateLayer = AroundLayer<RouteTemplate>;

#[derive(Clone, Copy, Default)]
pub struct RouteTemplate;

impl Around for RouteTemplate {
    type Pending = Option<MatchedPath>;

    fn start(&self, req: &Request) -> (Option<MatchedPath>, tracing::Span) {
        (
            req.extensions().get::<MatchedPath>().cloned(),
            tracing::Span::none(),
        )
    }
}

impl Finish for Option<MatchedPath> {
    fn finish(self, resp: &mut Response) {
        if let Some(route) = self {
            resp.extensions_mut().insert(route);
        }
    }
}
