//! Synapse's media admin API: a user's media (list with paging and order,
//! delete), one media id (info, delete with its thumbnails and body),
//! old media deleted by last access, size and avatar use, quarantine and
//! protection (one, a room's, a user's) and what downloads then see, the
//! remote cache purge, per-user statistics, and every endpoint refusing
//! normal users.

use std::io::Cursor;
use std::time::Duration;

use image::{DynamicImage, ImageFormat, Rgba, RgbaImage};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::*;

const V1: &str = "/_synapse/admin/v1";

fn png() -> Vec<u8> {
    let image = DynamicImage::ImageRgba8(RgbaImage::from_pixel(64, 48, Rgba([200, 10, 10, 255])));
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

fn user_media_path(user: &str) -> String {
    format!("{V1}/users/{}/media", enc(user))
}

fn media_path(server: &TestServer, id: &str) -> String {
    format!("{V1}/media/{}/{id}", server.server_name)
}

fn mxc(server: &TestServer, id: &str) -> String {
    format!("mxc://{}/{id}", server.server_name)
}

fn ids(list: &Value, key: &str) -> Vec<String> {
    list[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {list}"))
        .iter()
        .map(|m| {
            m.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| m["media_id"].as_str().unwrap().to_owned())
        })
        .collect()
}

fn ok(resp: (StatusCode, Value)) -> Value {
    assert_eq!(resp.0, StatusCode::OK, "{}", resp.1);
    resp.1
}

/// POSTs `{}` to `path`.
async fn post(server: &TestServer, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    server.post(path, token, json!({})).await
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn user_media_lists_pages_and_orders() {
    let server = TestServer::start_with_mock_clock(|_| {}).await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let first_ts = server.now_ms();
    let first = upload(
        &server,
        &alice,
        &[1; 300],
        Some("text/plain"),
        Some("a.txt"),
    )
    .await;
    server.advance(Duration::from_secs(10));
    let second = upload(&server, &alice, &[2; 100], Some("image/png"), None).await;
    server.advance(Duration::from_secs(10));
    let third = upload(&server, &alice, &[3; 200], None, Some("c.bin")).await;
    upload(&server, &bob, b"bob's", None, None).await;
    let path = user_media_path(&alice.user_id);

    // Default: newest first, every field of Synapse's shape.
    let all = ok(server.get(&path, admin.token()).await);
    assert_eq!(all["total"], 3, "{all}");
    assert!(all.get("next_token").is_none(), "{all}");
    assert_eq!(
        ids(&all, "media"),
        [third.as_str(), second.as_str(), first.as_str()]
    );
    assert_eq!(
        all["media"][2],
        json!({
            "media_id": first,
            "media_type": "text/plain",
            "media_length": 300,
            "upload_name": "a.txt",
            "created_ts": first_ts,
            "last_access_ts": first_ts,
            "quarantined_by": null,
            "safe_from_quarantine": false,
        })
    );
    assert_eq!(all["media"][0]["media_type"], "application/octet-stream");

    // Pages.
    let page = ok(server.get(&format!("{path}?limit=2"), admin.token()).await);
    assert_eq!(ids(&page, "media"), [third.as_str(), second.as_str()]);
    assert_eq!(
        (page["total"].clone(), page["next_token"].clone()),
        (json!(3), json!(2))
    );
    let rest = ok(server
        .get(&format!("{path}?limit=2&from=2"), admin.token())
        .await);
    assert_eq!(ids(&rest, "media"), [first.as_str()]);
    assert!(rest.get("next_token").is_none(), "{rest}");

    // Orders: a column, forwards by default once one is named.
    for (query, want) in [
        (
            "order_by=media_length",
            [second.as_str(), third.as_str(), first.as_str()],
        ),
        (
            "order_by=media_length&dir=b",
            [first.as_str(), third.as_str(), second.as_str()],
        ),
        (
            "order_by=created_ts",
            [first.as_str(), second.as_str(), third.as_str()],
        ),
        ("dir=b", [third.as_str(), second.as_str(), first.as_str()]),
        (
            "order_by=upload_name",
            [first.as_str(), third.as_str(), second.as_str()],
        ),
    ] {
        let got = ok(server.get(&format!("{path}?{query}"), admin.token()).await);
        assert_eq!(ids(&got, "media"), want, "{query}");
    }
    // No media: an empty list.
    let none = ok(server
        .get(&user_media_path(&admin.user_id), admin.token())
        .await);
    assert_eq!(
        (none["media"].clone(), none["total"].clone()),
        (json!([]), json!(0))
    );

    for (query, errcode) in [
        ("order_by=size", "M_INVALID_PARAM"),
        ("dir=x", "M_INVALID_PARAM"),
        ("from=-1", "M_INVALID_PARAM"),
        ("limit=many", "M_INVALID_PARAM"),
    ] {
        let got = server.get(&format!("{path}?{query}"), admin.token()).await;
        assert_error_for(query, &got, 400, errcode);
    }
    let unknown = server
        .get(&user_media_path("@nobody:test.local"), admin.token())
        .await;
    assert_error(&unknown, 404, "M_NOT_FOUND");
    let remote = server
        .get(&user_media_path("@bob:remote.example"), admin.token())
        .await;
    assert_error(&remote, 400, "M_INVALID_PARAM");
    assert_error(&server.get(&path, alice.token()).await, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn deleting_a_users_media_takes_the_page_asked_for() {
    let server = TestServer::start_with_mock_clock(|_| {}).await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let old = upload(&server, &alice, b"old", None, None).await;
    server.advance(Duration::from_secs(1));
    let new = upload(&server, &alice, b"new", None, None).await;
    let path = user_media_path(&alice.user_id);

    let gone = ok(server
        .delete(&format!("{path}?limit=1"), admin.token(), None)
        .await);
    assert_eq!(gone, json!({"deleted_media": [new], "total": 1}));
    let got = download(&server, &download_v1(&server, &new), alice.token()).await;
    assert_error(&got.error(), 404, "M_NOT_FOUND");
    let left = ok(server.get(&path, admin.token()).await);
    assert_eq!(ids(&left, "media"), [old.as_str()]);

    let gone = ok(server.delete(&path, admin.token(), None).await);
    assert_eq!(gone, json!({"deleted_media": [old], "total": 1}));
    assert!(stored_bodies(&server).is_empty());
    let gone = ok(server.delete(&path, admin.token(), None).await);
    assert_eq!(gone, json!({"deleted_media": [], "total": 0}));

    let unknown = server
        .delete(&user_media_path("@nobody:test.local"), admin.token(), None)
        .await;
    assert_error(&unknown, 404, "M_NOT_FOUND");
    let bad = server
        .delete(&format!("{path}?order_by=nope"), admin.token(), None)
        .await;
    assert_error(&bad, 400, "M_INVALID_PARAM");
    assert_error(
        &server.delete(&path, alice.token(), None).await,
        403,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn media_info_and_deleting_one_media_with_its_thumbnails_and_body() {
    // No thumbnails made in the background: only the one asked for below.
    let server = TestServer::start_with(|c| c.media.thumbnail_sizes.clear()).await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let image = png();
    let id = upload(&server, &alice, &image, Some("image/png"), Some("red.png")).await;
    // Same bytes again: one body for both.
    let twin = upload(&server, &alice, &image, Some("image/png"), None).await;
    let thumb = format!(
        "/_matrix/client/v1/media/thumbnail/{}/{id}?width=17&height=13&method=scale",
        server.server_name
    );
    assert_eq!(
        download(&server, &thumb, alice.token()).await.status,
        StatusCode::OK
    );

    let info = ok(server.get(&media_path(&server, &id), admin.token()).await);
    let m = &info["media_info"];
    assert_eq!(m["media_id"], id.as_str(), "{info}");
    assert_eq!(m["user_id"], alice.user_id.as_str());
    assert_eq!(m["media_type"], "image/png");
    assert_eq!(m["media_length"], image.len());
    assert_eq!(m["upload_name"], "red.png");
    assert_eq!(m["quarantined_by"], Value::Null);
    assert_eq!(m["safe_from_quarantine"], false);
    assert_eq!(m["authenticated"], true);
    assert_eq!(m["media_origin"], Value::Null);
    assert_eq!(m["sha256"].as_str().map(str::len), Some(64));
    for key in ["created_ts", "last_access_ts"] {
        assert!(m[key].is_i64(), "{key}: {info}");
    }

    let bodies = stored_bodies(&server).len();
    let gone = ok(server
        .delete(&media_path(&server, &id), admin.token(), None)
        .await);
    assert_eq!(gone, json!({"deleted_media": [id], "total": 1}));
    assert_error(
        &server.get(&media_path(&server, &id), admin.token()).await,
        404,
        "M_NOT_FOUND",
    );
    let got = download(&server, &download_v1(&server, &id), admin.token()).await;
    assert_error(&got.error(), 404, "M_NOT_FOUND");
    assert_eq!(
        server
            .sql_count(&format!(
                "SELECT COUNT(*) FROM media_thumbnails WHERE media_id = '{}'",
                sql_quote(&id)
            ))
            .await,
        0
    );
    // The thumbnail's body went; the twin's (shared) body stayed.
    assert_eq!(stored_bodies(&server).len(), bodies - 1);
    let got = download(&server, &download_v1(&server, &twin), alice.token()).await;
    assert_eq!((got.status, got.bytes), (StatusCode::OK, image.clone()));
    ok(server
        .delete(&media_path(&server, &twin), admin.token(), None)
        .await);
    assert!(stored_bodies(&server).is_empty());

    // Unknown and remote media.
    for resp in [
        server
            .get(&media_path(&server, "nosuchmedia"), admin.token())
            .await,
        server
            .delete(&media_path(&server, "nosuchmedia"), admin.token(), None)
            .await,
        server
            .get(&format!("{V1}/media/remote.example/abc"), admin.token())
            .await,
    ] {
        assert_error(&resp, 404, "M_NOT_FOUND");
    }
    let remote = server
        .delete(
            &format!("{V1}/media/remote.example/abc"),
            admin.token(),
            None,
        )
        .await;
    assert_error(&remote, 400, "M_UNKNOWN");
}

#[tokio::test]
async fn delete_before_keeps_new_small_protected_quarantined_and_avatar_media() {
    let server = TestServer::start_with_mock_clock(|_| {}).await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let big = |n: u8| vec![n; 1000];
    let small = upload(&server, &alice, &[0; 10], None, None).await;
    let large = upload(&server, &alice, &big(1), None, None).await;
    let avatar = upload(&server, &alice, &big(2), Some("image/png"), None).await;
    let room_avatar = upload(&server, &alice, &big(3), Some("image/png"), None).await;
    let protected = upload(&server, &alice, &big(4), None, None).await;
    let quarantined = upload(&server, &alice, &big(5), None, None).await;
    let accessed = upload(&server, &alice, &big(6), None, None).await;
    let (st, body) = server
        .put(
            &format!(
                "/_matrix/client/v3/profile/{}/avatar_url",
                enc(&alice.user_id)
            ),
            alice.token(),
            json!({"avatar_url": mxc(&server, &avatar)}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let room = create_room(&server, &alice, json!({})).await;
    set_state(
        &server,
        &alice,
        &room,
        "m.room.avatar",
        "",
        json!({"url": mxc(&server, &room_avatar)}),
    )
    .await;
    ok(post(
        &server,
        &format!("{V1}/media/protect/{protected}"),
        admin.token(),
    )
    .await);
    ok(post(
        &server,
        &format!("{V1}/media/quarantine/{}/{quarantined}", server.server_name),
        admin.token(),
    )
    .await);
    server.advance(Duration::from_secs(3600));
    let before = server.now_ms();
    server.advance(Duration::from_secs(1));
    // Accessed after the cut-off: last access counts, not upload time.
    assert_eq!(
        download(&server, &download_v1(&server, &accessed), alice.token())
            .await
            .status,
        StatusCode::OK
    );
    server.advance(Duration::from_secs(1));
    let new = upload(&server, &alice, &big(7), None, None).await;

    let delete = |query: String| {
        let server = &server;
        let admin = &admin;
        async move { ok(post(server, &format!("{V1}/media/delete?{query}"), admin.token()).await) }
    };
    let first = delete(format!("before_ts={before}&size_gt=100")).await;
    assert_eq!(first, json!({"deleted_media": [large], "total": 1}));
    let second = delete(format!(
        "before_ts={before}&size_gt=100&keep_profiles=false"
    ))
    .await;
    assert_eq!(
        sorted(ids(&second, "deleted_media")),
        sorted(vec![avatar.clone(), room_avatar.clone()])
    );
    assert_eq!(second["total"], 2);
    // The older path, naming this server; no size floor now.
    let third = ok(post(
        &server,
        &format!(
            "{V1}/media/{}/delete?before_ts={before}",
            server.server_name
        ),
        admin.token(),
    )
    .await);
    assert_eq!(third, json!({"deleted_media": [small], "total": 1}));
    let left = ok(server
        .get(&user_media_path(&alice.user_id), admin.token())
        .await);
    assert_eq!(
        sorted(ids(&left, "media")),
        sorted(vec![protected, quarantined, accessed, new])
    );

    let path = format!("{V1}/media/delete");
    for (query, status, errcode) in [
        (String::new(), 400, "M_MISSING_PARAM"),
        ("before_ts=1000".to_owned(), 400, "M_INVALID_PARAM"),
        ("before_ts=-5".to_owned(), 400, "M_INVALID_PARAM"),
        (
            format!("before_ts={before}&size_gt=-1"),
            400,
            "M_INVALID_PARAM",
        ),
        (
            format!("before_ts={before}&keep_profiles=maybe"),
            400,
            "M_INVALID_PARAM",
        ),
    ] {
        let got = post(&server, &format!("{path}?{query}"), admin.token()).await;
        assert_error_for(&query, &got, status, errcode);
    }
    let other = post(
        &server,
        &format!("{V1}/media/remote.example/delete?before_ts={before}"),
        admin.token(),
    )
    .await;
    assert_error(&other, 400, "M_UNKNOWN");
    let refused = post(
        &server,
        &format!("{path}?before_ts={before}"),
        alice.token(),
    )
    .await;
    assert_error(&refused, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn quarantine_hides_media_from_all_but_admins_and_protection_prevents_it() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let id = upload(&server, &alice, &png(), Some("image/png"), None).await;
    let quarantine = format!("{V1}/media/quarantine/{}/{id}", server.server_name);
    let unquarantine = format!("{V1}/media/unquarantine/{}/{id}", server.server_name);
    let thumb = format!(
        "/_matrix/client/v1/media/thumbnail/{}/{id}?width=32&height=32&method=crop",
        server.server_name
    );
    let status = |token: Option<&str>, path: String| {
        let server = &server;
        let token = token.map(str::to_owned);
        async move { download(server, &path, token.as_deref()).await.status }
    };

    assert_eq!(
        ok(post(&server, &quarantine, admin.token()).await),
        json!({})
    );
    let info = ok(server.get(&media_path(&server, &id), admin.token()).await);
    assert_eq!(info["media_info"]["quarantined_by"], admin.user_id.as_str());
    for path in [download_v1(&server, &id), thumb.clone()] {
        assert_eq!(
            status(alice.token(), path.clone()).await,
            StatusCode::NOT_FOUND,
            "{path}"
        );
        assert_eq!(
            status(admin.token(), path.clone()).await,
            StatusCode::OK,
            "{path}"
        );
    }
    assert_eq!(
        ok(post(&server, &unquarantine, admin.token()).await),
        json!({})
    );
    assert_eq!(
        status(alice.token(), download_v1(&server, &id)).await,
        StatusCode::OK
    );

    // Protected: quarantine answers as Synapse does but leaves it served.
    let protect = format!("{V1}/media/protect/{id}");
    assert_eq!(ok(post(&server, &protect, admin.token()).await), json!({}));
    ok(post(&server, &quarantine, admin.token()).await);
    assert_eq!(
        status(alice.token(), download_v1(&server, &id)).await,
        StatusCode::OK
    );
    let info = ok(server.get(&media_path(&server, &id), admin.token()).await);
    assert_eq!(info["media_info"]["safe_from_quarantine"], true);
    assert_eq!(info["media_info"]["quarantined_by"], Value::Null);
    // Unprotected: quarantine works again.
    ok(post(
        &server,
        &format!("{V1}/media/unprotect/{id}"),
        admin.token(),
    )
    .await);
    ok(post(&server, &quarantine, admin.token()).await);
    assert_eq!(
        status(alice.token(), download_v1(&server, &id)).await,
        StatusCode::NOT_FOUND
    );

    for path in [
        format!("{V1}/media/quarantine/{}/nosuchmedia", server.server_name),
        format!("{V1}/media/unquarantine/{}/nosuchmedia", server.server_name),
        format!("{V1}/media/quarantine/remote.example/abc"),
        format!("{V1}/media/protect/nosuchmedia"),
        format!("{V1}/media/unprotect/nosuchmedia"),
    ] {
        assert_error_for(
            &path,
            &post(&server, &path, admin.token()).await,
            404,
            "M_NOT_FOUND",
        );
        assert_error_for(
            &path,
            &post(&server, &path, alice.token()).await,
            403,
            "M_FORBIDDEN",
        );
    }
}

#[tokio::test]
async fn a_users_and_a_rooms_media_are_quarantined_except_protected_media() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let a1 = upload(&server, &alice, b"a1", None, None).await;
    let a2 = upload(&server, &alice, b"a2", None, None).await;
    let a3 = upload(&server, &alice, b"a3", None, None).await;
    let b1 = upload(&server, &bob, b"b1", None, None).await;
    ok(post(&server, &format!("{V1}/media/protect/{a3}"), admin.token()).await);

    let by_user = format!("{V1}/user/{}/media/quarantine", enc(&alice.user_id));
    let got = ok(post(&server, &by_user, admin.token()).await);
    assert_eq!(got, json!({"num_quarantined": 2}));
    for (id, status) in [(&a1, 404), (&a2, 404), (&a3, 200), (&b1, 200)] {
        let got = download(&server, &download_v1(&server, id), bob.token()).await;
        assert_eq!(got.status.as_u16(), status, "{id}");
    }
    let unknown = format!("{V1}/user/{}/media/quarantine", enc("@nobody:test.local"));
    assert_error(
        &post(&server, &unknown, admin.token()).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &post(&server, &by_user, bob.token()).await,
        403,
        "M_FORBIDDEN",
    );

    // A room: the url and thumbnail_url of its events, local and remote.
    let room = create_room(&server, &bob, json!({})).await;
    let image = upload(&server, &bob, b"image", Some("image/png"), None).await;
    let thumbnail = upload(&server, &bob, b"thumb", Some("image/png"), None).await;
    let file = upload(&server, &bob, b"file", None, None).await;
    let remote = "mxc://remote.example/elsewhere";
    send_event(
        &server,
        &bob,
        &room,
        "m.room.message",
        json!({"msgtype": "m.image", "body": "i", "url": mxc(&server, &image),
               "info": {"thumbnail_url": mxc(&server, &thumbnail)}}),
    )
    .await;
    send_event(
        &server,
        &bob,
        &room,
        "m.room.message",
        json!({"msgtype": "m.file", "body": "f", "url": mxc(&server, &file)}),
    )
    .await;
    send_event(
        &server,
        &bob,
        &room,
        "m.room.message",
        json!({"msgtype": "m.image", "body": "r", "url": remote}),
    )
    .await;
    // Named twice: listed once. Only mentioned in a body: not media.
    send_event(
        &server,
        &bob,
        &room,
        "m.room.message",
        json!({"msgtype": "m.file", "body": "again", "url": mxc(&server, &file)}),
    )
    .await;
    send_text(&server, &bob, &room, &format!("see {}", mxc(&server, &b1))).await;
    ok(post(
        &server,
        &format!("{V1}/media/protect/{file}"),
        admin.token(),
    )
    .await);

    let media_path = format!("{V1}/room/{}/media", enc(&room));
    let listed = ok(server.get(&media_path, admin.token()).await);
    assert_eq!(
        listed,
        json!({
            "local": [mxc(&server, &file), mxc(&server, &image), mxc(&server, &thumbnail)],
            "remote": [remote],
        })
    );
    let got = ok(post(&server, &format!("{media_path}/quarantine"), admin.token()).await);
    assert_eq!(got, json!({"num_quarantined": 2}));
    for (id, status) in [(&image, 404), (&thumbnail, 404), (&file, 200), (&b1, 200)] {
        let got = download(&server, &download_v1(&server, id), bob.token()).await;
        assert_eq!(got.status.as_u16(), status, "{id}");
    }
    // Synapse's older path.
    let got = ok(post(
        &server,
        &format!("{V1}/quarantine_media/{}", enc(&room)),
        admin.token(),
    )
    .await);
    assert_eq!(got, json!({"num_quarantined": 2}));

    for path in [
        format!("{V1}/room/{}/media", enc("!unknown:test.local")),
        format!("{V1}/room/{}/media/quarantine", enc("!unknown:test.local")),
    ] {
        let method = if path.ends_with("quarantine") {
            Method::POST
        } else {
            Method::GET
        };
        let got = server
            .request(method.clone(), &path, admin.token(), Some(json!({})))
            .await;
        assert_error_for(&path, &got, 404, "M_NOT_FOUND");
        let bad = path.replace(&enc("!unknown:test.local"), "notaroom");
        let got = server
            .request(method.clone(), &bad, admin.token(), Some(json!({})))
            .await;
        assert_error_for(&bad, &got, 400, "M_INVALID_PARAM");
        let got = server
            .request(method, &path, bob.token(), Some(json!({})))
            .await;
        assert_error_for(&path, &got, 403, "M_FORBIDDEN");
    }
}

#[tokio::test]
async fn user_media_statistics_filter_order_and_page() {
    let server = TestServer::start_with_mock_clock(|_| {}).await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    set_displayname(&server, &alice, "Alice Liddell").await;
    set_displayname(&server, &bob, "Bobby").await;
    let start = server.now_ms();
    upload(&server, &alice, &[1; 100], None, None).await;
    upload(&server, &alice, &[2; 50], None, None).await;
    server.advance(Duration::from_secs(60));
    let later = server.now_ms();
    upload(&server, &bob, &[3; 500], None, None).await;
    let _ = carol;
    let path = format!("{V1}/statistics/users/media");

    let all = ok(server.get(&path, admin.token()).await);
    assert_eq!(
        all,
        json!({
            "users": [
                {"user_id": alice.user_id, "displayname": "Alice Liddell", "media_count": 2, "media_length": 150},
                {"user_id": bob.user_id, "displayname": "Bobby", "media_count": 1, "media_length": 500},
            ],
            "total": 2,
        })
    );
    let names = |v: &Value| -> Vec<String> {
        v["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["user_id"].as_str().unwrap().to_owned())
            .collect()
    };
    for (query, want) in [
        (
            "order_by=media_length&dir=b",
            vec![bob.user_id.as_str(), alice.user_id.as_str()],
        ),
        (
            "order_by=media_count&dir=b",
            vec![alice.user_id.as_str(), bob.user_id.as_str()],
        ),
        (
            "order_by=displayname&dir=b",
            vec![bob.user_id.as_str(), alice.user_id.as_str()],
        ),
        ("search_term=LIDDELL", vec![alice.user_id.as_str()]),
        ("search_term=bob", vec![bob.user_id.as_str()]),
    ] {
        let got = ok(server.get(&format!("{path}?{query}"), admin.token()).await);
        assert_eq!(names(&got), want, "{query}: {got}");
    }
    let early = ok(server
        .get(
            &format!("{path}?from_ts={start}&until_ts={}", later - 1),
            admin.token(),
        )
        .await);
    assert_eq!(names(&early), [alice.user_id.as_str()]);
    let late = ok(server
        .get(&format!("{path}?from_ts={later}"), admin.token())
        .await);
    assert_eq!(names(&late), [bob.user_id.as_str()]);
    let page = ok(server.get(&format!("{path}?limit=1"), admin.token()).await);
    assert_eq!(
        (
            names(&page),
            page["next_token"].clone(),
            page["total"].clone()
        ),
        (vec![alice.user_id.clone()], json!(1), json!(2))
    );
    let rest = ok(server
        .get(&format!("{path}?limit=1&from=1"), admin.token())
        .await);
    assert_eq!(names(&rest), [bob.user_id.as_str()]);
    assert!(rest.get("next_token").is_none(), "{rest}");

    for query in [
        "order_by=size".to_owned(),
        "dir=up".to_owned(),
        "from=-1".to_owned(),
        "limit=-1".to_owned(),
        "from_ts=-1".to_owned(),
        format!("from_ts={later}&until_ts={later}"),
        "search_term=".to_owned(),
    ] {
        let got = server.get(&format!("{path}?{query}"), admin.token()).await;
        assert_error_for(&query, &got, 400, "M_INVALID_PARAM");
    }
    assert_error(&server.get(&path, alice.token()).await, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn purge_media_cache_has_no_remote_cache_to_purge() {
    let server = TestServer::start().await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    let id = upload(&server, &alice, b"local media stays", None, None).await;
    let path = format!("{V1}/purge_media_cache");
    let got = ok(post(
        &server,
        &format!("{path}?before_ts={}", now_ms() + 1000),
        admin.token(),
    )
    .await);
    assert_eq!(got, json!({"deleted": 0}));
    let still = download(&server, &download_v1(&server, &id), alice.token()).await;
    assert_eq!(still.status, StatusCode::OK);
    assert_error(
        &post(&server, &path, admin.token()).await,
        400,
        "M_MISSING_PARAM",
    );
    let seconds = post(
        &server,
        &format!("{path}?before_ts=1700000000"),
        admin.token(),
    )
    .await;
    assert_error(&seconds, 400, "M_INVALID_PARAM");
    let refused = post(
        &server,
        &format!("{path}?before_ts={}", now_ms()),
        alice.token(),
    )
    .await;
    assert_error(&refused, 403, "M_FORBIDDEN");
    let anonymous = server
        .post(&format!("{path}?before_ts={}", now_ms()), None, json!({}))
        .await;
    assert_error(&anonymous, 401, "M_MISSING_TOKEN");
}
