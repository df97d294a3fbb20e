//! Send-to-device: `to_device_sends` (each send once: its position, sender,
//! type and the header of its body, `model::to_device`: which device gets
//! which content), `to_device_chunks` (the contents of each send's body cut
//! into [`CHUNK_BYTES`] pieces, so a device's message is read without
//! reading everyone else's),
//! `to_device_acks` (per device, the position up to which it acknowledged
//! its messages), the transaction ids of sends (`event_transactions`, scope
//! `to_device:{type}`) and the stream's high-water mark for them.

use std::collections::HashMap;

use super::batch::{Param, WriteBatch};
use super::{Dialect, Storage};

/// A stored send.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SendRow {
    pub stream_ordering: i64,
    pub sender: String,
    pub event_type: String,
    /// The header of `model::to_device`'s layout: the index and names (the
    /// contents are in `to_device_chunks`).
    #[sqlx(rename = "body")]
    pub header: Vec<u8>,
}

/// A send to store: who sent it with which transaction id, at which
/// position, and its body (`model::to_device`'s layout) cut where its
/// contents start.
pub struct NewSend<'a> {
    pub sender: &'a str,
    pub sender_device: &'a str,
    pub event_type: &'a str,
    pub txn_id: &'a str,
    pub stream_ordering: i64,
    pub header: &'a [u8],
    pub contents: &'a [u8],
}

/// The size of each stored piece of a send's contents (the last is
/// shorter): a device's message is read as the one or two pieces it lies
/// in, not the whole send (which holds every recipient's content).
pub const CHUNK_BYTES: usize = 8192;

/// Pieces stored per `INSERT` statement.
const CHUNKS_PER_STATEMENT: usize = 64;

/// A content to read: `len` bytes of the contents of the send at `pos`,
/// from `start` (counted from the start of its contents).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentAt {
    pub pos: i64,
    pub start: usize,
    pub len: usize,
}

/// Pieces `first..=last` of the send at `pos`.
#[derive(Debug, Clone, Copy)]
struct ChunkRange {
    pos: i64,
    first: i64,
    last: i64,
}

impl ChunkRange {
    /// The pieces `at` lies in.
    fn of(at: ContentAt) -> Self {
        let piece = |byte: usize| i64::try_from(byte / CHUNK_BYTES).unwrap_or(i64::MAX);
        Self {
            pos: at.pos,
            first: piece(at.start),
            last: piece(at.start + at.len.max(1) - 1),
        }
    }
}

/// The bytes of `at` cut from the pieces read (by position and chunk
/// number); `None` when a piece is missing or short.
fn assemble(at: ContentAt, chunks: &HashMap<(i64, i64), Vec<u8>>) -> Option<Vec<u8>> {
    let range = ChunkRange::of(at);
    let (mut from, end) = (at.start, at.start + at.len);
    let mut bytes = Vec::with_capacity(at.len);
    for n in range.first..=range.last {
        let piece = chunks.get(&(at.pos, n))?;
        let base = usize::try_from(n).ok()? * CHUNK_BYTES;
        let part = piece.get(from - base..(end - base).min(piece.len()))?;
        bytes.extend_from_slice(part);
        from += part.len();
    }
    (from == end).then_some(bytes)
}

/// Ranges read per statement (`UNION ALL` of one select each, padded).
const RANGES_PER_STATEMENT: usize = 64;

/// A device's acknowledgement: its messages up to `position` are done.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AckRow {
    pub user_id: String,
    pub device_id: String,
    pub position: i64,
}

/// A recipient device of a send.
#[derive(Debug, sqlx::FromRow)]
pub struct RecipientDevice {
    pub user_id: String,
    pub device_id: String,
}

/// Sends read per statement at start-up.
const SENDS_PER_PAGE: i64 = 256;

/// The transaction-id scope of a send of `event_type` (Synapse keys a
/// retry on the request's path, which names the type).
pub fn txn_scope(event_type: &str) -> String {
    format!("to_device:{event_type}")
}

