//! Reading a room's timeline: `/messages` pagination and `/context`.
//!
//! Pagination tokens: `t{depth}_{stream}` is a topological position (an
//! exclusive bound for the next page); `s{stream}` is a position in the global
//! stream, as `/sync` hands out, converted to the room's topological position.

use ruma::api::client::filter::RoomEventFilter;
use ruma::{RoomId, UserId};

use super::{Rooms, row_to_pdu};
use crate::error::{MatrixError, Result};
use crate::model::pdu::Pdu;
use crate::services::filtering;
use crate::storage::events::PageOrder;

/// The newest possible topological position.
const END: (i64, i64) = (i64::MAX, i64::MAX);

pub fn topo_token(pdu: &Pdu) -> String {
    format!("t{}_{}", pdu.depth, pdu.stream_ordering)
}

/// The last stream position a token covers: everything up to `s` for a
/// sync token `s{s}`; everything before the event for a `t{depth}_{s}` token
/// (a `prev_batch` names the first event of a timeline, exclusively).
pub fn inclusive_stream_position(token: &str) -> Option<i64> {
    if let Some(rest) = token.strip_prefix('t') {
        let (_, stream) = rest.split_once('_')?;
        return stream.parse::<i64>().ok().map(|s| s - 1);
    }
    token.strip_prefix('s').unwrap_or(token).parse().ok()
}

/// One page of a room's timeline.
pub struct Page {
    pub events: Vec<Pdu>,
    pub start: String,
    /// `None` when there is nothing further in that direction.
    pub end: Option<String>,
}

impl Rooms {
    /// Converts a pagination token into a topological position.
    async fn position(&self, room_id: &RoomId, token: &str) -> Result<(i64, i64)> {
        let invalid = || MatrixError::invalid_param(format!("Invalid pagination token {token:?}"));
        if let Some(rest) = token.strip_prefix('t') {
            let (d, s) = rest.split_once('_').ok_or_else(invalid)?;
            return Ok((
                d.parse().map_err(|_| invalid())?,
                s.parse().map_err(|_| invalid())?,
            ));
        }
        let stream: i64 = token
            .strip_prefix('s')
            .unwrap_or(token)
            .parse()
            .map_err(|_| invalid())?;
        Ok(
            match self
                .storage
                .room_event_at_stream(room_id.as_str(), stream)
                .await?
            {
                // Just after that event, so paging back includes it.
                Some(row) => (row.depth, row.stream_ordering + 1),
                None => (0, 0),
            },
        )
    }

