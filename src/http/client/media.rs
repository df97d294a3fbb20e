//! The content repository: `/_matrix/client/v1/media/...` (authenticated
//! media: config, download, thumbnail) and the legacy `/_matrix/media/...`
//! (upload, asynchronous upload, config, unauthenticated download and
//! thumbnail). Bodies stream in and out; nothing here holds a whole file.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, RawPathParams, Request, State};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderName, HeaderValue, header};
use http_body_util::BodyExt;
use ruma::api::client::authenticated_media::{
    get_content as auth_content, get_content_as_filename as auth_named,
    get_content_thumbnail as auth_thumbnail, get_media_config as auth_config,
    get_media_preview as auth_preview,
};
use ruma::api::client::media::{
    create_content, create_content_async, create_mxc_uri, get_content, get_content_as_filename,
    get_content_thumbnail, get_media_config, get_media_preview, is_safe_inline_content_type,
};
use ruma::http_headers::{ContentDisposition, ContentDispositionType};
use ruma::{MilliSecondsSinceUnixEpoch, OwnedServerName, ServerName, UInt};

use crate::config::ThumbnailMethod;
use crate::error::{MatrixError, Result};
use crate::http::extract::{Auth, GuestAuth, Ruma, RumaResponse, body_read_error};
use crate::http::{AppState, ruma_route};
use crate::services::media::thumbnails::ThumbnailWant;
use crate::services::media::{Access, MediaFile, UploadInfo, Wanted};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<auth_config::v1::Request, _, _>(r, config_v1);
    let r = legacy_routes(r);
    let r = ruma_route::<create_content::v3::Request, _, _>(r, upload);
    let r = ruma_route::<create_mxc_uri::v1::Request, _, _>(r, create);
    let r = ruma_route::<create_content_async::v3::Request, _, _>(r, upload_pending);
    let r = ruma_route::<auth_content::v1::Request, _, _>(
        r,
        download_authenticated::<auth_content::v1::Request>,
    );
    let r = ruma_route::<auth_thumbnail::v1::Request, _, _>(r, thumbnail_authenticated);
    let r = ruma_route::<auth_preview::v1::Request, _, _>(r, preview_v1);
    ruma_route::<auth_named::v1::Request, _, _>(
        r,
        download_authenticated::<auth_named::v1::Request>,
    )
}

/// The endpoints the spec deprecated in v1.11 for their authenticated forms.
#[allow(deprecated, reason = "the legacy media endpoints are still served")]
fn legacy_routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<get_media_config::v3::Request, _, _>(r, config_v3);
    let r = ruma_route::<get_content_thumbnail::v3::Request, _, _>(r, thumbnail_legacy);
    let r = ruma_route::<get_media_preview::v3::Request, _, _>(r, preview_v3);
    let r = ruma_route::<get_content::v3::Request, _, _>(
        r,
        download_legacy::<get_content::v3::Request>,
    );
    ruma_route::<get_content_as_filename::v3::Request, _, _>(
        r,
        download_legacy::<get_content_as_filename::v3::Request>,
    )
}

/// An upload (`POST /_matrix/media/*/upload`, `PUT .../upload/{server}/{id}`,
/// unstable paths too): its body may take `media.upload_timeout_secs` to
/// arrive instead of `limits.body_read_timeout_secs`.
pub(crate) fn is_media_upload(parts: &Parts) -> bool {
    matches!(parts.method, http::Method::POST | http::Method::PUT)
        && parts.uri.path().starts_with("/_matrix/media/")
        && parts.uri.path().contains("/upload")
}

/// `m.upload.size`.
fn upload_size(s: &AppState) -> UInt {
    UInt::try_from(s.media.max_upload_size()).unwrap_or(UInt::MAX)
}

async fn config_v1(
    State(s): State<AppState>,
    GuestAuth(_): GuestAuth,
) -> RumaResponse<auth_config::v1::Response> {
    RumaResponse(auth_config::v1::Response::new(upload_size(&s)))
}

