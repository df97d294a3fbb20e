//! The stored form of one `/sendToDevice` send: one byte string holding
//! every recipient device's content, with a sorted index of
//! (user, device) → content, so that one device's message is found by a
//! binary search without reading the others, and a content shared by
//! several devices (`*`) is stored once.
//!
//! Layout (integers little-endian): a `u32` entry count `n`; `n` entries
//! of [`ENTRY_BYTES`] each (`u32` offset of the names, `u16` user length,
//! `u16` device length, `u32` content offset, `u32` content length), in
//! (user, device) byte order; then the names (each entry's user id then
//! device id); then the contents (JSON object texts). Offsets count from
//! the start of the body.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, Error as _, MapAccess, Visitor};
use serde_json::value::RawValue;

/// Bytes of one index entry.
pub const ENTRY_BYTES: usize = 16;

/// One recipient device of a send and the content it gets.
#[derive(Debug, Clone, Copy)]
pub struct Recipient<'a> {
    pub user: &'a str,
    pub device: &'a str,
    pub content: &'a str,
}

/// One entry of a body's index: the device and where its content is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub user: &'a str,
    pub device: &'a str,
    pub offset: u32,
    pub len: u32,
}

/// A body that does not follow the layout (a bug, or a damaged row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("malformed to-device body")
    }
}

impl std::error::Error for Malformed {}

/// A send's body as [`encode`] lays it out, with what it already knows of
/// it: where the contents start and each entry, so the sender does not read
/// its own body back.
pub struct Encoded<'a> {
    pub body: Vec<u8>,
    /// Where the contents start (see [`header_len`]).
    pub header_len: usize,
    /// The index, in (user, device) order (see [`entries`]).
    pub entries: Vec<Entry<'a>>,
}

/// The body for `recipients` (sorted here; a (user, device) named twice
/// keeps the first). Panics only when the whole is over 4 GiB, which the
/// send limits keep far away.
pub fn encode<'a>(recipients: &mut Vec<Recipient<'a>>) -> Encoded<'a> {
    recipients.sort_by(|a, b| (a.user, a.device).cmp(&(b.user, b.device)));
    recipients.dedup_by(|b, a| a.user == b.user && a.device == b.device);
    let n = recipients.len();
    let names_len: usize = recipients
        .iter()
        .map(|r| r.user.len() + r.device.len())
        .sum();
    // Each distinct content text once (by address: `*` hands every device
    // of its user the same text).
    let mut contents: AddressMap = AddressMap::default();
    let mut contents_len = 0usize;
    for r in recipients.iter() {
        if let std::collections::hash_map::Entry::Vacant(v) =
            contents.entry((r.content.as_ptr(), r.content.len()))
        {
            v.insert(0);
            contents_len += r.content.len();
        }
    }
    let names_at = 4 + n * ENTRY_BYTES;
    let contents_at = names_at + names_len;
    let total = contents_at + contents_len;
    let to_u32 = |v: usize| u32::try_from(v).expect("a to-device body under 4 GiB");
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&to_u32(n).to_le_bytes());
    let (mut name_off, mut content_end) = (names_at, contents_at);
    let mut placed = AddressMap::with_capacity_and_hasher(contents.len(), Default::default());
    let mut order = Vec::with_capacity(contents.len());
    let mut entries = Vec::with_capacity(n);
    for r in recipients.iter() {
        let key = (r.content.as_ptr(), r.content.len());
        let offset = *placed.entry(key).or_insert_with(|| {
            let at = content_end;
            content_end += r.content.len();
            order.push(r.content);
            to_u32(at)
        });
        out.extend_from_slice(&to_u32(name_off).to_le_bytes());
        out.extend_from_slice(
            &u16::try_from(r.user.len())
                .unwrap_or(u16::MAX)
                .to_le_bytes(),
        );
        out.extend_from_slice(
            &u16::try_from(r.device.len())
                .unwrap_or(u16::MAX)
                .to_le_bytes(),
        );
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&to_u32(r.content.len()).to_le_bytes());
        name_off += r.user.len() + r.device.len();
        entries.push(Entry {
            user: r.user,
            device: r.device,
            offset,
            len: to_u32(r.content.len()),
        });
    }
    for r in recipients.iter() {
        out.extend_from_slice(r.user.as_bytes());
        out.extend_from_slice(r.device.as_bytes());
    }
    for c in order {
        out.extend_from_slice(c.as_bytes());
    }
    debug_assert_eq!(out.len(), total);
    Encoded {
        body: out,
        header_len: contents_at,
        entries,
    }
}

/// Content texts by address and length, hashed fast.
type AddressMap = HashMap<(*const u8, usize), u32, foldhash::fast::RandomState>;

/// The `messages` of a `PUT /sendToDevice` body, read in place (no copy of
/// a content or, mostly, of a name): per user in the body's order, per
/// device id or `*`, the content's JSON text. User ids are checked while
/// reading; device ids are any string, as the spec's.
#[derive(Debug, Default)]
pub struct Outgoing<'a> {
    pub users: Vec<ForUser<'a>>,
}

