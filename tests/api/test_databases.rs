//! The suite cleans up after itself: a dropped test server leaves neither its
//! data dir nor (PostgreSQL leg) its database behind. Without this a full
//! PostgreSQL leg left one database per test server, gigabytes in all.

use sqlx::Row;

use crate::harness::{TestServer, backend};

#[tokio::test]
async fn a_dropped_test_server_leaves_no_database_behind() {
    let server = TestServer::start().await;
    server.register("alice", "password123", false).await;
    let data_dir = server.config.data_dir.clone();
    let url = url::Url::parse(&server.config.database_url()).expect("database URL");
    assert!(data_dir.exists());
    drop(server);

    assert!(
        !data_dir.exists(),
        "data dir {} left behind",
        data_dir.display()
    );
    if backend() == "postgres" {
        let name = url.path().trim_start_matches('/').to_owned();
        let admin = std::env::var("MYELIN_TEST_DATABASE_URL").unwrap();
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&admin).await.expect("connect");
        let left: i64 = sqlx::query("SELECT COUNT(*) FROM pg_database WHERE datname = $1")
            .bind(&name)
            .fetch_one(&pool)
            .await
            .expect("query pg_database")
            .get(0);
        pool.close().await;
        assert_eq!(left, 0, "database {name} left behind");
    }
}
