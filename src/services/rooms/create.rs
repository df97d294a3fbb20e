//! `createRoom`: the create event, the creator's join, power levels, the
//! preset's join rules / history visibility / guest access, initial state,
//! name, topic and invites — each a real event through the pipeline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ruma::events::TimelineEventType;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedRoomId, OwnedUserId,
    RoomId, RoomVersionId,
};
use serde_json::{Map, Value, json};

use super::{NewEvent, RoomHead, Rooms};
use crate::error::{MatrixError, Result};
use crate::model::state::StateMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    PrivateChat,
    TrustedPrivateChat,
    PublicChat,
}

/// One event of a creation's `initial_state`.
#[derive(Debug, Clone)]
pub struct InitialState {
    pub event_type: String,
    pub state_key: String,
    pub content: Value,
}

pub struct CreateRoom {
    pub creator: OwnedUserId,
    pub version: RoomVersionId,
    /// Extra fields for the create event's content (`m.federate`, `type`, ...).
    pub creation_content: Map<String, Value>,
    pub preset: Preset,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub invite: Vec<OwnedUserId>,
    pub is_direct: bool,
    pub initial_state: Vec<InitialState>,
    pub power_level_override: Option<Map<String, Value>>,
    /// A full alias (`#name:server`) for the room: reserved for it before
    /// any event is written, and made its `m.room.canonical_alias`. Taken
    /// (even by a creation racing this one): 400 `M_ROOM_IN_USE`, no room.
    pub canonical_alias: Option<String>,
    /// Content of the creator's join event (display name, avatar).
    pub creator_member_content: Value,
    /// The room id, chosen beforehand with [`Rooms::new_room_id`] (a room
    /// upgrade names the replacement in its tombstone first); `None` for a
    /// new one.
    pub room_id: Option<OwnedRoomId>,
}

/// 400 `M_UNSUPPORTED_ROOM_VERSION` unless Myelin creates rooms of `version`.
pub fn check_supported(version: &RoomVersionId) -> Result<()> {
    if super::SUPPORTED_ROOM_VERSIONS.contains(version) {
        return Ok(());
    }
    Err(MatrixError::new(
        http::StatusCode::BAD_REQUEST,
        ruma::api::error::ErrorKind::UnsupportedRoomVersion,
        format!("Room version {version} is not supported"),
    ))
}

impl Rooms {
    /// A fresh room id for a room of `version`, known before the room is
    /// created; `None` for versions whose room id is the create event's
    /// hash (12 on), which is known only once the room exists.
    pub fn new_room_id(&self, version: &RoomVersionId) -> Result<Option<OwnedRoomId>> {
        check_supported(version)?;
        let rules = version
            .rules()
            .ok_or_else(|| MatrixError::internal("no rules for version"))?;
        if rules.authorization.room_create_event_id_as_room_id {
            return Ok(None);
        }
        OwnedRoomId::try_from(super::opaque_id('!', &self.server_name))
            .map(Some)
            .map_err(MatrixError::internal)
    }

    pub async fn create_room(&self, req: CreateRoom) -> Result<OwnedRoomId> {
        check_supported(&req.version)?;
        // 1. The create event.
        let pdu = self.build_create_event(&req).await?;
        let room_id = pdu.room_id.clone();
        let mut reservation = self.reserve_alias(&req, &room_id).await?;
        self.write_create_event(pdu, &req).await?;
        if let Some(r) = &mut reservation {
            r.held = false;
        }
        // From here on the room exists and owns the alias, whatever
        // fails later.
        self.fill_new_room(&req, &room_id).await?;
        Ok(room_id)
    }

