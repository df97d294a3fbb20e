//! `myelin-bench large-fixture`: a user's everyday operations on a large
//! server, against the same operations on a small one.
//!
//! Each fixture is written straight into the SQLite database of a Myelin
//! this command starts (stopped while it is written), in bulk: `--users`
//! accounts, `--rooms` rooms, `--events` events and `--receipts` read
//! receipts. Room 0 has `--big-room` members; rooms 1 to `--user-rooms`
//! have the measured user; every other room has `receipts / rooms`
//! members, each with a read receipt, and the events left after the state
//! events are messages, spread evenly over the rooms. The small fixture is
//! the same builder with only the measured user's rooms and room 0 (same
//! sizes, same members): what differs is only the rest of the server.
//!
//! The events are room version 10 PDUs built here, with their auth and prev
//! events, a state group per room and the rooms' current state, but with
//! placeholder hashes and signatures (Myelin never verifies again an event
//! it has stored; nothing here federates). Accounts copy the password hash
//! of the measured user, who registers through the API (an admin, so that
//! the search index can be rebuilt with the admin reindex).
//!
//! Measured on each fixture, after a restart and the reindex: initial
//! `/sync` of the measured user, incremental `/sync` after one message of
//! theirs, send, `/messages` (20 back), `/search` in their rooms, a join to
//! room 0 by a new user, and the server's RSS (VmRSS, VmHWM).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sqlx::{Connection, Executor};

use crate::client::{Client, Session, encode_segment};
use crate::local::{Local, Server};
use crate::report::{Summary, fmt_ms, table};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// The myelin binary to start.
    #[arg(long, default_value = "target/release/myelin")]
    pub binary: PathBuf,
    /// Accounts on the large server.
    #[arg(long, default_value_t = 10_000)]
    pub users: usize,
    /// Rooms on the large server.
    #[arg(long, default_value_t = 2_000)]
    pub rooms: usize,
    /// Events on the large server (state events, then messages).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Read receipts on the large server.
    #[arg(long, default_value_t = 200_000)]
    pub receipts: usize,
    /// Rooms the measured user is in.
    #[arg(long, default_value_t = 50)]
    pub user_rooms: usize,
    /// Members of room 0, which a new user joins.
    #[arg(long, default_value_t = 5_000)]
    pub big_room: usize,
    /// Samples of each operation (the first initial sync is reported on
    /// its own as well: cold caches).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Measure the large fixture only.
    #[arg(long)]
    pub large_only: bool,
    /// Everything tiny (for `myelin-bench smoke`): checks the tool, not the
    /// server's speed.
    #[arg(long)]
    pub smoke: bool,
    /// Write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Keep the temp dirs (config, database, server log) and print their paths.
    #[arg(long)]
    pub keep_dir: bool,
}

impl Args {
    /// The defaults of the command line.
    pub fn defaults() -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            args: Args,
        }
        Only::parse_from(["large-fixture"]).args
    }
}

/// The shape of one fixture.
#[derive(Clone, Debug)]
struct Shape {
    name: &'static str,
    users: usize,
    /// Room 0 (big), 1..=user_rooms (the measured user's), then the rest.
    rooms: usize,
    user_rooms: usize,
    big_room: usize,
    /// Members of every room but room 0 (each with a receipt).
    members: usize,
    /// Messages in every room.
    messages: usize,
}

impl Shape {
    fn large(a: &Args) -> anyhow::Result<Self> {
        let rooms = a.rooms.max(a.user_rooms + 1);
        let members = a.receipts.div_ceil(rooms).clamp(2, a.users);
        let state = rooms * 4 + a.big_room + (rooms - 1) * (members - 1) + a.user_rooms;
        if a.users < a.big_room || a.events <= state {
            bail!(
                "--users must be at least --big-room, and --events more than the {state} state events"
            );
        }
        Ok(Self {
            name: "large",
            users: a.users,
            rooms,
            user_rooms: a.user_rooms,
            big_room: a.big_room,
            members,
            messages: (a.events - state) / rooms,
        })
    }

    /// The same rooms of the measured user and room 0, nothing else.
    fn small(large: &Shape) -> Self {
        Self {
            name: "small",
            users: large.big_room.max(large.members),
            rooms: large.user_rooms + 1,
            ..large.clone()
        }
    }

