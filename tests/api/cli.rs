//! The `myelin` binary: generate-config, create-account, serve (config errors).

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

/// Runs the binary with `args`, failing the test if it takes over 120 s.
async fn run(args: &[&str]) -> Output {
    run_within(args, 120).await
}

async fn run_within(args: &[&str], secs: u64) -> Output {
    let child = tokio::process::Command::new(crate::harness::bin())
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(secs), child).await {
        Ok(out) => out.expect("binary runs"),
        Err(_) => panic!("`myelin {}` did not finish within {secs} s", args.join(" ")),
    }
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// generate-config for `dir`, written to `dir/myelin.yaml`; returns the path.
/// The data dir is `dir/data`, created beforehand only if `create_data_dir`.
async fn write_config(dir: &Path, secret: &str, create_data_dir: bool) -> std::path::PathBuf {
    let data = dir.join("data");
    if create_data_dir {
        std::fs::create_dir_all(&data).unwrap();
    }
    let out = run(&[
        "generate-config",
        "--server-name",
        "example.org",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
        "--registration-shared-secret",
        secret,
        "--disable-rate-limits",
    ])
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "generate-config failed: {stderr}");
    let path = dir.join("myelin.yaml");
    std::fs::write(&path, stdout).unwrap();
    path
}

async fn login(
    client: &reqwest::Client,
    base: &str,
    user: &str,
    password: &str,
) -> (StatusCode, Value) {
    let resp = client
        .post(format!("{base}/_matrix/client/v3/login"))
        .json(&crate::harness::password_login(user, password))
        .send()
        .await
        .unwrap();
    let st = resp.status();
    (st, resp.json().await.unwrap())
}

#[tokio::test]
async fn generate_config_prints_yaml_with_the_given_values() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("somewhere").join("data");
    let out = run(&[
        "generate-config",
        "--server-name",
        "example.org",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
        "--registration-shared-secret",
        "s3cret-Value_42",
        "--disable-rate-limits",
    ])
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    for needle in [
        "example.org",
        "127.0.0.1:0",
        data.to_str().unwrap(),
        "s3cret-Value_42",
    ] {
        assert!(stdout.contains(needle), "{needle} missing from:\n{stdout}");
    }

    let yaml: serde_norway::Value = serde_norway::from_str(&stdout).expect("output parses as YAML");
    assert_eq!(yaml["server_name"].as_str(), Some("example.org"));
    assert_eq!(yaml["listen"].as_str(), Some("127.0.0.1:0"));
    assert_eq!(yaml["data_dir"].as_str(), data.to_str());
    assert_eq!(
        yaml["registration"]["shared_secret"].as_str(),
        Some("s3cret-Value_42")
    );
    assert_eq!(yaml["rate_limits"]["enabled"].as_bool(), Some(false));

    // And it is a valid Myelin config with the same values.
    let config = myelin::config::Config::from_yaml(&stdout).expect("valid config");
    assert_eq!(config.server_name, "example.org");
    assert_eq!(config.listen.to_string(), "127.0.0.1:0");
    assert_eq!(config.data_dir, data);
    assert_eq!(
        config.registration.shared_secret.as_deref(),
        Some("s3cret-Value_42")
    );
    assert!(!config.rate_limits.enabled);
}

#[tokio::test]
async fn generate_config_without_rate_limit_flag_keeps_them_on() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "generate-config",
        "--server-name",
        "example.org",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--registration-shared-secret",
        "x",
    ])
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let config = myelin::config::Config::from_yaml(&stdout).expect("valid config");
    assert!(config.rate_limits.enabled);
}

