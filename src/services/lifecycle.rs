//! Background work: every task the services run besides requests starts in
//! [`Services::start`] and stops in [`Services::shutdown`], in one order.
//!
//! A service that needs a task registers it in the registry
//! (`workers.rs`, `Workers::spawn`) with the [`Stage`] at which it
//! stops; admin jobs go through `Workers::spawn_job`. Nothing in `services` calls `tokio::spawn` for
//! work that outlives a request.
//!
//! What runs, by stage (see [`Services::start`]):
//! - jobs: admin jobs (room deletion, history purge, reindex) and, at
//!   start, resuming interrupted jobs / rebuilding the search index.
//!   Stopped at shutdown between two steps (`workers::step_boundary`, or
//!   cut off when a step outlasts the grace): each is kept in the `jobs`
//!   table and runs again at the next start.
//! - [`Stage::Drain`]: the group-commit writer (`rooms/writer.rs`). It stops
//!   taking events and writes every one already queued.
//! - [`Stage::Subscribers`]: the pipeline subscribers' own tasks (search
//!   indexing, `search::Indexer`). Each finishes what the drained writer
//!   published to it.
//! - [`Stage::Flush`]: periodic upkeep (last-seen records, typing expiry,
//!   ephemeral messages' expiry (`expiry.rs`), search commits and giving memory back, deleting
//!   finished jobs past their week (`jobs::KEEP_FINISHED`), the cache report). Each makes
//!   a final pass when told to stop: last-seen records are written and the
//!   search index committed after the writer has drained.
//! - The database's own WAL checkpointer (`storage/checkpoint.rs`) starts
//!   with the connection and stops when the database closes, last.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::Services;
use super::expiry::MessageExpiry;
use super::jobs;
use super::sessions::LAST_SEEN_FLUSH_INTERVAL;
use super::workers::{CacheSizes, Stage, Stop};

/// How often the cache report is logged (at debug level).
const CACHE_REPORT_INTERVAL: Duration = Duration::from_secs(60);

impl Services {
    /// Starts every background task. Call once, after [`Services::new`]
    /// (and after the search index has caught up). `rebuild_search` asks
    /// for the index to be rebuilt unless a resumed reindex does it;
    /// `release_memory` runs after each periodic search commit (the
    /// server's `malloc_trim`).
    pub fn start(self: &Arc<Self>, rebuild_search: bool, release_memory: fn()) {
        self.rooms.start(&self.workers);
        self.media.start(&self.workers);
        if let Some(indexer) = &self.indexer {
            indexer.start(&self.workers);
        }
        super::pushers::Pushers::start(self, &self.workers);
        super::appservice_txns::Delivery::start(self, &self.workers);
        let s = self.clone();
        self.workers.spawn("last-seen flush", Stage::Flush, |stop| {
            flush_last_seen(s, stop)
        });
        let s = self.clone();
        self.workers
            .spawn("typing expiry", Stage::Flush, |stop| expire_typing(s, stop));
        if self.config.presence.enabled {
            let s = self.clone();
            self.workers
                .spawn("presence timeout", Stage::Flush, |stop| {
                    expire_presence(s, stop)
                });
        }
        if let Some(expiry) = self.expiry.clone() {
            let s = self.clone();
            self.workers.spawn("message expiry", Stage::Flush, |stop| {
                expire_messages(s, expiry, stop)
            });
        }
        let s = self.clone();
        self.workers.spawn("upkeep", Stage::Flush, move |stop| {
            upkeep(s, release_memory, stop)
        });
        let s = self.clone();
        self.workers.spawn_job(async move {
            // Jobs a crash interrupted run again; a resumed reindex also
            // rebuilds the index.
            let reindexing = super::jobs::resume(&s).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e.message(), "could not resume interrupted jobs");
                false
            });
            if rebuild_search
                && !reindexing
                && let Err(e) = super::search::reindex(&s, None).await
            {
                tracing::warn!(error = %e.message(), "could not rebuild the search index");
            }
        });
    }

    /// Starts an admin job (see `Workers::spawn_job`).
    pub fn spawn_job<Fut>(&self, job: Fut) -> JoinHandle<()>
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.workers.spawn_job(job)
    }

    /// The running workers' names and stages.
    pub fn workers(&self) -> Vec<(&'static str, Stage)> {
        self.workers.names()
    }

    /// Stops the background work in order and closes the database. Call it
    /// once no request is being served any more: jobs stop at their next
    /// step boundary (those still in a step after `job_grace` are cut off;
    /// all resume at the next start), the writer drains its queue, the
    /// upkeep workers make their final pass (last-seen records, search
    /// commit), then the database closes (and with it the WAL checkpointer).
    pub async fn shutdown(&self, job_grace: Duration) {
        self.workers.stop_all(job_grace).await;
        self.storage.close().await;
    }

    /// Every in-memory cache and table with its number of entries, by
    /// service (`service.cache`).
    pub fn cache_report(&self) -> Vec<(String, usize)> {
        self.caches()
            .into_iter()
            .flat_map(|(service, caches)| {
                caches
                    .cache_sizes()
                    .into_iter()
                    .map(move |(cache, n)| (format!("{service}.{cache}"), n))
            })
            .collect()
    }

    /// The hits and misses of every cache that counts them, by service
    /// (`service.cache`).
    pub fn cache_lookup_report(&self) -> Vec<(String, (u64, u64))> {
        self.caches()
            .into_iter()
            .flat_map(|(service, caches)| {
                caches
                    .cache_lookups()
                    .into_iter()
                    .map(move |(cache, l)| (format!("{service}.{cache}"), l.get()))
            })
            .collect()
    }

    /// Every service that keeps caches, by name.
    fn caches(&self) -> Vec<(&str, &dyn CacheSizes)> {
        let mut services: Vec<(&str, &dyn CacheSizes)> = vec![
            ("rooms", &self.rooms),
            ("sessions", &*self.sessions),
            ("account_data", &self.account_data),
            ("ephemeral", &self.ephemeral),
            ("unread", &*self.unread),
            ("pushers", &*self.pushers),
            ("appservice_delivery", &*self.as_delivery),
            ("stream", &*self.stream),
            ("jobs", &self.jobs),
            ("uia", &self.uia),
            ("presence", &self.presence),
            ("to_device", &self.to_device),
            ("e2e_keys", &self.e2e_keys),
            ("sliding_sync", &self.sliding),
        ];
        if let Some(s) = &self.shared_secret {
            services.push(("shared_secret", s));
        }
        if let Some(l) = &self.client_limiter {
            services.push(("client_limiter", l));
        }
        if let Some(l) = &self.login_limiter {
            services.push(("login_limiter", l));
        }
        services
    }

    /// The cache report as one line: `rooms.heads=3 sessions.tokens=1 ...`.
    pub fn cache_report_line(&self) -> String {
        let report = self.cache_report();
        let parts: Vec<String> = report.iter().map(|(k, n)| format!("{k}={n}")).collect();
        parts.join(" ")
    }
}

