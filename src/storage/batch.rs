//! A write transaction assembled as a list of statements, then run as a
//! whole ([`Storage::run_batch`]).
//!
//! sqlx runs each SQLite statement on the connection's own worker thread, so
//! every statement costs two thread switches; a group commit of six
//! statements cost twelve. On SQLite the batch is joined into one
//! multi-statement text (`BEGIN IMMEDIATE; ...; COMMIT`, placeholders
//! renumbered) and goes to the worker once. PostgreSQL does not take several
//! statements with parameters in one message, so there the statements run
//! one by one inside a transaction. Either way the batch commits as a whole
//! or not at all.

use super::Storage;

/// One bound value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Param<'a> {
    Int(i64),
    Text(&'a str),
    OptInt(Option<i64>),
    OptText(Option<&'a str>),
    Bytes(&'a [u8]),
}

impl From<i64> for Param<'_> {
    fn from(v: i64) -> Self {
        Param::Int(v)
    }
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Self {
        Param::Text(v)
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(v: &'a String) -> Self {
        Param::Text(v)
    }
}

impl From<Option<i64>> for Param<'_> {
    fn from(v: Option<i64>) -> Self {
        Param::OptInt(v)
    }
}

impl<'a> From<&'a Option<String>> for Param<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Param::OptText(v.as_deref())
    }
}

/// Parameters per joined SQLite text, at most (SQLite allows 32,766); a
/// bigger batch is sent as several texts within the one transaction.
const JOINED_PARAMS_MAX: usize = 30_000;

/// Statements (joined texts on SQLite) of up to this many parameters keep
/// their prepared form in the connection's statement cache: the usual
/// group commits of a few events are prepared once. Bigger ones are
/// prepared each time rather than fill the cache with one-off texts.
const CACHED_PARAMS: usize = 256;

/// The statements of one transaction, each with `$1`-numbered placeholders
/// of its own, and their values in order.
#[derive(Default)]
pub(crate) struct WriteBatch<'a> {
    statements: Vec<(String, std::ops::Range<usize>)>,
    params: Vec<Param<'a>>,
}

impl<'a> WriteBatch<'a> {
    /// Adds a statement; `params` binds `$1`, `$2`, ... of it.
    pub fn push(&mut self, sql: impl Into<String>, params: impl IntoIterator<Item = Param<'a>>) {
        let start = self.params.len();
        self.params.extend(params);
        self.statements.push((sql.into(), start..self.params.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }
}

/// `sql` with every `$N` placeholder moved up by `offset`.
fn renumber(sql: &str, offset: usize, out: &mut String) {
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + offset).to_string()),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
}

/// The SQLite texts of a batch: each a run of statements joined with their
/// placeholders renumbered, with the range of the batch's values it binds.
/// The first opens the transaction and the last commits it.
fn joined_texts(batch: &WriteBatch<'_>, begin: &str) -> Vec<(String, std::ops::Range<usize>)> {
    let mut texts = Vec::new();
    let mut text = format!("{begin};\n");
    let mut first = 0;
    for (sql, range) in &batch.statements {
        if range.end - first > JOINED_PARAMS_MAX && range.start > first {
            texts.push((std::mem::take(&mut text), first..range.start));
            first = range.start;
        }
        renumber(sql, range.start - first, &mut text);
        text.push_str(";\n");
    }
    text.push_str("COMMIT");
    texts.push((text, first..batch.params.len()));
    texts
}

fn bind<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    params: &[Param<'q>],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    for p in params {
        q = match *p {
            Param::Int(v) => q.bind(v),
            Param::Text(v) => q.bind(v),
            Param::OptInt(v) => q.bind(v),
            Param::OptText(v) => q.bind(v),
            Param::Bytes(v) => q.bind(v),
        };
    }
    q
}

