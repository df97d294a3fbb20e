//! Element X's engine (matrix-sdk-ui, the same 0.18 line as matrix-sdk)
//! against Myelin's simplified sliding sync (MSC4186): `SyncService` and its
//! `RoomListService` list the rooms with their latest event and unread
//! counts, a room's `Timeline` paginates back to the room's creation and
//! shows a new message live, a room upgrade shows its successor, and
//! `SpaceService` shows a space's children (through /hierarchy).
//!
//! The services run their own background sync loops; the tests wait on what
//! the SDK reports (room list diffs, timeline diffs) with a bound, or poll a
//! room's accessors with a bound where the SDK has no stream for them.

use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use matrix_sdk::ruma::api::client::receipt::create_receipt::v3::ReceiptType;
use matrix_sdk::ruma::api::client::room::create_room::v3::{
    CreationContent, Request as CreateRoomRequest,
};
use matrix_sdk::ruma::api::client::room::upgrade_room::v3::Request as UpgradeRoomRequest;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::events::space::child::SpaceChildEventContent;
use matrix_sdk::ruma::room::RoomType;
use matrix_sdk::ruma::serde::Raw;
use matrix_sdk::ruma::{OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, RoomVersionId};
use matrix_sdk::{Client, RoomDisplayName, RoomState};
use matrix_sdk_ui::eyeball_im::{Vector, VectorDiff};
use matrix_sdk_ui::notification_client::{
    NotificationClient, NotificationEvent, NotificationProcessSetup, NotificationStatus,
};
use matrix_sdk_ui::room_list_service::filters::{
    new_filter_all, new_filter_deduplicate_versions, new_filter_non_left,
};
use matrix_sdk_ui::room_list_service::{RoomList, RoomListDynamicEntriesController, RoomListItem};
use matrix_sdk_ui::spaces::SpaceService;
use matrix_sdk_ui::sync_service::SyncService;
use matrix_sdk_ui::timeline::{LatestEventValue, RoomExt, TimelineItem, TimelineItemContent};

use crate::server::TestServer;

/// How long a test waits for the SDK to report something.
const DEADLINE: Duration = Duration::from_secs(20);
/// Between two looks at a room's accessors while polling.
const POLL: Duration = Duration::from_millis(50);

/// Polls `check` until it returns `Ok`, failing the test after [`DEADLINE`]
/// with `what` and the last `Err` it gave (what it saw instead).
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => assert!(
                start.elapsed() < DEADLINE,
                "gave up after {DEADLINE:?} waiting for {what}; last seen: {last}"
            ),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Applies room list diffs from `stream` to `rooms` until `done` holds for
/// it, failing the test after [`DEADLINE`] with `what`.
async fn room_list_until(
    stream: &mut (impl futures_util::Stream<Item = Vec<VectorDiff<RoomListItem>>> + Unpin),
    rooms: &mut Vector<RoomListItem>,
    what: &str,
    done: impl Fn(&Vector<RoomListItem>) -> bool,
) {
    let start = Instant::now();
    while !done(rooms) {
        let left = DEADLINE.saturating_sub(start.elapsed());
        let diffs = tokio::time::timeout(left, stream.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "gave up after {DEADLINE:?} waiting for {what} in the room list; it has {:?}",
                    ids(rooms)
                )
            })
            .expect("the room list stream ended");
        for diff in diffs {
            diff.apply(rooms);
        }
    }
}

/// The room list's entries as Element X's main list shows them at first:
/// every room not left, in pages of 50.
fn non_left_entries(
    all_rooms: &RoomList,
) -> (
    impl futures_util::Stream<Item = Vec<VectorDiff<RoomListItem>>> + '_,
    RoomListDynamicEntriesController,
) {
    let (stream, controller) = all_rooms.entries_with_dynamic_adapters(50);
    controller.set_filter(Box::new(new_filter_non_left()));
    (stream, controller)
}

fn ids(rooms: &Vector<RoomListItem>) -> Vec<OwnedRoomId> {
    rooms.iter().map(|r| r.room_id().to_owned()).collect()
}

fn lists(rooms: &Vector<RoomListItem>, room_id: &RoomId) -> bool {
    rooms.iter().any(|r| r.room_id() == room_id)
}

