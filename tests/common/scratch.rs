//! What the api and e2e test binaries share (each includes this file with
//! `#[path]`, so the two stay separate crates): a fresh database per test
//! server, and Synapse's shared-secret registration MAC.

/// The backend the tests run on: `MYELIN_TEST_BACKEND`, `sqlite` by default.
pub fn backend() -> String {
    std::env::var("MYELIN_TEST_BACKEND").unwrap_or_else(|_| "sqlite".into())
}

/// A fresh database for one test server: its URL, and on PostgreSQL the
/// guard that drops it (a new database named `{prefix}_<unique suffix>`).
pub async fn fresh_database(
    dir: &std::path::Path,
    prefix: &str,
) -> (String, Option<myelin::storage::ScratchPostgresDatabase>) {
    match backend().as_str() {
        "sqlite" => (
            format!("sqlite://{}", dir.join("myelin.db").display()),
            None,
        ),
        "postgres" => {
            let admin = std::env::var("MYELIN_TEST_DATABASE_URL")
                .expect("MYELIN_TEST_BACKEND=postgres needs MYELIN_TEST_DATABASE_URL");
            let name = format!("{prefix}_{}", unique_suffix());
            let database = myelin::storage::ScratchPostgresDatabase::create(&admin, &name)
                .await
                .expect("create test database");
            (database.url().to_owned(), Some(database))
        }
        other => panic!("unknown MYELIN_TEST_BACKEND {other}"),
    }
}

fn unique_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000,
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Synapse's shared-secret registration MAC: HMAC-SHA1 over
/// nonce \0 user \0 password \0 admin|notadmin [\0 user_type], hex.
pub fn shared_secret_mac(
    secret: &str,
    nonce: &str,
    user: &str,
    password: &str,
    admin: bool,
    user_type: Option<&str>,
) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(nonce.as_bytes());
    mac.update(b"\x00");
    mac.update(user.as_bytes());
    mac.update(b"\x00");
    mac.update(password.as_bytes());
    mac.update(b"\x00");
    mac.update(if admin {
        b"admin" as &[u8]
    } else {
        b"notadmin"
    });
    if let Some(t) = user_type {
        mac.update(b"\x00");
        mac.update(t.as_bytes());
    }
    hex::encode(mac.finalize().into_bytes())
}
