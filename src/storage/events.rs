//! Tables `rooms`, `events`, `event_relations`, `forward_extremities`,
//! `event_transactions`, `current_state`, and the state groups
//! (`state_groups`, `state_group_entries`).
//!
//! Events and everything they change are written by [`Storage::persist_events`]
//! in one transaction per batch.

use std::collections::HashMap;

use ruma::events::room::member::MembershipState;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::Storage;
use super::batch::{Param, WriteBatch};
use super::rows::{IntFlag, OptionalId, PackedRows, decode_error, parse_id};

#[derive(Debug, Clone, FromRow)]
pub struct RoomRow {
    #[sqlx(try_from = "String")]
    pub room_id: OwnedRoomId,
    pub room_version: String,
    #[sqlx(try_from = "String")]
    pub creator: OwnedUserId,
    #[sqlx(try_from = "IntFlag")]
    pub is_public: bool,
}

/// An event as stored: its PDU JSON and where it sits.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub stream_ordering: i64,
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    pub depth: i64,
    pub state_group: Option<i64>,
    pub redacted_by: Option<OwnedEventId>,
    pub json: String,
    /// (device id, transaction id) it was sent with by a local client, if
    /// it was.
    pub txn: Option<(String, String)>,
}

macro_rules! event_columns {
    () => {
        "stream_ordering, event_id, room_id, depth, state_group, redacted_by, json, txn_device, txn_id"
    };
}

/// The order [`Storage::room_events_page`] walks a room's events in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageOrder {
    /// By `(depth, stream_ordering)` (`/messages`).
    Topological,
    /// By `(origin_server_ts, stream_ordering)` (`timestamp_to_event`).
    Time,
}

/// Where an event sits, without its JSON: what `/sync` reads first, taking
/// the JSON only of the events not in the event cache
/// ([`Storage::events_json`]).
#[derive(Debug, Clone, FromRow)]
pub struct EventRef {
    pub stream_ordering: i64,
    #[sqlx(try_from = "String")]
    pub event_id: OwnedEventId,
    #[sqlx(try_from = "String")]
    pub room_id: OwnedRoomId,
    pub depth: i64,
    pub state_group: Option<i64>,
    #[sqlx(try_from = "OptionalId<OwnedEventId>")]
    pub redacted_by: Option<OwnedEventId>,
}

impl EventRef {
    /// The row, given the event's JSON and transaction.
    pub fn with_json(self, (json, txn): (String, Option<(String, String)>)) -> EventRow {
        EventRow {
            stream_ordering: self.stream_ordering,
            event_id: self.event_id,
            room_id: self.room_id,
            depth: self.depth,
            state_group: self.state_group,
            redacted_by: self.redacted_by,
            json,
            txn,
        }
    }
}

macro_rules! event_ref_columns {
    () => {
        "stream_ordering, event_id, room_id, depth, state_group, redacted_by"
    };
}

/// The columns of [`event_columns!`]: the reference, the JSON and the
/// transaction (`txn_device` and `txn_id`, both set or both null).
impl<'r> FromRow<'r, AnyRow> for EventRow {
    fn from_row(r: &'r AnyRow) -> sqlx::Result<Self> {
        Ok(EventRef::from_row(r)?.with_json((r.try_get("json")?, txn_of(r)?)))
    }
}

/// The (device, transaction id) pair of a row's `txn_device` and `txn_id`.
fn txn_of(r: &AnyRow) -> sqlx::Result<Option<(String, String)>> {
    let device: Option<String> = r.try_get("txn_device")?;
    let txn: Option<String> = r.try_get("txn_id")?;
    Ok(device.zip(txn))
}

/// One entry of a state group: the event at (type, state key).
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct StateEntryRow {
    pub event_type: String,
    pub state_key: String,
    #[sqlx(try_from = "String")]
    pub event_id: OwnedEventId,
}

/// A new state group: the state after a state event, stored as a delta on
/// `prev_group` (or as a full snapshot when `prev_group` is `None`).
pub struct NewStateGroup {
    pub id: i64,
    pub prev_group: Option<i64>,
    pub chain_length: i64,
    pub entries: Vec<StateEntryRow>,
}

/// A stored state group: its parent, how many deltas lie between it and a
/// snapshot, and its own entries.
#[derive(Debug, Clone)]
pub struct StateGroupRow {
    pub prev_group: Option<i64>,
    pub chain_length: i64,
    pub entries: Vec<StateEntryRow>,
}

/// A room the user has a membership in: the membership and the stream
/// position of the member event.
#[derive(Debug, Clone, FromRow)]
pub struct RoomMembershipRow {
    #[sqlx(try_from = "String")]
    pub room_id: OwnedRoomId,
    #[sqlx(try_from = "String")]
    pub membership: MembershipState,
    pub stream_ordering: i64,
}

/// A member of a room (see [`Storage::rooms_joined_and_invited`]).
#[derive(Debug, Clone, FromRow)]
pub struct RoomMemberRow {
    #[sqlx(try_from = "String")]
    pub user_id: OwnedUserId,
    #[sqlx(try_from = "String")]
    pub membership: MembershipState,
}

/// A message an edit may replace (see [`Storage::editable_messages`]).
#[derive(Debug, Clone, FromRow)]
pub struct EditableMessageRow {
    #[sqlx(try_from = "String")]
    pub event_id: OwnedEventId,
    #[sqlx(try_from = "String")]
    pub room_id: OwnedRoomId,
    #[sqlx(try_from = "String")]
    pub sender: OwnedUserId,
    pub stream_ordering: i64,
}

/// The idempotency key of a send: who sent it from which device, in which
/// scope, with which transaction id.
#[derive(Debug, Clone)]
pub struct TxnKey {
    pub user_id: String,
    pub device_id: String,
    pub scope: String,
    pub txn_id: String,
}

/// Everything one new event writes (owned: it waits in the write queue).
pub struct PersistEvent {
    pub stream_ordering: i64,
    pub event_id: String,
    pub room_id: String,
    pub depth: i64,
    pub event_type: String,
    pub state_key: Option<String>,
    pub sender: String,
    pub origin_server_ts: i64,
    pub json: String,
    /// The state after this event.
    pub state_group: i64,
    pub new_state_group: Option<NewStateGroup>,
    /// For state events: the membership, if a member event.
    pub membership: Option<MembershipState>,
    pub prev_events: Vec<String>,
    /// For a create event: the room row to add (version, creator); the
    /// room's `created_ts` is the create event's `origin_server_ts`.
    pub new_room: Option<(String, String)>,
    /// For idempotent sends.
    pub txn: Option<TxnKey>,
    /// (relates_to event, rel_type)
    pub relation: Option<(String, String)>,
    /// The event this one redacts (already checked to be in the same room).
    pub redacts: Option<String>,
    /// When the message is to be pruned (ephemeral messages), in ms.
    pub expires_at: Option<i64>,
    /// For the room's join rules or history visibility: the room's flag
    /// for the user directory that it sets.
    pub directory_flag: Option<DirectoryFlag>,
}

