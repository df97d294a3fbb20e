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
pub mod devices;
pub mod dialect;
pub mod events;
mod filters;
mod migrations;
mod profiles;
pub mod purge;
mod registration_tokens;
pub mod reports;

pub use account_data::{PresenceRow, ReceiptRow};
pub use accounts::{AccountRow, AccountType};
pub use devices::{DeviceRow, Requester};
pub use dialect::Dialect;
pub use registration_tokens::RegistrationTokenRow;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};

#[derive(Clone)]
pub struct Storage {
    pool: AnyPool,
    dialect: Dialect,
}

impl Storage {
    /// Connects (creating the SQLite file if needed) and runs pending migrations.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let dialect = Dialect::from_url(url)?;
        let url = dialect.normalize_url(url);
        let options = AnyConnectOptions::from_str(&url)?
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(2));
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    for pragma in dialect.connection_setup() {
                        conn.execute(*pragma).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let storage = Self { pool, dialect };
        migrations::run(&storage).await?;
        Ok(storage)
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Begins a write transaction. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so a transaction that reads before writing waits
    /// for a concurrent writer instead of failing with "database is locked".
    pub async fn begin(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Any>> {
        self.pool.begin_with(self.dialect.begin_write()).await
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Creates a PostgreSQL database (used by tests and tools that set up a fresh one).
pub async fn create_postgres_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    anyhow::ensure!(
        name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "database name must be alphanumeric"
    );
    let mut conn = AnyConnectOptions::from_str(admin_url)?.connect().await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await?;
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
