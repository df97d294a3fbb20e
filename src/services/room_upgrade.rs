//! Room upgrades (`POST /rooms/{roomId}/upgrade`): a new room of the asked
//! version that takes over the old one's important state, bans, aliases and
//! directory listing; the old room gets an `m.room.tombstone` pointing at it
//! and power levels that stop ordinary members from talking there. A user who
//! joins the new room takes their room tags, room push rule and `m.direct`
//! entry along (as Synapse does).

use ruma::events::TimelineEventType;
use ruma::{OwnedRoomId, RoomId, RoomVersionId, UserId};
use serde_json::{Map, Value, json};

use crate::error::{MatrixError, Result};
use crate::model::accounts::Requester;
use crate::services::Services;
use crate::services::rooms::NewEvent;
use crate::services::rooms::create::{CreateRoom, InitialState, Preset};

/// State copied to the new room as it is (state key "").
const COPIED_STATE: [&str; 10] = [
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.encryption",
    "m.room.server_acl",
    "m.room.related_groups",
    "m.room.pinned_events",
];

/// Upgrades the room for `who`: 404 for an unknown room, 403 for a caller
/// who is not joined or may not send `m.room.tombstone`, 400
/// `M_UNSUPPORTED_ROOM_VERSION` for a version Myelin cannot create.
pub async fn upgrade_room(
    s: &Services,
    who: &Requester,
    room_id: &RoomId,
    new_version: RoomVersionId,
) -> Result<OwnedRoomId> {
    let user = who.user_id();
    s.rooms.known_version(room_id).await?;
    if s.rooms.membership(room_id, &user).await?.as_deref() != Some("join") {
        return Err(MatrixError::forbidden("You are not joined to this room"));
    }
    if !s
        .rooms
        .can_send_state(room_id, &user, "m.room.tombstone")
        .await?
    {
        return Err(MatrixError::forbidden(
            "You may not upgrade this room (m.room.tombstone)",
        ));
    }
    let old = OldRoom::read(s, room_id).await?;
    let creator_privileged = creators_privileged(&new_version);
    let new_room = create_and_tombstone(s, &user, &old, new_version).await?;
    if !creator_privileged && old.power_levels_raised(&user) {
        // The upgrader had the power to create the room's state only for
        // the creation: the old room's levels, as they were, in force again.
        send_state(
            s,
            &new_room,
            &user,
            "m.room.power_levels",
            "",
            old.power_levels.clone(),
        )
        .await?;
    }
    restrict_old_room(s, room_id, &user, &old.power_levels).await;
    move_aliases(s, room_id, &new_room, &user, old.canonical_alias.as_ref()).await?;
    if crate::services::directory::is_public(s, room_id).await? {
        crate::services::directory::publish(s, &new_room, true).await?;
        crate::services::directory::publish(s, room_id, false).await?;
    }
    carry_user_state(s, &user, room_id, &new_room).await?;
    Ok(new_room)
}

/// The replacement room and the old room's tombstone. Where the new room's
/// id can be chosen first (up to version 11) the tombstone goes first and the
/// new room's `predecessor` names it, as Synapse links them; from version 12
/// the room id is the create event's hash, so the room comes first and its
/// `predecessor` names the old room only (the spec makes `event_id` optional).
/// Every check that can refuse the upgrade ran before the tombstone.
async fn create_and_tombstone(
    s: &Services,
    user: &UserId,
    old: &OldRoom,
    version: RoomVersionId,
) -> Result<OwnedRoomId> {
    let mut request = old.create_request(s, user, version.clone()).await?;
    match s.rooms.new_room_id(&version)? {
        Some(new_room) => {
            let event_id = send_tombstone(s, &old.room_id, user, &new_room).await?;
            request.creation_content.insert(
                "predecessor".to_owned(),
                json!({ "room_id": old.room_id, "event_id": event_id }),
            );
            request.room_id = Some(new_room);
            s.rooms.create_room(request).await
        }
        None => {
            let new_room = s.rooms.create_room(request).await?;
            send_tombstone(s, &old.room_id, user, &new_room).await?;
            Ok(new_room)
        }
    }
}

async fn send_tombstone(
    s: &Services,
    old: &RoomId,
    user: &UserId,
    replacement: &RoomId,
) -> Result<ruma::OwnedEventId> {
    let content = json!({ "body": "This room has been replaced", "replacement_room": replacement });
    send_state(s, old, user, "m.room.tombstone", "", content).await
}

/// What the upgrade takes from the old room.
struct OldRoom {
    room_id: OwnedRoomId,
    create: Map<String, Value>,
    power_levels: Value,
    copied: Vec<InitialState>,
    canonical_alias: Option<Value>,
}

