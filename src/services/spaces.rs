//! Spaces and room previews: the space hierarchy (`/hierarchy`) and room
//! summaries (`/room_summary`). Both read rooms' current state; rooms this
//! server does not know (other servers' rooms) are left out until
//! federation exists.
//!
//! Who may see a room, as Synapse decides: anyone when its join rule is
//! `public`, `knock` or `knock_restricted` (where its version has that rule)
//! or its history is `world_readable`; otherwise a user who is joined or
//! invited, or who is joined to a room its `restricted` allow list names.

use std::collections::HashSet;

use ruma::api::client::space::SpaceHierarchyRoomsChunk;
use ruma::events::room::join_rules::{JoinRule, RoomJoinRulesEventContent};
use ruma::events::room::member::MembershipState;
use ruma::room::{JoinRuleSummary, RoomSummary, RoomType};
use ruma::serde::Raw;
use ruma::{OwnedRoomId, RoomId, UInt, UserId};
use serde_json::{Value, json};

use crate::error::{MatrixError, Result};
use crate::model::pdu::Pdu;
use crate::model::state::StateMap;
use crate::services::{Services, memberships};

/// Rooms a hierarchy page holds when the client does not say, and at most.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 50;

/// Rooms one hierarchy walk looks at, at most (a bound on a huge or
/// adversarial space; cycles are cut by never visiting a room twice).
const MAX_WALK: usize = 10_000;

/// A room's summary with what the viewer needs to decide on it.
struct Summarized {
    summary: RoomSummary,
    /// The room's `m.space.child` events with a non-empty `via`, in the
    /// spec's order, when the room is a space.
    children: Vec<Child>,
}

struct Child {
    room_id: OwnedRoomId,
    suggested: bool,
    /// The stripped event with its `origin_server_ts`.
    stripped: Value,
}

/// The room's summary as `user` (`None`: unauthenticated) may see it, and
/// the user's membership (`leave` when none; `None` when unauthenticated).
/// An unknown room, or one the user may not see, is 404 `M_NOT_FOUND`.
pub async fn room_summary(
    s: &Services,
    room_id: &RoomId,
    user: Option<&UserId>,
) -> Result<(RoomSummary, Option<MembershipState>)> {
    let not_found = || MatrixError::not_found("Room not found or is not accessible");
    if s.rooms.version(room_id).await?.is_none() {
        return Err(not_found());
    }
    let state = s.rooms.current_state(room_id).await?;
    if !accessible(s, room_id, &state, user).await? {
        return Err(not_found());
    }
    let summary = summarize(s, room_id, &state).await?.summary;
    let membership = match user {
        Some(user) => Some(
            s.rooms
                .membership(room_id, user)
                .await?
                .map_or(MembershipState::Leave, |m| {
                    MembershipState::from(m.as_str())
                }),
        ),
        None => None,
    };
    Ok((summary, membership))
}

/// What a client asks of `/hierarchy`.
pub struct HierarchyQuery<'a> {
    pub room_id: &'a RoomId,
    pub from: Option<&'a str>,
    pub limit: Option<UInt>,
    pub max_depth: Option<UInt>,
    pub suggested_only: bool,
}