/// One user's part of [`Outgoing`].
#[derive(Debug)]
pub struct ForUser<'a> {
    /// A valid user id.
    pub user: Cow<'a, str>,
    /// (device id or `*`, content), in the body's order.
    pub devices: Vec<(Cow<'a, str>, &'a RawValue)>,
}

/// A `PUT /sendToDevice` body.
#[derive(Debug, Deserialize)]
pub struct SendBody<'a> {
    #[serde(borrow)]
    pub messages: Outgoing<'a>,
}

/// A string borrowed from the input when it has no escapes.
struct Name<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Name<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Name<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// One user's `{device or "*": content}`.
struct Devices<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Devices<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Devices<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of device ids to message contents")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(1));
                while let Some(Name(device)) = map.next_key()? {
                    let content: &'a RawValue = map.next_value()?;
                    out.push((device, content));
                }
                Ok(Devices(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Outgoing<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Outgoing<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of user ids to device messages")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut users = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Name(user)) = map.next_key()? {
                    if let Err(e) = <&ruma::UserId>::try_from(&*user) {
                        return Err(A::Error::custom(format!("invalid user id {user:?}: {e}")));
                    }
                    let Devices(devices) = map.next_value()?;
                    users.push(ForUser { user, devices });
                }
                Ok(Outgoing { users })
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

fn u32_at(body: &[u8], at: usize) -> Result<u32, Malformed> {
    let bytes = body.get(at..at + 4).ok_or(Malformed)?;
    Ok(u32::from_le_bytes(bytes.try_into().map_err(|_| Malformed)?))
}

fn u16_at(body: &[u8], at: usize) -> Result<u16, Malformed> {
    let bytes = body.get(at..at + 2).ok_or(Malformed)?;
    Ok(u16::from_le_bytes(bytes.try_into().map_err(|_| Malformed)?))
}

/// Where `body`'s contents start: the length of its index and names (the
/// part that says which device gets what, without the contents).
pub fn header_len(body: &[u8]) -> Result<usize, Malformed> {
    let n = count(body)?;
    let mut end = 4 + n * ENTRY_BYTES;
    for i in 0..n {
        let at = 4 + i * ENTRY_BYTES;
        end += u16_at(body, at + 4)? as usize + u16_at(body, at + 6)? as usize;
    }
    if end > body.len() {
        return Err(Malformed);
    }
    Ok(end)
}

/// The number of entries of `body`.
pub fn count(body: &[u8]) -> Result<usize, Malformed> {
    let n = u32_at(body, 0)? as usize;
    if 4 + n.checked_mul(ENTRY_BYTES).ok_or(Malformed)? > body.len() {
        return Err(Malformed);
    }
    Ok(n)
}

/// Entry `i` of `body` (`i` below [`count`]), its names and content range
/// checked against the body's length.
pub fn entry(body: &[u8], i: usize) -> Result<Entry<'_>, Malformed> {
    let e = index_entry(body, i)?;
    if (e.offset as usize).saturating_add(e.len as usize) > body.len() {
        return Err(Malformed);
    }
    Ok(e)
}

/// Entry `i` of a body's header (the contents may be stored elsewhere):
/// its names checked, its content range not.
fn index_entry(body: &[u8], i: usize) -> Result<Entry<'_>, Malformed> {
    let at = 4 + i * ENTRY_BYTES;
    let name = u32_at(body, at)? as usize;
    let user_len = u16_at(body, at + 4)? as usize;
    let device_len = u16_at(body, at + 6)? as usize;
    let offset = u32_at(body, at + 8)?;
    let len = u32_at(body, at + 12)?;
    let names = body
        .get(name..name + user_len + device_len)
        .ok_or(Malformed)?;
    let user = std::str::from_utf8(&names[..user_len]).map_err(|_| Malformed)?;
    let device = std::str::from_utf8(&names[user_len..]).map_err(|_| Malformed)?;
    Ok(Entry {
        user,
        device,
        offset,
        len,
    })
}

/// Every entry of `body`, in (user, device) order.
pub fn entries(body: &[u8]) -> Result<Vec<Entry<'_>>, Malformed> {
    (0..count(body)?).map(|i| entry(body, i)).collect()
}

/// Every entry of a body's header (its first [`header_len`] bytes, stored
/// apart from the contents), in (user, device) order; each content lies at
/// or after the header's end.
pub fn header_entries(header: &[u8]) -> Result<Vec<Entry<'_>>, Malformed> {
    (0..count(header)?)
        .map(|i| {
            let e = index_entry(header, i)?;
            if (e.offset as usize) < header.len() {
                return Err(Malformed);
            }
            Ok(e)
        })
        .collect()
}

/// The content at `offset`/`len` of `body` (as an [`Entry`] gives them).
pub fn content(body: &[u8], offset: u32, len: u32) -> Result<&str, Malformed> {
    let bytes = body
        .get(offset as usize..offset as usize + len as usize)
        .ok_or(Malformed)?;
    std::str::from_utf8(bytes).map_err(|_| Malformed)
}