impl OldRoom {
    async fn read(s: &Services, room_id: &RoomId) -> Result<Self> {
        let state = s.rooms.current_state(room_id).await?;
        let mut old = OldRoom {
            room_id: room_id.to_owned(),
            create: Map::new(),
            power_levels: json!({}),
            copied: Vec::new(),
            canonical_alias: None,
        };
        for ((ty, key), event_id) in state.iter() {
            let wanted = matches!(
                ty.as_str(),
                "m.room.create"
                    | "m.room.power_levels"
                    | "m.room.canonical_alias"
                    | "m.room.member"
            ) || (key.is_empty() && COPIED_STATE.contains(&ty.as_str()));
            if !wanted {
                continue;
            }
            let Some(pdu) = s.rooms.pdu_shared(event_id.as_str()).await? else {
                continue;
            };
            let content = pdu.content_value();
            match ty.as_str() {
                "m.room.create" => old.create = content.as_object().cloned().unwrap_or_default(),
                "m.room.power_levels" => old.power_levels = content,
                "m.room.canonical_alias" => old.canonical_alias = Some(content),
                "m.room.member" => {
                    // Bans carry over; other memberships are the users' to make.
                    if content.get("membership").and_then(Value::as_str) == Some("ban") {
                        old.copied.push(InitialState {
                            event_type: ty.clone(),
                            state_key: key.clone(),
                            content: json!({ "membership": "ban" }),
                        });
                    }
                }
                _ => old.copied.push(InitialState {
                    event_type: ty.clone(),
                    state_key: key.clone(),
                    content,
                }),
            }
        }
        // A stable order: the events of the new room do not depend on a map's.
        old.copied
            .sort_by(|a, b| (&a.event_type, &a.state_key).cmp(&(&b.event_type, &b.state_key)));
        Ok(old)
    }

    /// The level the upgrader needs to write every piece of copied state:
    /// the highest level the power levels name.
    fn needed_level(&self) -> i64 {
        let pl = &self.power_levels;
        let mut needed = 100;
        for key in [
            "state_default",
            "ban",
            "kick",
            "redact",
            "invite",
            "events_default",
        ] {
            needed = needed.max(pl.get(key).and_then(Value::as_i64).unwrap_or(0));
        }
        if let Some(Value::Object(events)) = pl.get("events") {
            needed = needed.max(events.values().filter_map(Value::as_i64).max().unwrap_or(0));
        }
        needed
    }

    fn level_of(&self, user: &UserId) -> i64 {
        let pl = &self.power_levels;
        pl.get("users")
            .and_then(|u| u.get(user.as_str()))
            .and_then(Value::as_i64)
            .unwrap_or_else(|| pl.get("users_default").and_then(Value::as_i64).unwrap_or(0))
    }

    /// Whether the new room's creation gives the upgrader more power than
    /// the old room did.
    fn power_levels_raised(&self, user: &UserId) -> bool {
        self.level_of(user) < self.needed_level()
    }

    async fn create_request(
        &self,
        s: &Services,
        user: &UserId,
        version: RoomVersionId,
    ) -> Result<CreateRoom> {
        let mut creation_content = Map::new();
        for key in ["m.federate", "type"] {
            if let Some(v) = self.create.get(key) {
                creation_content.insert(key.to_owned(), v.clone());
            }
        }
        creation_content.insert("predecessor".to_owned(), json!({ "room_id": self.room_id }));
        let mut power_levels = self.power_levels.as_object().cloned().unwrap_or_default();
        if creators_privileged(&version) {
            // The upgrader creates the room: from version 12 a creator holds
            // every power and may not be named in `users`.
            if let Some(Value::Object(users)) = power_levels.get_mut("users") {
                users.remove(user.as_str());
            }
        } else if self.power_levels_raised(user) {
            let users = power_levels.entry("users").or_insert_with(|| json!({}));
            if let Some(users) = users.as_object_mut() {
                users.insert(user.to_string(), json!(self.needed_level()));
            }
        }
        let profile = match s.profiles.get(user).await {
            Ok(p) => Value::Object(p.member_content()),
            Err(_) => json!({}),
        };
        Ok(CreateRoom {
            creator: user.to_owned(),
            version,
            creation_content,
            preset: Preset::PrivateChat,
            name: None,
            topic: None,
            invite: Vec::new(),
            is_direct: false,
            initial_state: self.copied.clone(),
            power_level_override: Some(power_levels),
            canonical_alias: None,
            creator_member_content: profile,
            room_id: None,
        })
    }
}

/// Whether a room of `version` gives its creators every power (12 on).
fn creators_privileged(version: &RoomVersionId) -> bool {
    version
        .rules()
        .is_some_and(|r| r.authorization.explicitly_privilege_room_creators)
}

