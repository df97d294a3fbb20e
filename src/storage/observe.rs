//! Where every query passes: [`Storage::pool`](super::Storage::pool) hands
//! out a [`Db`], an executor over the pool, and
//! [`Storage::begin`](super::Storage::begin) a [`Tx`]. While metrics are
//! served (`Storage::observe_with`) they time the pool's acquire
//! (`myelin_db_pool_acquire_seconds`) and each query on its connection, or
//! each transaction from `BEGIN` to `COMMIT` (`myelin_db_query_seconds`),
//! labelled with the storage function that made it. That function is found
//! from the caller's location (both are `#[track_caller]`) in a table
//! `build.rs` writes of every function in `src/storage/`, so no call site
//! names itself and a new query is measured as it is written. Without
//! metrics, both are the pool and its transaction, untimed.

use std::ops::{Deref, DerefMut};
use std::panic::Location;
use std::time::Instant;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use sqlx::AnyConnection;
use sqlx::any::{AnyQueryResult, AnyRow, AnyTypeInfo};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, Either, Execute, Executor, SqlSafeStr};

use crate::metrics::DbMetrics;

include!(concat!(env!("OUT_DIR"), "/storage_functions.rs"));

/// The label of the storage function holding `site`: the last function
/// of its file that starts at or before it (`other` outside `src/storage`).
pub(crate) fn label_of(site: &Location<'_>) -> &'static str {
    let (file, line) = (site.file(), site.line());
    let end = FUNCTIONS.partition_point(|&(f, l, _)| (f, l) <= (file, line));
    match end.checked_sub(1).map(|i| FUNCTIONS[i]) {
        Some((f, _, label)) if f == file => label,
        _ => "other",
    }
}

/// Who times a query: the metrics and the call site.
#[derive(Clone, Copy)]
struct Timer<'a> {
    metrics: &'a DbMetrics,
    site: &'static Location<'static>,
}

impl std::fmt::Debug for Timer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(label_of(self.site))
    }
}

impl Timer<'_> {
    async fn acquire(&self, pool: &AnyPool) -> sqlx::Result<PoolConnection<Any>> {
        let asked = Instant::now();
        let conn = pool.acquire().await;
        self.metrics.acquire.observe(asked.elapsed().as_secs_f64());
        conn
    }

    /// Starts timing a query (or transaction) of this call site.
    fn start(&self) -> QueryTime {
        QueryTime(Some((
            self.metrics.query.with_label_values(&[label_of(self.site)]),
            Instant::now(),
        )))
    }
}

/// A query being timed ([`Db::time`]); recorded by [`QueryTime::done`].
pub struct QueryTime(Option<(prometheus::Histogram, Instant)>);

impl QueryTime {
    pub fn done(self) {
        if let Some((histogram, started)) = self.0 {
            histogram.observe(started.elapsed().as_secs_f64());
        }
    }
}

/// The pool as a query executor (see the module's comment).
#[derive(Clone, Copy, Debug)]
pub struct Db<'a> {
    pool: &'a AnyPool,
    timer: Option<Timer<'a>>,
}

impl<'a> Db<'a> {
    pub(super) fn new(
        pool: &'a AnyPool,
        metrics: Option<&'a DbMetrics>,
        site: &'static Location<'static>,
    ) -> Self {
        Self {
            pool,
            timer: metrics.map(|metrics| Timer { metrics, site }),
        }
    }

    /// A connection of the pool, for several statements on one connection
    /// (the wait for it is timed; time the statements with [`Db::time`]).
    pub async fn acquire(self) -> sqlx::Result<PoolConnection<Any>> {
        match self.timer {
            Some(t) => t.acquire(self.pool).await,
            None => self.pool.acquire().await,
        }
    }

    /// Starts timing work done on a connection from [`Db::acquire`], as
    /// one query of this call site.
    pub fn time(self) -> QueryTime {
        self.timer.map_or(QueryTime(None), |t| t.start())
    }