/// The content `body` holds for (user, device), found by binary search.
pub fn find<'b>(body: &'b [u8], user: &str, device: &str) -> Result<Option<&'b str>, Malformed> {
    let (mut lo, mut hi) = (0, count(body)?);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let e = entry(body, mid)?;
        match (e.user, e.device).cmp(&(user, device)) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return content(body, e.offset, e.len).map(Some),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_device_finds_its_own_content_and_shared_texts_are_stored_once() {
        let shared = String::from(r#"{"s":1}"#);
        let mut rs = vec![
            Recipient {
                user: "@b:x",
                device: "D2",
                content: &shared,
            },
            Recipient {
                user: "@a:x",
                device: "Z",
                content: r#"{"a":"z"}"#,
            },
            Recipient {
                user: "@b:x",
                device: "D1",
                content: &shared,
            },
            Recipient {
                user: "@a:x",
                device: "A",
                content: r#"{"a":"a"}"#,
            },
        ];
        let encoded = encode(&mut rs);
        let body = encoded.body;
        let names: Vec<(&str, &str)> = entries(&body)
            .unwrap()
            .iter()
            .map(|e| (e.user, e.device))
            .collect();
        assert_eq!(
            names,
            [("@a:x", "A"), ("@a:x", "Z"), ("@b:x", "D1"), ("@b:x", "D2")]
        );
        assert_eq!(find(&body, "@a:x", "Z").unwrap(), Some(r#"{"a":"z"}"#));
        assert_eq!(find(&body, "@a:x", "A").unwrap(), Some(r#"{"a":"a"}"#));
        assert_eq!(find(&body, "@b:x", "D1").unwrap(), Some(r#"{"s":1}"#));
        assert_eq!(find(&body, "@b:x", "D2").unwrap(), Some(r#"{"s":1}"#));
        assert_eq!(find(&body, "@b:x", "D3").unwrap(), None);
        assert_eq!(find(&body, "@0:x", "A").unwrap(), None);
        let e = entries(&body).unwrap();
        assert_eq!(
            e[2].offset, e[3].offset,
            "the shared content is stored once"
        );
        let expected = 4 + 4 * ENTRY_BYTES + "@a:xA@a:xZ@b:xD1@b:xD2".len() + 9 + 9 + 7;
        assert_eq!(body.len(), expected);
        let header = header_len(&body).unwrap();
        assert_eq!(
            header,
            expected - (9 + 9 + 7),
            "the contents follow the names"
        );
        assert_eq!(encoded.header_len, header);
        assert_eq!(encoded.entries, e, "the encoder's index is the body's");
        assert_eq!(header_entries(&body[..header]).unwrap(), e);
        assert!(
            e.iter().all(|e| e.offset as usize >= header),
            "no content lies in the header"
        );
    }

    #[test]
    fn a_send_body_is_read_in_place_in_its_order() {
        let text = r#"{"messages": {
            "@b:x": {"D2": {"k": "v"}, "*": {"all": true}},
            "@\u0061:x": {"A": {}},
            "@b:x": {"D1": {"n": [1, 2]}}
        }, "other": 1}"#;
        let body: SendBody<'_> = serde_json::from_str(text).unwrap();
        let users: Vec<(&str, Vec<(&str, &str)>)> = body
            .messages
            .users
            .iter()
            .map(|u| {
                let devices = u.devices.iter().map(|(d, c)| (&**d, c.get())).collect();
                (&*u.user, devices)
            })
            .collect();
        assert_eq!(
            users,
            [
                (
                    "@b:x",
                    vec![("D2", r#"{"k": "v"}"#), ("*", r#"{"all": true}"#)]
                ),
                ("@a:x", vec![("A", "{}")]),
                ("@b:x", vec![("D1", r#"{"n": [1, 2]}"#)]),
            ]
        );
        assert!(
            matches!(body.messages.users[0].user, Cow::Borrowed(_)),
            "a name without escapes is not copied"
        );
        assert!(matches!(body.messages.users[1].user, Cow::Owned(_)));

        for bad in [
            r#"{}"#,
            r#"{"messages": []}"#,
            r#"{"messages": {"not a user id": {}}}"#,
            r#"{"messages": {"@a:x": []}}"#,
            r#"{"messages": {"@a:x": {"D": }}}"#,
        ] {
            assert!(serde_json::from_str::<SendBody<'_>>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn damaged_bodies_are_errors_not_panics() {
        let mut rs = vec![Recipient {
            user: "@a:x",
            device: "A",
            content: "{}",
        }];
        let body = encode(&mut rs).body;
        for cut in 0..body.len() {
            let short = &body[..cut];
            let _ = entries(short);
            let _ = find(short, "@a:x", "A");
            let _ = header_len(short);
        }
        assert_eq!(count(&[255, 255, 255, 255]), Err(Malformed));
        assert!(entries(&[]).is_err());
        let empty = encode(&mut Vec::new()).body;
        assert_eq!(entries(&empty).unwrap(), Vec::new());
        assert_eq!(header_len(&empty), Ok(4));
        assert_eq!(
            header_len(&body[..body.len() - 2]),
            Ok(body.len() - 2),
            "without its content"
        );
        assert_eq!(header_len(&body[..6]), Err(Malformed));
    }
}