    /// The new room's create event, built, signed and checked (from room
    /// version 12 its hash is the room id).
    async fn build_create_event(&self, req: &CreateRoom) -> Result<super::Pdu> {
        let rules = req
            .version
            .rules()
            .ok_or_else(|| MatrixError::internal("no rules for version"))?;
        let v12 = rules.authorization.room_create_event_id_as_room_id;
        let mut content = req.creation_content.clone();
        content.insert("room_version".into(), json!(req.version));
        if !rules.authorization.use_room_create_sender {
            content.insert("creator".into(), json!(req.creator));
        }
        if v12 && req.preset == Preset::TrustedPrivateChat && !req.invite.is_empty() {
            content.insert("additional_creators".into(), json!(req.invite));
        }
        let mut obj = CanonicalJsonObject::new();
        let s = |v: &str| CanonicalJsonValue::String(v.to_owned());
        obj.insert("type".into(), s("m.room.create"));
        obj.insert("state_key".into(), s(""));
        obj.insert("sender".into(), s(req.creator.as_str()));
        obj.insert(
            "origin_server_ts".into(),
            CanonicalJsonValue::Integer(
                ruma::Int::try_from(create_event_ts(self.clock.now()))
                    .map_err(MatrixError::internal)?,
            ),
        );
        obj.insert(
            "content".into(),
            ruma::canonical_json::to_canonical_value(&content)
                .map_err(|e| MatrixError::bad_json(e.to_string()))?,
        );
        obj.insert("prev_events".into(), CanonicalJsonValue::Array(vec![]));
        obj.insert("auth_events".into(), CanonicalJsonValue::Array(vec![]));
        obj.insert("depth".into(), CanonicalJsonValue::Integer(1u32.into()));
        let provisional_id = if v12 {
            if req.room_id.is_some() {
                return Err(MatrixError::internal(
                    "a room id cannot be chosen where it is the create event's hash",
                ));
            }
            // Replaced by the create event's reference hash in sign_and_check.
            OwnedRoomId::try_from("!placeholder").map_err(MatrixError::internal)?
        } else {
            let id = match &req.room_id {
                Some(id) => id.to_string(),
                None => super::opaque_id('!', &self.server_name),
            };
            obj.insert("room_id".into(), s(&id));
            OwnedRoomId::try_from(id).map_err(MatrixError::internal)?
        };
        let empty = StateMap::new();
        self.sign_and_check(obj, &req.version, provisional_id, &empty)
            .await
    }

    /// Reserves the requested alias for the room before anything is
    /// written: of two creations racing for it, the one whose insert loses
    /// gets `M_ROOM_IN_USE` and leaves no room behind. Until the create
    /// event is written, the returned reservation releases the alias if
    /// creation fails or the request goes away.
    async fn reserve_alias(
        &self,
        req: &CreateRoom,
        room_id: &RoomId,
    ) -> Result<Option<AliasReservation>> {
        let mut reservation = None;
        if let Some(alias) = &req.canonical_alias {
            // Held from before the insert: one cut short is undone too.
            let held = reservation.insert(AliasReservation {
                storage: self.storage.clone(),
                alias: alias.clone(),
                room_id: room_id.to_string(),
                held: true,
            });
            if !self
                .storage
                .insert_alias(alias, room_id.as_str(), req.creator.as_str())
                .await?
            {
                held.held = false;
                return Err(alias_taken());
            }
        }
        Ok(reservation)
    }

    /// Queues the create event of a new room with a fresh head, and waits
    /// for it to be written.
    async fn write_create_event(
        &self,
        pdu: crate::model::pdu::Pdu,
        req: &CreateRoom,
    ) -> Result<()> {
        let room_id = pdu.room_id.clone();
        let mut head = RoomHead {
            version: req.version.clone(),
            extremities: vec![],
            depth: 0,
            state_group: 0,
            chain_length: 0,
            state: Arc::new(StateMap::new()),
            state_changed_at: 0,
            failed: Default::default(),
            queued_upto: 0,
            recent_txns: Default::default(),
        };
        let lock = self.room_lock(&room_id);
        let written = {
            let mut guard = lock.lock().await;
            let queued = self.enqueue(
                pdu,
                &mut head,
                None,
                Some((req.version.as_str(), req.creator.as_str())),
            )?;
            *guard = Some(head);
            queued
        };
        self.finish(written.0, written.1).await?;
        Ok(())
    }

    /// Everything after the create event: join, power levels, alias,
    /// preset rules, initial state, name, topic, invites.
    async fn fill_new_room(&self, req: &CreateRoom, room_id: &RoomId) -> Result<()> {
        let rules = req
            .version
            .rules()
            .ok_or_else(|| MatrixError::internal("no rules for version"))?;
        let state_event = |kind: &str, state_key: &str, content: Value| NewEvent {
            room_id,
            sender: &req.creator,
            kind: TimelineEventType::from(kind),
            state_key: Some(state_key.to_owned()),
            content,
            txn: None,
            redacts: None,
            origin_server_ts: None,
        };

        // 2. The creator joins.
        let mut join = req.creator_member_content.clone();
        join["membership"] = json!("join");
        self.append(state_event("m.room.member", req.creator.as_str(), join))
            .await?;

        // 3. Power levels.
        let pl = power_levels(req, rules.authorization.explicitly_privilege_room_creators);
        self.append(state_event("m.room.power_levels", "", pl))
            .await?;

        // 4. Alias, then the preset's rules.
        if let Some(alias) = &req.canonical_alias {
            self.append(state_event(
                "m.room.canonical_alias",
                "",
                json!({ "alias": alias }),
            ))
            .await?;
        }
        for (ty, content) in preset_rules(req) {
            self.append(state_event(ty, "", content)).await?;
        }

        // 5. Initial state, name, topic.
        for e in &req.initial_state {
            self.append(state_event(&e.event_type, &e.state_key, e.content.clone()))
                .await?;
        }
        if let Some(name) = &req.name {
            self.append(state_event("m.room.name", "", json!({ "name": name })))
                .await?;
        }
        if let Some(topic) = &req.topic {
            self.append(state_event("m.room.topic", "", json!({ "topic": topic })))
                .await?;
        }

        // 6. Invites.
        for invitee in &req.invite {
            let mut content = json!({ "membership": "invite" });
            if req.is_direct {
                content["is_direct"] = json!(true);
            }
            self.append(state_event("m.room.member", invitee.as_str(), content))
                .await?;
        }
        Ok(())
    }
}

