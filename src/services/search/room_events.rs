//! A search of room events (`POST /search`'s `room_events` category): which
//! rooms it covers, its order and paging, the groupings, the context around
//! each result and the profiles in it, and the rooms' state.

use std::collections::{BTreeMap, BTreeSet};

use ruma::api::client::filter::RoomEventFilter;
use ruma::api::client::search::search_events::v3::{
    Criteria, EventContext, GroupingKey, Groupings, OrderBy,
};
use ruma::{OwnedEventId, OwnedRoomId, UserId};
use serde_json::value::RawValue;

use super::{Hit, Search, SearchQuery};
use crate::error::{MatrixError, Result};
use crate::model::accounts::Requester;
use crate::model::pdu::{ClientEvent, Pdu};
use crate::services::{Services, memberships};

/// Results per page unless the filter sets a limit.
const PAGE: usize = 10;
/// The largest page a filter may ask for.
const MAX_PAGE: usize = 1000;

/// One page of a room-events search.
pub struct RoomEvents {
    /// How many events match in all.
    pub count: usize,
    /// The page's results that the searcher may see, best (or newest) first.
    pub results: Vec<SearchResult>,
    /// The words of the search term, lowercased, for clients to highlight.
    pub highlights: Vec<String>,
    /// Where the next page starts; `None` on the last page.
    pub next_batch: Option<String>,
    /// With `include_state`: the current state of each room with a result.
    pub state: Option<BTreeMap<OwnedRoomId, Vec<ClientEvent>>>,
    /// The results' ids grouped by each grouping key the criteria name.
    pub groups: Vec<(GroupingKey, Groups)>,
}

/// The results' event ids by room id or by sender.
pub type Groups = BTreeMap<String, Vec<OwnedEventId>>;

/// One result.
pub struct SearchResult {
    /// Its score (0 when ordered by recency).
    pub rank: f32,
    pub event: ClientEvent,
    /// Only when the criteria ask for context.
    pub context: Option<ResultContext>,
}

/// The events around a result.
pub struct ResultContext {
    /// Nearest first.
    pub events_before: Vec<ClientEvent>,
    pub events_after: Vec<ClientEvent>,
    pub start: String,
    pub end: String,
    /// With `include_profile`: each sender's profile as it was at the result
    /// (the state after it), by user id.
    pub profiles: Option<BTreeMap<String, MemberProfile>>,
}

/// The profile fields of a member event's content, each as the event has it
/// (any JSON value).
#[derive(serde::Deserialize, Default)]
pub struct MemberProfile {
    #[serde(default)]
    pub displayname: Option<Box<RawValue>>,
    #[serde(default)]
    pub avatar_url: Option<Box<RawValue>>,
}

/// What the criteria ask of the index, checked.
struct Plan {
    keys: Vec<String>,
    recent_first: bool,
    offset: usize,
    page: usize,
}

/// Searches the events `requester` may see for `criteria`, from `next_batch`
/// (a previous page's) or the first page.
pub async fn room_events(
    s: &Services,
    search: &Search,
    requester: &Requester,
    criteria: &Criteria,
    next_batch: Option<&str>,
) -> Result<RoomEvents> {
    let plan = plan(criteria, next_batch)?;
    let user = requester.user_id();
    let (hits, count) = search.query(&SearchQuery {
        term: &criteria.search_term,
        keys: plan.keys,
        rooms: searchable_rooms(s, &user, &criteria.filter).await?,
        recent_first: plan.recent_first,
        offset: plan.offset,
        limit: plan.page,
    })?;
    let mut results = Vec::new();
    let mut shown = Vec::new();
    for hit in &hits {
        let Some(pdu) = visible(s, &user, hit).await? else {
            continue;
        };
        let context = if criteria.event_context.is_default() {
            // ruma fills in the spec's defaults when `event_context` is
            // absent: context is sent only when asked for.
            None
        } else {
            Some(context(s, requester, &pdu, &criteria.event_context).await?)
        };
        results.push(SearchResult {
            rank: hit.rank,
            event: client_event(s, requester, &pdu).await?,
            context,
        });
        shown.push(pdu);
    }
    let state = match criteria.include_state {
        Some(true) => Some(room_states(s, requester, &shown).await?),
        _ => None,
    };
    let next = plan.offset + plan.page;
    Ok(RoomEvents {
        count,
        results,
        highlights: highlights(&criteria.search_term),
        next_batch: (next < count).then(|| next.to_string()),
        state,
        groups: groups(&criteria.groupings, &shown),
    })
}

fn plan(criteria: &Criteria, next_batch: Option<&str>) -> Result<Plan> {
    let offset: usize = match next_batch {
        Some(t) => t
            .parse()
            .map_err(|_| MatrixError::invalid_param("Invalid next_batch"))?,
        None => 0,
    };
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
    let page = criteria
        .filter
        .limit
        .map(|l| (u64::from(l) as usize).clamp(1, MAX_PAGE))
        .unwrap_or(PAGE);
    let keys = criteria
        .keys
        .iter()
        .flatten()
        .map(|k| k.as_str().to_owned())
        .collect();
    Ok(Plan {
        keys,
        recent_first,
        offset,
        page,
    })
}

