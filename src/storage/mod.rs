//! Storage: one schema and one set of SQL queries for SQLite and PostgreSQL,
//! through sqlx's `Any` driver. Queries use `$1`-style placeholders, which both
//! backends accept. The few dialect differences live in [`dialect`].
//!
//! Each submodule adds the queries of one area (`accounts`, `devices`, ...) as
//! methods on [`Storage`]; services call them, handlers never do.

mod account_data;
pub mod accounts;
pub mod admin_users;
mod aliases;
pub mod appservices;
mod batch;
mod checkpoint;
pub mod copy;
pub mod cross_signing;
pub mod devices;
pub mod dialect;
pub mod e2e_keys;
pub mod events;
pub mod expiry;
mod filters;
pub mod jobs;
pub mod key_backup;
pub mod media;
pub mod media_admin;
mod migrations;
pub mod observe;
mod openid;
mod profiles;
pub mod purge;
pub mod pushers;
mod registration_tokens;
pub mod remote_devices;
pub mod reports;
mod rows;
pub mod server_keys;
pub mod threads;
pub mod to_device;
pub mod url_previews;

pub use account_data::{AccountDataRow, PresenceRow, ReceiptRow};
pub use accounts::{AccountRow, AccountType};
pub use aliases::DirectoryUserRow;
pub use devices::DeviceRow;
pub use dialect::Dialect;
pub use observe::{Db, Tx};
pub use profiles::ProfileRow;
pub use registration_tokens::RegistrationTokenRow;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};

/// The sizes a statement with a variable number of parameters (an `IN`
/// list, a `UNION ALL` per room) is padded to, so that a handful of
/// statement texts serve every call and stay in each connection's
/// statement cache instead of being parsed on every call.
pub(crate) const PADDED_SIZES: [usize; 5] = [1, 4, 16, 64, 256];
/// The largest of [`PADDED_SIZES`]: longer lists take several statements.
pub(crate) const PADDED_MAX: usize = 256;

/// The padded size for `n` items (`n` > 0), at most `max` (one of
/// [`PADDED_SIZES`]).
pub(crate) fn padded_len(n: usize, max: usize) -> usize {
    PADDED_SIZES
        .iter()
        .copied()
        .find(|s| *s >= n.min(max))
        .unwrap_or(max)
}

/// `items` cut into statements: each chunk with the padded size its
/// statement has (the last chunk is padded up; see [`padded_ids`]).
pub(crate) fn padded_chunks<T>(items: &[T], max: usize) -> impl Iterator<Item = (&[T], usize)> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let size = padded_len(rest.len(), max);
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        Some((chunk, size))
    })
}

