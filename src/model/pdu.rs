//! `Pdu`: a persisted room event, as the federation format defines it, plus
//! the views clients see of it.

use ruma::events::TimelineEventType;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId,
    OwnedUserId, RoomId, RoomVersionId, UInt, UserId,
};
use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::IgnoredAny;
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
    /// The signed PDU exactly as stored and sent over federation: its
    /// canonical JSON text (shared, so a clone copies no event). Parsed
    /// again only when needed whole ([`Pdu::canonical`]): redaction, admin
    /// views. Cached events are kept in this form, a third of the memory of
    /// a parsed tree.
    pub json: Arc<str>,
    /// Whether the PDU has a `room_id` (v12 create events have none).
    has_room_id: bool,
    /// Where the event sits in the global stream (0 until persisted).
    pub stream_ordering: i64,
    /// Set when a later redaction applies to this event.
    pub redacted_by: Option<OwnedEventId>,
    /// The state group after this event (`None` until persisted, or when
    /// not loaded).
    pub state_group: Option<i64>,
    /// The transaction a local client sent it with, as far as known.
    pub sent_with: SentWith,
    /// What the PDU carries in `unsigned` (events from other servers may),
    /// which clients get beside their own fields.
    unsigned: Option<Box<RawJsonValue>>,
}

/// How an event was sent: what `/sync` needs to give the sending device
/// its transaction id back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SentWith {
    /// Not known: the event was read without its row's transaction columns
    /// (the transaction table has the answer).
    #[default]
    Unknown,
    /// Without a transaction id (or not by a local client).
    Nothing,
    /// By `device`, with transaction id `txn`.
    Txn { device: Box<str>, txn: Box<str> },
}

impl SentWith {
    pub fn from_pair(pair: Option<(String, String)>) -> Self {
        match pair {
            Some((device, txn)) => Self::Txn {
                device: device.into(),
                txn: txn.into(),
            },
            None => Self::Nothing,
        }
    }
}

#[derive(Deserialize)]
struct PduFields {
    sender: OwnedUserId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    kind: TimelineEventType,
    content: Box<RawJsonValue>,
    state_key: Option<String>,
    #[serde(default, deserialize_with = "event_refs")]
    prev_events: Vec<OwnedEventId>,
    #[serde(default, deserialize_with = "event_refs")]
    auth_events: Vec<OwnedEventId>,
    depth: UInt,
    redacts: Option<OwnedEventId>,
    room_id: Option<IgnoredAny>,
    #[serde(default)]
    unsigned: Option<Box<RawJsonValue>>,
}

/// `prev_events` or `auth_events`: event ids (room version 3 on), or
/// `[event id, hashes]` pairs (room versions 1 and 2), read as the ids.
fn event_refs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<OwnedEventId>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum EventRef {
        Id(OwnedEventId),
        Pair(OwnedEventId, IgnoredAny),
    }
    Ok(Vec::<EventRef>::deserialize(d)?
        .into_iter()
        .map(|r| match r {
            EventRef::Id(id) | EventRef::Pair(id, _) => id,
        })
        .collect())
}

#[derive(Deserialize)]
struct RedactsInContent {
    redacts: Option<OwnedEventId>,
}

/// The top-level fields of a PDU a client sees, unparsed.
#[derive(Deserialize)]
struct ClientFields<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a RawJsonValue,
    #[serde(borrow)]
    content: &'a RawJsonValue,
    #[serde(borrow)]
    sender: &'a RawJsonValue,
    #[serde(borrow)]
    origin_server_ts: &'a RawJsonValue,
    #[serde(borrow, default)]
    state_key: Option<&'a RawJsonValue>,
    #[serde(borrow, default)]
    unsigned: Option<&'a RawJsonValue>,
}

/// A piece of JSON text, checked when it was made.
type RawPiece = Box<RawJsonValue>;

