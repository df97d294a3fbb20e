//! synadm (<https://pypi.org/project/synadm/>, the Synapse admin CLI) driven
//! against Myelin as a subprocess: each command's JSON output is checked, and
//! so are its side effects, read back through HTTP.
//!
//! The binary: `MYELIN_SYNADM`, else `synadm` on `PATH`. `scripts/install-synadm`
//! installs the pinned version into `target/synadm-venv` and prints its path;
//! `scripts/test` does that and sets `MYELIN_REQUIRE_SYNADM=1`. Without a binary
//! these tests print SKIPPED and pass, unless `MYELIN_REQUIRE_SYNADM=1`.
//!
//! synadm exits 0 even when the server answers an error (it prints the error
//! body and logs `WARNING Synapse returned status code N` on stderr), so every
//! command is checked for that warning as well as for its exit status.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::harness::*;

/// How long one synadm command may take (its own HTTP timeout is 30 s).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// Finding and running synadm
// ---------------------------------------------------------------------------

fn is_executable(p: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        p.is_file()
    }
}

/// The synadm executable, or `None` (after printing SKIPPED) when there is none
/// and it is not required.
fn synadm_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MYELIN_SYNADM").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            is_executable(&p),
            "MYELIN_SYNADM={} is not an executable file (scripts/install-synadm prints the right path)",
            p.display()
        );
        return Some(p);
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("synadm"))
            .find(|p| is_executable(p))
    });
    if on_path.is_some() {
        return on_path;
    }
    if std::env::var("MYELIN_REQUIRE_SYNADM").is_ok_and(|v| v == "1") {
        panic!(
            "MYELIN_REQUIRE_SYNADM=1 but synadm was not found: set MYELIN_SYNADM=$(scripts/install-synadm) or put synadm on PATH"
        );
    }
    eprintln!(
        "SKIPPED synadm test: no synadm (set MYELIN_SYNADM=$(scripts/install-synadm), or put synadm on PATH)"
    );
    None
}

/// A YAML string scalar (JSON's double-quoted strings are valid YAML).
fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// synadm configured for one admin of one test server.
struct Synadm {
    bin: PathBuf,
    config: PathBuf,
    /// The config file and synadm's HOME (it writes ~/.local/share/synadm/debug.log).
    dir: tempfile::TempDir,
}

/// One finished synadm command.
struct Run {
    cmd: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
    /// Every JSON document in stdout, in order (synadm mixes them with text).
    docs: Vec<Value>,
}

impl Synadm {
    /// synadm for `admin` on `server`, with the homeserver name in the config.
    fn new(server: &TestServer, admin: &Session) -> Option<Self> {
        Self::with_homeserver(server, admin, &server.server_name)
    }

    /// `homeserver` is the config's `homeserver` ("auto-retrieval" makes
    /// synadm look the name up when a command is given a bare localpart).
    fn with_homeserver(server: &TestServer, admin: &Session, homeserver: &str) -> Option<Self> {
        let bin = synadm_binary()?;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("synadm.yaml");
        // Every key of synadm's defaults (APIHelper.CONFIG: a missing or empty
        // one starts its interactive configurator), plus `format`.
        let keys = [
            ("user", yaml_str(&admin.user_id)),
            ("token", yaml_str(&admin.access_token)),
            ("protocol", yaml_str("http")),
            ("base_url", yaml_str(&format!("http://{}", server.addr))),
            ("admin_path", yaml_str("/_synapse/admin")),
            ("matrix_path", yaml_str("/_matrix")),
            ("timeout", "30".to_owned()),
            ("server_discovery", yaml_str("well-known")),
            ("homeserver", yaml_str(homeserver)),
            ("ssl_verify", "true".to_owned()),
            ("format", yaml_str("json")),
        ];
        let yaml: String = keys.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
        std::fs::write(&config, yaml).unwrap();
        Some(Self { bin, config, dir })
    }

    /// Runs `synadm -c CONFIG -o json ARGS...` with nothing on stdin.
    async fn run(&self, args: &[&str]) -> Run {
        self.run_with_input(args, "").await
    }

    /// Runs `synadm -c CONFIG -o json ARGS...`, writing `input` to its stdin
    /// (the answers to its prompts), then closing it.
    async fn run_with_input(&self, args: &[&str], input: &str) -> Run {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.arg("-c")
            .arg(&self.config)
            .args(["-o", "json"])
            .args(args)
            .env("HOME", self.dir.path())
            // requests honours proxy variables; the server is on loopback.
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let shown = format!("synadm {}", args.join(" "));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_owned();
        let writer = tokio::spawn(async move {
            // A prompt it never reads is fine; so is a closed pipe.
            let _ = stdin.write_all(input.as_bytes()).await;
        });
        // Waits for the exit; past the timeout the child is dropped, and killed.
        let output = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{shown} did not finish within {COMMAND_TIMEOUT:?}"))
            .expect("wait for synadm");
        let _ = writer.await;
        let code = output.status.code();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let docs = json_docs(&stdout);
        Run {
            cmd: shown,
            code,
            stdout,
            stderr,
            docs,
        }
    }
}

/// Every JSON object or array in `text`, in order. synadm prints notes and
/// prompts around its JSON, sometimes on the same line ("(y/N): {").
fn json_docs(text: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    let mut pos = 0;
    while let Some(found) = text[pos..].find(['{', '[']) {
        let start = pos + found;
        let mut stream = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
        match stream.next() {
            Some(Ok(v)) => {
                docs.push(v);
                pos = start + stream.byte_offset();
            }
            _ => pos = start + 1,
        }
    }
    docs
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "`{}` exited with {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.cmd, self.code, self.stdout, self.stderr
        )
    }

    /// The HTTP error statuses synadm logged ("... returned status code N").
    fn http_errors(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.contains("returned status code"))
            .collect()
    }

    /// Asserts the command succeeded: exit 0, no HTTP error, no traceback.
    #[track_caller]
    fn assert_clean(&self) {
        assert_eq!(self.code, Some(0), "{}", self.describe());
        assert!(
            self.http_errors().is_empty(),
            "the server answered an error: {}",
            self.describe()
        );
        assert!(
            !self.stderr.contains("Traceback"),
            "synadm crashed: {}",
            self.describe()
        );
    }

    /// Asserts success and returns the last JSON document printed (the
    /// command's result; earlier ones are what it looked up first).
    #[track_caller]
    fn ok(&self) -> &Value {
        self.assert_clean();
        self.last()
    }

    #[track_caller]
    fn last(&self) -> &Value {
        self.docs
            .last()
            .unwrap_or_else(|| panic!("no JSON in the output: {}", self.describe()))
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("not a string: {s}"))
                .to_owned()
        })
        .collect()
}

/// The `name`s of a user list answer.
fn user_names(list: &Value) -> Vec<String> {
    field_of_each(&list["users"], "name")
}

/// A user object without the fields that change on their own.
fn stable(mut user: Value) -> Value {
    if let Some(o) = user.as_object_mut() {
        o.remove("last_seen_ts");
    }
    user
}

async fn admin_get(server: &TestServer, admin: &Session, path: &str) -> (StatusCode, Value) {
    server.get(path, admin.token()).await
}

async fn user_json(server: &TestServer, admin: &Session, user_id: &str) -> Value {
    let (st, body) = admin_get(
        server,
        admin,
        &format!("/_synapse/admin/v2/users/{}", enc(user_id)),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "GET v2/users/{user_id}: {body}");
    body
}

