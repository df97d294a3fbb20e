//! Membership changes: join, invite, leave, kick, ban, unban. Each is one
//! `m.room.member` event; the authorization rules decide whether it is allowed.

use ruma::events::TimelineEventType;
use ruma::{RoomId, UserId};
use serde_json::{Value, json};

use super::{NewEvent, Pdu, Rooms};
use crate::error::Result;

impl Rooms {
    async fn member_event(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        mut content: Value,
        reason: Option<&str>,
    ) -> Result<Pdu> {
        if let Some(r) = reason.filter(|r| !r.is_empty()) {
            content["reason"] = json!(r);
        }
        self.append(NewEvent {
            room_id,
            sender,
            kind: TimelineEventType::RoomMember,
            state_key: Some(target.to_string()),
            content,
            txn: None,
            redacts: None,
        })
        .await
    }

    /// `profile` is the joiner's `{displayname, avatar_url}` (may be empty).
    pub async fn join(
        &self,
        room_id: &RoomId,
        user: &UserId,
        mut profile: Value,
        reason: Option<&str>,
    ) -> Result<Pdu> {
        // Joining again while joined just refreshes the member event.
        profile["membership"] = json!("join");
        self.member_event(room_id, user, user, profile, reason)
            .await
    }

    pub async fn invite(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        target_profile: Value,
        is_direct: bool,
        reason: Option<&str>,
    ) -> Result<Pdu> {
        let mut content = target_profile;
        content["membership"] = json!("invite");
        if is_direct {
            content["is_direct"] = json!(true);
        }
        self.member_event(room_id, sender, target, content, reason)
            .await
    }

    /// Leave (sender == target), reject an invite, or kick (sender != target).
    pub async fn leave(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        reason: Option<&str>,
    ) -> Result<Pdu> {
        self.member_event(
            room_id,
            sender,
            target,
            json!({ "membership": "leave" }),
            reason,
        )
        .await
    }

    pub async fn ban(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        reason: Option<&str>,
    ) -> Result<Pdu> {
        self.member_event(
            room_id,
            sender,
            target,
            json!({ "membership": "ban" }),
            reason,
        )
        .await
    }
}
