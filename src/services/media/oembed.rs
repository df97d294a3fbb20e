//! oEmbed for URL previews, as Synapse's `oembed` settings: a URL matching
//! a provider's scheme (a glob) is previewed from the provider's oEmbed
//! endpoint instead of its page, and an HTML page that names an oEmbed
//! document (`<link rel="alternate" type="application/json+oembed">`) has
//! it read too. The oEmbed answer is turned into OpenGraph tags
//! ([`to_open_graph`]).
//!
//! The providers are the built-in list (`oembed-providers.json`: YouTube,
//! Vimeo, X, Twitter, Spotify, SoundCloud; `disable_default_providers`
//! drops it) and those of the files `additional_providers` names, all in
//! the format of oembed.com's `providers.json`. Only JSON endpoints are
//! used.

use std::cell::{Cell, RefCell};

use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{TagKind, Token, TokenSink, TokenSinkResult};
use regex::Regex;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::html::{raw_kind, tokenized};
use crate::config::OembedConfig;

/// The built-in providers.
const DEFAULT_PROVIDERS: &str = include_str!("oembed-providers.json");

/// Longest description made from an oEmbed answer's HTML, in characters.
const MAX_DESCRIPTION: usize = 500;

/// One provider of a `providers.json` file (its name and URL are not
/// needed).
#[derive(Debug, Deserialize)]
struct Provider {
    endpoints: Vec<Endpoint>,
}

#[derive(Debug, Deserialize)]
struct Endpoint {
    schemes: Vec<String>,
    url: String,
    #[serde(default)]
    formats: Option<Vec<String>>,
}

/// The URL patterns and the endpoint each leads to.
#[derive(Debug, Default)]
pub struct Providers {
    patterns: Vec<(Regex, String)>,
}

impl Providers {
    /// The providers of `config`: the built-in ones unless disabled, then
    /// those of each file. A file that cannot be read, is not a provider
    /// list, or has a scheme or endpoint that is not http(s) is an error
    /// naming it.
    pub fn of(config: &OembedConfig) -> anyhow::Result<Self> {
        let mut providers = Self::default();
        if !config.disable_default_providers {
            providers.add(DEFAULT_PROVIDERS, "the built-in oEmbed providers")?;
        }
        for path in &config.additional_providers {
            let text = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!(
                    "media.url_preview.oembed.additional_providers: cannot read {}: {e}",
                    path.display()
                )
            })?;
            providers.add(&text, &path.display().to_string())?;
        }
        Ok(providers)
    }

    /// Adds the JSON endpoints of a `providers.json` text.
    fn add(&mut self, json: &str, what: &str) -> anyhow::Result<()> {
        let bad = |m: String| {
            anyhow::anyhow!("media.url_preview.oembed.additional_providers: {what}: {m}")
        };
        let list: Vec<Provider> = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        for endpoint in list.into_iter().flat_map(|p| p.endpoints) {
            if !is_http(&endpoint.url) {
                return Err(bad(format!("endpoint {} is not http(s)", endpoint.url)));
            }
            let json_ok = endpoint
                .formats
                .as_ref()
                .is_none_or(|f| f.iter().any(|f| f == "json"));
            if !json_ok || endpoint.url.ends_with(".xml") {
                continue;
            }
            for scheme in &endpoint.schemes {
                let pattern = glob_to_regex(scheme)
                    .ok_or_else(|| bad(format!("scheme {scheme} is not an http(s) URL")))?;
                self.patterns.push((pattern, endpoint.url.clone()));
            }
        }
        Ok(())
    }

    /// The oEmbed URL to fetch for `url`, when a provider's scheme matches it.
    pub fn url_for(&self, url: &str) -> Option<String> {
        let (_, endpoint) = self.patterns.iter().find(|(p, _)| p.is_match(url))?;
        let mut oembed = url::Url::parse(&endpoint.replace("{format}", "json")).ok()?;
        oembed
            .query_pairs_mut()
            .append_pair("url", url)
            .append_pair("format", "json");
        Some(oembed.into())
    }
}

fn is_http(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
}

/// A scheme glob as an anchored regex: in the host `*` is one label-ish run
/// (`[a-zA-Z0-9_-]+`), elsewhere any run of characters; the scheme must be
/// http(s), without globs.
fn glob_to_regex(glob: &str) -> Option<Regex> {
    let (scheme, rest) = glob.split_once("://")?;
    if !matches!(scheme, "http" | "https") {
        return None;
    }
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (host, tail) = rest.split_at(host_end);
    let pattern = format!(
        "^{scheme}://{}{}$",
        regex::escape(host).replace("\\*", "[a-zA-Z0-9_-]+"),
        regex::escape(tail).replace("\\*", ".+"),
    );
    Regex::new(&pattern).ok()
}

