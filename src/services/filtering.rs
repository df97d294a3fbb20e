//! Event filters (`RoomEventFilter` from ruma) applied to events.

use ruma::api::client::filter::RoomEventFilter;

use crate::model::pdu::Pdu;

/// `*` at the end of a type pattern matches any suffix.
fn type_matches(pattern: &str, ty: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => ty.starts_with(prefix),
        None => pattern == ty,
    }
}

/// Whether an event type passes a filter's `types` and `not_types` (used
/// for account data too, whose filters have only these).
pub fn type_allowed(types: Option<&[String]>, not_types: &[String], ty: &str) -> bool {
    !not_types.iter().any(|p| type_matches(p, ty))
        && types.is_none_or(|types| types.iter().any(|p| type_matches(p, ty)))
}

/// Whether an event passes the filter's type, sender and URL conditions.
pub fn matches(filter: &RoomEventFilter, pdu: &Pdu) -> bool {
    // Spelled out only when a type condition needs it (most filters have none).
    if (!filter.not_types.is_empty() || filter.types.is_some())
        && !type_allowed(
            filter.types.as_deref(),
            &filter.not_types,
            &pdu.kind.to_string(),
        )
    {
        return false;
    }
    if filter.not_senders.contains(&pdu.sender) {
        return false;
    }
    if let Some(senders) = &filter.senders
        && !senders.contains(&pdu.sender)
    {
        return false;
    }
    if let Some(url_filter) = &filter.url_filter {
        let has_url = pdu
            .content_value()
            .get("url")
            .is_some_and(|u| u.is_string());
        let wants_url = matches!(
            url_filter,
            ruma::api::client::filter::UrlFilter::EventsWithUrl
        );
        if has_url != wants_url {
            return false;
        }
    }
    true
}

/// Whether the room passes the filter's room conditions.
pub fn room_matches(filter: &RoomEventFilter, room_id: &ruma::RoomId) -> bool {
    if filter.not_rooms.iter().any(|r| r == room_id) {
        return false;
    }
    filter
        .rooms
        .as_ref()
        .is_none_or(|rooms| rooms.iter().any(|r| r == room_id))
}