/// The flags sytest's adapter passes when `generate-config --help` lists
/// them: its CA for outgoing https, and private addresses allowed.
#[tokio::test]
async fn generate_config_takes_the_outbound_flags() {
    let ca = crate::harness::test_ca_file();
    let ca = ca.to_str().unwrap();
    let out = run(&["generate-config", "--help"]).await;
    let (help, _) = text(&out);
    assert!(
        help.contains("--federation-ca-file")
            && help.contains("--federation-allow-private-addresses")
    );
    let args = ["generate-config", "--server-name", "example.org"];
    let out = run(&args).await;
    let config = myelin::config::Config::from_yaml(&text(&out).0).expect("valid config");
    assert!(config.outbound.ca_files.is_empty());
    assert!(!config.outbound.ip_range_blocklist.is_empty());
    let out = run(&[
        &args[..],
        &[
            "--federation-ca-file",
            ca,
            "--federation-allow-private-addresses",
        ],
    ]
    .concat())
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let config = myelin::config::Config::from_yaml(&stdout).expect("valid config");
    assert_eq!(config.outbound.ca_files, vec![std::path::PathBuf::from(ca)]);
    assert!(config.outbound.ip_range_blocklist.is_empty());
    assert_eq!(
        config.federation.ca_files,
        vec![std::path::PathBuf::from(ca)]
    );
    assert!(config.federation.allow_private_addresses);
    assert!(
        config
            .federation
            .ip_filter()
            .allows("127.0.0.1".parse().unwrap())
    );
    // Without the flag the federation blocklist refuses loopback.
    let plain = myelin::config::Config::from_yaml(&text(&run(&args).await).0).unwrap();
    assert!(!plain.federation.allow_private_addresses);
    assert!(
        !plain
            .federation
            .ip_filter()
            .allows("127.0.0.1".parse().unwrap())
    );
    assert!(plain.federation.listen.is_none());
    // A CA file that does not exist is refused, naming the key.
    let out = run(&[&args[..], &["--federation-ca-file", "/nonexistent/ca.pem"]].concat()).await;
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("outbound.ca_files"),
        "{}",
        text(&out).1
    );
}

/// The federation TLS listener's flags (issue 22's configuration contract).
#[tokio::test]
async fn generate_config_takes_the_federation_listener_flags() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/common/tls");
    let cert = dir.join("gateway.pem");
    let key = dir.join("gateway.key");
    let args = [
        "generate-config",
        "--server-name",
        "127.0.0.1:8448",
        "--federation-listen",
        "0.0.0.0:8448",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    let out = run(&args).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let config = myelin::config::Config::from_yaml(&stdout).expect("valid config");
    assert_eq!(config.server_name, "127.0.0.1:8448");
    assert_eq!(
        config.federation.listen,
        Some("0.0.0.0:8448".parse().unwrap())
    );
    assert_eq!(
        config.federation.tls_certificate.as_deref(),
        Some(cert.as_path())
    );
    assert_eq!(
        config.federation.tls_private_key.as_deref(),
        Some(key.as_path())
    );
    // A listener without its certificate is refused by clap.
    let out = run(&args[..5]).await;
    assert!(!out.status.success());
    // A certificate file that does not exist is refused, naming the key.
    let out = run(&[
        &args[..6],
        &["/nonexistent.pem", "--tls-key", key.to_str().unwrap()],
    ]
    .concat())
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("federation.tls_certificate"),
        "{}",
        text(&out).1
    );
}

#[tokio::test]
async fn create_account_then_login_as_admin() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), "cli-secret", true).await;
    let cfg = config_path.to_str().unwrap();

    let out = run(&[
        "create-account",
        "--config",
        cfg,
        "--username",
        "boss",
        "--password",
        "bosspassword",
        "--admin",
    ])
    .await;
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "create-account failed: {stderr}");
    let out = run(&[
        "create-account",
        "--config",
        cfg,
        "--username",
        "worker",
        "--password",
        "workerpassword",
    ])
    .await;
    let (_, stderr) = text(&out);
    assert!(
        out.status.success(),
        "create-account (non-admin) failed: {stderr}"
    );

    let config = myelin::config::Config::load(&config_path).expect("config loads");
    let running = myelin::server::start(config).await.expect("server starts");
    let base = format!("http://{}", running.addr);
    let client = reqwest::Client::new();

    let (st, body) = login(&client, &base, "boss", "bosspassword").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], "@boss:example.org");
    let token = body["access_token"].as_str().unwrap().to_owned();
    let resp = client
        .get(format!("{base}/_synapse/admin/v1/registration_tokens"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let st = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(st, StatusCode::OK, "boss is not an admin: {body}");

    let (st, body) = login(&client, &base, "worker", "workerpassword").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let token = body["access_token"].as_str().unwrap().to_owned();
    let resp = client
        .get(format!("{base}/_synapse/admin/v1/registration_tokens"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::FORBIDDEN,
        "worker should not be an admin"
    );

    // Wrong password is still refused.
    let (st, _) = login(&client, &base, "boss", "wrongpassword").await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    running.shutdown().await;
}

#[tokio::test]
async fn create_account_twice_fails_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), "cli-secret", true).await;
    let cfg = config_path.to_str().unwrap();
    let args = [
        "create-account",
        "--config",
        cfg,
        "--username",
        "dup",
        "--password",
        "duppassword",
    ];
    let out = run(&args).await;
    assert!(
        out.status.success(),
        "first create-account failed: {}",
        text(&out).1
    );

    let out = run(&args).await;
    let (stdout, stderr) = text(&out);
    assert!(
        !out.status.success(),
        "second create-account succeeded: {stdout}"
    );
    let all = format!("{stdout}{stderr}").to_lowercase();
    assert!(
        !all.contains("panicked"),
        "panic instead of an error message: {all}"
    );
    assert!(
        ["dup", "exist", "taken", "in use", "already"]
            .iter()
            .any(|w| all.contains(w)),
        "message does not say why: {all:?}"
    );
}