/// `positions` cut into `IN` lists of padded sizes (`-1`, a position no
/// send has, fills the last), as SQL list text and values.
fn position_lists(positions: &[i64]) -> impl Iterator<Item = (String, Vec<i64>)> + '_ {
    super::padded_chunks(positions, super::PADDED_MAX).map(|(chunk, size)| {
        let mut values = chunk.to_vec();
        values.resize(size, -1);
        (super::placeholders(1, size), values)
    })
}

/// Adds the deletion of the sends at `positions` (and their contents) to
/// `w`.
fn push_send_deletions(w: &mut WriteBatch<'_>, positions: &[i64]) {
    for (list, values) in position_lists(positions) {
        w.push(
            format!("DELETE FROM to_device_chunks WHERE stream_ordering IN ({list})"),
            values.iter().copied().map(Param::from),
        );
        w.push(
            format!("DELETE FROM to_device_sends WHERE stream_ordering IN ({list})"),
            values.into_iter().map(Param::from),
        );
    }
}

/// `contents` cut into the pieces stored, each with its chunk number.
pub(super) fn pieces(contents: &[u8]) -> impl Iterator<Item = (i64, &[u8])> {
    (0_i64..).zip(contents.chunks(CHUNK_BYTES))
}

/// Adds the storing of `contents` as the pieces of the send at `pos` to `w`.
fn push_chunks<'a>(w: &mut WriteBatch<'a>, pos: i64, contents: &'a [u8]) {
    let chunks: Vec<(i64, &[u8])> = pieces(contents).collect();
    for group in chunks.chunks(CHUNKS_PER_STATEMENT) {
        let values: Vec<String> = (0..group.len())
            .map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
            .collect();
        w.push(
            format!(
                "INSERT INTO to_device_chunks (stream_ordering, chunk, bytes) VALUES {}",
                values.join(", ")
            ),
            group
                .iter()
                .flat_map(|(n, bytes)| [Param::from(pos), Param::from(*n), Param::Bytes(bytes)]),
        );
    }
}

