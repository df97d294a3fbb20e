//! `POST /search`: full-text search of room events the user may see (the
//! rules are the search service's, `services/search/room_events.rs`).
//!
//! The answer mirrors ruma's `search_events::v3::Response` field for field,
//! but ruma leaves out an empty `results`, `highlights` and context lists and
//! null profile fields, which Myelin sends (as Synapse does): hence the
//! structs here.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::{Json, Router};
use ruma::OwnedRoomId;
use ruma::api::client::search::search_events;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::error::{MatrixError, Result};
use crate::http::extract::{Auth, Ruma};
use crate::http::{AppState, ruma_route};
use crate::model::pdu::ClientEvent;
use crate::services::search::{self, MemberProfile, ResultContext, RoomEvents};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    ruma_route::<search_events::v3::Request, _, _>(r, search)
}

async fn search(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<search_events::v3::Request>,
) -> Result<Json<Response>> {
    let index = s.search.as_ref().ok_or_else(|| {
        MatrixError::unknown(
            http::StatusCode::BAD_REQUEST,
            "Full-text search is disabled on this server",
        )
    })?;
    let room_events = match &req.search_categories.room_events {
        Some(criteria) => {
            let next_batch = req.next_batch.as_deref();
            let found = search::room_events(&s, index, &r, criteria, next_batch).await?;
            Some(found.into())
        }
        None => None,
    };
    Ok(Json(Response {
        search_categories: ResultCategories { room_events },
    }))
}

/// ruma's `search_events::v3::Response`.
#[derive(Serialize)]
struct Response {
    search_categories: ResultCategories,
}

/// ruma's `ResultCategories`: `room_events` is left out when not searched.
#[derive(Serialize)]
struct ResultCategories {
    #[serde(skip_serializing_if = "Option::is_none")]
    room_events: Option<ResultRoomEvents>,
}

/// ruma's `ResultRoomEvents`, but `count`, `results` and `highlights` are
/// always sent.
#[derive(Serialize)]
struct ResultRoomEvents {
    count: usize,
    results: Vec<SearchResult>,
    highlights: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_batch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<BTreeMap<OwnedRoomId, Vec<ClientEvent>>>,
    /// By grouping key (`room_id`, `sender`), then by its value.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    groups: BTreeMap<String, BTreeMap<String, ResultGroup>>,
}

/// ruma's `ResultGroup`.
#[derive(Serialize)]
struct ResultGroup {
    results: Vec<ruma::OwnedEventId>,
    order: usize,
}

/// ruma's `SearchResult`: `context` only when asked for.
#[derive(Serialize)]
struct SearchResult {
    rank: f64,
    result: ClientEvent,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<EventContextResult>,
}

/// ruma's `EventContextResult`, but the event lists are sent even when
/// empty.
#[derive(Serialize)]
struct EventContextResult {
    events_before: Vec<ClientEvent>,
    events_after: Vec<ClientEvent>,
    start: String,
    end: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    profile_info: Option<BTreeMap<String, UserProfile>>,
}

/// ruma's `UserProfile`, but a missing field is sent as null (each is the
/// member event's own JSON value).
#[derive(Serialize)]
struct UserProfile {
    displayname: Option<Box<RawValue>>,
    avatar_url: Option<Box<RawValue>>,
}

impl From<RoomEvents> for ResultRoomEvents {
    fn from(found: RoomEvents) -> Self {
        let mut groups = BTreeMap::new();
        for (key, by_value) in found.groups {
            let groups_of_key = by_value
                .into_iter()
                .enumerate()
                .map(|(order, (value, results))| (value, ResultGroup { results, order }))
                .collect();
            groups.insert(key.as_str().to_owned(), groups_of_key);
        }
        Self {
            count: found.count,
            results: found
                .results
                .into_iter()
                .map(|r| SearchResult {
                    // As a JSON number, the score's f64 value.
                    rank: f64::from(r.rank),
                    result: r.event,
                    context: r.context.map(Into::into),
                })
                .collect(),
            highlights: found.highlights,
            next_batch: found.next_batch,
            state: found.state,
            groups,
        }
    }
}

impl From<ResultContext> for EventContextResult {
    fn from(c: ResultContext) -> Self {
        let profile = |p: MemberProfile| UserProfile {
            displayname: p.displayname,
            avatar_url: p.avatar_url,
        };
        Self {
            events_before: c.events_before,
            events_after: c.events_after,
            start: c.start,
            end: c.end,
            profile_info: c.profiles.map(|all| {
                all.into_iter()
                    .map(|(user, p)| (user, profile(p)))
                    .collect()
            }),
        }
    }
}
