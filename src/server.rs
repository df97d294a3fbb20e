//! Start-up and shutdown: data dir, signing key, database, services, listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::keys::SigningKey;
use crate::services::Services;
use crate::storage::Storage;

/// A server that is accepting connections.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// The federation TLS listener's address, when `federation.listen` is set.
    pub federation_addr: Option<SocketAddr>,
    /// The metrics listener's address, when `metrics.listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    pub services: Arc<Services>,
    stop: watch::Sender<bool>,
    serve_task: JoinHandle<()>,
}

/// Builds every service, starts their background work and starts listening
/// on `config.listen` (port 0 picks a free port; see [`RunningServer::addr`]).
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    start_with(config, SystemClock::shared()).await
}

/// [`start`] with the clock the services read (tests pass a
/// [`crate::clock::MockClock`] to move time on instead of waiting).
pub async fn start_with(config: Config, clock: SharedClock) -> anyhow::Result<RunningServer> {
    config.validate()?;
    crate::services::appservices::check_registrations(&config)?;
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        anyhow::anyhow!("cannot create data dir {}: {e}", config.data_dir.display())
    })?;
    let signing_key = SigningKey::load_or_generate(&config.data_dir)?;
    let storage = Storage::connect(&config.database_url(), config.database.max_connections)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open database: {e:#}"))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;
    let metrics_listener = match config.metrics.listen {
        Some(at) => Some(
            tokio::net::TcpListener::bind(at)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {at} (metrics.listen): {e}"))?,
        ),
        None => None,
    };
    let federation_listener = bind_federation(&config).await?;
    let federation_addr = match &federation_listener {
        Some((l, _)) => Some(l.local_addr()?),
        None => None,
    };
    let metrics_addr = match &metrics_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    // Boxed: building the services is a large future, and start-up is
    // awaited inside others (a restart in a test).
    let services = Box::pin(Services::new(config, storage, signing_key, clock)).await?;
    // Before serving: what a crash kept out of the search index goes in.
    let mut rebuild_search = services.search_needs_rebuild;
    if let Err(e) = crate::services::search::catch_up(&services).await {
        tracing::warn!(error = %e.message(), "could not catch the search index up; rebuilding it");
        rebuild_search = true;
    }
    services.start(rebuild_search, release_free_memory);

    let app = crate::http::app(services.clone());
    let bodyless = crate::http::app_without_body_guard(services.clone());
    let (stop, stop_rx) = watch::channel(false);
    if let Some(l) = metrics_listener {
        let metrics = crate::http::observe::metrics_app(services.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(l, metrics)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::warn!(error = %e, "the metrics listener failed");
            }
        });
        tracing::info!(addr = ?metrics_addr, "metrics are served on /metrics");
    }
    let federation_task = federation_listener.map(|(l, tls)| {
        tokio::spawn(crate::http::serve::serve(
            l,
            Some(tls),
            app.clone(),
            bodyless.clone(),
            stop_rx.clone(),
        ))
    });
    if let Some(at) = federation_addr {
        tracing::info!(addr = %at, "federation is served over TLS");
    }
    let plain = crate::http::serve::serve(listener, None, app, bodyless, stop_rx);
    // One task serves both listeners, so shutdown waits for both.
    let serve_task = tokio::spawn(async move {
        plain.await;
        if let Some(t) = federation_task {
            let _ = t.await;
        }
    });
    tracing::info!(%addr, server_name = %services.server_name, "Myelin is listening");
    log_cache_bounds(&services);
    Ok(RunningServer {
        addr,
        federation_addr,
        metrics_addr,
        services,
        stop,
        serve_task,
    })
}

/// The federation TLS listener and its acceptor, when `federation.listen`
/// is set.
async fn bind_federation(
    config: &Config,
) -> anyhow::Result<Option<(tokio::net::TcpListener, tokio_rustls::TlsAcceptor)>> {
    let Some(at) = config.federation.listen else {
        return Ok(None);
    };
    let (Some(cert), Some(key)) = (
        &config.federation.tls_certificate,
        &config.federation.tls_private_key,
    ) else {
        anyhow::bail!("federation.listen needs tls_certificate and tls_private_key");
    };
    let acceptor = crate::http::serve::tls_acceptor(cert, key)?;
    let listener = tokio::net::TcpListener::bind(at)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {at} (federation.listen): {e}"))?;
    Ok(Some((listener, acceptor)))
}

