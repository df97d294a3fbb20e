//! `/versions`, `/.well-known/matrix/client`, `/.well-known/matrix/support`
//! and `/capabilities`.

use axum::extract::State;
use axum::{Json, Router};
#[allow(deprecated)] // m.set_displayname/m.set_avatar_url: still read by clients
use ruma::api::client::discovery::get_capabilities::v3::{
    Capabilities, ChangePasswordCapability, ProfileFieldsCapability, RoomVersionStability,
    RoomVersionsCapability, SetAvatarUrlCapability, SetDisplayNameCapability,
    ThirdPartyIdChangesCapability,
};
use ruma::api::client::discovery::{
    discover_homeserver, discover_support, get_capabilities, get_supported_versions,
};

use serde_json::{Value, json};

use crate::error::{MatrixError, Result};
use crate::http::extract::{GuestAuth, Ruma, RumaResponse};
use crate::http::{AppState, ruma_route};
use crate::services::rooms::SUPPORTED_ROOM_VERSIONS;

/// Spec versions advertised: each one whose endpoints Myelin serves
/// (`tests/api/spec_versions.rs` calls every endpoint of each, listed in
/// `tests/api/spec_endpoints.txt`). Not v1.16: its `/sync`
/// `use_state_after` is not served, nor are v1.18's `/admin/suspend` and
/// v1.19's `/mutual_rooms`.
pub const SUPPORTED_VERSIONS: &[&str] = &[
    "r0.0.1", "r0.1.0", "r0.2.0", "r0.3.0", "r0.4.0", "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2",
    "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12", "v1.13",
    "v1.14", "v1.15",
];

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<get_supported_versions::Request, _, _>(r, versions);
    let r = ruma_route::<discover_homeserver::Request, _, _>(r, well_known);
    let r = ruma_route::<discover_support::Request, _, _>(r, well_known_support);
    ruma_route::<get_capabilities::v3::Request, _, _>(r, capabilities)
}

/// Hand-built rather than ruma's type so `unstable_features` is always present
/// (ruma omits an empty map; some clients index it unconditionally). Its
/// flags name what is served: cross-signing (MSC1756,
/// `/keys/device_signing/upload` and `/keys/signatures/upload`), which
/// Synapse advertises too and older clients look for before offering
/// cross-signing; authenticated media (MSC3916, `/_matrix/client/v1/media/...`,
/// advertised by Synapse too), which clients that predate v1.11 look for:
/// without it they download through the legacy `/_matrix/media/v3` and get
/// 404 for every upload made under `media.enable_authenticated_media`; and
/// custom profile fields at the stable
/// paths and the unstable ones (MSC4133, in spec v1.16, which Myelin does not
/// advertise whole: clients read these flags to use the endpoints before v1.16).
async fn versions(_: Ruma<get_supported_versions::Request>) -> Json<Value> {
    Json(json!({
        "versions": SUPPORTED_VERSIONS,
        "unstable_features": {
            "org.matrix.e2e_cross_signing": true,
            "uk.tcpip.msc4133": true,
            "uk.tcpip.msc4133.stable": true,
            "org.matrix.msc3916.stable": true,
            "org.matrix.simplified_msc3575": true,
        },
    }))
}

async fn well_known(
    State(s): State<AppState>,
    _: Ruma<discover_homeserver::Request>,
) -> RumaResponse<discover_homeserver::Response> {
    RumaResponse(discover_homeserver::Response::new(
        discover_homeserver::HomeserverInfo::new(s.config.public_baseurl()),
    ))
}

/// The configured `support` contacts and page; 404 `M_NOT_FOUND` when
/// there are none (as the spec says of a server without them).
async fn well_known_support(
    State(s): State<AppState>,
    _: Ruma<discover_support::Request>,
) -> Result<RumaResponse<discover_support::Response>> {
    let support = &s.config.support;
    if support.is_empty() {
        return Err(MatrixError::not_found(
            "This server publishes no support contacts",
        ));
    }
    let mut contacts = Vec::with_capacity(support.contacts.len());
    for c in &support.contacts {
        let role = discover_support::ContactRole::from(c.role.as_str());
        let mut contact = match (&c.matrix_id, &c.email_address) {
            (Some(id), _) => discover_support::Contact::with_matrix_id(
                role,
                ruma::OwnedUserId::try_from(id.as_str()).map_err(MatrixError::internal)?,
            ),
            (None, Some(email)) => {
                discover_support::Contact::with_email_address(role, email.clone())
            }
            (None, None) => continue,
        };
        contact.email_address.clone_from(&c.email_address);
        contacts.push(contact);
    }
    let mut answer = discover_support::Response::with_contacts(contacts);
    answer.support_page.clone_from(&support.support_page);
    Ok(RumaResponse(answer))
}

#[allow(deprecated)]
async fn capabilities(
    State(s): State<AppState>,
    _: GuestAuth,
    _: Ruma<get_capabilities::v3::Request>,
) -> Result<Json<Value>> {
    let mut caps = Capabilities::new();
    caps.change_password = ChangePasswordCapability::new(true);
    caps.set_displayname = SetDisplayNameCapability::new(true);
    caps.set_avatar_url = SetAvatarUrlCapability::new(true);
    // No 3PIDs can be added (no email or SMS is sent: `threepid.rs`).
    caps.thirdparty_id_changes = ThirdPartyIdChangesCapability::new(false);
    caps.profile_fields = Some(ProfileFieldsCapability::new(true));
    caps.room_versions = RoomVersionsCapability::new(
        s.rooms.default_version().clone(),
        SUPPORTED_ROOM_VERSIONS
            .into_iter()
            .map(|v| (v, RoomVersionStability::Stable))
            .collect(),
    );
    // JSON: ruma leaves out capabilities at their default value (and `set`
    // stores a known one in its typed field); Synapse states them
    // and some tools read them without defaults, so state them too.
    let mut value = serde_json::to_value(&caps).map_err(MatrixError::internal)?;
    let map = value
        .as_object_mut()
        .ok_or_else(|| MatrixError::internal("capabilities are not an object"))?;
    for (name, enabled) in [
        ("m.change_password", true),
        ("m.set_displayname", true),
        ("m.set_avatar_url", true),
        ("m.3pid_changes", false),
        ("m.profile_fields", true),
    ] {
        map.entry(name).or_insert(json!({ "enabled": enabled }));
    }
    Ok(Json(json!({ "capabilities": value })))
}