async fn displayname(server: &TestServer, user_id: &str) -> Value {
    let (st, body) = server
        .get(
            &format!("/_matrix/client/v3/profile/{}/displayname", enc(user_id)),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "displayname of {user_id}: {body}");
    body["displayname"].clone()
}

/// The members of a room, through the admin API.
async fn room_members(server: &TestServer, admin: &Session, room: &str) -> BTreeSet<String> {
    let (st, body) = admin_get(
        server,
        admin,
        &format!("/_synapse/admin/v1/rooms/{}/members", enc(room)),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "members of {room}: {body}");
    set(strings(&body["members"]))
}

/// The content of the room's current state event `ty` (state key "").
async fn admin_state_content(server: &TestServer, admin: &Session, room: &str, ty: &str) -> Value {
    let (st, body) = admin_get(
        server,
        admin,
        &format!("/_synapse/admin/v1/rooms/{}/state", enc(room)),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "state of {room}: {body}");
    body["state"]
        .as_array()
        .expect("state")
        .iter()
        .find(|e| e["type"] == ty && e["state_key"] == "")
        .map(|e| e["content"].clone())
        .unwrap_or_else(|| panic!("no {ty} in {body}"))
}

// ---------------------------------------------------------------------------
// version
// ---------------------------------------------------------------------------

#[tokio::test]
async fn synadm_version() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let Some(synadm) = Synadm::new(&server, &admin) else {
        return;
    };
    let out = synadm.run(&["version"]).await;
    let v = out.ok();
    let (st, expected) = server.get("/_synapse/admin/v1/server_version", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v, &expected, "{}", out.describe());
    assert!(v["server_version"].is_string(), "{v}");

    // A token that is not an admin's: synadm shows the error (and logs 403).
    let bob = server.user("bob").await;
    let as_bob = Synadm::new(&server, &bob).unwrap();
    let out = as_bob.run(&["user", "list"]).await;
    assert_eq!(out.last()["errcode"], "M_FORBIDDEN", "{}", out.describe());
    assert!(
        out.http_errors().iter().any(|l| l.contains("403")),
        "{}",
        out.describe()
    );
}

// ---------------------------------------------------------------------------
// users: list, search, details
// ---------------------------------------------------------------------------

