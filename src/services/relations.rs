//! `/relations`: the events that relate to an event (table `event_relations`),
//! as the requester may see them.

use http::StatusCode;
use ruma::api::error::ErrorKind;
use ruma::{RoomId, UserId};
use serde_json::Value;

use crate::error::{MatrixError, Result};
use crate::model::accounts::Requester;
use crate::model::pdu::Pdu;
use crate::services::Services;
use crate::services::rooms::row_to_pdu;
use crate::services::rooms::threads::THREAD;

/// Reactions and other annotations.
const ANNOTATION: &str = "m.annotation";
/// The relation type `event_relations` gives a reply (`m.in_reply_to`
/// has none of its own: see `rooms::relation_of`).
const REPLY: &str = "m.in_reply_to";

/// The longest annotation key Synapse accepts, in bytes.
const MAX_ANNOTATION_KEY: usize = 500;

/// Refuses, on a client's send, the relations the spec and Synapse refuse:
/// a thread (`m.thread`) whose root relates to another event itself (a
/// reply may start a thread: spec v1.10) is 400 `M_UNKNOWN`; an annotation
/// (`m.annotation`) without a key or with one over 500 bytes is 400
/// `M_UNKNOWN`, and a second one by the same sender, of the same event type
/// and key, is 400 `M_DUPLICATE_ANNOTATION` (spec: "Avoiding duplicate
/// annotations"). A redacted annotation does not count.
pub async fn check_new(
    s: &Services,
    sender: &UserId,
    event_type: &str,
    content: &Value,
) -> Result<()> {
    let Some(rel) = content.get("m.relates_to") else {
        return Ok(());
    };
    let (Some(parent), Some(rel_type)) = (
        rel.get("event_id").and_then(Value::as_str),
        rel.get("rel_type").and_then(Value::as_str),
    ) else {
        return Ok(());
    };
    let refuse = |msg: &str| MatrixError::unknown(StatusCode::BAD_REQUEST, msg);
    match rel_type {
        THREAD => {
            if let Some((_, parent_rel)) = s.storage.relation_of_event(parent).await?
                && parent_rel != REPLY
            {
                return Err(refuse("Cannot start threads from an event with a relation"));
            }
        }
        ANNOTATION => {
            let key = rel
                .get("key")
                .and_then(Value::as_str)
                .ok_or_else(|| refuse("Missing aggregation key"))?;
            if key.len() > MAX_ANNOTATION_KEY {
                return Err(refuse("Aggregation key is too long"));
            }
            let earlier = s
                .storage
                .annotations_by(parent, sender.as_str(), event_type)
                .await?;
            let same_key = |json: &String| {
                serde_json::from_str::<Value>(json)
                    .is_ok_and(|e| e["content"]["m.relates_to"]["key"].as_str() == Some(key))
            };
            if earlier.iter().any(same_key) {
                return Err(MatrixError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorKind::DuplicateAnnotation,
                    "Can't send same reaction twice",
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Which relations to list, and where the page starts.
pub struct RelationsQuery<'a> {
    pub event_id: &'a str,
    pub rel_type: Option<&'a str>,
    pub event_type: Option<&'a str>,
    /// A `next_batch` token of an earlier page.
    pub from: Option<&'a str>,
    pub limit: Option<u64>,
    pub forwards: bool,
    /// Also the events relating to those, down to [`RECURSION_DEPTH`]
    /// levels (as Synapse).
    pub recurse: bool,
}

/// How many levels of relations a `recurse` request follows.
pub const RECURSION_DEPTH: u32 = 3;

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
            (q.forwards, q.recurse.then_some(RECURSION_DEPTH as i64)),
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

/// One page of a room's threads: the roots the requester may see, newest
/// activity first, and the token of the next page when there is one.
pub struct ThreadsPage {
    pub roots: Vec<Pdu>,
    pub next_batch: Option<String>,
}

/// `/threads`: the room's threads by their latest reply, newest first (as
/// Synapse); `participated` keeps those the requester started or replied
/// to. Readable by members, former members and anyone in a
/// world-readable room; others (and an unknown room) get 403, as Synapse.
pub async fn threads(
    s: &Services,
    r: &Requester,
    room_id: &RoomId,
    participated: bool,
    from: Option<&str>,
    limit: Option<u64>,
) -> Result<ThreadsPage> {
    let user = r.user_id();
    if s.rooms.version(room_id).await?.is_none() {
        return Err(MatrixError::forbidden("You are not a member of this room"));
    }
    s.rooms.readable_state(room_id, &user).await?;
    let before = match from {
        Some(t) => t
            .parse::<i64>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| MatrixError::invalid_param("Invalid from token"))?,
        None => i64::MAX,
    };
    let limit = limit.unwrap_or(5).clamp(1, 100) as i64;
    let participant = participated.then(|| user.as_str());
    let rows = s
        .storage
        .room_threads(room_id.as_str(), participant, before, limit + 1)
        .await?;
    let more = rows.len() as i64 > limit;
    let rows: Vec<_> = rows.into_iter().take(limit as usize).collect();
    let next_batch = more
        .then(|| rows.last().map(|t| t.latest.to_string()))
        .flatten();
    let mut roots = Vec::with_capacity(rows.len());
    for row in rows {
        if let Some(root) = s.rooms.pdu(row.root.as_str()).await?
            && root.room_id == room_id
        {
            roots.push(root);
        }
    }
    let roots = s.rooms.filter_visible(&user, room_id, roots).await?;
    Ok(ThreadsPage { roots, next_batch })
}

/// How far up a chain of relations [`in_thread`] looks.
const MAX_RELATION_DEPTH: usize = 3;

/// Whether a receipt on `event_id` may name `thread_id` (as Synapse): for
/// `main`, the event is in no thread; for a thread root id, the event is
/// the root, a reply in that thread, or relates (through at most a few
/// relations) to one of them.
pub async fn in_thread(s: &Services, event_id: &str, thread_id: &str) -> Result<bool> {
    let mut current = event_id.to_owned();
    for _ in 0..=MAX_RELATION_DEPTH {
        if current == thread_id {
            return Ok(true);
        }
        match s.storage.relation_of_event(&current).await? {
            Some((root, rel_type)) if rel_type == THREAD => return Ok(root == thread_id),
            Some((parent, _)) => current = parent,
            None => return Ok(thread_id == "main"),
        }
    }
    Ok(thread_id == "main")
}
