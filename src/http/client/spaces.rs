//! Spaces and room previews: `GET /rooms/{roomId}/hierarchy` and
//! `GET /room_summary/{roomIdOrAlias}` (with MSC3266's unstable paths).

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use ruma::api::client::room::get_summary;
use ruma::api::client::space::get_hierarchy;

use crate::error::Result;
use crate::http::extract::{GuestAuth, MaybeAuth, Ruma, RumaResponse};
use crate::http::{AppState, ruma_route};
use crate::services::spaces::{self, HierarchyQuery};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<get_hierarchy::v1::Request, _, _>(r, hierarchy);
    let r = ruma_route::<get_summary::v1::Request, _, _>(r, room_summary);
    // MSC3266's later unstable path, which matrix-js-sdk tries first.
    r.route(
        "/_matrix/client/unstable/im.nheko.summary/summary/{room_id_or_alias}",
        get(room_summary),
    )
}

async fn hierarchy(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<get_hierarchy::v1::Request>,
) -> Result<RumaResponse<get_hierarchy::v1::Response>> {
    let (rooms, next_batch) = spaces::hierarchy(
        &s,
        &r.user_id(),
        HierarchyQuery {
            room_id: &req.room_id,
            from: req.from.as_deref(),
            limit: req.limit,
            max_depth: req.max_depth,
            suggested_only: req.suggested_only,
        },
    )
    .await?;
    let mut response = get_hierarchy::v1::Response::new();
    response.rooms = rooms;
    response.next_batch = next_batch;
    Ok(RumaResponse(response))
}

async fn room_summary(
    State(s): State<AppState>,
    MaybeAuth(r): MaybeAuth,
    Ruma(req): Ruma<get_summary::v1::Request>,
) -> Result<RumaResponse<get_summary::v1::Response>> {
    let room_id = super::rooms::resolve_room(&s, req.room_id_or_alias.as_str()).await?;
    let user = r.map(|r| r.user_id());
    let (summary, membership) = spaces::room_summary(&s, &room_id, user.as_deref()).await?;
    let mut response = get_summary::v1::Response::new(summary);
    response.membership = membership;
    Ok(RumaResponse(response))
}
