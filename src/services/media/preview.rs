//! URL previews (`GET /_matrix/client/v1/media/preview_url` and the legacy
//! `/_matrix/media/v3/preview_url`), as Synapse makes them: the page is
//! fetched through the outgoing client (IP blocklist, size cap, timeout),
//! its OpenGraph `og:*` tags read (falling back to `<title>` and the meta
//! description), and its `og:image` fetched too and stored as local media
//! (thumbnailed like an upload), `og:image` then being its mxc URI. A URL
//! that is itself an image previews as that image. A URL of an oEmbed
//! provider is previewed from the provider's oEmbed answer instead, and a
//! page naming an oEmbed document has it read too, the page's own tags
//! winning (`oembed.rs`). Answers are kept in the `url_previews` table for
//! an hour (or the oEmbed answer's `cache_age`, at most a day), so a
//! repeated preview is not fetched again.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use bytes::Bytes;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{TagKind, Token, TokenSink, TokenSinkResult};
use http::StatusCode;
use http_body_util::BodyExt;
use ruma::api::error::ErrorKind;
use serde_json::{Map, Value};

use super::html::{raw_kind, tokenized};
use super::oembed;
use super::{Media, UploadInfo};
use crate::config::UrlPreviewConfig;
use crate::error::{MatrixError, Result};
use crate::model::accounts::Requester;
use crate::net::outbound::{self, Fetched, IpFilter, Outbound, OutboundError};
use crate::storage::url_previews::NewUrlPreview;

/// How long an answer is kept (Synapse's: an hour).
const KEEP_MS: i64 = 60 * 60 * 1000;

/// The longest an oEmbed answer's `cache_age` keeps a preview (Synapse's).
const MAX_KEEP_MS: i64 = 24 * 60 * 60 * 1000;

/// Longest tag name and value kept in an answer (Synapse's bounds).
const MAX_TAG_NAME: usize = 50;
const MAX_TAG_VALUE: usize = 1000;

/// Meta tags read at most from one page.
const MAX_META_TAGS: usize = 50;

/// The `Accept-Language` sent (Synapse's default `url_preview_accept_language`).
const ACCEPT_LANGUAGE: &str = "en";

/// The outgoing client of previews and its limits.
pub struct Previews {
    outbound: Outbound,
    max_size: u64,
    oembed: oembed::Providers,
}

impl Previews {
    /// The previews `config` asks for: `None` when they are off.
    pub fn of(
        config: &UrlPreviewConfig,
        ca_files: &[std::path::PathBuf],
    ) -> anyhow::Result<Option<Self>> {
        if !config.enabled {
            return Ok(None);
        }
        let outbound = Outbound::new(
            &outbound::extra_roots(ca_files)?,
            IpFilter::new(
                config.ip_range_blocklist.clone(),
                config.ip_range_allowlist.clone(),
            ),
            Duration::from_secs(config.timeout_secs),
        )?;
        Ok(Some(Self {
            outbound,
            max_size: config.max_spider_size,
            oembed: oembed::Providers::of(&config.oembed)?,
        }))
    }

    async fn fetch(&self, url: &str) -> Result<Fetched> {
        self.outbound
            .get_capped(url, self.max_size, Some(ACCEPT_LANGUAGE))
            .await
            .map_err(fetch_error)
    }
}

/// A failed fetch as Synapse answers it.
fn fetch_error(e: OutboundError) -> MatrixError {
    match e {
        OutboundError::BadUrl => MatrixError::invalid_param("url must be an http or https URL"),
        OutboundError::BlockedAddress(_) => {
            MatrixError::unknown(StatusCode::FORBIDDEN, "IP address blocked")
        }
        OutboundError::Unresolvable(m) => {
            tracing::info!("URL preview: {m}");
            MatrixError::unknown(
                StatusCode::BAD_GATEWAY,
                "DNS resolution failure during URL preview generation",
            )
        }
        OutboundError::TooLarge(max) => MatrixError::new(
            StatusCode::BAD_GATEWAY,
            ErrorKind::TooLarge,
            format!("Requested file is too large > {max} bytes"),
        ),
        OutboundError::Status(code) => MatrixError::unknown(
            StatusCode::BAD_GATEWAY,
            format!("Got error {}", code.as_u16()),
        ),
        OutboundError::TimedOut => MatrixError::unknown(
            StatusCode::BAD_GATEWAY,
            "Failed to download content: timed out",
        ),
        OutboundError::Failed(m) => MatrixError::unknown(
            StatusCode::BAD_GATEWAY,
            format!("Failed to download content: {m}"),
        ),
    }
}

