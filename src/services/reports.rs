//! Abuse reports: clients report an event, a room or a user; Synapse's admin
//! API lists, shows and deletes the event reports. Tables `event_reports`,
//! `room_reports`, `user_reports`.

use ruma::{EventId, RoomId, UserId};
use serde_json::{Value, json};

use crate::error::{MatrixError, Result};
use crate::model::accounts::Requester;
use crate::services::Services;
use crate::storage::reports::{EventReportRow, NewEventReport};

/// Filters of the admin report listing (Synapse's query parameters):
/// substring matches on the reporter, the room and the event's sender.
#[derive(Debug, Default)]
pub struct ReportFilter {
    pub user_id: Option<String>,
    pub room_id: Option<String>,
    pub event_sender_user_id: Option<String>,
}

/// Reports an event. The reporter must be joined and the event must be in
/// the room; anything else is the same 404, so a report cannot probe for
/// events. `score` goes from -100 (most offensive) to 0.
pub async fn report_event(
    s: &Services,
    reporter: &Requester,
    room_id: &RoomId,
    event_id: &EventId,
    reason: Option<&str>,
    score: Option<i64>,
) -> Result<()> {
    if score.is_some_and(|sc| !(-100..=0).contains(&sc)) {
        return Err(MatrixError::invalid_param(
            "score must be between -100 and 0",
        ));
    }
    let not_found =
        || MatrixError::not_found("The event was not found or you are not joined to the room");
    if s.rooms
        .membership(room_id, &reporter.user_id())
        .await?
        .as_deref()
        != Some("join")
    {
        return Err(not_found());
    }
    let pdu = s
        .rooms
        .pdu(event_id.as_str())
        .await?
        .filter(|p| p.room_id == room_id)
        .ok_or_else(not_found)?;
    s.storage
        .insert_event_report(&NewEventReport {
            room_id: room_id.as_str(),
            event_id: event_id.as_str(),
            reporter: &reporter.user_id,
            event_sender: pdu.sender.as_str(),
            reason,
            score,
            received_ts: s.clock.now_ms(),
        })
        .await?;
    tracing::info!(%room_id, %event_id, reporter = %reporter.user_id, "event reported");
    Ok(())
}

/// Reports a room this server knows.
pub async fn report_room(
    s: &Services,
    reporter: &Requester,
    room_id: &RoomId,
    reason: &str,
) -> Result<()> {
    s.rooms.known_version(room_id).await?;
    s.storage
        .insert_room_report(
            room_id.as_str(),
            &reporter.user_id,
            Some(reason),
            s.clock.now_ms(),
        )
        .await?;
    Ok(())
}

/// Reports a user: any remote one, or a local one that exists.
pub async fn report_user(
    s: &Services,
    reporter: &Requester,
    user: &UserId,
    reason: &str,
) -> Result<()> {
    if s.accounts.is_local(user) && s.accounts.get(user).await?.is_none() {
        return Err(MatrixError::not_found("Unknown user"));
    }
    s.storage
        .insert_user_report(
            user.as_str(),
            &reporter.user_id,
            Some(reason),
            s.clock.now_ms(),
        )
        .await?;
    Ok(())
}

/// A report as Synapse's admin API shows it, with the room's current name
/// and canonical alias (null when unset).
async fn report_json(s: &Services, r: &EventReportRow) -> Result<Value> {
    let (mut name, mut alias) = (Value::Null, Value::Null);
    if s.rooms.version(&r.room_id).await?.is_some() {
        let state = s.rooms.current_state(&r.room_id).await?;
        if let Some(c) = s.rooms.state_content(&state, "m.room.name", "").await? {
            name = c.get("name").cloned().unwrap_or(Value::Null);
        }
        if let Some(c) = s
            .rooms
            .state_content(&state, "m.room.canonical_alias", "")
            .await?
        {
            alias = c.get("alias").cloned().unwrap_or(Value::Null);
        }
    }
    Ok(json!({
        "id": r.id,
        "received_ts": r.received_ts,
        "room_id": r.room_id,
        "event_id": r.event_id,
        "user_id": r.reporter,
        "sender": r.event_sender,
        "reason": r.reason,
        "score": r.score,
        "name": name,
        "canonical_alias": alias,
    }))
}

/// A page of event reports (newest first unless `forwards`) in Synapse's
/// shape: `{"event_reports", "total", "next_token"?}`.
pub async fn list(
    s: &Services,
    filter: ReportFilter,
    from: i64,
    limit: i64,
    forwards: bool,
) -> Result<Value> {
    let filter = crate::storage::reports::ReportFilter {
        user_id: filter.user_id,
        room_id: filter.room_id,
        event_sender_user_id: filter.event_sender_user_id,
    };
    let (rows, total) = s
        .storage
        .event_reports(&filter, from, limit, forwards)
        .await?;
    let mut reports = Vec::with_capacity(rows.len());
    for r in &rows {
        reports.push(report_json(s, r).await?);
    }
    let mut body = json!({ "event_reports": reports, "total": total });
    // No token for an empty page (limit=0): following it would loop forever.
    if !rows.is_empty() && from + (rows.len() as i64) < total {
        body["next_token"] = json!(from + rows.len() as i64);
    }
    Ok(body)
}

/// One report with the reported event's PDU (`event_json`, null once the
/// event is gone).
pub async fn get(s: &Services, id: i64) -> Result<Value> {
    let report = s
        .storage
        .event_report(id)
        .await?
        .ok_or_else(|| MatrixError::not_found("Event report not found"))?;
    let mut body = report_json(s, &report).await?;
    body["event_json"] = match s.rooms.pdu(report.event_id.as_str()).await? {
        Some(p) => serde_json::from_str(&p.json).map_err(MatrixError::internal)?,
        None => Value::Null,
    };
    Ok(body)
}

/// Deletes a report; 404 when there is none with that id.
pub async fn delete(s: &Services, id: i64) -> Result<()> {
    if !s.storage.delete_event_report(id).await? {
        return Err(MatrixError::not_found("Event report not found"));
    }
    Ok(())
}
