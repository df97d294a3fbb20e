//! `Federated<T>`: a federation request authenticated by its `X-Matrix`
//! header (`Federation::authenticate`), then parsed into its ruma type.

use axum::extract::{FromRequest, Request};
use ruma::OwnedServerName;
use ruma::api::IncomingRequest;

use crate::error::MatrixError;
use crate::http::AppState;
use crate::http::extract::{head_of, parse_with_blank_retry, path_args, read_body};

/// The origin server of a signed request, and the request.
pub struct Federated<T> {
    pub origin: OwnedServerName,
    pub req: T,
}

impl<T: IncomingRequest + Send> FromRequest<AppState> for Federated<T> {
    type Rejection = MatrixError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let args = path_args::<T>(&mut parts, state).await?;
        let body = read_body(body, state).await?;
        let signed = http::Request::from_parts(head_of(&parts), body);
        let origin = state.federation.authenticate(&signed).await?;
        let req = parse_with_blank_retry::<T>(parts, signed.body(), &args)?;
        Ok(Self { origin, req })
    }
}