/// The cache bounds from the config, and what each cache holds now.
fn log_cache_bounds(services: &Services) {
    let c = &services.config.caches;
    tracing::info!(
        room_heads = c.room_heads,
        rooms = c.rooms,
        unread_counts = c.unread_counts,
        rate_limit_buckets = c.rate_limit_buckets,
        uia_sessions = c.uia_sessions,
        registration_nonces = c.registration_nonces,
        device_keys = c.device_keys,
        trusted_proxies = services.config.trusted_proxies.len(),
        held = %services.cache_report_line(),
        "cache bounds (entries; `caches` in the config)"
    );
}

/// Gives the heap's free pages back to the system (after a burst of work
/// and after the search index writer is released; run by the upkeep
/// worker on a blocking thread).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

impl RunningServer {
    /// Shuts down as [`RunningServer::shutdown_within`] does, within the
    /// configured `shutdown_timeout_secs`.
    pub async fn shutdown(self) {
        let timeout = Duration::from_secs(self.services.config.shutdown_timeout_secs);
        self.shutdown_within(timeout).await;
    }

    /// Stops accepting connections, answers parked long-polls at once,
    /// finishes the requests in flight, then stops the background work in
    /// order (jobs at their next step, the writer's queue written) and
    /// closes the database ([`Services::shutdown`]). Whether it all
    /// finished within `timeout`; past it, what is left is cut off (nothing
    /// acknowledged is lost: a send is answered only once written).
    pub async fn shutdown_within(self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let _ = self.stop.send(true);
        self.services.stream.close();
        let mut serve_task = self.serve_task;
        let served = tokio::time::timeout_at(deadline, &mut serve_task)
            .await
            .is_ok();
        if !served {
            tracing::warn!("requests still in flight at the shutdown timeout were cut off");
            serve_task.abort();
        }
        // Jobs get half of what is left to reach a step boundary; the
        // writer's queue and the final flushes the rest.
        let job_grace = deadline.saturating_duration_since(Instant::now()) / 2;
        let stopped = tokio::time::timeout_at(deadline, self.services.shutdown(job_grace))
            .await
            .is_ok();
        if !stopped {
            tracing::error!("the background work did not stop within the shutdown timeout");
        }
        served && stopped
    }

    /// Serves until the first of `signals` (Ctrl-C or SIGTERM), then shuts
    /// down cleanly; an error when the shutdown outlasted
    /// `shutdown_timeout_secs`, or when a second signal cut it short (it
    /// stops waiting at once, as most servers do: whatever is still
    /// unwritten is lost, and a send is answered only once written).
    pub async fn run_until(self, mut signals: ShutdownSignals) -> anyhow::Result<()> {
        signals.next().await;
        let timeout = self.services.config.shutdown_timeout_secs;
        tracing::info!(
            timeout_secs = timeout,
            "shutting down (a second Ctrl-C or SIGTERM exits at once)"
        );
        tokio::select! {
            finished = self.shutdown_within(Duration::from_secs(timeout)) => {
                anyhow::ensure!(
                    finished,
                    "the shutdown did not finish within shutdown_timeout_secs ({timeout} s)"
                );
            }
            () = signals.next() => {
                tracing::warn!("a second signal: exiting without finishing the shutdown");
                anyhow::bail!("a second signal cut the shutdown short");
            }
        }
        tracing::info!("shut down");
        Ok(())
    }
}

/// Ctrl-C (SIGINT) and SIGTERM, each time they arrive. Make it before the
/// server starts, so a signal that arrives while it starts up is not
/// missed (or fatal).
pub struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// The next Ctrl-C or SIGTERM.
    pub async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Listens for Ctrl-C and SIGTERM from now on ([`ShutdownSignals`]).
pub fn shutdown_signals() -> anyhow::Result<ShutdownSignals> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt())
            .map_err(|e| anyhow::anyhow!("cannot install a Ctrl-C handler: {e}"))?;
        let terminate = signal(SignalKind::terminate())
            .map_err(|e| anyhow::anyhow!("cannot install a SIGTERM handler: {e}"))?;
        Ok(ShutdownSignals {
            interrupt,
            terminate,
        })
    }
    #[cfg(not(unix))]
    Ok(ShutdownSignals {})
}