impl Storage {
    /// Stores a send in one transaction: its transaction id, the
    /// high-water mark, its row and the pieces of its contents. `false`
    /// when the sender's device already sent this transaction id (nothing
    /// is written).
    pub async fn store_to_device(&self, send: &NewSend<'_>) -> sqlx::Result<bool> {
        let scope = txn_scope(send.event_type);
        let mut w = WriteBatch::default();
        w.push(
            "INSERT INTO event_transactions (user_id, device_id, scope, txn_id, event_id)
             VALUES ($1, $2, $3, $4, '')",
            [
                Param::from(send.sender),
                send.sender_device.into(),
                scope.as_str().into(),
                send.txn_id.into(),
            ],
        );
        w.push(
            "UPDATE stream_high_water SET position = $1 WHERE name = 'to_device' AND position < $2",
            [
                Param::from(send.stream_ordering),
                send.stream_ordering.into(),
            ],
        );
        w.push(
            "INSERT INTO to_device_sends (stream_ordering, sender, event_type, body)
             VALUES ($1, $2, $3, $4)",
            [
                Param::from(send.stream_ordering),
                send.sender.into(),
                send.event_type.into(),
                Param::Bytes(send.header),
            ],
        );
        push_chunks(&mut w, send.stream_ordering, send.contents);
        match self.run_batch(w).await {
            Ok(()) => Ok(true),
            Err(e) if Dialect::is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The devices of `users` (an `IN` list per chunk of users, not a
    /// statement per user).
    pub async fn devices_of_users(&self, users: &[&str]) -> sqlx::Result<Vec<RecipientDevice>> {
        self.rows_of_users(
            "SELECT user_id, device_id FROM devices WHERE user_id IN",
            users,
        )
        .await
    }

    /// The bytes of each of `wanted`, in order, read from the pieces they
    /// lie in (one statement for up to 64); `None` for one whose pieces are
    /// missing or short.
    pub async fn to_device_contents(
        &self,
        wanted: &[ContentAt],
    ) -> sqlx::Result<Vec<Option<Vec<u8>>>> {
        let ranges: Vec<ChunkRange> = wanted.iter().map(|w| ChunkRange::of(*w)).collect();
        let mut chunks = HashMap::new();
        for (group, size) in super::padded_chunks(&ranges, RANGES_PER_STATEMENT) {
            let selects: Vec<String> = (0..size)
                .map(|i| {
                    format!(
                        "SELECT stream_ordering, chunk, bytes FROM to_device_chunks
                         WHERE stream_ordering = ${} AND chunk BETWEEN ${} AND ${}",
                        3 * i + 1,
                        3 * i + 2,
                        3 * i + 3
                    )
                })
                .collect();
            let mut q = self.list_query(selects.join(" UNION ALL "));
            // A range no send has pads the statement to its cached size.
            let padding = ChunkRange {
                pos: -1,
                first: 0,
                last: -1,
            };
            for r in group
                .iter()
                .chain(std::iter::repeat_n(&padding, size - group.len()))
            {
                q = q.bind(r.pos).bind(r.first).bind(r.last);
            }
            let rows = q
                .try_map(|r: sqlx::any::AnyRow| {
                    use sqlx::Row;
                    Ok((
                        r.try_get::<i64, _>(0)?,
                        r.try_get::<i64, _>(1)?,
                        r.try_get::<Vec<u8>, _>(2)?,
                    ))
                })
                .fetch_all(self.pool())
                .await?;
            chunks.extend(rows.into_iter().map(|(pos, n, bytes)| ((pos, n), bytes)));
        }
        Ok(wanted.iter().map(|w| assemble(*w, &chunks)).collect())
    }

    /// Up to a page of sends after position `after`, oldest first
    /// (start-up reads them all, a page at a time).
    pub async fn to_device_sends_after(&self, after: i64) -> sqlx::Result<Vec<SendRow>> {
        sqlx::query_as(
            "SELECT stream_ordering, sender, event_type, body FROM to_device_sends
             WHERE stream_ordering > $1 ORDER BY stream_ordering LIMIT $2",
        )
        .bind(after)
        .bind(SENDS_PER_PAGE)
        .fetch_all(self.pool())
        .await
    }

    /// Every device's acknowledgement.
    pub async fn to_device_acks(&self) -> sqlx::Result<Vec<AckRow>> {
        sqlx::query_as("SELECT user_id, device_id, position FROM to_device_acks")
            .fetch_all(self.pool())
            .await
    }

    /// The acknowledgements of the user's devices.
    pub async fn to_device_acks_of(&self, user_id: &str) -> sqlx::Result<Vec<AckRow>> {
        sqlx::query_as("SELECT user_id, device_id, position FROM to_device_acks WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(self.pool())
            .await
    }

    /// Records in one transaction that a device acknowledged its messages
    /// up to `upto` (never moving its mark back), and deletes the sends
    /// `finished` (every recipient is done with them).
    pub async fn acknowledge_to_device(
        &self,
        user_id: &str,
        device_id: &str,
        upto: i64,
        finished: &[i64],
    ) -> sqlx::Result<()> {
        let mut w = WriteBatch::default();
        w.push(
            "INSERT INTO to_device_acks (user_id, device_id, position) VALUES ($1, $2, $3)
             ON CONFLICT (user_id, device_id) DO UPDATE SET position = excluded.position
             WHERE to_device_acks.position < excluded.position",
            [Param::from(user_id), device_id.into(), upto.into()],
        );
        push_send_deletions(&mut w, finished);
        self.run_batch(w).await
    }

    /// Deletes the sends at `positions` (every recipient is done with them).
    pub async fn delete_to_device_sends(&self, positions: &[i64]) -> sqlx::Result<()> {
        let mut w = WriteBatch::default();
        push_send_deletions(&mut w, positions);
        self.run_batch(w).await
    }

    /// Deletes the acknowledgements below `before` (no send at or below
    /// them is left, so they rule out nothing); `None`: all of them.
    pub async fn prune_to_device_acks(&self, before: Option<i64>) -> sqlx::Result<()> {
        sqlx::query("DELETE FROM to_device_acks WHERE position < $1")
            .bind(before.unwrap_or(i64::MAX))
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The highest position a to-device send took (its row may be gone).
    pub async fn to_device_high_water(&self) -> sqlx::Result<i64> {
        sqlx::query_scalar(
            "SELECT COALESCE(MAX(position), 0) FROM stream_high_water WHERE name = 'to_device'",
        )
        .fetch_one(self.pool())
        .await
    }
}

/// What deleting a device does besides removing the device and its tokens:
/// its acknowledgement moves up to the last send stored, so the messages
/// waiting for it are never delivered (not even to a new device with the
/// same id); and the transaction ids of its sends go, so a new device with
/// the same id starts afresh. `$1` is the user, `$2` the device. Run
/// before the `devices` row goes (the other-devices form reads it).
pub(crate) const DEVICE_CLEANUP: [&str; 2] = [
    "INSERT INTO to_device_acks (user_id, device_id, position)
     SELECT $1, $2, position FROM stream_high_water WHERE name = 'to_device'
     ON CONFLICT (user_id, device_id) DO UPDATE SET position = excluded.position",
    "DELETE FROM event_transactions WHERE user_id = $1 AND device_id = $2
     AND substr(scope, 1, 10) = 'to_device:'",
];

/// [`DEVICE_CLEANUP`] for every device of user `$1` but `$2`.
pub(crate) const OTHER_DEVICES_CLEANUP: [&str; 2] = [
    "INSERT INTO to_device_acks (user_id, device_id, position)
     SELECT d.user_id, d.device_id, h.position FROM devices d, stream_high_water h
     WHERE d.user_id = $1 AND d.device_id <> $2 AND h.name = 'to_device'
     ON CONFLICT (user_id, device_id) DO UPDATE SET position = excluded.position",
    "DELETE FROM event_transactions WHERE user_id = $1 AND device_id <> $2
     AND substr(scope, 1, 10) = 'to_device:'",
];

/// [`DEVICE_CLEANUP`] for every device of user `$1`.
pub(crate) const USER_CLEANUP: [&str; 2] = [
    "INSERT INTO to_device_acks (user_id, device_id, position)
     SELECT d.user_id, d.device_id, h.position FROM devices d, stream_high_water h
     WHERE d.user_id = $1 AND h.name = 'to_device'
     ON CONFLICT (user_id, device_id) DO UPDATE SET position = excluded.position",
    "DELETE FROM event_transactions WHERE user_id = $1 AND substr(scope, 1, 10) = 'to_device:'",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// A content is cut from exactly the pieces it lies in, wherever the
    /// piece boundaries fall; a missing or short piece gives `None`.
    #[test]
    fn contents_are_cut_from_the_pieces_they_lie_in() {
        let contents: Vec<u8> = (0..3 * CHUNK_BYTES + 100)
            .map(|i| (i % 251) as u8)
            .collect();
        let chunks: HashMap<(i64, i64), Vec<u8>> = pieces(&contents)
            .map(|(n, bytes)| ((7, n), bytes.to_vec()))
            .collect();
        for (start, len) in [
            (0, 10),
            (CHUNK_BYTES - 1, 2),
            (CHUNK_BYTES, CHUNK_BYTES),
            (5, 2 * CHUNK_BYTES + 90),
            (3 * CHUNK_BYTES, 100),
        ] {
            let at = ContentAt { pos: 7, start, len };
            assert_eq!(
                assemble(at, &chunks).as_deref(),
                Some(&contents[start..start + len]),
                "{start}+{len}"
            );
        }
        let past_the_end = ContentAt {
            pos: 7,
            start: 3 * CHUNK_BYTES,
            len: 101,
        };
        assert_eq!(assemble(past_the_end, &chunks), None, "short last piece");
        let mut gap = chunks.clone();
        gap.remove(&(7, 1));
        let across = ContentAt {
            pos: 7,
            start: 10,
            len: 2 * CHUNK_BYTES,
        };
        assert_eq!(assemble(across, &gap), None, "a piece missing");
        assert_eq!(assemble(ContentAt { pos: 8, ..across }, &chunks), None);
    }
}
