//! What operators watch: the health check and the metrics' scrape-time
//! values (`crate::metrics` holds the metrics; this fills in those read
//! when scraped, from the services that hold them).

use std::time::Duration;

use crate::error::{MatrixError, Result};
use crate::metrics::Metrics;

use super::Services;

/// How long the health check waits for the database.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// The server's metrics; queries are timed only while they are served
/// (`metrics.listen`).
pub(super) fn new_metrics(
    config: &crate::config::Config,
    storage: &crate::storage::Storage,
) -> std::sync::Arc<Metrics> {
    let metrics = std::sync::Arc::new(Metrics::new());
    if config.metrics.listen.is_some() {
        storage.observe_with(metrics.db.clone());
    }
    metrics
}

impl Services {
    /// Whether the server can serve: the database answers a read within
    /// [`HEALTH_TIMEOUT`].
    pub async fn health(&self) -> Result<()> {
        match tokio::time::timeout(HEALTH_TIMEOUT, self.storage.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "health check: the database did not answer");
                Err(MatrixError::internal("the database did not answer"))
            }
            Err(_) => {
                tracing::warn!("health check: the database did not answer in time");
                Err(MatrixError::internal("the database did not answer in time"))
            }
        }
    }

    /// Every metric in the Prometheus text format, with the values read at
    /// scrape time filled in first.
    pub async fn metrics_text(&self) -> String {
        let m = &self.metrics;
        for (cache, n) in self.cache_report() {
            // A cache that counts its bytes reports them as `<cache>.bytes`.
            match cache.strip_suffix(".bytes") {
                Some(cache) => m.cache_bytes.with_label_values(&[cache]).set(n as i64),
                None => m
                    .cache_entries
                    .with_label_values(&[cache.as_str()])
                    .set(n as i64),
            }
        }
        for (cache, (hits, misses)) in self.cache_lookup_report() {
            Metrics::advance_to(&m.cache_hits.with_label_values(&[cache.as_str()]), hits);
            Metrics::advance_to(&m.cache_misses.with_label_values(&[cache.as_str()]), misses);
        }
        let (size, idle, max) = self.storage.pool_stats();
        let idle = idle as i64;
        m.db_connections.with_label_values(&["idle"]).set(idle);
        m.db_connections
            .with_label_values(&["in_use"])
            .set((i64::from(size) - idle).max(0));
        m.db_connections_max.set(i64::from(max));
        m.sync_long_polls.set(self.stream.waiting() as i64);
        Metrics::advance_to(&m.sync_wakeups, self.stream.wakeups());
        m.search_lag
            .set(self.search.as_ref().map_or(0, |s| s.pending_count() as i64));
        match self.storage.push_queue_len().await {
            Ok(n) => m.push_queue.set(n),
            Err(e) => tracing::warn!(error = %e, "metrics: could not count the push queue"),
        }
        Metrics::advance_to(
            &m.push_failures,
            self.pushers
                .failures
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        for (service, n) in self.as_delivery.queue_depths() {
            m.appservice_queue
                .with_label_values(&[service.as_str()])
                .set(n as i64);
        }
        let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        Metrics::advance_to(&m.appservice_transactions, count(&self.as_delivery.sent));
        Metrics::advance_to(&m.appservice_failures, count(&self.as_delivery.failures));
        m.jobs_running.reset();
        m.job_progress.reset();
        for (id, kind, processed) in self.jobs.running() {
            m.jobs_running.with_label_values(&[kind]).inc();
            m.job_progress
                .with_label_values(&[id.as_str(), kind])
                .set(processed as i64);
        }
        m.sample_process();
        m.encode()
    }
}