    fn members_of(&self, room: usize) -> Vec<usize> {
        if room == 0 {
            return (0..self.big_room).collect();
        }
        (0..self.members)
            .map(|j| (room * self.members + j) % self.users)
            .collect()
    }
}

/// What one fixture measured.
#[derive(Default)]
struct Figures {
    build_secs: f64,
    counts: Value,
    start_secs: f64,
    reindex_secs: f64,
    initial_cold_ms: f64,
    initial: Vec<Duration>,
    initial_bytes: usize,
    incremental: Vec<Duration>,
    send: Vec<Duration>,
    messages: Vec<Duration>,
    search: Vec<Duration>,
    join: Vec<Duration>,
    rss_kib: u64,
    hwm_kib: u64,
    db_bytes: u64,
}

pub async fn run(mut args: Args) -> anyhow::Result<bool> {
    if args.smoke {
        args.users = args.users.min(60);
        args.rooms = args.rooms.min(12);
        args.events = args.events.min(1_500);
        args.receipts = args.receipts.min(120);
        args.user_rooms = args.user_rooms.min(3);
        args.big_room = args.big_room.min(30);
        args.repeats = args.repeats.min(2);
    }
    args.repeats = args.repeats.max(1);
    let large = Shape::large(&args)?;
    let mut shapes = vec![Shape::small(&large), large];
    if args.large_only {
        shapes.remove(0);
    }
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for shape in &shapes {
        eprintln!(
            "large-fixture: {} fixture: {} users, {} rooms ({} members each, room 0 {}), {} messages a room",
            shape.name, shape.users, shape.rooms, shape.members, shape.big_room, shape.messages
        );
        let figures = fixture(&args, shape, &mut failures)
            .await
            .with_context(|| format!("the {} fixture", shape.name))?;
        results.push((shape.name, figures));
    }
    report(&args, &results, &failures)?;
    Ok(failures.is_empty())
}

/// Builds one fixture, restarts Myelin on it and measures.
async fn fixture(
    args: &Args,
    shape: &Shape,
    failures: &mut Vec<String>,
) -> anyhow::Result<Figures> {
    let local = Local::start(&args.binary, "myelin-bench-large-", None, None).await?;
    let client = Client::new(&local.base)?;
    let alice = client
        .register_shared_secret(&local.secret, "alice", "bench-password", true)
        .await?;
    let mut joiners = Vec::new();
    for i in 0..args.repeats {
        joiners.push(
            client
                .register_shared_secret(
                    &local.secret,
                    &format!("joiner{i}"),
                    "bench-password",
                    false,
                )
                .await?,
        );
    }
    let config = local.dir.path().join("myelin.yaml");
    let db = local.dir.path().join("data").join("myelin.db");
    let log = local.dir.path().join("server.log");
    local.server.stop(Duration::from_secs(30))?;

    let mut f = Figures::default();
    let started = Instant::now();
    f.counts = build(&db, shape, &alice.user_id)
        .await
        .context("writing the fixture")?;
    f.build_secs = started.elapsed().as_secs_f64();
    f.db_bytes = std::fs::metadata(&db).map_or(0, |m| m.len());
    eprintln!(
        "large-fixture: {} fixture written in {:.1} s: {}",
        shape.name, f.build_secs, f.counts
    );

    let started = Instant::now();
    let mut server = Server::spawn(&args.binary, &config, &log, &[])?;
    server
        .wait_ready(&client, started, Duration::from_secs(600))
        .await?;
    f.start_secs = started.elapsed().as_secs_f64();
    let alice = client.session(&alice);
    let result = measure(args, shape, &client, &alice, &joiners, &mut f, failures).await;
    if let Ok(status) = crate::procstat::status(server.pid()) {
        f.rss_kib = status.vm_rss_kib;
        f.hwm_kib = status.vm_hwm_kib;
    }
    server.stop(Duration::from_secs(60))?;
    if args.keep_dir {
        eprintln!("kept {}", local.dir.keep().display());
    }
    result.map(|()| f)
}

fn room_id(r: usize) -> String {
    format!("!fx{r}:localhost")
}

fn user_id(u: usize) -> String {
    format!("@fx{u}:localhost")
}

