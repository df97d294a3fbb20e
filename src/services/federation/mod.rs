//! Federation (the Server-Server API), first part: requests to other
//! servers ([`Client`]: discovery, TLS, the address filter, `X-Matrix`
//! signatures, timeouts and a size cap), other servers' signing keys
//! ([`keys::ServerKeys`], also what the notary API serves) and the
//! authentication of incoming requests ([`Federation::authenticate`]).

pub mod discovery;
pub mod keys;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use ruma::api::auth_scheme::NoAuthentication;
use ruma::api::error::FromHttpResponseError;
use ruma::api::federation::authentication::{ServerSignatures, XMatrix, XMatrixSigningInput};
use ruma::api::path_builder::SinglePath;
use ruma::api::{IncomingResponseExt, OutgoingRequest, OutgoingRequestExt};
use ruma::{OwnedServerName, ServerName};

use crate::clock::SharedClock;
use crate::config::Config;
use crate::error::MatrixError;
use crate::keys::SigningKey;
use crate::net::outbound::{self, Outbound};
use crate::storage::Storage;

use discovery::{Discovery, OverrideResolver, Overrides};

/// The `User-Agent` of federation requests.
const USER_AGENT: &str = concat!("Myelin/", env!("CARGO_PKG_VERSION"));
/// Seconds a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request to another server got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// Every address of the destination is in the blocklist.
    #[error("blocked: {0}")]
    Blocked(String),
    /// Not resolvable, or the connection or TLS failed.
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("timed out")]
    TimedOut,
    #[error("the answer is larger than {0} bytes")]
    TooLarge(u64),
    /// The server answered with an error.
    #[error("the server answered {status}: {errcode} {message}")]
    Remote {
        status: StatusCode,
        errcode: String,
        message: String,
    },
    /// An answer that is not what the endpoint returns, or fails its checks.
    #[error("bad answer: {0}")]
    BadResponse(String),
    #[error("{0}")]
    Internal(String),
}

impl FederationError {
    /// The client's error for a request that needed another server: its
    /// 404 stays a 404 (with its message), anything else is 502, as Synapse.
    pub fn to_client(&self, what: &str) -> MatrixError {
        match self {
            Self::Remote {
                status, message, ..
            } if *status == StatusCode::NOT_FOUND => {
                MatrixError::not_found(format!("{what}: {message}"))
            }
            Self::Internal(m) => MatrixError::internal(m),
            other => MatrixError::unknown(StatusCode::BAD_GATEWAY, format!("{what}: {other}")),
        }
    }

    fn of(e: &reqwest::Error) -> Self {
        use std::error::Error as _;
        if e.is_timeout() {
            return Self::TimedOut;
        }
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(err) = source {
            if let Some(fe) = err.downcast_ref::<FederationError>() {
                return match fe {
                    Self::Blocked(m) => Self::Blocked(m.clone()),
                    other => Self::Unreachable(other.to_string()),
                };
            }
            text = format!("{text}: {err}");
            source = err.source();
        }
        Self::Unreachable(text)
    }
}

/// Sends requests to other servers.
pub struct Client {
    server_name: OwnedServerName,
    signing_key: Arc<SigningKey>,
    http: reqwest::Client,
    discovery: Discovery,
    max_response_bytes: u64,
    /// `federation.request_timeout_secs`.
    timeout: Duration,
}

