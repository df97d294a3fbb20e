//! Criterion micro-benchmarks of the hot internals (issue 4): event building
//! and signing, auth checks, state lookups and sync response assembly.
//!
//! Every input is made through the crate's public API, as the server makes
//! it: services over a fresh SQLite database in a temporary directory (the
//! default config otherwise: search and presence on, room version 12),
//! accounts registered, rooms created and events appended through
//! `services.rooms`. `cargo bench --bench hot_paths` measures;
//! `cargo test --all-targets` runs each benchmark once. How to run is in
//! BENCHMARKS.md; the recorded results in docs/benchmarks-history.md.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion};
use myelin::config::Config;
use myelin::keys::SigningKey;
use myelin::model::accounts::Requester;
use myelin::model::pdu::Pdu;
use myelin::model::state::StateMap;
use myelin::services::Services;
use myelin::services::accounts::Registration;
use myelin::services::rooms::create::Preset;
use myelin::services::rooms::{CreateRoom, NewEvent, Rooms, RoomsDeps};
use myelin::services::sync::{SyncRequest, parse_token, sync};
use myelin::storage::{AccountType, Storage};
use ruma::api::client::filter::FilterDefinition;
use ruma::events::TimelineEventType;
use ruma::room_version_rules::RoomVersionRules;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId,
    OwnedUserId, RoomId, UserId,
};
use serde_json::{Map, Value, json};
use tempfile::TempDir;
use tokio::runtime::Runtime;

/// Members of the large room (auth checks and state lookups).
const LARGE_ROOM: usize = 1_000;
/// The longest chain of state deltas (`MAX_STATE_CHAIN` - 1 in
/// src/services/rooms: the 64th state event writes a snapshot instead).
const LONGEST_CHAIN: i64 = 63;
/// The initial sync: this many rooms with this many messages each.
const SYNC_ROOMS: usize = 20;
const SYNC_MESSAGES: usize = 5;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut c = Criterion::default().configure_from_args();
    // Reads share one server; the append benchmark writes to a server of
    // its own, so the rows it adds do not change what the reads see.
    let reads = rt.block_on(Fixture::new());
    event_build_sign(&mut c, &rt, &reads);
    auth_checks(&mut c, &rt, &reads);
    state_lookups(&mut c, &rt, &reads);
    sync_assembly(&mut c, &rt, &reads);
    append(&mut c, &rt);
    rt.block_on(reads.server.s.shutdown(std::time::Duration::from_secs(10)));
    c.final_summary();
}

// ---------------------------------------------------------------------------
// Set-up through the public API

/// A server's services over a fresh SQLite database in a temporary directory.
struct Server {
    s: Arc<Services>,
    /// The services' database, for what no service offers (chain lengths, a
    /// cold `Rooms`).
    storage: Storage,
    _dir: TempDir,
}