    /// `/messages`: up to `limit` visible events matching `filter`, from
    /// `from` (default: the newest end when going backwards, the start when
    /// going forwards) towards `to`. `user` is the viewer whose history
    /// visibility applies; `None` (server admins) sees everything.
    #[allow(clippy::too_many_arguments)]
    pub async fn messages(
        &self,
        room_id: &RoomId,
        user: Option<&UserId>,
        from: Option<&str>,
        to: Option<&str>,
        backwards: bool,
        limit: usize,
        filter: &RoomEventFilter,
    ) -> Result<Page> {
        let start_pos = match from {
            Some(t) => self.position(room_id, t).await?,
            None if backwards => END,
            None => (0, 0),
        };
        let stop = match to {
            Some(t) => Some(self.position(room_id, t).await?),
            None => None,
        };
        let current = match user {
            Some(u) => self.membership(room_id, u).await?,
            None => None,
        };
        // A purged room's timeline starts at its purge point.
        let floor = self.history_floor(room_id).await?;
        let mut cursor = start_pos;
        let mut events = Vec::new();
        let mut exhausted = false;
        let batch = (limit as i64 * 2).clamp(20, 1000);
        'fill: while events.len() < limit {
            let rows = self
                .storage
                .room_events_page(
                    room_id.as_str(),
                    PageOrder::Topological,
                    cursor,
                    backwards,
                    batch,
                )
                .await?;
            if rows.is_empty() {
                exhausted = true;
                break;
            }
            let fetched = rows.len() as i64;
            for row in rows {
                let pdu = row_to_pdu(row)?;
                cursor = (pdu.depth, pdu.stream_ordering);
                if pdu.depth < floor {
                    if backwards {
                        exhausted = true;
                        break 'fill;
                    }
                    continue;
                }
                if let Some(stop) = stop {
                    // A `to` token names the last event of an earlier page: include it.
                    let past = if backwards {
                        cursor < stop
                    } else {
                        cursor > stop
                    };
                    if past {
                        exhausted = true;
                        break 'fill;
                    }
                }
                let visible = match user {
                    Some(u) => self.can_see(u, &pdu, current.as_deref()).await?,
                    None => true,
                };
                if filtering::matches(filter, &pdu) && visible {
                    events.push(pdu);
                    if events.len() >= limit {
                        break 'fill;
                    }
                }
            }
            if fetched < batch {
                exhausted = true;
                break;
            }
        }
        let start = from.map(str::to_owned).unwrap_or_else(|| match start_pos {
            END => events
                .first()
                .map(topo_token)
                .unwrap_or_else(|| "t0_0".into()),
            (d, s) => format!("t{d}_{s}"),
        });
        // A `from`-less backwards page starts just after its newest event.
        let start = if from.is_none() && backwards {
            events
                .first()
                .map(|p| format!("t{}_{}", p.depth, p.stream_ordering + 1))
                .unwrap_or(start)
        } else {
            start
        };
        // The spec omits `end` when no further events are available; like
        // Synapse (and sytest's 10apidoc/34room-messages.pl), a page with
        // events always has one, and the page after it, empty, has none.
        let end = (!exhausted || !events.is_empty()).then(|| format!("t{}_{}", cursor.0, cursor.1));
        Ok(Page { events, start, end })
    }

    /// `timestamp_to_event`: the event of `room_id` sent closest to `ts`
    /// (at or before it when `backwards`, else at or after it) that `user`
    /// may see, among the local timeline (events before a purge point
    /// excluded).
    pub async fn event_near_time(
        &self,
        room_id: &RoomId,
        user: &UserId,
        ts: i64,
        backwards: bool,
    ) -> Result<Option<Pdu>> {
        let current = self.membership(room_id, user).await?;
        let floor = self.history_floor(room_id).await?;
        let mut cursor = (ts, if backwards { i64::MAX } else { i64::MIN });
        loop {
            let rows = self
                .storage
                .room_events_page(room_id.as_str(), PageOrder::Time, cursor, backwards, 100)
                .await?;
            if rows.is_empty() {
                return Ok(None);
            }
            for row in rows {
                let pdu = row_to_pdu(row)?;
                let step = if backwards { -1 } else { 1 };
                cursor = (
                    i64::from(pdu.origin_server_ts.get()),
                    pdu.stream_ordering + step,
                );
                if pdu.depth >= floor && self.can_see(user, &pdu, current.as_deref()).await? {
                    return Ok(Some(pdu));
                }
            }
        }
    }

    /// `/context`: the event and up to `limit` visible events around it.
    pub async fn context(
        &self,
        room_id: &RoomId,
        user: &UserId,
        event: &Pdu,
        limit: usize,
        filter: &RoomEventFilter,
    ) -> Result<(Page, Page)> {
        let before_n = limit / 2;
        self.around(room_id, user, event, (before_n, limit - before_n), filter)
            .await
    }

    /// Up to `before` visible events before `event` (newest first) and up to
    /// `after` after it (oldest first).
    pub async fn around(
        &self,
        room_id: &RoomId,
        user: &UserId,
        event: &Pdu,
        (before, after): (usize, usize),
        filter: &RoomEventFilter,
    ) -> Result<(Page, Page)> {
        let here = format!("t{}_{}", event.depth, event.stream_ordering);
        let page = |backwards: bool, n: usize| {
            self.messages(room_id, Some(user), Some(&here), None, backwards, n, filter)
        };
        Ok((page(true, before).await?, page(false, after).await?))
    }
}
