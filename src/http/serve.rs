//! Accepting connections: each TCP connection is served as HTTP/1.1 by the
//! router, until shutdown. The federation listener (`federation.listen`)
//! takes TLS first ([`tls_acceptor`]); the client listener is plain.
//!
//! This replaces `axum::serve` for one reason: memory per held connection.
//! `axum::serve` uses hyper-util's "auto" builder, which (when HTTP/2 is
//! compiled in anywhere in the build) first reads a few bytes to tell the
//! HTTP/2 preface from HTTP/1 and hands them back through a rewinding reader.
//! hyper's first read then returns only those bytes, and its second read
//! grows the 8 KiB read buffer to 16 KiB, for the life of the connection.
//! A long-polling client holds its connection open, so with 10,000 of them
//! that was 80 MB. Myelin speaks HTTP/1.1 only (as Synapse does; TLS and
//! HTTP/2 are a reverse proxy's job), so the detection is not needed.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tower::ServiceExt;

/// How long a client may take to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS acceptor of the federation listener: the certificate chain and
/// private key (PEM) from these files, HTTP/1.1 only.
pub fn tls_acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect)
        .map_err(|e| anyhow::anyhow!("federation.tls_certificate {}: {e}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "federation.tls_certificate {}: no PEM certificate in it",
            cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("federation.tls_private_key {}: {e}", key.display()))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| anyhow::anyhow!("federation TLS certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The most a connection's read buffer (and its queue of response bytes
/// to write) holds; also the longest request head it takes. hyper's
/// default (~400 KiB) grows a large body's reads past the allocator's
/// mapping threshold (128 KiB, `main.rs`): each new read buffer was then a
/// fresh mapping, faulted in page by page and unmapped again, and response
/// chunks queued that deep left the cache before the socket copied them
/// (media: docs/benchmarks-history.md, run 40).
const CONNECTION_BUFFER: usize = 120 * 1024;

/// Serves `app` on `listener` until `stop` turns true, then stops accepting,
/// lets every connection finish its request in flight, and returns.
/// A request without a body goes to `bodyless` instead (the same routes
/// without the request-body guard, `http::app_without_body_guard`).
/// Handlers see the peer's address as `ConnectInfo<SocketAddr>`.
/// With `tls`, each connection's TLS handshake comes first (within
/// [`TLS_HANDSHAKE_TIMEOUT`]; a failed one closes the connection).
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    bodyless: Router,
    mut stop: watch::Receiver<bool>,
) {
    // Each connection task holds a receiver; `closed()` completes when the
    // last one is dropped.
    let (open_tx, open_rx) = watch::channel(());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: wait a little instead of spinning.
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        // Responses are written in one go; don't let Nagle hold back the
        // last segment of one waiting for an ACK.
        let _ = stream.set_nodelay(true);
        let (app, bodyless, stop, open) =
            (app.clone(), bodyless.clone(), stop.clone(), open_rx.clone());
        match &tls {
            None => {
                tokio::spawn(serve_connection(stream, peer, app, bodyless, stop, open));
            }
            Some(acceptor) => {
                let accepting = acceptor.accept(stream);
                tokio::spawn(async move {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, accepting).await {
                        Ok(Ok(tls)) => {
                            serve_connection(tls, peer, app, bodyless, stop, open).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    drop(open_rx);
    open_tx.closed().await;
}

async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    peer: SocketAddr,
    app: Router,
    bodyless: Router,
    mut stop: watch::Receiver<bool>,
    _open: watch::Receiver<()>,
) {
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let app = if req.body().is_end_stream() {
            bodyless.clone()
        } else {
            app.clone()
        };
        app.oneshot(req.map(Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.max_buf_size(CONNECTION_BUFFER);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stopped(&mut stop) => {
            // Finish the request in flight (if any), then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, %peer, "connection ended with an error");
    }
}

/// Completes once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
