//! Room aliases (`room_aliases`), the public room directory (the `is_public`
//! flag of `rooms`) and the user directory (`profiles` joined with room
//! memberships and the rooms' directory flags). Local only until federation.

use ruma::{OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId};

use crate::error::{MatrixError, Result};
use crate::model::accounts::Requester;
use crate::services::Services;

/// One user the user directory found.
pub struct DirectoryUser {
    pub user_id: OwnedUserId,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
}

/// A user directory search: at most `limit` users, and whether more matched.
pub struct UserSearch {
    pub results: Vec<DirectoryUser>,
    pub limited: bool,
}

/// Creates a local alias for a known room; 409 when it exists.
pub async fn create_alias(
    s: &Services,
    creator: &Requester,
    alias: &RoomAliasId,
    room_id: &RoomId,
) -> Result<()> {
    if alias.server_name() != s.server_name {
        return Err(MatrixError::invalid_param(
            "Aliases of other servers cannot be created here",
        ));
    }
    s.appservices
        .check_alias_use(alias.as_str(), creator.app_service.as_deref())?;
    s.rooms.known_version(room_id).await?;
    if !s
        .storage
        .insert_alias(alias.as_str(), room_id.as_str(), &creator.user_id)
        .await?
    {
        return Err(MatrixError::unknown(
            http::StatusCode::CONFLICT,
            "Room alias already exists",
        ));
    }
    // An alias can make the room one an application service wants.
    s.as_delivery.forget_room(room_id);
    Ok(())
}

/// The room an alias points at; 404 when it points nowhere.
pub async fn resolve_alias(s: &Services, alias: &str) -> Result<OwnedRoomId> {
    if let Some(room) = s.storage.alias_room(alias).await? {
        return Ok(room);
    }
    // An unknown alias an application service's namespace holds: the
    // service may create it now (as Synapse).
    if s.appservices.query_alias(alias).await
        && let Some(room) = s.storage.alias_room(alias).await?
    {
        return Ok(room);
    }
    Err(MatrixError::not_found("Room alias not found"))
}

/// Whether `alias` is one of this server's and points at `room_id` (what an
/// `m.room.canonical_alias` event may name).
pub async fn is_local_alias_of(
    s: &Services,
    alias: &RoomAliasId,
    room_id: &RoomId,
) -> Result<bool> {
    Ok(alias.server_name() == s.server_name
        && s.storage.alias_room(alias.as_str()).await?.as_deref() == Some(room_id))
}

/// Deletes an alias. An application service may delete any alias of its
/// alias namespaces (and no other: 400 `M_EXCLUSIVE`), as Synapse; anyone
/// else the aliases they created, or any if they may change the room's
/// canonical alias or are a server admin (else 403), but none that an
/// exclusive alias namespace holds (400 `M_EXCLUSIVE`).
pub async fn delete_alias(s: &Services, r: &Requester, alias: &RoomAliasId) -> Result<()> {
    let alias = alias.as_str();
    if r.app_service.is_some() {
        s.appservices
            .check_alias_use(alias, r.app_service.as_deref())?;
    }
    // No application service is asked for an alias being deleted.
    let room_id = s
        .storage
        .alias_room(alias)
        .await?
        .ok_or_else(|| MatrixError::not_found("Room alias not found"))?;
    if r.app_service.is_none() {
        let creator = s.storage.alias_creator(alias).await?;
        // The admin check reads the account: last.
        let allowed = creator.is_some_and(|c| c.as_str() == r.user_id.as_str())
            || s.rooms
                .can_send_state(&room_id, &r.user_id(), "m.room.canonical_alias")
                .await?
            || s.sessions.admin_now(r).await?;
        if !allowed {
            return Err(MatrixError::forbidden("You may not delete this alias"));
        }
        s.appservices.check_alias_use(alias, None)?;
    }
    s.storage.delete_alias(alias).await?;
    s.as_delivery.forget_room(&room_id);
    drop_from_canonical_alias(s, r, &room_id, alias).await;
    Ok(())
}

/// Removes a deleted alias from the room's `m.room.canonical_alias` (its
/// `alias` and `alt_aliases`), sent by whoever deleted it, as Synapse does,
/// so the room no longer advertises an alias that resolves nowhere. The
/// alias is deleted either way: a deleter who may not change the canonical
/// alias (its creator) leaves the event as it was, and that is logged.
async fn drop_from_canonical_alias(s: &Services, r: &Requester, room_id: &RoomId, alias: &str) {
    let current = match s
        .rooms
        .current_state_pdu(room_id, "m.room.canonical_alias", "")
        .await
    {
        Ok(Some(pdu)) => pdu.content_value(),
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(%room_id, error = %e.message(), "could not read the canonical alias");
            return;
        }
    };
    let Some(mut content) = current.as_object().cloned() else {
        return;
    };
    let mut changed = false;
    if content.get("alias").and_then(|a| a.as_str()) == Some(alias) {
        content.remove("alias");
        changed = true;
    }
    if let Some(serde_json::Value::Array(alt)) = content.get_mut("alt_aliases") {
        let before = alt.len();
        alt.retain(|a| a.as_str() != Some(alias));
        changed |= alt.len() != before;
    }
    if !changed {
        return;
    }
    let sender = r.user_id();
    if let Err(e) = s
        .rooms
        .append(crate::services::rooms::NewEvent {
            room_id,
            sender: &sender,
            kind: ruma::events::TimelineEventType::RoomCanonicalAlias,
            state_key: Some(String::new()),
            content: serde_json::Value::Object(content),
            txn: None,
            redacts: None,
            origin_server_ts: None,
        })
        .await
    {
        tracing::info!(%room_id, alias, error = %e.message(), "the canonical alias keeps a deleted alias");
    }
}

