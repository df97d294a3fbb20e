//! Operator actions behind both admin front ends (Dendrite's and Synapse's
//! routes, and the CLI through them): evacuating rooms and users, deleting
//! and purging rooms. Abuse reports are in `reports.rs`.

use ruma::events::room::member::MembershipState;
use ruma::{OwnedUserId, RoomId, UserId};
use serde_json::json;

use crate::error::{MatrixError, Result};
use crate::services::Services;
use crate::services::jobs::{JobFuture, JobHandle};

/// Makes every joined local user leave the room (one leave event each,
/// appended in turn). Returns who left.
pub async fn evacuate_room(s: &Services, room_id: &RoomId) -> Result<Vec<OwnedUserId>> {
    s.rooms.known_version(room_id).await?;
    let mut affected = Vec::new();
    for user in s
        .storage
        .room_members(room_id.as_str(), &MembershipState::Join)
        .await?
    {
        if !s.accounts.is_local(&user) {
            continue;
        }
        s.rooms.leave(room_id, &user, &user, None).await?;
        affected.push(user);
    }
    tracing::info!(%room_id, count = affected.len(), "evacuated room");
    Ok(affected)
}

/// Makes the user leave every joined room and reject every invite (server
/// notice invites included: an admin may). Returns the rooms affected.
pub async fn evacuate_user(s: &Services, user: &UserId) -> Result<Vec<String>> {
    let mut affected = Vec::new();
    let mut rooms = s.storage.rooms_for_user(user.as_str()).await?;
    // Joined rooms first, then invites, as Dendrite.
    rooms.sort_by_key(|m| (m.membership != MembershipState::Join, m.stream_ordering));
    for m in rooms {
        if !matches!(
            m.membership,
            MembershipState::Join | MembershipState::Invite | MembershipState::Knock
        ) {
            continue;
        }
        s.rooms.leave(&m.room_id, user, user, None).await?;
        affected.push(m.room_id.to_string());
    }
    tracing::info!(%user, count = affected.len(), "evacuated user");
    Ok(affected)
}

/// Deactivates an account as Synapse's admin API does: leaves every room and
/// rejects invites, deletes devices and tokens, clears the password, and
/// with `erase` also the profile (marking the account erased).
pub async fn deactivate_user(s: &Services, user: &UserId, erase: bool) -> Result<()> {
    evacuate_user(s, user).await?;
    s.accounts.deactivate(user).await?;
    s.sessions.delete_all_devices(user.as_str(), None).await?;
    if erase {
        s.profiles.set_displayname(user, None).await?;
        s.profiles.set_avatar_url(user, None).await?;
        s.profiles.erase_fields(user).await?;
        s.storage
            .set_account_flag(
                user.as_str(),
                crate::storage::admin_users::AccountFlag::Erased,
                true,
            )
            .await?;
        s.rooms.note_erased(user, true).await?;
    }
    tracing::info!(%user, erase, "deactivated account");
    Ok(())
}

/// Removes a room from this server: local members are evacuated first, then
/// every row about it goes in one transaction, and the caches forget it.
pub async fn purge_room(s: &Services, room_id: &RoomId) -> Result<u64> {
    let started = std::time::Instant::now();
    if s.rooms.version(room_id).await?.is_some() {
        evacuate_room(s, room_id).await?;
    }
    let _guard = match &s.search {
        Some(search) => Some(search.purge_guard().await),
        None => None,
    };
    let events = s.storage.purge_room(room_id.as_str()).await?;
    if let Some(search) = &s.search
        && let Err(e) = search.delete_room(room_id.as_str())
    {
        tracing::warn!(%room_id, error = %e.message(), "could not remove a purged room from the search index");
    }
    s.rooms.forget_caches(room_id);
    s.sliding.forget_room(room_id);
    s.rooms.forget_history_floor(room_id).await?;
    tracing::info!(%room_id, events, elapsed = ?started.elapsed(), "purged room");
    Ok(events)
}

