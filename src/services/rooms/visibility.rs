//! Who may see what: history visibility for events, and which state a user
//! may read. Applied on every read path (`/messages`, `/context`, `/event`,
//! `/state`, `/members`, `/sync`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use ruma::{EventId, RoomId, UserId};
use serde_json::Value;

use super::Rooms;
use crate::error::{MatrixError, Result};
use crate::model::pdu::Pdu;
use crate::model::state::StateMap;

impl Rooms {
    /// The content value of a state event in `state`, if present.
    pub async fn state_content(
        &self,
        state: &StateMap,
        ty: &str,
        sk: &str,
    ) -> Result<Option<Value>> {
        Ok(self
            .state_event(state, ty, sk)
            .await?
            .map(|p| p.content_value()))
    }

    /// The state event `(ty, sk)` in `state`, if present.
    async fn state_event(&self, state: &StateMap, ty: &str, sk: &str) -> Result<Option<Arc<Pdu>>> {
        match state.get(&(ty.to_owned(), sk.to_owned())) {
            Some(id) => self.pdu_shared(id.as_str()).await,
            None => Ok(None),
        }
    }

    pub(super) async fn membership_in(
        &self,
        state: &StateMap,
        user: &UserId,
    ) -> Result<Option<String>> {
        Ok(self
            .state_event(state, "m.room.member", user.as_str())
            .await?
            .and_then(|p| p.membership_str().map(Cow::into_owned)))
    }

    async fn history_visibility(&self, state: &StateMap) -> Result<String> {
        Ok(self
            .state_event(state, "m.room.history_visibility", "")
            .await?
            .and_then(|p| p.history_visibility_str().map(Cow::into_owned))
            .unwrap_or_else(|| "shared".to_owned()))
    }

    /// The state group after an event.
    async fn state_group_of(&self, pdu: &Pdu) -> Result<i64> {
        let group = match pdu.state_group {
            Some(g) => Some(g),
            None => self
                .storage
                .event(pdu.event_id.as_str())
                .await?
                .and_then(|r| r.state_group),
        };
        Ok(group.unwrap_or(0))
    }

    /// The state after an event.
    pub async fn state_at(&self, pdu: &Pdu) -> Result<Arc<StateMap>> {
        let group = self.state_group_of(pdu).await?;
        self.state_after(group).await
    }

    /// The state group just before an event (after its first prev event);
    /// 0, the empty state, for the create event. `known` gives the groups of
    /// events already at hand (the rest of a timeline), saving a lookup.
    async fn state_group_before(&self, pdu: &Pdu, known: &HashMap<&EventId, i64>) -> Result<i64> {
        let Some(prev) = pdu.prev_events.first() else {
            return Ok(0);
        };
        if let Some(g) = known.get(&**prev) {
            return Ok(*g);
        }
        match self.pdu_shared(prev.as_str()).await? {
            Some(p) => self.state_group_of(&p).await,
            None => self.state_group_before_purged(pdu).await,
        }
    }

    /// [`Rooms::state_group_before`] when the event's prev event is gone
    /// (a history purge took it): a non-state event's state before is its
    /// state after; a state event's, the group its own was made from (its
    /// own when that is a full snapshot).
    async fn state_group_before_purged(&self, pdu: &Pdu) -> Result<i64> {
        let own = self.state_group_of(pdu).await?;
        if pdu.state_key.is_none() || own == 0 {
            return Ok(own);
        }
        Ok(self
            .storage
            .state_group(own)
            .await?
            .and_then(|g| g.prev_group)
            .unwrap_or(own))
    }

    /// The state just before an event (after its first prev event).
    pub async fn state_before(&self, pdu: &Pdu) -> Result<Arc<StateMap>> {
        let group = self.state_group_before(pdu, &HashMap::new()).await?;
        self.state_after(group).await
    }

    /// Whether `user` may see `pdu`, by the room's history visibility at the
    /// event and the user's membership then and now.
    pub async fn can_see(
        &self,
        user: &UserId,
        pdu: &Pdu,
        current_membership: Option<&str>,
    ) -> Result<bool> {
        self.can_see_memo(
            user,
            pdu,
            current_membership,
            &HashMap::new(),
            &mut HashMap::new(),
        )
        .await
    }

