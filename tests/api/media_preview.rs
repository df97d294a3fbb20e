//! URL previews: `GET /_matrix/client/v1/media/preview_url` and the legacy
//! `/_matrix/media/v3/preview_url` (and `r0`), against a fake site on
//! loopback. Errors as Synapse's: a blocked address in the URL 403, a name
//! resolving only to blocked addresses 502, too large 502 `M_TOO_LARGE`,
//! a type that is neither HTML nor an image 502, previews off 403
//! `M_UNRECOGNIZED`. oEmbed: a fake provider on loopback, named by a
//! providers file, and a page that names its oEmbed document.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::*;

const PREVIEW_V1: &str = "/_matrix/client/v1/media/preview_url";
const PREVIEW_V3: &str = "/_matrix/media/v3/preview_url";
const PREVIEW_R0: &str = "/_matrix/media/r0/preview_url";

/// A server with previews on; loopback allowed unless `tweak` says otherwise.
async fn preview_server(tweak: impl FnOnce(&mut myelin::config::Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.media.url_preview.enabled = true;
        c.media.url_preview.ip_range_blocklist.clear();
        tweak(c);
    })
    .await
}

async fn preview(server: &TestServer, who: &Session, url: &str) -> (StatusCode, Value) {
    server
        .get(&format!("{PREVIEW_V1}?url={}", enc(url)), who.token())
        .await
}

const OG_PAGE: &str = r#"<!doctype html><html><head>
<title>Fallback title</title>
<meta property="og:title" content="A Title">
<meta property="og:description" content="Described">
<meta property="og:type" content="website">
<meta property="og:site_name" content="Fake Site">
<meta property="og:image" content="/img.png">
</head><body><p>Hello</p></body></html>"#;

#[tokio::test]
async fn open_graph_page_with_its_image_stored_and_cached() {
    let server = preview_server(|_| {}).await;
    let alice = server.user("alice").await;
    let site = FakeSite::start().await;
    let url = site.serve(
        "/og",
        Page::Body("text/html; charset=utf-8", OG_PAGE.into()),
    );
    let image = png(40, 30);
    site.serve("/img.png", Page::Body("image/png", image.clone()));

    let (st, og) = preview(&server, &alice, &url).await;
    assert_eq!(st, StatusCode::OK, "{og}");
    assert_eq!(og["og:title"], "A Title");
    assert_eq!(og["og:description"], "Described");
    assert_eq!(og["og:type"], "website");
    assert_eq!(og["og:site_name"], "Fake Site");
    assert_eq!(og["og:image:type"], "image/png");
    assert_eq!(og["og:image:width"], 40);
    assert_eq!(og["og:image:height"], 30);
    assert_eq!(og["matrix:image:size"], image.len());
    let mxc = og["og:image"].as_str().unwrap();
    assert!(mxc.starts_with("mxc://test.local/"), "{og}");

    // The image is local media, downloadable (and thumbnailable).
    let id = media_id_of(&server, &og["og:image"]);
    let got = download(&server, &download_v1(&server, &id), alice.token()).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.bytes, image);
    assert_eq!(got.header("content-type"), "image/png");
    let thumb = download(
        &server,
        &format!(
            "/_matrix/client/v1/media/thumbnail/test.local/{id}?width=32&height=32&method=crop"
        ),
        alice.token(),
    )
    .await;
    assert_eq!(thumb.status, StatusCode::OK);
    assert!(thumb.header("content-type").starts_with("image/"));

    // Asked again (any user, the legacy paths too): the stored answer, no
    // new request to the site.
    let bob = server.user("bob").await;
    let again = preview(&server, &bob, &url).await;
    assert_eq!(again, (StatusCode::OK, og.clone()));
    for path in [PREVIEW_V3, PREVIEW_R0] {
        let legacy = server
            .get(&format!("{path}?url={}", enc(&url)), bob.token())
            .await;
        assert_eq!(legacy, (StatusCode::OK, og.clone()), "{path}");
    }
    assert_eq!(site.hits("/og"), 1);
    assert_eq!(site.hits("/img.png"), 1);

    // A `ts` before the first fetch has no answer stored: fetched again.
    let (st, _) = server
        .get(
            &format!("{PREVIEW_V1}?url={}&ts=1000", enc(&url)),
            alice.token(),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(site.hits("/og"), 2);
}