/// Where a history purge stops, as Synapse's `purge_history` decides it:
/// events below the returned depth may go. With an event, that event (and
/// anything at its depth) stays; with a timestamp, what was sent before it
/// goes: the first event sent at or after it stays, or the room's newest
/// event when none was (a room always keeps its last event). Unknown event
/// or no event before the time: 404; an event of another room: 400.
pub async fn purge_history_point(
    s: &Services,
    room_id: &RoomId,
    up_to_event: Option<&str>,
    up_to_ts: Option<i64>,
) -> Result<i64> {
    s.rooms.known_version(room_id).await?;
    if let Some(id) = up_to_event {
        let row = s
            .storage
            .event(id)
            .await?
            .ok_or_else(|| MatrixError::not_found("Event not found"))?;
        if row.room_id != room_id.as_str() {
            return Err(MatrixError::invalid_param("Event is for another room"));
        }
        return Ok(row.depth);
    }
    let ts = up_to_ts.ok_or_else(|| {
        MatrixError::missing_param(
            "Give purge_up_to_event_id (or an event id in the path) or purge_up_to_ts",
        )
    })?;
    let last = s
        .storage
        .last_event_before_ts(room_id.as_str(), ts)
        .await?
        .ok_or_else(|| MatrixError::not_found("There is no event to be purged"))?;
    let next = s
        .storage
        .first_event_after(room_id.as_str(), last.stream_ordering)
        .await?;
    Ok(next.unwrap_or(last).depth)
}

/// Starts a history purge of the room as a tracked job: the non-state events
/// below `depth` go (unless `delete_local`, not those whose event id names
/// this server: see [`purge_history`]) and the room's timeline starts at
/// `depth`; room state always stays. One purge per room at a time: a second
/// is 400.
pub async fn start_purge_history(
    s: &std::sync::Arc<Services>,
    room_id: ruma::OwnedRoomId,
    depth: i64,
    delete_local: bool,
) -> Result<String> {
    use crate::services::jobs::{Work, start_task};
    let room = room_id.to_string();
    let work = Work::PurgeHistory {
        room_id,
        depth,
        delete_local,
    };
    start_task(s, work).await?.map_err(|_| {
        MatrixError::unknown(
            http::StatusCode::BAD_REQUEST,
            format!("History purge already in progress for {room}"),
        )
    })
}

/// The job runner's entry for a history purge ([`purge_history`]).
pub fn purge_history_job(
    s: std::sync::Arc<Services>,
    job: JobHandle,
    room_id: ruma::OwnedRoomId,
    depth: i64,
    delete_local: bool,
) -> JobFuture<Result<()>> {
    Box::pin(async move { purge_history(&s, &room_id, depth, delete_local, &job).await })
}

/// A history purge (the job's work). The events leave the search index
/// first, then the database (the room's history floor is stored with the
/// deletion): killed in between, the job runs again at start and finds the
/// same events. No reindex runs while either happens.
///
/// Without `delete_local`, events whose id names this server stay in the
/// database, as Synapse decides it: only rooms of versions 1 and 2 have such
/// ids, so from version 3 on every event below the point goes. Kept or not,
/// nothing below the point is served in timelines any more (Synapse makes
/// what it keeps an outlier), and unread counts are made afresh.
async fn purge_history(
    s: &Services,
    room_id: &RoomId,
    depth: i64,
    delete_local: bool,
    job: &JobHandle,
) -> Result<()> {
    let started = std::time::Instant::now();
    let (ids, streams): (Vec<ruma::OwnedEventId>, Vec<i64>) = s
        .storage
        .history_below(room_id.as_str(), depth)
        .await?
        .into_iter()
        .filter(|e| delete_local || e.event_id.server_name() != Some(&*s.server_name))
        .map(|e| (e.event_id, e.stream_ordering))
        .unzip();
    if let Some(search) = &s.search {
        let _no_reindex = search.purge_guard().await;
        search.delete_events(&streams)?;
    }
    job.pause_point().await;
    let _no_reindex = match &s.search {
        Some(search) => Some(search.purge_guard().await),
        None => None,
    };
    let deleted = s
        .storage
        .delete_events(room_id.as_str(), &ids, depth)
        .await?;
    s.rooms.forget_events(&ids);
    s.rooms.raise_history_floor(room_id, depth).await?;
    s.unread.forget_room(room_id);
    // Again: a reindex may have run since the first time.
    if let Some(search) = &s.search {
        search.delete_events(&streams)?;
    }
    job.progress(deleted).await;
    tracing::info!(%room_id, deleted, elapsed = ?started.elapsed(), "purged room history");
    Ok(())
}

/// Options of Synapse's room deletion (`DELETE /_synapse/admin/v2/rooms/{id}`),
/// kept with the job to run it again after a restart.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct DeleteRoom {
    pub block: bool,
    pub purge: bool,
    pub new_room_user_id: Option<ruma::OwnedUserId>,
    pub room_name: Option<String>,
    pub message: Option<String>,
    pub requester: String,
}

