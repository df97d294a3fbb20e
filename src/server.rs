//! Start-up and shutdown: data dir, signing key, database, services, listener.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::keys::SigningKey;
use crate::services::Services;
use crate::services::sessions::LAST_SEEN_FLUSH_INTERVAL;
use crate::storage::Storage;

/// A server that is accepting connections.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub services: Arc<Services>,
    stop: watch::Sender<bool>,
    serve_task: JoinHandle<()>,
    flush_task: JoinHandle<()>,
}

/// Builds every service and starts listening on `config.listen` (port 0 picks
/// a free port; see [`RunningServer::addr`]).
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    start_with(config, SystemClock::shared()).await
}

/// [`start`] with the clock the services read (tests pass a
/// [`crate::clock::MockClock`] to move time on instead of waiting).
pub async fn start_with(config: Config, clock: SharedClock) -> anyhow::Result<RunningServer> {
    config.validate()?;
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
    let services = Services::new(config, storage, signing_key, clock).await?;
    // Before serving: what a crash kept out of the search index goes in.
    let mut rebuild_search = services.search_needs_rebuild;
    if let Err(e) = crate::services::search::catch_up(&services).await {
        tracing::warn!(error = %e.message(), "could not catch the search index up; rebuilding it");
        rebuild_search = true;
    }
    let app = crate::http::app(services.clone());
    let bodyless = crate::http::app_without_body_guard(services.clone());

    let (stop, stop_rx) = watch::channel(false);
    let serve_task = tokio::spawn(crate::http::serve::serve(
        listener,
        app,
        bodyless,
        stop_rx.clone(),
    ));
    let flush_task = tokio::spawn(flush_last_seen(services.clone(), stop_rx.clone()));
    let s = services.clone();
    tokio::spawn(async move {
        // Jobs a crash interrupted run again; a resumed reindex also
        // rebuilds the index.
        let reindexing = crate::services::jobs::resume(&s).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e.message(), "could not resume interrupted jobs");
            false
        });
        if rebuild_search
            && !reindexing
            && let Err(e) = crate::services::search::reindex(&s, None).await
        {
            tracing::warn!(error = %e.message(), "could not rebuild the search index");
        }
    });
    tokio::spawn(expire_typing(services.clone(), stop_rx));
    tracing::info!(%addr, server_name = %services.server_name, "Myelin is listening");
    let c = &services.config.caches;
    tracing::info!(
        room_heads = c.room_heads,
        rooms = c.rooms,
        unread_counts = c.unread_counts,
        rate_limit_buckets = c.rate_limit_buckets,
        uia_sessions = c.uia_sessions,
        registration_nonces = c.registration_nonces,
        trusted_proxies = services.config.trusted_proxies.len(),
        "cache bounds (entries; `caches` in the config)"
    );
    Ok(RunningServer {
        addr,
        services,
        stop,
        serve_task,
        flush_task,
    })
}

/// Writes batched last-seen records every few seconds, and once more at shutdown.
async fn flush_last_seen(services: Arc<Services>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(LAST_SEEN_FLUSH_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        if let Err(e) = services.sessions.flush_last_seen().await {
            tracing::warn!(error = %e.message(), "could not write last-seen records");
        }
        // New events become durable in the search index within a few seconds.
        // An idle server also gives back the index writer's memory. Then
        // memory freed after a burst of work (and by a released index
        // writer) goes back to the system. Both block for milliseconds (a
        // commit syncs files to disk): not on a thread that serves requests.
        let search = services.search.clone();
        let housekeeping = tokio::task::spawn_blocking(move || {
            let committed = search.map(|s| s.commit_and_release_if_idle());
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only releases free heap pages.
            unsafe {
                libc::malloc_trim(0);
            }
            committed
        });
        match housekeeping.await {
            Ok(Some(Err(e))) => {
                tracing::warn!(error = %e.message(), "could not commit the search index");
            }
            Err(e) => tracing::warn!(error = %e, "the housekeeping task failed"),
            Ok(_) => {}
        }
    }
    if let Err(e) = services.sessions.flush_last_seen().await {
        tracing::warn!(error = %e.message(), "could not write last-seen records at shutdown");
    }
    if let Some(search) = &services.search {
        let _ = search.commit();
    }
}

/// Expires typing notifications once a second until shutdown.
async fn expire_typing(services: Arc<Services>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => services.ephemeral.expire_typing(),
            _ = stop.wait_for(|s| *s) => break,
        }
    }
}

impl RunningServer {
    /// Stops accepting requests, finishes in-flight ones, flushes and closes the database.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.serve_task.await;
        let _ = self.flush_task.await;
        self.services.close_storage().await;
    }

    /// Serves until `shutdown_signal` completes, then shuts down cleanly.
    pub async fn run_until(self, shutdown_signal: impl std::future::Future<Output = ()>) {
        shutdown_signal.await;
        tracing::info!("shutting down");
        self.shutdown().await;
    }
}

/// Ctrl-C or SIGTERM. Call it before the server starts, so a signal that
/// arrives while it starts up is not missed (or fatal).
pub fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| anyhow::anyhow!("cannot install a SIGTERM handler: {e}"))?;
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    })
}
