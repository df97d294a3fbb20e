//! `myelin backup` / `myelin restore` with the real binary (a backup taken
//! under send load restores to a server with every event acknowledged
//! before it began, searchable, with its media and signing key), their
//! refusals, and `myelin migrate-db` from SQLite to PostgreSQL (every
//! table's rows equal after the move; the server serves the copy).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::*;

/// The bytes of the media the tests upload.
const IMAGE: &[u8] = b"not really an image, but kept byte for byte";

fn text(out: &std::process::Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `myelin ARGS` must succeed; its output.
async fn run_ok(args: &[&str]) -> String {
    let out = Binary::run(args).await;
    assert!(out.status.success(), "myelin {args:?}: {}", text(&out));
    text(&out)
}

/// `myelin ARGS` must fail, saying `why` on stderr.
async fn run_refused(args: &[&str], why: &str) {
    let out = Binary::run(args).await;
    assert!(
        !out.status.success(),
        "myelin {args:?} succeeded: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(why),
        "myelin {args:?} does not say {why:?}: {}",
        text(&out)
    );
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn a_backup_under_send_load_restores_every_acknowledged_event() {
    let (mut bin, (alice, room, media)) = Binary::start(
        async |s: &TestServer| {
            let alice = s.user("alice").await;
            let room = create_room(s, &alice, json!({})).await;
            let media = upload(s, &alice, IMAGE, Some("image/png"), None).await;
            (alice, room, media)
        },
        None,
    )
    .await;
    let sqlite = backend() == "sqlite";
    let original_key = std::fs::read(bin.server.config.data_dir.join("signing.key")).unwrap();
    let load = SendLoad::start(&bin.server, &alice.access_token, &room, "bkword", 4);
    load.wait_for(100).await;
    let before = load.acked();
    let backups = tempfile::tempdir().unwrap();
    let to = backups.path().join("b1");
    let config = bin.config_path();
    let said = run_ok(&["backup", "--config", path(&config), "--to", path(&to)]).await;
    // The load went on while the backup ran.
    load.wait_for(before.len() + 20).await;
    let acked = load.stop();
    assert!(acked.len() > before.len());
    assert!(to.join("backup.json").exists() && to.join("signing.key").exists());
    assert_eq!(to.join("myelin.db").exists(), sqlite, "{said}");
    if !sqlite {
        assert!(said.contains("pg_dump"), "{said}");
    }
    assert!(said.contains("search index"), "{said}");
    // A backup goes only into an empty directory.
    run_refused(
        &["backup", "--config", path(&config), "--to", path(&to)],
        "not an empty directory",
    )
    .await;
    let status = bin.terminate().await;
    assert!(status.success(), "exit status {status}: {}", bin.log());

    // Restore for a server with a new data dir (and SQLite file).
    let restored = tempfile::tempdir().unwrap();
    bin.server.config.data_dir = restored.path().to_owned();
    if sqlite {
        bin.server.config.database.url =
            format!("sqlite://{}", restored.path().join("myelin.db").display());
    }
    bin.write_config();
    let restore = ["restore", "--from", path(&to), "--config", path(&config)];
    run_ok(&restore).await;
    // Not over what is there, unless --force.
    run_refused(&restore, "--force").await;
    std::fs::create_dir_all(restored.path().join("search")).unwrap();
    let mut forced = restore.to_vec();
    forced.push("--force");
    run_ok(&forced).await;
    assert!(
        !restored.path().join("search").exists(),
        "--force removes the old search index (it is rebuilt)"
    );
    // Not for another server.
    let mut other = bin.server.config.clone();
    other.server_name = "other.local".into();
    let other_config = backups.path().join("other.yaml");
    std::fs::write(&other_config, serde_norway::to_string(&other).unwrap()).unwrap();
    run_refused(
        &[
            "restore",
            "--from",
            path(&to),
            "--config",
            path(&other_config),
            "--force",
        ],
        "other.local",
    )
    .await;

    bin.spawn(None).await;
    let server = &bin.server;
    assert_events_served(server, alice.token(), &room, &before).await;
    assert_eq!(
        std::fs::read(restored.path().join("signing.key")).unwrap(),
        original_key
    );
    let got = download(
        server,
        &format!(
            "/_matrix/client/v1/media/download/{}/{media}",
            server.server_name
        ),
        alice.token(),
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.bytes, IMAGE);
    // The index is rebuilt in the background: every message acknowledged
    // before the backup is found once it is done.
    wait_until(
        "the restored events searchable",
        Duration::from_secs(120),
        || async {
            match search_count(server, &alice, "bkword").await {
                n if n >= before.len() as i64 => Ok(()),
                n => Err(format!("{n} found, {} acknowledged", before.len())),
            }
        },
    )
    .await;
}

/// One table's rows, each as its values' text (`NULL` for null), sorted.
async fn rows_of(pool: &sqlx::AnyPool, table: &str) -> Vec<Vec<String>> {
    use sqlx::Row;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM \"{table}\"")))
        .fetch_all(pool)
        .await
        .unwrap();
    let mut out: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
                        v.map_or("NULL".into(), |v| v.to_string())
                    } else if let Ok(v) = row.try_get::<Option<String>, _>(i) {
                        v.unwrap_or_else(|| "NULL".into())
                    } else {
                        panic!("{table}: column {i} is neither an integer nor text")
                    }
                })
                .collect()
        })
        .collect();
    out.sort();
    out
}