#[allow(deprecated, reason = "the legacy media endpoints are still served")]
async fn config_v3(
    State(s): State<AppState>,
    GuestAuth(_): GuestAuth,
) -> RumaResponse<get_media_config::v3::Response> {
    RumaResponse(get_media_config::v3::Response::new(upload_size(&s)))
}

/// A URL preview's OpenGraph object (`services/media/preview.rs`).
async fn preview(
    s: &AppState,
    r: &crate::model::accounts::Requester,
    url: &str,
    ts: Option<MilliSecondsSinceUnixEpoch>,
) -> Result<Box<serde_json::value::RawValue>> {
    let ts = ts.map(|t| i64::from(t.get()));
    let og = s.media.preview(r, url, ts).await?;
    serde_json::value::to_raw_value(&og).map_err(MatrixError::internal)
}

/// `GET /_matrix/client/v1/media/preview_url?url=&ts=`.
async fn preview_v1(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<auth_preview::v1::Request>,
) -> Result<RumaResponse<auth_preview::v1::Response>> {
    let og = preview(&s, &r, &req.url, req.ts).await?;
    Ok(RumaResponse(auth_preview::v1::Response::from_raw_value(og)))
}

/// `GET /_matrix/media/v3/preview_url` (and `r0`): as the v1 endpoint.
#[allow(deprecated, reason = "the legacy media endpoints are still served")]
async fn preview_v3(
    State(s): State<AppState>,
    Auth(r): Auth,
    Ruma(req): Ruma<get_media_preview::v3::Request>,
) -> Result<RumaResponse<get_media_preview::v3::Response>> {
    let og = preview(&s, &r, &req.url, req.ts).await?;
    Ok(RumaResponse(
        get_media_preview::v3::Response::from_raw_value(og),
    ))
}

/// `POST /_matrix/media/v3/upload?filename=`: the body is the file.
async fn upload(
    State(s): State<AppState>,
    Auth(r): Auth,
    req: Request,
) -> Result<RumaResponse<create_content::v3::Response>> {
    let (parts, body) = req.into_parts();
    let upload = UploadHead::of(&parts)?;
    let uri = s.media.upload(&r, upload.info(), streamed(body)).await?;
    Ok(RumaResponse(create_content::v3::Response::new(uri)))
}

/// `POST /_matrix/media/v1/create`: a media id to upload to later.
async fn create(
    State(s): State<AppState>,
    Auth(r): Auth,
) -> Result<RumaResponse<create_mxc_uri::v1::Response>> {
    let reservation = s.media.create(&r).await?;
    let mut resp = create_mxc_uri::v1::Response::new(reservation.content_uri);
    resp.unused_expires_at = UInt::try_from(reservation.unused_expires_at)
        .ok()
        .map(MilliSecondsSinceUnixEpoch);
    Ok(RumaResponse(resp))
}

/// `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`.
async fn upload_pending(
    State(s): State<AppState>,
    Auth(r): Auth,
    req: Request,
) -> Result<axum::Json<serde_json::Value>> {
    let (mut parts, body) = req.into_parts();
    let (server, media_id) = media_path(&mut parts, &s).await?;
    let upload = UploadHead::of(&parts)?;
    s.media
        .upload_pending(&r, &server, &media_id, upload.info(), streamed(body))
        .await?;
    // ruma's response type (`{}`) has no constructor.
    Ok(axum::Json(serde_json::json!({})))
}

/// A download request of ruma's: what it asks for.
trait DownloadRequest: ruma::api::IncomingRequest + Send {
    fn wanted(&self) -> Wanted<'_>;
}

impl DownloadRequest for auth_content::v1::Request {
    fn wanted(&self) -> Wanted<'_> {
        wanted(&self.server_name, &self.media_id, None, self.timeout_ms)
    }
}

impl DownloadRequest for auth_named::v1::Request {
    fn wanted(&self) -> Wanted<'_> {
        let name = Some(self.filename.as_str());
        wanted(&self.server_name, &self.media_id, name, self.timeout_ms)
    }
}

#[allow(deprecated, reason = "the legacy media endpoints are still served")]
impl DownloadRequest for get_content::v3::Request {
    fn wanted(&self) -> Wanted<'_> {
        wanted(&self.server_name, &self.media_id, None, self.timeout_ms)
    }
}