/// The words of the messages; a search asks for one of them.
fn word(i: usize) -> String {
    format!("w{}", i % 500)
}

async fn measure(
    args: &Args,
    shape: &Shape,
    client: &Client,
    alice: &Session,
    joiners: &[crate::client::Registered],
    f: &mut Figures,
    failures: &mut Vec<String>,
) -> anyhow::Result<()> {
    // The search index: rebuilt from the events written in bulk.
    let started = Instant::now();
    let answer = alice
        .post("/_dendrite/admin/fulltext/reindex", &json!({}))
        .await?;
    if let Some(job) = answer.get("job_id").and_then(Value::as_str) {
        let path = format!("/_myelin/admin/v1/jobs/{}", encode_segment(job));
        loop {
            let v = alice.get(&path).await?;
            match v.get("status").and_then(Value::as_str) {
                Some("complete") => break,
                Some("failed") => bail!("the reindex failed: {v}"),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    f.reindex_secs = started.elapsed().as_secs_f64();

    // Initial syncs: each with a filter no earlier one used.
    let mut token = String::new();
    for i in 0..=args.repeats {
        let filter = json!({
            "room": { "timeline": { "limit": 10 } },
            "account_data": { "not_types": [format!("bench.nocache.{i}")] },
        })
        .to_string();
        let started = Instant::now();
        let resp = alice.sync(None, 0, Some(&filter)).await?;
        let took = resp.received.duration_since(started);
        let joined = resp.joined_timelines().len();
        if joined != shape.user_rooms {
            failures.push(format!(
                "{}: initial sync {i} has {joined} joined rooms, expected {}",
                shape.name, shape.user_rooms
            ));
        }
        if i == 0 {
            f.initial_cold_ms = took.as_secs_f64() * 1e3;
        } else {
            f.initial.push(took);
        }
        f.initial_bytes = resp.bytes;
        token = resp.next_batch().unwrap_or_default().to_owned();
    }

    // Send, each followed by the incremental sync that brings it.
    let room = room_id(1);
    for i in 0..args.repeats * 4 {
        let content = json!({ "msgtype": "m.text", "body": format!("measured {i} {}", word(i)) });
        let started = Instant::now();
        alice
            .send_message(&room, &format!("measured-{i}"), &content)
            .await?;
        f.send.push(started.elapsed());
        let started = Instant::now();
        let resp = alice.sync(Some(&token), 0, None).await?;
        let took = resp.received.duration_since(started);
        if resp.joined_timelines().is_empty() {
            failures.push(format!(
                "{}: incremental sync {i} did not bring the message",
                shape.name
            ));
        }
        f.incremental.push(took);
        token = resp.next_batch().unwrap_or_default().to_owned();
    }

    // /messages: 20 back from the newest, in each of the user's rooms in turn.
    for i in 0..args.repeats * 4 {
        let room = room_id(1 + i % shape.user_rooms);
        let started = Instant::now();
        let v = alice.messages_backwards(&room, &token, 20).await?;
        f.messages.push(started.elapsed());
        let n = v.get("chunk").and_then(Value::as_array).map_or(0, Vec::len);
        if n != 20 {
            failures.push(format!(
                "{}: /messages in {room} gave {n} events",
                shape.name
            ));
        }
    }

    // /search for a word of the messages of room 1 (the user's first).
    for i in 0..args.repeats * 2 {
        let term = word(shape.messages + 1 + i * 7);
        let body = json!({ "search_categories": { "room_events": {
            "search_term": term,
            "order_by": "recent",
        } } });
        let started = Instant::now();
        let v = alice.post("/_matrix/client/v3/search", &body).await?;
        f.search.push(started.elapsed());
        let hits = v
            .pointer("/search_categories/room_events/results")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if hits == 0 {
            failures.push(format!("{}: /search for {term} found nothing", shape.name));
        }
    }

    // A new user joins room 0.
    let big = room_id(0);
    for joiner in joiners {
        let session = client.session(joiner);
        let started = Instant::now();
        session.join(&big).await?;
        f.join.push(started.elapsed());
    }
    let count = alice_count(client, &joiners[0], &big).await?;
    if count != shape.big_room + joiners.len() {
        failures.push(format!(
            "{}: room 0 has {count} joined members after the joins, expected {}",
            shape.name,
            shape.big_room + joiners.len()
        ));
    }
    Ok(())
}

async fn alice_count(
    client: &Client,
    who: &crate::client::Registered,
    room: &str,
) -> anyhow::Result<usize> {
    Ok(client.session(who).joined_member_count(room).await?)
}

/// Rows for one multi-row `INSERT`, sent when full.
struct Rows {
    head: &'static str,
    columns: usize,
    values: Vec<Val>,
    written: u64,
}

enum Val {
    I(i64),
    T(String),
    N,
}

impl Rows {
    fn new(head: &'static str, columns: usize) -> Self {
        Self {
            head,
            columns,
            values: Vec::new(),
            written: 0,
        }
    }

    async fn push(
        &mut self,
        conn: &mut sqlx::SqliteConnection,
        row: impl IntoIterator<Item = Val>,
    ) -> anyhow::Result<()> {
        self.values.extend(row);
        // SQLite takes up to 32,766 parameters a statement.
        if self.values.len() + self.columns > 30_000 {
            self.flush(conn).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, conn: &mut sqlx::SqliteConnection) -> anyhow::Result<()> {
        if self.values.is_empty() {
            return Ok(());
        }
        let rows = self.values.len() / self.columns;
        let tuple = format!("({})", vec!["?"; self.columns].join(", "));
        let sql = format!("{} VALUES {}", self.head, vec![tuple; rows].join(", "));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for v in self.values.drain(..) {
            q = match v {
                Val::I(i) => q.bind(i),
                Val::T(t) => q.bind(t),
                Val::N => q.bind(None::<String>),
            };
        }
        q.execute(&mut *conn)
            .await
            .with_context(|| self.head.to_owned())?;
        self.written += rows as u64;
        Ok(())
    }
}

fn t(s: impl Into<String>) -> Val {
    Val::T(s.into())
}

/// A placeholder hash or signature (43 unpadded base64 characters).
fn filler(seed: u64) -> String {
    let mut s = format!("{seed:016x}");
    while s.len() < 43 {
        s.push('A');
    }
    s
}

/// Writes the fixture into the stopped server's database.
async fn build(db: &Path, shape: &Shape, alice: &str) -> anyhow::Result<Value> {
    let url = format!("sqlite://{}", db.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await?;
    conn.execute("PRAGMA synchronous = OFF").await?;
    conn.execute("PRAGMA cache_size = -262144").await?;
    let first: i64 = sqlx::query_scalar(
        "SELECT MAX(p) FROM (SELECT COALESCE(MAX(stream_ordering), 0) AS p FROM events
         UNION ALL SELECT COALESCE(MAX(stream_ordering), 0) FROM receipts
         UNION ALL SELECT COALESCE(MAX(stream_ordering), 0) FROM account_data
         UNION ALL SELECT COALESCE(MAX(stream_ordering), 0) FROM presence)",
    )
    .fetch_one(&mut conn)
    .await?;
    let mut pos = first;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let base_ts = now_ms - 86_400_000;

    // Accounts: the measured user's row, under each fixture user's id.
    conn.execute("BEGIN").await?;
    conn.execute("CREATE TEMP TABLE fx_names (user_id TEXT PRIMARY KEY)")
        .await?;
    let mut names = Rows::new("INSERT INTO fx_names (user_id)", 1);
    let mut profiles = Rows::new("INSERT INTO profiles (user_id, displayname, avatar_url)", 3);
    for u in 0..shape.users {
        names.push(&mut conn, [t(user_id(u))]).await?;
        profiles
            .push(&mut conn, [t(user_id(u)), t(format!("fx{u}")), Val::N])
            .await?;
    }
    names.flush(&mut conn).await?;
    profiles.flush(&mut conn).await?;
    let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info('accounts')")
        .fetch_all(&mut conn)
        .await?;
    let others: Vec<&String> = columns.iter().filter(|c| *c != "user_id").collect();
    let copy = format!(
        "INSERT INTO accounts (user_id, {}) SELECT n.user_id, {} FROM fx_names n, accounts a WHERE a.user_id = ?",
        others
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        others
            .iter()
            .map(|c| format!("a.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    sqlx::query(sqlx::AssertSqlSafe(copy))
        .bind(alice)
        .execute(&mut conn)
        .await?;
    conn.execute("DROP TABLE fx_names").await?;
    conn.execute("COMMIT").await?;

    let mut rooms_rows = Rows::new(
        "INSERT INTO rooms (room_id, room_version, creator, is_public, created_ts)",
        5,
    );
    let mut events = Rows::new(
        "INSERT INTO events (stream_ordering, event_id, room_id, depth, event_type, state_key, sender, origin_server_ts, state_group, json)",
        10,
    );
    let mut groups = Rows::new(
        "INSERT INTO state_groups (state_group, room_id, prev_group, chain_length)",
        4,
    );
    let mut entries = Rows::new(
        "INSERT INTO state_group_entries (state_group, event_type, state_key, event_id)",
        4,
    );
    let mut current = Rows::new(
        "INSERT INTO current_state (room_id, event_type, state_key, event_id, membership, stream_ordering)",
        6,
    );
    let mut extremities = Rows::new("INSERT INTO forward_extremities (room_id, event_id)", 2);
    let mut receipts = Rows::new(
        "INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, ts, stream_ordering)",
        7,
    );
    let mut message_no = 0usize;
    for r in 0..shape.rooms {
        if r % 50 == 0 {
            conn.execute("BEGIN").await?;
        }
        let room = room_id(r);
        let mut members: Vec<String> = shape.members_of(r).into_iter().map(user_id).collect();
        if (1..=shape.user_rooms).contains(&r) {
            members.push(alice.to_owned());
        }
        let creator = members[0].clone();
        // The room's events, built in order: (type, state key, sender, content).
        let mut state: Vec<(String, String, String, Value)> = vec![
            (
                "m.room.create".into(),
                String::new(),
                creator.clone(),
                json!({ "creator": creator, "room_version": "10" }),
            ),
            (
                "m.room.member".into(),
                creator.clone(),
                creator.clone(),
                json!({ "membership": "join", "displayname": creator }),
            ),
            (
                "m.room.power_levels".into(),
                String::new(),
                creator.clone(),
                json!({
                    "users": serde_json::Map::from_iter([(creator.clone(), json!(100))]),
                    "users_default": 0, "events_default": 0, "state_default": 50,
                    "ban": 50, "kick": 50, "redact": 50, "invite": 0,
                }),
            ),
            (
                "m.room.join_rules".into(),
                String::new(),
                creator.clone(),
                json!({ "join_rule": "public" }),
            ),
            (
                "m.room.history_visibility".into(),
                String::new(),
                creator.clone(),
                json!({ "history_visibility": "shared" }),
            ),
        ];
        for m in &members[1..] {
            state.push((
                "m.room.member".into(),
                m.clone(),
                m.clone(),
                json!({ "membership": "join", "displayname": m }),
            ));
        }
        let group = pos + state.len() as i64;
        let mut ids: Vec<String> = Vec::new();
        let mut member_event: std::collections::HashMap<String, String> = Default::default();
        let (mut create, mut power, mut rules) = (String::new(), String::new(), String::new());
        let mut depth = 0i64;
        let total = state.len() + shape.messages;
        for i in 0..total {
            pos += 1;
            depth += 1;
            let (kind, state_key, sender, content) = match state.get(i) {
                Some((k, sk, s, c)) => (k.clone(), Some(sk.clone()), s.clone(), c.clone()),
                None => {
                    let sender = members[(i * 7) % members.len()].clone();
                    message_no += 1;
                    let body = format!(
                        "fixture message {message_no} {} {}",
                        word(message_no),
                        word(message_no * 31 + 3)
                    );
                    (
                        "m.room.message".to_owned(),
                        None,
                        sender,
                        json!({ "msgtype": "m.text", "body": body }),
                    )
                }
            };
            let mut auth: Vec<String> = Vec::new();
            if i > 0 {
                auth.push(create.clone());
            }
            if !power.is_empty() {
                auth.push(power.clone());
            }
            if kind == "m.room.member" && !rules.is_empty() {
                auth.push(rules.clone());
            }
            if let Some(m) = member_event.get(&sender)
                && kind != "m.room.member"
            {
                auth.push(m.clone());
            }
            let event_id = format!("$fx{r}e{i}{}", filler(pos as u64));
            let mut pdu = json!({
                "auth_events": auth,
                "content": content,
                "depth": depth,
                "hashes": { "sha256": filler(pos as u64 ^ 0x5eed) },
                "origin_server_ts": base_ts + pos,
                "prev_events": ids.last().map(|p| vec![p.clone()]).unwrap_or_default(),
                "room_id": room,
                "sender": sender,
                "signatures": { "localhost": { "ed25519:fixture": filler(pos as u64 ^ 0x519) } },
                "type": kind,
            });
            if let Some(sk) = &state_key {
                pdu["state_key"] = json!(sk);
            }
            events
                .push(
                    &mut conn,
                    [
                        Val::I(pos),
                        t(event_id.clone()),
                        t(room.clone()),
                        Val::I(depth),
                        t(kind.clone()),
                        state_key.clone().map_or(Val::N, t),
                        t(sender.clone()),
                        Val::I(base_ts + pos),
                        Val::I(group),
                        t(pdu.to_string()),
                    ],
                )
                .await?;
            if let Some(sk) = &state_key {
                let membership = if kind == "m.room.member" {
                    member_event.insert(sk.clone(), event_id.clone());
                    t("join")
                } else {
                    Val::N
                };
                match kind.as_str() {
                    "m.room.create" => create = event_id.clone(),
                    "m.room.power_levels" => power = event_id.clone(),
                    "m.room.join_rules" => rules = event_id.clone(),
                    _ => {}
                }
                entries
                    .push(
                        &mut conn,
                        [
                            Val::I(group),
                            t(kind.clone()),
                            t(sk.clone()),
                            t(event_id.clone()),
                        ],
                    )
                    .await?;
                current
                    .push(
                        &mut conn,
                        [
                            t(room.clone()),
                            t(kind.clone()),
                            t(sk.clone()),
                            t(event_id.clone()),
                            membership,
                            Val::I(pos),
                        ],
                    )
                    .await?;
            }
            ids.push(event_id);
        }
        rooms_rows
            .push(
                &mut conn,
                [
                    t(room.clone()),
                    t("10"),
                    t(creator.clone()),
                    Val::I(0),
                    Val::I(base_ts),
                ],
            )
            .await?;
        groups
            .push(
                &mut conn,
                [Val::I(group), t(room.clone()), Val::N, Val::I(0)],
            )
            .await?;
        let last = ids.last().cloned().unwrap_or_default();
        extremities
            .push(&mut conn, [t(room.clone()), t(last)])
            .await?;
        // A read receipt of each member (the measured user's 20 back).
        let receipted = if r == 0 { shape.members } else { members.len() };
        for (j, m) in members.iter().take(receipted).enumerate() {
            let back = if m == alice { 20 } else { j % 30 };
            let target = &ids[ids.len().saturating_sub(1 + back)];
            pos += 1;
            receipts
                .push(
                    &mut conn,
                    [
                        t(room.clone()),
                        t(m.clone()),
                        t("m.read"),
                        t(""),
                        t(target.clone()),
                        Val::I(base_ts + pos),
                        Val::I(pos),
                    ],
                )
                .await?;
        }
        if r % 50 == 49 || r + 1 == shape.rooms {
            for rows in [
                &mut rooms_rows,
                &mut events,
                &mut groups,
                &mut entries,
                &mut current,
                &mut extremities,
                &mut receipts,
            ] {
                rows.flush(&mut conn).await?;
            }
            conn.execute("COMMIT").await?;
        }
    }
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").await?;
    conn.close().await?;
    Ok(json!({
        "users": shape.users,
        "rooms": rooms_rows.written,
        "events": events.written,
        "messages": message_no,
        "receipts": receipts.written,
        "state_entries": entries.written,
    }))
}

fn summary_ms(samples: &[Duration]) -> (String, Option<f64>) {
    match Summary::of(samples) {
        Some(s) => (
            format!("{} / {}", fmt_ms(s.p50), fmt_ms(s.max)),
            Some(s.p50),
        ),
        None => ("-".into(), None),
    }
}

fn report(args: &Args, results: &[(&str, Figures)], failures: &[String]) -> anyhow::Result<()> {
    let initial = format!("initial /sync, {} rooms (warm)", args.user_rooms);
    let join = format!("join a {}-member room", args.big_room);
    type Samples = fn(&Figures) -> &[Duration];
    let ops: [(&str, Samples); 6] = [
        (&initial, |f| &f.initial),
        ("incremental /sync", |f| &f.incremental),
        ("send", |f| &f.send),
        ("/messages, 20 back", |f| &f.messages),
        ("/search", |f| &f.search),
        (&join, |f| &f.join),
    ];
    let mut header = vec!["operation (median / max ms)"];
    header.extend(results.iter().map(|(name, _)| *name));
    header.push("large ÷ small (medians)");
    let mut rows = Vec::new();
    let mut json_ops = serde_json::Map::new();
    for (name, samples) in ops {
        let mut row = vec![name.to_owned()];
        let mut medians = Vec::new();
        for (fixture, f) in results {
            let (text, median) = summary_ms(samples(f));
            row.push(text);
            medians.push(median);
            json_ops
                .entry(name.to_owned())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("object")
                .insert(
                    (*fixture).to_owned(),
                    Summary::of(samples(f)).map_or(Value::Null, |s| s.to_json()),
                );
        }
        row.push(match medians.as_slice() {
            [Some(small), Some(large)] if *small > 0.0 => format!("{:.2}×", large / small),
            _ => "-".into(),
        });
        rows.push(row);
    }
    let mut facts = Vec::new();
    type Fact = fn(&Figures) -> String;
    let lines: [(&str, Fact); 8] = [
        ("fixture written (s)", |f| format!("{:.1}", f.build_secs)),
        ("database file (MB)", |f| {
            format!("{:.0}", f.db_bytes as f64 / 1e6)
        }),
        ("start-up on it (s)", |f| format!("{:.2}", f.start_secs)),
        ("reindex (s)", |f| format!("{:.1}", f.reindex_secs)),
        ("first (cold) initial /sync (ms)", |f| {
            fmt_ms(f.initial_cold_ms)
        }),
        ("initial /sync bytes", |f| f.initial_bytes.to_string()),
        ("server VmRSS at the end (MiB)", |f| {
            format!("{:.0}", f.rss_kib as f64 / 1024.0)
        }),
        ("server VmHWM (MiB)", |f| {
            format!("{:.0}", f.hwm_kib as f64 / 1024.0)
        }),
    ];
    for (name, fact) in lines {
        let mut row = vec![name.to_owned()];
        row.extend(results.iter().map(|(_, f)| fact(f)));
        facts.push(row);
    }
    let mut fact_header = vec!["what"];
    fact_header.extend(results.iter().map(|(name, _)| *name));
    println!();
    println!(
        "== large-fixture: {} users, {} rooms, {} events, {} receipts; the measured user in {} rooms",
        args.users, args.rooms, args.events, args.receipts, args.user_rooms
    );
    print!("{}", table(&header, &rows));
    print!("{}", table(&fact_header, &facts));
    for f in failures {
        println!("FAIL: {f}");
    }
    if let Some(path) = &args.json {
        let fixtures: serde_json::Map<String, Value> = results
            .iter()
            .map(|(name, f)| {
                (
                    (*name).to_owned(),
                    json!({
                        "counts": f.counts,
                        "build_secs": f.build_secs,
                        "db_bytes": f.db_bytes,
                        "start_secs": f.start_secs,
                        "reindex_secs": f.reindex_secs,
                        "initial_cold_ms": f.initial_cold_ms,
                        "initial_bytes": f.initial_bytes,
                        "vm_rss_kib": f.rss_kib,
                        "vm_hwm_kib": f.hwm_kib,
                    }),
                )
            })
            .collect();
        crate::report::write_json(
            path,
            &json!({
                "scenario": "large-fixture",
                "params": {
                    "users": args.users, "rooms": args.rooms, "events": args.events,
                    "receipts": args.receipts, "user_rooms": args.user_rooms,
                    "big_room": args.big_room, "repeats": args.repeats,
                },
                "fixtures": fixtures,
                "operations": json_ops,
                "failures": failures,
            }),
        )?;
    }
    Ok(())
}