#[tokio::test]
async fn synadm_user_list_and_filters() {
    let server = TestServer::start_with(|c| c.registration.allow_guests = true).await;
    let admin = server.admin("root").await;
    let Some(synadm) = Synadm::new(&server, &admin) else {
        return;
    };
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let guest = server.guest().await;
    let guest = guest.user_id;
    set_displayname(&server, &alice, "Alice Liddell").await;
    let (st, b) = server
        .post(
            &format!("/_synapse/admin/v1/deactivate/{}", enc(&carol.user_id)),
            admin.token(),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let root = admin.user_id.as_str();
    let (alice, bob, carol) = (
        alice.user_id.as_str(),
        bob.user_id.as_str(),
        carol.user_id.as_str(),
    );

    // Everything but the deactivated account, as the API lists it.
    let list = synadm.run(&["user", "list"]).await;
    let all = list.ok();
    assert_eq!(
        set(user_names(all)),
        set([root, alice, bob, &guest]),
        "{all}"
    );
    assert_eq!(all["total"], 4, "{all}");
    let (st, http) = admin_get(&server, &admin, "/_synapse/admin/v2/users").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(user_names(all), user_names(&http));
    let a = all["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == alice)
        .unwrap();
    assert_eq!(a["displayname"], "Alice Liddell", "{a}");
    assert_eq!(a["admin"], false, "{a}");
    assert_eq!(a["deactivated"], false, "{a}");
    let g = all["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == guest.as_str())
        .unwrap();
    assert_eq!(g["is_guest"], true, "{g}");

    // -d: deactivated accounts too.
    let out = synadm.run(&["user", "list", "-d"]).await;
    let l = out.ok();
    assert_eq!(
        set(user_names(l)),
        set([root, alice, bob, carol, &guest]),
        "{l}"
    );
    let c = l["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == carol)
        .unwrap();
    assert_eq!(c["deactivated"], true, "{c}");

    // -n: localpart or display name contains.
    let out = synadm.run(&["user", "list", "-n", "ali"]).await;
    assert_eq!(
        user_names(out.ok()),
        vec![alice.to_owned()],
        "{}",
        out.stdout
    );
    let out = synadm.run(&["user", "list", "--name", "Liddell"]).await;
    assert_eq!(
        user_names(out.ok()),
        vec![alice.to_owned()],
        "{}",
        out.stdout
    );
    let out = synadm.run(&["user", "list", "-n", "carol"]).await;
    assert!(user_names(out.ok()).is_empty(), "{}", out.stdout);
    let out = synadm.run(&["user", "list", "-d", "-n", "carol"]).await;
    assert_eq!(
        user_names(out.ok()),
        vec![carol.to_owned()],
        "{}",
        out.stdout
    );
    // -i: the user id contains.
    let out = synadm.run(&["user", "list", "-i", bob]).await;
    assert_eq!(user_names(out.ok()), vec![bob.to_owned()], "{}", out.stdout);

    // -G / -g: without and with guests.
    let out = synadm.run(&["user", "list", "-G"]).await;
    assert_eq!(
        set(user_names(out.ok())),
        set([root, alice, bob]),
        "{}",
        out.stdout
    );
    let out = synadm.run(&["user", "list", "--guests"]).await;
    assert!(user_names(out.ok()).contains(&guest), "{}", out.stdout);

    // -a / -A: admins only, non-admins only.
    let out = synadm.run(&["user", "list", "-a"]).await;
    assert_eq!(
        user_names(out.ok()),
        vec![root.to_owned()],
        "{}",
        out.stdout
    );
    let out = synadm.run(&["user", "list", "--non-admins"]).await;
    assert_eq!(
        set(user_names(out.ok())),
        set([alice, bob, &guest]),
        "{}",
        out.stdout
    );

    // Pagination: -l, then --from the next_token.
    let out = synadm.run(&["user", "list", "-G", "-l", "2"]).await;
    let page1 = out.ok();
    assert_eq!(user_names(page1).len(), 2, "{page1}");
    assert_eq!(page1["total"], 3, "{page1}");
    // Synapse's next_token is a string ("2").
    let next = page1["next_token"]
        .as_str()
        .unwrap_or_else(|| panic!("next_token (a string) with more to come: {page1}"))
        .to_owned();
    assert_eq!(next, "2", "{page1}");
    let out = synadm
        .run(&["user", "list", "-G", "-l", "2", "-f", &next])
        .await;
    let page2 = out.ok();
    assert_eq!(user_names(page2).len(), 1, "{page2}");
    assert!(page2.get("next_token").is_none(), "{page2}");
    let mut both = user_names(page1);
    both.extend(user_names(page2));
    assert_eq!(set(both), set([root, alice, bob]));

    // --sort-by name --reverse.
    let out = synadm
        .run(&["user", "list", "-G", "--sort-by", "name", "--reverse"])
        .await;
    let names = user_names(out.ok());
    let mut sorted = names.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(names, sorted, "{}", out.stdout);

    // `user search` runs `user list -d -g -n` twice (lower-case, capitalised).
    let out = synadm.run(&["user", "search", "CAROL"]).await;
    out.assert_clean();
    assert_eq!(out.docs.len(), 2, "{}", out.describe());
    assert_eq!(user_names(&out.docs[0]), vec![carol.to_owned()]);

    // `user details`, as GET /_synapse/admin/v2/users/{id} answers.
    let out = synadm.run(&["user", "details", alice]).await;
    let d = out.ok();
    assert_eq!(d["name"], alice, "{d}");
    assert_eq!(d["displayname"], "Alice Liddell", "{d}");
    assert_eq!(d["admin"], false, "{d}");
    assert_eq!(d["deactivated"], false, "{d}");
    assert_eq!(
        stable(d.clone()),
        stable(user_json(&server, &admin, alice).await)
    );
    // A localpart is completed with the configured homeserver name.
    let out = synadm.run(&["user", "details", "bob"]).await;
    assert_eq!(out.ok()["name"], bob, "{}", out.stdout);
    // An unknown user: the API's 404.
    let out = synadm.run(&["user", "details", "@nobody:test.local"]).await;
    assert_eq!(out.last()["errcode"], "M_NOT_FOUND", "{}", out.describe());
    assert!(out.http_errors().iter().any(|l| l.contains("404")));
}

/// `user list --exclude-user-type bot` sends `not_user_type=bot`.
#[tokio::test]
async fn synadm_user_list_exclude_user_type() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let Some(synadm) = Synadm::new(&server, &admin) else {
        return;
    };
    let alice = server.user("alice").await;
    server.user("robot").await;
    let out = synadm
        .run(&["--batch", "user", "modify", "robot", "--user-type", "bot"])
        .await;
    assert_eq!(out.ok()["user_type"], "bot", "{}", out.describe());
    let out = synadm.run(&["user", "list"]).await;
    assert_eq!(
        set(user_names(out.ok())),
        set([&admin.user_id, &alice.user_id, "@robot:test.local"])
    );
    let out = synadm
        .run(&["user", "list", "--exclude-user-type", "bot"])
        .await;
    assert_eq!(
        set(user_names(out.ok())),
        set([&admin.user_id, &alice.user_id]),
        "not_user_type=bot must leave out bots: {}",
        out.stdout
    );
}

// ---------------------------------------------------------------------------
// users: modify, password, login, whois, membership
// ---------------------------------------------------------------------------

#[tokio::test]
async fn synadm_user_modify() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let Some(synadm) = Synadm::new(&server, &admin) else {
        return;
    };
    let alice = server.user("alice").await;
    let uid = alice.user_id.as_str();

    // Display name and the admin flag; synadm shows the account first.
    let out = synadm
        .run(&[
            "--batch",
            "user",
            "modify",
            uid,
            "-n",
            "Alice Liddell",
            "-a",
        ])
        .await;
    let m = out.ok();
    assert_eq!(
        out.docs.len(),
        2,
        "current settings, then the result: {}",
        out.stdout
    );
    assert_eq!(out.docs[0]["admin"], false);
    assert_eq!(m["name"], uid, "{m}");
    assert_eq!(m["displayname"], "Alice Liddell", "{m}");
    assert_eq!(m["admin"], true, "{m}");
    assert_eq!(displayname(&server, uid).await, "Alice Liddell");
    let (st, b) = admin_get(
        &server,
        &admin,
        &format!("/_synapse/admin/v1/users/{}/admin", enc(uid)),
    )
    .await;
    assert_eq!((st, b), (StatusCode::OK, json!({"admin": true})));
    // Now an admin, alice may use the admin API herself.
    let (st, b) = server.get("/_synapse/admin/v2/users", alice.token()).await;
    assert_eq!(st, StatusCode::OK, "{b}");

    // --no-admin takes it back.
    let out = synadm
        .run(&["--batch", "user", "modify", uid, "--no-admin"])
        .await;
    assert_eq!(out.ok()["admin"], false, "{}", out.stdout);
    let r = server.get("/_synapse/admin/v2/users", alice.token()).await;
    assert_error(&r, 403, "M_FORBIDDEN");

    // A password: the old one stops working, the new one works, and the
    // sessions end. (`--no-logout` changes nothing: synadm 0.49.2 sends
    // `logout_devices` only when it is true, so the API's default applies;
    // `user password -n` does send it, see synadm_user_password.)
    let out = synadm
        .run(&[
            "--batch",
            "user",
            "modify",
            uid,
            "-P",
            "brand new password",
            "--no-logout",
        ])
        .await;
    out.ok();
    let (st, _) = server.try_login("alice", "password123").await;
    assert_eq!(st, StatusCode::FORBIDDEN, "the old password is gone");
    server.login("alice", "brand new password").await;
    let r = server.whoami(alice.token()).await;
    assert_error(&r, 401, "M_UNKNOWN_TOKEN");

    // Without --batch the question is answered on stdin; "n" changes nothing.
    let out = synadm
        .run_with_input(&["user", "modify", uid, "-n", "Not Applied"], "n\n")
        .await;
    out.assert_clean();
    assert!(out.stdout.contains("Abort."), "{}", out.describe());
    assert_eq!(displayname(&server, uid).await, "Alice Liddell");
    let out = synadm
        .run_with_input(&["user", "modify", uid, "-n", "Alice L."], "y\n")
        .await;
    assert_eq!(out.ok()["displayname"], "Alice L.", "{}", out.stdout);
    assert_eq!(displayname(&server, uid).await, "Alice L.");

    // An unknown user id creates the account (the 404 lookup comes first).
    let out = synadm
        .run(&[
            "--batch",
            "user",
            "modify",
            "@frank:test.local",
            "-P",
            "frank password 1",
            "-n",
            "Frank",
        ])
        .await;
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert_eq!(out.docs.len(), 2, "{}", out.describe());
    assert_eq!(out.docs[0]["errcode"], "M_NOT_FOUND");
    let created = out.last();
    assert_eq!(created["name"], "@frank:test.local", "{created}");
    assert_eq!(created["displayname"], "Frank", "{created}");
    assert_eq!(created["admin"], false, "{created}");
    let frank = server.login("frank", "frank password 1").await;
    assert_eq!(frank.user_id, "@frank:test.local");
}

/// `user modify --lock` / `--unlock`: while locked, the account's requests get
/// 401 `M_USER_LOCKED` (its tokens stay valid and work again once unlocked).
#[tokio::test]
async fn synadm_user_lock() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let Some(synadm) = Synadm::new(&server, &admin) else {
        return;
    };
    let frank = server.user("frank").await;
    let out = synadm
        .run(&["--batch", "user", "modify", "frank", "--lock"])
        .await;
    assert_eq!(out.ok()["locked"], true, "{}", out.stdout);
    assert_eq!(
        user_json(&server, &admin, &frank.user_id).await["locked"],
        true
    );
    let out = synadm.run(&["user", "list"]).await;
    assert!(
        !user_names(out.ok()).contains(&frank.user_id),
        "locked users are left out by default"
    );
    let out = synadm.run(&["user", "list", "--locked"]).await;
    assert!(user_names(out.ok()).contains(&frank.user_id));
    let r = server.whoami(frank.token()).await;
    assert_error(&r, 401, "M_USER_LOCKED");
    let out = synadm
        .run(&["--batch", "user", "modify", "frank", "--unlock"])
        .await;
    assert_eq!(out.ok()["locked"], false, "{}", out.stdout);
    let (st, b) = server.whoami(frank.token()).await;
    assert_eq!(st, StatusCode::OK, "unlocked: {b}");
}

#[tokio::test]
async fn synadm_user_password() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let Some(synadm) = Synadm::new(&server, &admin) else {
        return;
    };
    let bob = server.user("bob").await;

    // Default: the password changes and every session is logged out.
    let out = synadm
        .run(&["user", "password", &bob.user_id, "-p", "reset password 1"])
        .await;
    assert_eq!(out.ok(), &json!({}), "{}", out.describe());
    let r = server.whoami(bob.token()).await;
    assert_error(&r, 401, "M_UNKNOWN_TOKEN");
    let (st, _) = server.try_login("bob", "password123").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let bob2 = server.login("bob", "reset password 1").await;

    // -n: the sessions stay.
    let out = synadm
        .run(&["user", "password", "-n", "bob", "-p", "reset password 2"])
        .await;
    assert_eq!(out.ok(), &json!({}), "{}", out.describe());
    let (st, b) = server.whoami(bob2.token()).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    server.login("bob", "reset password 2").await;

    // The password prompt (with its confirmation) answered on stdin.
    let out = synadm
        .run_with_input(
            &["user", "password", "-n", "bob"],
            "prompted password 3\nprompted password 3\n",
        )
        .await;
    assert_eq!(out.ok(), &json!({}), "{}", out.describe());
    server.login("bob", "prompted password 3").await;

    // An unknown user.
    let out = synadm
        .run(&[
            "user",
            "password",
            "@nobody:test.local",
            "-p",
            "whatever pw",
        ])
        .await;
    assert_eq!(out.last()["errcode"], "M_NOT_FOUND", "{}", out.describe());
}