impl Server {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = Config {
            server_name: "bench.local".into(),
            data_dir: dir.path().to_owned(),
            log_level: "warn".into(),
            ..Config::default()
        };
        let key = SigningKey::load_or_generate(dir.path()).expect("signing key");
        let storage = Storage::connect(&config.database_url(), config.database.max_connections)
            .await
            .expect("database");
        let s = Services::new(
            config,
            storage.clone(),
            key,
            myelin::clock::SystemClock::shared(),
        )
        .await
        .expect("services");
        s.start(false, || {});
        Self {
            s,
            storage,
            _dir: dir,
        }
    }

    async fn register(&self, localpart: &str) -> OwnedUserId {
        self.s
            .accounts
            .register(Registration {
                localpart: Some(localpart),
                password: None,
                account_type: AccountType::User,
                displayname: None,
                user_type: None,
                registration_token: None,
                appservice_id: None,
            })
            .await
            .expect("register")
    }

    /// A new device of the user, as its access token resolves.
    async fn login(&self, user: &UserId) -> Requester {
        let session = self
            .s
            .sessions
            .create(user.as_str(), None, None)
            .await
            .expect("session");
        self.s
            .sessions
            .authenticate(&session.access_token, "127.0.0.1", "hot_paths", true)
            .await
            .expect("token")
    }

    async fn public_room(&self, creator: &UserId, name: &str) -> OwnedRoomId {
        self.s
            .rooms
            .create_room(CreateRoom {
                creator: creator.to_owned(),
                version: self.s.rooms.default_version().clone(),
                creation_content: Map::new(),
                preset: Preset::PublicChat,
                name: Some(name.to_owned()),
                topic: None,
                invite: Vec::new(),
                is_direct: false,
                initial_state: Vec::new(),
                power_level_override: None,
                canonical_alias: None,
                creator_member_content: json!({ "displayname": creator.localpart() }),
                room_id: None,
            })
            .await
            .expect("createRoom")
    }

    async fn join(&self, room: &RoomId, user: &UserId) -> Pdu {
        self.s
            .rooms
            .join(room, user, json!({ "displayname": user.localpart() }), None)
            .await
            .expect("join")
    }

    async fn send(
        &self,
        room: &RoomId,
        sender: &UserId,
        body: &str,
        txn: Option<(&str, &str, &str)>,
    ) -> Pdu {
        self.s
            .rooms
            .append(NewEvent {
                room_id: room,
                sender,
                kind: TimelineEventType::RoomMessage,
                state_key: None,
                content: message_content(body),
                txn: txn.map(|(device, scope, txn)| myelin::services::rooms::TxnRef {
                    device,
                    scope,
                    txn,
                }),
                redacts: None,
                origin_server_ts: None,
            })
            .await
            .expect("send")
    }

    async fn set_topic(&self, room: &RoomId, sender: &UserId, topic: &str) -> Pdu {
        self.s
            .rooms
            .append(NewEvent {
                room_id: room,
                sender,
                kind: TimelineEventType::RoomTopic,
                state_key: Some(String::new()),
                content: json!({ "topic": topic }),
                txn: None,
                redacts: None,
                origin_server_ts: None,
            })
            .await
            .expect("topic")
    }

    /// A public room with `members` joined users (the creator first), and
    /// a message from the last of them as its newest event.
    async fn room_with_members(&self, tag: &str, members: usize) -> Room {
        let creator = self.register(&format!("{tag}0")).await;
        let id = self.public_room(&creator, tag).await;
        let mut users = vec![creator];
        for i in 1..members {
            let user = self.register(&format!("{tag}{i}")).await;
            self.join(&id, &user).await;
            users.push(user);
        }
        let last_user = users.last().expect("the creator").clone();
        let last = self.send(&id, &last_user, "hello", None).await;
        Room {
            id,
            members: users,
            last,
        }
    }

    /// How many deltas lie between a state group and its snapshot.
    async fn chain_length(&self, group: i64) -> i64 {
        self.storage
            .state_group(group)
            .await
            .expect("state group")
            .expect("a stored state group")
            .chain_length
    }
}

fn message_content(body: &str) -> Value {
    json!({ "msgtype": "m.text", "body": body })
}

struct Room {
    id: OwnedRoomId,
    /// Joined users, the creator first.
    members: Vec<OwnedUserId>,
    /// The room's newest event (a message).
    last: Pdu,
}

/// Everything the read benchmarks use, made once.
struct Fixture {
    server: Server,
    small: Room,
    large: Room,
    /// A room whose current state group ends a chain of `LONGEST_CHAIN`
    /// deltas.
    chain_group: i64,
    /// The user of the sync benchmarks, in `SYNC_ROOMS` rooms.
    syncer: Requester,
    /// The position after the initial sync's events; one message follows.
    incremental_since: i64,
}