#[allow(deprecated, reason = "the legacy media endpoints are still served")]
impl DownloadRequest for get_content_as_filename::v3::Request {
    fn wanted(&self) -> Wanted<'_> {
        let name = Some(self.filename.as_str());
        wanted(&self.server_name, &self.media_id, name, self.timeout_ms)
    }
}

fn wanted<'a>(
    server_name: &'a ServerName,
    media_id: &'a str,
    filename: Option<&'a str>,
    timeout: Duration,
) -> Wanted<'a> {
    Wanted {
        server_name,
        media_id,
        filename,
        timeout,
    }
}

/// `/_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}]`.
async fn download_authenticated<R: DownloadRequest>(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<R>,
) -> Result<Response> {
    let file = s
        .media
        .download(Access::Authenticated(&r), req.wanted())
        .await?;
    Ok(serve(file))
}

/// The unauthenticated legacy download: media uploaded while authenticated
/// media was on is 404 here. `allow_remote` and `allow_redirect` are
/// accepted; remote media is 404 either way until federation exists.
async fn download_legacy<R: DownloadRequest>(
    State(s): State<AppState>,
    Ruma(req): Ruma<R>,
) -> Result<Response> {
    let file = s.media.download(Access::Legacy, req.wanted()).await?;
    Ok(serve(file))
}

/// The `{serverName}` and `{mediaId}` of a media path; 400
/// `M_INVALID_PARAM` for a malformed server name.
async fn media_path(parts: &mut Parts, s: &AppState) -> Result<(OwnedServerName, String)> {
    let params = RawPathParams::from_request_parts(parts, s)
        .await
        .map_err(|e| MatrixError::invalid_param(format!("Invalid path: {e}")))?;
    let mut values = params.iter().map(|(_, v)| v);
    let (Some(server), Some(media_id)) = (values.next(), values.next()) else {
        return Err(MatrixError::invalid_param("Invalid path"));
    };
    let server = OwnedServerName::try_from(server)
        .map_err(|e| MatrixError::invalid_param(format!("Invalid server name: {e}")))?;
    Ok((server, media_id.to_owned()))
}

/// `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`.
async fn thumbnail_authenticated(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    req: Request,
) -> Result<Response> {
    let (mut parts, _) = req.into_parts();
    let asked = ThumbnailAsk::of(&mut parts, &s).await?;
    let file = s
        .media
        .thumbnail(Access::Authenticated(&r), asked.wanted(), asked.want)
        .await?;
    Ok(serve(file))
}

/// `GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}`, as the legacy
/// download: no authentication, media from before authenticated media only.
async fn thumbnail_legacy(State(s): State<AppState>, req: Request) -> Result<Response> {
    let (mut parts, _) = req.into_parts();
    let asked = ThumbnailAsk::of(&mut parts, &s).await?;
    let file = s
        .media
        .thumbnail(Access::Legacy, asked.wanted(), asked.want)
        .await?;
    Ok(serve(file))
}

/// A thumbnail request's path and query, read by hand to answer as
/// Synapse: a missing `width` or `height` is 400 `M_MISSING_PARAM`, a
/// malformed parameter 400 `M_INVALID_PARAM`.
struct ThumbnailAsk {
    server_name: OwnedServerName,
    media_id: String,
    timeout: Duration,
    want: ThumbnailWant,
}