/// An oEmbed answer as OpenGraph tags.
#[derive(Debug, Default)]
pub struct Converted {
    pub og: Map<String, Value>,
    /// `author_name`, the title when there is no other.
    pub author_name: Option<String>,
    /// `cache_age` in ms, when given.
    pub cache_age_ms: Option<i64>,
}

/// The OpenGraph tags of an oEmbed JSON answer about `url` (as Synapse
/// makes them): `og:url`, `og:title`, `og:site_name` (the provider),
/// `og:image` (the thumbnail, or a photo's own URL), and from the HTML of
/// `rich` and `video` answers an image, a video and a description;
/// `og:type` `video.other` (with the video's size) or `website` (links).
/// What is not oEmbed 1.0 JSON gives nothing.
pub fn to_open_graph(url: &str, body: &[u8]) -> Converted {
    let Ok(Value::Object(oembed)) = serde_json::from_slice::<Value>(body) else {
        return Converted::default();
    };
    // Required, but often missing or a number.
    match oembed.get("version") {
        None => {}
        Some(Value::String(v)) if v == "1.0" => {}
        Some(Value::Number(n)) if n.as_f64() == Some(1.0) => {}
        Some(_) => return Converted::default(),
    }
    let text = |key: &str| {
        oembed
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let mut og = Map::new();
    og.insert("og:url".into(), url.into());
    if let Some(title) = text("title") {
        og.insert("og:title".into(), unescape(title).into());
    }
    if let Some(name) = text("provider_name") {
        og.insert("og:site_name".into(), name.into());
    }
    if let Some(thumbnail) = text("thumbnail_url") {
        og.insert("og:image".into(), thumbnail.into());
    }
    match text("type") {
        Some("rich") => {
            if let Some(html) = text("html") {
                from_html(&mut og, html);
            }
        }
        Some("photo") => {
            if let Some(photo) = text("url") {
                og.insert("og:image".into(), photo.into());
            }
        }
        Some("video") => {
            og.insert("og:type".into(), "video.other".into());
            if let Some(html) = text("html") {
                from_html(&mut og, html);
            }
            for size in ["width", "height"] {
                if let Some(v) = oembed.get(size).and_then(Value::as_u64) {
                    og.insert(format!("og:video:{size}"), v.into());
                }
            }
        }
        Some("link") => {
            og.insert("og:type".into(), "website".into());
        }
        other => tracing::debug!(url, kind = ?other, "unknown oEmbed type"),
    }
    Converted {
        og,
        author_name: text("author_name").map(str::to_owned),
        cache_age_ms: match oembed.get("cache_age") {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
        .map(|secs: i64| secs.saturating_mul(1000)),
    }
}

/// `&amp;`-style entities some providers leave in titles.
fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    // As text of an element: entities decoded, no tags (`<` escaped first).
    tokenized(&s.replace('<', "&lt;"), TextSink::default())
        .text
        .into_inner()
}

/// An oEmbed answer's HTML: its first `<img>` as the image (unless there is
/// one), its `<video>` (or `<embed>`) as the video, its text as the
/// description.
fn from_html(og: &mut Map<String, Value>, html: &str) {
    let sink = tokenized(html, TextSink::default());
    if !og.contains_key("og:image")
        && let Some(img) = sink.img.into_inner()
    {
        og.insert("og:image".into(), img.into());
    }
    if let Some(video) = sink.video.into_inner().or(sink.embed.into_inner()) {
        og.insert("og:video".into(), video.into());
    }
    let text = sink.text.into_inner();
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if !text.is_empty() {
        og.insert("og:description".into(), shorten(&text).into());
    }
}

/// `text` cut to [`MAX_DESCRIPTION`] characters at a word, with "…".
fn shorten(text: &str) -> String {
    if text.chars().count() <= MAX_DESCRIPTION {
        return text.to_owned();
    }
    let cut: String = text.chars().take(MAX_DESCRIPTION).collect();
    let cut = match cut.rfind(' ') {
        Some(i) if i > MAX_DESCRIPTION / 2 => &cut[..i],
        _ => &cut,
    };
    format!("{cut}…")
}

/// Collects an HTML fragment's text (outside scripts and styles) and the
/// first `src` of its `img`, `video` and `embed` tags.
#[derive(Default)]
struct TextSink {
    text: RefCell<String>,
    skipping: Cell<bool>,
    img: RefCell<Option<String>>,
    video: RefCell<Option<String>>,
    embed: RefCell<Option<String>>,
}

impl TokenSink for TextSink {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        match token {
            Token::TagToken(tag) => {
                let name: &str = &tag.name;
                let src = || {
                    tag.attrs
                        .iter()
                        .find(|a| &*a.name.local == "src")
                        .map(|a| a.value.trim().to_owned())
                        .filter(|s| !s.is_empty())
                };
                match (tag.kind, name) {
                    (TagKind::StartTag, "script") => {
                        self.skipping.set(true);
                        return TokenSinkResult::RawData(RawKind::ScriptData);
                    }
                    (TagKind::StartTag, "style" | "noscript") => {
                        self.skipping.set(true);
                        return TokenSinkResult::RawData(RawKind::Rawtext);
                    }
                    (TagKind::EndTag, "script" | "style" | "noscript") => self.skipping.set(false),
                    (TagKind::StartTag, "img") => first(&self.img, src()),
                    (TagKind::StartTag, "video") => first(&self.video, src()),
                    (TagKind::StartTag, "embed") => first(&self.embed, src()),
                    (_, "p" | "br" | "div" | "li") => self.text.borrow_mut().push(' '),
                    _ => {}
                }
            }
            Token::CharacterTokens(text) if !self.skipping.get() => {
                self.text.borrow_mut().push_str(&text);
            }
            _ => {}
        }
        TokenSinkResult::Continue
    }
}