/// One page of the space tree under `q.room_id`, depth first, children in
/// the spec's order; and the token of the next page, if any. A room the
/// user may not see is left out with everything under it; the root being
/// one is 403 `M_FORBIDDEN` (as Synapse).
pub async fn hierarchy(
    s: &Services,
    user: &UserId,
    q: HierarchyQuery<'_>,
) -> Result<(Vec<SpaceHierarchyRoomsChunk>, Option<String>)> {
    let limit = match q.limit.map(u64::from) {
        Some(0) => {
            return Err(MatrixError::invalid_param(
                "limit must be greater than zero",
            ));
        }
        Some(n) => usize::try_from(n).unwrap_or(MAX_LIMIT).min(MAX_LIMIT),
        None => DEFAULT_LIMIT,
    };
    let max_depth = q.max_depth.map(u64::from);
    let page = PageToken {
        skip: 0,
        max_depth,
        suggested_only: q.suggested_only,
        room_id: q.room_id.to_owned(),
    };
    let skip = match q.from {
        Some(token) => page.resume(token)?,
        None => 0,
    };
    let root_known = s.rooms.version(q.room_id).await?.is_some();
    let root_visible = root_known && {
        let state = s.rooms.current_state(q.room_id).await?;
        accessible(s, q.room_id, &state, Some(user)).await?
    };
    if !root_visible {
        return Err(MatrixError::forbidden(format!(
            "User {user} not in room {}, and room previews are disabled",
            q.room_id
        )));
    }

    let mut rooms = Vec::new();
    let mut seen: HashSet<OwnedRoomId> = HashSet::new();
    // Depth first: the next room to visit is at the end.
    let mut queue: Vec<(OwnedRoomId, u64)> = vec![(q.room_id.to_owned(), 0)];
    let mut found = 0usize;
    let mut more = false;
    while let Some((room_id, depth)) = queue.pop() {
        if !seen.insert(room_id.clone()) {
            continue;
        }
        if seen.len() > MAX_WALK {
            break;
        }
        if s.rooms.version(&room_id).await?.is_none() {
            continue;
        }
        let state = s.rooms.current_state(&room_id).await?;
        if !accessible(s, &room_id, &state, Some(user)).await? {
            continue;
        }
        if found == skip + limit {
            more = true;
            break;
        }
        let room = summarize(s, &room_id, &state).await?;
        let children: Vec<Child> = room
            .children
            .into_iter()
            .filter(|c| c.suggested || !q.suggested_only)
            .collect();
        if max_depth.is_none_or(|max| depth < max) {
            queue.extend(
                children
                    .iter()
                    .rev()
                    .filter(|c| !seen.contains(&c.room_id))
                    .map(|c| (c.room_id.clone(), depth + 1)),
            );
        }
        if found >= skip {
            let children_state = children
                .iter()
                .map(|c| Raw::new(&c.stripped).map(Raw::cast_unchecked))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(MatrixError::internal)?;
            rooms.push(SpaceHierarchyRoomsChunk::new(room.summary, children_state));
        }
        found += 1;
    }
    let next = more.then(|| {
        PageToken {
            skip: found,
            ..page
        }
        .encode()
    });
    Ok((rooms, next))
}

/// A `/hierarchy` page token: how many rooms earlier pages held, and the
/// request it continues (a token used with other parameters is 400
/// `M_INVALID_PARAM`, as Synapse). Opaque to clients.
struct PageToken {
    skip: usize,
    max_depth: Option<u64>,
    suggested_only: bool,
    room_id: OwnedRoomId,
}

impl PageToken {
    fn encode(&self) -> String {
        let depth = self
            .max_depth
            .map_or_else(|| "-".to_owned(), |d| d.to_string());
        let suggested = u8::from(self.suggested_only);
        format!("h{}_{depth}_{suggested}_{}", self.skip, self.room_id)
    }

    /// The `skip` of `token`, when it continues this request.
    fn resume(&self, token: &str) -> Result<usize> {
        let bad = || MatrixError::invalid_param("Unknown pagination token");
        let mut parts = token.strip_prefix('h').ok_or_else(bad)?.splitn(4, '_');
        let skip: usize = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let depth = parts.next().ok_or_else(bad)?;
        let suggested = parts.next().ok_or_else(bad)?;
        let room = parts.next().ok_or_else(bad)?;
        let max_depth = match depth {
            "-" => None,
            d => Some(d.parse::<u64>().map_err(|_| bad())?),
        };
        let suggested_only = match suggested {
            "0" => false,
            "1" => true,
            _ => return Err(bad()),
        };
        if max_depth != self.max_depth
            || suggested_only != self.suggested_only
            || room != self.room_id.as_str()
        {
            return Err(MatrixError::invalid_param(
                "Pagination parameters don't match",
            ));
        }
        Ok(skip)
    }
}

/// Whether `user` (`None`: unauthenticated) may see the room's summary.
async fn accessible(
    s: &Services,
    room_id: &RoomId,
    state: &StateMap,
    user: Option<&UserId>,
) -> Result<bool> {
    let rules = s
        .rooms
        .known_version(room_id)
        .await?
        .rules()
        .ok_or_else(|| MatrixError::internal("unknown room version rules"))?;
    let join_rule = join_rule(s, state).await?;
    let open = match &join_rule {
        JoinRule::Public => true,
        JoinRule::Knock => rules.authorization.knocking,
        JoinRule::KnockRestricted(_) => rules.authorization.knock_restricted_join_rule,
        _ => false,
    };
    if open || world_readable(s, state).await? {
        return Ok(true);
    }
    let Some(user) = user else {
        return Ok(false);
    };
    let membership = match state.get(&("m.room.member".to_owned(), user.to_string())) {
        Some(id) => s
            .rooms
            .pdu_shared(id.as_str())
            .await?
            .and_then(|p| p.membership()),
        None => None,
    };
    if matches!(membership.as_deref(), Some("join" | "invite")) {
        return Ok(true);
    }
    match s.rooms.allowed_rooms(room_id, state).await? {
        Some(allowed) => s.rooms.joined_any(user, &allowed).await,
        None => Ok(false),
    }
}