#[tokio::test]
async fn create_account_rejects_weak_password() {
    // Password policy applies everywhere (contract).
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), "cli-secret", true).await;
    let out = run(&[
        "create-account",
        "--config",
        config_path.to_str().unwrap(),
        "--username",
        "weak",
        "--password",
        "short",
    ])
    .await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "weak password accepted: {stdout}");
    assert!(
        !format!("{stdout}{stderr}").contains("panicked"),
        "{stderr}"
    );
    assert!(
        format!("{stdout}{stderr}").to_lowercase().contains("weak"),
        "message does not say the password is weak: {stderr}"
    );
}

async fn serve_rejects(config_text: &str, key: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, config_text).unwrap();
    // A server that accepted the config would keep running: the timeout fails the test.
    let out = run_within(&["serve", "--config", path.to_str().unwrap()], 30).await;
    let (stdout, stderr) = text(&out);
    assert!(
        !out.status.success(),
        "serve accepted a bad config; stdout: {stdout} stderr: {stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stdout.contains("panicked"),
        "panic: {stderr}"
    );
    assert!(
        stderr.contains(key) || stdout.contains(key),
        "message does not name `{key}`:\n{stderr}\n{stdout}"
    );
}

#[tokio::test]
async fn serve_with_unknown_top_level_key_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "server_name: example.org\nlisten: 127.0.0.1:0\ndata_dir: {}\nbogus_option_xyz: 1\n",
        serde_json::to_string(dir.path().to_str().unwrap()).unwrap()
    );
    serve_rejects(&text, "bogus_option_xyz").await;
}

#[tokio::test]
async fn serve_with_unknown_nested_key_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "server_name: example.org\nlisten: 127.0.0.1:0\ndata_dir: {}\nregistration:\n  enabled: true\n  nested_bogus_key: yes\n",
        serde_json::to_string(dir.path().to_str().unwrap()).unwrap()
    );
    serve_rejects(&text, "nested_bogus_key").await;
}

#[tokio::test]
async fn serve_with_invalid_value_fails_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "server_name: 'not a server name!'\nlisten: 127.0.0.1:0\ndata_dir: {}\n",
        serde_json::to_string(dir.path().to_str().unwrap()).unwrap()
    );
    serve_rejects(&text, "server_name").await;
}

#[tokio::test]
async fn create_account_before_first_serve_creates_the_data_dir() {
    // The natural first-run order: generate-config, create-account, serve.
    // The data dir does not exist yet; `serve` creates it, so must create-account.
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), "cli-secret", false).await;
    let out = run(&[
        "create-account",
        "--config",
        config_path.to_str().unwrap(),
        "--username",
        "first",
        "--password",
        "firstpassword",
        "--admin",
    ])
    .await;
    let (_, stderr) = text(&out);
    assert!(
        out.status.success(),
        "create-account on a fresh data dir failed: {stderr}"
    );

    let config = myelin::config::Config::load(&config_path).expect("config loads");
    let running = myelin::server::start(config).await.expect("server starts");
    let base = format!("http://{}", running.addr);
    let (st, body) = login(&reqwest::Client::new(), &base, "first", "firstpassword").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    running.shutdown().await;
}

