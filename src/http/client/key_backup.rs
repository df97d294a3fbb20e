//! Server-side key backups: `/room_keys/version[/{version}]` and
//! `/room_keys/keys[/{roomId}[/{sessionId}]]` (`services/key_backup.rs`).

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::State;
use ruma::api::client::backup::{
    RoomKeyBackup, add_backup_keys, add_backup_keys_for_room, add_backup_keys_for_session,
    create_backup_version, delete_backup_keys, delete_backup_keys_for_room,
    delete_backup_keys_for_session, delete_backup_version, get_backup_info, get_backup_keys,
    get_backup_keys_for_room, get_backup_keys_for_session, get_latest_backup_info,
    update_backup_version,
};
use ruma::{RoomId, UInt};

use crate::error::{MatrixError, Result};
use crate::http::extract::{Auth, Ruma, RumaResponse};
use crate::http::{AppState, ruma_route};
use crate::model::accounts::Requester;
use crate::services::key_backup::KeyUpload;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<create_backup_version::v3::Request, _, _>(r, create_version);
    let r = ruma_route::<get_latest_backup_info::v3::Request, _, _>(r, latest_version);
    let r = ruma_route::<get_backup_info::v3::Request, _, _>(r, get_version);
    let r = ruma_route::<update_backup_version::v3::Request, _, _>(r, update_version);
    let r = ruma_route::<delete_backup_version::v3::Request, _, _>(r, delete_version);
    let r = ruma_route::<add_backup_keys::v3::Request, _, _>(r, put_keys);
    let r = ruma_route::<add_backup_keys_for_room::v3::Request, _, _>(r, put_room_keys);
    let r = ruma_route::<add_backup_keys_for_session::v3::Request, _, _>(r, put_session_key);
    let r = ruma_route::<get_backup_keys::v3::Request, _, _>(r, get_keys);
    let r = ruma_route::<get_backup_keys_for_room::v3::Request, _, _>(r, get_room_keys);
    let r = ruma_route::<get_backup_keys_for_session::v3::Request, _, _>(r, get_session_key);
    let r = ruma_route::<delete_backup_keys::v3::Request, _, _>(r, delete_keys);
    let r = ruma_route::<delete_backup_keys_for_room::v3::Request, _, _>(r, delete_room_keys);
    ruma_route::<delete_backup_keys_for_session::v3::Request, _, _>(r, delete_session_key)
}

fn uint(n: u64) -> UInt {
    UInt::new_saturating(n)
}

async fn create_version(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<create_backup_version::v3::Request>,
) -> Result<RumaResponse<create_backup_version::v3::Response>> {
    let version = s.key_backup.create_version(&r, &req.algorithm).await?;
    Ok(RumaResponse(create_backup_version::v3::Response::new(
        version,
    )))
}

async fn latest_version(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(_): Ruma<get_latest_backup_info::v3::Request>,
) -> Result<RumaResponse<get_latest_backup_info::v3::Response>> {
    let i = s.key_backup.version_info(&r, None).await?;
    Ok(RumaResponse(get_latest_backup_info::v3::Response::new(
        i.algorithm,
        uint(i.count),
        i.etag,
        i.version,
    )))
}

async fn get_version(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<get_backup_info::v3::Request>,
) -> Result<RumaResponse<get_backup_info::v3::Response>> {
    let i = s.key_backup.version_info(&r, Some(&req.version)).await?;
    Ok(RumaResponse(get_backup_info::v3::Response::new(
        i.algorithm,
        uint(i.count),
        i.etag,
        i.version,
    )))
}

async fn update_version(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<update_backup_version::v3::Request>,
) -> Result<RumaResponse<update_backup_version::v3::Response>> {
    s.key_backup
        .update_version(&r, &req.version, &req.algorithm)
        .await?;
    Ok(RumaResponse(update_backup_version::v3::Response::new()))
}

async fn delete_version(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<delete_backup_version::v3::Request>,
) -> Result<RumaResponse<delete_backup_version::v3::Response>> {
    s.key_backup.delete_version(&r, &req.version).await?;
    Ok(RumaResponse(delete_backup_version::v3::Response::new()))
}

async fn put_keys(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<add_backup_keys::v3::Request>,
) -> Result<RumaResponse<add_backup_keys::v3::Response>> {
    let keys: Vec<KeyUpload<'_>> = req
        .rooms
        .iter()
        .flat_map(|(room_id, room)| KeyUpload::of_room(room_id, &room.sessions))
        .collect();
    store(
        &s,
        &r,
        &req.version,
        &keys,
        add_backup_keys::v3::Response::new,
    )
    .await
}