#[tokio::test]
async fn title_and_meta_description_are_the_fallbacks() {
    let server = preview_server(|_| {}).await;
    let alice = server.user("alice").await;
    let site = FakeSite::start().await;
    let url = site.serve(
        "/plain",
        Page::Body(
            "text/html",
            "<html><head><title> Just a  page </title><meta name=\"description\" content=\"About it\"></head><body>x</body></html>".into(),
        ),
    );
    let (st, og) = preview(&server, &alice, &url).await;
    assert_eq!(st, StatusCode::OK, "{og}");
    assert_eq!(
        og,
        serde_json::json!({"og:title": "Just a page", "og:description": "About it"})
    );

    // A page without any: an empty object.
    let url = site.serve("/bare", Page::Body("text/html", b"<p>nothing".to_vec()));
    let (st, og) = preview(&server, &alice, &url).await;
    assert_eq!((st, og), (StatusCode::OK, serde_json::json!({})));
}

#[tokio::test]
async fn an_image_url_previews_as_the_image() {
    let server = preview_server(|_| {}).await;
    let alice = server.user("alice").await;
    let site = FakeSite::start().await;
    let image = png(8, 5);
    let url = site.serve("/pic", Page::Chunked("image/png", image.clone()));
    let (st, og) = preview(&server, &alice, &url).await;
    assert_eq!(st, StatusCode::OK, "{og}");
    assert_eq!(og["og:image:type"], "image/png");
    assert_eq!(og["og:image:width"], 8);
    assert_eq!(og["og:image:height"], 5);
    assert_eq!(og["matrix:image:size"], image.len());
    let id = media_id_of(&server, &og["og:image"]);
    let got = download(&server, &download_v1(&server, &id), alice.token()).await;
    assert_eq!(got.bytes, image);
}

#[tokio::test]
async fn a_missing_page_image_leaves_the_rest() {
    let server = preview_server(|_| {}).await;
    let alice = server.user("alice").await;
    let site = FakeSite::start().await;
    let url = site.serve("/og", Page::Body("text/html", OG_PAGE.into()));
    let (st, og) = preview(&server, &alice, &url).await;
    assert_eq!(st, StatusCode::OK, "{og}");
    assert_eq!(og["og:title"], "A Title");
    assert!(og.get("og:image").is_none(), "{og}");
    assert_eq!(site.hits("/img.png"), 1);
}

#[tokio::test]
async fn what_cannot_be_previewed() {
    let server = preview_server(|c| c.media.url_preview.max_spider_size = 2000).await;
    let alice = server.user("alice").await;
    let site = FakeSite::start().await;

    let json = site.serve("/data", Page::Body("application/json", b"{}".to_vec()));
    assert_error_for(
        "json",
        &preview(&server, &alice, &json).await,
        502,
        "M_UNKNOWN",
    );

    let big = format!("<html><title>big</title>{}</html>", "x".repeat(5000));
    let sized = site.serve("/big", Page::Body("text/html", big.clone().into()));
    assert_error_for(
        "length",
        &preview(&server, &alice, &sized).await,
        502,
        "M_TOO_LARGE",
    );
    // No Content-Length: cut off while streaming.
    let chunked = site.serve("/big-chunked", Page::Chunked("text/html", big.into()));
    assert_error_for(
        "streamed",
        &preview(&server, &alice, &chunked).await,
        502,
        "M_TOO_LARGE",
    );

    let gone = site.serve("/gone", Page::Status(404));
    assert_error_for(
        "404",
        &preview(&server, &alice, &gone).await,
        502,
        "M_UNKNOWN",
    );

    // Nothing listens on the port of a dropped site.
    let port = {
        let dead = FakeSite::start().await;
        dead.port
    };
    let refused = format!("http://127.0.0.1:{port}/x");
    assert_error_for(
        "refused",
        &preview(&server, &alice, &refused).await,
        502,
        "M_UNKNOWN",
    );

    // Failures are not stored: fixed, the page previews.
    site.serve(
        "/data",
        Page::Body("text/html", b"<title>now</title>".to_vec()),
    );
    let (st, og) = preview(&server, &alice, &json).await;
    assert_eq!((st, og["og:title"].clone()), (StatusCode::OK, "now".into()));
}

