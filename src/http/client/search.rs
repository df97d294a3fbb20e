//! `POST /search`: full-text search of room events the user may see.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::State;
use axum::{Json, Router};
use ruma::api::client::search::search_events;
use ruma::api::client::search::search_events::v3::{GroupingKey, OrderBy};
use ruma::{OwnedRoomId, UserId};
use serde_json::{Map, Value, json};

use crate::error::{MatrixError, Result};
use crate::http::extract::{Auth, Ruma};
use crate::http::{AppState, ruma_route};
use crate::model::accounts::Requester;
use crate::services::memberships;
use crate::services::search::SearchQuery;

/// Results per page unless the filter sets a limit.
const PAGE: usize = 10;
/// The largest page a filter may ask for.
const MAX_PAGE: usize = 1000;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    ruma_route::<search_events::v3::Request, _, _>(r, search)
}

// JSON: ruma omits empty `results`, `highlights` and context arrays and null profile fields, which Myelin sends.
#[allow(
    clippy::too_many_lines,
    reason = "split when the search logic moves into its service (issue 17, item 1)"
)]
async fn search(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<search_events::v3::Request>,
) -> Result<Json<Value>> {
    let search = s.search.as_ref().ok_or_else(|| {
        MatrixError::unknown(
            http::StatusCode::BAD_REQUEST,
            "Full-text search is disabled on this server",
        )
    })?;
    let Some(criteria) = &req.search_categories.room_events else {
        return Ok(Json(json!({ "search_categories": {} })));
    };
    let user = r.user_id();
    let offset: usize = match &req.next_batch {
        Some(t) => t
            .parse()
            .map_err(|_| MatrixError::invalid_param("Invalid next_batch"))?,
        None => 0,
    };
    // Rooms the user is in (and the filter allows).
    let filter = &criteria.filter;
    let mut rooms = memberships::joined_rooms(&s, &user).await?;
    // A filter naming rooms the user is not in just finds nothing there
    // (as Synapse: the filter is intersected with the user's rooms).
    if let Some(wanted) = &filter.rooms {
        rooms.retain(|r| wanted.iter().any(|w| w.as_str() == r));
    }
    rooms.retain(|r| !filter.not_rooms.iter().any(|n| n.as_str() == r));
    let keys: Vec<String> = criteria
        .keys
        .iter()
        .flatten()
        .map(|k| k.as_str().to_owned())
        .collect();
    let recent_first = match &criteria.order_by {
        None | Some(OrderBy::Rank) => false,
        Some(OrderBy::Recent) => true,
        Some(other) => {
            return Err(MatrixError::invalid_param(format!(
                "Unknown order_by {:?}: rank or recent",
                other.as_str()
            )));
        }
    };
    for g in &criteria.groupings.group_by {
        if !matches!(
            g.key,
            None | Some(GroupingKey::RoomId | GroupingKey::Sender)
        ) {
            return Err(MatrixError::invalid_param(
                "Unknown grouping key: room_id or sender",
            ));
        }
    }
    let page = filter
        .limit
        .map(|l| (u64::from(l) as usize).clamp(1, MAX_PAGE))
        .unwrap_or(PAGE);
    let (hits, total) = search.query(&SearchQuery {
        term: &criteria.search_term,
        keys,
        rooms,
        recent_first,
        offset,
        limit: page,
    })?;

    let before = u64::from(criteria.event_context.before_limit) as usize;
    let after = u64::from(criteria.event_context.after_limit) as usize;
    // ruma fills in the spec's defaults when `event_context` is absent; the
    // context is sent only when asked for (anything but those defaults).
    let want_context = !criteria.event_context.is_default();
    let mut results = Vec::new();
    let mut result_rooms = BTreeSet::new();
    let mut groups_room: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut groups_sender: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for hit in &hits {
        let Some(pdu) = s.rooms.pdu(&hit.event_id).await? else {
            continue;
        };
        let room_id = OwnedRoomId::try_from(hit.room_id.as_str()).map_err(MatrixError::internal)?;
        let current = s.rooms.membership(&room_id, &user).await?;
        if !s.rooms.can_see(&user, &pdu, current.as_deref()).await? || pdu.redacted_by.is_some() {
            continue;
        }
        let mut entry = json!({
            "rank": hit.rank,
            "result": s.rooms.client_event(&pdu, viewer(&r)).await?,
        });
        if want_context {
            entry["context"] = context(
                &s,
                &r,
                &user,
                &room_id,
                &pdu,
                before,
                after,
                criteria.event_context.include_profile,
            )
            .await?;
        }
        groups_room
            .entry(hit.room_id.clone())
            .or_default()
            .push(hit.event_id.clone());
        groups_sender
            .entry(pdu.sender.to_string())
            .or_default()
            .push(hit.event_id.clone());
        result_rooms.insert(room_id);
        results.push(entry);
    }
    let mut body = json!({
        "count": total,
        "results": results,
        "highlights": highlights(&criteria.search_term),
    });
    if offset + page < total {
        body["next_batch"] = json!((offset + page).to_string());
    }
    if criteria.include_state == Some(true) {
        let mut state = Map::new();
        for room in &result_rooms {
            let current = s.rooms.current_state(room).await?;
            let mut events = Vec::new();
            for id in current.values() {
                if let Some(p) = s.rooms.pdu(id.as_str()).await? {
                    events.push(s.rooms.client_event(&p, viewer(&r)).await?);
                }
            }
            state.insert(room.to_string(), Value::Array(events));
        }
        body["state"] = Value::Object(state);
    }
    let mut groups = Map::new();
    for g in &criteria.groupings.group_by {
        let (name, map) = match &g.key {
            Some(GroupingKey::RoomId) => ("room_id", &groups_room),
            Some(GroupingKey::Sender) => ("sender", &groups_sender),
            _ => continue,
        };
        let mut out = Map::new();
        for (order, (k, ids)) in map.iter().enumerate() {
            out.insert(k.clone(), json!({ "results": ids, "order": order }));
        }
        groups.insert(name.to_owned(), Value::Object(out));
    }
    if !groups.is_empty() {
        body["groups"] = Value::Object(groups);
    }
    Ok(Json(
        json!({ "search_categories": { "room_events": body } }),
    ))
}

