//! `myelin backup` and `myelin restore`: what a server keeps, copied to a
//! directory and back.
//!
//! A backup holds `backup.json` (what it holds), `signing.key`, the SQLite
//! database as `myelin.db` (a consistent copy taken while the server runs:
//! `storage::copy::sqlite_snapshot`) and the local media store as `media/`.
//! The search index is not copied: a server that finds none rebuilds it
//! from the events at start, so `restore` leaves none. PostgreSQL is backed
//! up with `pg_dump`; S3 media lives in the operator's bucket.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::config::{Config, MediaStoreKind};
use crate::storage::Dialect;

/// The backup's description, `backup.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// 1: this layout.
    pub format: u32,
    pub server_name: String,
    /// `sqlite` (`myelin.db` is in the backup) or `postgres` (not: use
    /// `pg_dump`).
    pub database: String,
    /// `local` (`media/` is in the backup) or `s3` (not: the bucket).
    pub media: String,
    /// When the backup began, ms since the epoch.
    pub created_ts: i64,
    /// The Myelin version that wrote it.
    pub myelin_version: String,
}

const MANIFEST: &str = "backup.json";
const SIGNING_KEY: &str = "signing.key";
const DATABASE: &str = "myelin.db";
const MEDIA: &str = "media";
/// Under the media store: bodies being written (never complete).
const MEDIA_STAGING: &str = "tmp";

/// Backs the server of `config` up into `to` (created; must be empty).
/// Returns what the operator should know (one line each).
pub async fn backup(config: &Config, to: &Path) -> anyhow::Result<Vec<String>> {
    if to.exists() {
        anyhow::ensure!(
            is_empty_dir(to)?,
            "{} exists and is not an empty directory",
            to.display()
        );
    }
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    let mut notes = Vec::new();
    let key = config.data_dir.join(SIGNING_KEY);
    anyhow::ensure!(
        key.exists(),
        "no signing key at {} (has the server run with this config?)",
        key.display()
    );
    let dialect = Dialect::from_url(&config.database_url())?;
    let manifest = Manifest {
        format: 1,
        server_name: config.server_name.clone(),
        database: match dialect {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
        .into(),
        media: match config.media.store {
            MediaStoreKind::Local => "local",
            MediaStoreKind::S3 => "s3",
        }
        .into(),
        created_ts: crate::storage::now_ms(),
        myelin_version: env!("CARGO_PKG_VERSION").into(),
    };
    copy_file(&key, &to.join(SIGNING_KEY))?;
    notes.push(format!("signing key: {SIGNING_KEY}"));
    // The database before the media: every media row it holds has its
    // body stored already.
    match dialect {
        Dialect::Sqlite => {
            crate::storage::copy::sqlite_snapshot(&config.database_url(), &to.join(DATABASE))
                .await
                .context("copying the SQLite database")?;
            notes.push(format!("database: {DATABASE} (a consistent copy)"));
        }
        Dialect::Postgres => notes.push(
            "database: PostgreSQL is not copied; back it up with pg_dump \
             (pg_dump -Fc -f myelin.dump DATABASE), at the same time as this"
                .into(),
        ),
    }
    match config.media.store {
        MediaStoreKind::Local => {
            let files = copy_tree(&config.data_dir.join(MEDIA), &to.join(MEDIA))?;
            notes.push(format!("media: {MEDIA}/ ({files} files)"));
        }
        MediaStoreKind::S3 => notes.push(
            "media: kept in the S3 bucket, which is not copied (back the bucket up on its own)"
                .into(),
        ),
    }
    notes.push("search index: not copied; rebuilt from the events at the first start".into());
    let text = serde_json::to_string_pretty(&manifest)?;
    std::fs::write(to.join(MANIFEST), text)
        .with_context(|| format!("cannot write {}", to.join(MANIFEST).display()))?;
    Ok(notes)
}

/// Restores the backup in `from` for the server of `config`: its signing
/// key and media into the data dir and its SQLite database to the
/// configured path. Refuses a data dir (or database file) that holds
/// anything unless `force`, which first removes what a server keeps there
/// (the search index included, so it is rebuilt at start).
pub fn restore(from: &Path, config: &Config, force: bool) -> anyhow::Result<Vec<String>> {
    let manifest_path = from.join(MANIFEST);
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let manifest: Manifest = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a Myelin backup", manifest_path.display()))?;
    anyhow::ensure!(
        manifest.format == 1,
        "backup format {} is not known",
        manifest.format
    );
    anyhow::ensure!(
        manifest.server_name == config.server_name,
        "the backup is of {}, the config's server_name is {}",
        manifest.server_name,
        config.server_name
    );
    let dialect = Dialect::from_url(&config.database_url())?;
    let database = match (manifest.database.as_str(), dialect) {
        ("sqlite", Dialect::Sqlite) => Some(sqlite_path(&config.database_url())?),
        ("sqlite", Dialect::Postgres) => anyhow::bail!(
            "the backup holds a SQLite database and the config names PostgreSQL: restore it \
             with a SQLite config, then move it with `myelin migrate-db`"
        ),
        ("postgres", Dialect::Postgres) => None,
        ("postgres", Dialect::Sqlite) => {
            anyhow::bail!("the backup is of a PostgreSQL server and the config names SQLite")
        }
        (other, _) => anyhow::bail!("unknown database kind {other} in the backup"),
    };
    let data_dir = &config.data_dir;
    let occupied = (data_dir.exists() && !is_empty_dir(data_dir)?)
        || database.as_ref().is_some_and(|d| d.exists());
    if occupied {
        anyhow::ensure!(
            force,
            "{} (or the database file) is not empty; give --force to replace what is there",
            data_dir.display()
        );
        clear(data_dir, database.as_deref())?;
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let mut notes = Vec::new();
    copy_file(&from.join(SIGNING_KEY), &data_dir.join(SIGNING_KEY))?;
    notes.push(format!(
        "signing key: {}",
        data_dir.join(SIGNING_KEY).display()
    ));
    match database {
        Some(path) => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            copy_file(&from.join(DATABASE), &path)?;
            notes.push(format!("database: {}", path.display()));
        }
        None => notes.push(
            "database: restore PostgreSQL from its pg_dump first \
             (pg_restore -d DATABASE myelin.dump, into an empty database)"
                .into(),
        ),
    }
    let media = from.join(MEDIA);
    if media.exists() {
        let files = copy_tree(&media, &data_dir.join(MEDIA))?;
        notes.push(format!(
            "media: {files} files into {}",
            data_dir.join(MEDIA).display()
        ));
    } else if manifest.media == "s3" {
        notes.push("media: in the S3 bucket (not part of the backup)".into());
    }
    notes.push("search index: rebuilt from the events at the first start".into());
    Ok(notes)
}

/// The file of a `sqlite:` URL.
fn sqlite_path(url: &str) -> anyhow::Result<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .context("not a sqlite: URL")?;
    let path = rest.split('?').next().unwrap_or(rest);
    anyhow::ensure!(
        !path.is_empty() && path != ":memory:",
        "the SQLite database has no file"
    );
    Ok(PathBuf::from(path))
}

