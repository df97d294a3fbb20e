//! Versioned schema migrations, applied in order at start-up, each in one
//! transaction. Never edit a released migration; add a new one.

use sqlx::{AssertSqlSafe, Executor};

use super::{Storage, now_ms};

/// (version, name, dialect-neutral DDL). See [`super::Dialect::ddl`].
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "accounts_devices_profiles", V1),
    (2, "rooms_events_state", V2),
    (3, "account_data_receipts_presence", V3),
    (4, "reports_notices", V4),
    (5, "transactions_scoped", V5),
    (6, "account_flags", V6),
    (7, "blocked_rooms", V7),
    (8, "receipts_by_user", V8),
    (9, "token_expiry", V9),
    (10, "event_transaction_columns", V10),
    (11, "events_room_stream_covering", V11),
    (12, "jobs", V12),
    (13, "receipts_by_room", V13),
    (14, "device_inbox", V14),
    (15, "rooms_directory_flags", V15),
    (16, "room_history_floors", V16),
    (17, "event_expiry", V17),
    (18, "e2e_device_keys", V18),
    (19, "key_backup", V19),
    (20, "cross_signing", V20),
    (25, "media", V25),
    (26, "pushers", V26),
    (27, "media_thumbnails", V27),
    (28, "url_previews", V28),
    (30, "openid_tokens_profile_fields", V30),
    (31, "event_relations_by_room", V31),
    (32, "appservice_state", V32),
    (37, "one_time_keys_clustered", V37),
    (38, "to_device_sends", V38),
    (39, "events_room_time", V39),
    (42, "appservice_room_list", V42),
    (43, "to_device_chunks", V43),
    (45, "appservice_stream_positions", V45),
    (46, "server_signing_keys", V46),
    (47, "push_state", V47),
];

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

const V2: &str = r#"
CREATE TABLE rooms (
    room_id TEXT PRIMARY KEY,
    room_version TEXT NOT NULL,
    creator TEXT NOT NULL,
    is_public BIGINT NOT NULL DEFAULT 0,
    created_ts BIGINT NOT NULL
);

CREATE TABLE events (
    stream_ordering BIGINT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    depth BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT,
    sender TEXT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    state_group BIGINT,
    redacted_by TEXT,
    json TEXT NOT NULL
);
CREATE INDEX events_room_topo ON events (room_id, depth, stream_ordering);
CREATE INDEX events_room_stream ON events (room_id, stream_ordering);

CREATE TABLE event_relations (
    event_id TEXT PRIMARY KEY,
    relates_to TEXT NOT NULL,
    rel_type TEXT NOT NULL,
    room_id TEXT NOT NULL
);
CREATE INDEX event_relations_target ON event_relations (relates_to, rel_type);

CREATE TABLE state_groups (
    state_group BIGINT PRIMARY KEY,
    room_id TEXT NOT NULL,
    prev_group BIGINT,
    chain_length BIGINT NOT NULL
);

CREATE TABLE state_group_entries (
    state_group BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (state_group, event_type, state_key)
);

CREATE TABLE current_state (
    room_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    membership TEXT,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (room_id, event_type, state_key)
);
CREATE INDEX current_state_members ON current_state (state_key, membership);

CREATE TABLE forward_extremities (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

CREATE TABLE transaction_ids (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);

CREATE TABLE room_aliases (
    alias TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

CREATE TABLE forgotten_rooms (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);
"#;

const V3: &str = r#"
CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    data_type TEXT NOT NULL,
    content TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, data_type)
);
CREATE INDEX account_data_stream ON account_data (user_id, stream_ordering);

CREATE TABLE receipts (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    ts BIGINT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id, receipt_type, thread_id)
);
CREATE INDEX receipts_stream ON receipts (stream_ordering);

CREATE TABLE presence (
    user_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    status_msg TEXT,
    last_active_ts BIGINT NOT NULL,
    stream_ordering BIGINT NOT NULL
);
"#;

const V4: &str = r#"
CREATE TABLE event_reports (
    id {AUTO_ID},
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    reporter TEXT NOT NULL,
    event_sender TEXT NOT NULL,
    reason TEXT,
    score BIGINT,
    received_ts BIGINT NOT NULL
);
CREATE INDEX event_reports_room ON event_reports (room_id);

CREATE TABLE room_reports (
    id {AUTO_ID},
    room_id TEXT NOT NULL,
    reporter TEXT NOT NULL,
    reason TEXT,
    received_ts BIGINT NOT NULL
);

CREATE TABLE user_reports (
    id {AUTO_ID},
    target_user_id TEXT NOT NULL,
    reporter TEXT NOT NULL,
    reason TEXT,
    received_ts BIGINT NOT NULL
);

CREATE TABLE server_notice_rooms (
    user_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL
);
"#;

