//! `/relations`: the events that relate to an event (table `event_relations`),
//! as the requester may see them.

use ruma::RoomId;

use crate::error::{MatrixError, Result};
use crate::model::accounts::Requester;
use crate::model::pdu::Pdu;
use crate::services::Services;
use crate::services::rooms::row_to_pdu;

/// Which relations to list, and where the page starts.
pub struct RelationsQuery<'a> {
    pub event_id: &'a str,
    pub rel_type: Option<&'a str>,
    pub event_type: Option<&'a str>,
    /// A `next_batch` token of an earlier page.
    pub from: Option<&'a str>,
    pub limit: Option<u64>,
    pub forwards: bool,
}

/// One page of relations: the events the requester may see, and the token
/// of the next page when there is one.
pub struct RelationsPage {
    pub events: Vec<Pdu>,
    pub next_batch: Option<String>,
}

/// The parent must be in the room and visible to the requester (else 404).
/// Redacted relations are left out (a redacted event relates to nothing).
pub async fn page(
    s: &Services,
    r: &Requester,
    room_id: &RoomId,
    q: RelationsQuery<'_>,
) -> Result<RelationsPage> {
    let user = r.user_id();
    s.rooms.readable_state(room_id, &user).await?;
    let parent = s
        .rooms
        .pdu(q.event_id)
        .await?
        .filter(|p| p.room_id == room_id);
    let current = s.rooms.membership(room_id, &user).await?;
    match &parent {
        Some(p) if s.rooms.can_see(&user, p, current.as_deref()).await? => {}
        _ => return Err(MatrixError::not_found("Event not found")),
    }
    let from = match q.from {
        Some(t) => Some(
            t.rsplit('_')
                .next()
                .and_then(|v| v.trim_start_matches(['s', 't', 'r']).parse::<i64>().ok())
                .ok_or_else(|| MatrixError::invalid_param("Invalid from token"))?,
        ),
        None => None,
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 1000) as i64;
    let rows = s
        .storage
        .relations(
            room_id.as_str(),
            q.event_id,
            q.rel_type,
            q.event_type,
            from,
            q.forwards,
            limit + 1,
        )
        .await?;
    let more = rows.len() as i64 > limit;
    let mut pdus = Vec::new();
    for row in rows.into_iter().take(limit as usize) {
        let pdu = row_to_pdu(row)?;
        if pdu.redacted_by.is_none() {
            pdus.push(pdu);
        }
    }
    let next_batch = more
        .then(|| pdus.last().map(|p| format!("r{}", p.stream_ordering)))
        .flatten();
    let events = s.rooms.filter_visible(&user, room_id, pdus).await?;
    Ok(RelationsPage { events, next_batch })
}