#[tokio::test]
async fn blocked_addresses_are_not_fetched() {
    // The default blocklist (loopback in it), 127.0.0.1 allowed.
    let server = TestServer::start_with(|c| {
        c.media.url_preview.enabled = true;
        c.media.url_preview.ip_range_allowlist =
            vec![myelin::net::Cidr::parse("127.0.0.1").unwrap()];
    })
    .await;
    let alice = server.user("alice").await;
    let site = FakeSite::start().await;
    let url = site.serve(
        "/og",
        Page::Body("text/html", b"<title>ok</title>".to_vec()),
    );
    let (st, og) = preview(&server, &alice, &url).await;
    assert_eq!((st, og["og:title"].clone()), (StatusCode::OK, "ok".into()));

    // Another loopback address in the URL: 403.
    let other = format!("http://127.0.0.2:{}/og", site.port);
    assert_error_for(
        "literal",
        &preview(&server, &alice, &other).await,
        403,
        "M_UNKNOWN",
    );
    let v6 = format!("http://[::1]:{}/og", site.port);
    assert_error_for("v6", &preview(&server, &alice, &v6).await, 403, "M_UNKNOWN");
    // A redirect to it: 403 too.
    let hop = site.serve("/hop", Page::Redirect(other.clone()));
    assert_error_for(
        "redirect",
        &preview(&server, &alice, &hop).await,
        403,
        "M_UNKNOWN",
    );
    assert_eq!(site.hits("/hop"), 1);
}

#[tokio::test]
async fn the_default_blocklist_refuses_loopback() {
    let server = TestServer::start_with(|c| c.media.url_preview.enabled = true).await;
    let alice = server.user("alice").await;
    let site = FakeSite::start().await;
    let url = site.serve(
        "/og",
        Page::Body("text/html", b"<title>no</title>".to_vec()),
    );
    assert_error_for(
        "literal",
        &preview(&server, &alice, &url).await,
        403,
        "M_UNKNOWN",
    );
    // A name that resolves to loopback only: as Synapse, a DNS failure.
    let named = format!("http://localhost:{}/og", site.port);
    assert_error_for(
        "name",
        &preview(&server, &alice, &named).await,
        502,
        "M_UNKNOWN",
    );
    assert_eq!(site.hits("/og"), 0);
}

#[tokio::test]
async fn previews_off_are_refused() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    for path in [PREVIEW_V1, PREVIEW_V3] {
        let got = server
            .get(
                &format!("{path}?url={}", enc("https://example.org/")),
                alice.token(),
            )
            .await;
        assert_error_for(path, &got, 403, "M_FORBIDDEN");
    }
}

#[tokio::test]
async fn bad_requests() {
    let server = preview_server(|c| c.registration.allow_guests = true).await;
    let alice = server.user("alice").await;
    let no_token = server
        .get(
            &format!("{PREVIEW_V1}?url={}", enc("https://example.org/")),
            None,
        )
        .await;
    assert_error_for("no token", &no_token, 401, "M_MISSING_TOKEN");
    // Guests may not (as Synapse).
    let guest = server.guest().await;
    let got = preview(&server, &guest, "https://example.org/").await;
    assert_error_for("guest", &got, 403, "M_GUEST_ACCESS_FORBIDDEN");
    let (st, body) = server.get(PREVIEW_V1, alice.token()).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    for bad in ["ftp://example.org/file", "not a url", "http://"] {
        assert_error_for(
            bad,
            &preview(&server, &alice, bad).await,
            400,
            "M_INVALID_PARAM",
        );
    }
}

// ---------------------------------------------------------------- oEmbed

