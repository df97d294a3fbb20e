//! Server notices: messages from the `_server` user into one notices room per
//! user (tagged `m.server_notice`). The user cannot post there (power -10)
//! and cannot reject the invite; after joining they may leave, and the next
//! notice invites them back into the same room.

use ruma::events::TimelineEventType;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{Map, Value, json};

use crate::error::{MatrixError, Result};
use crate::model::pdu::Pdu;
use crate::services::Services;
use crate::services::accounts::Registration;
use crate::services::rooms::create::Preset;
use crate::services::rooms::{CreateRoom, NewEvent, TxnRef};
use crate::storage::AccountType;

/// A notice to send.
pub struct Notice<'a> {
    pub kind: &'a str,
    pub state_key: Option<&'a str>,
    pub content: Value,
    /// (device id, scope, transaction id) of the admin's request, for idempotent PUTs.
    pub txn: Option<TxnRef<'a>>,
}

pub fn notices_user(s: &Services) -> Result<OwnedUserId> {
    s.accounts.user_id(&s.config.server_notices.local_part)
}

/// Creates the notices account on first use (passwordless) and keeps its
/// profile in line with the config.
pub async fn ensure_notices_user(s: &Services) -> Result<OwnedUserId> {
    let user = notices_user(s)?;
    let cfg = &s.config.server_notices;
    if s.accounts.get(&user).await?.is_none() {
        // The localpart starts with '_', which normal registration refuses.
        let outcome = s
            .accounts
            .register(Registration {
                localpart: Some(&cfg.local_part),
                password: None,
                account_type: AccountType::User,
                displayname: Some(&cfg.display_name),
                user_type: None,
                registration_token: None,
                appservice_id: None,
            })
            .await;
        // Another request may have created it meanwhile; that is fine.
        if let Err(e) = outcome
            && s.accounts.get(&user).await?.is_none()
        {
            return Err(e);
        }
    }
    s.profiles
        .set_displayname(&user, Some(&cfg.display_name))
        .await?;
    s.profiles
        .set_avatar_url(&user, cfg.avatar_url.as_deref())
        .await?;
    Ok(user)
}

/// Whether `room_id` is `user`'s server-notices room.
pub async fn is_notice_room(s: &Services, user: &UserId, room_id: &RoomId) -> Result<bool> {
    Ok(s.storage
        .is_server_notice_room(user.as_str(), room_id.as_str())
        .await?)
}

/// Sends a notice to a local, existing, active user; returns the event.
pub async fn send(s: &Services, target: &UserId, notice: Notice<'_>) -> Result<Pdu> {
    let notices_sender = notices_user(s)?;
    // A retried transaction is the event it made (once written; one still
    // queued is found by `append`).
    if let Some(TxnRef { device, scope, txn }) = notice.txn
        && let Some(existing) = s
            .rooms
            .transaction_event(notices_sender.as_str(), device, scope, txn)
            .await?
        && let Some(pdu) = s.rooms.pdu(existing.as_str()).await?
    {
        return Ok(pdu);
    }
    if !s.accounts.is_local(target) {
        return Err(MatrixError::invalid_param(
            "Server notices can only be sent to local users",
        ));
    }
    match s.accounts.get(target).await? {
        Some(a) if !a.is_deactivated => {}
        Some(_) => return Err(MatrixError::invalid_param("The user is deactivated")),
        None => {
            return Err(MatrixError::not_found(format!(
                "User {target} does not exist"
            )));
        }
    }
    let sender = ensure_notices_user(s).await?;
    if target == sender {
        return Err(MatrixError::invalid_param(
            "Cannot send server notices to the notices user",
        ));
    }
    let room_id = notice_room(s, &sender, target).await?;
    s.rooms
        .append(NewEvent {
            room_id: &room_id,
            sender: &sender,
            kind: TimelineEventType::from(notice.kind),
            state_key: notice.state_key.map(str::to_owned),
            content: notice.content,
            txn: notice.txn,
            redacts: None,
            origin_server_ts: None,
        })
        .await
}

/// The user's notices room, created or re-joined as needed, with the user
/// invited unless already joined or invited.
async fn notice_room(s: &Services, sender: &UserId, target: &UserId) -> Result<OwnedRoomId> {
    if let Some(room_id) = s.storage.server_notice_room(target.as_str()).await?
        && s.rooms.version(&room_id).await?.is_some()
        && s.rooms.membership(&room_id, sender).await?.as_deref() == Some("join")
    {
        match s.rooms.membership(&room_id, target).await?.as_deref() {
            Some("join" | "invite") => {}
            _ => {
                s.rooms
                    .invite(&room_id, sender, target, json!({}), false, None)
                    .await?;
            }
        }
        return Ok(room_id);
    }
    let cfg = &s.config.server_notices;
    let mut users_override = Map::new();
    let version = s.rooms.default_version().clone();
    let v12 = version
        .rules()
        .is_some_and(|r| r.authorization.explicitly_privilege_room_creators);
    if !v12 {
        users_override.insert(sender.to_string(), json!(100));
    }
    users_override.insert(target.to_string(), json!(-10));
    let mut override_ = Map::new();
    override_.insert("users".into(), Value::Object(users_override));
    let mut creation = Map::new();
    creation.insert("m.federate".into(), json!(false));
    let mut creator_content = json!({ "displayname": cfg.display_name });
    if let Some(a) = &cfg.avatar_url {
        creator_content["avatar_url"] = json!(a);
    }
    let room_id = s
        .rooms
        .create_room(CreateRoom {
            creator: sender.to_owned(),
            version,
            creation_content: creation,
            preset: Preset::PrivateChat,
            name: Some(cfg.room_name.clone()),
            topic: None,
            invite: vec![target.to_owned()],
            is_direct: false,
            initial_state: Vec::new(),
            power_level_override: Some(override_),
            canonical_alias: None,
            creator_member_content: creator_content,
            room_id: None,
        })
        .await?;
    s.storage
        .set_server_notice_room(target.as_str(), room_id.as_str())
        .await?;
    s.account_data
        .set(
            target,
            Some(&room_id),
            "m.tag",
            &json!({ "tags": { "m.server_notice": { "order": 1.0 } } }),
        )
        .await?;
    tracing::info!(%room_id, user = %target, "created a server notices room");
    Ok(room_id)
}

/// What a broadcast did: how many users got the notice, and who could not.
pub struct Broadcast {
    pub sent: usize,
    pub failed: Vec<OwnedUserId>,
}

/// Sends a notice (built afresh for each user by `notice`) to every active
/// local user but the notices user itself. A user the notice cannot reach is
/// logged and listed, and the others still get it.
pub async fn broadcast<'a>(
    s: &Services,
    notice: impl Fn() -> Result<Notice<'a>>,
) -> Result<Broadcast> {
    let sender = ensure_notices_user(s).await?;
    let mut out = Broadcast {
        sent: 0,
        failed: Vec::new(),
    };
    for user in s.storage.active_local_users().await? {
        if user == sender {
            continue;
        }
        match send(s, &user, notice()?).await {
            Ok(_) => out.sent += 1,
            Err(e) => {
                tracing::warn!(%user, error = %e.message(), "server notice broadcast failed for a user");
                out.failed.push(user);
            }
        }
    }
    Ok(out)
}