/// Transaction ids are scoped to the endpoint and path too (spec: a retry is
/// the same txn id on the same path), not only to the device.
const V5: &str = r#"
CREATE TABLE event_transactions (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, scope, txn_id)
);
CREATE INDEX event_transactions_event ON event_transactions (event_id);
INSERT INTO event_transactions (user_id, device_id, scope, txn_id, event_id)
    SELECT t.user_id, t.device_id, 'send:' || e.room_id, t.txn_id, t.event_id
    FROM transaction_ids t JOIN events e ON e.event_id = t.event_id;
DROP TABLE transaction_ids;
"#;

/// Account states that admin tools show and set (Synapse's shapes).
const V6: &str = r#"
ALTER TABLE accounts ADD COLUMN erased BIGINT NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN locked BIGINT NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN suspended BIGINT NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN shadow_banned BIGINT NOT NULL DEFAULT 0;
"#;

const V7: &str = r#"
CREATE TABLE blocked_rooms (
    room_id TEXT PRIMARY KEY,
    blocked_by TEXT NOT NULL,
    blocked_ts BIGINT NOT NULL
);
CREATE INDEX state_groups_room ON state_groups (room_id);
"#;

/// `/sync` reads a user's read receipts in all rooms at once.
const V8: &str = r#"
CREATE INDEX receipts_user ON receipts (user_id);
"#;

/// Tokens an admin made with Synapse's login-as API may expire.
const V9: &str = r#"
ALTER TABLE access_tokens ADD COLUMN valid_until_ms BIGINT;
"#;

/// An event keeps the device, scope and transaction id its local sender
/// sent it with, so that `/sync` can give the sending device its
/// transaction id from the event's own row (or the event cache) without a
/// lookup per event. `event_transactions` then needs no index by event
/// (one random insert less for every message): purges find its rows
/// through the events' columns.
const V10: &str = r#"
ALTER TABLE events ADD COLUMN txn_device TEXT;
ALTER TABLE events ADD COLUMN txn_scope TEXT;
ALTER TABLE events ADD COLUMN txn_id TEXT;
UPDATE events SET
    txn_device = (SELECT t.device_id FROM event_transactions t
                  WHERE t.event_id = events.event_id LIMIT 1),
    txn_scope = (SELECT t.scope FROM event_transactions t
                 WHERE t.event_id = events.event_id LIMIT 1),
    txn_id = (SELECT t.txn_id FROM event_transactions t
              WHERE t.event_id = events.event_id LIMIT 1)
WHERE event_id IN (SELECT event_id FROM event_transactions);
DROP INDEX event_transactions_event;
"#;

/// The per-room stream index carries what timeline and unread reads select
/// (an event's reference, and its sender for "others' events"), so those
/// reads never visit the table rows, which hold each event's whole JSON:
/// an initial sync of a hundred rooms touched a thousand of them.
const V11: &str = r#"
DROP INDEX events_room_stream;
CREATE INDEX events_room_stream ON events
    (room_id, stream_ordering, event_id, depth, state_group, redacted_by, sender);
"#;

/// Admin jobs (reindex, history purges, room deletions) outlive a restart:
/// their status stays readable and unfinished ones resume (`services/jobs/`).
/// The room is `job_room`, not `room_id`: a room's purge keeps its job.
const V12: &str = r#"
CREATE TABLE jobs (
    job_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    job_room TEXT,
    params TEXT NOT NULL,
    status TEXT NOT NULL,
    processed BIGINT NOT NULL DEFAULT 0,
    error TEXT,
    result TEXT,
    started_ts BIGINT NOT NULL,
    finished_ts BIGINT
);
CREATE INDEX jobs_room ON jobs (job_room);
"#;

/// `/sync` reads the receipts of the user's rooms written in its window,
/// room by room, never the receipts of the whole server.
const V13: &str = r#"
CREATE INDEX receipts_room_stream ON receipts (room_id, stream_ordering);
"#;

/// Send-to-device: each device's inbox, in stream order (one message per
/// device per position: a request takes one position), its rows deleted
/// once the device acknowledges them. Deleted rows leave no trace of their
/// positions, so `stream_high_water` keeps the highest position given to a
/// to-device message: the stream never hands a position out twice across a
/// restart (a client's token may already be past it).
const V14: &str = r#"
CREATE TABLE device_inbox (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    sender TEXT NOT NULL,
    event_type TEXT NOT NULL,
    content TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, stream_ordering)
);
CREATE TABLE stream_high_water (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);
INSERT INTO stream_high_water (name, position) VALUES ('to_device', 0);
"#;