impl Client {
    pub fn new(
        config: &Config,
        server_name: OwnedServerName,
        signing_key: Arc<SigningKey>,
    ) -> anyhow::Result<Self> {
        let f = &config.federation;
        let mut ca_files = config.outbound.ca_files.clone();
        let extra: Vec<_> = f
            .ca_files
            .iter()
            .filter(|c| !ca_files.contains(c))
            .cloned()
            .collect();
        ca_files.extend(extra);
        let roots = outbound::extra_roots(&ca_files)?;
        let filter = f.ip_filter();
        let timeout = Duration::from_secs(f.request_timeout_secs);
        let overrides = Overrides::new(filter.clone());
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .no_proxy()
            .https_only(true)
            .tls_built_in_native_certs(true)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(OverrideResolver(overrides.clone())));
        for root in &roots {
            builder = builder.add_root_certificate(root.clone());
        }
        let well_known_http =
            Outbound::new(&roots, filter.clone(), timeout.min(Duration::from_secs(10)))?;
        Ok(Self {
            server_name,
            signing_key,
            http: builder.build()?,
            discovery: Discovery::new(filter, overrides, well_known_http),
            max_response_bytes: f.max_response_bytes,
            timeout,
        })
    }

    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    /// Where requests to `destination` go, found within the request
    /// timeout (DNS look-ups and the `.well-known` fetch included).
    async fn resolve(
        &self,
        destination: &ServerName,
    ) -> Result<discovery::Destination, FederationError> {
        tokio::time::timeout(self.timeout, self.discovery.resolve(destination))
            .await
            .map_err(|_| FederationError::TimedOut)?
    }

    /// Sends `request` to `destination`, signed with `X-Matrix`.
    pub async fn send<R>(
        &self,
        destination: &ServerName,
        request: R,
    ) -> Result<R::IncomingResponse, FederationError>
    where
        R: OutgoingRequest<Authentication = ServerSignatures, PathBuilder = SinglePath>,
    {
        let dest = self.resolve(destination).await?;
        let input = XMatrixSigningInput::new(
            self.server_name.clone(),
            destination.to_owned(),
            &self.signing_key.key_pair,
        );
        let http_request = request
            .try_into_http_request::<Vec<u8>>(&dest.base_url(), input, ())
            .map_err(|e| FederationError::Internal(format!("cannot build the request: {e}")))?;
        let response = self.execute(&dest, http_request).await?;
        parse_response::<R>(&response)
    }

    /// Sends `request` to `destination` unsigned (the key endpoints).
    pub async fn send_unsigned<R>(
        &self,
        destination: &ServerName,
        request: R,
    ) -> Result<R::IncomingResponse, FederationError>
    where
        R: OutgoingRequest<Authentication = NoAuthentication, PathBuilder = SinglePath>,
    {
        let dest = self.resolve(destination).await?;
        let http_request = request
            .try_into_http_request::<Vec<u8>>(&dest.base_url(), (), ())
            .map_err(|e| FederationError::Internal(format!("cannot build the request: {e}")))?;
        let response = self.execute(&dest, http_request).await?;
        parse_response::<R>(&response)
    }

    /// Sends one request to a resolved destination and reads the answer
    /// whole, at most `max_response_bytes`.
    async fn execute(
        &self,
        dest: &discovery::Destination,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Bytes>, FederationError> {
        let (parts, body) = request.into_parts();
        let url = url::Url::parse(&parts.uri.to_string())
            .map_err(|e| FederationError::Internal(format!("bad URL: {e}")))?;
        let mut builder = self.http.request(parts.method, url).headers(parts.headers);
        builder = builder.header(http::header::HOST, &dest.host_header);
        if !body.is_empty() {
            builder = builder.body(body);
        }
        let mut response = builder.send().await.map_err(|e| FederationError::of(&e))?;
        let max = self.max_response_bytes;
        if response.content_length().is_some_and(|l| l > max) {
            return Err(FederationError::TooLarge(max));
        }
        let status = response.status();
        let headers = response.headers().clone();
        let mut bytes = BytesMut::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| FederationError::of(&e))?
        {
            if (bytes.len() + chunk.len()) as u64 > max {
                return Err(FederationError::TooLarge(max));
            }
            bytes.extend_from_slice(&chunk);
        }
        let mut out = http::Response::new(bytes.freeze());
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(out)
    }
}

/// The endpoint's answer, or the remote error with its code and message.
fn parse_response<R: OutgoingRequest>(
    response: &http::Response<Bytes>,
) -> Result<R::IncomingResponse, FederationError> {
    let status = response.status();
    if !status.is_success() {
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap_or_default();
        return Err(FederationError::Remote {
            status,
            errcode: body["errcode"].as_str().unwrap_or("M_UNKNOWN").to_owned(),
            message: body["error"].as_str().unwrap_or_default().to_owned(),
        });
    }
    let mut borrowed = http::Response::new(&response.body()[..]);
    *borrowed.status_mut() = status;
    *borrowed.headers_mut() = response.headers().clone();
    R::IncomingResponse::try_from_http_response(borrowed).map_err(|e| match e {
        FromHttpResponseError::Deserialization(e) => FederationError::BadResponse(e.to_string()),
        other => FederationError::BadResponse(other.to_string()),
    })
}

