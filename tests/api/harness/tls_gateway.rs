//! An HTTPS front for the fake push gateway: TLS (a certificate for
//! 127.0.0.1 signed by the test CA in `tests/common/tls`) terminated here,
//! the bytes relayed to a plain [`FakeGateway`]. Failed handshakes are
//! reported, so a test waits on them instead of on an absence.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::FakeGateway;

/// The test CA's certificate (PEM file), to put in `outbound.ca_files`.
pub fn test_ca_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/common/tls/ca.pem")
}

pub struct TlsGateway {
    /// The plain gateway behind, which records what arrives.
    pub inner: FakeGateway,
    /// The `https://127.0.0.1:PORT/_matrix/push/v1/notify` URL.
    pub url: String,
    failures: tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsGateway {
    pub async fn start() -> Self {
        let inner = FakeGateway::start().await;
        let backend = inner
            .url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/common/tls");
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(dir.join("gateway.pem"))
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_file(dir.join("gateway.key")).unwrap();
        let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (fail_tx, fail_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let backend = backend.clone();
                let fail_tx = fail_tx.clone();
                tokio::spawn(async move {
                    let mut tls = match acceptor.accept(conn).await {
                        Ok(tls) => tls,
                        Err(e) => {
                            let _ = fail_tx.send(e.to_string());
                            return;
                        }
                    };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(&backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        Self {
            inner,
            url: format!("https://127.0.0.1:{port}/_matrix/push/v1/notify"),
            failures: tokio::sync::Mutex::new(fail_rx),
            task,
        }
    }

    /// The next failed TLS handshake's error (within 20 s, else the test fails).
    pub async fn next_failure(&self) -> String {
        let mut failures = self.failures.lock().await;
        tokio::time::timeout(Duration::from_secs(20), failures.recv())
            .await
            .expect("no failed TLS handshake within 20 s")
            .expect("the channel is open")
    }
}