#[tokio::test]
async fn synadm_user_login_whois_membership() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let Some(synadm) = Synadm::new(&server, &admin) else {
        return;
    };
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;

    // user login: a token that acts as bob (default expiry: one day).
    let out = synadm.run(&["--batch", "user", "login", "bob"]).await;
    let token = out.ok()["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("access_token: {}", out.describe()))
        .to_owned();
    let (st, who) = server.whoami(Some(&token)).await;
    assert_eq!(st, StatusCode::OK, "{who}");
    assert_eq!(who["user_id"], bob.user_id.as_str());
    // --expire-never, interactive (the warning is text, the token JSON).
    let out = synadm
        .run(&["user", "login", "--expire-never", &bob.user_id])
        .await;
    let t2 = out.ok()["access_token"].as_str().expect("access_token");
    let (st, who) = server.whoami(Some(t2)).await;
    assert_eq!(st, StatusCode::OK, "{who}");
    assert_eq!(who["user_id"], bob.user_id.as_str());
    // Acting as bob for real: a room created with the token is bob's.
    let room = create_room(
        &server,
        &Session {
            user_id: bob.user_id.clone(),
            access_token: token.clone(),
            device_id: String::new(),
        },
        json!({"name": "made by login-as", "room_alias_name": "bobs", "preset": "public_chat"}),
    )
    .await;
    let (_, details) = admin_get(
        &server,
        &admin,
        &format!("/_synapse/admin/v1/rooms/{}", enc(&room)),
    )
    .await;
    assert_eq!(details["creator"], bob.user_id.as_str(), "{details}");
    join(&server, &alice, &room).await;

    // whois: bob's sessions with their connections.
    let (st, _) = server.whoami(bob.token()).await;
    assert_eq!(st, StatusCode::OK);
    let out = synadm.run(&["user", "whois", "bob"]).await;
    let w = out.ok();
    assert_eq!(w["user_id"], bob.user_id.as_str(), "{w}");
    let devices = w["devices"]
        .as_object()
        .unwrap_or_else(|| panic!("devices: {w}"));
    let mut connections = Vec::new();
    for device in devices.values() {
        for session in device["sessions"].as_array().into_iter().flatten() {
            connections.extend(session["connections"].as_array().into_iter().flatten());
        }
    }
    assert!(
        connections
            .iter()
            .any(|c| c["ip"] == "127.0.0.1" && c["last_seen"].is_i64()),
        "a connection from 127.0.0.1: {w}"
    );
    let (st, http) = admin_get(
        &server,
        &admin,
        &format!("/_synapse/admin/v1/whois/{}", enc(&bob.user_id)),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(http["user_id"], w["user_id"]);

    // membership --ids: the rooms alice is joined to.
    let out = synadm
        .run(&["user", "membership", "--ids", &alice.user_id])
        .await;
    let m = out.ok();
    assert_eq!(strings(&m["joined_rooms"]), vec![room.clone()], "{m}");
    assert_eq!(m["total"], 1, "{m}");
    let (st, http) = admin_get(
        &server,
        &admin,
        &format!(
            "/_synapse/admin/v1/users/{}/joined_rooms",
            enc(&alice.user_id)
        ),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(m, &http);
}

/// `user membership` (aliases, the default) looks each room's aliases up with
/// `GET /_matrix/client/r0/rooms/{roomId}/aliases` as the admin, who need not
/// be in the room: Synapse lets server admins read any room's aliases.
#[tokio::test]
async fn synadm_user_membership_with_aliases() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let Some(synadm) = Synadm::new(&server, &admin) else {
        return;
    };
    let alice = server.user("alice").await;
    let room = create_room(
        &server,
        &alice,
        json!({"name": "Aliased", "room_alias_name": "aliased"}),
    )
    .await;
    let out = synadm.run(&["user", "membership", "alice"]).await;
    let m = out.ok();
    assert_eq!(
        strings(&m["joined_rooms"]),
        vec!["#aliased:test.local".to_owned()],
        "room {room} shown by its alias: {m}"
    );
}

/// `user login --expire-ts` sends `valid_until_ms`: the token must stop
/// working then.
#[tokio::test]
async fn synadm_user_login_expiry() {
    let server = TestServer::start_with_mock_clock(|_| {}).await;
    let admin = server.admin("root").await;
    let Some(synadm) = Synadm::new(&server, &admin) else {
        return;
    };
    let bob = server.user("bob").await;
    let expires = server.now_ms() + 1500;
    let out = synadm
        .run(&[
            "--batch",
            "user",
            "login",
            &bob.user_id,
            "--expire-ts",
            &expires.to_string(),
        ])
        .await;
    let token = out.ok()["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    server.advance(Duration::from_millis(2000));
    let r = server.whoami(Some(&token)).await;
    assert_error(&r, 401, "M_UNKNOWN_TOKEN");
}

// ---------------------------------------------------------------------------
// users: deactivate
// ---------------------------------------------------------------------------

#[tokio::test]
async fn synadm_user_deactivate() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let Some(synadm) = Synadm::new(&server, &admin) else {
        return;
    };
    let trent = server.user("trent").await;
    let uid = trent.user_id.as_str();

    // The question answered "n": nothing happens.
    let out = synadm
        .run_with_input(&["user", "deactivate", uid], "n\n")
        .await;
    out.assert_clean();
    assert!(out.stdout.contains("Abort."), "{}", out.describe());
    assert_eq!(user_json(&server, &admin, uid).await["deactivated"], false);
    let (st, _) = server.whoami(trent.token()).await;
    assert_eq!(st, StatusCode::OK);

    // Answered "y": the details, the memberships, then the API's answer.
    let out = synadm
        .run_with_input(&["user", "deactivate", uid], "y\n")
        .await;
    let d = out.ok();
    assert_eq!(
        d,
        &json!({"id_server_unbind_result": "success"}),
        "{}",
        out.describe()
    );
    assert_eq!(out.docs.len(), 3, "{}", out.describe());
    assert_eq!(out.docs[0]["name"], uid);
    assert_eq!(out.docs[1]["total"], 0);
    let u = user_json(&server, &admin, uid).await;
    assert_eq!(u["deactivated"], true, "{u}");
    assert_eq!(u["erased"], false, "{u}");
    let r = server.whoami(trent.token()).await;
    assert_error(&r, 401, "M_UNKNOWN_TOKEN");
    let r = server.try_login("trent", "password123").await;
    assert_eq!(r.0, StatusCode::FORBIDDEN, "{}", r.1);
    let out = synadm.run(&["user", "list"]).await;
    assert!(!user_names(out.ok()).contains(&trent.user_id));
    let out = synadm.run(&["user", "list", "-d"]).await;
    assert!(user_names(out.ok()).contains(&trent.user_id));

    // --batch and -e (GDPR erase).
    let victor = server.user("victor").await;
    let out = synadm
        .run(&["--batch", "user", "deactivate", "-e", "victor"])
        .await;
    assert_eq!(out.ok(), &json!({"id_server_unbind_result": "success"}));
    let u = user_json(&server, &admin, &victor.user_id).await;
    assert_eq!(u["deactivated"], true, "{u}");
    assert_eq!(u["erased"], true, "{u}");
}

/// Deactivating a user who is in rooms the admin is not in: synadm first
/// lists the memberships with aliases (see `synadm_user_membership_with_aliases`),
/// then deactivates; the user leaves every room.
#[tokio::test]
async fn synadm_user_deactivate_member_of_rooms() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let Some(synadm) = Synadm::new(&server, &admin) else {
        return;
    };
    let alice = server.user("alice").await;
    let mallory = server.user("mallory").await;
    let room = create_room(
        &server,
        &alice,
        json!({"name": "Mallory was here", "room_alias_name": "mal", "preset": "public_chat"}),
    )
    .await;
    join(&server, &mallory, &room).await;
    let out = synadm
        .run_with_input(&["user", "deactivate", &mallory.user_id], "y\n")
        .await;
    assert_eq!(
        out.ok(),
        &json!({"id_server_unbind_result": "success"}),
        "{}",
        out.describe()
    );
    assert_eq!(
        user_json(&server, &admin, &mallory.user_id).await["deactivated"],
        true
    );
    assert_eq!(
        room_members(&server, &admin, &room).await,
        set([&alice.user_id])
    );
}

