//! `Pdu`: a persisted room event, as the federation format defines it, plus
//! the views clients see of it.

use ruma::events::TimelineEventType;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId,
    OwnedUserId, RoomId, RoomVersionId, UInt, UserId,
};
use serde::Deserialize;
use serde_json::value::RawValue as RawJsonValue;
use serde_json::{Value, json};

/// A room event in PDU form. Built locally (see `build.rs`) or, later,
/// received over federation.
#[derive(Clone, Debug)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    pub kind: TimelineEventType,
    pub content: Box<RawJsonValue>,
    pub state_key: Option<String>,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    pub depth: i64,
    /// The event a redaction redacts (top level before v11, in content since).
    pub redacts: Option<OwnedEventId>,
    /// The signed PDU exactly as stored and sent over federation.
    pub json: CanonicalJsonObject,
    /// Where the event sits in the global stream (0 until persisted).
    pub stream_ordering: i64,
    /// Set when a later redaction applies to this event.
    pub redacted_by: Option<OwnedEventId>,
    /// The state group after this event (`None` until persisted, or when
    /// not loaded).
    pub state_group: Option<i64>,
}

#[derive(Deserialize)]
struct PduFields {
    sender: OwnedUserId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    kind: TimelineEventType,
    content: Box<RawJsonValue>,
    state_key: Option<String>,
    #[serde(default)]
    prev_events: Vec<OwnedEventId>,
    #[serde(default)]
    auth_events: Vec<OwnedEventId>,
    depth: UInt,
    redacts: Option<OwnedEventId>,
}

#[derive(Deserialize)]
struct RedactsInContent {
    redacts: Option<OwnedEventId>,
}

impl Pdu {
    /// Reads a PDU from its JSON. `room_id` is given separately because v12
    /// create events carry none (their id is the room id).
    pub fn from_json(
        event_id: OwnedEventId,
        room_id: OwnedRoomId,
        json: CanonicalJsonObject,
    ) -> Result<Self, serde_json::Error> {
        let value = serde_json::to_value(&json)?;
        let f: PduFields = serde_json::from_value(value)?;
        let redacts = match f.redacts {
            Some(r) => Some(r),
            None if f.kind == TimelineEventType::RoomRedaction => {
                serde_json::from_str::<RedactsInContent>(f.content.get())
                    .ok()
                    .and_then(|c| c.redacts)
            }
            None => None,
        };
        Ok(Self {
            event_id,
            room_id,
            sender: f.sender,
            origin_server_ts: f.origin_server_ts,
            kind: f.kind,
            content: f.content,
            state_key: f.state_key,
            prev_events: f.prev_events,
            auth_events: f.auth_events,
            depth: i64::from(f.depth),
            redacts,
            json,
            stream_ordering: 0,
            redacted_by: None,
            state_group: None,
        })
    }

    pub fn is_state(&self) -> bool {
        self.state_key.is_some()
    }

    pub fn content_value(&self) -> Value {
        serde_json::from_str(self.content.get()).unwrap_or(Value::Null)
    }

    /// `content.membership` of a member event.
    pub fn membership(&self) -> Option<String> {
        if self.kind != TimelineEventType::RoomMember {
            return None;
        }
        self.content_value()
            .get("membership")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// The PDU with redaction applied, if a redaction applies to it (a
    /// borrow of the stored JSON when none does).
    fn visible_json(
        &self,
        version: &RoomVersionId,
        redaction: Option<&Pdu>,
    ) -> std::borrow::Cow<'_, CanonicalJsonObject> {
        use std::borrow::Cow;
        let Some(rules) = version.rules() else {
            return Cow::Borrowed(&self.json);
        };
        let redacted = match redaction {
            Some(red) => {
                let because = ruma::canonical_json::RedactedBecause::from_json(
                    red.client_json_object(version),
                );
                ruma::canonical_json::redact(self.json.clone(), &rules.redaction, Some(because))
            }
            // Redacted, but the redaction itself is gone (purged history):
            // still redacted, without `redacted_because`.
            None if self.redacted_by.is_some() => {
                ruma::canonical_json::redact(self.json.clone(), &rules.redaction, None)
            }
            None => return Cow::Borrowed(&self.json),
        };
        redacted.map_or(Cow::Borrowed(&self.json), Cow::Owned)
    }

    fn client_json_object(&self, _version: &RoomVersionId) -> CanonicalJsonObject {
        let mut obj = CanonicalJsonObject::new();
        for key in [
            "type",
            "content",
            "sender",
            "origin_server_ts",
            "state_key",
            "redacts",
        ] {
            if let Some(v) = self.json.get(key) {
                obj.insert(key.to_owned(), v.clone());
            }
        }
        obj.insert(
            "event_id".into(),
            CanonicalJsonValue::String(self.event_id.to_string()),
        );
        obj.insert(
            "room_id".into(),
            CanonicalJsonValue::String(self.room_id.to_string()),
        );
        obj
    }

    /// The client-server format of the event (the "ClientEvent" of the spec).
    /// `redaction` is the redaction event that applies, if any; `unsigned`
    /// extra fields (transaction id, prev_content, age) are merged in.
    pub fn to_client(
        &self,
        version: &RoomVersionId,
        redaction: Option<&Pdu>,
        unsigned: Option<Value>,
    ) -> Value {
        let visible = self.visible_json(version, redaction);
        let mut out = serde_json::Map::new();
        for key in ["type", "content", "sender", "origin_server_ts", "state_key"] {
            if let Some(v) = visible.get(key) {
                out.insert(
                    key.to_owned(),
                    serde_json::to_value(v).unwrap_or(Value::Null),
                );
            }
        }
        if let Some(r) = &self.redacts {
            out.insert("redacts".into(), json!(r));
        }
        out.insert("event_id".into(), json!(self.event_id));
        out.insert("room_id".into(), json!(self.room_id));
        let mut unsigned_map = match visible.get("unsigned") {
            Some(CanonicalJsonValue::Object(o)) => serde_json::to_value(o)
                .ok()
                .and_then(|v| v.as_object().cloned())
                .unwrap_or_default(),
            _ => serde_json::Map::new(),
        };
        let now = MilliSecondsSinceUnixEpoch::now().get();
        let age = i64::from(now).saturating_sub(i64::from(self.origin_server_ts.get()));
        unsigned_map.insert("age".into(), json!(age.max(0)));
        if let Some(Value::Object(extra)) = unsigned {
            unsigned_map.extend(extra);
        }
        out.insert("unsigned".into(), Value::Object(unsigned_map));
        Value::Object(out)
    }

    /// Stripped state for invites: type, state_key, sender, content.
    pub fn to_stripped(&self) -> Value {
        json!({
            "type": self.kind,
            "state_key": self.state_key,
            "sender": self.sender,
            "content": self.content_value(),
        })
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }
    fn room_id(&self) -> Option<&RoomId> {
        // v12 create events carry no room_id; report what the PDU says.
        self.json.contains_key("room_id").then_some(&*self.room_id)
    }
    fn sender(&self) -> &UserId {
        &self.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }
    fn content(&self) -> &RawJsonValue {
        &self.content
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }
    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }
    fn rejected(&self) -> bool {
        false
    }
}
