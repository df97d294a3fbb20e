//! `POST /user/{userId}/filter` and `GET /user/{userId}/filter/{filterId}`.

use axum::Router;
use axum::extract::State;
use ruma::api::client::filter::{create_filter, get_filter};

use crate::error::{MatrixError, Result};
use crate::http::extract::{GuestAuth, Ruma, RumaResponse};
use crate::http::{AppState, ruma_route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<create_filter::v3::Request, _, _>(r, create);
    ruma_route::<get_filter::v3::Request, _, _>(r, get)
}

fn only_self(requester: &crate::model::accounts::Requester, user_id: &ruma::UserId) -> Result<()> {
    if requester.user_id != user_id.as_str() {
        return Err(MatrixError::forbidden("Cannot use filters of other users"));
    }
    Ok(())
}

async fn create(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<create_filter::v3::Request>,
) -> Result<RumaResponse<create_filter::v3::Response>> {
    only_self(&r, &req.user_id)?;
    let id = s.filters.create(&req.user_id, &req.filter).await?;
    Ok(RumaResponse(create_filter::v3::Response::new(id)))
}

async fn get(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<get_filter::v3::Request>,
) -> Result<RumaResponse<get_filter::v3::Response>> {
    only_self(&r, &req.user_id)?;
    let filter = s.filters.get(&req.user_id, &req.filter_id).await?;
    Ok(RumaResponse(get_filter::v3::Response::new(filter)))
}