/// Starts Element X's sync for `client`: a `SyncService` (which runs the
/// `RoomListService`'s sliding sync loop).
async fn start_sync(client: &Client) -> SyncService {
    let sync = SyncService::builder(client.clone())
        .build()
        .await
        .unwrap_or_else(|e| panic!("SyncService builds: {e:?}"));
    sync.start().await;
    sync
}

/// The message bodies among timeline items, oldest first.
fn timeline_bodies(items: &Vector<Arc<TimelineItem>>) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| i.as_event())
        .filter_map(|e| e.content().as_message().map(|m| m.body().to_owned()))
        .collect()
}

/// What `room`'s latest event is (as Element X's room list shows it), as a
/// body for a message or a label for anything else.
async fn latest_body(client: &Client, room_id: &RoomId) -> Result<String, String> {
    let room = client
        .get_room(room_id)
        .ok_or_else(|| "the SDK does not know the room".to_owned())?;
    match room.latest_event().await {
        LatestEventValue::Remote { content, .. } => content
            .as_message()
            .map(|m| m.body().to_owned())
            .ok_or_else(|| format!("a latest event that is no message: {content:?}")),
        other => Err(format!("latest_event() is {other:?}")),
    }
}

/// Waits until the server's notification count of `room` (from sliding
/// sync) is `n`.
async fn notification_count_becomes(room: &matrix_sdk::Room, n: u64) {
    eventually(
        &format!("{}'s notification count {n}", room.room_id()),
        async || {
            let counts = room.unread_notification_counts();
            if counts.notification_count == n {
                Ok(())
            } else {
                Err(format!("{counts:?}"))
            }
        },
    )
    .await;
}

/// Waits until `room_id`'s latest event (as the room list shows it) is a
/// message with `body`.
async fn latest_body_becomes(client: &Client, room_id: &RoomId, body: &str) {
    eventually(&format!("{room_id}'s latest event {body:?}"), async || {
        latest_body(client, room_id)
            .await
            .and_then(|b| if b == body { Ok(()) } else { Err(b) })
    })
    .await;
}

/// A room `creator` names `name` and invites `member` (`member_id`) to,
/// which `member` joins (plain client-server calls, before any sync).
/// Returns the creator's handle on it.
async fn shared_room(
    creator: &Client,
    member: &Client,
    member_id: &OwnedUserId,
    name: &str,
) -> matrix_sdk::Room {
    let mut req = CreateRoomRequest::new();
    req.name = Some(name.to_owned());
    req.invite = vec![member_id.clone()];
    let room = creator
        .create_room(req)
        .await
        .unwrap_or_else(|e| panic!("create_room {name} failed: {e:?}"));
    member
        .join_room_by_id(room.room_id())
        .await
        .unwrap_or_else(|e| panic!("join {name} failed: {e:?}"));
    room
}