fn is_empty_dir(dir: &Path) -> anyhow::Result<bool> {
    let mut entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    Ok(entries.next().is_none())
}

/// Removes what a server keeps: its signing key, media, search index and
/// SQLite files (with their `-wal` and `-shm`).
fn clear(data_dir: &Path, database: Option<&Path>) -> anyhow::Result<()> {
    let remove = |path: &Path| -> anyhow::Result<()> {
        let result = if path.is_dir() {
            std::fs::remove_dir_all(path)
        } else {
            std::fs::remove_file(path)
        };
        match result {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove {}", path.display()))
            }
            _ => Ok(()),
        }
    };
    for name in [SIGNING_KEY, MEDIA, "search"] {
        remove(&data_dir.join(name))?;
    }
    let db = database.map_or_else(|| data_dir.join(DATABASE), Path::to_owned);
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db.clone().into_os_string();
        name.push(suffix);
        remove(Path::new(&name))?;
    }
    Ok(())
}

fn copy_file(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// Copies the media store `from` into `to` (its staging dir left out);
/// the number of files. A missing store (no upload yet) is empty.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<u64> {
    if !from.exists() {
        return Ok(0);
    }
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    let mut files = 0;
    for entry in
        std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))?
    {
        let entry = entry?;
        let name = entry.file_name();
        let source = entry.path();
        if entry.file_type()?.is_dir() {
            if name == MEDIA_STAGING && from.file_name() == Some(MEDIA.as_ref()) {
                continue;
            }
            files += copy_tree(&source, &to.join(&name))?;
        } else {
            match std::fs::copy(&source, to.join(&name)) {
                Ok(_) => files += 1,
                // Deleted since the directory was read.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot copy {}", source.display()));
                }
            }
        }
    }
    Ok(files)
}