/// `myelin admin ...` drives a running server through its admin API.
#[tokio::test]
async fn admin_cli_evacuates_a_room_and_reports_errors() {
    let server = crate::harness::TestServer::start().await;
    let root = server.admin("root").await;
    let alice = server.user("alice").await;
    let (st, body) = server
        .post(
            "/_matrix/client/v3/createRoom",
            alice.token(),
            json!({"preset": "public_chat"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let room = body["room_id"].as_str().unwrap().to_owned();
    let url = format!("http://{}", server.addr);

    let out = run(&[
        "admin",
        "--url",
        &url,
        "--token",
        &root.access_token,
        "evacuate-room",
        &room,
    ])
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let v: Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    assert_eq!(v["affected"], json!([alice.user_id]));
    let (_, joined) = server
        .get("/_matrix/client/v3/joined_rooms", alice.token())
        .await;
    assert_eq!(joined["joined_rooms"], json!([]));

    // An unknown user: non-zero exit and the server's errcode in the message.
    let out = run(&[
        "admin",
        "--url",
        &url,
        "--token",
        &root.access_token,
        "evacuate-user",
        "@nobody:test.local",
    ])
    .await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("M_NOT_FOUND"), "{stderr}");

    // A non-admin token is refused.
    let out = run(&[
        "admin",
        "--url",
        &url,
        "--token",
        &alice.access_token,
        "reindex",
    ])
    .await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("M_FORBIDDEN"), "{stderr}");
}

/// `myelin admin reindex`, `purge-history` and `job`: the job ids they print
/// lead to the job's status.
#[tokio::test]
async fn admin_cli_starts_jobs_and_shows_them() {
    let server = crate::harness::TestServer::start().await;
    let root = server.admin("root").await;
    let room = crate::harness::create_room(&server, &root, json!({})).await;
    let first = crate::harness::send_text(&server, &root, &room, "old").await;
    let last = crate::harness::send_text(&server, &root, &room, "new").await;
    let url = format!("http://{}", server.addr);
    let admin = |args: &[&str]| {
        let mut all = vec!["admin", "--url", &url, "--token", &root.access_token];
        all.extend_from_slice(args);
        all.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let json_of = |out: &Output| -> Value {
        let (stdout, stderr) = text(out);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        serde_json::from_str(&stdout).expect("JSON on stdout")
    };
    let run_owned = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&refs).await
    };

    let started = json_of(
        &run_owned(admin(&[
            "purge-history",
            &room,
            "--event",
            &last,
            "--delete-local",
        ]))
        .await,
    );
    let job_id = started["purge_id"].as_str().expect("purge_id").to_owned();
    let job = crate::harness::wait_until("the purge job", Duration::from_secs(20), || async {
        let job = json_of(&run_owned(admin(&["job", &job_id])).await);
        assert_eq!(job["kind"], "purge_history");
        if job["status"] == "complete" {
            Ok(job)
        } else {
            Err(job.to_string())
        }
    })
    .await;
    assert_eq!(job["processed"], 1);
    let path = format!(
        "/_matrix/client/v3/rooms/{}/event/{}",
        crate::harness::enc(&room),
        crate::harness::enc(&first)
    );
    assert_eq!(
        server.get(&path, root.token()).await.0,
        StatusCode::NOT_FOUND
    );

    let started = json_of(&run_owned(admin(&["reindex"])).await);
    let job_id = started["job_id"].as_str().expect("job_id").to_owned();
    let job = json_of(&run_owned(admin(&["job", &job_id])).await);
    assert_eq!(job["kind"], "reindex");

    // Neither a point nor an unknown job gets past the CLI quietly.
    let out = run_owned(admin(&["purge-history", &room])).await;
    assert!(!out.status.success());
    let out = run_owned(admin(&["job", "nope"])).await;
    let (_, stderr) = text(&out);
    assert!(
        !out.status.success() && stderr.contains("M_NOT_FOUND"),
        "{stderr}"
    );
}