/// The user directory shows the members of rooms whose join rule is
/// `public` or whose history is `world_readable` (Synapse's "public" room):
/// two flags per room, kept with the room's current state by the event
/// writer, so a search checks a member's rooms by key instead of reading
/// every room's state. Existing rooms get them from their current state.
/// A search finds users by word prefixes (`model::user_words`) in
/// `user_directory_words`, written with the profile; [`backfill_v15`] fills
/// it for existing profiles.
const V15: &str = r#"
CREATE TABLE user_directory_words (
    word {BINARY_TEXT} NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (word, user_id)
);
CREATE INDEX user_directory_words_user ON user_directory_words (user_id, word);
ALTER TABLE rooms ADD COLUMN join_rule_public BIGINT NOT NULL DEFAULT 0;
ALTER TABLE rooms ADD COLUMN world_readable BIGINT NOT NULL DEFAULT 0;
UPDATE rooms SET join_rule_public = 1 WHERE room_id IN (
    SELECT c.room_id FROM current_state c JOIN events e ON e.event_id = c.event_id
    WHERE c.event_type = 'm.room.join_rules' AND c.state_key = ''
      AND {JSON_TEXT:e.json:content.join_rule} = 'public');
UPDATE rooms SET world_readable = 1 WHERE room_id IN (
    SELECT c.room_id FROM current_state c JOIN events e ON e.event_id = c.event_id
    WHERE c.event_type = 'm.room.history_visibility' AND c.state_key = ''
      AND {JSON_TEXT:e.json:content.history_visibility} = 'world_readable');
"#;

/// The directory words of every existing profile.
async fn backfill_v15(tx: &mut super::Tx) -> sqlx::Result<()> {
    let profiles: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT user_id, displayname FROM profiles")
            .fetch_all(&mut **tx)
            .await?;
    for (user_id, displayname) in profiles {
        super::profiles::write_user_words(tx, &user_id, displayname.as_deref()).await?;
    }
    Ok(())
}

/// After a history purge a room's timeline starts at the purge point: the
/// state events kept below it (and local events kept by the purge's
/// `delete_local_events: false`) are no longer served in `/messages` or
/// `/sync` timelines, as Synapse makes them outliers.
const V16: &str = r#"
CREATE TABLE room_history_floors (
    room_id TEXT PRIMARY KEY,
    depth BIGINT NOT NULL
);
"#;

/// Ephemeral messages (MSC2228): when each message that asked for it is
/// pruned. Written with the event; the earliest is read at start.
const V17: &str = r#"
CREATE TABLE event_expiry (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    expiry_ts BIGINT NOT NULL
);
CREATE INDEX event_expiry_ts ON event_expiry (expiry_ts);
CREATE INDEX event_expiry_room ON event_expiry (room_id);
"#;

/// End-to-end encryption keys (`storage/e2e_keys.rs`): each device's
/// identity keys as uploaded (its JSON; signatures others add later are kept
/// apart and merged when read), its one-time keys (a row each, deleted when
/// claimed) and one fallback key per algorithm (kept when claimed, marked
/// used, until replaced). `device_list_changes` holds the stream position
/// of each change of a user's devices or keys, for `/sync`'s and
/// `/keys/changes`' `device_lists`; its highest position counts in the
/// stream's start-up position.
const V18: &str = r#"
CREATE TABLE e2e_device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);
CREATE TABLE e2e_one_time_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);
CREATE TABLE e2e_fallback_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    used BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id, algorithm)
);
CREATE TABLE device_list_changes (
    stream_ordering BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (stream_ordering, user_id)
);
"#;

/// Server-side key backups (`services/key_backup.rs`): each user's backup
/// versions (numbered per user; a deleted one keeps its row, marked, so its
/// number is never given again) and the room keys stored in each. `etag`
/// counts the changes to a version's keys.
const V19: &str = r#"
CREATE TABLE key_backup_versions (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data TEXT NOT NULL,
    etag BIGINT NOT NULL DEFAULT 0,
    deleted BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, version)
);
CREATE TABLE key_backup_sessions (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    first_message_index BIGINT NOT NULL,
    forwarded_count BIGINT NOT NULL,
    is_verified BIGINT NOT NULL,
    key_data TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);
CREATE INDEX key_backup_sessions_room ON key_backup_sessions (room_id);
"#;

/// Cross-signing (`services/cross_signing.rs`): each user's master,
/// self-signing and user-signing key (`key_id` is the public key), and the
/// signatures uploaded later, kept apart from the keys they sign (a device
/// id or a cross-signing public key as `target_key_id`). A device-list
/// change with `only_for` is seen by that user alone (a new user-signing
/// key, or a signature of another user's key, concerns only its owner).
const V20: &str = r#"
ALTER TABLE device_list_changes ADD COLUMN only_for TEXT;
CREATE TABLE e2e_cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);
CREATE TABLE e2e_cross_signing_signatures (
    target_user_id TEXT NOT NULL,
    target_key_id TEXT NOT NULL,
    signer_user_id TEXT NOT NULL,
    signer_key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);
CREATE INDEX e2e_cross_signing_signatures_signer
    ON e2e_cross_signing_signatures (signer_user_id);
"#;