fn viewer(r: &Requester) -> Option<(&str, &str)> {
    Some((r.user_id.as_str(), r.device_id.as_str()))
}

/// The words of the search term, lowercased, for clients to highlight.
fn highlights(term: &str) -> Vec<String> {
    let mut words: Vec<String> = term
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    words.sort();
    words.dedup();
    words
}

#[allow(clippy::too_many_arguments)]
async fn context(
    s: &AppState,
    r: &Requester,
    user: &UserId,
    room_id: &OwnedRoomId,
    pdu: &crate::model::pdu::Pdu,
    before: usize,
    after: usize,
    include_profile: bool,
) -> Result<Value> {
    let (b, a) = s
        .rooms
        .around(
            room_id,
            user,
            pdu,
            (before.max(1), after.max(1)),
            &Default::default(),
        )
        .await?;
    let mut events_before = Vec::new();
    for p in b.events.iter().take(before) {
        events_before.push(s.rooms.client_event(p, viewer(r)).await?);
    }
    let mut events_after = Vec::new();
    for p in a.events.iter().take(after) {
        events_after.push(s.rooms.client_event(p, viewer(r)).await?);
    }
    let mut out = json!({
        "events_before": events_before,
        "events_after": events_after,
        "start": b.end.unwrap_or(b.start),
        "end": a.end.unwrap_or(a.start),
    });
    if include_profile {
        // Profiles as they were at the result (the state after it).
        let state = s.rooms.state_at(pdu).await?;
        let mut profiles = Map::new();
        let senders: BTreeSet<String> = b
            .events
            .iter()
            .chain(a.events.iter())
            .map(|p| p.sender.to_string())
            .chain([pdu.sender.to_string()])
            .collect();
        for sender in senders {
            if let Some(c) = s
                .rooms
                .state_content(&state, "m.room.member", &sender)
                .await?
            {
                profiles.insert(sender, json!({ "displayname": c.get("displayname"), "avatar_url": c.get("avatar_url") }));
            }
        }
        out["profile_info"] = Value::Object(profiles);
    }
    Ok(out)
}