// ---------------------------------------------------------------------------
// rooms
// ---------------------------------------------------------------------------

#[tokio::test]
async fn synadm_rooms() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let Some(synadm) = Synadm::new(&server, &admin) else {
        return;
    };
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let lounge = create_room(
        &server,
        &alice,
        json!({"name": "Synadm Lounge", "topic": "admin tools", "room_alias_name": "lounge", "preset": "public_chat"}),
    )
    .await;
    join(&server, &bob, &lounge).await;
    send_text(&server, &bob, &lounge, "hello from bob").await;
    let private = create_room(&server, &bob, json!({"name": "Back Office"})).await;

    // room list: both rooms, in the API's shape.
    let out = synadm.run(&["room", "list"]).await;
    let l = out.ok();
    assert_eq!(set(room_ids(&l["rooms"])), set([&lounge, &private]), "{l}");
    assert_eq!(l["total_rooms"], 2, "{l}");
    let (st, http) = admin_get(&server, &admin, "/_synapse/admin/v1/rooms").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(room_ids(&l["rooms"]), room_ids(&http["rooms"]));
    let r = l["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room_id"] == lounge.as_str())
        .unwrap();
    assert_eq!(r["name"], "Synadm Lounge", "{r}");
    assert_eq!(r["canonical_alias"], "#lounge:test.local", "{r}");
    assert_eq!(r["joined_members"], 2, "{r}");
    assert_eq!(r["joined_local_members"], 2, "{r}");
    assert_eq!(r["creator"], alice.user_id.as_str(), "{r}");
    assert_eq!(r["join_rules"], "public", "{r}");

    // Search by name, by alias; `room search` is the same.
    let out = synadm.run(&["room", "list", "-n", "Lounge"]).await;
    assert_eq!(
        room_ids(&out.ok()["rooms"]),
        vec![lounge.clone()],
        "{}",
        out.stdout
    );
    let out = synadm.run(&["room", "list", "--name", "office"]).await;
    assert_eq!(
        room_ids(&out.ok()["rooms"]),
        vec![private.clone()],
        "{}",
        out.stdout
    );
    let out = synadm.run(&["room", "search", "lounge"]).await;
    assert_eq!(
        room_ids(&out.ok()["rooms"]),
        vec![lounge.clone()],
        "{}",
        out.stdout
    );
    let out = synadm.run(&["room", "list", "-n", "no such room"]).await;
    let none = out.ok();
    assert!(room_ids(&none["rooms"]).is_empty(), "{none}");
    assert_eq!(none["total_rooms"], 0, "{none}");
    // Sorted by members, and paginated.
    let out = synadm.run(&["room", "list", "-s", "joined_members"]).await;
    assert_eq!(
        room_ids(&out.ok()["rooms"]),
        vec![lounge.clone(), private.clone()]
    );
    let out = synadm.run(&["room", "list", "-l", "1"]).await;
    let p = out.ok();
    assert_eq!(room_ids(&p["rooms"]).len(), 1, "{p}");
    assert_eq!(p["next_batch"], 1, "{p}");

    // room details: as GET /_synapse/admin/v1/rooms/{id}.
    let out = synadm.run(&["room", "details", &lounge]).await;
    let d = out.ok();
    assert_eq!(d["room_id"], lounge.as_str(), "{d}");
    assert_eq!(d["name"], "Synadm Lounge", "{d}");
    assert_eq!(d["topic"], "admin tools", "{d}");
    assert_eq!(d["canonical_alias"], "#lounge:test.local", "{d}");
    assert_eq!(d["joined_members"], 2, "{d}");
    assert_eq!(d["public"], false, "{d}");
    let (st, http) = admin_get(
        &server,
        &admin,
        &format!("/_synapse/admin/v1/rooms/{}", enc(&lounge)),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(d, &http);

    // room members.
    let out = synadm.run(&["room", "members", &lounge]).await;
    let m = out.ok();
    assert_eq!(
        set(strings(&m["members"])),
        set([&alice.user_id, &bob.user_id]),
        "{m}"
    );
    assert_eq!(m["total"], 2, "{m}");

    // room state: every current state event.
    let out = synadm.run(&["room", "state", &lounge]).await;
    let s = out.ok();
    let events = s["state"].as_array().unwrap_or_else(|| panic!("{s}"));
    let find = |ty: &str, key: &str| {
        events
            .iter()
            .find(|e| e["type"] == ty && e["state_key"] == key)
            .unwrap_or_else(|| panic!("no {ty}/{key} in {s}"))
    };
    assert_eq!(find("m.room.create", "")["sender"], alice.user_id.as_str());
    assert_eq!(find("m.room.name", "")["content"]["name"], "Synadm Lounge");
    assert_eq!(find("m.room.topic", "")["content"]["topic"], "admin tools");
    assert_eq!(
        find("m.room.member", &bob.user_id)["content"]["membership"],
        "join"
    );
    assert!(
        events
            .iter()
            .all(|e| e["event_id"].is_string() && e["room_id"] == lounge.as_str()),
        "{s}"
    );

    // room resolve, both ways (Matrix API, not the admin API).
    let out = synadm.run(&["room", "resolve", "#lounge:test.local"]).await;
    out.assert_clean();
    assert_eq!(
        serde_json::from_str::<Value>(out.stdout.trim()).ok(),
        Some(json!(lounge)),
        "{}",
        out.describe()
    );

    // room block / block-status / unblock.
    let out = synadm.run(&["room", "block", &private]).await;
    assert_eq!(out.ok(), &json!({"block": true}), "{}", out.describe());
    let out = synadm.run(&["room", "block-status", &private]).await;
    assert_eq!(
        out.ok(),
        &json!({"block": true, "user_id": admin.user_id}),
        "{}",
        out.describe()
    );
    let (st, http) = admin_get(
        &server,
        &admin,
        &format!("/_synapse/admin/v1/rooms/{}/block", enc(&private)),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(http, json!({"block": true, "user_id": admin.user_id}));
    // A blocked room cannot be joined (bob invites carol; she cannot accept).
    let (st, b) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&private)),
            bob.token(),
            json!({"user_id": carol.user_id}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "invite into a blocked room: {b}");
    let out = synadm.run(&["room", "block", "-u", &private]).await;
    assert_eq!(out.ok(), &json!({"block": false}), "{}", out.describe());
    let out = synadm.run(&["room", "block-status", &private]).await;
    assert_eq!(out.ok(), &json!({"block": false}), "{}", out.describe());
    let (st, b) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&private)),
            bob.token(),
            json!({"user_id": carol.user_id}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "invite after unblocking: {b}");
    join(&server, &carol, &private).await;

    // room make-admin: the caller gets the room creator's power (PL 100).
    let out = synadm.run(&["room", "make-admin", &private]).await;
    assert_eq!(out.ok(), &json!({}), "{}", out.describe());
    let pl = admin_state_content(&server, &admin, &private, "m.room.power_levels").await;
    assert_eq!(pl["users"][&admin.user_id], 100, "{pl}");
    // -u: another user (carol, a member) likewise.
    let out = synadm
        .run(&["room", "make-admin", "-u", "carol", &private])
        .await;
    assert_eq!(out.ok(), &json!({}), "{}", out.describe());
    let pl = admin_state_content(&server, &admin, &private, "m.room.power_levels").await;
    assert_eq!(pl["users"][&carol.user_id], 100, "{pl}");

    // room join: an admin puts a local user into a public room.
    let dave = server.user("dave").await;
    let out = synadm.run(&["room", "join", &lounge, "dave"]).await;
    assert_eq!(out.ok(), &json!({"room_id": lounge}), "{}", out.describe());
    assert!(
        room_members(&server, &admin, &lounge)
            .await
            .contains(&dave.user_id)
    );
}