/// The path (with query) a server asks an oEmbed endpoint at `/oembed`
/// for `url`.
fn oembed_path(url: &str) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("url", url)
        .append_pair("format", "json")
        .finish();
    format!("/oembed?{query}")
}

/// A server whose only oEmbed provider is `site`: `/video/*` answered by
/// its `/oembed` (the built-in providers are off: no request leaves the
/// machine).
async fn oembed_server(site: &FakeSite) -> TestServer {
    oembed_server_with(site, |_| {}).await
}

/// [`oembed_server`] with `tweak` applied to its config too.
async fn oembed_server_with(
    site: &FakeSite,
    tweak: impl FnOnce(&mut myelin::config::Config),
) -> TestServer {
    let base = site.base.clone();
    preview_server(move |c| {
        let file = c.data_dir.join("providers.json");
        let providers = serde_json::json!([{
            "provider_name": "Fake Tube",
            "provider_url": format!("{base}/"),
            "endpoints": [{
                "schemes": [format!("{base}/video/*")],
                "url": format!("{base}/oembed"),
            }],
        }]);
        std::fs::write(&file, providers.to_string()).unwrap();
        c.media.url_preview.oembed.disable_default_providers = true;
        c.media.url_preview.oembed.additional_providers = vec![file];
        tweak(c);
    })
    .await
}

#[tokio::test]
async fn a_provider_url_previews_from_its_oembed_answer() {
    let site = FakeSite::start().await;
    let server = oembed_server(&site).await;
    let alice = server.user("alice").await;
    let page = format!("{}/video/42", site.base);
    let thumbnail = png(48, 27);
    site.serve("/thumb.png", Page::Body("image/png", thumbnail.clone()));
    let answer = serde_json::json!({
        "version": "1.0",
        "type": "video",
        "title": "A &amp; B",
        "author_name": "The Author",
        "provider_name": "Fake Tube",
        "thumbnail_url": format!("{}/thumb.png", site.base),
        "width": 640,
        "height": 360,
        "html": "<iframe src=\"https://tube.example/embed/42\"></iframe>",
    });
    site.serve(
        &oembed_path(&page),
        Page::Body("application/json", answer.to_string().into_bytes()),
    );
    let (st, og) = preview(&server, &alice, &page).await;
    assert_eq!(st, StatusCode::OK, "{og}");
    assert_eq!(og["og:url"], page.as_str(), "{og}");
    assert_eq!(og["og:title"], "A & B", "{og}");
    assert_eq!(og["og:site_name"], "Fake Tube", "{og}");
    assert_eq!(og["og:type"], "video.other", "{og}");
    assert_eq!(og["og:video:width"], 640, "{og}");
    assert_eq!(og["og:video:height"], 360, "{og}");
    // The thumbnail is stored as local media, as a page's image is.
    assert_eq!(og["og:image:type"], "image/png", "{og}");
    assert_eq!(og["og:image:width"], 48, "{og}");
    let id = media_id_of(&server, &og["og:image"]);
    let got = download(&server, &download_v1(&server, &id), alice.token()).await;
    assert_eq!(got.bytes, thumbnail);
    // The page itself was never fetched; the answer is kept.
    assert_eq!(site.hits("/video/42"), 0);
    assert_eq!(preview(&server, &alice, &page).await, (StatusCode::OK, og));
    assert_eq!(site.hits(&oembed_path(&page)), 1);

    // No title: the author's name is the title. A failing endpoint leaves
    // the page to preview; a page that fails too is 502.
    let other = format!("{}/video/7", site.base);
    site.serve(
        &oembed_path(&other),
        Page::Body(
            "application/json",
            br#"{"version": "1.0", "type": "link", "author_name": "Only Author"}"#.to_vec(),
        ),
    );
    let (st, og) = preview(&server, &alice, &other).await;
    assert_eq!(st, StatusCode::OK, "{og}");
    assert_eq!(og["og:title"], "Only Author", "{og}");
    assert_eq!(og["og:type"], "website", "{og}");
    let missing = format!("{}/video/404", site.base);
    let (st, body) = preview(&server, &alice, &missing).await;
    assert_error(&(st, body), 502, "M_UNKNOWN");
    assert_eq!(site.hits(&oembed_path(&missing)), 1);
    assert_eq!(site.hits("/video/404"), 1);
}