/// The ids of a chunk, then `""` (an id that matches nothing) up to `size`.
pub(crate) fn padded_ids<'a>(ids: &'a [&'a str], size: usize) -> impl Iterator<Item = &'a str> {
    ids.iter()
        .copied()
        .chain(std::iter::repeat_n("", size.saturating_sub(ids.len())))
}

/// A `LIKE ... ESCAPE '\'` pattern matching values that contain `term`
/// (lower-cased) literally: `%`, `_` and `\` in it match only themselves.
pub(crate) fn like_contains(term: &str) -> String {
    format!(
        "%{}%",
        term.to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    )
}

/// `$first, $first+1, ...`: `n` numbered placeholders.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `string_agg` of `fields` (SQL text expressions) over the rows: one value
/// with fields split by [`events::FIELD_SEP`] and rows by
/// [`events::ROW_SEP`], optionally ordered. A row crossing from sqlx's
/// SQLite thread is a thread hand-off; a packed read is one (see
/// [`unpack`]).
pub(crate) fn packed_column(fields: &[&str], order_by: &str) -> String {
    let field = format!(" || '{}' || ", events::FIELD_SEP);
    let order = if order_by.is_empty() {
        String::new()
    } else {
        format!(" ORDER BY {order_by}")
    };
    format!(
        "string_agg({}, '{}'{order})",
        fields.join(&field),
        events::ROW_SEP
    )
}

/// The records of a packed read ([`packed_column`]) of `count` rows of `N`
/// fields each. `None` when the text does not split into exactly that (a
/// stored value holding a separator): the caller then reads rows.
pub(crate) fn unpack<const N: usize>(packed: Option<&str>, count: i64) -> Option<Vec<[&str; N]>> {
    let Some(packed) = packed else {
        return (count == 0).then(Vec::new);
    };
    let mut out = Vec::with_capacity(usize::try_from(count).ok()?);
    for record in packed.split(events::ROW_SEP) {
        let mut fields = record.split(events::FIELD_SEP);
        let mut row = [""; N];
        for slot in &mut row {
            *slot = fields.next()?;
        }
        if fields.next().is_some() {
            return None;
        }
        out.push(row);
    }
    (i64::try_from(out.len()).ok()? == count).then_some(out)
}

#[derive(Clone)]
pub struct Storage {
    pool: AnyPool,
    dialect: Dialect,
    /// Bumped after every change to access tokens or to the account fields
    /// a [`Requester`] carries; a cache of resolved tokens keeps an entry only
    /// while this has not moved since the entry was read.
    auth_epoch: Arc<AtomicU64>,
    /// Held by every handle; background tasks of the storage end when the
    /// last handle goes.
    alive: Arc<()>,
    /// The SQLite checkpoint task (`checkpoint`), and what stops it.
    checkpointer: Arc<parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>>,
    stop_checkpointer: Arc<tokio::sync::Notify>,
    /// Set while metrics are served: what [`Db`] and [`Tx`] time.
    observed: Arc<std::sync::OnceLock<Arc<crate::metrics::DbMetrics>>>,
}

impl Storage {
    /// Connects (creating the SQLite file if needed) and runs pending migrations.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        let schedule = Some(checkpoint::Schedule::default());
        Self::connect_with(url, max_connections, schedule, i64::MAX).await
    }

    /// [`Storage::connect`], with the SQLite checkpoint task on the given
    /// schedule (or without it), migrated up to schema version `upto`.
    async fn connect_with(
        url: &str,
        max_connections: u32,
        checkpoints: Option<checkpoint::Schedule>,
        upto: i64,
    ) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let dialect = Dialect::from_url(url)?;
        let url = dialect.normalize_url(url);
        let options = AnyConnectOptions::from_str(&url)?
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(2));
        let connections = dialect.pool_size(max_connections);
        tracing::info!(connections, "database pool");
        let pool = AnyPoolOptions::new()
            .max_connections(connections)
            .test_before_acquire(dialect.test_before_acquire())
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    for pragma in dialect.connection_setup() {
                        conn.execute(*pragma).await?;
                    }
                    if let Some(kib) = dialect.cache_kib(connections) {
                        let pragma = format!("PRAGMA cache_size = -{kib}");
                        conn.execute(sqlx::AssertSqlSafe(pragma)).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let storage = Self {
            pool,
            dialect,
            auth_epoch: Arc::new(AtomicU64::new(0)),
            alive: Arc::new(()),
            checkpointer: Arc::default(),
            stop_checkpointer: Arc::default(),
            observed: Arc::default(),
        };
        if dialect == Dialect::Sqlite && !storage.sqlite_has_qpsg().await? {
            tracing::warn!(
                "SQLite was built without SQLITE_ENABLE_QPSG (see .cargo/config.toml): \
                 statements with a bound LIMIT are prepared again on every execution"
            );
        }
        migrations::run(&storage, upto).await?;
        if dialect.checkpoints_in_background()
            && let Some(schedule) = checkpoints
        {
            let alive = Arc::downgrade(&storage.alive);
            let stop = storage.stop_checkpointer.clone();
            let task = checkpoint::spawn(&url, alive, stop, storage.pool.clone(), schedule).await?;
            *storage.checkpointer.lock() = Some(task);
        }
        Ok(storage)
    }

    /// See [`Storage::auth_epoch`] (the field). Read it before reading a
    /// token: an entry read under an older value is stale.
    pub fn auth_epoch(&self) -> u64 {
        self.auth_epoch.load(Ordering::Acquire)
    }

    /// Runs a change to access tokens or account flags, then moves the auth
    /// epoch (whether or not the change went through).
    pub(crate) async fn changing_auth<T>(
        &self,
        change: impl Future<Output = sqlx::Result<T>>,
    ) -> sqlx::Result<T> {
        let result = change.await;
        self.auth_epoch.fetch_add(1, Ordering::AcqRel);
        result
    }

    /// Whether the SQLite library was built with the query planner stability
    /// guarantee on, so cached statements stay prepared whatever is bound
    /// to their `LIMIT` (set in `.cargo/config.toml`).
    pub async fn sqlite_has_qpsg(&self) -> sqlx::Result<bool> {
        let found: Option<(String,)> = sqlx::query_as(
            "SELECT compile_options FROM pragma_compile_options WHERE compile_options = 'ENABLE_QPSG'",
        )
        .fetch_optional(self.pool())
        .await?;
        Ok(found.is_some())
    }

    /// The pool as an executor: every query goes through here (or
    /// [`Storage::begin`]), timed by the calling function's name while
    /// metrics are served ([`observe`]).
    #[track_caller]
    pub fn pool(&self) -> Db<'_> {
        Db::new(
            &self.pool,
            self.observed.get().map(|m| &**m),
            std::panic::Location::caller(),
        )
    }

    /// Times the pool's waits and every query from now on (once; the
    /// server does it when `metrics.listen` is set).
    pub fn observe_with(&self, metrics: Arc<crate::metrics::DbMetrics>) {
        let _ = self.observed.set(metrics);
    }

    /// Whether the database answers: a read of the migrations table (a
    /// round trip through the pool, so a database that refuses
    /// connections, or a SQLite file that cannot be read, fails it).
    pub async fn ping(&self) -> sqlx::Result<()> {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM schema_migrations")
            .fetch_one(self.pool())
            .await
            .map(|_| ())
    }

    /// The pool's connections: open, idle, and the upper bound.
    pub fn pool_stats(&self) -> (u32, usize, u32) {
        (
            self.pool.size(),
            self.pool.num_idle(),
            self.pool.options().get_max_connections(),
        )
    }

    /// Begins a write transaction. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so a transaction that reads before writing waits
    /// for a concurrent writer instead of failing with "database is locked".
    #[track_caller]
    pub fn begin(&self) -> impl Future<Output = sqlx::Result<Tx>> + Send + '_ {
        self.pool().begin_with(self.dialect.begin_write())
    }

    /// A statement whose text is built per call (an `IN` list padded to one
    /// of [`PADDED_SIZES`]), with its placeholders as the dialect binds them
    /// fastest ([`Dialect::positional`]).
    pub(crate) fn list_query<'q>(
        &self,
        sql: String,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
        let sql = match self.dialect.positional(&sql) {
            std::borrow::Cow::Borrowed(_) => sql,
            std::borrow::Cow::Owned(rewritten) => rewritten,
        };
        sqlx::query(sqlx::AssertSqlSafe(sql))
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub async fn close(&self) {
        self.stop_checkpointer.notify_one();
        let checkpointer = self.checkpointer.lock().take();
        if let Some(task) = checkpointer {
            let _ = task.await;
        }
        self.pool.close().await;
    }
}