/// The room's local aliases. Members (or anyone, for a world-readable room)
/// may list them; server admins may for any room, as on Synapse (admin tools
/// rely on it).
pub async fn room_aliases(
    s: &Services,
    r: &Requester,
    room_id: &RoomId,
) -> Result<Vec<OwnedRoomAliasId>> {
    // The admin check reads the account: only when the first one refuses.
    if let Err(refused) = s.rooms.readable_state(room_id, &r.user_id()).await {
        if !s.sessions.admin_now(r).await? {
            return Err(refused);
        }
        s.rooms.known_version(room_id).await?;
    }
    Ok(s.storage.room_aliases(room_id.as_str()).await?)
}

/// Whether the room is listed in the public directory; 404 for an unknown room.
pub async fn is_public(s: &Services, room_id: &RoomId) -> Result<bool> {
    Ok(crate::services::room_admin::room(s, room_id)
        .await?
        .is_public)
}

/// Lists or unlists a room, for whoever may change its canonical alias or
/// a server admin.
pub async fn set_visibility(
    s: &Services,
    r: &Requester,
    room_id: &RoomId,
    public: bool,
) -> Result<()> {
    s.rooms.known_version(room_id).await?;
    if !s
        .rooms
        .can_send_state(room_id, &r.user_id(), "m.room.canonical_alias")
        .await?
        && !s.sessions.admin_now(r).await?
    {
        return Err(MatrixError::forbidden(
            "You may not change this room's visibility",
        ));
    }
    publish(s, room_id, public).await
}

/// Lists or unlists a room, no questions asked (its creator at creation).
pub async fn publish(s: &Services, room_id: &RoomId, public: bool) -> Result<()> {
    s.storage.set_room_public(room_id.as_str(), public).await?;
    Ok(())
}

/// Which room list `/publicRooms` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomList {
    /// The main directory (`/directory/list/room`): what is asked when no
    /// network is named.
    Main,
    /// The main directory and every application service's network lists
    /// (`include_all_networks`).
    All,
    /// One application service's list of one network
    /// (`third_party_instance_id`, `{appservice id}|{network id}`).
    Network {
        appservice_id: String,
        network_id: String,
    },
}

impl RoomList {
    /// `third_party_instance_id` as Synapse reads it: the application
    /// service's id and the network id, split at the one `|`; 400
    /// `M_INVALID_PARAM` for anything else.
    pub fn third_party(instance_id: &str) -> Result<Self> {
        let mut parts = instance_id.split('|');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(appservice_id), Some(network_id), None) => Ok(Self::Network {
                appservice_id: appservice_id.to_owned(),
                network_id: network_id.to_owned(),
            }),
            _ => Err(MatrixError::invalid_param(format!(
                "Invalid third_party_instance_id {instance_id:?}: expected `appservice|network`"
            ))),
        }
    }
}

/// The rooms of a published room list.
pub async fn public_rooms(s: &Services, list: &RoomList) -> Result<Vec<OwnedRoomId>> {
    Ok(match list {
        RoomList::Main => s.storage.public_rooms().await?,
        RoomList::All => s.storage.rooms_listed_anywhere().await?,
        RoomList::Network {
            appservice_id,
            network_id,
        } => {
            s.storage
                .appservice_listed_rooms(appservice_id, network_id)
                .await?
        }
    })
}

/// Publishes a known room in (or removes it from) the list of network
/// `network_id` of the application service whose token made the request
/// (`PUT`/`DELETE /directory/list/appservice/{networkId}/{roomId}`). As
/// Synapse: 403 `M_FORBIDDEN` for anyone but a service, and no rule on the
/// room's state or the network id (the service keeps its own networks).
/// Unlike Synapse, a room the server does not know is 404 `M_NOT_FOUND`
/// rather than a row naming nothing.
pub async fn set_appservice_visibility(
    s: &Services,
    r: &Requester,
    network_id: &str,
    room_id: &RoomId,
    public: bool,
) -> Result<()> {
    let Some(appservice_id) = r.app_service.as_deref() else {
        return Err(MatrixError::forbidden(
            "Only application services can edit the appservice published room list",
        ));
    };
    s.rooms.known_version(room_id).await?;
    s.storage
        .set_appservice_listed(appservice_id, network_id, room_id.as_str(), public)
        .await?;
    Ok(())
}

/// Local users matching `term` who share a joined room with `searcher`, or
/// are joined to a room whose join rule is public or whose history is
/// world-readable (Synapse's rule; the searcher finds themselves only that
/// way). Guests and deactivated users never. As Synapse matches: each word
/// of `term` begins a word of the user's localpart or display name, case
/// aside (`model::user_words`); a term without words finds no one.
pub async fn search_users(
    s: &Services,
    searcher: &Requester,
    term: &str,
    limit: usize,
) -> Result<UserSearch> {
    let words = crate::model::user_words::term_words(term);
    let mut rows = s
        .storage
        .search_user_directory(&searcher.user_id, &words, limit as i64 + 1)
        .await?;
    let limited = rows.len() > limit;
    rows.truncate(limit);
    Ok(UserSearch {
        results: rows
            .into_iter()
            .map(|u| DirectoryUser {
                user_id: u.user_id,
                display_name: u.displayname,
                avatar_url: u.avatar_url,
            })
            .collect(),
        limited,
    })
}