#[tokio::test]
async fn synadm_room_delete() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let Some(synadm) = Synadm::new(&server, &admin) else {
        return;
    };
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let doomed = create_room(
        &server,
        &alice,
        json!({"name": "Doomed", "room_alias_name": "doomed", "preset": "public_chat"}),
    )
    .await;
    join(&server, &bob, &doomed).await;
    send_text(&server, &alice, &doomed, "soon gone").await;
    let kept = create_room(&server, &alice, json!({"name": "Kept"})).await;

    // Deletion with purge (v2, the default) and --block; the question is
    // answered on stdin. synadm shows details and members first.
    let out = synadm
        .run_with_input(&["room", "delete", "--block", &doomed], "y\n")
        .await;
    let started = out.ok();
    assert_eq!(out.docs.len(), 3, "{}", out.describe());
    assert_eq!(out.docs[0]["room_id"], doomed.as_str());
    assert_eq!(out.docs[1]["total"], 2);
    let delete_id = started["delete_id"]
        .as_str()
        .unwrap_or_else(|| panic!("delete_id: {started}"))
        .to_owned();

    // delete-status by delete id until it completes.
    let status = wait_until("the deletion", Duration::from_secs(60), || async {
        let out = synadm
            .run(&["room", "delete-status", "-d", &delete_id])
            .await;
        let s = out.ok().clone();
        match s["status"].as_str().unwrap_or_default() {
            "complete" => Ok(s),
            "failed" => panic!("room deletion failed: {s}"),
            "scheduled" | "active" | "shutting_down" | "purging" => Err(s.to_string()),
            other => panic!("unexpected delete status {other:?}: {s}"),
        }
    })
    .await;
    assert_eq!(status["delete_id"], delete_id.as_str(), "{status}");
    let kicked = set(strings(&status["shutdown_room"]["kicked_users"]));
    assert_eq!(kicked, set([&alice.user_id, &bob.user_id]), "{status}");
    assert_eq!(
        strings(&status["shutdown_room"]["local_aliases"]),
        vec!["#doomed:test.local".to_owned()],
        "{status}"
    );
    // By room id: the same deletion, in a results list.
    let out = synadm.run(&["room", "delete-status", "-r", &doomed]).await;
    let by_room = out.ok();
    let results = by_room["results"]
        .as_array()
        .unwrap_or_else(|| panic!("{by_room}"));
    assert_eq!(results.len(), 1, "{by_room}");
    assert_eq!(results[0]["delete_id"], delete_id.as_str());
    assert_eq!(results[0]["room_id"], doomed.as_str());
    assert_eq!(results[0]["status"], "complete");

    // Gone: 404 for the admin API and for synadm; not listed; nobody in it.
    let r = admin_get(
        &server,
        &admin,
        &format!("/_synapse/admin/v1/rooms/{}", enc(&doomed)),
    )
    .await;
    assert_error(&r, 404, "M_NOT_FOUND");
    let out = synadm.run(&["room", "details", &doomed]).await;
    assert_eq!(out.last()["errcode"], "M_NOT_FOUND", "{}", out.describe());
    let out = synadm.run(&["room", "list"]).await;
    assert_eq!(room_ids(&out.ok()["rooms"]), vec![kept.clone()]);
    let (st, jr) = server
        .get("/_matrix/client/v3/joined_rooms", bob.token())
        .await;
    assert_eq!(st, StatusCode::OK);
    assert!(strings(&jr["joined_rooms"]).is_empty(), "{jr}");
    let (st, b) = server
        .get(
            "/_matrix/client/v3/directory/room/%23doomed:test.local",
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "the alias is gone: {b}");
    // --block: it stays blocked.
    let out = synadm.run(&["room", "block-status", &doomed]).await;
    assert_eq!(out.ok()["block"], true, "{}", out.describe());

    // Deleting it again: synadm stops at the 404 ("Room not found.").
    let out = synadm.run(&["--batch", "room", "delete", &doomed]).await;
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(out.stdout.contains("Room not found."), "{}", out.describe());

    // Answered "n": nothing happens.
    let out = synadm
        .run_with_input(&["room", "delete", &kept], "n\n")
        .await;
    out.assert_clean();
    assert!(out.stdout.contains("Abort."), "{}", out.describe());
    let (st, _) = admin_get(
        &server,
        &admin,
        &format!("/_synapse/admin/v1/rooms/{}", enc(&kept)),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
}

/// `room delete --v1` uses Synapse's synchronous
/// `DELETE /_synapse/admin/v1/rooms/{roomId}`.
#[tokio::test]
async fn synadm_room_delete_v1() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let Some(synadm) = Synadm::new(&server, &admin) else {
        return;
    };
    let alice = server.user("alice").await;
    let room = create_room(&server, &alice, json!({"name": "Doomed v1"})).await;
    let out = synadm
        .run(&["--batch", "room", "delete", "--v1", &room])
        .await;
    let d = out.ok();
    assert_eq!(
        strings(&d["kicked_users"]),
        vec![alice.user_id.clone()],
        "{d}"
    );
    assert!(d["failed_to_kick_users"].is_array(), "{d}");
    assert!(d["local_aliases"].is_array(), "{d}");
    let r = admin_get(
        &server,
        &admin,
        &format!("/_synapse/admin/v1/rooms/{}", enc(&room)),
    )
    .await;
    assert_error(&r, 404, "M_NOT_FOUND");
}