/// An event's client form cut from JSON text (its redacted form, or an
/// event the caller does not hold shared): each piece checked when cut and
/// written out as it is.
#[derive(Debug)]
pub struct ClientPieces {
    /// The top-level fields but `unsigned`, in the order written.
    fields: Box<[(&'static str, RawPiece)]>,
    /// What the PDU carries in `unsigned`; `None` for an event whose stored
    /// text lacked the fields every event has (only its ids are written).
    unsigned: Option<Box<[(String, RawPiece)]>>,
}

/// An event as one client sees it ([`Pdu::client_event`]): the event's
/// fields, plus its age and the viewer's transaction id in `unsigned`.
#[derive(Debug)]
pub struct ClientEvent {
    form: Form,
    age: i64,
    transaction_id: Option<Box<str>>,
    /// The server's aggregations of the event's relations (`m.thread`), as
    /// `unsigned.m.relations` (in place of any the PDU carried).
    relations: Option<Box<RawJsonValue>>,
}

#[derive(Debug)]
enum Form {
    /// Written from the shared event's own fields: nothing copied or parsed
    /// before it is written out.
    Shared(Arc<Pdu>),
    /// Cut from JSON text (a redacted form, or an event not held shared).
    Pieces(Box<ClientPieces>),
    /// The PDU as servers exchange it, with its `event_id` (a filter's
    /// `event_format: federation`).
    Federation(Arc<Pdu>),
}

impl ClientEvent {
    /// In federation format (the signed PDU with its `event_id` and
    /// `unsigned`), as a filter's `event_format: federation` asks; an event
    /// held only in pieces (a redacted one) stays as it is.
    pub fn into_federation_format(self) -> Self {
        match self.form {
            Form::Shared(pdu) => Self {
                form: Form::Federation(pdu),
                ..self
            },
            _ => self,
        }
    }

    /// Shows `relations` as the event's `unsigned.m.relations`.
    pub fn set_relations(&mut self, relations: Box<RawJsonValue>) {
        self.relations = Some(relations);
    }

    /// As JSON text.
    pub fn to_raw(&self) -> Box<RawJsonValue> {
        serde_json::value::to_raw_value(self).unwrap_or_default()
    }

    /// The event's `content` as written out (the redacted content of a
    /// redacted event); `None` for an event whose stored text lacked it.
    pub fn content(&self) -> Option<&RawJsonValue> {
        match &self.form {
            Form::Shared(pdu) | Form::Federation(pdu) => Some(&pdu.content),
            Form::Pieces(pieces) => pieces
                .fields
                .iter()
                .find(|(key, _)| *key == "content")
                .map(|(_, value)| &**value),
        }
    }
}

impl serde::Serialize for ClientEvent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        let stored = match &self.form {
            Form::Shared(pdu) => {
                map.serialize_entry("type", &pdu.kind)?;
                map.serialize_entry("content", &*pdu.content)?;
                map.serialize_entry("sender", &pdu.sender)?;
                map.serialize_entry("origin_server_ts", &pdu.origin_server_ts)?;
                if let Some(sk) = &pdu.state_key {
                    map.serialize_entry("state_key", sk)?;
                }
                if let Some(r) = &pdu.redacts {
                    map.serialize_entry("redacts", r)?;
                }
                map.serialize_entry("event_id", &pdu.event_id)?;
                map.serialize_entry("room_id", &pdu.room_id)?;
                Some(Stored::Text(pdu.unsigned.as_deref()))
            }
            Form::Pieces(pieces) => {
                for (key, value) in pieces.fields.iter() {
                    map.serialize_entry(key, &**value)?;
                }
                pieces.unsigned.as_deref().map(Stored::Pieces)
            }
            Form::Federation(pdu) => {
                let fields: std::collections::BTreeMap<&str, &RawJsonValue> =
                    serde_json::from_str(&pdu.json).map_err(serde::ser::Error::custom)?;
                for (key, value) in fields
                    .iter()
                    .filter(|(k, _)| !matches!(**k, "unsigned" | "event_id"))
                {
                    map.serialize_entry(key, value)?;
                }
                map.serialize_entry("event_id", &pdu.event_id)?;
                if !pdu.has_room_id {
                    map.serialize_entry("room_id", &pdu.room_id)?;
                }
                Some(Stored::Text(pdu.unsigned.as_deref()))
            }
        };
        if let Some(stored) = stored {
            map.serialize_entry(
                "unsigned",
                &Unsigned {
                    stored,
                    age: self.age,
                    transaction_id: self.transaction_id.as_deref(),
                    relations: self.relations.as_deref(),
                },
            )?;
        }
        map.end()
    }
}