async fn put_room_keys(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<add_backup_keys_for_room::v3::Request>,
) -> Result<RumaResponse<add_backup_keys_for_room::v3::Response>> {
    let keys: Vec<KeyUpload<'_>> = KeyUpload::of_room(&req.room_id, &req.sessions).collect();
    store(
        &s,
        &r,
        &req.version,
        &keys,
        add_backup_keys_for_room::v3::Response::new,
    )
    .await
}

async fn put_session_key(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<add_backup_keys_for_session::v3::Request>,
) -> Result<RumaResponse<add_backup_keys_for_session::v3::Response>> {
    let key = KeyUpload {
        room_id: &req.room_id,
        session_id: &req.session_id,
        data: &req.session_data,
    };
    store(
        &s,
        &r,
        &req.version,
        &[key],
        add_backup_keys_for_session::v3::Response::new,
    )
    .await
}

async fn get_keys(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<get_backup_keys::v3::Request>,
) -> Result<RumaResponse<get_backup_keys::v3::Response>> {
    let keys = s.key_backup.keys(&r, &req.version, None, None).await?;
    let rooms: BTreeMap<_, _> = keys
        .into_iter()
        .map(|(room_id, sessions)| (room_id, RoomKeyBackup::new(sessions)))
        .collect();
    Ok(RumaResponse(get_backup_keys::v3::Response::new(rooms)))
}

/// A room with no keys answers `{"sessions": {}}`, as Synapse (sytest
/// "Responds correctly when backup is empty").
async fn get_room_keys(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<get_backup_keys_for_room::v3::Request>,
) -> Result<RumaResponse<get_backup_keys_for_room::v3::Response>> {
    let mut keys = s
        .key_backup
        .keys(&r, &req.version, Some(&req.room_id), None)
        .await?;
    let sessions = keys.remove(&req.room_id).unwrap_or_default();
    Ok(RumaResponse(get_backup_keys_for_room::v3::Response::new(
        sessions,
    )))
}

async fn get_session_key(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<get_backup_keys_for_session::v3::Request>,
) -> Result<RumaResponse<get_backup_keys_for_session::v3::Response>> {
    let mut keys = s
        .key_backup
        .keys(&r, &req.version, Some(&req.room_id), Some(&req.session_id))
        .await?;
    let key = keys
        .remove(&req.room_id)
        .and_then(|mut sessions| sessions.remove(&req.session_id))
        .ok_or_else(|| MatrixError::not_found("No backed-up key for this session"))?;
    Ok(RumaResponse(
        get_backup_keys_for_session::v3::Response::new(key),
    ))
}

async fn delete_keys(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<delete_backup_keys::v3::Request>,
) -> Result<RumaResponse<delete_backup_keys::v3::Response>> {
    remove(
        &s,
        &r,
        &req.version,
        (None, None),
        delete_backup_keys::v3::Response::new,
    )
    .await
}

async fn delete_room_keys(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<delete_backup_keys_for_room::v3::Request>,
) -> Result<RumaResponse<delete_backup_keys_for_room::v3::Response>> {
    remove(
        &s,
        &r,
        &req.version,
        (Some(&req.room_id), None),
        delete_backup_keys_for_room::v3::Response::new,
    )
    .await
}

async fn delete_session_key(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<delete_backup_keys_for_session::v3::Request>,
) -> Result<RumaResponse<delete_backup_keys_for_session::v3::Response>> {
    let scope = (Some(&*req.room_id), Some(req.session_id.as_str()));
    remove(
        &s,
        &r,
        &req.version,
        scope,
        delete_backup_keys_for_session::v3::Response::new,
    )
    .await
}

/// Stores `keys`; the `{etag, count}` answer, made by `new`.
async fn store<T>(
    s: &AppState,
    r: &Requester,
    version: &str,
    keys: &[KeyUpload<'_>],
    new: fn(String, UInt) -> T,
) -> Result<RumaResponse<T>> {
    let st = s.key_backup.put_keys(r, version, keys).await?;
    Ok(RumaResponse(new(st.etag, uint(st.count))))
}

/// Deletes the keys of a version, of a room or of a session; the `{etag,
/// count}` answer, made by `new`.
async fn remove<T>(
    s: &AppState,
    r: &Requester,
    version: &str,
    (room, session): (Option<&RoomId>, Option<&str>),
    new: fn(String, UInt) -> T,
) -> Result<RumaResponse<T>> {
    let st = s.key_backup.delete_keys(r, version, room, session).await?;
    Ok(RumaResponse(new(st.etag, uint(st.count))))
}
