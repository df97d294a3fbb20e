//! Media through matrix-sdk: alice sends an image and a file with
//! `send_attachment`, bob gets both events through /sync and downloads
//! both and a thumbnail of the image (the SDK uses the authenticated
//! `/_matrix/client/v1/media` endpoints, as the server advertises them);
//! alice uploads an avatar that carol, a third user, sees on alice's
//! member event and downloads.

use std::io::Cursor;

use matrix_sdk::Client;
use matrix_sdk::attachment::AttachmentConfig;
use matrix_sdk::media::{MediaFormat, MediaRequestParameters, MediaThumbnailSettings};
use matrix_sdk::ruma::api::client::room::create_room::v3::{
    Request as CreateRoomRequest, RoomPreset,
};
use matrix_sdk::ruma::events::room::MediaSource;
use matrix_sdk::ruma::events::room::message::MessageType;
use matrix_sdk::ruma::events::{
    AnySyncMessageLikeEvent, AnySyncTimelineEvent, SyncMessageLikeEvent,
};
use matrix_sdk::ruma::{UserId, uint};

use crate::sdk::{deserialize, sync_once, sync_until};
use crate::server::TestServer;

/// A `width`×`height` PNG.
fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbaImage::from_fn(width, height, |x, y| {
        image::Rgba([(x % 256) as u8, (y % 256) as u8, 200, 255])
    });
    let mut out = Cursor::new(Vec::new());
    image
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("encoded");
    out.into_inner()
}

async fn fetch(client: &Client, who: &str, source: MediaSource, format: MediaFormat) -> Vec<u8> {
    client
        .media()
        .get_media_content(&MediaRequestParameters { source, format }, false)
        .await
        .unwrap_or_else(|e| panic!("{who}: SDK get_media_content failed: {e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_thumbnails_and_avatars_through_matrix_sdk() {
    let s = TestServer::start().await;
    let alice = s.logged_in("alice").await;
    let bob = s.logged_in("bob").await;
    let carol = s.logged_in("carol").await;
    for (c, who) in [(&alice, "alice"), (&bob, "bob"), (&carol, "carol")] {
        sync_once(c, who).await;
    }
    let mut req = CreateRoomRequest::new();
    req.preset = Some(RoomPreset::PublicChat);
    let room = alice
        .create_room(req)
        .await
        .unwrap_or_else(|e| panic!("alice: SDK create_room failed: {e:?}"));
    let room_id = room.room_id().to_owned();
    for (c, who) in [(&bob, "bob"), (&carol, "carol")] {
        c.join_room_by_id(&room_id)
            .await
            .unwrap_or_else(|e| panic!("{who}: SDK join failed: {e:?}"));
    }

    // Alice sends an image and a file.
    let image = png(120, 90);
    room.send_attachment(
        "picture.png",
        &mime::IMAGE_PNG,
        image.clone(),
        AttachmentConfig::new(),
    )
    .await
    .unwrap_or_else(|e| panic!("alice: SDK send_attachment (image) failed: {e:?}"));
    let file = b"a file sent through matrix-sdk\n".repeat(40);
    room.send_attachment(
        "notes.txt",
        &mime::TEXT_PLAIN,
        file.clone(),
        AttachmentConfig::new(),
    )
    .await
    .unwrap_or_else(|e| panic!("alice: SDK send_attachment (file) failed: {e:?}"));

    // Bob gets both events and downloads both bodies and a thumbnail.
    let mut sources: Vec<(String, MediaSource)> = Vec::new();
    sync_until(&bob, "bob", "the image and the file events", |r| {
        if let Some(joined) = r.rooms.joined.get(&room_id) {
            for ev in &joined.timeline.events {
                if let AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(
                    SyncMessageLikeEvent::Original(m),
                )) = deserialize(ev)
                {
                    match m.content.msgtype {
                        MessageType::Image(c) => sources.push(("image".into(), c.source)),
                        MessageType::File(c) => sources.push(("file".into(), c.source)),
                        _ => {}
                    }
                }
            }
        }
        sources.len() == 2
    })
    .await;
    let [(first, image_source), (second, file_source)] = <[_; 2]>::try_from(sources).unwrap();
    assert_eq!((first.as_str(), second.as_str()), ("image", "file"));
    assert_eq!(
        fetch(&bob, "bob", image_source.clone(), MediaFormat::File).await,
        image
    );
    assert_eq!(
        fetch(&bob, "bob", file_source, MediaFormat::File).await,
        file
    );
    let thumb = fetch(
        &bob,
        "bob",
        image_source,
        MediaFormat::Thumbnail(MediaThumbnailSettings::new(uint!(32), uint!(32))),
    )
    .await;
    let thumb = image::load_from_memory(&thumb).expect("the thumbnail is an image");
    assert!(
        thumb.width() <= 120 && thumb.height() <= 90 && thumb.width() >= 32,
        "thumbnail {}x{}",
        thumb.width(),
        thumb.height()
    );

    // Alice's avatar: carol sees it on alice's member event and downloads it.
    let avatar = png(64, 64);
    let avatar_uri = alice
        .account()
        .upload_avatar(&mime::IMAGE_PNG, avatar.clone())
        .await
        .unwrap_or_else(|e| panic!("alice: SDK upload_avatar failed: {e:?}"));
    let alice_id = UserId::parse(s.user_id("alice")).unwrap();
    let carol_room_id = room_id.clone();
    sync_until(
        &carol,
        "carol",
        "alice's member event with her avatar",
        |_| true,
    )
    .await;
    let mut seen = None;
    for _ in 0..50 {
        let member = carol
            .get_room(&carol_room_id)
            .expect("carol: the SDK knows the room")
            .get_member(&alice_id)
            .await
            .unwrap_or_else(|e| panic!("carol: SDK get_member failed: {e:?}"));
        seen = member.and_then(|m| m.avatar_url().map(ToOwned::to_owned));
        if seen.as_ref() == Some(&avatar_uri) {
            break;
        }
        sync_once(&carol, "carol").await;
    }
    assert_eq!(
        seen.as_ref(),
        Some(&avatar_uri),
        "carol sees alice's avatar"
    );
    let got = fetch(
        &carol,
        "carol",
        MediaSource::Plain(avatar_uri),
        MediaFormat::File,
    )
    .await;
    assert_eq!(got, avatar);
}
