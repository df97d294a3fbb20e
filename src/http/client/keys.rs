//! `POST /keys/upload`, `/keys/query`, `/keys/claim` and `GET
//! /keys/changes` (`services/e2e_keys.rs`); `POST
//! /keys/device_signing/upload` and `/keys/signatures/upload`
//! (`services/cross_signing.rs`).

use axum::Router;
use axum::extract::State;
use ruma::api::client::keys::{
    claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures, upload_signing_keys,
};

use crate::error::Result;
use crate::http::extract::{Auth, GuestAuth, JsonText, Ruma, RumaResponse, UiaRuma};
use crate::http::{AppState, ruma_route};
use crate::services::cross_signing::UploadAuth;
use crate::services::sync::parse_token;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<upload_keys::v3::Request, _, _>(r, upload);
    let r = ruma_route::<get_keys::v3::Request, _, _>(r, query);
    let r = ruma_route::<claim_keys::v3::Request, _, _>(r, claim);
    let r = ruma_route::<upload_signing_keys::v3::Request, _, _>(r, upload_signing);
    let r = ruma_route::<upload_signatures::v3::Request, _, _>(r, upload_sigs);
    ruma_route::<get_key_changes::v3::Request, _, _>(r, changes)
}

/// Guests may use the key endpoints too (as Synapse): they take part in
/// encrypted rooms they can join.
async fn upload(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<upload_keys::v3::Request>,
) -> Result<RumaResponse<upload_keys::v3::Response>> {
    let counts = s
        .e2e_keys
        .upload(
            &r,
            req.device_keys.as_ref(),
            &req.one_time_keys,
            &req.fallback_keys,
        )
        .await?;
    Ok(RumaResponse(upload_keys::v3::Response::new(counts)))
}

/// The answer is written from the cached fragments (`KeysAnswer`), in
/// the shape of ruma's `get_keys::v3::Response`.
async fn query(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<get_keys::v3::Request>,
) -> Result<JsonText> {
    let timeout = req
        .timeout
        .unwrap_or(crate::services::e2e_keys::DEFAULT_TIMEOUT);
    let answer = s.e2e_keys.query(&r.user, &req.device_keys, timeout).await?;
    Ok(JsonText(answer.to_json()?))
}

/// Replacing existing keys needs the password; the first upload and an
/// upload of the keys already stored need none (as Synapse, MSC3967).
async fn upload_signing(
    State(s): State<AppState>,
    Auth(r): Auth,
    UiaRuma { req, op, .. }: UiaRuma<upload_signing_keys::v3::Request>,
) -> Result<RumaResponse<upload_signing_keys::v3::Response>> {
    match s.cross_signing.upload_auth(&r.user, &req).await? {
        UploadAuth::Unchanged => {}
        UploadAuth::FirstUpload => s.cross_signing.upload_keys(&r.user, &req).await?,
        UploadAuth::Replace => {
            s.uia
                .require_password(req.auth.as_ref(), &op, &r.user_id(), &s.accounts)
                .await?;
            s.cross_signing.upload_keys(&r.user, &req).await?;
        }
    }
    Ok(RumaResponse(upload_signing_keys::v3::Response::new()))
}

async fn upload_sigs(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<upload_signatures::v3::Request>,
) -> Result<RumaResponse<upload_signatures::v3::Response>> {
    Ok(RumaResponse(
        s.cross_signing
            .upload_signatures(&r.user, &req.signed_keys)
            .await?,
    ))
}

async fn claim(
    State(s): State<AppState>,
    GuestAuth(_): GuestAuth,
    Ruma(req): Ruma<claim_keys::v3::Request>,
) -> Result<RumaResponse<claim_keys::v3::Response>> {
    let timeout = req
        .timeout
        .unwrap_or(crate::services::e2e_keys::DEFAULT_TIMEOUT);
    Ok(RumaResponse(
        s.e2e_keys.claim(&req.one_time_keys, timeout).await?,
    ))
}

/// `from` and `to` are `/sync` tokens (400 `M_INVALID_PARAM` otherwise).
async fn changes(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<get_key_changes::v3::Request>,
) -> Result<RumaResponse<get_key_changes::v3::Response>> {
    let (from, to) = (parse_token(&req.from)?, parse_token(&req.to)?);
    let lists = s.e2e_keys.changes(&r.user, from, to).await?;
    let ids = |v: Vec<String>| -> Vec<ruma::OwnedUserId> {
        v.into_iter().filter_map(|u| u.try_into().ok()).collect()
    };
    Ok(RumaResponse(get_key_changes::v3::Response::new(
        ids(lists.changed),
        ids(lists.left),
    )))
}