fn first(slot: &RefCell<Option<String>>, value: Option<String>) {
    let mut slot = slot.borrow_mut();
    if slot.is_none() {
        *slot = value;
    }
}

/// The oEmbed JSON URL an HTML page names in a `<link rel="alternate"
/// type="application/json+oembed" href="...">` (Flickr writes
/// `alternative`).
pub fn discovered(html: &str) -> Option<String> {
    tokenized(html, LinkSink::default()).href.into_inner()
}

#[derive(Default)]
struct LinkSink {
    href: RefCell<Option<String>>,
}

impl TokenSink for LinkSink {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        if let Token::TagToken(tag) = token {
            let name: &str = &tag.name;
            match (tag.kind, name) {
                (TagKind::StartTag, "link") if self.href.borrow().is_none() => {
                    let attr = |n: &str| {
                        tag.attrs
                            .iter()
                            .find(|a| &*a.name.local == n)
                            .map(|a| a.value.trim().to_owned())
                    };
                    let rel = attr("rel").unwrap_or_default().to_ascii_lowercase();
                    let kind = attr("type").unwrap_or_default().to_ascii_lowercase();
                    if rel
                        .split_whitespace()
                        .any(|r| r == "alternate" || r == "alternative")
                        && kind == "application/json+oembed"
                        && let Some(href) = attr("href").filter(|h| !h.is_empty())
                    {
                        *self.href.borrow_mut() = Some(href);
                    }
                }
                (TagKind::StartTag, _) => {
                    if let Some(kind) = raw_kind(name) {
                        return TokenSinkResult::RawData(kind);
                    }
                }
                _ => {}
            }
        }
        TokenSinkResult::Continue
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn providers(json: &str) -> Providers {
        let mut p = Providers::default();
        p.add(json, "test").unwrap();
        p
    }

    #[test]
    fn the_built_in_providers_match_the_common_sites() {
        let p = Providers::of(&OembedConfig::default()).unwrap();
        for (url, endpoint) in [
            (
                "https://www.youtube.com/watch?v=dQw4w9WgXcQ",
                "https://www.youtube.com/oembed?",
            ),
            (
                "https://youtu.be/dQw4w9WgXcQ",
                "https://www.youtube.com/oembed?",
            ),
            (
                "https://vimeo.com/76979871",
                "https://vimeo.com/api/oembed.json?",
            ),
            (
                "https://x.com/matrixdotorg/status/1",
                "https://publish.x.com/oembed?",
            ),
            (
                "https://twitter.com/matrixdotorg/status/1",
                "https://publish.twitter.com/oembed?",
            ),
        ] {
            let got = p.url_for(url).unwrap_or_default();
            assert!(got.starts_with(endpoint), "{url}: {got}");
            assert!(got.ends_with("&format=json"), "{url}: {got}");
        }
        assert_eq!(
            p.url_for("https://youtu.be/abc").as_deref(),
            Some("https://www.youtube.com/oembed?url=https%3A%2F%2Fyoutu.be%2Fabc&format=json")
        );
        assert!(p.url_for("https://example.org/watch").is_none());
        assert!(
            p.url_for("https://evil.example/https://youtu.be/x")
                .is_none()
        );
        let none = Providers::of(&OembedConfig {
            disable_default_providers: true,
            additional_providers: Vec::new(),
        })
        .unwrap();
        assert!(none.url_for("https://youtu.be/abc").is_none());
    }