/// The content repository (`services/media.rs`): one row per media id. A
/// body is stored once per content (`sha256` names it in the media store),
/// so several rows may share one. `sha256` and `size` are NULL while an
/// asynchronous upload (`POST /media/v1/create`) waits for its body, until
/// `unused_expires_at`. `authenticated`: uploaded while authenticated media
/// was on, so the unauthenticated legacy download refuses it.
const V25: &str = r#"
CREATE TABLE media (
    server_name TEXT NOT NULL,
    media_id TEXT NOT NULL,
    uploader TEXT,
    content_type TEXT,
    upload_name TEXT,
    size BIGINT,
    sha256 TEXT,
    created_ts BIGINT NOT NULL,
    last_access_ts BIGINT,
    unused_expires_at BIGINT,
    quarantined_by TEXT,
    safe_from_quarantine BIGINT NOT NULL DEFAULT 0,
    authenticated BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (server_name, media_id)
);
CREATE INDEX media_sha256 ON media (sha256);
CREATE INDEX media_uploader ON media (uploader, created_ts);
"#;

/// Push: the pushers (one per app id and pushkey for a user, owned by the
/// device whose token set it), the delivery queue (one row per pusher and
/// notifying event, or a badge update when `event_id` is null; taken in
/// `id` order per pusher), and the notifications `/notifications` lists.
const V26: &str = r#"
CREATE TABLE pushers (
    pusher_id {AUTO_ID},
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    kind TEXT NOT NULL,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag TEXT,
    lang TEXT NOT NULL,
    data TEXT NOT NULL,
    pushkey_ts BIGINT NOT NULL
);
CREATE UNIQUE INDEX pushers_key ON pushers (app_id, pushkey, user_id);
CREATE INDEX pushers_user ON pushers (user_id, device_id);
CREATE TABLE push_queue (
    id {AUTO_ID},
    pusher_id BIGINT NOT NULL,
    room_id TEXT,
    event_id TEXT,
    actions TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX push_queue_pusher ON push_queue (pusher_id, id);
CREATE INDEX push_queue_room ON push_queue (room_id);
CREATE TABLE push_notifications (
    user_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    actions TEXT NOT NULL,
    highlight BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, stream_ordering)
);
CREATE INDEX push_notifications_room ON push_notifications (room_id);
CREATE INDEX push_notifications_ts ON push_notifications (ts);
"#;

/// Thumbnails of local media (`services/media/thumbnails.rs`): one row per
/// size and method made, the body stored by content hash like the media.
const V27: &str = r#"
CREATE TABLE media_thumbnails (
    server_name TEXT NOT NULL,
    media_id TEXT NOT NULL,
    width BIGINT NOT NULL,
    height BIGINT NOT NULL,
    method TEXT NOT NULL,
    content_type TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    source_width BIGINT NOT NULL,
    source_height BIGINT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (server_name, media_id, method, width, height)
);
CREATE INDEX media_thumbnails_sha256 ON media_thumbnails (sha256);
"#;

/// URL previews (`services/media/preview.rs`): the OpenGraph answer made
/// of each fetch of a URL, until `expires_ts`; `media_id` is the stored
/// image, if any.
const V28: &str = r#"
CREATE TABLE url_previews (
    url TEXT NOT NULL,
    fetched_ts BIGINT NOT NULL,
    expires_ts BIGINT NOT NULL,
    og TEXT NOT NULL,
    media_id TEXT,
    PRIMARY KEY (url, fetched_ts)
);
CREATE INDEX url_previews_expires ON url_previews (expires_ts);
"#;

/// OpenID tokens (`POST /user/{userId}/openid/request_token`, read by the
/// federation `/openid/userinfo`) until they expire, and a user's custom
/// profile fields (spec v1.16), one row per key, the value as JSON text.
const V30: &str = r#"
CREATE TABLE openid_tokens (
    token TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    valid_until_ms BIGINT NOT NULL
);
CREATE INDEX openid_tokens_valid_until ON openid_tokens (valid_until_ms);
CREATE INDEX openid_tokens_user ON openid_tokens (user_id);
CREATE TABLE profile_fields (
    user_id TEXT NOT NULL,
    field_name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (user_id, field_name)
);
"#;

/// A room's relations of one type (`/threads` lists a room's threads, and
/// the rooms that have threads are read at first use).
const V31: &str = r#"
CREATE INDEX event_relations_room ON event_relations (rel_type, room_id, relates_to);
"#;

/// Each application service's delivery (`services/appservice_txns.rs`):
/// the stream position its events were decided up to, the next
/// transaction id, and the transaction in flight (id, body, the position it
/// covers), kept until the service acknowledges it so a retry, even after a
/// restart, sends the same id and content.
const V32: &str = r#"
CREATE TABLE appservice_state (
    as_id TEXT PRIMARY KEY,
    stream_pos BIGINT NOT NULL,
    next_txn_id BIGINT NOT NULL,
    txn_id BIGINT,
    txn_body TEXT,
    txn_upto BIGINT
);
"#;

/// One-time keys stored in primary-key order (SQLite: a table without rowid),
/// so a claim's deletion touches one page of each device's keys instead of a
/// table page and an index page. PostgreSQL copies the table unchanged.
const V37: &str = r#"
CREATE TABLE e2e_one_time_keys_clustered (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
){WITHOUT_ROWID};
INSERT INTO e2e_one_time_keys_clustered (user_id, device_id, algorithm, key_id, key_json)
    SELECT user_id, device_id, algorithm, key_id, key_json FROM e2e_one_time_keys;