/// Every table of a database with its rows (`schema_migrations`: the
/// versions only; the times differ).
async fn contents(url: &str) -> BTreeMap<String, Vec<Vec<String>>> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let tables = if url.starts_with("sqlite:") {
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    } else {
        "SELECT CAST(table_name AS TEXT) FROM information_schema.tables WHERE table_schema = current_schema()"
    };
    let names: Vec<String> = sqlx::query_scalar(tables).fetch_all(&pool).await.unwrap();
    let mut out = BTreeMap::new();
    for table in names {
        let rows = if table == "schema_migrations" {
            let versions: Vec<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            versions.iter().map(|v| vec![v.to_string()]).collect()
        } else {
            rows_of(&pool, &table).await
        };
        out.insert(table, rows);
    }
    pool.close().await;
    out
}

#[tokio::test]
async fn migrate_db_copies_every_table_to_postgres() {
    let Ok(admin_url) = std::env::var("MYELIN_TEST_DATABASE_URL") else {
        println!("SKIPPED: migrate-db needs PostgreSQL (set MYELIN_TEST_DATABASE_URL)");
        return;
    };
    // The source is SQLite whatever the leg.
    let mut server = TestServer::start_with(|c| {
        c.database.url = format!("sqlite://{}", c.data_dir.join("myelin.db").display());
    })
    .await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let (st, b) = server
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(&room)),
            bob.token(),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let mut last = String::new();
    for i in 0..20 {
        last = send_text(&server, &alice, &room, &format!("migword {i}")).await;
    }
    let media = upload(&server, &alice, IMAGE, Some("image/png"), None).await;
    let reported = server
        .post(
            &format!(
                "/_matrix/client/v3/rooms/{}/report/{}",
                enc(&room),
                enc(&last)
            ),
            bob.token(),
            json!({"reason": "before"}),
        )
        .await;
    assert_eq!(reported.0, StatusCode::OK, "{}", reported.1);
    let (st, b) = server
        .request(
            Method::PUT,
            &format!(
                "/_matrix/client/v3/user/{}/account_data/m.test",
                enc(&alice.user_id)
            ),
            alice.token(),
            Some(json!({"k": "v"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    server.running.take().unwrap().shutdown().await;
    let source_url = server.config.database_url();

    let name = format!(
        "myelin_migrate_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000
    );
    let target = myelin::storage::ScratchPostgresDatabase::create(&admin_url, &name)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("myelin.yaml");
    std::fs::write(&config, serde_norway::to_string(&server.config).unwrap()).unwrap();
    let migrate = [
        "migrate-db",
        "--config",
        path(&config),
        "--to",
        target.url(),
    ];
    let said = run_ok(&migrate).await;
    assert!(said.contains("Copied"), "{said}");
    run_refused(&migrate, "not empty").await;
    run_refused(
        &[
            "migrate-db",
            "--config",
            path(&config),
            "--to",
            "sqlite:///tmp/x.db",
        ],
        "postgres://",
    )
    .await;

    let (from, to) = (contents(&source_url).await, contents(target.url()).await);
    assert_eq!(
        from.keys().collect::<Vec<_>>(),
        to.keys().collect::<Vec<_>>(),
        "the same tables"
    );
    assert!(from.len() >= 40, "{} tables", from.len());
    for (table, rows) in &from {
        assert_eq!(rows.len(), to[table].len(), "{table}: row counts");
        assert_eq!(rows, &to[table], "{table}: rows");
    }
    assert!(from["events"].len() > 20 && from["media"].len() == 1);

    // The server on the copy serves the old data and goes on writing.
    server.config.database.url = target.url().to_owned();
    server.restart().await;
    let alice = server.login("alice", "password123").await;
    let (st, synced) = server.get("/_matrix/client/v3/sync", alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{synced}");
    assert!(synced["rooms"]["join"][&room].is_object(), "{synced}");
    let (st, page) = server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
                enc(&room)
            ),
            alice.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{page}");
    let texts = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["content"]["body"]
                .as_str()
                .is_some_and(|b| b.starts_with("migword"))
        })
        .count();
    assert_eq!(texts, 20, "{page}");
    assert_eq!(search_count(&server, &alice, "migword").await, 20);
    let got = download(
        &server,
        &format!(
            "/_matrix/client/v1/media/download/{}/{media}",
            server.server_name
        ),
        alice.token(),
    )
    .await;
    assert_eq!(got.bytes, IMAGE);
    // New rows after the copied ones: stream positions and sequences moved.
    let new = send_text(&server, &alice, &room, "migword after").await;
    assert_eq!(search_count(&server, &alice, "migword").await, 21);
    let reported = server
        .post(
            &format!(
                "/_matrix/client/v3/rooms/{}/report/{}",
                enc(&room),
                enc(&new)
            ),
            alice.token(),
            json!({"reason": "after"}),
        )
        .await;
    assert_eq!(reported.0, StatusCode::OK, "{}", reported.1);
    // Bob's sync shows the new message at the end of the room's timeline.
    let bob = server.login("bob", "password123").await;
    let (st, synced) = server.get("/_matrix/client/v3/sync", bob.token()).await;
    assert_eq!(st, StatusCode::OK, "{synced}");
    let timeline = synced["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{synced}"));
    assert_eq!(
        timeline.last().unwrap()["event_id"],
        new.as_str(),
        "{synced}"
    );
    server.running.take().unwrap().shutdown().await;
    drop(target);
}