impl Fixture {
    async fn new() -> Self {
        let server = Server::new().await;
        let small = server.room_with_members("small", 2).await;
        let large = server.room_with_members("large", LARGE_ROOM).await;

        // Topic changes until the room's state group is the last delta
        // before a snapshot.
        let owner = server.register("chain").await;
        let chain_room = server.public_room(&owner, "chain").await;
        let mut n = 0;
        let chain_group = loop {
            n += 1;
            let pdu = server
                .set_topic(&chain_room, &owner, &format!("topic {n}"))
                .await;
            let group = pdu.state_group.expect("persisted");
            if server.chain_length(group).await >= LONGEST_CHAIN {
                break group;
            }
            assert!(n < 4 * LONGEST_CHAIN, "the state chain never got that long");
        };

        // The syncing user and a friend, in rooms with a few messages each
        // (the friend's first, so some of them count as unread).
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let syncer = server.login(&alice).await;
        let mut first_room = None;
        for i in 0..SYNC_ROOMS {
            let room = server.public_room(&alice, &format!("sync {i}")).await;
            server.join(&room, &bob).await;
            for m in 0..SYNC_MESSAGES {
                let sender = if m % 2 == 0 { &bob } else { &alice };
                server
                    .send(&room, sender, &format!("message {m} in room {i}"), None)
                    .await;
            }
            first_room.get_or_insert(room);
        }
        let incremental_since = server.s.stream.current();
        let first_room = first_room.expect("at least one room");
        server.send(&first_room, &bob, "one more", None).await;

        Self {
            server,
            small,
            large,
            chain_group,
            syncer,
            incremental_since,
        }
    }
}

/// The PDU `Rooms::append` builds for an event, before hashing and
/// signing: its auth events chosen from `state`, following the room's
/// newest event.
fn build_pdu(
    room: &Room,
    rules: &RoomVersionRules,
    state: &StateMap,
    (sender, kind, state_key): (&UserId, TimelineEventType, Option<&str>),
    content: &Value,
) -> CanonicalJsonObject {
    let content_raw = serde_json::value::to_raw_value(content).expect("content");
    let auth_types = ruma::state_res::auth_types_for_event(
        &kind,
        sender,
        state_key,
        &content_raw,
        &rules.authorization,
    )
    .expect("auth types");
    let mut auth_events: Vec<&OwnedEventId> = auth_types
        .iter()
        .filter_map(|(ty, sk)| state.get(&(ty.to_string(), sk.clone())))
        .collect();
    auth_events.sort();
    auth_events.dedup();
    let s = |v: &str| CanonicalJsonValue::String(v.to_owned());
    let mut obj = CanonicalJsonObject::new();
    obj.insert("type".into(), s(&kind.to_string()));
    obj.insert("room_id".into(), s(room.id.as_str()));
    obj.insert("sender".into(), s(sender.as_str()));
    obj.insert(
        "origin_server_ts".into(),
        CanonicalJsonValue::Integer(MilliSecondsSinceUnixEpoch::now().get().into()),
    );
    obj.insert(
        "content".into(),
        ruma::canonical_json::to_canonical_value(content).expect("canonical content"),
    );
    if let Some(sk) = state_key {
        obj.insert("state_key".into(), s(sk));
    }
    obj.insert(
        "prev_events".into(),
        CanonicalJsonValue::Array(vec![s(room.last.event_id.as_str())]),
    );
    obj.insert(
        "auth_events".into(),
        CanonicalJsonValue::Array(auth_events.iter().map(|e| s(e.as_str())).collect()),
    );
    obj.insert(
        "depth".into(),
        CanonicalJsonValue::Integer((room.last.depth + 1).try_into().expect("depth")),
    );
    obj
}

/// Content hash and signature added, and the reference hash (the event id
/// without its `$`), as `sign_and_check` in src/services/rooms does.
fn hash_sign_and_id(
    s: &Services,
    rules: &RoomVersionRules,
    mut obj: CanonicalJsonObject,
) -> (CanonicalJsonObject, String) {
    ruma::signatures::hash_and_sign_event(
        s.server_name.as_str(),
        &s.signing_key.key_pair,
        &mut obj,
        &rules.redaction,
    )
    .expect("sign");
    let hash = ruma::signatures::reference_hash(&obj, rules).expect("reference hash");
    (obj, hash)
}

// ---------------------------------------------------------------------------
// 1. Event building and signing

