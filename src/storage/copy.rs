//! Whole-database operations for the operator's commands (`myelin backup`,
//! `myelin migrate-db`): a consistent copy of a live SQLite file, and every
//! table's rows copied from SQLite to an empty PostgreSQL database.
//!
//! The copy is generic: the tables and columns are read from the source's
//! catalog (what the migrations made), each value is read and bound with
//! the type the target declares (`Dialect::catalog_columns`), and the whole
//! copy is one transaction on the target.

use std::path::Path;
use std::str::FromStr;

use anyhow::Context as _;
use futures_util::TryStreamExt as _;
use sqlx::any::{AnyArguments, AnyConnectOptions, AnyRow};
use sqlx::{AssertSqlSafe, Connection as _, Row as _};

use super::{Dialect, Storage};

/// Writes a consistent copy of the SQLite database at `url` to `dest` (a
/// new file) with `VACUUM INTO`: one read transaction, so a server that
/// keeps writing meanwhile is copied as of one moment, with every
/// transaction committed before it.
pub async fn sqlite_snapshot(url: &str, dest: &Path) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    anyhow::ensure!(
        Dialect::from_url(url)? == Dialect::Sqlite,
        "not a SQLite database URL"
    );
    anyhow::ensure!(!dest.exists(), "{} exists already", dest.display());
    // `mode=rw`: the database must exist (never create an empty one).
    let base = url.split('?').next().unwrap_or(url);
    let options = AnyConnectOptions::from_str(&format!("{base}?mode=rw"))?;
    let mut conn = sqlx::AnyConnection::connect_with(&options)
        .await
        .with_context(|| format!("cannot open {base}"))?;
    sqlx::query("PRAGMA busy_timeout = 10000")
        .execute(&mut conn)
        .await?;
    let dest = dest
        .to_str()
        .context("the backup path is not valid UTF-8")?;
    sqlx::query("VACUUM INTO $1")
        .bind(dest)
        .execute(&mut conn)
        .await
        .context("VACUUM INTO")?;
    conn.close().await?;
    Ok(())
}

/// One table copied: its name and number of rows.
pub struct CopiedTable {
    pub table: String,
    pub rows: u64,
}

/// Most parameters one `INSERT` binds (PostgreSQL allows 65,535).
const MAX_PARAMS: usize = 30_000;
/// Most rows one `INSERT` writes.
const MAX_BATCH_ROWS: usize = 500;

/// Copies every table of the SQLite database at `from` into the empty
/// PostgreSQL database at `to`: the schema is made by the migrations (the
/// source is migrated to the same version first), the rows go in batches
/// in one transaction, and each serial column's sequence is set past its
/// highest value. Refuses a target that holds any row. `progress` is told
/// each table as it is done.
pub async fn sqlite_to_postgres(
    from: &str,
    to: &str,
    progress: impl Fn(&CopiedTable),
) -> anyhow::Result<Vec<CopiedTable>> {
    anyhow::ensure!(
        Dialect::from_url(from)? == Dialect::Sqlite,
        "the source must be a SQLite database (database.url or the data dir's myelin.db)"
    );
    anyhow::ensure!(
        Dialect::from_url(to)? == Dialect::Postgres,
        "--to must be a postgres:// URL"
    );
    let source = Storage::connect_with(from, 1, None, i64::MAX)
        .await
        .context("cannot open the SQLite database")?;
    refuse_non_empty(to).await?;
    let target = Storage::connect_with(to, 2, None, i64::MAX)
        .await
        .context("cannot open the PostgreSQL database")?;
    let (from_version, to_version) = (
        schema_version(&source).await?,
        schema_version(&target).await?,
    );
    anyhow::ensure!(
        from_version == to_version,
        "schema versions differ after migrating (SQLite {from_version}, PostgreSQL {to_version})"
    );
    let mut tables = Vec::new();
    for table in user_tables(&source).await? {
        let columns = columns_of(&source, &target, &table).await?;
        tables.push((table, columns));
    }
    let serials = serial_columns(&target).await?;
    // One read transaction: the rows of every table as of one moment.
    let mut reading = source.pool().begin().await?;
    let mut writing = target.begin().await?;
    let mut copied = Vec::with_capacity(tables.len());
    for (table, columns) in tables {
        // What the migrations seeded (`stream_high_water`) gives way to
        // the source's rows.
        sqlx::query(AssertSqlSafe(format!("DELETE FROM {}", quoted(&table))))
            .execute(&mut *writing)
            .await?;
        let rows = copy_table(&mut reading, &mut writing, &table, &columns).await?;
        let done = CopiedTable { table, rows };
        progress(&done);
        copied.push(done);
    }
    for (table, column) in serials {
        if let Some(sql) = target.dialect().serial_reset(&table, &column) {
            sqlx::query(AssertSqlSafe(sql))
                .execute(&mut *writing)
                .await?;
        }
    }
    writing.commit().await?;
    reading.rollback().await?;
    source.close().await;
    target.close().await;
    Ok(copied)
}

/// Fails when the database at `url` has a table with a row (other than
/// the migrations' record): `migrate-db` never mixes two servers' data.
async fn refuse_non_empty(url: &str) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url)
        .await
        .context("cannot connect to the target database")?;
    let dialect = Dialect::from_url(url)?;
    let tables: Vec<String> = sqlx::query_scalar(dialect.catalog_tables())
        .fetch_all(&mut conn)
        .await?;
    for table in tables.iter().filter(|t| *t != "schema_migrations") {
        let any: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT 1 FROM {} LIMIT 1",
            quoted(table)
        )))
        .fetch_optional(&mut conn)
        .await?;
        anyhow::ensure!(
            any.is_none(),
            "the target database is not empty (table {table} has rows); give an empty database"
        );
    }
    conn.close().await?;
    Ok(())
}