/// Runs a room deletion as a tracked job; returns its id at once.
pub async fn start_room_delete(
    s: &std::sync::Arc<Services>,
    room_id: ruma::OwnedRoomId,
    opts: DeleteRoom,
) -> Result<String> {
    let id = s.jobs.new_room_job(&room_id, &opts).await?;
    s.spawn_job(run_room_delete(s.clone(), room_id, opts, id.clone()));
    Ok(id)
}

/// Runs a room deletion as a tracked job and waits for it (Synapse's v1
/// API): the outcome, or the job's error. The job goes on to the end even
/// if the waiting request goes away.
pub async fn delete_room_now(
    s: &std::sync::Arc<Services>,
    room_id: ruma::OwnedRoomId,
    opts: DeleteRoom,
) -> Result<crate::services::jobs::ShutdownResult> {
    use crate::services::jobs::JobStatus;
    let id = s.jobs.new_room_job(&room_id, &opts).await?;
    s.spawn_job(run_room_delete(s.clone(), room_id, opts, id.clone()))
        .await
        .map_err(MatrixError::internal)?;
    let job = s
        .jobs
        .room_job(&id)
        .await?
        .ok_or_else(|| MatrixError::internal("room deletion job vanished"))?;
    match job.status {
        JobStatus::Complete => Ok(job.shutdown_room),
        _ => Err(MatrixError::unknown(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            job.error
                .unwrap_or_else(|| "Room deletion failed".to_owned()),
        )),
    }
}

/// The job runner's entry for a room deletion interrupted by a restart:
/// runs it again from its stored options.
pub fn resume_room_delete(
    s: std::sync::Arc<Services>,
    room_id: ruma::OwnedRoomId,
    params: &str,
    job_id: String,
) -> std::result::Result<JobFuture<()>, String> {
    let opts: DeleteRoom = serde_json::from_str(params).map_err(|e| e.to_string())?;
    Ok(Box::pin(run_room_delete(s, room_id, opts, job_id)))
}

/// Runs a room deletion (also again, after a restart interrupted it: each
/// step can run twice).
async fn run_room_delete(
    s: std::sync::Arc<Services>,
    room_id: ruma::OwnedRoomId,
    opts: DeleteRoom,
    job_id: String,
) {
    use crate::services::jobs::JobStatus;
    s.jobs
        .update(&job_id, |j| j.status = JobStatus::Active)
        .await;
    match delete_room(&s, &room_id, &opts, &job_id).await {
        Ok(()) => {
            s.jobs
                .update(&job_id, |j| j.status = JobStatus::Complete)
                .await
        }
        Err(e) => {
            tracing::warn!(%room_id, error = %e.message(), "room deletion failed");
            s.jobs
                .update(&job_id, |j| {
                    j.status = JobStatus::Failed;
                    j.error = Some(e.message().to_owned());
                })
                .await
        }
    }
}

/// The room deletion's steps: block, make the replacement room, move the
/// local members and the aliases there, note what was done, purge.
async fn delete_room(
    s: &Services,
    room_id: &RoomId,
    opts: &DeleteRoom,
    job_id: &str,
) -> Result<()> {
    if opts.block {
        s.storage
            .block_room(room_id.as_str(), &opts.requester, true, s.clock.now_ms())
            .await?;
    }
    let known = s.rooms.version(room_id).await?.is_some();
    let new_room = replacement_room(s, known, opts, job_id).await?;
    let moved = if known {
        move_local_members(s, room_id, new_room.as_ref(), opts).await?
    } else {
        MovedMembers::default()
    };
    let aliases = move_aliases(s, room_id, new_room.as_ref(), opts).await?;
    s.jobs
        .update(job_id, |j| {
            let done = &mut j.shutdown_room;
            // A second run (after a restart) finds fewer members and aliases.
            merge(&mut done.kicked_users, moved.kicked);
            merge(&mut done.failed_to_kick_users, moved.failed);
            merge(&mut done.local_aliases, aliases);
            done.new_room_id = new_room.as_ref().map(|r| r.to_string());
        })
        .await;
    crate::services::jobs::pause_point(job_id).await;
    if opts.purge {
        purge_room(s, room_id).await?;
    }
    Ok(())
}

