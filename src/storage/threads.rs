//! Threads (`m.thread` relations in `event_relations`): the summary of each
//! thread root an answer shows, a room's threads by latest activity, and the
//! rooms that have threads. A redacted reply is out of its thread.

use std::collections::HashMap;

use ruma::{OwnedEventId, OwnedRoomId};
use sqlx::{FromRow, Row};

use super::Storage;

/// What an answer shows of a thread under its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadSummary {
    /// Unredacted replies.
    pub count: i64,
    /// The newest of them.
    pub latest_event_id: OwnedEventId,
    /// Whether the viewer sent one of them.
    pub viewer_replied: bool,
}

/// One thread of a room's list: its root and its newest reply's position.
#[derive(Debug, Clone, FromRow)]
pub struct ThreadRow {
    #[sqlx(try_from = "String")]
    pub root: OwnedEventId,
    pub latest: i64,
}

impl Storage {
    /// The rooms that have at least one thread reply.
    pub async fn rooms_with_threads(&self) -> sqlx::Result<Vec<OwnedRoomId>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT room_id FROM event_relations WHERE rel_type = 'm.thread'",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| OwnedRoomId::try_from(r).ok())
            .collect())
    }

    /// The summaries of the threads under those of `roots` that have
    /// replies, as `viewer` sees them.
    pub async fn thread_summaries(
        &self,
        roots: &[&str],
        viewer: &str,
    ) -> sqlx::Result<HashMap<OwnedEventId, ThreadSummary>> {
        let mut out = HashMap::new();
        for (chunk, size) in super::padded_chunks(roots, super::PADDED_MAX) {
            let list = super::placeholders(2, size);
            let mut q = self
                .list_query(format!(
                    "SELECT t.root, t.n, t.mine, l.event_id AS latest_event_id
                 FROM (SELECT r.relates_to AS root, COUNT(*) AS n,
                              MAX(e.stream_ordering) AS latest,
                              CAST(MAX(CASE WHEN e.sender = $1 THEN 1 ELSE 0 END) AS BIGINT) AS mine
                       FROM event_relations r JOIN events e ON e.event_id = r.event_id
                       WHERE r.relates_to IN ({list}) AND r.rel_type = 'm.thread'
                         AND e.redacted_by IS NULL
                       GROUP BY r.relates_to) t
                 JOIN events l ON l.stream_ordering = t.latest"
                ))
                .bind(viewer);
            for id in super::padded_ids(chunk, size) {
                q = q.bind(id);
            }
            for row in q.fetch_all(self.pool()).await? {
                let root: String = row.try_get("root")?;
                let latest: String = row.try_get("latest_event_id")?;
                let (Ok(root), Ok(latest_event_id)) =
                    (OwnedEventId::try_from(root), OwnedEventId::try_from(latest))
                else {
                    continue;
                };
                out.insert(
                    root,
                    ThreadSummary {
                        count: row.try_get("n")?,
                        latest_event_id,
                        viewer_replied: row.try_get::<i64, _>("mine")? != 0,
                    },
                );
            }
        }
        Ok(out)
    }

    /// A room's threads whose newest reply is before `before`, newest
    /// activity first, at most `limit`; with `participant`, only those it
    /// started or replied to.
    pub async fn room_threads(
        &self,
        room_id: &str,
        participant: Option<&str>,
        before: i64,
        limit: i64,
    ) -> sqlx::Result<Vec<ThreadRow>> {
        sqlx::query_as(
            "SELECT r.relates_to AS root, MAX(e.stream_ordering) AS latest
             FROM event_relations r JOIN events e ON e.event_id = r.event_id
             WHERE r.rel_type = 'm.thread' AND r.room_id = $1 AND e.redacted_by IS NULL
             GROUP BY r.relates_to
             HAVING MAX(e.stream_ordering) < $2
                AND ($3 = ''
                     OR MAX(CASE WHEN e.sender = $3 THEN 1 ELSE 0 END) = 1
                     OR EXISTS (SELECT 1 FROM events root
                                WHERE root.event_id = r.relates_to AND root.sender = $3))
             ORDER BY latest DESC LIMIT $4",
        )
        .bind(room_id)
        .bind(before)
        .bind(participant.unwrap_or(""))
        .bind(limit)
        .fetch_all(self.pool())
        .await
    }

    /// The event `event_id` relates to and how, if it relates to one.
    pub async fn relation_of_event(
        &self,
        event_id: &str,
    ) -> sqlx::Result<Option<(String, String)>> {
        let row =
            sqlx::query("SELECT relates_to, rel_type FROM event_relations WHERE event_id = $1")
                .bind(event_id)
                .fetch_optional(self.pool())
                .await?;
        row.map(|r| Ok((r.try_get("relates_to")?, r.try_get("rel_type")?)))
            .transpose()
    }
}
