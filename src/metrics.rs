//! Prometheus metrics (a leaf every layer may import): one [`Metrics`] per
//! server, served in the text format on the `metrics.listen` listener.
//!
//! Two kinds of value: what is counted as it happens (HTTP requests and
//! their latency, committed events and group-commit sizes, group-commit
//! latency), kept in the registry's counters and histograms; and what is
//! read when scraped (cache entries, the database pool, long-polls, search
//! lag, push queue, jobs, the process), set by `Services::metrics_text`
//! just before encoding. Names follow Prometheus conventions: a `myelin_`
//! prefix, base units (`_seconds`, `_bytes`), `_total` on counters, and the
//! usual `process_*` names for the process.

use std::sync::Arc;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets, in seconds: a millisecond to a long-poll's half minute.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Database latency buckets, in seconds: 100 µs to a slow 5 s.
const DB_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0,
];

/// Group-commit sizes, in events (the writer takes at most 256).
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Every metric of one server.
pub struct Metrics {
    registry: Registry,
    /// By route template (`route`), `method` and `status`.
    pub http_requests: IntCounterVec,
    /// By route template and method.
    pub http_duration: HistogramVec,
    /// HTTP requests being answered now.
    pub http_in_flight: IntGauge,
    /// Events committed by the group-commit writer.
    pub events_persisted: IntCounter,
    /// Events per group commit.
    pub commit_batch: Histogram,
    /// How long each group commit's transaction took.
    pub commit_duration: Histogram,
    /// How long each event waited in the writer's queue before the commit
    /// that wrote it began.
    pub writer_queue_wait: Histogram,
    /// The database pool's waits and each storage function's queries
    /// (measured by `storage::observe` while metrics are served).
    pub db: Arc<DbMetrics>,
    /// Lookups that found their entry, by `cache` (set from the caches'
    /// own counts when scraped).
    pub cache_hits: IntCounterVec,
    /// Lookups that did not, by `cache`.
    pub cache_misses: IntCounterVec,
    /// Set when scraped: entries per in-memory cache (`cache`).
    pub cache_entries: IntGaugeVec,
    /// Set when scraped: bytes held, for the caches that count them.
    pub cache_bytes: IntGaugeVec,
    /// Set when scraped: the database pool's connections by `state`
    /// (`idle`, `in_use`).
    pub db_connections: IntGaugeVec,
    /// The pool's upper bound.
    pub db_connections_max: IntGauge,
    /// Set when scraped: long-polling requests parked now.
    pub sync_long_polls: IntGauge,
    /// Long-polls woken by new data (set from the stream's count).
    pub sync_wakeups: IntCounter,
    /// Set when scraped: stream positions not yet in the search index.
    pub search_lag: IntGauge,
    /// Set when scraped: notifications waiting to be sent to push gateways.
    pub push_queue: IntGauge,
    /// Push deliveries that failed (set from the push service's count).
    pub push_failures: IntCounter,
    /// Set when scraped: events waiting in memory for a transaction to an
    /// application service, by `service` id.
    pub appservice_queue: IntGaugeVec,
    /// Transactions application services acknowledged (set from the
    /// delivery's count).
    pub appservice_transactions: IntCounter,
    /// Transactions to application services that failed (each attempt).
    pub appservice_failures: IntCounter,
    /// Set when scraped: admin jobs running now, by `kind`.
    pub jobs_running: IntGaugeVec,
    /// Set when scraped: items a running job has done (events indexed,
    /// events purged), by `job` id and `kind`.
    pub job_progress: IntGaugeVec,
    /// Set when scraped, from /proc.
    pub process: ProcessMetrics,
}

/// What the storage layer measures: how long a query waited for a pool
/// connection, and how long it then took, by the storage function that
/// made it.
pub struct DbMetrics {
    /// From asking the pool for a connection to having one.
    pub acquire: Histogram,
    /// A query's time on its connection (a transaction's, from `BEGIN` to
    /// `COMMIT`), by `query`: the storage function (`events.room_events_window`).
    pub query: HistogramVec,
}

impl DbMetrics {
    fn new() -> Self {
        Self {
            acquire: histogram(
                "myelin_db_pool_acquire_seconds",
                "Time from asking the database pool for a connection to getting one.",
                DB_BUCKETS,
            ),
            query: HistogramVec::new(
                HistogramOpts::new(
                    "myelin_db_query_seconds",
                    "Time of each query on its connection (a transaction from BEGIN to COMMIT), by the storage function that made it.",
                )
                .buckets(DB_BUCKETS.to_vec()),
                &["query"],
            )
            .expect("valid metric"),
        }
    }
}

/// Hits and misses of one in-memory cache, counted as lookups happen
/// (relaxed atomics: a lookup costs two uncontended increments at most).
#[derive(Default)]
pub struct CacheLookups {
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
}

impl CacheLookups {
    /// Counts one lookup; returns `found` so it can wrap the test.
    pub fn record(&self, found: bool) -> bool {
        let counter = if found { &self.hits } else { &self.misses };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        found
    }

