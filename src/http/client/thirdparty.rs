//! Third-party networks (`/thirdparty/...`): the protocols application
//! services bridge to, asked of the services whose registrations list them
//! (`services/appservices/queries.rs`); with none, Synapse's answers
//! without any: no protocols (`{}`), 404, `[]`.

use axum::extract::{Path, RawQuery, State};
use axum::{Json, Router};
use ruma::api::client::thirdparty::{
    get_location_for_protocol, get_location_for_room_alias, get_protocol, get_protocols,
    get_user_for_protocol, get_user_for_user_id,
};
use serde_json::{Value, json};

use crate::error::{MatrixError, Result};
use crate::http::extract::GuestAuth;
use crate::http::{AppState, ruma_route};
use crate::services::appservices::ThirdPartyKind;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<get_protocols::v3::Request, _, _>(r, protocols);
    let r = ruma_route::<get_protocol::v3::Request, _, _>(r, protocol);
    // The lookups pass the client's query on as it came (Synapse does not
    // check it either: a missing `alias` or `userid` is no error).
    let r = ruma_route::<get_location_for_protocol::v3::Request, _, _>(r, locations);
    let r = ruma_route::<get_location_for_room_alias::v3::Request, _, _>(r, location_by_alias);
    let r = ruma_route::<get_user_for_protocol::v3::Request, _, _>(r, users);
    ruma_route::<get_user_for_user_id::v3::Request, _, _>(r, user_by_id)
}

async fn protocols(State(s): State<AppState>, GuestAuth(_): GuestAuth) -> Json<Value> {
    Json(Value::Object(
        s.appservices.thirdparty_protocols(None).await,
    ))
}

async fn protocol(
    State(s): State<AppState>,
    GuestAuth(_): GuestAuth,
    Path(protocol): Path<String>,
) -> Result<Json<Value>> {
    s.appservices
        .thirdparty_protocols(Some(&protocol))
        .await
        .remove(&protocol)
        .map(Json)
        .ok_or_else(|| MatrixError::not_found(format!("Unknown protocol {protocol}")))
}

/// The client's query fields, less its access token.
fn fields(query: Option<String>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k != "access_token")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

async fn locations(
    State(s): State<AppState>,
    GuestAuth(_): GuestAuth,
    Path(protocol): Path<String>,
    RawQuery(query): RawQuery,
) -> Json<Value> {
    let found = s
        .appservices
        .thirdparty_query(ThirdPartyKind::Location, &protocol, &fields(query))
        .await;
    Json(json!(found))
}

async fn users(
    State(s): State<AppState>,
    GuestAuth(_): GuestAuth,
    Path(protocol): Path<String>,
    RawQuery(query): RawQuery,
) -> Json<Value> {
    let found = s
        .appservices
        .thirdparty_query(ThirdPartyKind::User, &protocol, &fields(query))
        .await;
    Json(json!(found))
}

async fn location_by_alias(
    State(s): State<AppState>,
    GuestAuth(_): GuestAuth,
    RawQuery(query): RawQuery,
) -> Json<Value> {
    let found = s
        .appservices
        .thirdparty_reverse(ThirdPartyKind::Location, &fields(query))
        .await;
    Json(json!(found))
}

async fn user_by_id(
    State(s): State<AppState>,
    GuestAuth(_): GuestAuth,
    RawQuery(query): RawQuery,
) -> Json<Value> {
    let found = s
        .appservices
        .thirdparty_reverse(ThirdPartyKind::User, &fields(query))
        .await;
    Json(json!(found))
}