async fn schema_version(storage: &Storage) -> anyhow::Result<i64> {
    let v: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
        .fetch_one(storage.pool())
        .await?;
    Ok(v.unwrap_or(0))
}

/// The tables to copy, by name: all but `schema_migrations` (the target's
/// migrations wrote it).
async fn user_tables(storage: &Storage) -> anyhow::Result<Vec<String>> {
    let tables: Vec<String> = sqlx::query_scalar(storage.dialect().catalog_tables())
        .fetch_all(storage.pool())
        .await?;
    Ok(tables
        .into_iter()
        .filter(|t| t != "schema_migrations")
        .collect())
}

/// How a column's values are read and bound.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Int,
    Text,
    Bytes,
    Float,
}

impl Kind {
    /// From a declared type (`information_schema` or SQLite's).
    fn of(declared: &str) -> Option<Self> {
        let t = declared.to_ascii_lowercase();
        Some(match t.as_str() {
            "bigint" | "integer" | "smallint" | "int" | "int8" | "int4" => Self::Int,
            "text" | "character varying" | "varchar" => Self::Text,
            "bytea" | "blob" => Self::Bytes,
            "double precision" | "real" | "float" => Self::Float,
            _ => return None,
        })
    }
}

/// The table's columns in the source's order, with the kind the target
/// declares; the two must have the same columns.
async fn columns_of(
    source: &Storage,
    target: &Storage,
    table: &str,
) -> anyhow::Result<Vec<(String, Kind)>> {
    let from = declared_columns(source, table).await?;
    let to = declared_columns(target, table).await?;
    let mut out = Vec::with_capacity(from.len());
    for (name, _) in &from {
        let declared = to
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_str())
            .with_context(|| format!("{table}.{name} is missing from the target"))?;
        let kind = Kind::of(declared)
            .with_context(|| format!("{table}.{name}: type {declared} cannot be copied"))?;
        out.push((name.clone(), kind));
    }
    anyhow::ensure!(
        from.len() == to.len(),
        "{table} has other columns in the target"
    );
    Ok(out)
}

/// A table's columns as (name, declared type).
async fn declared_columns(storage: &Storage, table: &str) -> sqlx::Result<Vec<(String, String)>> {
    sqlx::query_as(storage.dialect().catalog_columns())
        .bind(table.to_owned())
        .fetch_all(storage.pool())
        .await
}

/// One value, as read from the source.
enum Value {
    Int(Option<i64>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
    Float(Option<f64>),
}

fn read_value(row: &AnyRow, i: usize, kind: Kind) -> sqlx::Result<Value> {
    Ok(match kind {
        Kind::Int => Value::Int(row.try_get(i)?),
        Kind::Text => Value::Text(row.try_get(i)?),
        Kind::Bytes => Value::Bytes(row.try_get(i)?),
        Kind::Float => Value::Float(row.try_get(i)?),
    })
}

/// Copies one table's rows in batches; how many.
async fn copy_table(
    reading: &mut super::Tx,
    writing: &mut super::Tx,
    table: &str,
    columns: &[(String, Kind)],
) -> anyhow::Result<u64> {
    let names: Vec<String> = columns.iter().map(|(n, _)| quoted(n)).collect();
    let select = format!("SELECT {} FROM {}", names.join(", "), quoted(table));
    let batch_rows = (MAX_PARAMS / columns.len().max(1)).clamp(1, MAX_BATCH_ROWS);
    let mut rows = sqlx::query(AssertSqlSafe(select)).fetch(&mut **reading);
    let mut batch: Vec<Vec<Value>> = Vec::with_capacity(batch_rows);
    let mut count = 0u64;
    while let Some(row) = rows.try_next().await? {
        let values = columns
            .iter()
            .enumerate()
            .map(|(i, (_, kind))| read_value(&row, i, *kind))
            .collect::<sqlx::Result<Vec<_>>>()
            .with_context(|| format!("reading {table}"))?;
        batch.push(values);
        if batch.len() == batch_rows {
            count += insert(writing, table, &names, std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        count += insert(writing, table, &names, batch).await?;
    }
    Ok(count)
}

/// One multi-row `INSERT`; the number of rows.
async fn insert(
    writing: &mut super::Tx,
    table: &str,
    names: &[String],
    rows: Vec<Vec<Value>>,
) -> anyhow::Result<u64> {
    let width = names.len();
    let tuples: Vec<String> = (0..rows.len())
        .map(|r| format!("({})", super::placeholders(r * width + 1, width)))
        .collect();
    let sql = format!(
        "INSERT INTO {} ({}) VALUES {}",
        quoted(table),
        names.join(", "),
        tuples.join(", ")
    );
    let mut args = AnyArguments::default();
    let n = rows.len() as u64;
    for value in rows.into_iter().flatten() {
        use sqlx::Arguments as _;
        match value {
            Value::Int(v) => args.add(v),
            Value::Text(v) => args.add(v),
            Value::Bytes(v) => args.add(v),
            Value::Float(v) => args.add(v),
        }
        .map_err(|e| anyhow::anyhow!("binding a value of {table}: {e}"))?;
    }
    sqlx::query_with(AssertSqlSafe(sql), args)
        .execute(&mut **writing)
        .await
        .with_context(|| format!("writing {table}"))?;
    Ok(n)
}

/// The serial (auto-increment) columns of the target, as (table, column).
async fn serial_columns(storage: &Storage) -> anyhow::Result<Vec<(String, String)>> {
    let Some(sql) = storage.dialect().catalog_serial_columns() else {
        return Ok(Vec::new());
    };
    Ok(sqlx::query_as(sql).fetch_all(storage.pool()).await?)
}

/// A table or column name as an SQL identifier (the names come from the
/// database's own catalog).
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