// ---------------------------------------------------------------------------
// server notices
// ---------------------------------------------------------------------------

#[tokio::test]
async fn synadm_notice_send() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let Some(synadm) = Synadm::new(&server, &admin) else {
        return;
    };
    let bob = server.user("bob").await;
    let bobby = server.user("bobby").await;
    let alice = server.user("alice").await;

    // One recipient, plain and HTML bodies.
    let out = synadm
        .run(&[
            "--batch",
            "notice",
            "send",
            "bob",
            "Maintenance at 22:00",
            "<b>Maintenance</b> at 22:00",
        ])
        .await;
    let sent = out
        .ok()
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("{}", out.describe()));
    assert_eq!(sent.len(), 1, "{}", out.describe());
    let event_id = sent[0]["event_id"]
        .as_str()
        .unwrap_or_else(|| panic!("event_id: {}", out.describe()))
        .to_owned();

    // bob sees an invite from the notices user, joins, and finds the notice.
    let body = sync(&server, &bob, "timeout=0").await;
    let invites = body["rooms"]["invite"]
        .as_object()
        .unwrap_or_else(|| panic!("no invite in /sync: {body}"));
    assert_eq!(invites.len(), 1, "{body}");
    let (room, _) = invites.iter().next().unwrap();
    let room = room.clone();
    join(&server, &bob, &room).await;
    let body = sync(&server, &bob, "timeout=0").await;
    let timeline = body["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no timeline for {room}: {body}"));
    let notice = timeline
        .iter()
        .find(|e| e["event_id"] == event_id.as_str())
        .unwrap_or_else(|| panic!("notice {event_id} not in /sync: {body}"));
    assert_eq!(notice["type"], "m.room.message", "{notice}");
    assert_eq!(notice["sender"], server.user_id("_server"), "{notice}");
    assert_eq!(notice["content"]["msgtype"], "m.text", "{notice}");
    assert_eq!(
        notice["content"]["body"], "Maintenance at 22:00",
        "{notice}"
    );
    assert_eq!(notice["content"]["format"], "org.matrix.custom.html");
    assert_eq!(
        notice["content"]["formatted_body"],
        "<b>Maintenance</b> at 22:00"
    );

    // A regex over the user list, confirmed on stdin: bob and bobby only.
    let out = synadm
        .run_with_input(&["notice", "send", "-r", "@bob.*", "Second notice"], "y\n")
        .await;
    let sent = out
        .ok()
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("{}", out.describe()));
    assert_eq!(sent.len(), 2, "{}", out.describe());
    assert!(
        sent.iter().all(|s| s["event_id"].is_string()),
        "{}",
        out.describe()
    );
    assert!(
        out.stdout.contains(&bobby.user_id),
        "the preview lists bobby"
    );
    let body = sync(&server, &bob, "timeout=0").await;
    let bodies: Vec<&Value> = body["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|e| &e["content"]["body"])
        .collect();
    assert!(bodies.contains(&&json!("Second notice")), "{body}");
    let body = sync(&server, &bobby, "timeout=0").await;
    assert_eq!(
        body["rooms"]["invite"].as_object().map(|o| o.len()),
        Some(1),
        "{body}"
    );
    let body = sync(&server, &alice, "timeout=0").await;
    assert!(
        body["rooms"]["invite"]
            .as_object()
            .is_none_or(|o| o.is_empty()),
        "alice got nothing: {body}"
    );
}

// ---------------------------------------------------------------------------
// registration tokens
// ---------------------------------------------------------------------------

async fn token_valid(server: &TestServer, token: &str) -> bool {
    let (st, b) = server
        .get(
            &format!(
                "/_matrix/client/v1/register/m.login.registration_token/validity?token={}",
                enc(token)
            ),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "validity of {token}: {b}");
    b["valid"].as_bool().expect("valid")
}

#[tokio::test]
async fn synadm_regtok() {
    let server = TestServer::start_with(|c| c.registration.requires_token = true).await;
    let admin = server.admin("root").await;
    let Some(synadm) = Synadm::new(&server, &admin) else {
        return;
    };

    let out = synadm.run(&["regtok", "list"]).await;
    assert_eq!(
        out.ok(),
        &json!({"registration_tokens": []}),
        "{}",
        out.describe()
    );

    // new: a generated token of the asked length.
    let out = synadm.run(&["regtok", "new", "-l", "12", "-u", "2"]).await;
    let t = out.ok().clone();
    let token = t["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{t}"))
        .to_owned();
    assert_eq!(token.len(), 12, "{t}");
    assert_eq!(t["uses_allowed"], 2, "{t}");
    assert_eq!(t["pending"], 0, "{t}");
    assert_eq!(t["completed"], 0, "{t}");
    assert_eq!(t["expiry_time"], Value::Null, "{t}");
    assert!(token_valid(&server, &token).await);
    let (st, http) = admin_get(
        &server,
        &admin,
        &format!("/_synapse/admin/v1/registration_tokens/{}", enc(&token)),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(http, t);

    // list (timestamps as numbers) and details.
    let out = synadm.run(&["regtok", "list", "--ts"]).await;
    assert_eq!(out.ok(), &json!({"registration_tokens": [t]}));
    let out = synadm.run(&["regtok", "list", "--valid"]).await;
    assert_eq!(
        out.ok()["registration_tokens"].as_array().map(Vec::len),
        Some(1)
    );
    let out = synadm.run(&["regtok", "list", "--invalid"]).await;
    assert_eq!(out.ok(), &json!({"registration_tokens": []}));
    let out = synadm.run(&["regtok", "details", "--ts", &token]).await;
    assert_eq!(out.ok(), &t);

    // update: uses and expiry; the default (datetime) view shows the date.
    let expiry = now_ms() + 86_400_000;
    let out = synadm
        .run(&[
            "regtok",
            "update",
            &token,
            "-u",
            "5",
            "-t",
            &expiry.to_string(),
        ])
        .await;
    let u = out.ok();
    assert_eq!(u["uses_allowed"], 5, "{u}");
    assert_eq!(u["expiry_time"], expiry, "{u}");
    let (_, http) = admin_get(
        &server,
        &admin,
        &format!("/_synapse/admin/v1/registration_tokens/{}", enc(&token)),
    )
    .await;
    assert_eq!(
        (&http["uses_allowed"], &http["expiry_time"]),
        (&json!(5), &json!(expiry))
    );
    let out = synadm.run(&["regtok", "details", &token]).await;
    assert!(
        out.ok()["expiry_time"]
            .as_str()
            .is_some_and(|s| s.len() == 19),
        "a YYYY-MM-DD HH:MM:SS date: {}",
        out.stdout
    );
    // -1 / -1: unlimited, no expiry.
    let out = synadm
        .run(&["regtok", "update", &token, "-u", "-1", "-t", "-1"])
        .await;
    let u = out.ok();
    assert_eq!(
        (&u["uses_allowed"], &u["expiry_time"]),
        (&Value::Null, &Value::Null),
        "{u}"
    );
    // No uses left: invalid.
    let out = synadm.run(&["regtok", "update", &token, "-u", "0"]).await;
    assert_eq!(out.ok()["uses_allowed"], 0);
    assert!(!token_valid(&server, &token).await);
    let out = synadm.run(&["regtok", "list", "--invalid", "--ts"]).await;
    assert_eq!(
        out.ok()["registration_tokens"][0]["token"],
        token.as_str(),
        "{}",
        out.stdout
    );

    // delete: synadm prints a sentence for the API's {}.
    let out = synadm.run(&["regtok", "delete", &token]).await;
    out.assert_clean();
    assert!(
        out.stdout
            .contains("Registration token successfully deleted."),
        "{}",
        out.describe()
    );
    let r = admin_get(
        &server,
        &admin,
        &format!("/_synapse/admin/v1/registration_tokens/{}", enc(&token)),
    )
    .await;
    assert_error(&r, 404, "M_NOT_FOUND");
    assert!(!token_valid(&server, &token).await);
    let out = synadm.run(&["regtok", "delete", &token]).await;
    assert_eq!(out.last()["errcode"], "M_NOT_FOUND", "{}", out.describe());
    let out = synadm.run(&["regtok", "details", &token]).await;
    assert_eq!(out.last()["errcode"], "M_NOT_FOUND", "{}", out.describe());
}

