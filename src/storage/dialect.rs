//! Everything that differs between SQLite and PostgreSQL, in one place.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            anyhow::bail!("unsupported database URL (expected sqlite: or postgres://)")
        }
    }

    /// SQLite: create the file if missing.
    pub fn normalize_url(self, url: &str) -> String {
        match self {
            Self::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_owned(),
        }
    }

    /// How many connections to pool, given the configured maximum.
    ///
    /// SQLite: at most one per CPU core this process may run on. A commit
    /// by one SQLite connection empties the page cache of every other, so a
    /// connection that has no core of its own to read in parallel only
    /// turns the next statements' page reads into file reads (one
    /// connection sent 20% more messages than eight on one core). The
    /// connection that wrote keeps its cache.
    pub fn pool_size(self, max_connections: u32) -> u32 {
        match self {
            Self::Sqlite => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                max_connections.min(u32::try_from(cores).unwrap_or(u32::MAX))
            }
            Self::Postgres => max_connections,
        }
    }

    /// `sql` with its `$1`, `$2`, ... placeholders as SQLite's anonymous `?`
    /// when they appear exactly once each and in order (otherwise, and on
    /// PostgreSQL, as it is). sqlx asks SQLite for the name of every
    /// parameter it binds, and SQLite finds a name by walking the list of
    /// the statement's named parameters: quadratic in a statement with
    /// hundreds of them (an `IN` list, the per-room `UNION ALL`). Anonymous
    /// parameters have no names to walk.
    pub fn positional(self, sql: &str) -> std::borrow::Cow<'_, str> {
        if self != Self::Sqlite {
            return sql.into();
        }
        let mut out = String::with_capacity(sql.len());
        let mut rest = sql;
        let mut next = 1usize;
        while let Some(at) = rest.find('$') {
            let digits = rest[at + 1..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            if rest[at + 1..at + 1 + digits].parse::<usize>().ok() != Some(next) {
                return sql.into();
            }
            out.push_str(&rest[..at]);
            out.push('?');
            rest = &rest[at + 1 + digits..];
            next += 1;
        }
        out.push_str(rest);
        out.into()
    }

    /// Whether the database wants its write-ahead log checkpointed by a task
    /// of its own (`storage::checkpoint`).
    pub fn checkpoints_in_background(self) -> bool {
        matches!(self, Self::Sqlite)
    }

    /// Whether the pool checks a connection (a round trip) before handing it
    /// out. A PostgreSQL connection can be dropped by the server or the
    /// network while idle, and the check spares the next request the
    /// error; an SQLite connection is a file opened in this process, and
    /// the check would double the thread switches of every statement.
    pub fn test_before_acquire(self) -> bool {
        matches!(self, Self::Postgres)
    }

    /// Whether a transaction of several statements with parameters goes to
    /// the database as one text (see `storage::batch`): SQLite runs each
    /// statement on the connection's worker thread, two thread switches a
    /// statement; PostgreSQL does not take several statements with
    /// parameters in one message.
    pub fn joins_statements(self) -> bool {
        matches!(self, Self::Sqlite)
    }

    /// The page cache of each SQLite connection, in KiB: 16 MiB shared by
    /// the pool, 2 to 8 MiB each. A write's working set is larger than it
    /// looks: a `/keys/claim` of 100 devices walks 100 index paths and
    /// dirties 100 leaves, and with a 256 KiB cache (64 pages) it read
    /// most of them back from the file and spilled dirty pages to the log
    /// mid-statement (8 MiB: 1.4x the claims a second). A commit by another
    /// connection empties a connection's cache (WAL mode), so the cache
    /// pays mostly within a statement or a transaction, and on the one
    /// connection a single-core server has.
    pub fn cache_kib(self, connections: u32) -> Option<u32> {
        match self {
            Self::Sqlite => Some((16 * 1024 / connections.max(1)).clamp(2 * 1024, 8 * 1024)),
            Self::Postgres => None,
        }
    }

    /// Statements run on every new connection.
    pub fn connection_setup(self) -> &'static [&'static str] {
        match self {
            Self::Sqlite => &[
                "PRAGMA journal_mode = WAL",
                "PRAGMA synchronous = NORMAL",
                "PRAGMA foreign_keys = ON",
                "PRAGMA busy_timeout = 10000",
                // Checkpoints run on a connection of their own
                // (`storage::checkpoint`); a commit checkpoints only if that
                // has fallen far behind (256 MiB of log, past the task's
                // forced restart at 192 MiB).
                "PRAGMA wal_autocheckpoint = 65536",
                // When the log starts over, a file longer than this is cut
                // back inside the commit that starts it over, so it is kept
                // above the task's forced restart: under a steady load the
                // file is written over, not cut (the task cuts it once writes
                // pause).
                "PRAGMA journal_size_limit = 268435456",
            ],
            Self::Postgres => &[],
        }
    }

    /// Rewrites the dialect-neutral DDL of a migration: `{AUTO_ID}` is an
    /// auto-incrementing 64-bit primary key, `{BLOB}` a byte string,
    /// `{BINARY_TEXT}` text compared (and indexed) in byte order,
    /// `{INT64_KEY}` a 64-bit integer primary key given by the writer
    /// (SQLite: the rowid itself, so the table needs no separate index),
    /// `{WITHOUT_ROWID}` after a table's definition stores its rows in
    /// primary-key order (SQLite; nothing on PostgreSQL), and
    /// `{JSON_TEXT:column:a.b}` the value at path `a.b` of the JSON text in
    /// `column`, as text (NULL when missing).
    pub fn ddl(self, sql: &str) -> String {
        let (auto_id, blob) = match self {
            Self::Sqlite => ("INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB"),
            Self::Postgres => ("BIGSERIAL PRIMARY KEY", "BYTEA"),
        };
        let binary_text = match self {
            Self::Sqlite => "TEXT",
            Self::Postgres => "TEXT COLLATE \"C\"",
        };
        // A table stored in its primary key's order (small rows looked up
        // and deleted by key); PostgreSQL's tables have no such form.
        let without_rowid = match self {
            Self::Sqlite => " WITHOUT ROWID",
            Self::Postgres => "",
        };
        let int64_key = match self {
            Self::Sqlite => "INTEGER PRIMARY KEY",
            Self::Postgres => "BIGINT PRIMARY KEY",
        };
        let mut out = sql
            .replace("{AUTO_ID}", auto_id)
            .replace("{INT64_KEY}", int64_key)
            .replace("{BLOB}", blob)
            .replace("{BINARY_TEXT}", binary_text)
            .replace("{WITHOUT_ROWID}", without_rowid);
        const JSON_TEXT: &str = "{JSON_TEXT:";
        while let Some(at) = out.find(JSON_TEXT) {
            let Some(len) = out[at..].find('}') else {
                break;
            };
            let inner = &out[at + JSON_TEXT.len()..at + len];
            let (column, path) = inner.split_once(':').unwrap_or((inner, ""));
            let sql = match self {
                Self::Sqlite => format!("json_extract({column}, '$.{path}')"),
                // `json`, not `jsonb`: it takes any text JSON does (`\u0000`).
                Self::Postgres => format!(
                    "(CAST({column} AS JSON) #>> '{{{}}}')",
                    path.replace('.', ",")
                ),
            };
            out.replace_range(at..at + len + 1, &sql);
        }
        out
    }

    /// The statement that opens a write transaction.
    pub fn begin_write(self) -> &'static str {
        match self {
            Self::Sqlite => "BEGIN IMMEDIATE",
            Self::Postgres => "BEGIN",
        }
    }

    /// What a subquery that picks a row to take ends with, so concurrent
    /// takers pick different rows: PostgreSQL skips rows another
    /// transaction holds; SQLite runs one write at a time.
    pub fn skip_locked(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// SQL for "`column` contains the text of `param`", literal (no
    /// wildcards) and case-sensitive.
    pub fn contains(self, column: &str, param: &str) -> String {
        match self {
            Self::Sqlite => format!("instr({column}, {param}) > 0"),
            Self::Postgres => format!("strpos({column}, {param}) > 0"),
        }
    }

    /// Whether a database error is a unique-constraint violation.
    /// The database's tables (`migrate-db`, `storage/copy.rs`), by name.
    pub fn catalog_tables(self) -> &'static str {
        match self {
            Self::Sqlite => {
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
            }
            Self::Postgres => {
                "SELECT CAST(table_name AS TEXT) FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name"
            }
        }
    }

    /// A table's columns (`$1`: its name) as (name, declared type), in
    /// their order.
    pub fn catalog_columns(self) -> &'static str {
        match self {
            Self::Sqlite => "SELECT name, type FROM pragma_table_info($1) ORDER BY cid",
            Self::Postgres => {
                "SELECT CAST(column_name AS TEXT), CAST(data_type AS TEXT) FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position"
            }
        }
    }

    /// The (table, column) pairs whose values come from a sequence, where
    /// the database keeps one apart from the rows (PostgreSQL's serials).
    pub fn catalog_serial_columns(self) -> Option<&'static str> {
        match self {
            Self::Sqlite => None,
            Self::Postgres => Some(
                "SELECT CAST(table_name AS TEXT), CAST(column_name AS TEXT) FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND column_default LIKE 'nextval(%'",
            ),
        }
    }

    /// Moves a serial column's sequence past the highest value in the
    /// table (after rows were copied in with their own ids).
    pub fn serial_reset(self, table: &str, column: &str) -> Option<String> {
        match self {
            Self::Sqlite => None,
            Self::Postgres => Some(format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), \
                 COALESCE((SELECT MAX(\"{column}\") FROM \"{table}\"), 0) + 1, false)"
            )),
        }
    }

    pub fn is_unique_violation(err: &sqlx::Error) -> bool {
        match err {
            sqlx::Error::Database(db) => {
                matches!(db.kind(), sqlx::error::ErrorKind::UniqueViolation)
                    || db.code().as_deref() == Some("23505")
                    || db.message().contains("UNIQUE constraint failed")
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Dialect;

    #[test]
    fn the_sqlite_page_cache_is_shared_out_within_bounds() {
        let kib = |n| Dialect::Sqlite.cache_kib(n);
        assert_eq!(
            [kib(1), kib(2), kib(4), kib(64)],
            [Some(8192), Some(8192), Some(4096), Some(2048)]
        );
        assert_eq!(Dialect::Postgres.cache_kib(4), None);
    }

    #[test]
    fn json_text_becomes_each_dialects_json_path() {
        let sql = "SELECT {JSON_TEXT:e.json:content.join_rule} FROM events e";
        assert_eq!(
            Dialect::Sqlite.ddl(sql),
            "SELECT json_extract(e.json, '$.content.join_rule') FROM events e"
        );
        assert_eq!(
            Dialect::Postgres.ddl(sql),
            "SELECT (CAST(e.json AS JSON) #>> '{content,join_rule}') FROM events e"
        );
    }

    #[test]
    fn placeholders_in_order_become_anonymous_on_sqlite() {
        let sql = "SELECT a FROM t WHERE b = $1 AND c IN ($2, $3)";
        assert_eq!(
            Dialect::Sqlite.positional(sql),
            "SELECT a FROM t WHERE b = ? AND c IN (?, ?)"
        );
        assert_eq!(Dialect::Postgres.positional(sql), sql);
        for kept in [
            "SELECT a FROM t WHERE b = $1 OR c = $1",
            "SELECT a FROM t WHERE b = $2 AND c = $1",
            "SELECT a FROM t WHERE b = $1 AND c = $3",
        ] {
            assert_eq!(Dialect::Sqlite.positional(kept), kept);
        }
    }
}