async fn send_state(
    s: &Services,
    room_id: &RoomId,
    sender: &UserId,
    ty: &str,
    state_key: &str,
    content: Value,
) -> Result<ruma::OwnedEventId> {
    let pdu = s
        .rooms
        .append(NewEvent {
            room_id,
            sender,
            kind: TimelineEventType::from(ty),
            state_key: Some(state_key.to_owned()),
            content,
            txn: None,
            redacts: None,
            origin_server_ts: None,
        })
        .await?;
    Ok(pdu.event_id)
}

/// Raises the old room's `events_default` and `invite` to at least
/// `max(50, users_default + 1)` so ordinary members stop talking and
/// inviting there. An upgrader who may not change power levels leaves them.
async fn restrict_old_room(s: &Services, room_id: &RoomId, user: &UserId, power_levels: &Value) {
    let Some(mut pl) = power_levels.as_object().cloned() else {
        return;
    };
    let users_default = pl.get("users_default").and_then(Value::as_i64).unwrap_or(0);
    let restricted = 50.max(users_default + 1);
    let mut changed = false;
    for key in ["events_default", "invite"] {
        if pl.get(key).and_then(Value::as_i64).unwrap_or(0) < restricted {
            pl.insert(key.to_owned(), json!(restricted));
            changed = true;
        }
    }
    if changed
        && let Err(e) = send_state(
            s,
            room_id,
            user,
            "m.room.power_levels",
            "",
            Value::Object(pl),
        )
        .await
    {
        tracing::info!(%room_id, error = %e.message(), "the upgraded room keeps its power levels");
    }
}

/// Local aliases point at the new room; the canonical alias moves there
/// (the old room's is emptied).
async fn move_aliases(
    s: &Services,
    old: &RoomId,
    new: &RoomId,
    user: &UserId,
    canonical_alias: Option<&Value>,
) -> Result<()> {
    s.storage
        .move_room_aliases(old.as_str(), new.as_str())
        .await?;
    // Application services interested through an alias follow it.
    s.as_delivery.forget_room(old);
    s.as_delivery.forget_room(new);
    let Some(content) = canonical_alias.filter(|c| c.as_object().is_some_and(|m| !m.is_empty()))
    else {
        return Ok(());
    };
    if let Err(e) = send_state(s, old, user, "m.room.canonical_alias", "", json!({})).await {
        tracing::info!(room_id = %old, error = %e.message(), "the old room keeps its canonical alias");
    }
    send_state(s, new, user, "m.room.canonical_alias", "", content.clone()).await?;
    Ok(())
}

/// On joining a room that replaced another: the user's tags of the old room,
/// their push rule for it (a `room` rule named by its id) and their
/// `m.direct` entry now name the new room too. Nothing for other rooms.
pub async fn carry_user_state_on_join(s: &Services, user: &UserId, room_id: &RoomId) -> Result<()> {
    let Some(create) = s
        .rooms
        .current_state_pdu(room_id, "m.room.create", "")
        .await?
    else {
        return Ok(());
    };
    let Some(old) = create
        .content_value()
        .get("predecessor")
        .and_then(|p| p.get("room_id"))
        .and_then(Value::as_str)
        .and_then(|r| OwnedRoomId::try_from(r).ok())
    else {
        return Ok(());
    };
    carry_user_state(s, user, &old, room_id).await
}

async fn carry_user_state(s: &Services, user: &UserId, old: &RoomId, new: &RoomId) -> Result<()> {
    if let Some(tags) = s.account_data.get(user, Some(old), "m.tag").await? {
        s.account_data.set(user, Some(new), "m.tag", &tags).await?;
    }
    let mut rules = s.account_data.push_rules_json(user).await?;
    if let Some(rule) = rules
        .get("room")
        .and_then(Value::as_array)
        .and_then(|room| {
            room.iter()
                .find(|r| r.get("rule_id").and_then(Value::as_str) == Some(old.as_str()))
        })
        .cloned()
    {
        let mut copy = rule;
        copy["rule_id"] = json!(new);
        crate::services::push_rules::insert(&mut rules, "room", copy, None, None)?;
        s.account_data.set_push_rules_json(user, rules).await?;
    }
    if let Some(Value::Object(mut direct)) = s.account_data.get(user, None, "m.direct").await? {
        let mut changed = false;
        for rooms in direct.values_mut() {
            if let Some(list) = rooms.as_array_mut()
                && list.iter().any(|r| r.as_str() == Some(old.as_str()))
                && !list.iter().any(|r| r.as_str() == Some(new.as_str()))
            {
                list.push(json!(new));
                changed = true;
            }
        }
        if changed {
            s.account_data
                .set(user, None, "m.direct", &Value::Object(direct))
                .await?;
        }
    }
    Ok(())
}