fn event_build_sign(c: &mut Criterion, rt: &Runtime, fx: &Fixture) {
    let s = &fx.server.s;
    let room = &fx.small;
    let rules = rt
        .block_on(s.rooms.known_version(&room.id))
        .expect("version")
        .rules()
        .expect("rules");
    let state = rt.block_on(s.rooms.current_state(&room.id)).expect("state");
    let sender = room.members.last().expect("a member");
    let unsigned = build_pdu(
        room,
        &rules,
        &state,
        (sender, TimelineEventType::RoomMessage, None),
        &message_content("Hello, how is everyone doing today?"),
    );
    let (signed, hash) = hash_sign_and_id(s, &rules, unsigned.clone());
    let event_id = OwnedEventId::try_from(format!("${hash}")).expect("event id");

    let mut g = c.benchmark_group("event_build_sign");
    g.bench_function("build PDU (m.room.message, auth events from state)", |b| {
        b.iter(|| {
            build_pdu(
                black_box(room),
                &rules,
                &state,
                (sender, TimelineEventType::RoomMessage, None),
                &message_content("Hello, how is everyone doing today?"),
            )
        })
    });
    g.bench_function(
        "hash_and_sign_event + reference_hash (m.room.message)",
        |b| {
            b.iter_batched(
                || unsigned.clone(),
                |obj| hash_sign_and_id(s, &rules, obj),
                BatchSize::SmallInput,
            )
        },
    );
    g.bench_function("Pdu::from_json (signed m.room.message)", |b| {
        b.iter_batched(
            || signed.clone(),
            |obj| Pdu::from_json(event_id.clone(), room.id.clone(), obj).expect("pdu"),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

// ---------------------------------------------------------------------------
// 2. Auth checks

/// An event signed as the pipeline signs it, with the state before it and
/// the events the rules may consult loaded (as `sign_and_check` loads them).
struct AuthCase {
    rules: RoomVersionRules,
    pdu: Pdu,
    state: Arc<StateMap>,
    loaded: HashMap<OwnedEventId, Pdu>,
}

impl AuthCase {
    async fn new(
        s: &Services,
        room: &Room,
        event: (&UserId, TimelineEventType, Option<&str>),
        content: Value,
    ) -> Self {
        let rules = s
            .rooms
            .known_version(&room.id)
            .await
            .expect("version")
            .rules()
            .expect("rules");
        let state = s.rooms.current_state(&room.id).await.expect("state");
        let obj = build_pdu(room, &rules, &state, event, &content);
        let (obj, hash) = hash_sign_and_id(s, &rules, obj);
        let event_id = OwnedEventId::try_from(format!("${hash}")).expect("event id");
        let pdu = Pdu::from_json(event_id, room.id.clone(), obj).expect("pdu");
        let mut needed = pdu.auth_events.clone();
        if let Some(create) = state.get(&("m.room.create".to_owned(), String::new())) {
            needed.push(create.clone());
        }
        let types = ruma::state_res::auth_types_for_event(
            &pdu.kind,
            &pdu.sender,
            pdu.state_key.as_deref(),
            &pdu.content,
            &rules.authorization,
        )
        .expect("auth types");
        needed.extend(
            types
                .iter()
                .filter_map(|(ty, sk)| state.get(&(ty.to_string(), sk.clone())).cloned()),
        );
        let mut loaded = HashMap::new();
        for id in needed {
            if let Some(p) = s.rooms.pdu(id.as_str()).await.expect("load") {
                loaded.insert(id, p);
            }
        }
        let case = Self {
            rules,
            pdu,
            state,
            loaded,
        };
        case.independent().expect("allowed (state-independent)");
        case.dependent().expect("allowed (state-dependent)");
        case
    }

    fn independent(&self) -> Result<(), String> {
        ruma::state_res::check_state_independent_auth_rules(
            &self.rules.authorization,
            &self.pdu,
            |id| self.loaded.get(id).cloned(),
        )
    }

    fn dependent(&self) -> Result<(), String> {
        ruma::state_res::check_state_dependent_auth_rules(
            &self.rules.authorization,
            &self.pdu,
            |ty, sk| {
                self.state
                    .get(&(ty.to_string(), sk.to_owned()))
                    .and_then(|id| self.loaded.get(id))
                    .cloned()
            },
        )
    }
}

fn auth_checks(c: &mut Criterion, rt: &Runtime, fx: &Fixture) {
    let s = &fx.server.s;
    let newcomer = rt.block_on(fx.server.register("newcomer"));
    let mut cases = Vec::new();
    for room in [&fx.small, &fx.large] {
        let sender = room.members.last().expect("a member");
        let message = rt.block_on(AuthCase::new(
            s,
            room,
            (sender, TimelineEventType::RoomMessage, None),
            message_content("Hello, how is everyone doing today?"),
        ));
        let join = rt.block_on(AuthCase::new(
            s,
            room,
            (
                &newcomer,
                TimelineEventType::RoomMember,
                Some(newcomer.as_str()),
            ),
            json!({ "membership": "join", "displayname": "newcomer" }),
        ));
        cases.push((room.members.len(), message, join));
    }

    let mut g = c.benchmark_group("auth_checks");
    for (members, message, join) in &cases {
        for (name, case) in [("m.room.message", message), ("m.room.member join", join)] {
            g.bench_with_input(
                BenchmarkId::new(format!("{name}: state-independent"), members),
                case,
                |b, case| b.iter(|| case.independent().expect("allowed")),
            );
            g.bench_with_input(
                BenchmarkId::new(format!("{name}: state-dependent"), members),
                case,
                |b, case| b.iter(|| case.dependent().expect("allowed")),
            );
        }
    }
    g.finish();
}

// ---------------------------------------------------------------------------
// 3. State lookups

fn state_lookups(c: &mut Criterion, rt: &Runtime, fx: &Fixture) {
    let s = &fx.server.s;
    let large = &fx.large;
    let large_group = large.last.state_group.expect("persisted");
    let large_chain = rt.block_on(fx.server.chain_length(large_group));
    let member = large.members.last().expect("a member");
    // A `Rooms` with empty caches, as after a restart, over the same
    // database: its first `state_after` of a group reads the chain.
    let cold = || {
        Rooms::new(RoomsDeps {
            storage: fx.server.storage.clone(),
            server_name: s.server_name.clone(),
            signing_key: s.signing_key.clone(),
            stream: s.stream.clone(),
            default_version: s.rooms.default_version().clone(),
            subscribers: std::sync::Arc::default(),
            caches: &Default::default(),
            clock: myelin::clock::SystemClock::shared(),
            ephemeral_messages: true,
            metrics: std::sync::Arc::default(),
        })
    };
    // Warm the caches the cached lookups use.
    rt.block_on(async {
        s.rooms.current_state(&large.id).await.expect("state");
        s.rooms.state_after(large_group).await.expect("state");
        s.rooms.membership(&large.id, member).await.expect("member");
    });

    let mut g = c.benchmark_group("state_lookups");
    g.bench_function(
        BenchmarkId::new("current_state (room head in memory)", LARGE_ROOM),
        |b| {
            b.to_async(rt)
                .iter(|| async { s.rooms.current_state(&large.id).await.expect("state") })
        },
    );
    g.bench_function(BenchmarkId::new("state_after, cached", LARGE_ROOM), |b| {
        b.to_async(rt)
            .iter(|| async { s.rooms.state_after(large_group).await.expect("state") })
    });
    g.bench_function(
        BenchmarkId::new(
            format!("state_after, cold, {large_chain}-delta chain"),
            LARGE_ROOM,
        ),
        |b| {
            b.to_async(rt).iter_batched(
                cold,
                |rooms| async move {
                    let state = rooms.state_after(large_group).await.expect("state");
                    assert!(state.len() > LARGE_ROOM);
                    (rooms, state)
                },
                BatchSize::SmallInput,
            )
        },
    );
    g.bench_function(
        format!("state_after, cold, {LONGEST_CHAIN}-delta chain (small room)"),
        |b| {
            b.to_async(rt).iter_batched(
                cold,
                |rooms| async move {
                    let state = rooms.state_after(fx.chain_group).await.expect("state");
                    (rooms, state)
                },
                BatchSize::SmallInput,
            )
        },
    );
    g.bench_function(BenchmarkId::new("membership", LARGE_ROOM), |b| {
        b.to_async(rt).iter(|| async {
            let m = s.rooms.membership(&large.id, member).await.expect("member");
            assert_eq!(m.as_deref(), Some("join"));
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------
// 4. Sync response assembly

fn sync_request(since: Option<i64>) -> SyncRequest {
    SyncRequest {
        since,
        // The response's assembly, not the one presence write of a user's
        // first sync.
        set_presence: ruma::presence::PresenceState::Offline,
        full_state: false,
        filter: FilterDefinition::default().into(),
        timeout: Duration::ZERO,
    }
}

/// A sync response as the JSON value a client parses.
fn to_json(resp: myelin::services::sync::SyncResponse) -> serde_json::Value {
    serde_json::to_value(resp).expect("json")
}

fn sync_assembly(c: &mut Criterion, rt: &Runtime, fx: &Fixture) {
    let s = &fx.server.s;
    let who = &fx.syncer;
    // Check the shape once: every room on the initial sync, one room with
    // one event on the incremental one.
    rt.block_on(async {
        let initial = to_json(sync(s, who, sync_request(None)).await.expect("sync"));
        let joined = initial["rooms"]["join"].as_object().expect("rooms");
        assert_eq!(joined.len(), SYNC_ROOMS);
        let next = parse_token(initial["next_batch"].as_str().expect("token")).expect("token");
        let incremental = to_json(
            sync(s, who, sync_request(Some(fx.incremental_since)))
                .await
                .expect("sync"),
        );
        let joined = incremental["rooms"]["join"].as_object().expect("rooms");
        assert_eq!(joined.len(), 1);
        let (_, room) = joined.iter().next().expect("a room");
        assert_eq!(room["timeline"]["events"].as_array().map(Vec::len), Some(1));
        assert_eq!(
            incremental["next_batch"],
            json!(format!("s{next}")),
            "nothing else happened"
        );
    });

    // Built and written out as the handler does (the bytes a client gets).
    let mut g = c.benchmark_group("sync");
    g.bench_function(
        format!("initial, {SYNC_ROOMS} rooms x {SYNC_MESSAGES} messages, as JSON bytes"),
        |b| {
            b.to_async(rt).iter(|| async {
                serde_json::to_vec(&sync(s, who, sync_request(None)).await.expect("sync"))
                    .expect("json")
            })
        },
    );
    g.bench_function("incremental, 1 new message in 1 room, as JSON bytes", |b| {
        b.to_async(rt).iter(|| async {
            serde_json::to_vec(
                &sync(s, who, sync_request(Some(fx.incremental_since)))
                    .await
                    .expect("sync"),
            )
            .expect("json")
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------
// 1 (continued). The whole pipeline, on a server of its own

fn append(c: &mut Criterion, rt: &Runtime) {
    let (server, room, sender, device) = rt.block_on(async {
        let server = Server::new().await;
        let room = server.room_with_members("append", 2).await;
        let sender = room.members.last().expect("a member").clone();
        let device = server.login(&sender).await.device_id;
        (server, room, sender, device)
    });
    let scope = format!("send:{}", room.id);
    let txn = AtomicU64::new(0);

    let mut g = c.benchmark_group("event_build_sign");
    g.bench_function(
        "rooms.append m.room.message with txn id (incl. SQLite write, search indexing)",
        |b| {
            b.to_async(rt).iter(|| async {
                let txn_id = format!("t{}", txn.fetch_add(1, Ordering::Relaxed));
                server
                    .send(
                        &room.id,
                        &sender,
                        "Hello, how is everyone doing today?",
                        Some((&device, &scope, &txn_id)),
                    )
                    .await
            })
        },
    );
    g.finish();
    rt.block_on(server.s.shutdown(std::time::Duration::from_secs(10)));
}
