//! What a client does right after start: discover versions and capabilities,
//! log in, whoami, devices, push rules, upload a filter and sync with it, set
//! a display name, log out.

use matrix_sdk::config::SyncSettings;
use matrix_sdk::ruma::RoomVersionId;
use matrix_sdk::ruma::api::MatrixVersion;
use matrix_sdk::ruma::api::client::filter::FilterDefinition;
use matrix_sdk::ruma::api::client::push::get_pushrules_all;
use matrix_sdk::ruma::{OwnedUserId, UserId};

use crate::server::{PASSWORD, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_start_up_calls_through_matrix_sdk() {
    let s = TestServer::start().await;
    s.register("carol").await;
    let carol_id = s.user_id("carol");
    let client = s.client().await;

    // Before login: /versions and the login types.
    let versions = client
        .server_versions()
        .await
        .unwrap_or_else(|e| panic!("SDK server_versions (GET /versions) failed: {e:?}"));
    assert!(
        versions.contains(&MatrixVersion::V1_1),
        "versions: {versions:?}"
    );
    let login_types = client
        .matrix_auth()
        .get_login_types()
        .await
        .unwrap_or_else(|e| panic!("SDK get_login_types (GET /login) failed: {e:?}"));
    assert!(
        format!("{:?}", login_types.flows).contains("Password"),
        "login flows offer m.login.password: {:?}",
        login_types.flows
    );

    let login = client
        .matrix_auth()
        .login_username("carol", PASSWORD)
        .initial_device_display_name("e2e carol")
        .send()
        .await
        .unwrap_or_else(|e| panic!("SDK login failed: {e:?}"));
    assert_eq!(login.user_id.as_str(), carol_id);

    // whoami agrees with the session the SDK holds.
    let who = client
        .whoami()
        .await
        .unwrap_or_else(|e| panic!("SDK whoami failed: {e:?}"));
    assert_eq!(who.user_id.as_str(), carol_id);
    assert_eq!(who.device_id.as_deref(), client.device_id());

    // /capabilities through the SDK's capability helper.
    let caps = client.homeserver_capabilities();
    assert!(
        caps.can_change_password()
            .await
            .unwrap_or_else(|e| panic!("SDK capabilities (GET /capabilities) failed: {e:?}")),
        "m.change_password"
    );
    assert!(
        caps.can_change_displayname().await.unwrap(),
        "m.set_displayname"
    );
    let room_versions = caps.room_versions().await.unwrap();
    assert_eq!(room_versions.default, RoomVersionId::V12);
    for v in [RoomVersionId::V10, RoomVersionId::V11, RoomVersionId::V12] {
        assert!(
            room_versions.available.contains_key(&v),
            "room version {v} available"
        );
    }

    // Devices: the one the SDK logged in with, under its display name.
    let devices = client
        .devices()
        .await
        .unwrap_or_else(|e| panic!("SDK devices (GET /devices) failed: {e:?}"))
        .devices;
    let mine = devices
        .iter()
        .find(|d| Some(d.device_id.as_ref()) == client.device_id())
        .unwrap_or_else(|| panic!("own device in {devices:?}"));
    assert_eq!(mine.display_name.as_deref(), Some("e2e carol"));

    // Push rules, as every client fetches them at start.
    let rules = client
        .send(get_pushrules_all::v3::Request::new())
        .await
        .unwrap_or_else(|e| panic!("SDK GET /pushrules/ failed: {e:?}"));
    assert!(
        !rules.global.underride.is_empty(),
        "default underride rules"
    );

    // Upload a filter and sync with it (what Element-style clients do first).
    let mut filter = FilterDefinition::default();
    filter.room.timeline.limit = Some(20u32.into());
    let filter_id = client
        .get_or_upload_filter("e2e", filter)
        .await
        .unwrap_or_else(|e| {
            panic!("SDK get_or_upload_filter (POST /user/{{id}}/filter) failed: {e:?}")
        });
    client
        .sync_once(
            SyncSettings::default()
                .filter(filter_id.into())
                .timeout(std::time::Duration::from_millis(100)),
        )
        .await
        .unwrap_or_else(|e| panic!("SDK sync_once with a stored filter failed: {e:?}"));

    // Display name: set, read back by the owner and by another user.
    client
        .account()
        .set_display_name(Some("Carol Caterpillar"))
        .await
        .unwrap_or_else(|e| panic!("SDK set_display_name failed: {e:?}"));
    assert_eq!(
        client
            .account()
            .get_display_name()
            .await
            .unwrap()
            .as_deref(),
        Some("Carol Caterpillar")
    );
    let dave = s.logged_in("dave").await;
    let carol_uid: OwnedUserId = UserId::parse(carol_id.as_str()).unwrap();
    let profile = dave
        .account()
        .fetch_user_profile_of(&carol_uid)
        .await
        .unwrap_or_else(|e| panic!("dave: SDK fetch_user_profile_of failed: {e:?}"));
    assert_eq!(
        profile
            .get_static::<matrix_sdk::ruma::api::client::profile::DisplayName>()
            .ok()
            .flatten()
            .as_deref(),
        Some("Carol Caterpillar")
    );

    // Log out: the token stops working.
    client
        .logout()
        .await
        .unwrap_or_else(|e| panic!("SDK logout failed: {e:?}"));
    assert!(
        client.whoami().await.is_err(),
        "whoami after logout must fail"
    );
}