/// The media type of a `Content-Type`, lowercase, without parameters.
fn media_type(content_type: Option<&str>) -> String {
    content_type
        .unwrap_or("application/octet-stream")
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The OpenGraph tags of the oEmbed document at `endpoint` about `url`
/// (its author the title when it has none) and how long to keep them;
/// `None` when it cannot be fetched or is not oEmbed JSON.
async fn fetch_oembed(
    previews: &Previews,
    url: &str,
    endpoint: &str,
) -> Option<(Map<String, Value>, i64)> {
    let fetched = match previews.fetch(endpoint).await {
        Ok(fetched) => fetched,
        Err(e) => {
            tracing::info!(
                url,
                endpoint,
                "oEmbed document not fetched: {}",
                e.message()
            );
            return None;
        }
    };
    if media_type(fetched.content_type.as_deref()) != "application/json" {
        tracing::info!(url, endpoint, "oEmbed answer is not JSON");
        return None;
    }
    let converted = oembed::to_open_graph(url, &fetched.body);
    if converted.og.is_empty() {
        tracing::info!(url, endpoint, "oEmbed answer is not oEmbed 1.0 JSON");
        return None;
    }
    let mut og = converted.og;
    if let Some(author) = converted.author_name
        && og
            .get("og:title")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        og.insert("og:title".into(), author.into());
    }
    Some((og, converted.cache_age_ms.unwrap_or(KEEP_MS)))
}

fn is_html(media_type: &str) -> bool {
    matches!(media_type, "text/html" | "application/xhtml+xml")
}

fn is_image(media_type: &str) -> bool {
    media_type.starts_with("image/")
}

impl Media {
    /// The preview of `url` as of `ts` (now when `None`) for `user`.
    /// Previews off: 403 `M_FORBIDDEN` (the endpoint is there, the server
    /// refuses previews; Synapse then does not serve it: 404
    /// `M_UNRECOGNIZED`, which would make spec v1.11 a lie in `/versions`).
    pub async fn preview(
        &self,
        user: &Requester,
        url: &str,
        ts: Option<i64>,
    ) -> Result<Map<String, Value>> {
        let Some(previews) = &self.previews else {
            return Err(MatrixError::forbidden(
                "URL previews are disabled on this server",
            ));
        };
        let now = self.clock.now_ms();
        let ts = ts.unwrap_or(now);
        if let Some(og) = self.storage.url_preview(url, ts).await?
            && let Ok(Value::Object(og)) = serde_json::from_str(&og)
        {
            return Ok(og);
        }
        // A provider's URL is previewed from its oEmbed answer; an endpoint
        // that fails or answers no oEmbed JSON leaves the page itself to
        // preview.
        let from_oembed = match previews.oembed.url_for(url) {
            Some(endpoint) => self.oembed_preview(previews, user, url, &endpoint).await,
            None => None,
        };
        let (mut og, media_id, keep_ms) = match from_oembed {
            Some(found) => found,
            None => self.page_preview(previews, user, url).await?,
        };
        og.retain(|k, v| {
            k.len() <= MAX_TAG_NAME && v.as_str().is_none_or(|v| v.len() <= MAX_TAG_VALUE)
        });
        let text = Value::Object(og.clone()).to_string();
        self.storage
            .insert_url_preview(NewUrlPreview {
                url,
                fetched_ts: now,
                expires_ts: now + keep_ms.clamp(0, MAX_KEEP_MS),
                og: &text,
                media_id: media_id.as_deref(),
            })
            .await?;
        Ok(og)
    }

    /// The preview of a page or image fetched from `url`: its OpenGraph
    /// tags (and those of the oEmbed document it names, under its own), or
    /// the image itself; its stored image's media id; how long to keep it.
    async fn page_preview(
        &self,
        previews: &Previews,
        user: &Requester,
        url: &str,
    ) -> Result<(Map<String, Value>, Option<String>, i64)> {
        let page = previews.fetch(url).await?;
        let kind = media_type(page.content_type.as_deref());
        if is_image(&kind) {
            let image = self.store_image(user, &kind, page.body).await?;
            return Ok((image.og(), Some(image.media_id), KEEP_MS));
        }
        if !is_html(&kind) {
            return Err(MatrixError::unknown(
                StatusCode::BAD_GATEWAY,
                format!("Requested file's content type not allowed for this operation: {kind}"),
            ));
        }
        let html = String::from_utf8_lossy(&page.body);
        let discovered = match oembed::discovered(&html).and_then(|h| page.url.join(&h).ok()) {
            Some(found) => fetch_oembed(previews, url, found.as_str()).await,
            None => None,
        };
        let (mut og, keep_ms) = discovered.unwrap_or((Map::new(), KEEP_MS));
        og.extend(open_graph(&html));
        let media_id = self.attach_image(previews, user, &page.url, &mut og).await;
        Ok((og, media_id, keep_ms))
    }