/// A provider that answers garbage, not JSON, an error or nothing at all
/// (the fetch times out) does not fail the preview: the page itself is
/// previewed from its OpenGraph tags.
#[tokio::test]
async fn a_failing_oembed_provider_leaves_the_page_to_preview() {
    let site = FakeSite::start().await;
    let server = oembed_server_with(&site, |c| c.media.url_preview.timeout_secs = 1).await;
    let alice = server.user("alice").await;
    let page_html = |title: &str| {
        format!(
            r#"<html><head><meta property="og:title" content="{title}">
            <meta property="og:description" content="From the page"></head></html>"#
        )
        .into_bytes()
    };
    for (n, answer) in [
        (
            1,
            Page::Body("application/json", b"{not json at all".to_vec()),
        ),
        (
            2,
            Page::Body("application/json", br#"["an", "array"]"#.to_vec()),
        ),
        (
            3,
            Page::Body(
                "application/json",
                br#"{"version": "2.0", "title": "Wrong version"}"#.to_vec(),
            ),
        ),
        (
            4,
            Page::Body(
                "text/html",
                b"<title>The provider's error page</title>".to_vec(),
            ),
        ),
        (5, Page::Status(500)),
        (6, Page::Hang),
    ] {
        let url = format!("{}/video/{n}", site.base);
        site.serve(&oembed_path(&url), answer);
        let title = format!("Page {n}");
        site.serve(
            &format!("/video/{n}"),
            Page::Body("text/html", page_html(&title)),
        );
        let started = std::time::Instant::now();
        let (st, og) = preview(&server, &alice, &url).await;
        assert_eq!(st, StatusCode::OK, "{n}: {og}");
        assert_eq!(
            og,
            serde_json::json!({"og:title": title, "og:description": "From the page"}),
            "{n}"
        );
        assert_eq!(site.hits(&oembed_path(&url)), 1, "{n}");
        assert_eq!(site.hits(&format!("/video/{n}")), 1, "{n}");
        // The hanging provider is given up on after the timeout.
        assert!(started.elapsed() < Duration::from_secs(20), "{n}");
    }
}

#[tokio::test]
async fn a_page_naming_its_oembed_document_has_it_read() {
    let site = FakeSite::start().await;
    let server = oembed_server(&site).await;
    let alice = server.user("alice").await;
    let url = site.serve(
        "/article",
        Page::Body(
            "text/html",
            br#"<html><head><title>The page title</title>
            <link rel="alternate" type="application/json+oembed" href="/doc.json">
            </head><body>x</body></html>"#
                .to_vec(),
        ),
    );
    site.serve(
        "/doc.json",
        Page::Body(
            "application/json",
            br#"{"version": "1.0", "type": "rich", "title": "oEmbed title",
                 "provider_name": "Fake Blog",
                 "html": "<blockquote><p>Quoted <b>text</b></p></blockquote>"}"#
                .to_vec(),
        ),
    );
    let (st, og) = preview(&server, &alice, &url).await;
    assert_eq!(st, StatusCode::OK, "{og}");
    // The page's own tags win; the oEmbed document fills in the rest.
    assert_eq!(og["og:title"], "The page title", "{og}");
    assert_eq!(og["og:site_name"], "Fake Blog", "{og}");
    assert_eq!(og["og:description"], "Quoted text", "{og}");
    assert_eq!(site.hits("/doc.json"), 1);

    // A document that cannot be fetched leaves the page's tags.
    let plain = site.serve(
        "/broken",
        Page::Body(
            "text/html",
            br#"<title>Still here</title><link rel="alternate" type="application/json+oembed" href="/gone.json">"#
                .to_vec(),
        ),
    );
    let (st, og) = preview(&server, &alice, &plain).await;
    assert_eq!(st, StatusCode::OK, "{og}");
    assert_eq!(og, serde_json::json!({"og:title": "Still here"}));
}