/// What an event carried in `unsigned` itself.
enum Stored<'a> {
    Pieces(&'a [(String, RawPiece)]),
    /// The PDU's `unsigned` as it came (rare), read when written.
    Text(Option<&'a RawJsonValue>),
}

/// `unsigned` of a [`ClientEvent`]: the stored fields, then the viewer's.
struct Unsigned<'a> {
    stored: Stored<'a>,
    age: i64,
    transaction_id: Option<&'a str>,
    relations: Option<&'a RawJsonValue>,
}

impl serde::Serialize for Unsigned<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        let ours = |key: &str| key == "m.relations" && self.relations.is_some();
        let viewer_field = |key: &str| key == "age" || key == "transaction_id" || ours(key);
        match &self.stored {
            Stored::Pieces(stored) => {
                for (key, value) in stored.iter().filter(|(k, _)| !ours(k)) {
                    map.serialize_entry(key, &**value)?;
                }
            }
            Stored::Text(Some(text)) => {
                let stored: std::collections::BTreeMap<String, &RawJsonValue> =
                    serde_json::from_str(text.get()).unwrap_or_default();
                for (key, value) in stored.iter().filter(|(k, _)| !viewer_field(k)) {
                    map.serialize_entry(key, value)?;
                }
            }
            Stored::Text(None) => {}
        }
        map.serialize_entry("age", &self.age)?;
        if let Some(txn) = self.transaction_id {
            map.serialize_entry("transaction_id", txn)?;
        }
        if let Some(relations) = self.relations {
            map.serialize_entry("m.relations", relations)?;
        }
        map.end()
    }
}

/// An event as callers hold it: owned, or shared (which a client form can
/// then refer to instead of copying from).
pub trait AsPdu {
    fn as_pdu(&self) -> &Pdu;
    fn shared(&self) -> Option<&Arc<Pdu>> {
        None
    }
}

impl AsPdu for Pdu {
    fn as_pdu(&self) -> &Pdu {
        self
    }
}

impl AsPdu for Arc<Pdu> {
    fn as_pdu(&self) -> &Pdu {
        self
    }
    fn shared(&self) -> Option<&Arc<Pdu>> {
        Some(self)
    }
}

impl Pdu {
    /// Reads a PDU from its JSON object (a locally built event).
    /// `room_id` is given separately because v12 create events carry none
    /// (their id is the room id).
    pub fn from_json(
        event_id: OwnedEventId,
        room_id: OwnedRoomId,
        json: CanonicalJsonObject,
    ) -> Result<Self, serde_json::Error> {
        Self::from_text(event_id, room_id, serde_json::to_string(&json)?.into())
    }

