//! Sliding sync extensions: `to_device` (MSC3885), `e2ee` (MSC3884),
//! `account_data` (MSC3959), `receipts` (MSC3960) and `typing` (MSC3961),
//! each from the pieces `/sync` uses.

use std::collections::{BTreeMap, BTreeSet};

use ruma::OwnedRoomId;
use ruma::api::client::sync::sync_events::v5;
use ruma::api::client::sync::sync_events::v5::request::ExtensionRoomConfig;
use serde_json::{Value, json};

use super::Candidate;
use super::rooms::raw;
use crate::error::{MatrixError, Result};
use crate::model::accounts::Requester;
use crate::services::Services;
use crate::services::sync::{parse_token, receipt_contents};

/// What the room-scoped extensions may cover.
pub(super) struct Scope<'a> {
    /// The connection's previous position.
    pub since: Option<i64>,
    pub to: i64,
    /// The rooms in each list's windows.
    pub lists: &'a BTreeMap<String, Vec<OwnedRoomId>>,
    pub subscribed: &'a BTreeMap<OwnedRoomId, v5::request::RoomSubscription>,
    /// The rooms this answer sends afresh (`initial`): their account data
    /// and receipts are sent whole.
    pub initial: &'a BTreeSet<OwnedRoomId>,
    pub candidates: &'a [Candidate],
}

pub struct ExtensionsAnswer {
    pub extensions: v5::response::Extensions,
    /// Whether any extension has something new (a long-poll answers).
    pub has_updates: bool,
}

pub(super) async fn build(
    s: &Services,
    who: &Requester,
    req: &v5::request::Extensions,
    scope: Scope<'_>,
) -> Result<ExtensionsAnswer> {
    let mut out = ExtensionsAnswer {
        extensions: v5::response::Extensions::default(),
        has_updates: false,
    };
    if req.to_device.enabled == Some(true) {
        let since = req
            .to_device
            .since
            .as_deref()
            .map(parse_token)
            .transpose()?;
        let batch = s.to_device.for_sync(who, since, scope.to).await?;
        out.has_updates |= !batch.events.is_empty();
        let events = batch.events.iter().map(raw).collect::<Result<Vec<_>>>()?;
        let mut to_device = v5::response::ToDevice::default();
        to_device.next_batch = batch.to.to_string();
        to_device.events = events;
        out.extensions.to_device = Some(to_device);
    }
    if req.e2ee.enabled == Some(true) {
        let memberships = s.storage.rooms_for_user(who.user_id.as_str()).await?;
        let keys = s
            .e2e_keys
            .for_sync(who, &memberships, (scope.since, scope.to), true)
            .await?;
        out.has_updates |= keys.lists_changed();
        // The same fields as `/sync`'s, in ruma's shape.
        let value = serde_json::to_value(&keys).map_err(MatrixError::internal)?;
        out.extensions.e2ee = serde_json::from_value(value).map_err(MatrixError::internal)?;
    }
    if req.account_data.enabled == Some(true) {
        let rooms = scoped_rooms(
            &scope,
            req.account_data.lists.as_deref(),
            req.account_data.rooms.as_deref(),
        );
        let (global, by_room) = account_data(s, who, &scope, &rooms).await?;
        out.has_updates |= !global.is_empty() || !by_room.is_empty();
        out.extensions.account_data.global = global;
        out.extensions.account_data.rooms = by_room;
    }
    if req.receipts.enabled == Some(true) {
        let rooms = scoped_rooms(
            &scope,
            req.receipts.lists.as_deref(),
            req.receipts.rooms.as_deref(),
        );
        let joined = joined_only(&scope, &rooms);
        let (fresh, known): (Vec<&OwnedRoomId>, Vec<&OwnedRoomId>) =
            joined.iter().partition(|r| scope.initial.contains(*r));
        let mut rows = Vec::new();
        for (rooms, since) in [(fresh, 0), (known, scope.since.unwrap_or(0))] {
            if rooms.is_empty() {
                continue;
            }
            let ids: Vec<&str> = rooms.iter().map(|r| r.as_str()).collect();
            rows.extend(
                s.storage
                    .receipts_in_rooms(&ids, who.user_id.as_str(), since, scope.to)
                    .await?,
            );
        }
        for (room, content) in receipt_contents(rows) {
            out.has_updates = true;
            let event = json!({ "type": "m.receipt", "content": content });
            out.extensions.receipts.rooms.insert(room, raw(&event)?);
        }
    }
    if req.typing.enabled == Some(true) {
        let rooms = scoped_rooms(
            &scope,
            req.typing.lists.as_deref(),
            req.typing.rooms.as_deref(),
        );
        for room in joined_only(&scope, &rooms) {
            if let Some(users) = s.ephemeral.typing_since(&room, scope.since) {
                out.has_updates = true;
                let event = json!({ "type": "m.typing", "content": { "user_ids": users } });
                out.extensions.typing.rooms.insert(room, raw(&event)?);
            }
        }
    }
    Ok(out)
}

