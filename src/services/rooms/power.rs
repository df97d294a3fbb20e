//! A room's power levels as ruma models them (creators included in v12).

use ruma::events::room::power_levels::{
    RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource,
};
use ruma::{OwnedUserId, RoomId, UserId};
use serde_json::Value;

use super::Rooms;
use crate::error::{MatrixError, Result};
use crate::model::state::StateMap;

impl Rooms {
    /// The room's creators: the create event's sender and, since v12, its
    /// `additional_creators`.
    pub async fn creators(&self, state: &StateMap) -> Result<Vec<OwnedUserId>> {
        let mut creators = Vec::new();
        if let Some(id) = state.get(&("m.room.create".to_owned(), String::new()))
            && let Some(p) = self.pdu_shared(id.as_str()).await?
        {
            creators.push(p.sender.clone());
            if let Some(extra) = p
                .content_value()
                .get("additional_creators")
                .and_then(Value::as_array)
            {
                creators.extend(
                    extra
                        .iter()
                        .filter_map(Value::as_str)
                        .filter_map(|u| UserId::parse(u).ok()),
                );
            }
        }
        Ok(creators)
    }

    /// The power levels in `state`.
    pub async fn power_levels(
        &self,
        room_id: &RoomId,
        state: &StateMap,
    ) -> Result<RoomPowerLevels> {
        let version = self.known_version(room_id).await?;
        let rules = version
            .rules()
            .ok_or_else(|| MatrixError::internal("unknown room version rules"))?;
        let source = match self.state_content(state, "m.room.power_levels", "").await? {
            Some(c) => serde_json::from_value::<RoomPowerLevelsEventContent>(c)
                .map(RoomPowerLevelsSource::Original)
                .unwrap_or_default(),
            None => RoomPowerLevelsSource::None,
        };
        Ok(RoomPowerLevels::new(
            source,
            &rules.authorization,
            self.creators(state).await?,
        ))
    }

    /// Whether the user, joined to the room, could send a state event of this type.
    pub async fn can_send_state(&self, room_id: &RoomId, user: &UserId, ty: &str) -> Result<bool> {
        if self.membership(room_id, user).await?.as_deref() != Some("join") {
            return Ok(false);
        }
        let state = self.current_state(room_id).await?;
        Ok(self
            .power_levels(room_id, &state)
            .await?
            .user_can_send_state(user, ty.into()))
    }
}