/// The new room's power levels: the defaults (the creator at 100, and the
/// invitees of a trusted private chat, unless the room version privileges
/// creators by itself), with the request's override on top.
fn power_levels(req: &CreateRoom, creators_privileged: bool) -> Value {
    let mut users = Map::new();
    if !creators_privileged {
        users.insert(req.creator.to_string(), json!(100));
        if req.preset == Preset::TrustedPrivateChat {
            for u in &req.invite {
                users.insert(u.to_string(), json!(100));
            }
        }
    }
    let mut pl = json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": if req.preset == Preset::PublicChat { 50 } else { 0 },
        "notifications": { "room": 50 }
    });
    if let (Some(over), Value::Object(map)) = (&req.power_level_override, &mut pl) {
        for (k, v) in over {
            map.insert(k.clone(), v.clone());
        }
    }
    pl
}

/// The preset's join rules, history visibility and guest access, in that
/// order, each unless the initial state sets it. A public room gets no
/// guest access event (as Synapse: its absence means `forbidden`, and
/// sytest's lazy-loading tests expect none in a public room's state).
fn preset_rules(req: &CreateRoom) -> Vec<(&'static str, Value)> {
    let (join_rule, guest_access) = match req.preset {
        Preset::PublicChat => ("public", None),
        _ => ("invite", Some("can_join")),
    };
    let overridden = |ty: &str| {
        req.initial_state
            .iter()
            .any(|e| e.event_type == ty && e.state_key.is_empty())
    };
    [
        ("m.room.join_rules", json!({ "join_rule": join_rule })),
        (
            "m.room.history_visibility",
            json!({ "history_visibility": "shared" }),
        ),
        (
            "m.room.guest_access",
            json!({ "guest_access": guest_access }),
        ),
    ]
    .into_iter()
    .filter(|(ty, _)| !overridden(ty))
    .filter(|(ty, _)| guest_access.is_some() || *ty != "m.room.guest_access")
    .collect()
}

/// An alias reserved for a room whose create event is not written yet:
/// dropped while `held`, it deletes the reservation (if it still names
/// the room).
struct AliasReservation {
    storage: crate::storage::Storage,
    alias: String,
    room_id: String,
    held: bool,
}

impl Drop for AliasReservation {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (storage, alias, room_id) = (
            self.storage.clone(),
            std::mem::take(&mut self.alias),
            std::mem::take(&mut self.room_id),
        );
        runtime.spawn(async move {
            if let Err(e) = storage.delete_alias_of_room(&alias, &room_id).await {
                tracing::warn!(%alias, %room_id, error = %e, "could not release the alias of a room not created");
            }
        });
    }
}

fn alias_taken() -> MatrixError {
    MatrixError::new(
        http::StatusCode::BAD_REQUEST,
        ruma::api::error::ErrorKind::RoomInUse,
        "Room alias already taken",
    )
}

/// The `origin_server_ts` of a new create event: the clock, but always at
/// least one millisecond past the previous create event made by this
/// process. From room version 12 the room id is the create event's
/// reference hash, and the timestamp is the create event's only entropy:
/// two creations by one user with the same options in one millisecond
/// would make the same event and so the same room (MSC4291 lets servers
/// add entropy; Synapse perturbs the timestamp on a collision). A
/// timestamp a few milliseconds ahead during a burst is well within what
/// the spec allows (it is the sending server's clock); a field in
/// `content` would be shown to every client and kept by redaction.
fn create_event_ts(now: MilliSecondsSinceUnixEpoch) -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = u64::from(now.get());
    let next = |last: u64| now.max(last + 1);
    match LAST.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
        Some(next(last))
    }) {
        Ok(last) | Err(last) => next(last),
    }
}