async fn send_text(room: &matrix_sdk::Room, who: &str, body: &str) {
    room.send(RoomMessageEventContent::text_plain(body))
        .await
        .unwrap_or_else(|e| panic!("{who}: SDK send {body:?} failed: {e:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_list_latest_event_unread_counts_timeline_back_pagination_and_live() {
    let s = TestServer::start().await;
    let alice = s.logged_in("alice").await;
    let bob = s.logged_in("bob").await;
    let alice_id = OwnedUserId::try_from(s.user_id("alice")).unwrap();

    // bob creates two rooms with alice invited; alice joins both (plain
    // HTTP through the SDK, before Element X's sync starts).
    let mut rooms = Vec::new();
    for name in ["chat", "quiet"] {
        rooms.push(shared_room(&bob, &alice, &alice_id, name).await);
    }
    let (chat, quiet) = (&rooms[0], &rooms[1]);
    // An unnamed room bob invites alice to, which she joins from the list.
    let mut req = CreateRoomRequest::new();
    req.invite = vec![alice_id.clone()];
    let unnamed = bob
        .create_room(req)
        .await
        .unwrap_or_else(|e| panic!("bob: create_room failed: {e:?}"));
    // 30 messages in "chat" (more than one back-pagination page), one in
    // "quiet".
    const N: usize = 30;
    for i in 0..N {
        send_text(chat, "bob", &format!("message {i}")).await;
    }
    send_text(quiet, "bob", "only message").await;

    let sync = start_sync(&alice).await;
    let room_list_service = sync.room_list_service();
    let all_rooms = room_list_service.all_rooms().await.expect("all_rooms");
    let (stream, _controller) = non_left_entries(&all_rooms);
    let mut stream = pin!(stream);
    let mut listed = Vector::new();
    room_list_until(&mut stream, &mut listed, "the three rooms", |r| {
        lists(r, chat.room_id()) && lists(r, quiet.room_id()) && lists(r, unnamed.room_id())
    })
    .await;
    // Element X subscribes to the visible rooms, which computes their
    // latest events.
    room_list_service
        .subscribe_to_rooms(&[chat.room_id(), quiet.room_id(), unnamed.room_id()])
        .await;

    // The invite: its latest event names the inviter; alice joins it and
    // the room takes its name from its heroes (bob).
    let invited = alice
        .get_room(unnamed.room_id())
        .expect("alice knows the invite");
    assert_eq!(invited.state(), RoomState::Invited);
    let bob_id = OwnedUserId::try_from(s.user_id("bob")).unwrap();
    eventually("the invite's latest event", async || {
        match invited.latest_event().await {
            LatestEventValue::RemoteInvite { inviter, .. } if inviter.as_ref() == Some(&bob_id) => {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    invited
        .join()
        .await
        .unwrap_or_else(|e| panic!("alice: join the invite: {e:?}"));
    eventually(
        "the joined unnamed room named after bob",
        async || match invited.display_name().await {
            Ok(RoomDisplayName::Calculated(name)) if name == "bob" => {
                if invited.state() == RoomState::Joined {
                    Ok(())
                } else {
                    Err(format!("state {:?}", invited.state()))
                }
            }
            other => Err(format!("{other:?}")),
        },
    )
    .await;

    // The latest event of each room, and the unread counts from the server.
    for (room_id, body) in [
        (chat.room_id(), format!("message {}", N - 1)),
        (quiet.room_id(), "only message".to_owned()),
    ] {
        latest_body_becomes(&alice, room_id, &body).await;
    }
    let alice_chat = alice.get_room(chat.room_id()).expect("alice knows chat");
    notification_count_becomes(&alice_chat, N as u64).await;
    assert_eq!(alice_chat.unread_notification_counts().highlight_count, 0);
    let alice_quiet = alice.get_room(quiet.room_id()).expect("alice knows quiet");
    assert_eq!(
        alice_quiet.unread_notification_counts().notification_count,
        1
    );
    // The SDK's own count (from the events it has and alice's receipts).
    eventually(
        "quiet's client-side unread count 1",
        async || match alice_quiet.num_unread_messages() {
            1 => Ok(()),
            n => Err(n.to_string()),
        },
    )
    .await;

    // The room's timeline: it starts with what sliding sync delivered
    // (timeline_limit 1) and paginates back to the room's creation.
    let timeline = alice_chat
        .timeline()
        .await
        .unwrap_or_else(|e| panic!("alice: timeline: {e:?}"));
    let start = Instant::now();
    loop {
        let reached_start = timeline
            .paginate_backwards(10)
            .await
            .unwrap_or_else(|e| panic!("alice: paginate_backwards: {e:?}"));
        if reached_start {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "back-pagination did not reach the room's start; has {:?}",
            timeline_bodies(&timeline.items().await)
        );
    }
    let expected: Vec<String> = (0..N).map(|i| format!("message {i}")).collect();
    assert_eq!(timeline_bodies(&timeline.items().await), expected);
    let creator_seen = timeline.items().await.iter().any(|i| {
        i.as_event().is_some_and(|e| {
            matches!(e.content(), TimelineItemContent::MembershipChange(m)
                if m.user_id().as_str() == s.user_id("bob"))
        })
    });
    assert!(
        creator_seen,
        "the timeline has bob's join from the room's start"
    );

    // A new message appears live in the open timeline.
    let (items, updates) = timeline.subscribe().await;
    let mut items = items;
    let mut updates = pin!(updates);
    send_text(chat, "bob", "live message").await;
    let start = Instant::now();
    while !timeline_bodies(&items).contains(&"live message".to_owned()) {
        let left = DEADLINE.saturating_sub(start.elapsed());
        let diffs = tokio::time::timeout(left, updates.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the live message did not reach the timeline; has {:?}",
                    timeline_bodies(&items)
                )
            })
            .expect("the timeline stream ended");
        for diff in diffs {
            diff.apply(&mut items);
        }
    }
    latest_body_becomes(&alice, chat.room_id(), "live message").await;
    notification_count_becomes(&alice_chat, N as u64 + 1).await;

    // Reading the room (a read receipt on its newest event) clears the
    // server's count, which the next sliding sync answer carries.
    timeline
        .mark_as_read(ReceiptType::Read)
        .await
        .unwrap_or_else(|e| panic!("alice: mark_as_read: {e:?}"));
    notification_count_becomes(&alice_chat, 0).await;

    sync.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_upgrade_shows_the_successor_room() {
    let s = TestServer::start().await;
    let alice = s.logged_in("alice").await;
    let mut req = CreateRoomRequest::new();
    req.name = Some("old room".to_owned());
    let old = alice
        .create_room(req)
        .await
        .unwrap_or_else(|e| panic!("alice: create_room failed: {e:?}"));
    let old_id = old.room_id().to_owned();

    let sync = start_sync(&alice).await;
    let room_list_service = sync.room_list_service();
    let all_rooms = room_list_service.all_rooms().await.expect("all_rooms");
    let (stream, controller) = non_left_entries(&all_rooms);
    let mut stream = pin!(stream);
    let mut listed = Vector::new();
    room_list_until(&mut stream, &mut listed, "the old room", |r| {
        lists(r, &old_id)
    })
    .await;

    let upgraded = alice
        .send(UpgradeRoomRequest::new(old_id.clone(), RoomVersionId::V11))
        .await
        .unwrap_or_else(|e| panic!("alice: upgrade: {e:?}"));
    let new_id = upgraded.replacement_room;

    room_list_until(&mut stream, &mut listed, "the successor room", |r| {
        lists(r, &new_id)
    })
    .await;
    eventually("the old room's successor", async || {
        match alice.get_room(&old_id).and_then(|r| r.successor_room()) {
            Some(succ) if succ.room_id == new_id => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    eventually("the new room's predecessor", async || {
        match alice.get_room(&new_id).and_then(|r| r.predecessor_room()) {
            Some(pred) if pred.room_id == old_id => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // The name comes with the room's state, which may reach the client's
    // store in a later sliding-sync answer than the one that listed it.
    eventually("the name carried over", async || {
        match alice.get_room(&new_id).and_then(|r| r.name()) {
            Some(name) if name == "old room" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Element X's list shows one version of a room: the successor only.
    controller.set_filter(Box::new(new_filter_all(vec![
        Box::new(new_filter_non_left()),
        Box::new(new_filter_deduplicate_versions()),
    ])));
    let mut listed = Vector::new();
    room_list_until(&mut stream, &mut listed, "the successor alone", |r| {
        lists(r, &new_id) && !lists(r, &old_id)
    })
    .await;

    sync.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn space_shows_its_children() {
    let s = TestServer::start().await;
    let alice = s.logged_in("alice").await;
    let server_name = OwnedServerName::try_from(s.server_name.as_str()).unwrap();

    let mut req = CreateRoomRequest::new();
    req.name = Some("a space".to_owned());
    let mut creation = CreationContent::new();
    creation.room_type = Some(RoomType::Space);
    req.creation_content = Some(Raw::new(&creation).expect("creation content"));
    let space = alice
        .create_room(req)
        .await
        .unwrap_or_else(|e| panic!("alice: create space failed: {e:?}"));
    let mut children = Vec::new();
    for name in ["child one", "child two"] {
        let mut req = CreateRoomRequest::new();
        req.name = Some(name.to_owned());
        let child = alice
            .create_room(req)
            .await
            .unwrap_or_else(|e| panic!("alice: create {name} failed: {e:?}"));
        space
            .send_state_event_for_key(
                child.room_id(),
                SpaceChildEventContent::new(vec![server_name.clone()]),
            )
            .await
            .unwrap_or_else(|e| panic!("alice: m.space.child for {name}: {e:?}"));
        children.push((child.room_id().to_owned(), name));
    }

    let sync = start_sync(&alice).await;
    let room_list_service = sync.room_list_service();
    let all_rooms = room_list_service.all_rooms().await.expect("all_rooms");
    let (stream, _controller) = non_left_entries(&all_rooms);
    let mut stream = pin!(stream);
    let mut listed = Vector::new();
    room_list_until(
        &mut stream,
        &mut listed,
        "the space and its children",
        |r| lists(r, space.room_id()) && children.iter().all(|(id, _)| lists(r, id)),
    )
    .await;
    let space_id = space.room_id().to_owned();
    eventually("the space known as a space", async || {
        match alice.get_room(&space_id) {
            Some(r) if r.is_space() => Ok(()),
            other => Err(format!("is_space: {:?}", other.map(|r| r.is_space()))),
        }
    })
    .await;

    let spaces = SpaceService::new(alice.clone()).await;
    eventually("the space among the top-level joined spaces", async || {
        let top = spaces.top_level_joined_spaces().await;
        if top.iter().any(|r| r.room_id == space_id) {
            Ok(())
        } else {
            Err(format!(
                "{:?}",
                top.iter().map(|r| &r.room_id).collect::<Vec<_>>()
            ))
        }
    })
    .await;
    let top = spaces.top_level_joined_spaces().await;
    let entry = top.iter().find(|r| r.room_id == space_id).expect("listed");
    assert_eq!(entry.children_count, 2, "children_count: {entry:?}");

    // The space's room list pages through /hierarchy.
    let list = spaces.space_room_list(space_id.clone()).await;
    list.paginate()
        .await
        .unwrap_or_else(|e| panic!("space room list paginate: {e:?}"));
    let mut seen: Vec<(OwnedRoomId, String)> = list
        .rooms()
        .await
        .into_iter()
        .map(|r| (r.room_id, r.name.unwrap_or_default()))
        .collect();
    seen.sort();
    let mut expected: Vec<(OwnedRoomId, String)> = children
        .iter()
        .map(|(id, name)| (id.clone(), (*name).to_owned()))
        .collect();
    expected.sort();
    assert_eq!(seen, expected, "the space's children from /hierarchy");

    sync.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_notification_resolves_through_sliding_sync() {
    let s = TestServer::start().await;
    let alice = s.logged_in("alice").await;
    let bob = s.logged_in("bob").await;
    let alice_id = OwnedUserId::try_from(s.user_id("alice")).unwrap();
    let room = shared_room(&bob, &alice, &alice_id, "notify me").await;
    let sent = room
        .send(RoomMessageEventContent::text_plain("ping"))
        .await
        .unwrap_or_else(|e| panic!("bob: send failed: {e:?}"));

    // What Element X on Android does with a push (event_id_only): resolve
    // the event through a short sliding sync of its own (a room
    // subscription on the "notifications" connection), not /context.
    let sync = Arc::new(start_sync(&alice).await);
    let notifications = NotificationClient::new(
        alice.clone(),
        NotificationProcessSetup::SingleProcess {
            sync_service: sync.clone(),
        },
    )
    .await
    .unwrap_or_else(|e| panic!("NotificationClient: {e:?}"));
    let status = notifications
        .get_notification_with_sliding_sync(room.room_id(), &sent.response.event_id)
        .await
        .unwrap_or_else(|e| panic!("get_notification_with_sliding_sync: {e:?}"));
    let NotificationStatus::Event(item) = status else {
        panic!("the notification's event did not come through sliding sync: {status:?}");
    };
    assert_eq!(item.event.sender().as_str(), s.user_id("bob"));
    let NotificationEvent::Timeline(ev) = &item.event else {
        panic!("a timeline event expected: {:?}", item.event);
    };
    let body = match ev.as_ref() {
        matrix_sdk::ruma::events::AnySyncTimelineEvent::MessageLike(
            matrix_sdk::ruma::events::AnySyncMessageLikeEvent::RoomMessage(
                matrix_sdk::ruma::events::room::message::SyncRoomMessageEvent::Original(m),
            ),
        ) => m.content.body().to_owned(),
        other => panic!("a message expected: {other:?}"),
    };
    assert_eq!(body, "ping");
    assert_eq!(item.room_computed_display_name, "notify me");
    assert_eq!(item.joined_members_count, 2);
    // The default rule for a two-member room notifies with a sound.
    assert_eq!(item.is_noisy, Some(true), "actions: {:?}", item.actions);

    sync.stop().await;
}
