//! The parts of an event's content the search index reads, parsed straight
//! from the JSON text without building a tree of it (a rebuild parses every
//! message). Fields of another type than expected count as absent, as
//! `Value::as_str` would see them.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// A string field: `None` when absent, null, or not a string.
#[derive(Debug, Default)]
pub struct Text<'a>(pub Option<Cow<'a, str>>);

impl<'a> Text<'a> {
    pub fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AnyValue<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for AnyValue<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v))))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
        }
        d.deserialize_any(AnyValue(std::marker::PhantomData))
    }
}

/// What the index reads of an event's `content`.
#[derive(Debug, Default, Deserialize)]
pub struct Content<'a> {
    #[serde(borrow, default)]
    pub body: Text<'a>,
    #[serde(borrow, default)]
    pub name: Text<'a>,
    #[serde(borrow, default)]
    pub topic: Text<'a>,
    /// A redaction's target, in room versions 11 and later.
    #[serde(borrow, default)]
    pub redacts: Text<'a>,
    #[serde(rename = "m.new_content", borrow, default)]
    new_content: Option<&'a RawValue>,
    #[serde(rename = "m.relates_to", borrow, default)]
    relates_to: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Relation<'a> {
    #[serde(borrow, default)]
    rel_type: Text<'a>,
    #[serde(borrow, default)]
    event_id: Text<'a>,
}

#[derive(Deserialize)]
struct NewContent<'a> {
    #[serde(borrow, default)]
    body: Text<'a>,
}

impl<'a> Content<'a> {
    /// Parses a content object's JSON. Anything unreadable (not an object,
    /// a key twice) has nothing to index.
    pub fn parse(json: &'a str) -> Self {
        serde_json::from_str(json).unwrap_or_default()
    }

    /// The event an `m.replace` relation names.
    pub fn replaces(&self) -> Option<Cow<'a, str>> {
        let rel: Relation<'a> = serde_json::from_str(self.relates_to?.get()).ok()?;
        (rel.rel_type.as_deref() == Some("m.replace"))
            .then_some(rel.event_id.0)
            .flatten()
    }

    /// `m.new_content.body`: an edit's new text.
    pub fn new_body(&self) -> Option<Cow<'a, str>> {
        let new: NewContent<'a> = serde_json::from_str(self.new_content?.get()).ok()?;
        new.body.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_index_needs_and_nothing_of_another_type() {
        let c = Content::parse(
            r#"{"msgtype":"m.text","body":"caf\u00e9 bar","name":5,"topic":{"x":[1,2]},
                "formatted_body":"<b>x</b>","m.new_content":{"body":"new"},
                "m.relates_to":{"rel_type":"m.replace","event_id":"$e"}}"#,
        );
        assert_eq!(c.body.as_deref(), Some("café bar"));
        assert_eq!(c.name.as_deref(), None);
        assert_eq!(c.topic.as_deref(), None);
        assert_eq!(c.new_body().as_deref(), Some("new"));
        assert_eq!(c.replaces().as_deref(), Some("$e"));

        let not_an_edit = Content::parse(
            r#"{"body":"b","m.relates_to":{"rel_type":"m.thread","event_id":"$t"},"m.new_content":"x"}"#,
        );
        assert_eq!(not_an_edit.replaces(), None);
        assert_eq!(not_an_edit.new_body(), None);
        assert_eq!(Content::parse(r#"{"m.relates_to":null}"#).replaces(), None);
        assert_eq!(Content::parse("[1]").body.as_deref(), None);
        assert_eq!(
            Content::parse(r#"{"redacts":"$r"}"#).redacts.as_deref(),
            Some("$r")
        );
    }
}