DROP TABLE e2e_one_time_keys;
ALTER TABLE e2e_one_time_keys_clustered RENAME TO e2e_one_time_keys
"#;

/// Each to-device send stored once (`model::to_device`'s body holds every
/// recipient's content) instead of a row per recipient device, and a
/// per-device acknowledgement mark instead of deleting rows as devices
/// acknowledge. [`backfill_v38`] moves `device_inbox`'s waiting messages
/// over and drops it.
const V38: &str = r#"
CREATE TABLE to_device_sends (
    stream_ordering {INT64_KEY},
    sender TEXT NOT NULL,
    event_type TEXT NOT NULL,
    body {BLOB} NOT NULL
);
CREATE TABLE to_device_acks (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
)
"#;

/// `device_inbox`'s rows, grouped by send, become `to_device_sends` rows.
async fn backfill_v38(tx: &mut super::Tx) -> sqlx::Result<()> {
    type Row = (i64, String, String, String, String, String);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT stream_ordering, user_id, device_id, sender, event_type, content
         FROM device_inbox ORDER BY stream_ordering",
    )
    .fetch_all(&mut **tx)
    .await?;
    for send in rows.chunk_by(|a, b| a.0 == b.0) {
        let (pos, _, _, sender, event_type, _) = &send[0];
        let mut recipients: Vec<crate::model::to_device::Recipient<'_>> = send
            .iter()
            .map(|r| crate::model::to_device::Recipient {
                user: &r.1,
                device: &r.2,
                content: &r.5,
            })
            .collect();
        let body = crate::model::to_device::encode(&mut recipients).body;
        sqlx::query(
            "INSERT INTO to_device_sends (stream_ordering, sender, event_type, body)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(*pos)
        .bind(sender.as_str())
        .bind(event_type.as_str())
        .bind(body)
        .execute(&mut **tx)
        .await?;
    }
    sqlx::query("DROP TABLE device_inbox")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A room's events by `origin_server_ts` (`timestamp_to_event` reads the
/// events nearest a time, which scanned the whole room without it).
const V39: &str = r#"
CREATE INDEX events_room_time ON events (room_id, origin_server_ts, stream_ordering);
"#;

/// The rooms each application service publishes in its networks' room
/// lists (`PUT /directory/list/appservice/{networkId}/{roomId}`), apart
/// from the main directory (`rooms.is_public`). By room for purges.
const V42: &str = r#"
CREATE TABLE appservice_room_list (
    appservice_id TEXT NOT NULL,
    network_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (appservice_id, network_id, room_id)
);
CREATE INDEX appservice_room_list_room ON appservice_room_list (room_id);
"#;

/// A send's contents in pieces (`storage::to_device::CHUNK_BYTES` each),
/// apart from the header that says which device gets which: a device's
/// message is read as the piece or two it lies in. [`backfill_v43`] cuts
/// the bodies stored before.
const V43: &str = r#"
CREATE TABLE to_device_chunks (
    stream_ordering BIGINT NOT NULL,
    chunk BIGINT NOT NULL,
    bytes {BLOB} NOT NULL,
    PRIMARY KEY (stream_ordering, chunk)
)
"#;

/// Each application service's positions in the to-device and device-list
/// streams (`services/appservice_txns.rs`): what it was sent up to, and
/// what the transaction in flight covers (moved there when the service
/// acknowledges it). Rows written before start both at the events'
/// position (the to-device messages and device-list changes before it were
/// sent from memory, or lost at the restart, as before).
const V45: &str = r#"
ALTER TABLE appservice_state ADD COLUMN to_device_pos BIGINT;
ALTER TABLE appservice_state ADD COLUMN device_list_pos BIGINT;
ALTER TABLE appservice_state ADD COLUMN txn_to_device_upto BIGINT;
ALTER TABLE appservice_state ADD COLUMN txn_device_list_upto BIGINT;
UPDATE appservice_state SET to_device_pos = stream_pos, device_list_pos = stream_pos;
"#;

/// Other servers' signing keys (`services/federation/keys.rs`): each key
/// with the time it is valid until (a current key: its answer's
/// `valid_until_ts`) or expired at (an `old_verify_keys` entry), and each
/// server's latest answer as it was signed, which the notary API hands on.
/// Remote users' device lists as last fetched from their server
/// (`services/e2e_keys/remote.rs`): the devices' keys and the master and
/// self-signing keys.
const V46: &str = r#"
CREATE TABLE server_signing_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    public_key TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    expired_ts BIGINT,
    PRIMARY KEY (server_name, key_id)
);

CREATE TABLE server_key_responses (
    server_name TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    fetched_ts BIGINT NOT NULL
);

