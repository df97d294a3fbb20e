//! Membership changes: join, invite, leave, kick, ban, unban. Each is one
//! `m.room.member` event; the authorization rules decide whether it is allowed.
//! A change that changes nothing writes no event ([`Rooms::unchanged_member`],
//! which applies to every state event).

use ruma::events::TimelineEventType;
use ruma::{RoomId, UserId};
use serde_json::{Value, json};

use super::{NewEvent, Rooms};
use crate::error::{MatrixError, Result};
use crate::model::pdu::Pdu;
use crate::model::state::StateMap;

impl Rooms {
    /// The state event in force if `new` (a state event, a member event or
    /// any other) would change nothing: the same sender and the same
    /// content, membership, profile and reason included. Like Synapse, such
    /// a change answers with the event in force and writes nothing (a join
    /// while joined, a leave while left, a repeated invite or ban, the same
    /// state PUT twice: sytest "Setting state twice is idempotent"); a
    /// different display name, avatar or reason, or another sender, is a new
    /// event. `state` is the room head's, under the room's lock.
    pub(super) async fn unchanged_member(
        &self,
        state: &StateMap,
        new: &NewEvent<'_>,
    ) -> Result<Option<Pdu>> {
        if new.redacts.is_some() {
            return Ok(None);
        }
        let Some(key) = new.state_key.as_ref() else {
            return Ok(None);
        };
        let Some(id) = state.get(&(new.kind.to_string(), key.clone())) else {
            return Ok(None);
        };
        let Some(current) = self.pdu_shared(id.as_str()).await? else {
            return Ok(None);
        };
        let unchanged = current.redacted_by.is_none()
            && current.sender == new.sender
            && current.content_value() == new.content;
        Ok(unchanged.then(|| Pdu::clone(&current)))
    }

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
        // Joining again while joined with the same profile writes nothing.
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

    /// Kick (`sender` != `target`): the target must be in the room (joined,
    /// invited or knocking), as Synapse requires. Kicking someone who left
    /// or was never there, or a banned user (whom a leave would unban), is
    /// 403 and writes nothing (sytest 30rooms/15kick.pl, 07ban.pl).
    pub async fn kick(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        reason: Option<&str>,
    ) -> Result<Pdu> {
        let current = self.membership(room_id, target).await?;
        if !matches!(current.as_deref(), Some("join" | "invite" | "knock")) {
            return Err(MatrixError::forbidden("The user is not in the room"));
        }
        self.leave(room_id, sender, target, reason).await
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
