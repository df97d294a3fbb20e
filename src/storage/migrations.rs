//! Versioned schema migrations, applied in order at start-up, each in one
//! transaction. Never edit a released migration; add a new one.

use sqlx::{AssertSqlSafe, Executor, Row};

use super::{Storage, now_ms};

/// (version, name, dialect-neutral DDL). See [`super::Dialect::ddl`].
const MIGRATIONS: &[(i64, &str, &str)] = &[(1, "accounts_devices_profiles", V1)];

const V1: &str = r#"
CREATE TABLE accounts (
    user_id TEXT PRIMARY KEY,
    password_hash TEXT,
    account_type BIGINT NOT NULL,
    is_deactivated BIGINT NOT NULL DEFAULT 0,
    user_type TEXT,
    appservice_id TEXT,
    created_ts BIGINT NOT NULL
);

CREATE TABLE devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    last_seen_ip TEXT,
    last_seen_user_agent TEXT,
    last_seen_ts BIGINT,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE access_tokens (
    token TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);

CREATE TABLE profiles (
    user_id TEXT PRIMARY KEY,
    displayname TEXT,
    avatar_url TEXT
);

CREATE TABLE filters (
    user_id TEXT NOT NULL,
    filter_id BIGINT NOT NULL,
    filter_json TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);

CREATE TABLE registration_tokens (
    token TEXT PRIMARY KEY,
    uses_allowed BIGINT,
    pending BIGINT NOT NULL DEFAULT 0,
    completed BIGINT NOT NULL DEFAULT 0,
    expiry_time BIGINT
);
"#;

pub(super) async fn run(storage: &Storage) -> anyhow::Result<()> {
    let pool = storage.pool();
    pool.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_ts BIGINT NOT NULL)",
    )
    .await?;
    let applied: Vec<i64> = sqlx::query("SELECT version FROM schema_migrations")
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| r.get::<i64, _>(0))
        .collect();
    if let Some(max) = applied.iter().max() {
        let latest = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
        anyhow::ensure!(
            *max <= latest,
            "the database schema (version {max}) is newer than this Myelin (version {latest}); upgrade Myelin"
        );
    }
    for (version, name, ddl) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tracing::info!(version, name, "applying database migration");
        let mut tx = pool.begin().await?;
        let ddl = storage.dialect().ddl(ddl);
        for statement in ddl.split(';').filter(|s| !s.trim().is_empty()) {
            sqlx::query(AssertSqlSafe(statement.to_owned()))
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_ts) VALUES ($1, $2, $3)",
        )
        .bind(*version)
        .bind(*name)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    Ok(())
}