/// The room the members move to: the one an earlier run of this job made
/// (a deletion run again after a restart keeps it), else a new one when
/// the room is known and the options name its owner, else none.
async fn replacement_room(
    s: &Services,
    known: bool,
    opts: &DeleteRoom,
    job_id: &str,
) -> Result<Option<ruma::OwnedRoomId>> {
    let made_before = s
        .jobs
        .room_job(job_id)
        .await?
        .and_then(|j| j.shutdown_room.new_room_id)
        .and_then(|r| ruma::OwnedRoomId::try_from(r).ok());
    if made_before.is_some() || !known {
        return Ok(made_before);
    }
    let Some(owner) = &opts.new_room_user_id else {
        return Ok(None);
    };
    let new_id = create_replacement_room(s, owner, opts).await?;
    let id = new_id.to_string();
    s.jobs
        .update(job_id, |j| j.shutdown_room.new_room_id = Some(id))
        .await;
    Ok(Some(new_id))
}

/// Creates the public room that replaces a deleted one, owned by `owner`,
/// with the options' name and its first message.
async fn create_replacement_room(
    s: &Services,
    owner: &UserId,
    opts: &DeleteRoom,
) -> Result<ruma::OwnedRoomId> {
    let name = opts
        .room_name
        .clone()
        .unwrap_or_else(|| "Content Violation Notification".to_owned());
    let new_id = s
        .rooms
        .create_room(crate::services::rooms::CreateRoom {
            creator: owner.to_owned(),
            version: s.rooms.default_version().clone(),
            creation_content: Default::default(),
            preset: crate::services::rooms::create::Preset::PublicChat,
            name: Some(name),
            topic: None,
            invite: Vec::new(),
            is_direct: false,
            initial_state: Vec::new(),
            power_level_override: None,
            canonical_alias: None,
            creator_member_content: json!({}),
            room_id: None,
        })
        .await?;
    let message = opts
        .message
        .clone()
        .unwrap_or_else(|| "Sharing illegal content on this server is not permitted and rooms in violation will be blocked.".to_owned());
    s.rooms
        .append(crate::services::rooms::NewEvent {
            room_id: &new_id,
            sender: owner,
            kind: ruma::events::TimelineEventType::RoomMessage,
            state_key: None,
            content: json!({ "msgtype": "m.text", "body": message }),
            txn: None,
            redacts: None,
            origin_server_ts: None,
        })
        .await?;
    Ok(new_id)
}

/// The local members a room deletion made leave, and those it could not.
#[derive(Default)]
struct MovedMembers {
    kicked: Vec<String>,
    failed: Vec<String>,
}

/// Makes every joined local member leave the room and, when there is a
/// replacement room, join that one (its owner is in it already).
async fn move_local_members(
    s: &Services,
    room_id: &RoomId,
    new_room: Option<&ruma::OwnedRoomId>,
    opts: &DeleteRoom,
) -> Result<MovedMembers> {
    let mut moved = MovedMembers::default();
    for user in s
        .storage
        .room_members(room_id.as_str(), &MembershipState::Join)
        .await?
    {
        if !s.accounts.is_local(&user) {
            continue;
        }
        match s.rooms.leave(room_id, &user, &user, None).await {
            Ok(_) => {
                if let Some(new_id) = new_room
                    && Some(&user) != opts.new_room_user_id.as_ref()
                    && s.rooms.join(new_id, &user, json!({}), None).await.is_err()
                {
                    tracing::warn!(%user, "could not move a user to the replacement room");
                }
                moved.kicked.push(user.to_string());
            }
            Err(_) => moved.failed.push(user.to_string()),
        }
    }
    Ok(moved)
}

/// Deletes the room's aliases, pointing each at the replacement room when
/// there is one; returns them.
async fn move_aliases(
    s: &Services,
    room_id: &RoomId,
    new_room: Option<&ruma::OwnedRoomId>,
    opts: &DeleteRoom,
) -> Result<Vec<String>> {
    let aliases = s.storage.room_aliases(room_id.as_str()).await?;
    for alias in &aliases {
        s.storage.delete_alias(alias.as_str()).await?;
        if let (Some(new_id), Some(owner)) = (new_room, &opts.new_room_user_id) {
            s.storage
                .insert_alias(alias.as_str(), new_id.as_str(), owner.as_str())
                .await?;
        }
    }
    // Application services interested through an alias follow it.
    s.as_delivery.forget_room(room_id);
    if let Some(new_id) = new_room {
        s.as_delivery.forget_room(new_id);
    }
    Ok(aliases.iter().map(|a| a.to_string()).collect())
}

/// Adds to `into` what it lacks of `more`.
fn merge(into: &mut Vec<String>, more: Vec<String>) {
    for m in more {
        if !into.contains(&m) {
            into.push(m);
        }
    }
}
