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

/// The outermost layer of the client listener's routes: gives each request
/// an id (a trusted proxy's `X-Request-Id`, or a new one), runs it in an
/// info-level `request` span that carries the id (so every log line the
/// request causes shows it), answers with the id in `X-Request-Id`, and
/// counts it by route template, method and status.
#[derive(Clone)]
pub struct ObserveLayer {
    pub state: AppState,
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            state: self.state.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    state: AppState,
}

impl<S> tower::Service<Request> for Observe<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let id = request_id(&req, &self.state.config.trusted_proxies);
        let method = method_label(req.method());
        let span = tracing::info_span!(
            "request",
            request_id = id.to_str().unwrap_or_default(),
            method = %req.method(),
            path = %req.uri().path(),
        );
        let inner = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        let metrics = self.state.metrics.clone();
        metrics.http_in_flight.inc();
        ObserveFuture {
            inner: inner.instrument(span),
            done: Some(Done {
                metrics,
                method,
                id,
                started: Instant::now(),
            }),
        }
    }
}

/// What [`ObserveFuture`] records once the answer is ready.
struct Done {
    metrics: Arc<Metrics>,
    method: &'static str,
    id: HeaderValue,
    started: Instant,
}

impl Drop for Done {
    /// Answered or not (a client that went away drops the request), the
    /// request is no longer in flight.
    fn drop(&mut self) {
        self.metrics.http_in_flight.dec();
    }
}

pin_project_lite::pin_project! {
    pub struct ObserveFuture<F> {
        #[pin]
        inner: tracing::instrument::Instrumented<F>,
        done: Option<Done>,
    }
}

impl<F> Future for ObserveFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Poll::Ready(Ok(mut resp)) = this.inner.poll(cx) else {
            return Poll::Pending;
        };
        if let Some(done) = this.done.take() {
            let route = resp
                .extensions()
                .get::<MatchedPath>()
                .map_or("unmatched", MatchedPath::as_str);
            let status = resp.status();
            done.metrics
                .http_requests
                .with_label_values(&[route, done.method, status.as_str()])
                .inc();
            done.metrics
                .http_duration
                .with_label_values(&[route, done.method])
                .observe(done.started.elapsed().as_secs_f64());
            resp.headers_mut().insert(REQUEST_ID, done.id.clone());
        }
        Poll::Ready(Ok(resp))
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
#[derive(Clone, Copy, Default)]
pub struct RouteTemplateLayer;

impl<S> tower::Layer<S> for RouteTemplateLayer {
    type Service = RouteTemplate<S>;

    fn layer(&self, inner: S) -> RouteTemplate<S> {
        RouteTemplate { inner }
    }
}

#[derive(Clone)]
pub struct RouteTemplate<S> {
    inner: S,
}

impl<S> tower::Service<Request> for RouteTemplate<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = RouteTemplateFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let route = req.extensions().get::<MatchedPath>().cloned();
        RouteTemplateFuture {
            inner: self.inner.call(req),
            route,
        }
    }
}

pin_project_lite::pin_project! {
    pub struct RouteTemplateFuture<F> {
        #[pin]
        inner: F,
        route: Option<MatchedPath>,
    }
}

impl<F> Future for RouteTemplateFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Poll::Ready(Ok(mut resp)) = this.inner.poll(cx) else {
            return Poll::Pending;
        };
        if let Some(route) = this.route.take() {
            resp.extensions_mut().insert(route);
        }
        Poll::Ready(Ok(resp))
    }
}