    /// A transaction opened with `statement` (`BEGIN`, or SQLite's
    /// `BEGIN IMMEDIATE`), timed until it commits.
    pub async fn begin_with(self, statement: &'static str) -> sqlx::Result<Tx> {
        let Some(t) = self.timer else {
            let inner = self.pool.begin_with(statement).await?;
            return Ok(Tx {
                inner,
                time: QueryTime(None),
            });
        };
        let conn = t.acquire(self.pool).await?;
        let time = t.start();
        // What the pool's own `begin_with` does after its acquire, which
        // is timed above.
        let inner = sqlx::Transaction::begin(conn, Some(statement.into_sql_str())).await?;
        Ok(Tx { inner, time })
    }

    /// A transaction opened with a plain `BEGIN`.
    pub async fn begin(self) -> sqlx::Result<Tx> {
        self.begin_with("BEGIN").await
    }
}

/// Runs one call of the pool's executor on an acquired connection, timed.
macro_rules! timed {
    ($db:expr, $t:expr, $call:ident, $query:expr) => {
        Box::pin(async move {
            let mut conn = $t.acquire($db.pool).await?;
            let time = $t.start();
            let result = (&mut *conn).$call($query).await;
            time.done();
            result
        })
    };
}

impl<'c> Executor<'c> for Db<'c> {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, sqlx::Result<Either<AnyQueryResult, AnyRow>>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        let Some(t) = self.timer else {
            return self.pool.fetch_many(query);
        };
        // Only `fetch` and `execute_many` come here (the others are run
        // below): the results are read whole, then streamed.
        let all = async move {
            let mut conn = t.acquire(self.pool).await?;
            let time = t.start();
            let all: sqlx::Result<Vec<_>> = (&mut *conn).fetch_many(query).try_collect().await;
            time.done();
            all
        };
        futures_util::stream::once(all)
            .map(|all| match all {
                Ok(rows) => futures_util::stream::iter(rows.into_iter().map(Ok)).left_stream(),
                Err(e) => futures_util::stream::once(async { Err(e) }).right_stream(),
            })
            .flatten()
            .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, sqlx::Result<Option<AnyRow>>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match self.timer {
            None => self.pool.fetch_optional(query),
            Some(t) => timed!(self, t, fetch_optional, query),
        }
    }

    fn fetch_all<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, sqlx::Result<Vec<AnyRow>>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match self.timer {
            None => self.pool.fetch_all(query),
            Some(t) => timed!(self, t, fetch_all, query),
        }
    }

    fn execute<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, sqlx::Result<AnyQueryResult>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match self.timer {
            None => self.pool.execute(query),
            Some(t) => timed!(self, t, execute, query),
        }
    }

    fn prepare_with<'e>(
        self,
        sql: sqlx::SqlStr,
        parameters: &'e [AnyTypeInfo],
    ) -> BoxFuture<'e, sqlx::Result<<Any as sqlx::Database>::Statement>>
    where
        'c: 'e,
    {
        self.pool.prepare_with(sql, parameters)
    }
}

/// A transaction (it dereferences to its connection, as sqlx's does: `&mut
/// *tx` is an executor), timed from `BEGIN` to `COMMIT` when metrics are
/// served. One rolled back, or dropped, is not timed.
pub struct Tx {
    inner: sqlx::Transaction<'static, Any>,
    time: QueryTime,
}

impl Tx {
    pub async fn commit(self) -> sqlx::Result<()> {
        let result = self.inner.commit().await;
        self.time.done();
        result
    }

    pub async fn rollback(self) -> sqlx::Result<()> {
        self.inner.rollback().await
    }
}

impl Deref for Tx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.inner
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.inner
    }
}

#[cfg(test)]
mod tests {
    use std::panic::Location;

    /// The table `build.rs` writes names this very function.
    #[test]
    fn a_call_site_is_labelled_with_its_function() {
        let site = here_in_this_function();
        assert_eq!(
            super::label_of(site),
            "observe.a_call_site_is_labelled_with_its_function"
        );
    }

    #[track_caller]
    fn here_in_this_function() -> &'static Location<'static> {
        Location::caller()
    }
}