/// Creates a PostgreSQL database (used by tests and tools that set up a fresh one).
pub async fn create_postgres_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    postgres_admin_statement(admin_url, name, |name| format!("CREATE DATABASE {name}")).await
}

/// Drops a PostgreSQL database, ending any sessions still connected to it
/// (`WITH (FORCE)`, PostgreSQL 13 and later). Missing databases are no error.
pub async fn drop_postgres_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    postgres_admin_statement(admin_url, name, |name| {
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    })
    .await
}

async fn postgres_admin_statement(
    admin_url: &str,
    name: &str,
    statement: impl FnOnce(&str) -> String,
) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    anyhow::ensure!(
        name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "database name must be alphanumeric"
    );
    let mut conn = AnyConnectOptions::from_str(admin_url)?.connect().await?;
    sqlx::query(sqlx::AssertSqlSafe(statement(name)))
        .execute(&mut conn)
        .await?;
    Ok(())
}

/// A PostgreSQL database that lives as long as this value: made by
/// [`ScratchPostgresDatabase::create`], dropped (with whatever is still
/// connected to it) when the value is. The test suites give every server one,
/// so a run leaves no databases behind to fill the disk.
pub struct ScratchPostgresDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl ScratchPostgresDatabase {
    /// Creates database `name` through `admin_url` (a role that may create
    /// databases).
    pub async fn create(admin_url: &str, name: &str) -> anyhow::Result<Self> {
        create_postgres_database(admin_url, name).await?;
        let mut url = url::Url::parse(admin_url)?;
        url.set_path(name);
        Ok(Self {
            admin_url: admin_url.to_owned(),
            name: name.to_owned(),
            url: url.to_string(),
        })
    }