impl Storage {
    /// Runs `batch` as one transaction (see the module documentation).
    pub(crate) async fn run_batch(&self, batch: WriteBatch<'_>) -> sqlx::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        match self.dialect().joins_statements() {
            true => {
                let texts = joined_texts(&batch, self.dialect().begin_write());
                let persistent = batch.params.len() <= CACHED_PARAMS;
                let db = self.pool();
                let mut conn = db.acquire().await?;
                let time = db.time();
                for (text, range) in &texts {
                    // Every statement binds its own parameters once each, in
                    // order, so the joined text can use anonymous ones.
                    let text = self.dialect().positional(text).into_owned();
                    let q = sqlx::query(sqlx::AssertSqlSafe(text)).persistent(persistent);
                    if let Err(e) = bind(q, &batch.params[range.clone()])
                        .execute(&mut *conn)
                        .await
                    {
                        // A failed statement leaves the transaction open (or
                        // none was opened, and this fails harmlessly).
                        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                        return Err(e);
                    }
                }
                time.done();
                Ok(())
            }
            false => {
                let mut tx = self.begin().await?;
                for (sql, range) in &batch.statements {
                    let q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                        .persistent(range.len() <= CACHED_PARAMS);
                    bind(q, &batch.params[range.clone()])
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_moved_up() {
        let mut out = String::new();
        renumber(
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $10)",
            5,
            &mut out,
        );
        assert_eq!(out, "INSERT INTO t (a, b) VALUES ($6, $7), ($8, $15)");
    }

    #[test]
    fn statements_are_joined_with_running_numbers() {
        let mut b = WriteBatch::default();
        b.push("DELETE FROM t WHERE a = $1", [Param::Int(1)]);
        b.push(
            "INSERT INTO t (a, b) VALUES ($1, $2)",
            [Param::Int(2), Param::Text("x")],
        );
        let texts = joined_texts(&b, "BEGIN IMMEDIATE");
        assert_eq!(texts.len(), 1);
        assert_eq!(
            texts[0].0,
            "BEGIN IMMEDIATE;\nDELETE FROM t WHERE a = $1;\nINSERT INTO t (a, b) VALUES ($2, $3);\nCOMMIT"
        );
        assert_eq!(texts[0].1, 0..3);
    }

    #[test]
    fn a_batch_past_the_parameter_limit_takes_several_texts() {
        let mut b = WriteBatch::default();
        let row: Vec<Param> = (0..10_000).map(Param::Int).collect();
        for _ in 0..4 {
            b.push("INSERT INTO t VALUES ($1)", row.iter().copied());
        }
        let texts = joined_texts(&b, "BEGIN");
        assert_eq!(texts.len(), 2);
        assert!(texts[0].0.starts_with("BEGIN;"));
        assert!(!texts[0].0.contains("COMMIT"));
        assert_eq!(texts[0].1, 0..30_000);
        assert!(texts[1].0.ends_with("COMMIT"));
        assert!(texts[1].0.starts_with("INSERT INTO t VALUES ($1)"));
        assert_eq!(texts[1].1, 30_000..40_000);
    }

    /// A failing statement undoes the whole batch and leaves the connection
    /// out of any transaction; the texts past the parameter limit commit
    /// together.
    #[tokio::test]
    async fn a_failed_batch_writes_nothing() {
        let (_dir, storage) = Storage::scratch_with_table_t().await;
        let count = || async {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM t")
                .fetch_one(storage.pool())
                .await
                .unwrap()
        };

        let mut b = WriteBatch::default();
        b.push("INSERT INTO t (a) VALUES ($1)", [Param::Int(1)]);
        b.push("INSERT INTO t (a) VALUES ($1)", [Param::Int(1)]);
        assert!(storage.run_batch(b).await.is_err());
        assert_eq!(count().await, 0);

        let mut b = WriteBatch::default();
        let values: Vec<i64> = (0..40_000).collect();
        for chunk in values.chunks(10_000) {
            let sql = format!(
                "INSERT INTO t (a) VALUES {}",
                (1..=chunk.len())
                    .map(|i| format!("(${i})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            b.push(sql, chunk.iter().map(|&v| Param::Int(v)));
        }
        storage.run_batch(b).await.unwrap();
        assert_eq!(count().await, 40_000);

        // The second text of a batch fails: the first one's rows go too.
        let mut b = WriteBatch::default();
        let values: Vec<i64> = (40_000..70_000).collect();
        b.push(
            format!(
                "INSERT INTO t (a) VALUES {}",
                (1..=values.len())
                    .map(|i| format!("(${i})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            values.iter().map(|&v| Param::Int(v)),
        );
        b.push("INSERT INTO t (a) VALUES ($1)", [Param::Int(0)]);
        assert!(storage.run_batch(b).await.is_err());
        assert_eq!(count().await, 40_000);
    }
}