/// The rooms an extension covers: those in the windows of the named lists
/// (every list when none are named) and the named rooms (`*`: every
/// subscribed room; every subscribed room when none are named), as Synapse.
fn scoped_rooms(
    scope: &Scope<'_>,
    lists: Option<&[String]>,
    rooms: Option<&[ExtensionRoomConfig]>,
) -> BTreeSet<OwnedRoomId> {
    let mut out = BTreeSet::new();
    match lists {
        None => out.extend(scope.lists.values().flatten().cloned()),
        Some(names) => {
            for name in names {
                if name == "*" {
                    out.extend(scope.lists.values().flatten().cloned());
                } else if let Some(rooms) = scope.lists.get(name) {
                    out.extend(rooms.iter().cloned());
                }
            }
        }
    }
    match rooms {
        None => out.extend(scope.subscribed.keys().cloned()),
        Some(configs) => {
            for c in configs {
                match c {
                    ExtensionRoomConfig::AllSubscribed => {
                        out.extend(scope.subscribed.keys().cloned())
                    }
                    ExtensionRoomConfig::Room(room) => {
                        out.insert(room.clone());
                    }
                    _ => {}
                }
            }
        }
    }
    // Only rooms the user has a membership the answer knows of.
    out.retain(|r| scope.candidates.iter().any(|c| c.room_id() == r));
    out
}

/// Of the rooms, those the user is joined to.
fn joined_only(scope: &Scope<'_>, rooms: &BTreeSet<OwnedRoomId>) -> Vec<OwnedRoomId> {
    rooms
        .iter()
        .filter(|r| {
            scope.candidates.iter().any(|c| {
                c.room_id() == *r
                    && c.membership == ruma::events::room::member::MembershipState::Join
            })
        })
        .cloned()
        .collect()
}

type GlobalData = Vec<ruma::serde::Raw<ruma::events::AnyGlobalAccountDataEvent>>;
type RoomData = BTreeMap<OwnedRoomId, Vec<ruma::serde::Raw<ruma::events::AnyRoomAccountDataEvent>>>;

/// Account data changed since the connection's position: global, and of the
/// scoped rooms; on the first request all of it, with the push rules (as
/// `/sync`).
async fn account_data(
    s: &Services,
    who: &Requester,
    scope: &Scope<'_>,
    rooms: &BTreeSet<OwnedRoomId>,
) -> Result<(GlobalData, RoomData)> {
    let user = who.user_id();
    let since = scope.since.unwrap_or(0);
    let mut global = Vec::new();
    let mut by_room: RoomData = BTreeMap::new();
    let mut has_push_rules = false;
    let rows = s
        .storage
        .account_data_since(user.as_str(), since, scope.to)
        .await?;
    let event = |row: &crate::storage::AccountDataRow| {
        let content: Value = serde_json::from_str(&row.content).unwrap_or_else(|_| json!({}));
        json!({ "type": row.data_type, "content": content })
    };
    for row in &rows {
        match &row.room_id {
            None => {
                has_push_rules |= row.data_type == "m.push_rules";
                global.push(raw(&event(row))?);
            }
            Some(room) if rooms.contains(room) && !scope.initial.contains(room) => {
                by_room
                    .entry(room.clone())
                    .or_default()
                    .push(raw(&event(row))?);
            }
            Some(_) => {}
        }
    }
    // Rooms sent afresh get all their account data (read again from the
    // start when the connection had a position).
    let fresh: Vec<&OwnedRoomId> = rooms
        .iter()
        .filter(|r| scope.initial.contains(*r))
        .collect();
    if !fresh.is_empty() {
        let all = if since == 0 {
            rows
        } else {
            s.storage
                .account_data_since(user.as_str(), 0, scope.to)
                .await?
        };
        for row in &all {
            if let Some(room) = &row.room_id
                && fresh.contains(&room)
            {
                by_room
                    .entry(room.clone())
                    .or_default()
                    .push(raw(&event(row))?);
            }
        }
    }
    if scope.since.is_none() && !has_push_rules {
        let rules = s.account_data.push_rules_json(&user).await?;
        let event = json!({ "type": "m.push_rules", "content": { "global": rules } });
        global.push(raw(&event)?);
    }
    Ok((global, by_room))
}