    /// The URL that connects to this database.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for ScratchPostgresDatabase {
    /// Drops the database on a thread of its own with its own runtime: `drop`
    /// may run inside a runtime (the end of a `#[tokio::test]`), where nothing
    /// may block on a future. A failure is printed, never a panic (this may
    /// run while a failed test unwinds).
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(drop_postgres_database(&admin_url, &name))
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop scratch database {}: {e:#}", self.name);
        }
    }
}

/// Milliseconds since the Unix epoch, from the system clock: only for what
/// no service decides (the migrations' `applied_ts`, the signing key's
/// validity). Services read their [`crate::clock::Clock`] and pass the time
/// to storage.
pub fn now_ms() -> i64 {
    use crate::clock::Clock;
    crate::clock::SystemClock.now_ms()
}

#[cfg(test)]
impl Storage {
    /// A fresh SQLite storage in a temporary directory (kept alive by the
    /// returned guard) with a table `t (a INTEGER PRIMARY KEY)`.
    pub(crate) async fn scratch_with_table_t() -> (tempfile::TempDir, Storage) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let storage = Storage::connect(&url, 1).await.unwrap();
        sqlx::query("CREATE TABLE t (a INTEGER PRIMARY KEY)")
            .execute(storage.pool())
            .await
            .unwrap();
        (dir, storage)
    }
}

#[cfg(test)]
mod tests {
    use super::Storage;

    /// The bundled SQLite must keep statements with a bound LIMIT prepared
    /// (`.cargo/config.toml`); without the flag every timeline read parses
    /// its statement again.
    #[tokio::test]
    async fn bundled_sqlite_has_the_query_planner_stability_guarantee() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let storage = Storage::connect(&url, 1).await.unwrap();
        assert!(storage.sqlite_has_qpsg().await.unwrap());
    }

    fn packed(rows: &[&[&str]]) -> String {
        rows.iter()
            .map(|r| r.join(&super::events::FIELD_SEP.to_string()))
            .collect::<Vec<_>>()
            .join(&super::events::ROW_SEP.to_string())
    }

    #[test]
    fn unpack_splits_rows_of_the_expected_shape() {
        let text = packed(&[&["!a:x", "join", "4"], &["!b:x", "", "7"]]);
        let rows = super::unpack::<3>(Some(&text), 2).expect("splits");
        assert_eq!(rows, vec![["!a:x", "join", "4"], ["!b:x", "", "7"]]);
        assert_eq!(super::unpack::<3>(None, 0), Some(Vec::new()));
    }

    /// A stored value holding a separator changes the row or field count:
    /// the caller is told to read rows instead of getting wrong ones.
    #[test]
    fn unpack_refuses_text_that_does_not_match_the_row_count() {
        let sep = super::events::FIELD_SEP.to_string();
        let odd_field = packed(&[&[&format!("!a{sep}:x"), "join", "4"]]);
        assert_eq!(super::unpack::<3>(Some(&odd_field), 1), None);
        let row = super::events::ROW_SEP;
        let smuggled = packed(&[&[&format!("!a:x{sep}join{sep}1{row}!b:x"), "join", "4"]]);
        assert_eq!(super::unpack::<3>(Some(&smuggled), 1), None);
        assert_eq!(super::unpack::<3>(None, 1), None);
        let short = packed(&[&["!a:x", "join"]]);
        assert_eq!(super::unpack::<3>(Some(&short), 1), None);
    }
}