    #[test]
    fn globs_match_as_synapse_reads_them() {
        let p = providers(
            r#"[{"provider_name": "P", "provider_url": "https://p.example", "endpoints": [
                {"schemes": ["https://*.p.example/v/*"], "url": "https://p.example/oembed.{format}"},
                {"schemes": ["https://xml.example/*"], "url": "https://xml.example/oembed.xml"},
                {"schemes": ["https://fmt.example/*"], "url": "https://fmt.example/o", "formats": ["xml"]}
            ]}]"#,
        );
        assert!(p.url_for("https://www.p.example/v/1").is_some());
        assert_eq!(
            p.url_for("https://a.p.example/v/1?t=2").unwrap(),
            "https://p.example/oembed.json?url=https%3A%2F%2Fa.p.example%2Fv%2F1%3Ft%3D2&format=json"
        );
        // `*` in the host is one label, not a path.
        assert!(p.url_for("https://a.b/c.p.example/v/1").is_none());
        assert!(p.url_for("https://p.example/v/1").is_none());
        assert!(p.url_for("https://www.p.example/v/").is_none());
        // XML-only endpoints are skipped.
        assert!(p.url_for("https://xml.example/a").is_none());
        assert!(p.url_for("https://fmt.example/a").is_none());
        let mut bad = Providers::default();
        assert!(bad.add(r#"[{"provider_name": "P", "provider_url": "", "endpoints": [{"schemes": ["ftp://x/*"], "url": "https://x/o"}]}]"#, "t").is_err());
        assert!(bad.add(r#"[{"provider_name": "P", "provider_url": "", "endpoints": [{"schemes": ["https://x/*"], "url": "ftp://x/o"}]}]"#, "t").is_err());
        assert!(bad.add("{}", "t").is_err());
    }

    #[test]
    fn oembed_answers_become_open_graph() {
        let video = to_open_graph(
            "https://youtu.be/x",
            json!({
                "version": "1.0", "type": "video", "title": "Fish &amp; chips",
                "author_name": "Someone", "provider_name": "YouTube",
                "thumbnail_url": "https://i.example/t.jpg", "width": 640, "height": 360,
                "html": "<iframe src=\"https://www.youtube.com/embed/x\"></iframe>",
                "cache_age": "3600"
            })
            .to_string()
            .as_bytes(),
        );
        assert_eq!(
            Value::Object(video.og),
            json!({
                "og:url": "https://youtu.be/x", "og:title": "Fish & chips",
                "og:site_name": "YouTube", "og:image": "https://i.example/t.jpg",
                "og:type": "video.other", "og:video:width": 640, "og:video:height": 360,
            })
        );
        assert_eq!(video.author_name.as_deref(), Some("Someone"));
        assert_eq!(video.cache_age_ms, Some(3_600_000));

        let rich = to_open_graph(
            "https://x.com/a/status/1",
            br#"{"type": "rich", "version": 1, "html": "<blockquote><p>Hello <b>world</b></p><img src=\"/p.png\"><script>no()</script></blockquote>"}"#,
        );
        assert_eq!(
            Value::Object(rich.og),
            json!({
                "og:url": "https://x.com/a/status/1",
                "og:image": "/p.png",
                "og:description": "Hello world",
            })
        );
        let photo = to_open_graph(
            "https://p.example/1",
            br#"{"type": "photo", "url": "https://p.example/full.jpg", "thumbnail_url": "https://p.example/t.jpg"}"#,
        );
        assert_eq!(photo.og["og:image"], "https://p.example/full.jpg");
        let link = to_open_graph(
            "https://l.example",
            br#"{"type": "link", "version": "1.0"}"#,
        );
        assert_eq!(link.og["og:type"], "website");
        assert!(
            to_open_graph("u", br#"{"version": "2.0", "title": "t"}"#)
                .og
                .is_empty()
        );
        assert!(to_open_graph("u", b"not json").og.is_empty());
        assert!(to_open_graph("u", b"[1]").og.is_empty());
        let long = "word ".repeat(200);
        let rich = to_open_graph(
            "u",
            json!({"type": "rich", "html": long}).to_string().as_bytes(),
        );
        let description = rich.og["og:description"].as_str().unwrap();
        assert!(description.ends_with('…') && description.chars().count() <= 501);
    }

    #[test]
    fn oembed_links_are_discovered_in_pages() {
        assert_eq!(
            discovered(
                r#"<html><head><link rel="stylesheet" href="/s.css">
                <script>'<link rel="alternate" type="application/json+oembed" href="/evil">'</script>
                <link rel="alternate" type="application/json+oembed" href="/oembed?id=1">
                <link rel="alternate" type="application/json+oembed" href="/second"></head></html>"#
            )
            .as_deref(),
            Some("/oembed?id=1")
        );
        assert_eq!(
            discovered(r#"<link rel="Alternative" type="application/json+oembed" href="x">"#)
                .as_deref(),
            Some("x")
        );
        assert!(discovered(r#"<link rel="alternate" type="text/xml+oembed" href="x">"#).is_none());
        assert!(discovered("<p>nothing</p>").is_none());
    }
}