CREATE TABLE remote_device_lists (
    user_id TEXT PRIMARY KEY,
    stream_id BIGINT NOT NULL,
    fetched_ts BIGINT NOT NULL
);

CREATE TABLE remote_devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE remote_cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);
"#;

/// The stream position the push recorder (`services/pushers.rs`) has
/// recorded notifications up to (one row, `id` 1), and whether the last
/// run stopped with everything it was handed recorded (`clean`, 1): after
/// a crash (0), the events committed after the position are recorded at
/// the next start, so a crash between an event's commit and its recording
/// loses no notification and no push.
const V47: &str = r#"
CREATE TABLE push_state (
    id BIGINT PRIMARY KEY,
    stream_pos BIGINT NOT NULL,
    clean BIGINT NOT NULL
);
"#;

/// Each stored send keeps its header in `to_device_sends.body`; its
/// contents move to `to_device_chunks`. A body that cannot be read stays
/// as it is (start-up reports it and leaves it alone, as before).
async fn backfill_v43(tx: &mut super::Tx) -> sqlx::Result<()> {
    let mut after = i64::MIN;
    loop {
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT stream_ordering, body FROM to_device_sends WHERE stream_ordering > $1
             ORDER BY stream_ordering LIMIT 64",
        )
        .bind(after)
        .fetch_all(&mut **tx)
        .await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last.0;
        for (pos, body) in &rows {
            let Ok(header) = crate::model::to_device::header_len(body) else {
                continue;
            };
            sqlx::query("UPDATE to_device_sends SET body = $1 WHERE stream_ordering = $2")
                .bind(&body[..header])
                .bind(*pos)
                .execute(&mut **tx)
                .await?;
            for (n, bytes) in super::to_device::pieces(&body[header..]) {
                sqlx::query(
                    "INSERT INTO to_device_chunks (stream_ordering, chunk, bytes) VALUES ($1, $2, $3)",
                )
                .bind(*pos)
                .bind(n)
                .bind(bytes)
                .execute(&mut **tx)
                .await?;
            }
        }
    }
}