/// `regtok new -n TOKEN` sends `{"token", "length": 16, ...}`: Synapse ignores
/// `length` when `token` is given.
#[tokio::test]
async fn synadm_regtok_new_named() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let Some(synadm) = Synadm::new(&server, &admin) else {
        return;
    };
    let expiry = now_ms() + 86_400_000;
    let out = synadm
        .run(&[
            "regtok",
            "new",
            "-n",
            "synadm-token_1.x",
            "-u",
            "3",
            "-t",
            &expiry.to_string(),
        ])
        .await;
    let t = out.ok();
    assert_eq!(
        t,
        &json!({"token": "synadm-token_1.x", "uses_allowed": 3, "pending": 0, "completed": 0, "expiry_time": expiry}),
        "{}",
        out.describe()
    );
    assert!(token_valid(&server, "synadm-token_1.x").await);
}

// ---------------------------------------------------------------------------
// configuration
// ---------------------------------------------------------------------------

/// With synadm's default `homeserver: auto-retrieval` and a loopback
/// base_url, a bare localpart is completed with the `server_name` of
/// `GET /_matrix/key/v2/server`.
#[tokio::test]
async fn synadm_homeserver_auto_retrieval() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let Some(synadm) = Synadm::with_homeserver(&server, &admin, "auto-retrieval") else {
        return;
    };
    let alice = server.user("alice").await;
    let out = synadm.run(&["user", "details", "alice"]).await;
    assert_eq!(
        out.ok()["name"],
        alice.user_id.as_str(),
        "{}",
        out.describe()
    );
}

/// synadm's `media` commands (list by user and room, quarantine and
/// unquarantine by id, room and user, protect, delete by id and by age and
/// size, purge of the remote cache) and `user media`.
#[tokio::test]
async fn synadm_media() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let Some(synadm) = Synadm::new(&server, &admin) else {
        return;
    };
    let alice = server.user("alice").await;
    let first = upload(&server, &alice, &[1; 3000], None, Some("first.bin")).await;
    let second = upload(&server, &alice, b"second", None, None).await;
    let room = create_room(&server, &alice, json!({})).await;
    let mxc = |id: &str| format!("mxc://{}/{id}", server.server_name);
    send_event(
        &server,
        &alice,
        &room,
        "m.room.message",
        json!({"msgtype": "m.file", "body": "f", "url": mxc(&second)}),
    )
    .await;
    let served = |id: String| {
        let server = &server;
        let token = alice.access_token.clone();
        async move {
            download(server, &download_v1(server, &id), Some(&token))
                .await
                .status
        }
    };
    let media_ids = |v: &Value| -> BTreeSet<String> {
        v["media"]
            .as_array()
            .unwrap_or_else(|| panic!("no media: {v}"))
            .iter()
            .map(|m| m["media_id"].as_str().unwrap().to_owned())
            .collect()
    };

    let listed = synadm.run(&["user", "media", &alice.user_id]).await;
    assert_eq!(
        media_ids(listed.ok()),
        BTreeSet::from([first.clone(), second.clone()])
    );
    let page = synadm
        .run(&[
            "user",
            "media",
            &alice.user_id,
            "-l",
            "1",
            "-s",
            "media_length",
            "-r",
            "--ts",
        ])
        .await;
    let page = page.ok();
    assert_eq!(media_ids(page), BTreeSet::from([first.clone()]));
    assert_eq!(page["next_token"], 1, "{page}");
    let by_user = synadm.run(&["media", "list", "-u", &alice.user_id]).await;
    assert_eq!(media_ids(by_user.ok()).len(), 2);
    let by_room = synadm.run(&["media", "list", "-r", &room]).await;
    assert_eq!(
        by_room.ok(),
        &json!({"local": [mxc(&second)], "remote": []})
    );

    // Quarantine by id, then by room and user; protection keeps media served.
    let q = synadm.run(&["media", "quarantine", "-i", &first]).await;
    assert_eq!(q.ok(), &json!({}));
    assert_eq!(served(first.clone()).await, StatusCode::NOT_FOUND);
    let u = synadm
        .run(&["media", "unquarantine", "-U", &mxc(&first)])
        .await;
    assert_eq!(u.ok(), &json!({}));
    assert_eq!(served(first.clone()).await, StatusCode::OK);
    let p = synadm.run(&["media", "protect", &first]).await;
    assert_eq!(p.ok(), &json!({}));
    let by_user = synadm
        .run(&["media", "quarantine", "-u", &alice.user_id])
        .await;
    assert_eq!(by_user.ok(), &json!({"num_quarantined": 1}));
    let by_room = synadm.run(&["media", "quarantine", "-r", &room]).await;
    assert_eq!(by_room.ok(), &json!({"num_quarantined": 1}));
    assert_eq!(served(first.clone()).await, StatusCode::OK);
    assert_eq!(served(second.clone()).await, StatusCode::NOT_FOUND);

    // Remote cache purge: nothing cached.
    let purge = synadm
        .run(&["media", "purge", "-t", &(now_ms() + 1000).to_string()])
        .await;
    assert_eq!(purge.ok(), &json!({"deleted": 0}));

    // Delete by id, then by age and size (protected media stays).
    let unprotect = server
        .post(
            &format!("/_synapse/admin/v1/media/unprotect/{first}"),
            admin.token(),
            json!({}),
        )
        .await;
    assert_eq!(unprotect.0, StatusCode::OK, "{}", unprotect.1);
    let third = upload(&server, &alice, &[3; 4000], None, None).await;
    let small = upload(&server, &alice, b"small", None, None).await;
    let deleted = synadm
        .run(&["--batch", "media", "delete", "-i", &third])
        .await;
    assert_eq!(deleted.ok(), &json!({"deleted_media": [third], "total": 1}));
    let before = (now_ms() + 1000).to_string();
    let deleted = synadm
        .run(&["--batch", "media", "delete", "-t", &before, "--kib", "2"])
        .await;
    assert_eq!(deleted.ok(), &json!({"deleted_media": [first], "total": 1}));
    let left = synadm.run(&["user", "media", &alice.user_id]).await;
    assert_eq!(
        media_ids(left.ok()),
        BTreeSet::from([second.clone(), small.clone()])
    );
}