    /// The preview of `url` from its provider's oEmbed `endpoint`; `None`
    /// when that fails or answers nothing usable.
    async fn oembed_preview(
        &self,
        previews: &Previews,
        user: &Requester,
        url: &str,
        endpoint: &str,
    ) -> Option<(Map<String, Value>, Option<String>, i64)> {
        let (mut og, keep_ms) = fetch_oembed(previews, url, endpoint).await?;
        let base = url::Url::parse(endpoint).ok()?;
        let media_id = self.attach_image(previews, user, &base, &mut og).await;
        Some((og, media_id, keep_ms))
    }

    /// Replaces `og:image` (relative to `base`) by the image fetched and
    /// stored (its mxc URI, type, size and dimensions); its media id. An
    /// image that cannot be fetched or stored is left out, and the rest of
    /// the preview kept (as Synapse).
    async fn attach_image(
        &self,
        previews: &Previews,
        user: &Requester,
        base: &url::Url,
        og: &mut Map<String, Value>,
    ) -> Option<String> {
        let src = og.get("og:image").and_then(Value::as_str)?.to_owned();
        let image = match base.join(&src) {
            Ok(src) => self.fetch_image(previews, user, src.as_str()).await,
            Err(_) => None,
        };
        og.retain(|k, _| !k.starts_with("og:image"));
        let image = image?;
        og.extend(image.og());
        Some(image.media_id)
    }

    /// A page's image fetched and stored; `None` when that fails (the
    /// preview is then made without it, as Synapse).
    async fn fetch_image(&self, previews: &Previews, user: &Requester, url: &str) -> Option<Image> {
        let fetched = match previews.fetch(url).await {
            Ok(f) => f,
            Err(e) => {
                tracing::info!(url, "URL preview image not fetched: {}", e.message());
                return None;
            }
        };
        let kind = media_type(fetched.content_type.as_deref());
        if !is_image(&kind) {
            return None;
        }
        match self.store_image(user, &kind, fetched.body).await {
            Ok(image) => Some(image),
            Err(e) => {
                tracing::info!(url, "URL preview image not stored: {}", e.message());
                None
            }
        }
    }

    /// Stores an image as `user`'s media (thumbnailed as an upload).
    async fn store_image(&self, user: &Requester, kind: &str, body: Bytes) -> Result<Image> {
        let size = body.len() as u64;
        let dimensions = image::ImageReader::new(std::io::Cursor::new(&body))
            .with_guessed_format()
            .ok()
            .and_then(|r| r.into_dimensions().ok());
        let info = UploadInfo {
            content_type: Some(kind),
            filename: None,
            declared_len: Some(size),
        };
        let body = http_body_util::Full::new(body).map_err(|never| match never {});
        let mxc = self.upload(user, info, body).await?;
        Ok(Image {
            media_id: mxc.media_id().map(str::to_owned).unwrap_or_default(),
            mxc: mxc.to_string(),
            kind: kind.to_owned(),
            size,
            dimensions,
        })
    }
}

/// An image stored for a preview.
struct Image {
    media_id: String,
    mxc: String,
    kind: String,
    size: u64,
    dimensions: Option<(u32, u32)>,
}

impl Image {
    fn og(&self) -> Map<String, Value> {
        let mut og = Map::new();
        og.insert("og:image".into(), self.mxc.clone().into());
        og.insert("og:image:type".into(), self.kind.clone().into());
        og.insert("matrix:image:size".into(), self.size.into());
        if let Some((w, h)) = self.dimensions {
            og.insert("og:image:width".into(), w.into());
            og.insert("og:image:height".into(), h.into());
        }
        og
    }
}