    /// [`Rooms::can_see`] for one event of a batch: `known` has the state
    /// groups of the batch's events, `decided` what `allowed_by` said for
    /// each state group so far (the events of a timeline mostly share one).
    async fn can_see_memo(
        &self,
        user: &UserId,
        pdu: &Pdu,
        current_membership: Option<&str>,
        known: &HashMap<&EventId, i64>,
        decided: &mut HashMap<i64, bool>,
    ) -> Result<bool> {
        // Everyone sees their own membership changes.
        if pdu.state_key.as_deref() == Some(user.as_str()) {
            return Ok(true);
        }
        // The visibility in force when the event was sent: the state before it.
        let group = self.state_group_before(pdu, known).await?;
        let allowed = match decided.get(&group) {
            Some(a) => *a,
            None => {
                let before = self.state_after(group).await?;
                let a = self.allowed_by(&before, user, current_membership).await?;
                decided.insert(group, a);
                a
            }
        };
        if allowed {
            return Ok(true);
        }
        // A history visibility change is visible if either the old or the
        // new setting allows it (spec, "History visibility").
        if pdu.kind == ruma::events::TimelineEventType::RoomHistoryVisibility
            && pdu.state_key.as_deref() == Some("")
        {
            let after = self.state_at(pdu).await?;
            return self.allowed_by(&after, user, current_membership).await;
        }
        Ok(false)
    }

    async fn allowed_by(
        &self,
        state: &StateMap,
        user: &UserId,
        current_membership: Option<&str>,
    ) -> Result<bool> {
        let visibility = self.history_visibility(state).await?;
        if visibility == "world_readable" {
            return Ok(true);
        }
        let then = self.membership_in(state, user).await?;
        Ok(match visibility.as_str() {
            "joined" => then.as_deref() == Some("join"),
            "invited" => matches!(then.as_deref(), Some("join" | "invite")),
            // shared: members see everything while they are joined, and
            // what happened while they were there after they leave.
            _ => current_membership == Some("join") || matches!(then.as_deref(), Some("join")),
        })
    }

    /// Keeps the events `user` may see, in order.
    pub async fn filter_visible(
        &self,
        user: &UserId,
        room_id: &RoomId,
        pdus: Vec<Pdu>,
    ) -> Result<Vec<Pdu>> {
        let current = self.membership(room_id, user).await?;
        self.filter_visible_as(user, current.as_deref(), pdus).await
    }

    /// [`Rooms::filter_visible`] when the caller knows the user's current
    /// membership of the room.
    pub async fn filter_visible_as<P: std::borrow::Borrow<Pdu>>(
        &self,
        user: &UserId,
        current: Option<&str>,
        pdus: Vec<P>,
    ) -> Result<Vec<P>> {
        let known: HashMap<&EventId, i64> = pdus
            .iter()
            .map(|p| p.borrow())
            .filter_map(|p| Some((p.event_id.as_ref(), p.state_group?)))
            .collect();
        let mut decided = HashMap::new();
        let mut keep = Vec::with_capacity(pdus.len());
        for p in &pdus {
            keep.push(
                self.can_see_memo(user, p.borrow(), current, &known, &mut decided)
                    .await?,
            );
        }
        Ok(pdus
            .into_iter()
            .zip(keep)
            .filter_map(|(p, k)| k.then_some(p))
            .collect())
    }

    /// The state `user` may read: the current state while joined (or for a
    /// world-readable room), the state when they left otherwise. Not a
    /// member and never was: 403 `M_FORBIDDEN`.
    pub async fn readable_state(&self, room_id: &RoomId, user: &UserId) -> Result<Arc<StateMap>> {
        self.known_version(room_id).await?;
        let current = self.current_state(room_id).await?;
        let member = self
            .current_state_pdu(room_id, "m.room.member", user.as_str())
            .await?;
        match member.as_ref().and_then(|m| m.membership()).as_deref() {
            Some("join") => return Ok(current),
            Some("leave" | "ban") => {
                if let Some(m) = &member {
                    return self.state_at(m).await;
                }
            }
            _ => {}
        }
        if self.history_visibility(&current).await? == "world_readable" {
            return Ok(current);
        }
        Err(MatrixError::forbidden("You are not a member of this room"))
    }
}