/// `myelin admin media list|quarantine|delete|purge-before` drive the
/// media admin API.
#[tokio::test]
async fn admin_cli_lists_quarantines_deletes_and_purges_media() {
    use crate::harness::{download, download_v1, upload};
    let server = crate::harness::TestServer::start().await;
    let root = server.admin("root").await;
    let alice = server.user("alice").await;
    let first = upload(&server, &alice, b"first", None, None).await;
    let second = upload(&server, &alice, b"second", None, None).await;
    let mxc = |id: &str| format!("mxc://{}/{id}", server.server_name);
    let url = format!("http://{}", server.addr);
    let run_admin = |token: &str, args: &[&str]| {
        let mut all = vec!["admin", "--url", &url, "--token", token, "media"];
        all.extend_from_slice(args);
        let all: Vec<String> = all.into_iter().map(str::to_owned).collect();
        async move {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            run(&refs).await
        }
    };
    let json_of = |out: &Output| -> Value {
        let (stdout, stderr) = text(out);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        serde_json::from_str(&stdout).expect("JSON on stdout")
    };

    let listed = json_of(&run_admin(&root.access_token, &["list", &alice.user_id]).await);
    assert_eq!(listed["total"], 2, "{listed}");
    let page = json_of(
        &run_admin(
            &root.access_token,
            &["list", &alice.user_id, "--limit", "1", "--from", "1"],
        )
        .await,
    );
    assert_eq!(page["media"].as_array().map(Vec::len), Some(1), "{page}");

    let quarantined = json_of(&run_admin(&root.access_token, &["quarantine", &mxc(&first)]).await);
    assert_eq!(quarantined, json!({}));
    let got = download(&server, &download_v1(&server, &first), alice.token()).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    json_of(&run_admin(&root.access_token, &["quarantine", &mxc(&first), "--undo"]).await);
    let got = download(&server, &download_v1(&server, &first), alice.token()).await;
    assert_eq!(got.status, StatusCode::OK);

    let deleted = json_of(&run_admin(&root.access_token, &["delete", &mxc(&first)]).await);
    assert_eq!(deleted, json!({"deleted_media": [first], "total": 1}));
    let before = (crate::harness::now_ms() + 1000).to_string();
    let purged = json_of(&run_admin(&root.access_token, &["purge-before", &before]).await);
    assert_eq!(purged, json!({"deleted_media": [second], "total": 1}));

    // A bad URI never reaches the server; errors name the errcode.
    let out = run_admin(&root.access_token, &["delete", "not-an-mxc"]).await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success() && stderr.contains("mxc"), "{stderr}");
    let out = run_admin(&root.access_token, &["delete", &mxc("nosuchmedia")]).await;
    let (_, stderr) = text(&out);
    assert!(
        !out.status.success() && stderr.contains("M_NOT_FOUND"),
        "{stderr}"
    );
    let out = run_admin(&alice.access_token, &["list", &alice.user_id]).await;
    let (_, stderr) = text(&out);
    assert!(
        !out.status.success() && stderr.contains("M_FORBIDDEN"),
        "{stderr}"
    );
}

/// `serve` with registration files that cannot be used stops with a message
/// naming the file and the key, before it writes anything (no data dir): a
/// bad regex, a missing token, and two services claiming the same exclusive
/// namespace.
#[tokio::test]
async fn serve_with_bad_app_service_registrations_fails_naming_file_and_key() {
    let good = crate::harness::bridge_registration("null");
    let other = good
        .replace("id: bridge", "id: other")
        .replace(crate::harness::AS_TOKEN, "as-other")
        .replace(crate::harness::HS_TOKEN, "hs-other")
        .replace("sender_localpart: bridgebot", "sender_localpart: otherbot");
    let cases: [(&str, Vec<String>, &str); 3] = [
        (
            "bad-regex",
            vec![good.replace("\"@bridge_.*:test.local\"", "\"@bridge_[:test.local\"")],
            "bad-regex-0.yaml: `namespaces.users[0].regex`: not a valid regex",
        ),
        (
            "no-token",
            vec![good.replace(&format!("as_token: {}\n", crate::harness::AS_TOKEN), "")],
            "no-token-0.yaml: `as_token`: is required",
        ),
        (
            "overlap",
            vec![good.clone(), other],
            "overlap-1.yaml: `namespaces.users`: \"@bridge_.*:test.local\" can name the same ids as",
        ),
    ];
    for (name, files, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<String> = files
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let path = dir.path().join(format!("{name}-{i}.yaml"));
                std::fs::write(&path, text).unwrap();
                path.to_str().unwrap().to_owned()
            })
            .collect();
        let text = format!(
            "server_name: test.local\nlisten: 127.0.0.1:0\ndata_dir: {}\napp_services: {}\n",
            serde_json::to_string(dir.path().join("data").to_str().unwrap()).unwrap(),
            serde_json::to_string(&paths).unwrap()
        );
        serve_rejects(&text, expected).await;
        // Stopped before anything was written.
        assert!(
            !dir.path().join("data").exists(),
            "{name}: data dir created"
        );
    }
}