impl ThumbnailAsk {
    async fn of(parts: &mut Parts, s: &AppState) -> Result<Self> {
        let (server_name, media_id) = media_path(parts, s).await?;
        let query: Vec<(String, String)> =
            url::form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        let get = |name: &str| {
            query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let size = |name: &str| -> Result<u32> {
            let value = get(name).ok_or_else(|| {
                MatrixError::missing_param(format!("Missing integer query parameter '{name}'"))
            })?;
            value.parse::<u32>().ok().filter(|v| *v > 0).ok_or_else(|| {
                MatrixError::invalid_param(format!(
                    "Query parameter '{name}' must be a positive integer"
                ))
            })
        };
        let flag = |name: &str| -> Result<bool> {
            match get(name) {
                None | Some("false") => Ok(false),
                Some("true") => Ok(true),
                Some(_) => Err(MatrixError::invalid_param(format!(
                    "Query parameter '{name}' must be true or false"
                ))),
            }
        };
        let (width, height) = (size("width")?, size("height")?);
        let method = match get("method") {
            None | Some("scale") => ThumbnailMethod::Scale,
            Some("crop") => ThumbnailMethod::Crop,
            Some(other) => {
                return Err(MatrixError::invalid_param(format!(
                    "Unknown thumbnail method {other:?} (crop or scale)"
                )));
            }
        };
        let animated = flag("animated")?;
        flag("allow_remote")?;
        flag("allow_redirect")?;
        let timeout = match get("timeout_ms") {
            None => ruma::media::default_download_timeout(),
            Some(ms) => Duration::from_millis(ms.parse::<u64>().map_err(|_| {
                MatrixError::invalid_param("Query parameter 'timeout_ms' must be an integer")
            })?),
        };
        Ok(Self {
            server_name,
            media_id,
            timeout,
            want: ThumbnailWant {
                width,
                height,
                method,
                animated,
            },
        })
    }

    fn wanted(&self) -> Wanted<'_> {
        wanted(&self.server_name, &self.media_id, None, self.timeout)
    }
}

/// What an upload's request head says about the file.
struct UploadHead {
    content_type: Option<String>,
    filename: Option<String>,
    declared_len: Option<u64>,
}

impl UploadHead {
    /// The `Content-Type` header, the `filename` query parameter and the
    /// `Content-Length`; 400 `M_INVALID_PARAM` when one is unreadable.
    fn of(parts: &Parts) -> Result<Self> {
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .map(|v| {
                v.to_str()
                    .map(str::to_owned)
                    .map_err(|_| MatrixError::invalid_param("Content-Type is not visible ASCII"))
            })
            .transpose()?;
        let declared_len = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .map(|v| {
                v.to_str()
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| MatrixError::invalid_param("Invalid Content-Length"))
            })
            .transpose()?;
        let query = parts.uri.query().unwrap_or_default();
        let filename = url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "filename")
            .map(|(_, v)| v.into_owned())
            .filter(|v| !v.is_empty());
        Ok(Self {
            content_type,
            filename,
            declared_len,
        })
    }

    fn info(&self) -> UploadInfo<'_> {
        UploadInfo {
            content_type: self.content_type.as_deref(),
            filename: self.filename.as_deref(),
            declared_len: self.declared_len,
        }
    }
}

/// The request body as the media service reads it: chunk by chunk, with
/// read failures as Matrix errors (408 past the body deadline).
fn streamed(
    body: Body,
) -> impl hyper::body::Body<Data = bytes::Bytes, Error = MatrixError> + Send + Unpin {
    body.map_err(|e| {
        body_read_error(&e, None, |msg| {
            MatrixError::unknown(http::StatusCode::BAD_REQUEST, msg)
        })
    })
}

/// `Content-Security-Policy` of every download: nothing in it may run.
const MEDIA_CSP: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

/// A download's response: the body streamed from the store, its type as
/// uploaded, `inline` only for the spec's safe types (else `attachment`),
/// and headers that keep a browser from running it in this origin.
fn serve(file: MediaFile) -> Response {
    let essence = file
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let disposition_type = if is_safe_inline_content_type(&essence) {
        ContentDispositionType::Inline
    } else {
        ContentDispositionType::Attachment
    };
    let disposition = ContentDisposition::new(disposition_type).with_filename(file.filename);
    let content_type = HeaderValue::from_str(&file.content_type).unwrap_or(
        HeaderValue::from_static(crate::services::media::DEFAULT_CONTENT_TYPE),
    );
    let disposition = HeaderValue::from_str(&disposition.to_string())
        .unwrap_or(HeaderValue::from_static("attachment"));
    let mut resp = Body::new(file.body).into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CONTENT_DISPOSITION, disposition);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(file.len));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(MEDIA_CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    resp
}