/// Writes batched last-seen records every few seconds, and once more at
/// shutdown.
async fn flush_last_seen(services: Arc<Services>, mut stop: Stop) {
    let mut tick = tokio::time::interval(LAST_SEEN_FLUSH_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.requested() => break,
        }
        if let Err(e) = services.sessions.flush_last_seen().await {
            tracing::warn!(error = %e.message(), "could not write last-seen records");
        }
    }
    if let Err(e) = services.sessions.flush_last_seen().await {
        tracing::warn!(error = %e.message(), "could not write last-seen records at shutdown");
    }
}

/// Expires typing notifications once a second.
async fn expire_typing(services: Arc<Services>, mut stop: Stop) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => services.ephemeral.expire_typing(),
            () = stop.requested() => break,
        }
    }
}

/// Sets offline, once a second, the users who stopped syncing (see
/// `presence::SYNC_TIMEOUT_MS`); first, those the database holds as
/// present get their timeout.
async fn expire_presence(services: Arc<Services>, mut stop: Stop) {
    if let Err(e) = services.presence.load_present().await {
        tracing::warn!(error = %e.message(), "could not read who is present");
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.requested() => break,
        }
        if let Err(e) = services.presence.expire_idle().await {
            tracing::warn!(error = %e.message(), "could not time presence out");
        }
    }
}

/// Prunes ephemeral messages whose time came, looking once a second
/// (against the services' clock) at the earliest time known.
async fn expire_messages(services: Arc<Services>, expiry: Arc<MessageExpiry>, mut stop: Stop) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.requested() => break,
        }
        if expiry.due(services.clock.now_ms())
            && let Err(e) = super::expiry::expire_due(&services, &expiry).await
        {
            tracing::warn!(error = %e.message(), "could not expire ephemeral messages");
        }
    }
}

/// Every [`LAST_SEEN_FLUSH_INTERVAL`]: a search commit (new events become
/// durable in the index within a few seconds; an idle server also gives
/// back the index writer's memory), then `release_memory` (memory freed
/// after a burst of work, and by a released index writer, goes back to the
/// system). Both block for milliseconds (a commit syncs files to disk): not
/// on a thread that serves requests. Once a minute, the cache report at
/// debug level. Every [`jobs::PRUNE_EVERY`] of the server's clock (and at
/// the first tick), finished jobs past [`jobs::KEEP_FINISHED`] are deleted.
/// At shutdown, after the writer has drained, a last commit.
async fn upkeep(services: Arc<Services>, release_memory: fn(), mut stop: Stop) {
    let mut tick = tokio::time::interval(LAST_SEEN_FLUSH_INTERVAL);
    let mut report = tokio::time::interval(CACHE_REPORT_INTERVAL);
    report.tick().await;
    let mut pruned_at: Option<i64> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = report.tick() => {
                tracing::debug!(caches = %services.cache_report_line(), "cache sizes (entries)");
                continue;
            }
            () = stop.requested() => break,
        }
        let search = services.search.clone();
        let housekeeping = tokio::task::spawn_blocking(move || {
            let committed = search.map(|s| s.commit_and_release_if_idle());
            release_memory();
            committed
        });
        match housekeeping.await {
            Ok(Some(Err(e))) => {
                tracing::warn!(error = %e.message(), "could not commit the search index");
            }
            Err(e) => tracing::warn!(error = %e, "the housekeeping task failed"),
            Ok(_) => {}
        }
        let now = services.clock.now_ms();
        if pruned_at.is_none_or(|at| now.saturating_sub(at) >= jobs::PRUNE_EVERY.as_millis() as i64)
        {
            pruned_at = Some(now);
            match services.jobs.prune().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(jobs = n, "deleted finished jobs older than a week"),
                Err(e) => tracing::warn!(error = %e.message(), "could not delete old jobs"),
            }
        }
    }
    if let Some(search) = &services.search
        && let Err(e) = search.commit()
    {
        tracing::warn!(error = %e.message(), "could not commit the search index at shutdown");
    }
}