    /// Counts a lookup by whether it found something.
    pub fn of<T>(&self, found: Option<T>) -> Option<T> {
        self.record(found.is_some());
        found
    }

    /// (hits, misses) so far.
    pub fn get(&self) -> (u64, u64) {
        (
            self.hits.load(std::sync::atomic::Ordering::Relaxed),
            self.misses.load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}

/// The process's own figures, with the usual `process_*` names.
pub struct ProcessMetrics {
    pub rss: IntGauge,
    pub virtual_memory: IntGauge,
    pub open_fds: IntGauge,
    pub max_fds: IntGauge,
    pub threads: IntGauge,
    pub start_time: IntGauge,
    /// A counter moved forward to the value read.
    pub cpu: prometheus::Counter,
}

impl ProcessMetrics {
    fn new() -> Self {
        Self {
            rss: gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
            ),
            virtual_memory: gauge(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
            ),
            open_fds: gauge("process_open_fds", "Number of open file descriptors."),
            max_fds: gauge(
                "process_max_fds",
                "Maximum number of open file descriptors.",
            ),
            threads: gauge("process_threads", "Number of OS threads in the process."),
            start_time: gauge(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds.",
            ),
            cpu: prometheus::Counter::new(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent, in seconds.",
            )
            .expect("valid metric"),
        }
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.rss.clone()),
            Box::new(self.virtual_memory.clone()),
            Box::new(self.open_fds.clone()),
            Box::new(self.max_fds.clone()),
            Box::new(self.threads.clone()),
            Box::new(self.start_time.clone()),
            Box::new(self.cpu.clone()),
        ]
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let (http_requests, http_duration) = http_metrics();
        let (appservice_queue, appservice_transactions, appservice_failures) = appservice_metrics();
        let m = Self {
            http_requests,
            http_duration,
            http_in_flight: gauge(
                "myelin_http_requests_in_flight",
                "HTTP requests being answered (long-polls included).",
            ),
            events_persisted: counter(
                "myelin_events_persisted_total",
                "Room events committed to the database by the group-commit writer.",
            ),
            commit_batch: histogram(
                "myelin_event_commit_batch_size",
                "Events per group commit.",
                BATCH_BUCKETS,
            ),
            commit_duration: histogram(
                "myelin_event_commit_duration_seconds",
                "Time each group commit's transaction took.",
                LATENCY_BUCKETS,
            ),
            writer_queue_wait: histogram(
                "myelin_event_writer_queue_wait_seconds",
                "Time each event waited in the group-commit writer's queue before its commit began.",
                LATENCY_BUCKETS,
            ),
            db: Arc::new(DbMetrics::new()),
            cache_hits: counter_vec(
                "myelin_cache_hits_total",
                "Cache lookups that found their entry, by cache (service.cache).",
            ),
            cache_misses: counter_vec(
                "myelin_cache_misses_total",
                "Cache lookups that did not find their entry, by cache (service.cache).",
            ),
            cache_entries: gauge_vec(
                "myelin_cache_entries",
                "Entries held by each in-memory cache (service.cache).",
                &["cache"],
            ),
            cache_bytes: gauge_vec(
                "myelin_cache_bytes",
                "Bytes held by the in-memory caches that count them (service.cache).",
                &["cache"],
            ),
            db_connections: gauge_vec(
                "myelin_db_pool_connections",
                "Database pool connections, by state (idle, in_use).",
                &["state"],
            ),
            db_connections_max: gauge(
                "myelin_db_pool_max_connections",
                "The database pool's upper bound on connections.",
            ),
            sync_long_polls: gauge(
                "myelin_sync_long_polls",
                "Long-polling /sync (and /events, sliding sync) requests parked now.",
            ),
            sync_wakeups: counter(
                "myelin_sync_wakeups_total",
                "Parked long-polls woken because one of their topics moved.",
            ),
            search_lag: gauge(
                "myelin_search_index_lag_events",
                "Stream positions written but not yet in the search index.",
            ),
            push_queue: gauge(
                "myelin_push_queue_depth",
                "Notifications waiting to be sent to push gateways.",
            ),
            push_failures: counter(
                "myelin_push_failures_total",
                "Push gateway deliveries that failed (each attempt).",
            ),
            appservice_queue,
            appservice_transactions,
            appservice_failures,
            jobs_running: gauge_vec(
                "myelin_jobs_running",
                "Admin jobs running now, by kind.",
                &["kind"],
            ),
            job_progress: gauge_vec(
                "myelin_job_processed_items",
                "Items a running admin job has done so far (events indexed, events purged), by job id and kind.",
                &["job", "kind"],
            ),
            process: ProcessMetrics::new(),
            registry,
        };
        m.register_all();
        m
    }

    fn register_all(&self) {
        let all: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.http_requests.clone()),
            Box::new(self.http_duration.clone()),
            Box::new(self.http_in_flight.clone()),
            Box::new(self.events_persisted.clone()),
            Box::new(self.commit_batch.clone()),
            Box::new(self.commit_duration.clone()),
            Box::new(self.writer_queue_wait.clone()),
            Box::new(self.db.acquire.clone()),
            Box::new(self.db.query.clone()),
            Box::new(self.cache_hits.clone()),
            Box::new(self.cache_misses.clone()),
            Box::new(self.cache_entries.clone()),
            Box::new(self.cache_bytes.clone()),
            Box::new(self.db_connections.clone()),
            Box::new(self.db_connections_max.clone()),
            Box::new(self.sync_long_polls.clone()),
            Box::new(self.sync_wakeups.clone()),
            Box::new(self.search_lag.clone()),
            Box::new(self.push_queue.clone()),
            Box::new(self.push_failures.clone()),
            Box::new(self.appservice_queue.clone()),
            Box::new(self.appservice_transactions.clone()),
            Box::new(self.appservice_failures.clone()),
            Box::new(self.jobs_running.clone()),
            Box::new(self.job_progress.clone()),
        ];
        for c in all.into_iter().chain(self.process.collectors()) {
            self.registry
                .register(c)
                .expect("each metric is registered once");
        }
    }

    /// Every metric in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "could not encode the metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// Moves a counter forward to `value` (a total counted elsewhere).
    pub fn advance_to(counter: &IntCounter, value: u64) {
        let now = counter.get();
        if value > now {
            counter.inc_by(value - now);
        }
    }

    /// Reads this process's memory, descriptors, threads and CPU time
    /// from /proc (Linux; elsewhere nothing is set).
    pub fn sample_process(&self) {
        #[cfg(target_os = "linux")]
        if let Some(p) = process::read() {
            let m = &self.process;
            m.rss.set(p.rss_bytes);
            m.virtual_memory.set(p.virtual_bytes);
            m.threads.set(p.threads);
            m.start_time.set(p.start_time_secs);
            m.open_fds.set(p.open_fds);
            m.max_fds.set(p.max_fds);
            let now = m.cpu.get();
            if p.cpu_seconds > now {
                m.cpu.inc_by(p.cpu_seconds - now);
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("valid metric")
}

/// Application services: events queued in memory by service, and the
/// transactions acknowledged and failed.
fn appservice_metrics() -> (IntGaugeVec, IntCounter, IntCounter) {
    (
        gauge_vec(
            "myelin_appservice_queued_events",
            "Events waiting in memory for a transaction to an application service, by service id.",
            &["service"],
        ),
        counter(
            "myelin_appservice_transactions_total",
            "Transactions application services acknowledged.",
        ),
        counter(
            "myelin_appservice_transaction_failures_total",
            "Transactions to application services that failed (each attempt).",
        ),
    )
}

/// Requests by route template, method and status; latency by route
/// template and method.
fn http_metrics() -> (IntCounterVec, HistogramVec) {
    let http_requests = IntCounterVec::new(
        Opts::new(
            "myelin_http_requests_total",
            "HTTP requests answered, by route template, method and status.",
        ),
        &["route", "method", "status"],
    )
    .expect("valid metric");
    let http_duration = HistogramVec::new(
        HistogramOpts::new(
            "myelin_http_request_duration_seconds",
            "Time from a request's headers to its response's headers, by route template and method.",
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
        &["route", "method"],
    )
    .expect("valid metric");
    (http_requests, http_duration)
}

/// A counter by `cache`.
fn counter_vec(name: &str, help: &str) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), &["cache"]).expect("valid metric")
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("valid metric")
}

fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("valid metric")
}

/// The process's own figures, from /proc/self.
#[cfg(target_os = "linux")]
mod process {
    pub struct Process {
        pub rss_bytes: i64,
        pub virtual_bytes: i64,
        pub threads: i64,
        pub start_time_secs: i64,
        pub cpu_seconds: f64,
        pub open_fds: i64,
        pub max_fds: i64,
    }

    pub fn read() -> Option<Process> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) may hold spaces: fields are counted
        // after its closing parenthesis, from field 3 (state) on.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| -> Option<i64> { fields.get(n - 3)?.parse().ok() };
        // SAFETY: sysconf only reads a system constant.
        #[allow(unsafe_code)]
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let ticks = ticks.max(1) as f64;
        let utime = field(14)?;
        let stime = field(15)?;
        let threads = field(20)?;
        let start_ticks = field(22)?;
        let vsize = field(23)?;
        let rss_pages = field(24)?;
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<i64>().ok())?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as i64;
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()?
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
            .unwrap_or(0);
        Some(Process {
            rss_bytes: rss_pages * page,
            virtual_bytes: vsize,
            threads,
            start_time_secs: boot + (start_ticks as f64 / ticks) as i64,
            cpu_seconds: (utime + stime) as f64 / ticks,
            open_fds,
            max_fds,
        })
    }
}