/// What makes a room's members visible to everyone in the user directory
/// (columns of `rooms`): a `public` join rule, `world_readable` history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectoryFlag {
    JoinRulePublic(bool),
    WorldReadable(bool),
}

/// Rows per multi-row `INSERT` (at most 13 binds a row: well within
/// SQLite's and PostgreSQL's limits on parameters).
const ROWS_PER_INSERT: usize = 256;

/// A multi-row `INSERT`: `head` (`INSERT INTO t (a, b)`) and `rows` tuples
/// of `cols` parameters each, to bind row by row.
fn insert_rows(head: &str, rows: usize, cols: usize) -> String {
    let tuples: Vec<String> = (0..rows)
        .map(|r| {
            let params: Vec<String> = (1..=cols).map(|c| format!("${}", r * cols + c)).collect();
            format!("({})", params.join(", "))
        })
        .collect();
    format!("{head} VALUES {}", tuples.join(", "))
}

/// One room's part of [`Storage::rooms_events_in_stream`]: its newest
/// events in `(from, to]`, at most `limit` of them.
#[derive(Debug, Clone, Copy)]
pub struct StreamSpan<'a> {
    pub room_id: &'a str,
    pub from: i64,
    pub to: i64,
    pub limit: i64,
}

impl StreamSpan<'_> {
    /// A padding branch: matches no event.
    const NOTHING: StreamSpan<'static> = StreamSpan {
        room_id: "",
        from: 0,
        to: 0,
        limit: 0,
    };
}

/// Rooms per statement of [`Storage::rooms_events_in_stream`], at most.
const UNION_MAX: usize = 64;

/// The `UNION ALL` of `size` per-room SELECTs, with the sender condition
/// or without; the text of each (size, condition) is built once.
fn union_sql(dialect: super::Dialect, size: usize, not_sender: bool, packed: bool) -> &'static str {
    static CACHE: std::sync::OnceLock<[Vec<String>; 2]> = std::sync::OnceLock::new();
    let all = CACHE.get_or_init(|| {
        let set = |dialect: super::Dialect| -> Vec<String> {
            super::PADDED_SIZES
                .iter()
                .take_while(|s| **s <= UNION_MAX)
                .flat_map(|s| {
                    [(false, false), (false, true), (true, false), (true, true)].map(
                        |(not_sender, packed)| {
                            let text = union_text(*s, not_sender, packed);
                            dialect.positional(&text).into_owned()
                        },
                    )
                })
                .collect()
        };
        [set(super::Dialect::Sqlite), set(super::Dialect::Postgres)]
    });
    let i = super::PADDED_SIZES
        .iter()
        .position(|s| *s == size)
        .unwrap_or(0);
    let set = &all[usize::from(dialect == super::Dialect::Postgres)];
    &set[i * 4 + usize::from(not_sender) * 2 + usize::from(packed)]
}