/// The room's join rule (`invite` when it has none, as the auth rules say).
async fn join_rule(s: &Services, state: &StateMap) -> Result<JoinRule> {
    Ok(s.rooms
        .state_content(state, "m.room.join_rules", "")
        .await?
        .and_then(|c| serde_json::from_value::<RoomJoinRulesEventContent>(c).ok())
        .map_or(JoinRule::Invite, |c| c.join_rule))
}

async fn world_readable(s: &Services, state: &StateMap) -> Result<bool> {
    Ok(s.rooms
        .state_content(state, "m.room.history_visibility", "")
        .await?
        .is_some_and(|c| c["history_visibility"] == "world_readable"))
}

/// The summary of a room from its current state, and its children when it
/// is a space.
async fn summarize(s: &Services, room_id: &RoomId, state: &StateMap) -> Result<Summarized> {
    let content = |ty: &'static str| s.rooms.state_content(state, ty, "");
    let string = |c: Option<Value>, key: &str| {
        c.and_then(|c| c.get(key).and_then(Value::as_str).map(str::to_owned))
    };
    let joined = memberships::joined_members(s, room_id).await?.len();
    let guest_can_join = string(content("m.room.guest_access").await?, "guest_access")
        .is_some_and(|g| g == "can_join");
    let mut summary = RoomSummary::new(
        room_id.to_owned(),
        JoinRuleSummary::from(join_rule(s, state).await?),
        guest_can_join,
        UInt::try_from(joined).unwrap_or(UInt::MAX),
        world_readable(s, state).await?,
    );
    summary.name = string(content("m.room.name").await?, "name").filter(|n| !n.is_empty());
    summary.topic = string(content("m.room.topic").await?, "topic").filter(|t| !t.is_empty());
    summary.canonical_alias =
        string(content("m.room.canonical_alias").await?, "alias").and_then(|a| a.try_into().ok());
    summary.avatar_url = string(content("m.room.avatar").await?, "url")
        .filter(|u| !u.is_empty())
        .map(Into::into);
    summary.room_type = string(content("m.room.create").await?, "type").map(RoomType::from);
    summary.encryption = string(content("m.room.encryption").await?, "algorithm").map(Into::into);
    summary.room_version = s.rooms.version(room_id).await?;
    let children = if summary.room_type == Some(RoomType::Space) {
        children(s, state).await?
    } else {
        Vec::new()
    };
    Ok(Summarized { summary, children })
}

/// A space's `m.space.child` events with a non-empty `via`, ordered as the
/// spec says: by a valid `order` (those without come last), then by the
/// event's timestamp, then by room id.
async fn children(s: &Services, state: &StateMap) -> Result<Vec<Child>> {
    let mut found: Vec<(Option<String>, i64, Child)> = Vec::new();
    for ((ty, key), id) in state.iter() {
        if ty != "m.space.child" {
            continue;
        }
        let Ok(room_id) = OwnedRoomId::try_from(key.as_str()) else {
            continue;
        };
        let Some(pdu) = s.rooms.pdu_shared(id.as_str()).await? else {
            continue;
        };
        let content = pdu.content_value();
        let has_via = content["via"]
            .as_array()
            .is_some_and(|v| !v.is_empty() && v.iter().all(Value::is_string));
        if !has_via {
            continue;
        }
        let order = content["order"]
            .as_str()
            .filter(|o| o.len() <= 50 && o.chars().all(|c| ('\x20'..='\x7e').contains(&c)))
            .map(str::to_owned);
        let ts = i64::from(pdu.origin_server_ts.get());
        found.push((
            order,
            ts,
            Child {
                room_id,
                suggested: content["suggested"] == true,
                stripped: stripped_with_ts(&pdu),
            },
        ));
    }
    found.sort_by(|a, b| {
        let order = match (&a.0, &b.0) {
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        };
        order
            .then(a.1.cmp(&b.1))
            .then_with(|| a.2.room_id.cmp(&b.2.room_id))
    });
    Ok(found.into_iter().map(|(_, _, c)| c).collect())
}

fn stripped_with_ts(pdu: &Pdu) -> Value {
    let mut ev = pdu.to_stripped();
    ev["origin_server_ts"] = json!(pdu.origin_server_ts);
    ev
}