    /// Reads a PDU from its canonical JSON text, as stored.
    pub fn from_text(
        event_id: OwnedEventId,
        room_id: OwnedRoomId,
        json: Arc<str>,
    ) -> Result<Self, serde_json::Error> {
        let f: PduFields = serde_json::from_str(&json)?;
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
            has_room_id: f.room_id.is_some(),
            stream_ordering: 0,
            redacted_by: None,
            state_group: None,
            sent_with: SentWith::Unknown,
            unsigned: f.unsigned,
        })
    }

    /// The PDU as a canonical JSON object (parsed from its text).
    pub fn canonical(&self) -> CanonicalJsonObject {
        serde_json::from_str(&self.json).unwrap_or_default()
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
        self.membership_str().map(Cow::into_owned)
    }

    /// `content.membership`, read without parsing the rest of the content
    /// (borrowed unless the value has escapes).
    pub fn membership_str(&self) -> Option<Cow<'_, str>> {
        #[derive(Deserialize)]
        struct Field<'a> {
            #[serde(borrow)]
            membership: Option<Cow<'a, str>>,
        }
        serde_json::from_str::<Field<'_>>(self.content.get())
            .ok()?
            .membership
    }

    /// When a message asks to be pruned (MSC2228's
    /// `org.matrix.self_destruct_after`, a timestamp in ms): only an integer,
    /// and never for a state event (as Synapse).
    pub fn self_destruct_after(&self) -> Option<i64> {
        const KEY: &str = "org.matrix.self_destruct_after";
        if self.is_state() || !self.content.get().contains(KEY) {
            return None;
        }
        #[derive(Deserialize)]
        struct Field {
            #[serde(rename = "org.matrix.self_destruct_after")]
            at: Option<Value>,
        }
        serde_json::from_str::<Field>(self.content.get())
            .ok()?
            .at?
            .as_i64()
    }

    /// The PDU pruned by the room version's redaction rules, as JSON text
    /// (what an expired message is stored as).
    pub fn pruned_text(&self, version: &RoomVersionId) -> Option<String> {
        let rules = version.rules()?;
        let pruned = ruma::canonical_json::redact(self.canonical(), &rules.redaction, None).ok()?;
        serde_json::to_string(&pruned).ok()
    }

    /// `content.history_visibility`, as [`Pdu::membership_str`].
    pub fn history_visibility_str(&self) -> Option<Cow<'_, str>> {
        #[derive(Deserialize)]
        struct Field<'a> {
            #[serde(borrow)]
            history_visibility: Option<Cow<'a, str>>,
        }
        serde_json::from_str::<Field<'_>>(self.content.get())
            .ok()?
            .history_visibility
    }

    /// The PDU with redaction applied, as JSON text, if a redaction applies
    /// to it or it is `pruned` (its sender was erased) for this viewer
    /// (`None`: the stored text is what clients see).
    fn redacted_text(
        &self,
        version: &RoomVersionId,
        redaction: Option<&Pdu>,
        pruned: bool,
    ) -> Option<String> {
        if redaction.is_none() && self.redacted_by.is_none() && !pruned {
            return None;
        }
        let rules = version.rules()?;
        let redacted = match redaction {
            Some(red) => {
                let because = ruma::canonical_json::RedactedBecause::from_json(
                    red.client_json_object(version),
                );
                ruma::canonical_json::redact(self.canonical(), &rules.redaction, Some(because))
            }
            // Redacted, but the redaction itself is gone (purged history),
            // or pruned for an erased sender: without `redacted_because`.
            None => ruma::canonical_json::redact(self.canonical(), &rules.redaction, None),
        };
        redacted
            .ok()
            .and_then(|obj| serde_json::to_string(&obj).ok())
    }

    fn client_json_object(&self, _version: &RoomVersionId) -> CanonicalJsonObject {
        let mut obj = self.canonical();
        obj.retain(|key, _| {
            matches!(
                key.as_str(),
                "type" | "content" | "sender" | "origin_server_ts" | "state_key" | "redacts"
            )
        });
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

    /// The client form of `text` (this event's PDU, or its redacted form)
    /// but for the viewer- and time-dependent fields (`age`,
    /// `transaction_id`), in pieces. Without a field every stored event
    /// has, only the ids.
    fn client_pieces_of(&self, text: &str) -> ClientPieces {
        let string = |s: &str| serde_json::value::to_raw_value(s).unwrap_or_default();
        let Ok(f) = serde_json::from_str::<ClientFields<'_>>(text) else {
            return ClientPieces {
                fields: Box::new([
                    ("event_id", string(self.event_id.as_str())),
                    ("room_id", string(self.room_id.as_str())),
                ]),
                unsigned: None,
            };
        };
        let mut fields = Vec::with_capacity(8);
        fields.push(("type", f.kind.to_owned()));
        fields.push(("content", f.content.to_owned()));
        fields.push(("sender", f.sender.to_owned()));
        fields.push(("origin_server_ts", f.origin_server_ts.to_owned()));
        if let Some(sk) = f.state_key {
            fields.push(("state_key", sk.to_owned()));
        }
        if let Some(r) = &self.redacts {
            fields.push(("redacts", string(r.as_str())));
        }
        fields.push(("event_id", string(self.event_id.as_str())));
        fields.push(("room_id", string(self.room_id.as_str())));
        // What the PDU carries in `unsigned` (`redacted_because`), in key
        // order, but what is written per viewer.
        let stored: std::collections::BTreeMap<String, Box<RawJsonValue>> = f
            .unsigned
            .and_then(|u| serde_json::from_str(u.get()).ok())
            .unwrap_or_default();
        let unsigned = stored
            .into_iter()
            .filter(|(key, _)| key != "age" && key != "transaction_id")
            .collect();
        ClientPieces {
            fields: fields.into_boxed_slice(),
            unsigned: Some(unsigned),
        }
    }

    /// The client-server format of the event (the "ClientEvent" of the
    /// spec). `shared` is this event when the caller holds it shared: the
    /// client form then refers to it. `redaction` is the redaction event
    /// that applies, if any; `pruned` serves it redacted all the same (its
    /// sender was erased); `unsigned` gets the event's age at `now` and
    /// the sender's `transaction_id` if given.
    pub fn client_event(
        &self,
        shared: Option<&Arc<Pdu>>,
        version: &RoomVersionId,
        (redaction, pruned): (Option<&Pdu>, bool),
        transaction_id: Option<&str>,
        now: MilliSecondsSinceUnixEpoch,
    ) -> ClientEvent {
        let form = match (self.redacted_text(version, redaction, pruned), shared) {
            (Some(text), _) => Form::Pieces(Box::new(self.client_pieces_of(&text))),
            (None, Some(pdu)) => Form::Shared(pdu.clone()),
            (None, None) => Form::Pieces(Box::new(self.client_pieces_of(&self.json))),
        };
        let age = i64::from(now.get()).saturating_sub(i64::from(self.origin_server_ts.get()));
        ClientEvent {
            form,
            age: age.max(0),
            transaction_id: transaction_id.map(Into::into),
            relations: None,
        }
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
        self.has_room_id.then_some(&*self.room_id)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_event_keeps_stored_unsigned_but_writes_its_own_age_and_transaction_id() {
        let text = r#"{"content":{"body":"hi","msgtype":"m.text"},"depth":3,"origin_server_ts":1000,"room_id":"!r:x","sender":"@a:x","type":"m.room.message","unsigned":{"age":5,"transaction_id":"old","m.relations":{"k":1}}}"#;
        let pdu = Pdu::from_text(
            OwnedEventId::try_from("$e:x").unwrap(),
            OwnedRoomId::try_from("!r:x").unwrap(),
            Arc::from(text),
        )
        .unwrap();
        let now = MilliSecondsSinceUnixEpoch(UInt::new(1500).unwrap());
        // Held shared (written from the event's fields) or not (cut from
        // its text), the same client form.
        let shared = Arc::new(pdu.clone());
        let forms = [
            pdu.client_event(None, &RoomVersionId::V10, (None, false), Some("t\"1"), now),
            pdu.client_event(
                Some(&shared),
                &RoomVersionId::V10,
                (None, false),
                Some("t\"1"),
                now,
            ),
        ];
        for event in forms {
            let raw = event.to_raw();
            let v: Value = serde_json::from_str(raw.get()).expect("valid JSON");
            assert_eq!(
                v,
                json!({
                    "type": "m.room.message",
                    "content": { "body": "hi", "msgtype": "m.text" },
                    "sender": "@a:x",
                    "origin_server_ts": 1000,
                    "event_id": "$e:x",
                    "room_id": "!r:x",
                    "unsigned": { "age": 500, "transaction_id": "t\"1", "m.relations": { "k": 1 } },
                })
            );
            assert_eq!(raw.get().matches("\"age\"").count(), 1, "{}", raw.get());
        }
    }

    /// A shared event's client forms refer to it: a second viewer gets its
    /// own age and transaction id over the same fields, and a state event
    /// keeps its `state_key`.
    #[test]
    fn client_events_of_one_shared_pdu_share_it_but_not_viewer_fields() {
        let text = r#"{"content":{"name":"R"},"depth":3,"origin_server_ts":1000,"room_id":"!r:x","sender":"@a:x","state_key":"","type":"m.room.name"}"#;
        let pdu = Pdu::from_text(
            OwnedEventId::try_from("$e:x").unwrap(),
            OwnedRoomId::try_from("!r:x").unwrap(),
            Arc::from(text),
        )
        .unwrap();
        let at = |ms: u32| MilliSecondsSinceUnixEpoch(UInt::from(ms));
        let pdu = Arc::new(pdu);
        let v10 = &RoomVersionId::V10;
        let first = pdu.client_event(Some(&pdu), v10, (None, false), Some("t1"), at(1200));
        let second = pdu.client_event(Some(&pdu), v10, (None, false), None, at(4000));
        for event in [&first, &second] {
            assert!(matches!(&event.form, Form::Shared(p) if Arc::ptr_eq(p, &pdu)));
        }
        let first: Value = serde_json::to_value(&first).unwrap();
        let second: Value = serde_json::to_value(&second).unwrap();
        assert_eq!(first["state_key"], "");
        assert_eq!(
            first["unsigned"],
            json!({ "age": 200, "transaction_id": "t1" })
        );
        assert_eq!(second["unsigned"], json!({ "age": 3000 }));
        assert_eq!(first["content"], second["content"]);
    }

    /// Room versions 1 and 2 reference events as `[id, hashes]` pairs,
    /// later ones by id alone: both read as the ids.
    #[test]
    fn event_references_read_in_either_format() {
        let v1 = r#"{"auth_events":[["$a:x",{"sha256":"h"}]],"content":{},"depth":2,"event_id":"$e:x","origin_server_ts":1,"prev_events":[["$p:x",{"sha256":"h"}]],"room_id":"!r:x","sender":"@a:x","type":"m.room.message"}"#;
        let v3 = r#"{"auth_events":["$a"],"content":{},"depth":2,"origin_server_ts":1,"prev_events":["$p"],"room_id":"!r:x","sender":"@a:x","type":"m.room.message"}"#;
        for (text, auth, prev) in [(v1, "$a:x", "$p:x"), (v3, "$a", "$p")] {
            let pdu = Pdu::from_text(
                OwnedEventId::try_from("$e:x").unwrap(),
                OwnedRoomId::try_from("!r:x").unwrap(),
                Arc::from(text),
            )
            .unwrap();
            assert_eq!(pdu.auth_events, vec![OwnedEventId::try_from(auth).unwrap()]);
            assert_eq!(pdu.prev_events, vec![OwnedEventId::try_from(prev).unwrap()]);
        }
    }

    /// Stored text without the fields every event has: only the ids.
    #[test]
    fn client_pieces_of_text_lacking_fields_are_the_ids() {
        let text = r#"{"content":{"body":"hi"},"depth":3,"origin_server_ts":1000,"room_id":"!r:x","sender":"@a:x","type":"m.room.message"}"#;
        let pdu = Pdu::from_text(
            OwnedEventId::try_from("$e:x").unwrap(),
            OwnedRoomId::try_from("!r:x").unwrap(),
            Arc::from(text),
        )
        .unwrap();
        let pieces = pdu.client_pieces_of(r#"{"content":{}}"#);
        let event = ClientEvent {
            form: Form::Pieces(Box::new(pieces)),
            age: 1,
            transaction_id: None,
            relations: None,
        };
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            json!({ "event_id": "$e:x", "room_id": "!r:x" })
        );
    }
}