/// The text of [`union_sql`], with `$N` placeholders.
fn union_text(size: usize, not_sender: bool, packed: bool) -> String {
    let per = if not_sender { 5 } else { 4 };
    let union = (0..size)
        .map(|i| {
            let b = i * per;
            let sender = if not_sender {
                format!(" AND sender <> ${}", b + 5)
            } else {
                String::new()
            };
            format!(
                "SELECT * FROM (SELECT {} FROM events WHERE room_id = ${} AND stream_ordering > ${} \
                 AND stream_ordering <= ${}{sender} ORDER BY stream_ordering DESC LIMIT ${}) AS t{i}",
                event_ref_columns!(),
                b + 1,
                b + 2,
                b + 3,
                b + 4,
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    if !packed {
        return union;
    }
    // All the rows as one value: fields split by FIELD_SEP, rows by
    // ROW_SEP (see `unpack_refs`), written as literals.
    let (field, row) = (format!("'{FIELD_SEP}'"), format!("'{ROW_SEP}'"));
    format!(
        "SELECT string_agg(CAST(stream_ordering AS TEXT) || {field} || event_id || {field} || room_id \
         || {field} || CAST(depth AS TEXT) || {field} || COALESCE(CAST(state_group AS TEXT), '') \
         || {field} || COALESCE(redacted_by, ''), {row}) AS packed FROM ({union}) AS u"
    )
}

/// Separators of a packed read: no event or room id this server stores
/// should contain them; one that does makes the read fall back to rows.
pub(crate) const FIELD_SEP: char = '\u{1f}';
pub(crate) const ROW_SEP: char = '\u{1e}';

/// The rows of a packed event-reference read; `None` if one does not split
/// into its six fields (or a number does not parse), a `ColumnDecode` error
/// if an id does not parse.
fn unpack_refs(packed: &str) -> sqlx::Result<Option<Vec<EventRef>>> {
    let Some(raw) = split_refs(packed) else {
        return Ok(None);
    };
    raw.into_iter()
        .map(|r| {
            Ok(EventRef {
                stream_ordering: r.stream_ordering,
                event_id: parse_id("event_id", r.event_id.to_owned())?,
                room_id: parse_id("room_id", r.room_id.to_owned())?,
                depth: r.depth,
                state_group: r.state_group,
                redacted_by: match r.redacted_by {
                    "" => None,
                    redacted => Some(parse_id("redacted_by", redacted.to_owned())?),
                },
            })
        })
        .collect::<sqlx::Result<_>>()
        .map(Some)
}

/// An [`EventRef`] as a packed read holds it, ids not yet parsed (an empty
/// `redacted_by` is none).
struct RawRef<'a> {
    stream_ordering: i64,
    event_id: &'a str,
    room_id: &'a str,
    depth: i64,
    state_group: Option<i64>,
    redacted_by: &'a str,
}

/// The records of a packed read, every one split before any id is parsed
/// (an id holding a separator makes the whole read fall back to rows).
fn split_refs(packed: &str) -> Option<Vec<RawRef<'_>>> {
    let mut out = Vec::new();
    for record in packed.split(ROW_SEP) {
        let mut f = record.split(FIELD_SEP);
        let (
            Some(stream),
            Some(event_id),
            Some(room_id),
            Some(depth),
            Some(group),
            Some(redacted),
            None,
        ) = (
            f.next(),
            f.next(),
            f.next(),
            f.next(),
            f.next(),
            f.next(),
            f.next(),
        )
        else {
            return None;
        };
        out.push(RawRef {
            stream_ordering: stream.parse().ok()?,
            event_id,
            room_id,
            depth: depth.parse().ok()?,
            state_group: if group.is_empty() {
                None
            } else {
                Some(group.parse().ok()?)
            },
            redacted_by: redacted,
        });
    }
    Some(out)
}

impl Storage {
    pub async fn max_stream_ordering(&self) -> sqlx::Result<i64> {
        sqlx::query_scalar("SELECT COALESCE(MAX(stream_ordering), 0) FROM events")
            .fetch_one(self.pool())
            .await
    }

    /// Writes a batch of new events, in order, and everything they change
    /// in one transaction (a group commit: see ARCHITECTURE.md, "The event
    /// pipeline"). Events of one room arrive in the order they were built,
    /// each naming the one before it as its prev event. The rows of a kind
    /// go in one multi-row `INSERT`, so a batch costs a few statements
    /// whatever its size.
    pub async fn persist_events(&self, batch: &[&PersistEvent]) -> sqlx::Result<()> {
        let mut w = WriteBatch::default();
        Self::write_new_rooms(&mut w, batch);
        Self::write_events(&mut w, batch);
        for e in batch.iter().filter(|e| e.state_key.is_some()) {
            Self::write_state(&mut w, e);
        }
        Self::write_extremities(&mut w, batch);
        Self::write_transactions(&mut w, batch);
        Self::write_relations(&mut w, batch);
        Self::write_redactions(&mut w, batch);
        Self::write_expiries(&mut w, batch);
        self.run_batch(w).await
    }

    /// When each ephemeral message of the batch is to be pruned.
    fn write_expiries<'a>(w: &mut WriteBatch<'a>, batch: &[&'a PersistEvent]) {
        for e in batch {
            if let Some(at) = e.expires_at {
                w.push(
                    "INSERT INTO event_expiry (event_id, room_id, stream_ordering, expiry_ts) VALUES ($1, $2, $3, $4)",
                    [(&e.event_id).into(), (&e.room_id).into(), e.stream_ordering.into(), at.into()],
                );
            }
        }
    }

    /// The `rooms` row of each create event.
    fn write_new_rooms<'a>(w: &mut WriteBatch<'a>, batch: &[&'a PersistEvent]) {
        for e in batch {
            if let Some((version, creator)) = &e.new_room {
                w.push(
                    "INSERT INTO rooms (room_id, room_version, creator, is_public, created_ts) VALUES ($1, $2, $3, 0, $4)",
                    [(&e.room_id).into(), version.into(), creator.into(), e.origin_server_ts.into()],
                );
            }
        }
    }

    /// The `events` rows, `ROWS_PER_INSERT` to a statement.
    fn write_events<'a>(w: &mut WriteBatch<'a>, batch: &[&'a PersistEvent]) {
        for chunk in batch.chunks(ROWS_PER_INSERT) {
            w.push(
                insert_rows(
                    "INSERT INTO events (stream_ordering, event_id, room_id, depth, event_type, state_key, sender, origin_server_ts, state_group, json, txn_device, txn_scope, txn_id)",
                    chunk.len(),
                    13,
                ),
                chunk.iter().flat_map(|e| {
                    [
                        e.stream_ordering.into(),
                        (&e.event_id).into(),
                        (&e.room_id).into(),
                        e.depth.into(),
                        (&e.event_type).into(),
                        (&e.state_key).into(),
                        (&e.sender).into(),
                        e.origin_server_ts.into(),
                        e.state_group.into(),
                        (&e.json).into(),
                        Param::OptText(e.txn.as_ref().map(|t| t.device_id.as_str())),
                        Param::OptText(e.txn.as_ref().map(|t| t.scope.as_str())),
                        Param::OptText(e.txn.as_ref().map(|t| t.txn_id.as_str())),
                    ]
                }),
            );
        }
    }

    /// Forward extremities: an event of the batch that a later one names
    /// as prev is never an extremity; only prev events from before the
    /// batch are deleted.
    fn write_extremities<'a>(w: &mut WriteBatch<'a>, batch: &[&'a PersistEvent]) {
        use std::collections::HashSet;
        let in_batch: HashSet<&str> = batch.iter().map(|e| e.event_id.as_str()).collect();
        let superseded: HashSet<&str> = batch
            .iter()
            .flat_map(|e| e.prev_events.iter().map(String::as_str))
            .filter(|p| in_batch.contains(p))
            .collect();
        for e in batch {
            for prev in e
                .prev_events
                .iter()
                .filter(|p| !in_batch.contains(p.as_str()))
            {
                w.push(
                    "DELETE FROM forward_extremities WHERE room_id = $1 AND event_id = $2",
                    [(&e.room_id).into(), prev.into()],
                );
            }
        }
        let extremities: Vec<&&PersistEvent> = batch
            .iter()
            .filter(|e| !superseded.contains(e.event_id.as_str()))
            .collect();
        for chunk in extremities.chunks(ROWS_PER_INSERT) {
            w.push(
                insert_rows(
                    "INSERT INTO forward_extremities (room_id, event_id)",
                    chunk.len(),
                    2,
                ),
                chunk
                    .iter()
                    .flat_map(|e| [(&e.room_id).into(), (&e.event_id).into()]),
            );
        }
    }

    /// The `event_transactions` rows of idempotent sends.
    fn write_transactions<'a>(w: &mut WriteBatch<'a>, batch: &[&'a PersistEvent]) {
        let txns: Vec<(&PersistEvent, &TxnKey)> = batch
            .iter()
            .filter_map(|e| e.txn.as_ref().map(|t| (*e, t)))
            .collect();
        for chunk in txns.chunks(ROWS_PER_INSERT) {
            w.push(
                insert_rows(
                    "INSERT INTO event_transactions (user_id, device_id, scope, txn_id, event_id)",
                    chunk.len(),
                    5,
                ),
                chunk.iter().flat_map(|(e, t)| {
                    [
                        (&t.user_id).into(),
                        (&t.device_id).into(),
                        (&t.scope).into(),
                        (&t.txn_id).into(),
                        (&e.event_id).into(),
                    ]
                }),
            );
        }
    }

    /// The `event_relations` rows of events that relate to another.
    fn write_relations<'a>(w: &mut WriteBatch<'a>, batch: &[&'a PersistEvent]) {
        let relations: Vec<(&PersistEvent, &(String, String))> = batch
            .iter()
            .filter_map(|e| e.relation.as_ref().map(|r| (*e, r)))
            .collect();
        for chunk in relations.chunks(ROWS_PER_INSERT) {
            w.push(
                insert_rows(
                    "INSERT INTO event_relations (event_id, relates_to, rel_type, room_id)",
                    chunk.len(),
                    4,
                ),
                chunk.iter().flat_map(|(e, (target, rel_type))| {
                    [
                        (&e.event_id).into(),
                        target.into(),
                        rel_type.into(),
                        (&e.room_id).into(),
                    ]
                }),
            );
        }
    }

    /// Marks each redacted event with the redaction that redacts it.
    fn write_redactions<'a>(w: &mut WriteBatch<'a>, batch: &[&'a PersistEvent]) {
        for e in batch {
            if let Some(target) = &e.redacts {
                w.push(
                    "UPDATE events SET redacted_by = $1 WHERE event_id = $2 AND room_id = $3 AND redacted_by IS NULL",
                    [(&e.event_id).into(), target.into(), (&e.room_id).into()],
                );
            }
        }
    }

    /// A state event's new state group, its `current_state` row, the room's
    /// user-directory flag it sets, and for a join the end of a forgotten
    /// mark.
    fn write_state<'a>(w: &mut WriteBatch<'a>, e: &'a PersistEvent) {
        if let Some(g) = &e.new_state_group {
            w.push(
                "INSERT INTO state_groups (state_group, room_id, prev_group, chain_length) VALUES ($1, $2, $3, $4)",
                [
                    g.id.into(),
                    (&e.room_id).into(),
                    g.prev_group.into(),
                    g.chain_length.into(),
                ],
            );
            for chunk in g.entries.chunks(ROWS_PER_INSERT) {
                w.push(
                    insert_rows(
                        "INSERT INTO state_group_entries (state_group, event_type, state_key, event_id)",
                        chunk.len(),
                        4,
                    ),
                    chunk.iter().flat_map(|entry| {
                        [
                            g.id.into(),
                            (&entry.event_type).into(),
                            (&entry.state_key).into(),
                            entry.event_id.as_str().into(),
                        ]
                    }),
                );
            }
        }
        if e.event_type == "m.room.member"
            && e.membership == Some(MembershipState::Join)
            && let Some(user) = &e.state_key
        {
            w.push(
                "DELETE FROM forgotten_rooms WHERE user_id = $1 AND room_id = $2",
                [user.into(), (&e.room_id).into()],
            );
        }
        match e.directory_flag {
            Some(DirectoryFlag::JoinRulePublic(on)) => w.push(
                "UPDATE rooms SET join_rule_public = $1 WHERE room_id = $2",
                [i64::from(on).into(), (&e.room_id).into()],
            ),
            Some(DirectoryFlag::WorldReadable(on)) => w.push(
                "UPDATE rooms SET world_readable = $1 WHERE room_id = $2",
                [i64::from(on).into(), (&e.room_id).into()],
            ),
            None => {}
        }
        if let Some(sk) = &e.state_key {
            w.push(
                "DELETE FROM current_state WHERE room_id = $1 AND event_type = $2 AND state_key = $3",
                [(&e.room_id).into(), (&e.event_type).into(), sk.into()],
            );
            w.push(
                "INSERT INTO current_state (room_id, event_type, state_key, event_id, membership, stream_ordering)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                [
                    (&e.room_id).into(),
                    (&e.event_type).into(),
                    sk.into(),
                    (&e.event_id).into(),
                    Param::OptText(e.membership.as_ref().map(MembershipState::as_str)),
                    e.stream_ordering.into(),
                ],
            );
        }
    }

    pub async fn room(&self, room_id: &str) -> sqlx::Result<Option<RoomRow>> {
        sqlx::query_as(
            "SELECT room_id, room_version, creator, is_public FROM rooms WHERE room_id = $1",
        )
        .bind(room_id)
        .fetch_optional(self.pool())
        .await
    }

    pub async fn event(&self, event_id: &str) -> sqlx::Result<Option<EventRow>> {
        const Q: &str = concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE event_id = $1"
        );
        sqlx::query_as(Q)
            .bind(event_id)
            .fetch_optional(self.pool())
            .await
    }

    pub async fn forward_extremities(&self, room_id: &str) -> sqlx::Result<Vec<OwnedEventId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT event_id FROM forward_extremities WHERE room_id = $1 ORDER BY event_id",
        )
        .bind(room_id)
        .fetch_all(self.pool())
        .await?;
        ids.into_iter().map(|id| parse_id("event_id", id)).collect()
    }

    /// One state group: its parent and its own entries.
    pub async fn state_group(&self, group: i64) -> sqlx::Result<Option<StateGroupRow>> {
        #[derive(FromRow)]
        struct Head {
            prev_group: Option<i64>,
            chain_length: i64,
        }
        let Some(head) = sqlx::query_as::<_, Head>(
            "SELECT prev_group, chain_length FROM state_groups WHERE state_group = $1",
        )
        .bind(group)
        .fetch_optional(self.pool())
        .await?
        else {
            return Ok(None);
        };
        let entries = sqlx::query_as("SELECT event_type, state_key, event_id FROM state_group_entries WHERE state_group = $1")
            .bind(group)
            .fetch_all(self.pool())
            .await?;
        Ok(Some(StateGroupRow {
            prev_group: head.prev_group,
            chain_length: head.chain_length,
            entries,
        }))
    }

    /// The room's current state.
    pub async fn current_state(&self, room_id: &str) -> sqlx::Result<Vec<StateEntryRow>> {
        sqlx::query_as(
            "SELECT event_type, state_key, event_id FROM current_state WHERE room_id = $1",
        )
        .bind(room_id)
        .fetch_all(self.pool())
        .await
    }

    pub async fn current_state_event_id(
        &self,
        room_id: &str,
        ty: &str,
        sk: &str,
    ) -> sqlx::Result<Option<OwnedEventId>> {
        let raw: Option<String> = sqlx::query_scalar(
            "SELECT event_id FROM current_state WHERE room_id = $1 AND event_type = $2 AND state_key = $3",
        )
        .bind(room_id)
        .bind(ty)
        .bind(sk)
        .fetch_optional(self.pool())
        .await?;
        raw.map(|id| parse_id("event_id", id)).transpose()
    }

    /// The rooms the user has a membership in (whichever), with that
    /// membership and the stream position of the member event.
    pub async fn rooms_for_user(&self, user_id: &str) -> sqlx::Result<Vec<RoomMembershipRow>> {
        const WHERE: &str =
            "FROM current_state WHERE event_type = 'm.room.member' AND state_key = $1";
        static PACKED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let packed_sql = PACKED.get_or_init(|| {
            let column = super::packed_column(
                &[
                    "room_id",
                    "COALESCE(membership, '')",
                    "CAST(stream_ordering AS TEXT)",
                ],
                "",
            );
            format!("SELECT COUNT(*) AS n, {column} AS packed {WHERE}")
        });
        let read: PackedRows = sqlx::query_as(sqlx::AssertSqlSafe(packed_sql.as_str()))
            .bind(user_id)
            .fetch_one(self.pool())
            .await?;
        // A position that does not parse: read rows instead.
        let unpacked = super::unpack::<3>(read.packed.as_deref(), read.n).and_then(|rows| {
            rows.into_iter()
                .map(|[room, membership, pos]| Some((room, membership, pos.parse::<i64>().ok()?)))
                .collect::<Option<Vec<_>>>()
        });
        if let Some(rows) = unpacked {
            return rows
                .into_iter()
                .map(|(room, membership, stream_ordering)| {
                    Ok(RoomMembershipRow {
                        room_id: OwnedRoomId::try_from(room)
                            .map_err(|e| decode_error("room_id", e))?,
                        membership: MembershipState::from(membership),
                        stream_ordering,
                    })
                })
                .collect();
        }
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT room_id, COALESCE(membership, '') AS membership, stream_ordering {WHERE}"
        )))
        .bind(user_id)
        .fetch_all(self.pool())
        .await
    }

    /// Current members of a room with the given membership.
    pub async fn room_members(
        &self,
        room_id: &str,
        membership: &MembershipState,
    ) -> sqlx::Result<Vec<OwnedUserId>> {
        let users: Vec<String> = sqlx::query_scalar(
            "SELECT state_key FROM current_state
             WHERE room_id = $1 AND event_type = 'm.room.member' AND membership = $2 ORDER BY state_key",
        )
        .bind(room_id)
        .bind(membership.as_str())
        .fetch_all(self.pool())
        .await?;
        member_ids(users)
    }

    /// The guest accounts (account type 2) joined to the room.
    pub async fn joined_guests(&self, room_id: &str) -> sqlx::Result<Vec<OwnedUserId>> {
        let users: Vec<String> = sqlx::query_scalar(
            "SELECT m.state_key FROM current_state m JOIN accounts a ON a.user_id = m.state_key
             WHERE m.room_id = $1 AND m.event_type = 'm.room.member' AND m.membership = 'join'
               AND a.account_type = $2
             ORDER BY m.state_key",
        )
        .bind(room_id)
        .bind(crate::model::accounts::AccountType::Guest as i64)
        .fetch_all(self.pool())
        .await?;
        member_ids(users)
    }

    /// [`Storage::room_events_in_stream`] for many rooms in one round trip:
    /// for each [`StreamSpan`], that room's newest events in
    /// `(from, to]`, newest first; with `not_sender`, that user's events are
    /// left out. Rooms without events are absent from the map.
    pub async fn rooms_events_in_stream(
        &self,
        wanted: &[StreamSpan<'_>],
        not_sender: Option<&str>,
    ) -> sqlx::Result<HashMap<OwnedRoomId, Vec<EventRef>>> {
        let mut out: HashMap<OwnedRoomId, Vec<EventRef>> = HashMap::new();
        // One SELECT per room, each using the (room_id, stream_ordering)
        // index with its own LIMIT, glued with UNION ALL. The statements
        // come in a few fixed sizes, padded with branches that match
        // nothing, so each is parsed once per connection and cached (parsing
        // a 100-branch statement on every /sync cost more than running it).
        // The rows come back aggregated into one value: a row crossing from
        // sqlx's SQLite thread is a thread hand-off, and an initial sync
        // reads a thousand or more.
        for (chunk, size) in super::padded_chunks(wanted, UNION_MAX) {
            let query = |packed: bool| {
                let sql = union_sql(self.dialect(), size, not_sender.is_some(), packed);
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(true);
                let padding = std::iter::repeat_n(&StreamSpan::NOTHING, size - chunk.len());
                for span in chunk.iter().chain(padding) {
                    q = q
                        .bind(span.room_id)
                        .bind(span.from)
                        .bind(span.to)
                        .bind(span.limit);
                    if let Some(user) = not_sender {
                        q = q.bind(user);
                    }
                }
                q
            };
            let packed: Option<String> = query(true)
                .try_map(|r: AnyRow| r.try_get("packed"))
                .fetch_one(self.pool())
                .await?;
            let rows = match packed.as_deref().map(unpack_refs).transpose()? {
                None => Vec::new(),
                Some(Some(rows)) => rows,
                Some(None) => {
                    query(false)
                        .try_map(|r| EventRef::from_row(&r))
                        .fetch_all(self.pool())
                        .await?
                }
            };
            for row in rows {
                out.entry(row.room_id.clone()).or_default().push(row);
            }
        }
        for rows in out.values_mut() {
            rows.sort_by_key(|r| std::cmp::Reverse(r.stream_ordering));
        }
        Ok(out)
    }

    /// The JSON of events by id, with the (device, transaction id) each was
    /// sent with, if any (those that exist).
    pub async fn events_json(
        &self,
        event_ids: &[&str],
    ) -> sqlx::Result<HashMap<OwnedEventId, (String, Option<(String, String)>)>> {
        let mut out = HashMap::with_capacity(event_ids.len());
        for (chunk, size) in super::padded_chunks(event_ids, super::PADDED_MAX) {
            let list = super::placeholders(1, size);
            let mut q = self.list_query(format!(
                "SELECT event_id, json, txn_device, txn_id FROM events WHERE event_id IN ({list})"
            ));
            for id in super::padded_ids(chunk, size) {
                q = q.bind(id);
            }
            let rows = q
                .try_map(|r: AnyRow| {
                    let json: String = r.try_get("json")?;
                    let id = parse_id("event_id", r.try_get("event_id")?)?;
                    Ok((id, (json, txn_of(&r)?)))
                })
                .fetch_all(self.pool())
                .await?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// The stream positions of events by id (those that exist).
    pub async fn stream_orderings(&self, event_ids: &[&str]) -> sqlx::Result<HashMap<String, i64>> {
        self.column_by_event_id("stream_ordering", event_ids).await
    }

    /// Of the given events, the messages an edit may edit: unredacted
    /// `m.room.message`s that are not edits themselves.
    pub async fn editable_messages(
        &self,
        event_ids: &[&str],
    ) -> sqlx::Result<Vec<EditableMessageRow>> {
        let mut out = Vec::with_capacity(event_ids.len());
        for (chunk, size) in super::padded_chunks(event_ids, super::PADDED_MAX) {
            let list = super::placeholders(1, size);
            let mut q = self.list_query(format!(
                "SELECT e.event_id, e.room_id, e.sender, e.stream_ordering FROM events e
                 WHERE e.event_id IN ({list}) AND e.event_type = 'm.room.message'
                   AND e.redacted_by IS NULL
                   AND NOT EXISTS (SELECT 1 FROM event_relations r
                                   WHERE r.event_id = e.event_id AND r.rel_type = 'm.replace')"
            ));
            for id in super::padded_ids(chunk, size) {
                q = q.bind(id);
            }
            let rows = q
                .try_map(|r| EditableMessageRow::from_row(&r))
                .fetch_all(self.pool())
                .await?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// One column of `events` by event id, for the ids that exist.
    async fn column_by_event_id<T>(
        &self,
        column: &'static str,
        event_ids: &[&str],
    ) -> sqlx::Result<HashMap<String, T>>
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any> + Send + Unpin,
    {
        let mut out = HashMap::with_capacity(event_ids.len());
        for (chunk, size) in super::padded_chunks(event_ids, super::PADDED_MAX) {
            let list = super::placeholders(1, size);
            let mut q = self.list_query(format!(
                "SELECT event_id, {column} FROM events WHERE event_id IN ({list})"
            ));
            for id in super::padded_ids(chunk, size) {
                q = q.bind(id);
            }
            let rows = q
                .try_map(|r: AnyRow| Ok((r.try_get("event_id")?, r.try_get(column)?)))
                .fetch_all(self.pool())
                .await?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// The joined and invited members of each room, ordered by user id.
    pub async fn rooms_joined_and_invited(
        &self,
        rooms: &[&str],
    ) -> sqlx::Result<HashMap<OwnedRoomId, Vec<RoomMemberRow>>> {
        #[derive(FromRow)]
        struct Member {
            #[sqlx(try_from = "String")]
            room_id: OwnedRoomId,
            #[sqlx(flatten)]
            member: RoomMemberRow,
        }
        let mut out: HashMap<OwnedRoomId, Vec<RoomMemberRow>> = HashMap::new();
        for (chunk, size) in super::padded_chunks(rooms, super::PADDED_MAX) {
            let list = super::placeholders(1, size);
            let filter = format!(
                "FROM current_state WHERE room_id IN ({list}) AND event_type = 'm.room.member'
                   AND membership IN ('join', 'invite')"
            );
            let column = super::packed_column(
                &["room_id", "state_key", "membership"],
                "room_id, state_key",
            );
            let mut q =
                self.list_query(format!("SELECT COUNT(*) AS n, {column} AS packed {filter}"));
            for room in super::padded_ids(chunk, size) {
                q = q.bind(room);
            }
            let read = q
                .try_map(|r| PackedRows::from_row(&r))
                .fetch_one(self.pool())
                .await?;
            if let Some(rows) = super::unpack::<3>(read.packed.as_deref(), read.n) {
                for [room, member, membership] in rows {
                    let room: OwnedRoomId = parse_id("room_id", room.to_owned())?;
                    out.entry(room).or_default().push(RoomMemberRow {
                        user_id: parse_id("user_id", member.to_owned())?,
                        membership: MembershipState::from(membership),
                    });
                }
                continue;
            }
            let mut q = self.list_query(format!(
                "SELECT room_id, state_key AS user_id, membership {filter} ORDER BY room_id, state_key"
            ));
            for room in super::padded_ids(chunk, size) {
                q = q.bind(room);
            }
            let rows = q
                .try_map(|r| Member::from_row(&r))
                .fetch_all(self.pool())
                .await?;
            for row in rows {
                out.entry(row.room_id).or_default().push(row.member);
            }
        }
        Ok(out)
    }

    /// Events of a room with `from < stream_ordering <= to`, newest first.
    pub async fn room_events_in_stream(
        &self,
        room_id: &str,
        from: i64,
        to: i64,
        limit: i64,
    ) -> sqlx::Result<Vec<EventRow>> {
        self.room_events_window(room_id, (from, to), limit, false)
            .await
    }

    /// The first (`oldest_first`, as the deprecated `/events` stream reads
    /// them) or last `limit` events of a room in `(from, to]` of the stream,
    /// in that order.
    pub async fn room_events_window(
        &self,
        room_id: &str,
        (from, to): (i64, i64),
        limit: i64,
        oldest_first: bool,
    ) -> sqlx::Result<Vec<EventRow>> {
        const NEWEST: &str = concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE room_id = $1 AND stream_ordering > $2 AND stream_ordering <= $3
              ORDER BY stream_ordering DESC LIMIT $4"
        );
        const OLDEST: &str = concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE room_id = $1 AND stream_ordering > $2 AND stream_ordering <= $3
              ORDER BY stream_ordering ASC LIMIT $4"
        );
        sqlx::query_as(if oldest_first { OLDEST } else { NEWEST })
            .bind(room_id)
            .bind(from)
            .bind(to)
            .bind(limit)
            .fetch_all(self.pool())
            .await
    }

    /// A page of a room's events from a position in `order`: backwards
    /// (newest first) or forwards (oldest first), at most `limit`.
    /// [`PageOrder::Topological`] (`/messages`) starts past its `(depth,
    /// stream_ordering)`; [`PageOrder::Time`] (`timestamp_to_event`) at its
    /// `(origin_server_ts, stream_ordering)`, inclusive.
    pub async fn room_events_page(
        &self,
        room_id: &str,
        order: PageOrder,
        from: (i64, i64),
        backwards: bool,
        limit: i64,
    ) -> sqlx::Result<Vec<EventRow>> {
        sqlx::query_as(page_sql(order, backwards))
            .bind(room_id)
            .bind(from.0)
            .bind(from.1)
            .bind(limit)
            .fetch_all(self.pool())
            .await
    }

    pub async fn transaction_event(
        &self,
        user_id: &str,
        device_id: &str,
        scope: &str,
        txn_id: &str,
    ) -> sqlx::Result<Option<OwnedEventId>> {
        let raw: Option<String> = sqlx::query_scalar(
            "SELECT event_id FROM event_transactions
             WHERE user_id = $1 AND device_id = $2 AND scope = $3 AND txn_id = $4",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(scope)
        .bind(txn_id)
        .fetch_optional(self.pool())
        .await?;
        raw.map(|id| parse_id("event_id", id)).transpose()
    }

    /// A device's client transactions, (scope, transaction id), at most
    /// `limit` of them.
    pub async fn device_transactions(
        &self,
        user_id: &str,
        device_id: &str,
        limit: usize,
    ) -> sqlx::Result<Vec<(String, String)>> {
        sqlx::query(
            "SELECT scope, txn_id FROM event_transactions
             WHERE user_id = $1 AND device_id = $2 LIMIT $3",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .try_map(|r: AnyRow| Ok((r.try_get("scope")?, r.try_get("txn_id")?)))
        .fetch_all(self.pool())
        .await
    }

    /// The transaction ids a device sent events with: event id → transaction
    /// id, for those of `event_ids` it sent with one.
    pub async fn transaction_ids_of(
        &self,
        event_ids: &[&str],
        user_id: &str,
        device_id: &str,
    ) -> sqlx::Result<std::collections::HashMap<String, String>> {
        let mut out = std::collections::HashMap::new();
        for (chunk, size) in super::padded_chunks(event_ids, super::PADDED_MAX) {
            let list = super::placeholders(3, size);
            let mut q = self
                .list_query(format!(
                    "SELECT event_id, txn_id FROM events
                 WHERE sender = $1 AND txn_device = $2 AND event_id IN ({list})"
                ))
                .bind(user_id)
                .bind(device_id);
            for id in super::padded_ids(chunk, size) {
                q = q.bind(id);
            }
            let rows = q
                .try_map(|r: AnyRow| Ok((r.try_get("event_id")?, r.try_get("txn_id")?)))
                .fetch_all(self.pool())
                .await?;
            out.extend(rows);
        }
        Ok(out)
    }

    pub async fn set_room_public(&self, room_id: &str, public: bool) -> sqlx::Result<()> {
        sqlx::query("UPDATE rooms SET is_public = $1 WHERE room_id = $2")
            .bind(public as i64)
            .bind(room_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn forget_room(&self, user_id: &str, room_id: &str) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM forgotten_rooms WHERE user_id = $1 AND room_id = $2")
            .bind(user_id)
            .bind(room_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO forgotten_rooms (user_id, room_id) VALUES ($1, $2)")
            .bind(user_id)
            .bind(room_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// Rooms the user has forgotten (and not rejoined since).
    pub async fn forgotten_rooms(&self, user_id: &str) -> sqlx::Result<Vec<OwnedRoomId>> {
        self.id_list(
            "SELECT room_id FROM forgotten_rooms WHERE user_id = $1",
            user_id,
            "room_id",
        )
        .await
    }

    /// The latest event of the room at or before a stream position.
    pub async fn room_event_at_stream(
        &self,
        room_id: &str,
        pos: i64,
    ) -> sqlx::Result<Option<EventRow>> {
        const Q: &str = concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE room_id = $1 AND stream_ordering <= $2 ORDER BY stream_ordering DESC LIMIT 1"
        );
        sqlx::query_as(Q)
            .bind(room_id)
            .bind(pos)
            .fetch_optional(self.pool())
            .await
    }

    /// The stream position of the room's newest event in `(after, to]` whose
    /// type is one of `types` (sliding sync's `bump_stamp`), walking the
    /// `(room_id, stream_ordering)` index from the newest.
    pub async fn room_newest_of_types(
        &self,
        room_id: &str,
        types: &[&str],
        (after, to): (i64, i64),
    ) -> sqlx::Result<Option<i64>> {
        let placeholders: Vec<String> = (0..types.len()).map(|i| format!("${}", i + 4)).collect();
        let sql = format!(
            "SELECT stream_ordering FROM events WHERE room_id = $1 AND stream_ordering > $2 \
             AND stream_ordering <= $3 AND event_type IN ({}) \
             ORDER BY stream_ordering DESC LIMIT 1",
            placeholders.join(", ")
        );
        let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(room_id)
            .bind(after)
            .bind(to);
        for ty in types {
            q = q.bind(*ty);
        }
        q.fetch_optional(self.pool()).await
    }

    /// Each room's newest event of one of `types` (its stream position),
    /// as [`Storage::room_newest_of_types`] without bounds, for many rooms
    /// in a few queries (one per 50 rooms, each room an indexed `LIMIT 1`
    /// of its own); a room without such an event is absent.
    pub async fn rooms_newest_of_types(
        &self,
        rooms: &[&str],
        types: &[&str],
    ) -> sqlx::Result<HashMap<OwnedRoomId, i64>> {
        const CHUNK: usize = 50;
        let type_list: Vec<String> = (1..=types.len()).map(|i| format!("${i}")).collect();
        let type_list = type_list.join(", ");
        let mut out = HashMap::with_capacity(rooms.len());
        for chunk in rooms.chunks(CHUNK) {
            let parts: Vec<String> = (0..chunk.len())
                .map(|i| {
                    format!(
                        "SELECT room_id, stream_ordering FROM (SELECT room_id, stream_ordering \
                         FROM events WHERE room_id = ${} AND event_type IN ({type_list}) \
                         ORDER BY stream_ordering DESC LIMIT 1) AS r{i}",
                        types.len() + 1 + i
                    )
                })
                .collect();
            let sql = parts.join(" UNION ALL ");
            let mut q = sqlx::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(sql));
            for ty in types {
                q = q.bind(*ty);
            }
            for room in chunk {
                q = q.bind(*room);
            }
            for (room, pos) in q.fetch_all(self.pool()).await? {
                let room = OwnedRoomId::try_from(room).map_err(|e| decode_error("room_id", e))?;
                out.insert(room, pos);
            }
        }
        Ok(out)
    }

    /// The highest stream position of any event in the room.
    pub async fn room_max_stream(&self, room_id: &str) -> sqlx::Result<i64> {
        sqlx::query_scalar(
            "SELECT COALESCE(MAX(stream_ordering), 0) FROM events WHERE room_id = $1",
        )
        .bind(room_id)
        .fetch_one(self.pool())
        .await
    }

    /// Every event in `(after, upto]`, in stream order, at most `limit`
    /// (what application services catch up on).
    pub async fn events_in_stream_range(
        &self,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> sqlx::Result<Vec<EventRow>> {
        const Q: &str = concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE stream_ordering > $1 AND stream_ordering <= $2
             ORDER BY stream_ordering LIMIT $3"
        );
        sqlx::query_as(Q)
            .bind(after)
            .bind(upto)
            .bind(limit)
            .fetch_all(self.pool())
            .await
    }

    /// The events that claim to replace (`m.replace`) an event.
    pub async fn replacements_of(&self, event_id: &str) -> sqlx::Result<Vec<OwnedEventId>> {
        self.id_list(
            "SELECT event_id FROM event_relations WHERE relates_to = $1 AND rel_type = 'm.replace'",
            event_id,
            "event_id",
        )
        .await
    }

    /// The JSON of `sender`'s unredacted annotations (`m.annotation`) of
    /// `event_id` sent as `event_type` (to refuse a second one with the
    /// same key).
    pub async fn annotations_by(
        &self,
        event_id: &str,
        sender: &str,
        event_type: &str,
    ) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT e.json FROM event_relations r JOIN events e ON e.event_id = r.event_id
             WHERE r.relates_to = $1 AND r.rel_type = 'm.annotation'
               AND e.sender = $2 AND e.event_type = $3 AND e.redacted_by IS NULL",
        )
        .bind(event_id)
        .bind(sender)
        .bind(event_type)
        .fetch_all(self.pool())
        .await
    }

    /// [`Storage::indexable_events_after`] for a span of positions, read as
    /// a few long rows instead of one per event: each row carries the events
    /// of up to `PACK` consecutive positions, fields separated by U+001F and
    /// events by U+001E (characters that JSON text, event ids and room ids
    /// never hold raw). A rebuild reads every event, and one row per event
    /// made the hand-off of each row from SQLite's thread the larger cost.
    /// `None` if a row does not split as expected (then read the span with
    /// the plain query).
    pub async fn indexable_events_packed(
        &self,
        after: i64,
        upto: i64,
    ) -> sqlx::Result<Option<Vec<EventRow>>> {
        const PACK: i64 = 256;
        const Q: &str = "SELECT string_agg(CAST(stream_ordering AS TEXT) || $3 || event_id || $3 || room_id || $3 || json, $4 ORDER BY stream_ordering)
             FROM events WHERE stream_ordering > $1 AND stream_ordering <= $2
               AND ((event_type IN ('m.room.message', 'm.room.name', 'm.room.topic') AND redacted_by IS NULL)
                    OR event_type = 'm.room.redaction')
             GROUP BY stream_ordering / $5
             ORDER BY MIN(stream_ordering)";
        let packs: Vec<String> = sqlx::query_scalar(Q)
            .bind(after)
            .bind(upto)
            .bind("\u{1f}")
            .bind("\u{1e}")
            .bind(PACK)
            .fetch_all(self.pool())
            .await?;
        let mut out = Vec::new();
        for pack in &packs {
            for record in pack.split('\u{1e}') {
                let mut fields = record.splitn(4, '\u{1f}');
                let (Some(stream), Some(event_id), Some(room_id), Some(json)) =
                    (fields.next(), fields.next(), fields.next(), fields.next())
                else {
                    return Ok(None);
                };
                let Ok(stream_ordering) = stream.parse() else {
                    return Ok(None);
                };
                if !event_id.starts_with('$') || !room_id.starts_with('!') || !json.starts_with('{')
                {
                    return Ok(None);
                }
                // What a rebuild reads; the rest is not carried.
                out.push(EventRow {
                    stream_ordering,
                    event_id: parse_id("event_id", event_id.to_owned())?,
                    room_id: parse_id("room_id", room_id.to_owned())?,
                    depth: 0,
                    state_group: None,
                    redacted_by: None,
                    json: json.to_owned(),
                    txn: None,
                });
            }
        }
        Ok(Some(out))
    }

    /// What the search index is rebuilt from, in stream order in
    /// `(after, upto]`: unredacted messages, names and topics, and redactions.
    pub async fn indexable_events_after(
        &self,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> sqlx::Result<Vec<EventRow>> {
        const Q: &str = concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE stream_ordering > $1 AND stream_ordering <= $2
               AND ((event_type IN ('m.room.message', 'm.room.name', 'm.room.topic') AND redacted_by IS NULL)
                    OR event_type = 'm.room.redaction')
             ORDER BY stream_ordering LIMIT $3"
        );
        sqlx::query_as(Q)
            .bind(after)
            .bind(upto)
            .bind(limit)
            .fetch_all(self.pool())
            .await
    }
}

/// Member rows' state keys as user ids.
fn member_ids(state_keys: Vec<String>) -> sqlx::Result<Vec<OwnedUserId>> {
    state_keys
        .into_iter()
        .map(|u| parse_id("state_key", u))
        .collect()
}

/// The query of [`Storage::room_events_page`]: `$1` the room, `$2`/`$3`
/// the position, `$4` the limit.
pub(super) fn page_sql(order: PageOrder, backwards: bool) -> &'static str {
    macro_rules! page {
        ($key:literal, $cmp:literal, $tie:literal, $dir:literal) => {
            concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE room_id = $1 AND (",
                $key,
                " ",
                $cmp,
                " $2 OR (",
                $key,
                " = $2 AND stream_ordering ",
                $tie,
                " $3)) ORDER BY ",
                $key,
                " ",
                $dir,
                ", stream_ordering ",
                $dir,
                " LIMIT $4"
            )
        };
    }
    match (order, backwards) {
        (PageOrder::Topological, true) => page!("depth", "<", "<", "DESC"),
        (PageOrder::Topological, false) => page!("depth", ">", ">", "ASC"),
        (PageOrder::Time, true) => page!("origin_server_ts", "<", "<=", "DESC"),
        (PageOrder::Time, false) => page!("origin_server_ts", ">", ">=", "ASC"),
    }
}

#[cfg(test)]
mod packed_tests {
    use super::{FIELD_SEP, ROW_SEP, unpack_refs};

    fn record(fields: &[&str]) -> String {
        fields.join(&FIELD_SEP.to_string())
    }

    #[test]
    fn packed_refs_split_into_rows_with_optional_fields() {
        let packed = [
            record(&["7", "$a", "!r:x", "3", "12", ""]),
            record(&["9", "$b", "!r:x", "4", "", "$c"]),
        ]
        .join(&ROW_SEP.to_string());
        let rows = unpack_refs(&packed).unwrap().expect("splits");
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (
                rows[0].stream_ordering,
                rows[0].event_id.as_str(),
                rows[0].depth
            ),
            (7, "$a", 3)
        );
        assert_eq!(
            (rows[0].state_group, rows[0].redacted_by.as_ref()),
            (Some(12), None)
        );
        assert_eq!(
            (
                rows[1].state_group,
                rows[1].redacted_by.as_ref().map(|e| e.as_str())
            ),
            (None, Some("$c"))
        );
    }

    #[test]
    fn a_packed_id_that_does_not_parse_is_a_decode_error() {
        for bad in [
            record(&["7", "a", "!r:x", "3", "", ""]),
            record(&["7", "$a", "r", "3", "", ""]),
            record(&["7", "$a", "!r:x", "3", "", "c"]),
        ] {
            let read = unpack_refs(&bad);
            assert!(
                matches!(read, Err(sqlx::Error::ColumnDecode { .. })),
                "{read:?}"
            );
        }
    }

    #[test]
    fn a_record_that_does_not_split_cleanly_is_refused() {
        // An id holding the field separator gives seven fields.
        let bad = record(&["7", "$a", "x", "!r:x", "3", "", ""]);
        assert!(unpack_refs(&bad).unwrap().is_none());
        assert!(
            unpack_refs(&record(&["7", "$a", "!r:x", "3", ""]))
                .unwrap()
                .is_none()
        );
        assert!(
            unpack_refs(&record(&["x", "$a", "!r:x", "3", "", ""]))
                .unwrap()
                .is_none()
        );
    }
}