/// Applies the migrations not applied yet, up to version `upto`.
pub(super) async fn run(storage: &Storage, upto: i64) -> anyhow::Result<()> {
    let pool = storage.pool();
    pool.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_ts BIGINT NOT NULL)",
    )
    .await?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
        .fetch_all(pool)
        .await?;
    if let Some(max) = applied.iter().max() {
        let latest = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
        anyhow::ensure!(
            *max <= latest,
            "the database schema (version {max}) is newer than this Myelin (version {latest}); upgrade Myelin"
        );
    }
    for (version, name, ddl) in MIGRATIONS.iter().filter(|m| m.0 <= upto) {
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
        if *version == 15 {
            backfill_v15(&mut tx).await?;
        }
        if *version == 38 {
            backfill_v38(&mut tx).await?;
        }
        if *version == 43 {
            backfill_v43(&mut tx).await?;
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

#[cfg(test)]
mod tests {
    use crate::storage::Storage;

    /// A fresh SQLite database migrated up to `version`: its guard, URL and
    /// storage.
    async fn at_version(version: i64) -> (tempfile::TempDir, String, Storage) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let storage = Storage::connect_with(&url, 1, None, version).await.unwrap();
        (dir, url, storage)
    }

    /// The database at `url` migrated to the latest version.
    async fn upgraded(url: &str) -> Storage {
        Storage::connect_with(url, 1, None, i64::MAX).await.unwrap()
    }

    /// Version 10 copies each event's transaction from `event_transactions`
    /// onto the event's row; events sent without one keep none.
    #[tokio::test]
    async fn v10_moves_transactions_onto_the_events() {
        let (_dir, url, storage) = at_version(9).await;
        for (pos, id) in [(1_i64, "$a"), (2, "$b")] {
            sqlx::query(
                "INSERT INTO events (stream_ordering, event_id, room_id, depth, event_type, sender, origin_server_ts, json)
                 VALUES ($1, $2, '!r:x', $1, 'm.room.message', '@u:x', 0, '{}')",
            )
            .bind(pos)
            .bind(id)
            .execute(storage.pool())
            .await
            .unwrap();
        }
        sqlx::query(
            "INSERT INTO event_transactions (user_id, device_id, scope, txn_id, event_id)
             VALUES ('@u:x', 'DEV', 'send:!r:x', 't1', '$a')",
        )
        .execute(storage.pool())
        .await
        .unwrap();
        drop(storage);
        let storage = upgraded(&url).await;
        type Row = (String, Option<String>, Option<String>, Option<String>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT event_id, txn_device, txn_scope, txn_id FROM events ORDER BY event_id",
        )
        .fetch_all(storage.pool())
        .await
        .unwrap();
        assert_eq!(
            rows,
            vec![
                (
                    "$a".into(),
                    Some("DEV".into()),
                    Some("send:!r:x".into()),
                    Some("t1".into())
                ),
                ("$b".into(), None, None, None),
            ]
        );
    }

    /// Version 38 turns each send's `device_inbox` rows into one
    /// `to_device_sends` row whose body gives each device its content, and
    /// drops the old table.
    #[tokio::test]
    async fn v38_stores_each_waiting_send_once() {
        let (_dir, url, storage) = at_version(37).await;
        for (pos, user, device, content) in [
            (5_i64, "@a:x", "A1", r#"{"to":"a1"}"#),
            (5, "@b:x", "B1", r#"{"to":"b1"}"#),
            (5, "@a:x", "A2", r#"{"to":"a2"}"#),
            (7, "@b:x", "B1", r#"{"n":7}"#),
        ] {
            sqlx::query(
                "INSERT INTO device_inbox (user_id, device_id, stream_ordering, sender, event_type, content)
                 VALUES ($1, $2, $3, '@s:x', 'm.t', $4)",
            )
            .bind(user)
            .bind(device)
            .bind(pos)
            .bind(content)
            .execute(storage.pool())
            .await
            .unwrap();
        }
        drop(storage);
        let storage = upgraded(&url).await;
        let rows: Vec<(i64, String, String, Vec<u8>)> = sqlx::query_as(
            "SELECT stream_ordering, sender, event_type, body FROM to_device_sends ORDER BY stream_ordering",
        )
        .fetch_all(storage.pool())
        .await
        .unwrap();
        assert_eq!(rows.len(), 2);
        let mut bodies = Vec::new();
        for r in &rows {
            bodies.push(whole_body(&storage, r.0, &r.3).await);
        }
        let find = |i: usize, u: &str, d: &str| {
            crate::model::to_device::find(&bodies[i], u, d)
                .unwrap()
                .map(str::to_owned)
        };
        assert_eq!(
            (rows[0].0, rows[0].1.as_str(), rows[0].2.as_str()),
            (5, "@s:x", "m.t")
        );
        assert_eq!(find(0, "@a:x", "A1").as_deref(), Some(r#"{"to":"a1"}"#));
        assert_eq!(find(0, "@a:x", "A2").as_deref(), Some(r#"{"to":"a2"}"#));
        assert_eq!(find(0, "@b:x", "B1").as_deref(), Some(r#"{"to":"b1"}"#));
        assert_eq!(
            crate::model::to_device::entries(&bodies[0]).unwrap().len(),
            3
        );
        assert_eq!(rows[1].0, 7);
        assert_eq!(find(1, "@b:x", "B1").as_deref(), Some(r#"{"n":7}"#));
        assert_eq!(find(1, "@a:x", "A1"), None);
        assert!(
            sqlx::query("SELECT 1 FROM device_inbox")
                .fetch_optional(storage.pool())
                .await
                .is_err(),
            "device_inbox is gone"
        );
    }

    /// A stored send's whole body (`model::to_device`): its header and
    /// its pieces, in order.
    async fn whole_body(storage: &Storage, pos: i64, header: &[u8]) -> Vec<u8> {
        let chunks: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT bytes FROM to_device_chunks WHERE stream_ordering = $1 ORDER BY chunk",
        )
        .bind(pos)
        .fetch_all(storage.pool())
        .await
        .unwrap();
        let mut body = header.to_vec();
        for c in chunks {
            body.extend(c);
        }
        body
    }

    /// Version 43 keeps each stored send's header in `to_device_sends` and
    /// cuts its contents into `to_device_chunks` pieces; the whole body is
    /// unchanged, and a body that cannot be read is left as it was.
    #[tokio::test]
    async fn v43_cuts_stored_contents_into_pieces() {
        let (_dir, url, storage) = at_version(39).await;
        let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(20_000));
        let mut recipients = vec![
            crate::model::to_device::Recipient {
                user: "@a:x",
                device: "A1",
                content: &big,
            },
            crate::model::to_device::Recipient {
                user: "@b:x",
                device: "B1",
                content: r#"{"small":1}"#,
            },
        ];
        let body = crate::model::to_device::encode(&mut recipients).body;
        for (pos, bytes) in [(5_i64, body.clone()), (6, b"damaged".to_vec())] {
            sqlx::query(
                "INSERT INTO to_device_sends (stream_ordering, sender, event_type, body)
                 VALUES ($1, '@s:x', 'm.t', $2)",
            )
            .bind(pos)
            .bind(bytes)
            .execute(storage.pool())
            .await
            .unwrap();
        }
        drop(storage);
        let storage = upgraded(&url).await;
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT stream_ordering, body FROM to_device_sends ORDER BY stream_ordering",
        )
        .fetch_all(storage.pool())
        .await
        .unwrap();
        let header = crate::model::to_device::header_len(&body).unwrap();
        assert_eq!(rows[0].1, body[..header], "the header stays");
        assert_eq!(whole_body(&storage, 5, &rows[0].1).await, body);
        let pieces: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM to_device_chunks WHERE stream_ordering = 5")
                .fetch_one(storage.pool())
                .await
                .unwrap();
        let expected = (body.len() - header).div_ceil(crate::storage::to_device::CHUNK_BYTES);
        assert_eq!(pieces, i64::try_from(expected).unwrap());
        assert!(pieces >= 3, "20 KB of contents make several pieces");
        assert_eq!(rows[1].1, b"damaged", "left as it was");
        assert_eq!(whole_body(&storage, 6, b"").await, b"", "no pieces");
    }

    /// Version 15 sets each existing room's directory flags from its
    /// current join rules and history visibility (not from older state).
    #[tokio::test]
    async fn v15_sets_the_rooms_directory_flags_from_current_state() {
        let (_dir, url, storage) = at_version(13).await;
        // (room, event, content field, its value); all current state but
        // $h0, which $h1 replaced.
        let events = [
            ("!rule:x", "$r1", "join_rule", "public"),
            ("!hist:x", "$h0", "join_rule", "public"),
            ("!hist:x", "$h1", "join_rule", "invite"),
            ("!hist:x", "$h2", "history_visibility", "world_readable"),
            ("!none:x", "$n1", "history_visibility", "shared"),
        ];
        for room in ["!rule:x", "!hist:x", "!none:x"] {
            sqlx::query(
                "INSERT INTO rooms (room_id, room_version, creator, is_public, created_ts)
                 VALUES ($1, '10', '@u:x', 0, 0)",
            )
            .bind(room)
            .execute(storage.pool())
            .await
            .unwrap();
        }
        for (pos, (room, id, field, value)) in (1_i64..).zip(events) {
            let ty = match field {
                "join_rule" => "m.room.join_rules",
                _ => "m.room.history_visibility",
            };
            let json =
                format!(r#"{{"content":{{"{field}":"{value}"}},"type":"{ty}","state_key":""}}"#);
            sqlx::query(
                "INSERT INTO events (stream_ordering, event_id, room_id, depth, event_type, state_key, sender, origin_server_ts, json)
                 VALUES ($1, $2, $3, $1, $4, '', '@u:x', 0, $5)",
            )
            .bind(pos)
            .bind(id)
            .bind(room)
            .bind(ty)
            .bind(json)
            .execute(storage.pool())
            .await
            .unwrap();
        }
        sqlx::query(
            "INSERT INTO current_state (room_id, event_type, state_key, event_id, stream_ordering)
             SELECT room_id, event_type, state_key, event_id, stream_ordering FROM events
             WHERE event_id <> '$h0'",
        )
        .execute(storage.pool())
        .await
        .unwrap();
        drop(storage);
        let storage = upgraded(&url).await;
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT room_id, join_rule_public, world_readable FROM rooms ORDER BY room_id",
        )
        .fetch_all(storage.pool())
        .await
        .unwrap();
        assert_eq!(
            rows,
            vec![
                ("!hist:x".into(), 0, 1),
                ("!none:x".into(), 0, 0),
                ("!rule:x".into(), 1, 0),
            ]
        );
    }

    /// The `detail` column of an `EXPLAIN QUERY PLAN` (SQLite).
    async fn plan<'q>(
        storage: &Storage,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> Vec<String> {
        use sqlx::Row;
        query
            .fetch_all(storage.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get::<String, _>("detail").unwrap())
            .collect()
    }

    /// Version 11: a room's timeline and unread reads are answered from the
    /// index alone (SQLite's plan says "COVERING INDEX").
    #[tokio::test]
    async fn v11_timeline_reads_never_visit_the_event_rows() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let storage = Storage::connect(&url, 1).await.unwrap();
        let detail = plan(
            &storage,
            sqlx::query(
                "EXPLAIN QUERY PLAN SELECT stream_ordering, event_id, room_id, depth, state_group, redacted_by
                 FROM events WHERE room_id = '!r:x' AND stream_ordering > 0 AND stream_ordering <= 9
                   AND sender <> '@u:x' ORDER BY stream_ordering DESC LIMIT 11",
            ),
        )
        .await;
        assert!(
            detail
                .iter()
                .any(|d| d.contains("COVERING INDEX events_room_stream")),
            "{detail:?}"
        );
    }

    /// Version 39: `timestamp_to_event`'s page query walks the room's
    /// events by time through an index instead of scanning and sorting
    /// the room (SQLite's plan names the index and has no sort step).
    #[tokio::test]
    async fn v39_events_by_time_use_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let storage = Storage::connect(&url, 1).await.unwrap();
        for backwards in [true, false] {
            let sql = crate::storage::events::page_sql(
                crate::storage::events::PageOrder::Time,
                backwards,
            );
            let query = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                .bind("!r:x")
                .bind(5_i64)
                .bind(7_i64)
                .bind(10_i64);
            let detail = plan(&storage, query).await;
            assert!(
                detail.iter().any(|d| d.contains("events_room_time")),
                "{detail:?}"
            );
            assert!(
                !detail.iter().any(|d| d.contains("TEMP B-TREE")),
                "{detail:?}"
            );
        }
    }
}