/// The OpenGraph tags of an HTML page: every `<meta property="og:...">`
/// (or `name="og:..."`), the first of each; without `og:title` the
/// `<title>`, without `og:description` the meta description, without
/// `og:image` the `twitter:image`.
pub fn open_graph(html: &str) -> Map<String, Value> {
    let sink = tokenized(html, Sink::default());
    let mut og = sink.og.into_inner();
    let fallbacks = sink.fallbacks.into_inner();
    let title = sink.title.into_inner();
    let title = collapse(&title);
    if !og.contains_key("og:title") && !title.is_empty() {
        og.insert("og:title".into(), title.into());
    }
    for (key, from) in [
        ("og:description", "description"),
        ("og:image", "twitter:image"),
    ] {
        if !og.contains_key(key)
            && let Some(v) = fallbacks.get(from)
        {
            og.insert(key.into(), v.clone().into());
        }
    }
    og
}

/// Whitespace runs as one space, trimmed.
fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads the tokens of a page: meta tags and the title's text.
#[derive(Default)]
struct Sink {
    og: RefCell<Map<String, Value>>,
    /// `description` and `twitter:image`, for when the page has no og tag.
    fallbacks: RefCell<std::collections::HashMap<String, String>>,
    metas: Cell<usize>,
    in_title: Cell<bool>,
    seen_title: Cell<bool>,
    title: RefCell<String>,
}

impl TokenSink for Sink {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        match token {
            Token::TagToken(tag) => {
                let name: &str = &tag.name;
                match (tag.kind, name) {
                    (TagKind::StartTag, "meta") => self.meta(&tag.attrs),
                    (TagKind::StartTag, "title") if !self.seen_title.get() => {
                        self.in_title.set(true);
                        self.seen_title.set(true);
                        return TokenSinkResult::RawData(RawKind::Rcdata);
                    }
                    (TagKind::StartTag, _) => {
                        if let Some(kind) = raw_kind(name) {
                            return TokenSinkResult::RawData(kind);
                        }
                    }
                    (TagKind::EndTag, "title") => self.in_title.set(false),
                    _ => {}
                }
            }
            Token::CharacterTokens(text) if self.in_title.get() => {
                self.title.borrow_mut().push_str(&text);
            }
            _ => {}
        }
        TokenSinkResult::Continue
    }
}

impl Sink {
    fn meta(&self, attrs: &[html5ever::Attribute]) {
        if self.metas.get() >= MAX_META_TAGS {
            return;
        }
        let attr = |name: &str| {
            attrs
                .iter()
                .find(|a| &*a.name.local == name)
                .map(|a| a.value.to_string())
        };
        let Some(content) = attr("content") else {
            return;
        };
        let Some(key) = attr("property").or_else(|| attr("name")) else {
            return;
        };
        self.metas.set(self.metas.get() + 1);
        let content = content.trim().to_owned();
        if key.starts_with("og:") {
            self.og.borrow_mut().entry(key).or_insert(content.into());
        } else if key.eq_ignore_ascii_case("description") || key == "twitter:image" {
            self.fallbacks
                .borrow_mut()
                .entry(key.to_ascii_lowercase())
                .or_insert(content);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn open_graph_tags_are_read() {
        let og = open_graph(
            r#"<!doctype html><html><head>
            <title>Not this</title>
            <meta property="og:title" content="The Title">
            <meta property="og:description" content=" A page &amp; more ">
            <meta name="og:type" content="article">
            <meta property="og:site_name" content="Site">
            <meta property="og:image" content="/img.png">
            <meta property="og:title" content="A second title">
            <script>var x = '<meta property="og:url" content="evil">';</script>
            </head><body></body></html>"#,
        );
        assert_eq!(
            Value::Object(og),
            json!({
                "og:title": "The Title",
                "og:description": "A page & more",
                "og:type": "article",
                "og:site_name": "Site",
                "og:image": "/img.png",
            })
        );
    }

    #[test]
    fn title_and_description_are_the_fallbacks() {
        let og = open_graph(
            "<html><head><title>\n  Plain <b>page</b>\n</title>\
             <meta name=\"Description\" content=\"What it is\">\
             <meta name=\"twitter:image\" content=\"https://x.example/i.png\">\
             </head><body><title>later</title></body></html>",
        );
        assert_eq!(
            Value::Object(og),
            json!({
                "og:title": "Plain <b>page</b>",
                "og:description": "What it is",
                "og:image": "https://x.example/i.png",
            })
        );
    }

    #[test]
    fn a_page_without_tags_has_none() {
        assert!(open_graph("<p>hello").is_empty());
        assert!(open_graph("").is_empty());
    }

    #[test]
    fn media_types_drop_parameters() {
        assert_eq!(media_type(Some("Text/HTML; charset=utf-8")), "text/html");
        assert_eq!(media_type(None), "application/octet-stream");
        assert!(is_html("application/xhtml+xml"));
        assert!(is_image("image/png"));
    }
}