/// The federation service: the client, the key store and incoming
/// authentication.
pub struct Federation {
    pub client: Arc<Client>,
    pub keys: keys::ServerKeys,
    server_name: OwnedServerName,
}

impl Federation {
    pub fn new(
        config: &Config,
        storage: Storage,
        server_name: OwnedServerName,
        signing_key: Arc<SigningKey>,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        let client = Arc::new(Client::new(
            config,
            server_name.clone(),
            signing_key.clone(),
        )?);
        let keys = keys::ServerKeys::new(
            storage,
            clock,
            client.clone(),
            signing_key,
            &config.federation.trusted_key_servers,
        )?;
        Ok(Self {
            client,
            keys,
            server_name,
        })
    }

    /// The origin of a request signed with `X-Matrix` (spec "Request
    /// Authentication"): the header parsed, `destination` (when present)
    /// this server, and the signature over method, URI, origin,
    /// destination and JSON body made by a key the origin publishes.
    /// Failures are 401 `M_UNAUTHORIZED`, as Synapse; a body that is not
    /// JSON is 400 `M_NOT_JSON`.
    pub async fn authenticate(
        &self,
        request: &http::Request<Bytes>,
    ) -> Result<OwnedServerName, MatrixError> {
        let header = match XMatrix::extract_from_http_headers(request.headers()) {
            Ok(h) => h,
            Err(e) => {
                return Err(unauthorized(format!(
                    "Missing or invalid X-Matrix Authorization header: {e}"
                )));
            }
        };
        if header
            .destination
            .as_deref()
            .is_some_and(|d| d != self.server_name)
        {
            return Err(unauthorized(format!(
                "The request is for {}, not this server",
                header.destination.as_deref().map_or("", ServerName::as_str)
            )));
        }
        if !request.body().is_empty()
            && serde_json::from_slice::<serde::de::IgnoredAny>(request.body()).is_err()
        {
            return Err(MatrixError::not_json("Content not JSON"));
        }
        let key = self
            .keys
            .verify_key(&header.origin, header.key.as_str())
            .await
            .map_err(|e| {
                unauthorized(format!(
                    "Cannot find key {} of {}: {e}",
                    header.key, header.origin
                ))
            })?;
        let mut set = ruma::signatures::PublicKeySet::new();
        set.insert(header.key.to_string(), key);
        let mut map = ruma::signatures::PublicKeyMap::new();
        map.insert(header.origin.to_string(), set);
        header
            .verify_http_request(request, &self.server_name, &map)
            .map_err(|e| unauthorized(format!("Invalid signature: {e}")))?;
        Ok(header.origin)
    }
}

fn unauthorized(message: String) -> MatrixError {
    MatrixError::new(
        StatusCode::UNAUTHORIZED,
        ruma::api::error::ErrorKind::Unauthorized,
        message,
    )
}

impl Federation {
    /// A remote user's profile (`GET /query/profile` of their server), or
    /// only `field` of it. Failures are the client's errors
    /// ([`FederationError::to_client`]).
    pub async fn remote_profile(
        &self,
        user_id: &ruma::UserId,
        field: Option<&str>,
    ) -> Result<serde_json::Map<String, serde_json::Value>, MatrixError> {
        use ruma::api::federation::query::get_profile_information::v1;
        let mut request = v1::Request::new(user_id.to_owned());
        request.field = field.map(Into::into);
        let response = self
            .client
            .send(user_id.server_name(), request)
            .await
            .map_err(|e| e.to_client("Failed to fetch profile"))?;
        match serde_json::to_value(&response.data) {
            Ok(serde_json::Value::Object(map)) => Ok(map),
            _ => Ok(serde_json::Map::new()),
        }
    }
}