/// The rooms the user is in that the filter allows. A filter naming rooms
/// the user is not in just finds nothing there (as Synapse: the filter is
/// intersected with the user's rooms).
async fn searchable_rooms(
    s: &Services,
    user: &UserId,
    filter: &RoomEventFilter,
) -> Result<Vec<String>> {
    let mut rooms = memberships::joined_rooms(s, user).await?;
    if let Some(wanted) = &filter.rooms {
        rooms.retain(|r| wanted.contains(r));
    }
    rooms.retain(|r| !filter.not_rooms.contains(r));
    Ok(rooms.into_iter().map(String::from).collect())
}

/// The hit's event, if it is stored, unredacted and visible to `user`.
async fn visible(s: &Services, user: &UserId, hit: &Hit) -> Result<Option<Pdu>> {
    let Some(pdu) = s.rooms.pdu(&hit.event_id).await? else {
        return Ok(None);
    };
    let room_id = OwnedRoomId::try_from(hit.room_id.as_str()).map_err(MatrixError::internal)?;
    let current = s.rooms.membership(&room_id, user).await?;
    let seen = s.rooms.can_see(user, &pdu, current.as_deref()).await?;
    Ok((seen && pdu.redacted_by.is_none()).then_some(pdu))
}

fn viewer(r: &Requester) -> Option<(&str, &str)> {
    Some((r.user_id.as_str(), r.device_id.as_str()))
}

async fn client_events(s: &Services, r: &Requester, pdus: &[Pdu]) -> Result<Vec<ClientEvent>> {
    s.rooms.client_events_raw(pdus, viewer(r)).await
}

async fn client_event(s: &Services, r: &Requester, pdu: &Pdu) -> Result<ClientEvent> {
    client_events(s, r, std::slice::from_ref(pdu))
        .await?
        .pop()
        .ok_or_else(|| MatrixError::internal("no client form of the event"))
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

/// The events around a result, as `/context` finds them.
async fn context(
    s: &Services,
    r: &Requester,
    pdu: &Pdu,
    wanted: &EventContext,
) -> Result<ResultContext> {
    let before = u64::from(wanted.before_limit) as usize;
    let after = u64::from(wanted.after_limit) as usize;
    let (b, a) = s
        .rooms
        .around(
            &pdu.room_id,
            &r.user_id(),
            pdu,
            (before.max(1), after.max(1)),
            &Default::default(),
        )
        .await?;
    let profiles = if wanted.include_profile {
        let senders = b.events.iter().chain(&a.events).chain([pdu]);
        Some(profiles(s, pdu, senders).await?)
    } else {
        None
    };
    Ok(ResultContext {
        events_before: client_events(s, r, &b.events[..before.min(b.events.len())]).await?,
        events_after: client_events(s, r, &a.events[..after.min(a.events.len())]).await?,
        start: b.end.unwrap_or(b.start),
        end: a.end.unwrap_or(a.start),
        profiles,
    })
}

/// The profiles of the senders of `events` as they were at `at` (the state
/// after it), by user id; a sender with no member event there has none.
async fn profiles<'a>(
    s: &Services,
    at: &Pdu,
    events: impl Iterator<Item = &'a Pdu>,
) -> Result<BTreeMap<String, MemberProfile>> {
    let state = s.rooms.state_at(at).await?;
    let senders: BTreeSet<String> = events.map(|p| p.sender.to_string()).collect();
    let mut profiles = BTreeMap::new();
    for sender in senders {
        let key = ("m.room.member".to_owned(), sender);
        let Some(id) = state.get(&key) else {
            continue;
        };
        if let Some(member) = s.rooms.pdu(id.as_str()).await? {
            let profile = serde_json::from_str(member.content.get()).unwrap_or_default();
            profiles.insert(key.1, profile);
        }
    }
    Ok(profiles)
}

/// The current state of each room with a result.
async fn room_states(
    s: &Services,
    r: &Requester,
    shown: &[Pdu],
) -> Result<BTreeMap<OwnedRoomId, Vec<ClientEvent>>> {
    let rooms: BTreeSet<&OwnedRoomId> = shown.iter().map(|p| &p.room_id).collect();
    let mut states = BTreeMap::new();
    for room in rooms {
        let current = s.rooms.current_state(room).await?;
        let mut pdus = Vec::with_capacity(current.len());
        for id in current.values() {
            if let Some(p) = s.rooms.pdu(id.as_str()).await? {
                pdus.push(p);
            }
        }
        states.insert(room.clone(), client_events(s, r, &pdus).await?);
    }
    Ok(states)
}

/// The results' ids grouped by each (known) grouping key asked for.
fn groups(groupings: &Groupings, shown: &[Pdu]) -> Vec<(GroupingKey, Groups)> {
    let mut out = Vec::new();
    for g in &groupings.group_by {
        let (key, of): (_, fn(&Pdu) -> String) = match &g.key {
            Some(GroupingKey::RoomId) => (GroupingKey::RoomId, |p| p.room_id.to_string()),
            Some(GroupingKey::Sender) => (GroupingKey::Sender, |p| p.sender.to_string()),
            _ => continue,
        };
        let mut groups = Groups::new();
        for p in shown {
            groups.entry(of(p)).or_default().push(p.event_id.clone());
        }
        out.push((key, groups));
    }
    out
}
