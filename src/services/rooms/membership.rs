//! Membership changes: join, knock, invite, leave, kick, ban, unban. Each is
//! one `m.room.member` event; the authorization rules decide whether it is
//! allowed. A join of a restricted room through its allow list names a local
//! member who may invite (`join_authorised_via_users_server`).
//! A change that changes nothing writes no event ([`Rooms::unchanged_member`],
//! which applies to every state event).

use ruma::events::TimelineEventType;
use ruma::events::room::join_rules::{JoinRule, RoomJoinRulesEventContent};
use ruma::room::AllowRule;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
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
            origin_server_ts: None,
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
        if let Some(authoriser) = self.join_authoriser(room_id, user).await? {
            profile["join_authorised_via_users_server"] = json!(authoriser);
        }
        self.member_event(room_id, user, user, profile, reason)
            .await
    }

    /// Knocks on a room (`knock` or `knock_restricted` join rule, room
    /// versions 7 and later; the authorization rules refuse the rest with
    /// 403). `profile` is the knocker's `{displayname, avatar_url}`.
    pub async fn knock(
        &self,
        room_id: &RoomId,
        user: &UserId,
        mut profile: Value,
        reason: Option<&str>,
    ) -> Result<Pdu> {
        match self.membership(room_id, user).await?.as_deref() {
            Some("join") => return Err(MatrixError::forbidden("You are already in the room")),
            Some("invite") => {
                return Err(MatrixError::forbidden(
                    "You are already invited to the room",
                ));
            }
            Some("ban") => return Err(MatrixError::forbidden("You are banned from the room")),
            _ => {}
        }
        profile["membership"] = json!("knock");
        self.member_event(room_id, user, user, profile, reason)
            .await
    }

    /// The rooms whose members may join this one without an invite: the
    /// allow list of a `restricted` or `knock_restricted` join rule, where
    /// the room's version has that rule; `None` for any other join rule.
    pub async fn allowed_rooms(
        &self,
        room_id: &RoomId,
        state: &StateMap,
    ) -> Result<Option<Vec<OwnedRoomId>>> {
        let Some(content) = self.state_content(state, "m.room.join_rules", "").await? else {
            return Ok(None);
        };
        let Ok(content) = serde_json::from_value::<RoomJoinRulesEventContent>(content) else {
            return Ok(None);
        };
        let rules = self
            .known_version(room_id)
            .await?
            .rules()
            .ok_or_else(|| MatrixError::internal("unknown room version rules"))?;
        let allow = match content.join_rule {
            JoinRule::Restricted(r) if rules.authorization.restricted_join_rule => r.allow,
            JoinRule::KnockRestricted(r) if rules.authorization.knock_restricted_join_rule => {
                r.allow
            }
            _ => return Ok(None),
        };
        Ok(Some(
            allow
                .into_iter()
                .filter_map(|rule| match rule {
                    AllowRule::RoomMembership(m) => Some(m.room_id),
                    _ => None,
                })
                .collect(),
        ))
    }

    /// Whether the user is joined to one of `rooms`.
    pub async fn joined_any(&self, user: &UserId, rooms: &[OwnedRoomId]) -> Result<bool> {
        for room in rooms {
            if self.version(room).await?.is_some()
                && self.membership(room, user).await?.as_deref() == Some("join")
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Who vouches for a join through a restricted room's allow list: the
    /// local joined member with the most power among those who may invite.
    /// `None` when no voucher is needed (another join rule, or the user is
    /// invited or joined already). A user in none of the allowed rooms is
    /// 403 `M_FORBIDDEN`; no member who may invite, 400
    /// `M_UNABLE_TO_GRANT_JOIN` (as Synapse).
    async fn join_authoriser(
        &self,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<Option<OwnedUserId>> {
        let state = self.current_state(room_id).await?;
        let Some(allowed) = self.allowed_rooms(room_id, &state).await? else {
            return Ok(None);
        };
        if matches!(
            self.membership_in(&state, user).await?.as_deref(),
            Some("join" | "invite")
        ) {
            return Ok(None);
        }
        if !self.joined_any(user, &allowed).await? {
            return Err(MatrixError::forbidden(
                "You do not belong to any of the rooms or spaces required to join this room",
            ));
        }
        let levels = self.power_levels(room_id, &state).await?;
        let mut best: Option<OwnedUserId> = None;
        for ((ty, key), id) in state.iter() {
            if ty != "m.room.member" {
                continue;
            }
            let Ok(member) = UserId::parse(key.as_str()) else {
                continue;
            };
            if member.server_name() != self.server_name
                || !levels.user_can_invite(&member)
                || self
                    .pdu_shared(id.as_str())
                    .await?
                    .and_then(|p| p.membership())
                    .as_deref()
                    != Some("join")
            {
                continue;
            }
            if best
                .as_ref()
                .is_none_or(|b| levels.for_user(&member) > levels.for_user(b))
            {
                best = Some(member);
            }
        }
        best.map(Some).ok_or_else(|| {
            MatrixError::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::UnableToGrantJoin,
                "No member of the room is able to vouch for this join",
            )
        })
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
