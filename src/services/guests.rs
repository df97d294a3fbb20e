//! The rules for guest accounts (account type 2) in rooms, in one place
//! (spec "Guest Access"; Synapse where the spec leaves room). Which
//! endpoints a guest may call at all is the handlers' extractor choice
//! (`GuestAuth` or `Auth`); what those endpoints then allow a guest is here:
//!
//! - a guest joins only rooms whose `m.room.guest_access` is `can_join`
//!   (403 `M_FORBIDDEN` otherwise, invited or not); its member event says
//!   `"kind": "guest"`, as Synapse's does;
//! - through the member state PUT a guest may only join or leave itself;
//! - when a room's `m.room.guest_access` stops being `can_join`, every
//!   guest account joined there leaves (the guest's own leave event, so no
//!   power level is needed; an invited guest keeps its invite, which it
//!   cannot accept, as in Synapse);
//! - a guest account becomes a full one, keeping its user id, when it
//!   registers with its own access token and localpart.

use ruma::{OwnedUserId, RoomId, UserId};
use serde_json::{Map, Value, json};

use crate::error::{MatrixError, Result};
use crate::model::accounts::{AccountType, Requester};
use crate::services::Services;

const GUEST_ACCESS: &str = "m.room.guest_access";

fn guest_access_refused() -> MatrixError {
    MatrixError::forbidden("Guest access not allowed")
}

/// Whether the room's current `m.room.guest_access` is `can_join`.
pub async fn room_admits_guests(s: &Services, room_id: &RoomId) -> Result<bool> {
    Ok(s.rooms
        .current_state_pdu(room_id, GUEST_ACCESS, "")
        .await?
        .is_some_and(|p| p.content_value().get("guest_access") == Some(&json!("can_join"))))
}

/// Before `requester` joins `room_id` with member `content`: a guest needs
/// a room that admits guests (403 `M_FORBIDDEN`), and its member event is
/// marked `"kind": "guest"`. Anyone else passes unchanged.
pub async fn check_join(
    s: &Services,
    requester: &Requester,
    room_id: &RoomId,
    content: &mut Map<String, Value>,
) -> Result<()> {
    if !requester.is_guest() {
        return Ok(());
    }
    if !room_admits_guests(s, room_id).await? {
        return Err(guest_access_refused());
    }
    mark(content);
    Ok(())
}

/// `"kind": "guest"` in a guest's member event content, as Synapse writes.
fn mark(content: &mut Map<String, Value>) {
    content.insert("kind".to_owned(), json!("guest"));
}

/// A member event `user` is given anew (a profile change copied into its
/// rooms) keeps saying the user is a guest.
pub async fn mark_guest_member(
    s: &Services,
    user: &UserId,
    content: &mut Map<String, Value>,
) -> Result<()> {
    if s.accounts
        .get(user)
        .await?
        .is_some_and(|a| a.account_type == AccountType::Guest)
    {
        mark(content);
    }
    Ok(())
}

/// A member event a guest sends through the state PUT: only its own join
/// (under [`check_join`]'s rule) or leave; anything else is 403
/// `M_GUEST_ACCESS_FORBIDDEN`, as on the invite, kick and ban endpoints.
pub async fn check_member_state(
    s: &Services,
    requester: &Requester,
    room_id: &RoomId,
    target: &str,
    content: &mut Value,
) -> Result<()> {
    if !requester.is_guest() {
        return Ok(());
    }
    let own = target == requester.user_id;
    match (own, content.get("membership").and_then(Value::as_str)) {
        (true, Some("leave")) => Ok(()),
        (true, Some("join")) => match content.as_object_mut() {
            Some(map) => check_join(s, requester, room_id, map).await,
            None => Err(MatrixError::bad_json("Event content must be an object")),
        },
        _ => Err(MatrixError::guest_forbidden()),
    }
}

/// After a state event was sent in `room_id`: if it set
/// `m.room.guest_access` to anything but `can_join`, the guest accounts
/// joined there leave. Each leave is the guest's own; one that
/// fails is logged and the others go on. Returns who left.
pub async fn after_state_event(
    s: &Services,
    room_id: &RoomId,
    event_type: &str,
    content: &Value,
) -> Result<Vec<OwnedUserId>> {
    if event_type != GUEST_ACCESS || content.get("guest_access") == Some(&json!("can_join")) {
        return Ok(Vec::new());
    }
    let mut left = Vec::new();
    for user in s.storage.joined_guests(room_id.as_str()).await? {
        match s.rooms.leave(room_id, &user, &user, None).await {
            Ok(_) => left.push(user),
            Err(e) => {
                tracing::warn!(%room_id, %user, error = %e.message(), "could not remove a guest after guest access was revoked");
            }
        }
    }
    if !left.is_empty() {
        tracing::info!(%room_id, guests = left.len(), "guest access revoked: guests removed");
    }
    Ok(left)
}

/// The guest account a registration upgrades (spec: `guest_access_token`
/// and `username` set to the guest's own localpart): `None` when the
/// request names no guest token. A token that is not a live guest's, or a
/// guest whose localpart is not `localpart`, is 403 `M_FORBIDDEN` (as
/// Synapse: a guest cannot take another user's name).
pub async fn upgrade_target(
    s: &Services,
    guest_access_token: Option<&str>,
    localpart: Option<&str>,
) -> Result<Option<OwnedUserId>> {
    let Some(token) = guest_access_token else {
        return Ok(None);
    };
    let refuse = || {
        MatrixError::forbidden(
            "Cannot register taken user ID without valid guest credentials for that user",
        )
    };
    let Some(localpart) = localpart else {
        return Err(MatrixError::missing_param(
            "An upgrade of a guest account needs the guest's localpart as username",
        ));
    };
    let guest = s.sessions.guest_of_token(token).await?.ok_or_else(refuse)?;
    if guest.localpart() != localpart {
        return Err(refuse());
    }
    Ok(Some(guest))
}
