//! The HTTP layer: routing, cross-cutting middleware, and thin handlers that
//! parse a request, call a service and shape the response.
//!
//! - `client/`: the Client-Server API (`/_matrix/client/...`, `/.well-known`)
//! - `admin/`: the Dendrite (`/_dendrite/admin`) and Synapse (`/_synapse/admin`) admin APIs

pub mod admin;
pub mod client;
pub mod extract;
mod federation;
pub mod serve;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::handler::Handler;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use http::{Method, StatusCode, header};
use ruma::api::IncomingRequest;
use ruma::api::path_builder::PathBuilder;
use tower_http::cors::{Any, CorsLayer};

use crate::error::MatrixError;
use crate::services::Services;

pub type AppState = Arc<Services>;

/// Builds the whole application: every route plus the middleware stack.
pub fn app(state: AppState) -> Router {
    let inner = Router::new()
        .merge(client::routes())
        .merge(admin::routes(&state))
        .merge(federation::routes())
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
        .layer(tower_http::compression::CompressionLayer::new())
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            MatrixError::internal("a request handler panicked").into_response()
        }))
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
