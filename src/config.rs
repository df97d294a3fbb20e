//! The server's configuration: one YAML file, every key optional, unknown keys rejected.
//!
//! `generate-config` writes [`Config::to_commented_yaml`], which documents every key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use erased::Yaml as _;

mod federation;
pub use federation::{FederationConfig, TrustedKeyServer};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The domain part of every local user and room id.
    pub server_name: String,
    /// Address the HTTP listener binds to.
    pub listen: SocketAddr,
    /// Directory for the signing key, the SQLite database and other local files.
    pub data_dir: PathBuf,
    pub database: DatabaseConfig,
    pub registration: RegistrationConfig,
    pub rate_limits: RateLimitConfig,
    pub server_notices: ServerNoticesConfig,
    pub search: SearchConfig,
    pub password_hashing: PasswordHashingConfig,
    pub limits: LimitsConfig,
    pub rooms: RoomsConfig,
    pub presence: PresenceConfig,
    /// Reverse proxies whose `X-Forwarded-For` / `Forwarded` headers are
    /// believed (see [`crate::net::client_ip`]).
    pub trusted_proxies: Vec<crate::net::Cidr>,
    pub caches: CacheConfig,
    pub media: MediaConfig,
    pub turn: TurnConfig,
    pub outbound: OutboundConfig,
    /// The Server-Server API: its TLS listener, outgoing requests, key
    /// servers. Boxed: a config is held by value in many futures.
    pub federation: Box<FederationConfig>,
    /// Registration files (YAML, as Synapse's `app_service_config_files`) of
    /// the application services; read and checked at start.
    pub app_services: Vec<PathBuf>,
    /// How transactions reach the application services.
    pub app_service_delivery: AppServiceDeliveryConfig,
    /// `tracing` filter directive, e.g. `info` or `myelin=debug,info`.
    pub log_level: String,
    /// Log format and per-target levels (on top of `log_level`).
    pub log: LogConfig,
    /// The Prometheus metrics listener (off unless `metrics.listen` is set).
    pub metrics: MetricsConfig,
    /// URL clients are told to use in `/.well-known/matrix/client`. Defaults to
    /// `http://<listen>` when unset.
    pub public_baseurl: Option<String>,
    /// Who to contact about this server: `/.well-known/matrix/support`.
    pub support: SupportConfig,
    /// Seconds a shutdown (SIGTERM, Ctrl-C) may take: requests in flight,
    /// queued writes and jobs' current step (`server::RunningServer`).
    pub shutdown_timeout_secs: u64,
}

/// `log`: how log lines are written, and levels per target.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (human-readable lines) or `json` (one JSON object a line).
    pub format: LogFormat,
    /// Levels by target (a module path such as `myelin::http` or
    /// `tower_http`), over `log_level`; reloaded on SIGHUP.
    pub levels: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (target, level) in &self.levels {
            if target.is_empty() || target.contains([',', '=', '[', ']', '{', '}', ' ']) {
                return invalid("log.levels", "a target must be a module path");
            }
            if level.is_empty()
                || level
                    .parse::<tracing_subscriber::filter::LevelFilter>()
                    .is_err()
            {
                return invalid(
                    "log.levels",
                    "a level must be off, error, warn, info, debug or trace",
                );
            }
        }
        Ok(())
    }
}

/// `metrics`: Prometheus metrics on a listener of their own.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the metrics listener (`GET /metrics`); none: no metrics
    /// listener. Never the client listener's address.
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` or `postgres://user:pass@host/db`. Empty means
    /// SQLite at `<data_dir>/myelin.db`.
    pub url: String,
    /// Maximum connections in the pool (SQLite: at most one per core; see
    /// `Dialect::pool_size`).
    pub max_connections: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    /// Allow anyone to register through `POST /register`.
    pub enabled: bool,
    /// Require an `m.login.registration_token` stage when registering.
    pub requires_token: bool,
    /// Enables `/_synapse/admin/v1/register` (HMAC-SHA1 shared-secret registration).
    pub shared_secret: Option<String>,
    /// Allow guest accounts (`POST /register?kind=guest`).
    pub allow_guests: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Requests per second allowed for each (user, device) on rate-limited endpoints.
    pub per_second: f64,
    /// Burst size for each (user, device).
    pub burst: u32,
    /// Login and registration attempts per second allowed from one IP address.
    pub login_per_second: f64,
    pub login_burst: u32,
    /// Media uploads (`POST /upload`, `POST /create`) per second allowed
    /// for each user, all devices together (as Synapse's `rc_media_create`).
    pub media_per_second: f64,
    pub media_burst: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerNoticesConfig {
    pub enabled: bool,
    pub local_part: String,
    pub display_name: String,
    pub avatar_url: Option<String>,
    pub room_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    pub enabled: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordHashingConfig {
    /// argon2id memory cost in KiB.
    pub memory_kib: u32,
    /// argon2id iterations.
    pub iterations: u32,
}

/// `app_service_delivery`: transactions to application services.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppServiceDeliveryConfig {
    /// Wait after a failed transaction (ms); doubled per failure.
    pub first_retry_ms: u64,
    /// The longest wait between retries (ms).
    pub max_retry_ms: u64,
    /// How long one request to a service may take (s).
    pub timeout_secs: u64,
}

impl AppServiceDeliveryConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.first_retry_ms == 0 {
            return invalid("app_service_delivery.first_retry_ms", "must be at least 1");
        }
        if self.max_retry_ms < self.first_retry_ms {
            return invalid(
                "app_service_delivery.max_retry_ms",
                "must be at least first_retry_ms",
            );
        }
        if !(1..=3600).contains(&self.timeout_secs) {
            return invalid("app_service_delivery.timeout_secs", "must be 1 to 3600");
        }
        Ok(())
    }
}

impl Default for AppServiceDeliveryConfig {
    /// As Synapse: 2 s doubling to 512 s; a minute per request.
    fn default() -> Self {
        Self {
            first_retry_ms: 2_000,
            max_retry_ms: 512_000,
            timeout_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceConfig {
    /// Track and share online/offline status.
    pub enabled: bool,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomsConfig {
    /// Room version for new rooms when the client asks for none: any stable
    /// version, "1" to "12".
    pub default_version: String,
    /// Ephemeral messages (MSC2228): a message whose content has
    /// `org.matrix.self_destruct_after` (a time in ms) is pruned, as a
    /// redaction prunes it, once that time passes.
    pub ephemeral_messages: bool,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self {
            default_version: "12".into(),
            ephemeral_messages: true,
        }
    }
}

/// The bound of every in-memory cache and table, in entries (the least
/// recently used entry goes first; see README, "Memory").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Rooms whose head (extremities, state) is kept loaded.
    pub room_heads: usize,
    /// Rooms whose version and newest stream position are kept.
    pub rooms: usize,
    /// (user, room) pairs whose unread counts are kept.
    pub unread_counts: usize,
    /// Rate-limit buckets (per device and per IP).
    pub rate_limit_buckets: usize,
    /// Open user-interactive-auth sessions.
    pub uia_sessions: usize,
    /// Outstanding shared-secret registration nonces.
    pub registration_nonces: usize,
    /// Users whose `/keys/query` answer (device and cross-signing keys) is
    /// kept.
    pub device_keys: usize,
    /// (user, room) pairs of sliding sync's room lists: whole users are
    /// kept, the least recently synced going first.
    pub sliding_sync_rooms: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            room_heads: 10_000,
            rooms: 100_000,
            unread_counts: 100_000,
            rate_limit_buckets: 100_000,
            uia_sessions: 10_000,
            registration_nonces: 10_000,
            device_keys: 10_000,
            sliding_sync_rooms: 500_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest accepted request body in bytes (every JSON endpoint); larger
    /// bodies get 413 `M_TOO_LARGE`, checked after authentication and rate
    /// limits, from `Content-Length` before the body is read.
    pub max_request_bytes: usize,
    /// Seconds a client may take to send a request body once its headers
    /// are in (then 408 and the connection is closed).
    pub body_read_timeout_secs: u64,
    /// Most messages one `PUT /sendToDevice` may store, counted per
    /// recipient device with `*` expanded to every device of its user;
    /// more is 413 `M_TOO_LARGE` and stores nothing.
    pub max_to_device_messages: usize,
    /// Most content bytes one `PUT /sendToDevice` may store, summed over
    /// its recipient devices (`*` expanded); more is 413 `M_TOO_LARGE`.
    pub max_to_device_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost".into(),
            listen: "127.0.0.1:8008".parse().expect("static address"),
            data_dir: PathBuf::from("./data"),
            database: DatabaseConfig::default(),
            registration: RegistrationConfig::default(),
            rate_limits: RateLimitConfig::default(),
            server_notices: ServerNoticesConfig::default(),
            search: SearchConfig::default(),
            password_hashing: PasswordHashingConfig::default(),
            limits: LimitsConfig::default(),
            rooms: RoomsConfig::default(),
            presence: PresenceConfig::default(),
            trusted_proxies: Vec::new(),
            caches: CacheConfig::default(),
            media: MediaConfig::default(),
            turn: TurnConfig::default(),
            outbound: OutboundConfig::default(),
            federation: Box::default(),
            app_services: Vec::new(),
            app_service_delivery: AppServiceDeliveryConfig::default(),
            log_level: "info".into(),
            log: LogConfig::default(),
            metrics: MetricsConfig::default(),
            public_baseurl: None,
            support: SupportConfig::default(),
            shutdown_timeout_secs: 10,
        }
    }
}

/// `support`: what `GET /.well-known/matrix/support` answers (spec v1.10,
/// MSC1929), in its own wire names. Synapse has no such setting (its
/// operators serve the file from their web server); with nothing set the
/// endpoint answers 404 `M_NOT_FOUND`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupportConfig {
    /// Ways to reach the server's administrators.
    pub contacts: Vec<SupportContact>,
    /// A page with help specific to this server (an http(s) URL).
    pub support_page: Option<String>,
}

/// One contact of [`SupportConfig`]: a role and at least one of a Matrix
/// user id and an email address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupportContact {
    /// `m.role.admin` (any question), `m.role.security` (sensitive
    /// reports), or a namespaced role of one's own.
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matrix_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_address: Option<String>,
}

impl SupportConfig {
    /// Whether there is anything to answer.
    pub fn is_empty(&self) -> bool {
        self.contacts.is_empty() && self.support_page.is_none()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for contact in &self.contacts {
            if contact.role.trim().is_empty() {
                return invalid("support.contacts", "each contact needs a role");
            }
            if contact.matrix_id.is_none() && contact.email_address.is_none() {
                return invalid(
                    "support.contacts",
                    "each contact needs a matrix_id or an email_address",
                );
            }
            if contact
                .matrix_id
                .as_ref()
                .is_some_and(|id| ruma::UserId::parse(id).is_err())
            {
                return invalid("support.contacts", "a matrix_id is not a valid user id");
            }
            if contact
                .email_address
                .as_ref()
                .is_some_and(|e| !e.contains('@') || e.trim() != e)
            {
                return invalid("support.contacts", "an email_address is not an address");
            }
        }
        if self.support_page.as_ref().is_some_and(|page| {
            !url::Url::parse(page).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        }) {
            return invalid("support.support_page", "must be an http(s) URL");
        }
        Ok(())
    }

    /// The `support` section of `generate-config`'s output.
    fn commented(&self) -> String {
        format!(
            r#"# Who to contact about this server, served at /.well-known/matrix/support
# (when nothing is set it answers 404). Each contact has a role (m.role.admin
# for any question, m.role.security for sensitive reports) and a matrix_id,
# an email_address or both, e.g.
#   contacts:
#     - {{role: m.role.admin, matrix_id: "@admin:example.org", email_address: admin@example.org}}
#     - {{role: m.role.security, email_address: security@example.org}}
# support_page: a page with help specific to this server (e.g. extra sign-up steps).
support:
  contacts: {contacts}
  support_page: {page}
"#,
            contacts = serde_json::to_string(&self.contacts).expect("strings serialize"),
            page = yaml_or_null(self.support_page.as_ref()),
        )
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            max_connections: 8,
        }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            per_second: 10.0,
            burst: 50,
            login_per_second: 1.0,
            login_burst: 10,
            media_per_second: 10.0,
            media_burst: 50,
        }
    }
}

impl Default for ServerNoticesConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            local_part: "_server".into(),
            display_name: "Server Notices".into(),
            avatar_url: None,
            room_name: "Server Notices".into(),
        }
    }
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

impl Default for PasswordHashingConfig {
    fn default() -> Self {
        // argon2's recommended defaults (RFC 9106 second choice, OWASP): 19 MiB, 2 passes.
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: 1024 * 1024,
            body_read_timeout_secs: 30,
            max_to_device_messages: 10_000,
            max_to_device_bytes: 16 * 1024 * 1024,
        }
    }
}

/// The content repository (`services/media.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Largest upload in bytes (larger: 413 `M_TOO_LARGE`).
    pub max_upload_size: u64,
    /// New uploads are served only through the authenticated endpoints
    /// (`/_matrix/client/v1/media/...`), as Synapse's `enable_authenticated_media`.
    pub enable_authenticated_media: bool,
    /// Asynchronous uploads (`POST /_matrix/media/v1/create`) one user may
    /// have waiting for their body.
    pub max_pending_uploads: u32,
    /// Seconds a created media id waits for its body before it lapses.
    pub unused_expiration_secs: u64,
    /// Seconds an upload's body may take to arrive (in place of
    /// `limits.body_read_timeout_secs`, which is for JSON bodies).
    pub upload_timeout_secs: u64,
    /// Images with more pixels than this are not decoded for thumbnails
    /// (as Synapse's `max_image_pixels`).
    pub max_image_pixels: u64,
    /// The thumbnails made of every image upload, in the background.
    pub thumbnail_sizes: Vec<ThumbnailSize>,
    pub url_preview: UrlPreviewConfig,
    /// Where bodies are kept: `local` (`<data_dir>/media`) or `s3`.
    pub store: MediaStoreKind,
    /// The bucket when `store` is `s3`.
    pub s3: Option<S3Config>,
    /// What one user may upload in total within a time period, as
    /// Synapse's `media_upload_limits`; empty (the default): no limit.
    pub upload_limits: Vec<UploadLimit>,
    /// The `admin_contact` URI of the error an upload past a limit gets
    /// (e.g. `mailto:admin@example.org`).
    pub upload_limit_contact: String,
}

/// A per-user upload quota: at most `max_bytes` in the last
/// `time_period_secs` (media deleted since no longer counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadLimit {
    pub time_period_secs: u64,
    pub max_bytes: u64,
}

/// URL previews (`GET /_matrix/client/v1/media/preview_url`,
/// `services/media/preview.rs`), as Synapse's `url_preview_*` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UrlPreviewConfig {
    /// Off by default, as Synapse's `url_preview_enabled`: the endpoints
    /// then answer 404 `M_UNRECOGNIZED`.
    pub enabled: bool,
    /// Addresses a preview may not fetch from (default: every private,
    /// loopback, link-local, shared, multicast and reserved range).
    pub ip_range_blocklist: Vec<crate::net::Cidr>,
    /// Addresses fetched from even when the blocklist names them.
    pub ip_range_allowlist: Vec<crate::net::Cidr>,
    /// Largest page or image fetched, in bytes (larger: 502 `M_TOO_LARGE`).
    pub max_spider_size: u64,
    /// Seconds one fetch may take.
    pub timeout_secs: u64,
    /// oEmbed providers (`services/media/oembed.rs`).
    pub oembed: OembedConfig,
}

/// `media.url_preview.oembed`, as Synapse's `oembed` section: URLs of these
/// providers are previewed from their oEmbed endpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OembedConfig {
    /// Leave out the built-in providers (YouTube, Vimeo, X, Twitter,
    /// Spotify, SoundCloud).
    pub disable_default_providers: bool,
    /// JSON files of more providers, in the format of oembed.com's
    /// `providers.json`; read at start.
    pub additional_providers: Vec<PathBuf>,
}

/// Requests the server makes to the outside world (push gateways;
/// `net/outbound.rs`). URL previews have their own address lists in
/// `media.url_preview`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// PEM files of certificate authorities trusted for https besides the
    /// system's (an operator's private CA). `SSL_CERT_FILE` is read too.
    pub ca_files: Vec<PathBuf>,
    /// Addresses outgoing requests may not reach (default: every private,
    /// loopback, link-local, shared, multicast and reserved range, as
    /// Synapse's `ip_range_blacklist`).
    pub ip_range_blocklist: Vec<crate::net::Cidr>,
    /// Addresses reachable even when the blocklist names them.
    pub ip_range_allowlist: Vec<crate::net::Cidr>,
}

impl Default for UrlPreviewConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            ip_range_blocklist: crate::net::outbound::default_blocklist(),
            ip_range_allowlist: Vec::new(),
            // Synapse's default.
            max_spider_size: 10 * 1024 * 1024,
            timeout_secs: 10,
            oembed: OembedConfig::default(),
        }
    }
}

/// The media store backend (`services/media/store.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaStoreKind {
    #[default]
    Local,
    S3,
}

/// An S3-compatible bucket for media bodies (AWS, MinIO, Garage, Ceph...).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    pub bucket: String,
    pub region: String,
    /// The service's URL, e.g. `http://127.0.0.1:9000` for a MinIO; none
    /// for AWS (the region's endpoint).
    pub endpoint: Option<String>,
    /// Credentials; when both are unset, the `AWS_*` environment variables
    /// (or the instance's role) are used.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Put before every object name (`prefix/ab/cd/abcd...`); empty for none.
    pub prefix: String,
    /// `https://BUCKET.host/` requests instead of `https://host/BUCKET/`.
    pub virtual_hosted_style: bool,
    /// Allow an `http://` endpoint (a local test server).
    pub allow_http: bool,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            bucket: String::new(),
            region: "us-east-1".into(),
            endpoint: None,
            access_key_id: None,
            secret_access_key: None,
            prefix: String::new(),
            virtual_hosted_style: false,
            allow_http: false,
        }
    }
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            ca_files: Vec::new(),
            ip_range_blocklist: crate::net::outbound::default_blocklist(),
            ip_range_allowlist: Vec::new(),
        }
    }
}

impl OutboundConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for f in &self.ca_files {
            if !f.is_file() {
                return Err(ConfigError::Invalid {
                    key: "outbound.ca_files",
                    message: format!("{} is not a readable file", f.display()),
                });
            }
        }
        Ok(())
    }

    /// The `outbound` section of `generate-config`'s output.
    fn commented(&self) -> String {
        format!(
            r#"# Requests Myelin makes to other servers (push gateways).
outbound:
  # PEM files of certificate authorities trusted for https besides the
  # system's (e.g. ["/etc/myelin/private-ca.pem"]). The file named by the
  # SSL_CERT_FILE environment variable is trusted too.
  ca_files: {ca}
  # Address ranges (CIDR) never contacted: a name resolving only to them
  # fails, an address in a URL is refused, and so are redirects to them.
  # The default is every private, loopback, link-local, shared (CGNAT),
  # multicast, documentation and reserved range of IPv4 and IPv6, as
  # Synapse's ip_range_blacklist. [] allows everything.
  ip_range_blocklist: {block}
  # Ranges allowed even when the blocklist names them (e.g. a push gateway
  # on the local network: ["10.1.2.3"]).
  ip_range_allowlist: {allow}
"#,
            ca = serde_json::to_string(&self.ca_files).expect("paths serialize"),
            block = serde_json::to_string(&self.ip_range_blocklist).expect("strings serialize"),
            allow = serde_json::to_string(&self.ip_range_allowlist).expect("strings serialize"),
        )
    }
}

/// Never prints the secret key (configs are logged at start-up errors).
impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "(set)"),
            )
            .field("prefix", &self.prefix)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

impl S3Config {
    fn validate(&self) -> Result<(), ConfigError> {
        let b = &self.bucket;
        if !(3..=63).contains(&b.len())
            || !b
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
            || !b.starts_with(|c: char| c.is_ascii_alphanumeric())
            || !b.ends_with(|c: char| c.is_ascii_alphanumeric())
        {
            return invalid(
                "media.s3.bucket",
                "must be a bucket name: 3 to 63 lowercase letters, digits, '-' and '.'",
            );
        }
        if self.region.is_empty() {
            return invalid("media.s3.region", "must not be empty");
        }
        if let Some(endpoint) = &self.endpoint {
            match url::Url::parse(endpoint).map(|u| u.scheme().to_owned()) {
                Ok(scheme) if scheme == "https" => {}
                Ok(scheme) if scheme == "http" => {
                    if !self.allow_http {
                        return invalid(
                            "media.s3.endpoint",
                            "is http://: set media.s3.allow_http: true to allow it",
                        );
                    }
                }
                _ => return invalid("media.s3.endpoint", "must be an http:// or https:// URL"),
            }
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return invalid(
                "media.s3.access_key_id",
                "access_key_id and secret_access_key go together (omit both for the AWS_* environment)",
            );
        }
        if !self.prefix.is_empty()
            && self
                .prefix
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return invalid(
                "media.s3.prefix",
                "must be path segments joined by '/', with no empty, '.' or '..' segment",
            );
        }
        Ok(())
    }
}

/// One thumbnail size made of every image upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailSize {
    pub width: u32,
    pub height: u32,
    pub method: ThumbnailMethod,
}

/// How a thumbnail is made: cut to exactly the size (`crop`), or shrunk to
/// fit within it, keeping the aspect (`scale`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThumbnailMethod {
    Crop,
    Scale,
}

impl ThumbnailMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Crop => "crop",
            Self::Scale => "scale",
        }
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            // Synapse's default.
            max_upload_size: 50 * 1024 * 1024,
            enable_authenticated_media: true,
            max_pending_uploads: 5,
            unused_expiration_secs: 24 * 60 * 60,
            // 50 MiB at 1 Mbit/s.
            upload_timeout_secs: 600,
            // Synapse's default (32M).
            max_image_pixels: 32 * 1024 * 1024,
            // Synapse's default sizes.
            thumbnail_sizes: [
                (32, 32, ThumbnailMethod::Crop),
                (96, 96, ThumbnailMethod::Crop),
                (320, 240, ThumbnailMethod::Scale),
                (640, 480, ThumbnailMethod::Scale),
                (800, 600, ThumbnailMethod::Scale),
            ]
            .into_iter()
            .map(|(width, height, method)| ThumbnailSize {
                width,
                height,
                method,
            })
            .collect(),
            url_preview: UrlPreviewConfig::default(),
            store: MediaStoreKind::Local,
            s3: None,
            upload_limits: Vec::new(),
            upload_limit_contact: String::new(),
        }
    }
}

/// TURN servers handed to VoIP clients by `GET /voip/turnServer`
/// (`services/turn.rs`), as Synapse's `turn_*` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnConfig {
    /// TURN (or STUN) URIs, e.g. `turn:turn.example.org:3478?transport=udp`.
    /// Empty: no TURN, `/voip/turnServer` answers `{}`.
    pub uris: Vec<String>,
    /// coturn's `static-auth-secret`: credentials are made per user
    /// (`<expiry>:<user_id>`, base64 HMAC-SHA1). Wins over `username`.
    pub shared_secret: Option<String>,
    /// A static username and password, when there is no shared secret.
    pub username: Option<String>,
    pub password: Option<String>,
    /// Seconds the credentials are valid (the `ttl` clients get).
    pub user_lifetime_secs: u64,
    /// Guests get credentials too.
    pub allow_guests: bool,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            uris: Vec::new(),
            shared_secret: None,
            username: None,
            password: None,
            // Synapse's defaults.
            user_lifetime_secs: 3600,
            allow_guests: true,
        }
    }
}

impl TurnConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.uris.iter().any(|u| {
            !["turn:", "turns:", "stun:", "stuns:"]
                .iter()
                .any(|p| u.starts_with(p))
        }) {
            return invalid(
                "turn.uris",
                "each must be a turn:, turns:, stun: or stuns: URI",
            );
        }
        for (key, v) in [
            ("turn.shared_secret", &self.shared_secret),
            ("turn.username", &self.username),
            ("turn.password", &self.password),
        ] {
            if v.as_ref().is_some_and(|v| v.is_empty()) {
                return invalid(key, "must not be empty (omit it instead)");
            }
        }
        if self.username.is_some() != self.password.is_some() {
            return invalid("turn.username", "username and password go together");
        }
        let has_credentials = self.shared_secret.is_some() || self.username.is_some();
        if !self.uris.is_empty() && !has_credentials {
            return invalid(
                "turn.uris",
                "needs turn.shared_secret or turn.username and turn.password",
            );
        }
        if self.uris.is_empty() && has_credentials {
            return invalid(
                "turn.uris",
                "must list the TURN servers the credentials are for",
            );
        }
        if self.user_lifetime_secs == 0 {
            return invalid("turn.user_lifetime_secs", "must be at least 1");
        }
        Ok(())
    }

    /// The `turn` section of `generate-config`'s output.
    fn commented(&self) -> String {
        format!(
            r#"turn:
  # TURN servers for VoIP calls, served by GET /_matrix/client/v3/voip/turnServer.
  # Empty: no TURN, the endpoint answers {{}}.
  # e.g. ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349?transport=tcp"]
  uris: {uris}
  # coturn's static-auth-secret (use-auth-secret): each user gets the username
  # "<expiry>:<user_id>" and the password base64(HMAC-SHA1(secret, username)).
  shared_secret: {secret}
  # Or, without a shared secret, one static username and password for all.
  username: {username}
  password: {password}
  # Seconds the credentials are valid.
  user_lifetime_secs: {lifetime}
  # Give guests TURN credentials too.
  allow_guests: {guests}
"#,
            uris = serde_json::to_string(&self.uris).expect("strings serialize"),
            secret = yaml_or_null(self.shared_secret.as_ref()),
            username = yaml_or_null(self.username.as_ref()),
            password = yaml_or_null(self.password.as_ref()),
            lifetime = self.user_lifetime_secs,
            guests = self.allow_guests,
        )
    }
}

/// A refused value: the key it is under and why.
fn invalid(key: &'static str, message: &str) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid {
        key,
        message: message.to_owned(),
    })
}

impl LimitsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_request_bytes < 1024 {
            return invalid("limits.max_request_bytes", "must be at least 1024");
        }
        if self.body_read_timeout_secs == 0 {
            return invalid("limits.body_read_timeout_secs", "must be at least 1");
        }
        if self.max_to_device_messages == 0 {
            return invalid("limits.max_to_device_messages", "must be at least 1");
        }
        if self.max_to_device_bytes < 65_536 {
            return invalid(
                "limits.max_to_device_bytes",
                "must be at least 65536 (one message's largest size)",
            );
        }
        Ok(())
    }
}

impl MediaConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_upload_size == 0 {
            return invalid("media.max_upload_size", "must be at least 1");
        }
        if self.max_pending_uploads == 0 {
            return invalid("media.max_pending_uploads", "must be at least 1");
        }
        if self.unused_expiration_secs == 0 {
            return invalid("media.unused_expiration_secs", "must be at least 1");
        }
        if self.upload_timeout_secs == 0 {
            return invalid("media.upload_timeout_secs", "must be at least 1");
        }
        if self.max_image_pixels == 0 {
            return invalid("media.max_image_pixels", "must be at least 1");
        }
        if self
            .thumbnail_sizes
            .iter()
            .any(|s| s.width == 0 || s.height == 0)
        {
            return invalid(
                "media.thumbnail_sizes",
                "widths and heights must be at least 1",
            );
        }
        if self.url_preview.max_spider_size == 0 {
            return invalid("media.url_preview.max_spider_size", "must be at least 1");
        }
        if self
            .upload_limits
            .iter()
            .any(|l| l.time_period_secs == 0 || l.max_bytes == 0)
        {
            return invalid(
                "media.upload_limits",
                "time_period_secs and max_bytes must be at least 1",
            );
        }
        if self.url_preview.timeout_secs == 0 {
            return invalid("media.url_preview.timeout_secs", "must be at least 1");
        }
        match (&self.store, &self.s3) {
            (MediaStoreKind::S3, None) => invalid(
                "media.s3",
                "media.store is s3: the media.s3 section (bucket, ...) is needed",
            ),
            (_, Some(s3)) => s3.validate(),
            (MediaStoreKind::Local, None) => Ok(()),
        }
    }

    /// The `media` section of `generate-config`'s output.
    fn commented(&self) -> String {
        format!(
            r#"media:
  # Largest upload accepted, in bytes (larger: 413 M_TOO_LARGE). Media
  # bodies are stored in <data_dir>/media, once per distinct content.
  max_upload_size: {max}
  # New uploads are served only to logged-in users, through
  # /_matrix/client/v1/media/download; the unauthenticated legacy
  # /_matrix/media/v3/download answers 404 for them. Media uploaded while
  # this was off stays available there.
  enable_authenticated_media: {auth}
  # Asynchronous uploads (POST /_matrix/media/v1/create) one user may have
  # waiting for their content (more: 429 M_LIMIT_EXCEEDED), and the seconds
  # a created media id waits for it.
  max_pending_uploads: {pending}
  unused_expiration_secs: {expiry}
  # Seconds an upload's body may take to arrive (then 408 and the
  # connection is closed); limits.body_read_timeout_secs is for the rest.
  upload_timeout_secs: {upload_timeout}
  # Images with more pixels than this are not decoded for thumbnails (the
  # thumbnail request answers 400), so no image can exhaust memory.
  max_image_pixels: {max_pixels}
  # What one user may upload in total within a time period: the bytes of
  # their uploads in the last time_period_secs (deleted media no longer
  # counts), as Synapse's media_upload_limits. An upload past any of them
  # answers 403 M_RESOURCE_LIMIT_EXCEEDED with upload_limit_contact as its
  # admin_contact (a URI, e.g. mailto:admin@example.org). Empty: no limit.
  # E.g. [{{time_period_secs: 86400, max_bytes: 1073741824}}] (1 GiB a day).
  upload_limits: {upload_limits}
  upload_limit_contact: {upload_limit_contact}
  # The thumbnails made of each image upload, in the background (method:
  # crop cuts to the exact size, scale fits within it). Other sizes are made
  # when first asked for.
{sizes}  # URL previews (GET /_matrix/client/v1/media/preview_url): the page's
  # OpenGraph title, description and image (stored as media). Off by
  # default, as in Synapse: the endpoint then answers 404 M_UNRECOGNIZED.
  url_preview:
    enabled: {pv_enabled}
    # Address ranges (CIDR) previews never fetch from: a name resolving
    # only to them answers 502, an address in the URL 403. The default is
    # every private, loopback, link-local, shared, multicast, documentation
    # and reserved range (Synapse's url_preview_ip_range_blacklist list).
    ip_range_blocklist: {pv_block}
    # Ranges fetched from even when the blocklist names them.
    ip_range_allowlist: {pv_allow}
    # Largest page or image fetched, in bytes (larger: 502 M_TOO_LARGE).
    max_spider_size: {pv_size}
    # Seconds one fetch may take.
    timeout_secs: {pv_timeout}
    # oEmbed (as Synapse's oembed section): links to these providers are
    # previewed from the provider's oEmbed endpoint (title, author, image,
    # video), and a page naming an oEmbed document has it read too. The
    # built-in list covers YouTube, Vimeo, X, Twitter, Spotify and
    # SoundCloud; additional_providers are JSON files in the format of
    # https://oembed.com/providers.json.
    oembed:
      disable_default_providers: {oe_disable}
      additional_providers: {oe_files}
"#,
            oe_disable = self.url_preview.oembed.disable_default_providers,
            oe_files = serde_json::to_string(&self.url_preview.oembed.additional_providers)
                .expect("paths serialize"),
            pv_enabled = self.url_preview.enabled,
            pv_block = serde_json::to_string(&self.url_preview.ip_range_blocklist)
                .expect("strings serialize"),
            pv_allow = serde_json::to_string(&self.url_preview.ip_range_allowlist)
                .expect("strings serialize"),
            pv_size = self.url_preview.max_spider_size,
            pv_timeout = self.url_preview.timeout_secs,
            max = self.max_upload_size,
            auth = self.enable_authenticated_media,
            pending = self.max_pending_uploads,
            expiry = self.unused_expiration_secs,
            upload_timeout = self.upload_timeout_secs,
            max_pixels = self.max_image_pixels,
            upload_limits = serde_json::to_string(&self.upload_limits).expect("numbers serialize"),
            upload_limit_contact =
                serde_json::to_string(&self.upload_limit_contact).expect("a string serializes"),
            sizes = if self.thumbnail_sizes.is_empty() {
                "  thumbnail_sizes: []\n".to_owned()
            } else {
                self.thumbnail_sizes
                    .iter()
                    .fold("  thumbnail_sizes:\n".to_owned(), |out, s| {
                        out + &format!(
                            "    - {{ width: {}, height: {}, method: {} }}\n",
                            s.width,
                            s.height,
                            s.method.as_str()
                        )
                    })
            },
        ) + &self.commented_store()
    }

    /// The `media.store` and `media.s3` keys of `generate-config`'s output.
    fn commented_store(&self) -> String {
        let store = match self.store {
            MediaStoreKind::Local => "local",
            MediaStoreKind::S3 => "s3",
        };
        let s3 = self.s3.clone().unwrap_or_else(|| S3Config {
            bucket: "myelin-media".into(),
            ..S3Config::default()
        });
        let section = format!(
            r#"s3:
  bucket: {bucket}
  region: {region}
  # The service's URL: http://127.0.0.1:9000 (MinIO), http://HOST:3900
  # (Garage), null for AWS itself (the region's endpoint).
  endpoint: {endpoint}
  # Credentials; with both null the AWS_ACCESS_KEY_ID and
  # AWS_SECRET_ACCESS_KEY environment variables (or the instance's role)
  # are used, which keeps the secret out of this file.
  access_key_id: {key_id}
  secret_access_key: {secret}
  # Put before every object name (PREFIX/ab/cd/abcd...); "" for none.
  prefix: {prefix}
  # true: https://BUCKET.host/ (AWS); false: https://host/BUCKET/ (MinIO,
  # Garage and most self-hosted servers).
  virtual_hosted_style: {virtual}
  # Allow an http:// endpoint (a server on the same machine or network).
  allow_http: {http}
"#,
            bucket = s3.bucket.yaml(),
            region = s3.region.yaml(),
            endpoint = yaml_or_null(s3.endpoint.as_ref()),
            key_id = yaml_or_null(s3.access_key_id.as_ref()),
            secret = yaml_or_null(s3.secret_access_key.as_ref()),
            prefix = s3.prefix.yaml(),
            virtual = s3.virtual_hosted_style,
            http = s3.allow_http,
        );
        // Without a configured bucket the section is an example, commented out.
        let indent = if self.s3.is_some() { "  " } else { "  # " };
        let section = section
            .lines()
            .fold(String::new(), |out, line| out + indent + line + "\n");
        format!(
            r#"  # Where media bodies are kept: local (<data_dir>/media) or s3 (an
  # S3-compatible bucket: AWS, MinIO, Garage, Ceph; the s3 section below).
  # Uploads are staged in <data_dir>/media/tmp either way.
  store: {store}
{section}"#
        )
    }
}

/// A configuration problem, reported to the operator as one line naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

impl Config {
    /// Reads and validates a YAML config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_norway::from_str(text).map_err(|e| ConfigError::Parse {
                path: PathBuf::new(),
                message: e.to_string(),
            })?
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the values that serde's types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if ruma::ServerName::parse(&self.server_name).is_err() {
            return invalid("server_name", "not a valid Matrix server name");
        }
        let url = &self.database.url;
        if !(url.is_empty()
            || url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return invalid("database.url", "must start with sqlite: or postgres://");
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections", "must be at least 1");
        }
        if self
            .registration
            .shared_secret
            .as_ref()
            .is_some_and(|s| s.is_empty())
        {
            return invalid(
                "registration.shared_secret",
                "must not be empty (omit it to disable)",
            );
        }
        let rl = &self.rate_limits;
        if !(rl.per_second > 0.0 && rl.per_second.is_finite()) {
            return invalid("rate_limits.per_second", "must be a positive number");
        }
        if !(rl.login_per_second > 0.0 && rl.login_per_second.is_finite()) {
            return invalid("rate_limits.login_per_second", "must be a positive number");
        }
        if rl.burst == 0 {
            return invalid("rate_limits.burst", "must be at least 1");
        }
        if rl.login_burst == 0 {
            return invalid("rate_limits.login_burst", "must be at least 1");
        }
        if !(rl.media_per_second > 0.0 && rl.media_per_second.is_finite()) {
            return invalid("rate_limits.media_per_second", "must be a positive number");
        }
        if rl.media_burst == 0 {
            return invalid("rate_limits.media_burst", "must be at least 1");
        }
        let sn = &self.server_notices;
        if ruma::UserId::parse(format!("@{}:{}", sn.local_part, self.server_name)).is_err() {
            return invalid("server_notices.local_part", "not a valid user localpart");
        }
        let ph = &self.password_hashing;
        if argon2::Params::new(ph.memory_kib, ph.iterations, 1, None).is_err() {
            return invalid(
                "password_hashing",
                "memory_kib must be at least 8 and iterations at least 1",
            );
        }
        if !(1..=12u8).any(|v| v.to_string() == self.rooms.default_version) {
            return invalid(
                "rooms.default_version",
                "must be a stable room version, 1 to 12",
            );
        }
        self.limits.validate()?;
        if self
            .public_baseurl
            .as_ref()
            .is_some_and(|b| url::Url::parse(b).is_err())
        {
            return invalid("public_baseurl", "not a valid URL");
        }
        self.support.validate()?;
        let c = &self.caches;
        for (key, n) in [
            ("caches.room_heads", c.room_heads),
            ("caches.rooms", c.rooms),
            ("caches.unread_counts", c.unread_counts),
            ("caches.rate_limit_buckets", c.rate_limit_buckets),
            ("caches.uia_sessions", c.uia_sessions),
            ("caches.registration_nonces", c.registration_nonces),
            ("caches.device_keys", c.device_keys),
            ("caches.sliding_sync_rooms", c.sliding_sync_rooms),
        ] {
            if n == 0 {
                return invalid(key, "must be at least 1");
            }
        }
        self.media.validate()?;
        self.turn.validate()?;
        // Outgoing requests: push gateways and previews, then federation.
        (self.outbound.validate()).and_then(|()| self.federation.validate(self.listen))?;
        if self.app_services.iter().any(|p| p.as_os_str().is_empty()) {
            return invalid("app_services", "a registration file path is empty");
        }
        self.app_service_delivery.validate()?;
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return invalid("log_level", "not a valid tracing filter");
        }
        if !(1..=3600).contains(&self.shutdown_timeout_secs) {
            return invalid("shutdown_timeout_secs", "must be 1 to 3600");
        }
        self.log.validate()?;
        self.validate_metrics()
    }

    /// `metrics.listen` is never the client listener.
    fn validate_metrics(&self) -> Result<(), ConfigError> {
        if let Some(m) = self.metrics.listen
            && m.port() != 0
            && m.port() == self.listen.port()
            && (m.ip() == self.listen.ip()
                || m.ip().is_unspecified()
                || self.listen.ip().is_unspecified())
        {
            return invalid(
                "metrics.listen",
                "must not be the client listener's address",
            );
        }
        Ok(())
    }

    /// The log filter: `log_level`, ruma's auth checks at warn (they log
    /// every event at info), then `log.levels`.
    pub fn log_filter(&self) -> String {
        let mut filter = format!("{},ruma_state_res=warn", self.log_level);
        for (target, level) in &self.log.levels {
            filter.push_str(&format!(",{target}={level}"));
        }
        filter
    }

    /// The database URL actually used: the configured one, or SQLite in the data dir.
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("myelin.db").display())
        } else {
            self.database.url.clone()
        }
    }

    /// The base URL advertised to clients.
    pub fn public_baseurl(&self) -> String {
        match &self.public_baseurl {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }

    /// A complete YAML config with every key documented; `generate-config` prints this.
    pub fn to_commented_yaml(&self) -> String {
        [
            self.commented_server(),
            self.support.commented(),
            self.commented_accounts(),
            self.commented_capacity(),
            self.commented_operations(),
            self.commented_observability(),
            self.media.commented(),
            self.turn.commented(),
            self.outbound.commented(),
            self.federation.commented(),
            self.commented_app_services(),
        ]
        .join("\n")
    }

    /// The application services' registration files.
    fn commented_app_services(&self) -> String {
        let files: Vec<String> = self
            .app_services
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        format!(
            r#"# Application services (bridges, bots): their registration files, YAML
# as Synapse reads them (id, url, as_token, hs_token, sender_localpart,
# namespaces, rate_limited, protocols, receive_ephemeral,
# org.matrix.msc3202). Each is checked at start: a missing token, a bad
# regex, an id or token used twice, or an exclusive namespace claimed twice
# stops the start with the file and key named. Each sender user is created
# at start.
app_services: {files}

# Transactions to the application services: a failed one is retried with
# the same id and content after first_retry_ms, doubling up to max_retry_ms
# (as Synapse); each request may take timeout_secs.
app_service_delivery:
  first_retry_ms: {first}
  max_retry_ms: {max}
  timeout_secs: {timeout}
"#,
            files = serde_json::to_string(&files).expect("strings serialize"),
            first = self.app_service_delivery.first_retry_ms,
            max = self.app_service_delivery.max_retry_ms,
            timeout = self.app_service_delivery.timeout_secs,
        )
    }

    /// The server's name and addresses, and the database.
    fn commented_server(&self) -> String {
        format!(
            r#"# Myelin configuration. Every key is optional; unknown keys are an error.

# The domain of this server: user ids are @name:SERVER_NAME. It cannot be
# changed once users and rooms exist.
server_name: {server_name}

# Address and port of the HTTP listener (client, federation and admin APIs).
listen: {listen}

# Where Myelin keeps its signing key, the SQLite database and other local files.
data_dir: {data_dir}

# The URL clients should use, served in /.well-known/matrix/client.
# null means http://<listen>.
public_baseurl: {baseurl}

database:
  # Empty: SQLite at <data_dir>/myelin.db (created on first start, WAL mode).
  # For PostgreSQL: postgres://USER:PASSWORD@HOST:PORT/DATABASE
  url: {db_url}
  # Largest number of pooled database connections. SQLite uses at most one
  # per CPU core Myelin may run on: a write by one connection empties the
  # others' page caches.
  max_connections: {max_conn}
"#,
            server_name = self.server_name.yaml(),
            listen = self.listen.to_string().yaml(),
            data_dir = self.data_dir.display().to_string().yaml(),
            baseurl = yaml_or_null(self.public_baseurl.as_ref()),
            db_url = self.database.url.yaml(),
            max_conn = self.database.max_connections,
        )
    }

    /// Registration, rate limits and server notices.
    fn commented_accounts(&self) -> String {
        format!(
            r#"registration:
  # Let anyone create an account through POST /_matrix/client/v3/register.
  enabled: {reg_enabled}
  # When registration is enabled, also require a registration token
  # (m.login.registration_token); tokens are managed through the admin API.
  requires_token: {reg_token}
  # Shared secret for /_synapse/admin/v1/register (HMAC-SHA1, as Synapse's
  # register_new_matrix_user). null disables that endpoint.
  shared_secret: {secret}
  # Allow guest accounts (POST /register?kind=guest).
  allow_guests: {guests}

rate_limits:
  # Rate limiting of client requests per user and device; admins are exempt.
  enabled: {rl_enabled}
  # Sustained requests per second and burst size for each (user, device).
  per_second: {rl_ps}
  burst: {rl_burst}
  # Login and registration attempts per second and burst for one IP address.
  login_per_second: {rl_lps}
  login_burst: {rl_lburst}
  # Media uploads (POST /upload, POST /create) per second and burst for one
  # user, all devices together.
  media_per_second: {rl_mps}
  media_burst: {rl_mburst}

server_notices:
  # Let admins send server notices (/_synapse/admin/v1/send_server_notice).
  enabled: {sn_enabled}
  # Local part of the user that sends the notices (@LOCAL_PART:SERVER_NAME).
  local_part: {sn_local}
  display_name: {sn_display}
  avatar_url: {avatar}
  # Name of the room notices are delivered in.
  room_name: {sn_room}
"#,
            reg_enabled = self.registration.enabled,
            reg_token = self.registration.requires_token,
            secret = yaml_or_null(self.registration.shared_secret.as_ref()),
            guests = self.registration.allow_guests,
            rl_enabled = self.rate_limits.enabled,
            rl_ps = self.rate_limits.per_second,
            rl_burst = self.rate_limits.burst,
            rl_lps = self.rate_limits.login_per_second,
            rl_lburst = self.rate_limits.login_burst,
            rl_mps = self.rate_limits.media_per_second,
            rl_mburst = self.rate_limits.media_burst,
            sn_enabled = self.server_notices.enabled,
            sn_local = self.server_notices.local_part.yaml(),
            sn_display = self.server_notices.display_name.yaml(),
            avatar = yaml_or_null(self.server_notices.avatar_url.as_ref()),
            sn_room = self.server_notices.room_name.yaml(),
        )
    }

    /// Search, password hashing, request limits, rooms and presence.
    fn commented_capacity(&self) -> String {
        format!(
            r#"search:
  # Full-text search of messages (POST /_matrix/client/v3/search).
  enabled: {search}

password_hashing:
  # argon2id cost. Higher is slower for attackers and for logins alike.
  memory_kib: {ph_mem}
  iterations: {ph_iter}

limits:
  # Largest request body accepted, in bytes (larger: 413 M_TOO_LARGE), on
  # every JSON endpoint. Checked after authentication and rate limits and
  # before the body is read.
  max_request_bytes: {max_body}
  # Seconds a client may take to send a request body after its headers
  # (then 408 M_UNKNOWN and the connection is closed).
  body_read_timeout_secs: {body_timeout}
  # Most messages one PUT /sendToDevice may store, one per recipient device
  # ("*" counts every device of its user); more: 413 M_TOO_LARGE, nothing
  # stored. Clients send at most a few hundred per request (matrix-rust-sdk
  # 250).
  max_to_device_messages: {td_messages}
  # Most content bytes one PUT /sendToDevice may store, summed over its
  # recipient devices ("*" expanded); more: 413 M_TOO_LARGE. Each message's
  # content is also limited to 65536 bytes (as Synapse: the federation limit).
  max_to_device_bytes: {td_bytes}

rooms:
  # Version of new rooms when the client does not ask for one (1 to 12).
  default_version: {room_version}
  # Ephemeral messages (MSC2228, experimental): a message whose content has
  # org.matrix.self_destruct_after (a time in ms) loses its content, as a
  # redaction would take it, once that time passes. It lets a sender only
  # schedule the pruning of their own message, which they could redact
  # anyway. Synapse has it off by default (enable_ephemeral_messages).
  ephemeral_messages: {ephemeral_messages}

presence:
  # Track online/offline status and share it with users in the same rooms.
  enabled: {presence}
"#,
            search = self.search.enabled,
            ph_mem = self.password_hashing.memory_kib,
            ph_iter = self.password_hashing.iterations,
            max_body = self.limits.max_request_bytes,
            body_timeout = self.limits.body_read_timeout_secs,
            td_messages = self.limits.max_to_device_messages,
            td_bytes = self.limits.max_to_device_bytes,
            room_version = self.rooms.default_version.yaml(),
            ephemeral_messages = self.rooms.ephemeral_messages,
            presence = self.presence.enabled,
        )
    }

    /// Trusted proxies, cache sizes and the log filter.
    fn commented_operations(&self) -> String {
        format!(
            r#"# Reverse proxies (CIDR ranges, IPv4 or IPv6, e.g. ["127.0.0.1/32", "::1"])
# whose X-Forwarded-For (or, without it, Forwarded: for=) header names the
# client: the right-most address not itself in this list. From any other
# peer those headers are ignored. The client address keys the login and
# registration rate limits and is each device's last-seen IP.
trusted_proxies: {proxies}

# Upper bounds, in entries, of the in-memory caches and tables (the least
# recently used goes first); logged at start.
caches:
  # Rooms whose head (forward extremities, current state) stays loaded.
  room_heads: {c_heads}
  # Rooms whose version and newest stream position are remembered.
  rooms: {c_rooms}
  # (user, room) pairs whose unread notification counts are remembered.
  unread_counts: {c_unread}
  # Rate-limit buckets (per user and device, per IP address).
  rate_limit_buckets: {c_buckets}
  # Open user-interactive authentication sessions.
  uia_sessions: {c_uia}
  # Outstanding shared-secret registration nonces.
  registration_nonces: {c_nonces}
  # Users whose /keys/query answer (device and cross-signing keys) is kept.
  device_keys: {c_device_keys}
  # (user, room) pairs of sliding sync's room lists (whole users kept, the
  # least recently synced out first; about 150 bytes each).
  sliding_sync_rooms: {c_sliding_rooms}

# Log filter (tracing syntax), e.g. info, debug, or myelin=debug,info.
# The RUST_LOG environment variable overrides it.
log_level: {log_level}

# Seconds a shutdown (SIGTERM or Ctrl-C) may take. Myelin stops accepting
# connections, answers parked /sync long-polls at once, finishes the requests
# in flight, writes every queued event and lets running admin jobs finish
# their current step (they resume at the next start). Past this, it exits
# anyway, with a failure status.
shutdown_timeout_secs: {shutdown_timeout}
"#,
            proxies = serde_json::to_string(&self.trusted_proxies).expect("strings serialize"),
            c_heads = self.caches.room_heads,
            c_rooms = self.caches.rooms,
            c_unread = self.caches.unread_counts,
            c_buckets = self.caches.rate_limit_buckets,
            c_uia = self.caches.uia_sessions,
            c_nonces = self.caches.registration_nonces,
            c_device_keys = self.caches.device_keys,
            c_sliding_rooms = self.caches.sliding_sync_rooms,
            log_level = self.log_level.yaml(),
            shutdown_timeout = self.shutdown_timeout_secs,
        )
    }
}

impl Config {
    /// Logs and metrics.
    fn commented_observability(&self) -> String {
        format!(
            r#"# Logs: `format` is text (readable lines) or json (one JSON object a
# line, with the request's `request_id` in its span). `levels` sets levels
# by target over log_level, e.g. {{"myelin::http": debug, tower_http: debug}}
# (tower_http at debug logs each request's answer); SIGHUP reloads
# log_level and log.levels from this file.
log:
  format: {format}
  levels: {levels}

# Prometheus metrics (GET /metrics, text format) on a listener of their own,
# e.g. "127.0.0.1:9092"; null: off. Keep it private: it is not the client
# listener and has no authentication.
metrics:
  listen: {metrics_listen}
"#,
            format = match self.log.format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            },
            levels = serde_json::to_string(&self.log.levels).expect("strings serialize"),
            metrics_listen = self
                .metrics
                .listen
                .map_or_else(|| "null".to_owned(), |a| format!("\"{a}\"")),
        )
    }
}

/// A string as a YAML scalar, or `null`.
fn yaml_or_null(v: Option<&String>) -> String {
    v.map_or_else(|| "null".into(), erased::Yaml::yaml)
}

mod erased {
    /// Renders a string as a YAML scalar (JSON strings are valid YAML).
    pub trait Yaml {
        fn yaml(&self) -> String;
    }
    impl Yaml for String {
        fn yaml(&self) -> String {
            serde_json::to_string(self).expect("strings serialize")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_config_round_trips() {
        let mut c = Config {
            server_name: "example.org".into(),
            ..Config::default()
        };
        c.registration.shared_secret = Some("s3cr\"et".into());
        let text = c.to_commented_yaml();
        let back = Config::from_yaml(&text).unwrap();
        assert_eq!(back.server_name, "example.org");
        assert_eq!(back.registration.shared_secret.as_deref(), Some("s3cr\"et"));
        assert_eq!(back.listen, c.listen);
        c.trusted_proxies = vec![crate::net::Cidr::parse("10.0.0.0/8").unwrap()];
        c.caches.rooms = 7;
        c.caches.device_keys = 3;
        c.shutdown_timeout_secs = 25;
        let back = Config::from_yaml(&c.to_commented_yaml()).unwrap();
        assert_eq!(back.shutdown_timeout_secs, 25);
        assert_eq!(back.trusted_proxies, c.trusted_proxies);
        assert_eq!(back.caches.rooms, 7);
        assert_eq!(back.caches.device_keys, 3);
        c.media.max_upload_size = 1234;
        c.media.enable_authenticated_media = false;
        c.media.url_preview.oembed.disable_default_providers = true;
        c.media.url_preview.oembed.additional_providers = vec!["/etc/o \"1\".json".into()];
        let back = Config::from_yaml(&c.to_commented_yaml()).unwrap();
        assert_eq!(back.media.max_upload_size, 1234);
        assert!(!back.media.enable_authenticated_media);
        assert!(back.media.url_preview.oembed.disable_default_providers);
        assert_eq!(
            back.media.url_preview.oembed.additional_providers,
            c.media.url_preview.oembed.additional_providers
        );
        c.turn.uris = vec!["turn:turn.example.org?transport=udp".into()];
        c.turn.shared_secret = Some("s\"ecret".into());
        c.turn.user_lifetime_secs = 600;
        c.turn.allow_guests = false;
        let back = Config::from_yaml(&c.to_commented_yaml()).unwrap();
        assert_eq!(back.turn.uris, c.turn.uris);
        assert_eq!(back.turn.shared_secret.as_deref(), Some("s\"ecret"));
        assert_eq!(back.turn.user_lifetime_secs, 600);
        assert!(!back.turn.allow_guests);
        assert_eq!(back.media.store, MediaStoreKind::Local);
        assert!(back.media.s3.is_none());
        c.media.store = MediaStoreKind::S3;
        c.media.s3 = Some(S3Config {
            bucket: "media.example".into(),
            endpoint: Some("http://127.0.0.1:9000".into()),
            access_key_id: Some("id".into()),
            secret_access_key: Some("se\"cret".into()),
            prefix: "a/b".into(),
            allow_http: true,
            ..S3Config::default()
        });
        let back = Config::from_yaml(&c.to_commented_yaml()).unwrap();
        assert_eq!(back.media.store, MediaStoreKind::S3);
        let s3 = back.media.s3.unwrap();
        assert_eq!(s3.bucket, "media.example");
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s3.secret_access_key.as_deref(), Some("se\"cret"));
        assert_eq!(s3.prefix, "a/b");
        assert!(s3.allow_http && !s3.virtual_hosted_style);
    }

    /// `support`: written commented, read back, and checked.
    #[test]
    fn support_contacts_round_trip_and_are_checked() {
        let text = Config::default().to_commented_yaml();
        assert!(
            text.contains("support:\n  contacts: []\n  support_page: null"),
            "{text}"
        );
        assert!(Config::default().support.is_empty());
        let mut c = Config::default();
        c.support.contacts = vec![
            SupportContact {
                role: "m.role.admin".into(),
                matrix_id: Some("@admin:example.org".into()),
                email_address: Some("admin@example.org".into()),
            },
            SupportContact {
                role: "m.role.security".into(),
                matrix_id: None,
                email_address: Some("security@example.org".into()),
            },
        ];
        c.support.support_page = Some("https://example.org/help".into());
        let back = Config::from_yaml(&c.to_commented_yaml()).unwrap();
        assert_eq!(back.support.contacts, c.support.contacts);
        assert_eq!(back.support.support_page, c.support.support_page);
        let check = |f: &dyn Fn(&mut Config)| {
            let mut c = Config::default();
            f(&mut c);
            c.validate().map_err(|e| e.to_string())
        };
        let contact = |role: &str, id: Option<&str>, email: Option<&str>| SupportContact {
            role: role.into(),
            matrix_id: id.map(Into::into),
            email_address: email.map(Into::into),
        };
        for bad in [
            contact("", Some("@a:b.c"), None),
            contact("m.role.admin", None, None),
            contact("m.role.admin", Some("admin"), None),
            contact("m.role.admin", None, Some("nobody")),
        ] {
            let err = check(&|c| c.support.contacts = vec![bad.clone()]).unwrap_err();
            assert!(err.contains("support.contacts"), "{bad:?}: {err}");
        }
        for bad in ["example.org/help", "ftp://example.org/"] {
            let err = check(&|c| c.support.support_page = Some(bad.into())).unwrap_err();
            assert!(err.contains("support.support_page"), "{bad}: {err}");
        }
    }

    /// TURN: URIs need credentials and credentials URIs; a username needs
    /// its password.
    #[test]
    fn turn_settings_are_checked() {
        let ok = "turn:\n  uris: ['turn:t.example.org']\n  username: u\n  password: p\n";
        assert_eq!(
            Config::from_yaml(ok).unwrap().turn.username.as_deref(),
            Some("u")
        );
        assert_eq!(Config::default().turn.user_lifetime_secs, 3600);
        for (yaml, key) in [
            ("turn:\n  uris: ['turn:t']\n", "turn.uris"),
            ("turn:\n  shared_secret: s\n", "turn.uris"),
            (
                "turn:\n  uris: ['http://t']\n  shared_secret: s\n",
                "turn.uris",
            ),
            (
                "turn:\n  uris: ['turn:t']\n  shared_secret: ''\n",
                "turn.shared_secret",
            ),
            (
                "turn:\n  uris: ['turn:t']\n  username: u\n",
                "turn.username",
            ),
            (
                "turn:\n  uris: ['turn:t']\n  shared_secret: s\n  user_lifetime_secs: 0\n",
                "turn.user_lifetime_secs",
            ),
        ] {
            let err = Config::from_yaml(yaml).unwrap_err().to_string();
            assert!(err.contains(key), "{yaml}: {err}");
        }
    }

    /// Each wrong S3 setting is refused with its key named.
    #[test]
    fn bad_s3_settings_are_named() {
        let with = |s3: &str| Config::from_yaml(&format!("media:\n  store: s3\n{s3}"));
        let err = with("").unwrap_err().to_string();
        assert!(err.contains("media.s3"), "{err}");
        let ok =
            "  s3:\n    bucket: media\n    endpoint: http://127.0.0.1:9000\n    allow_http: true\n";
        assert!(with(ok).is_ok());
        for (s3, key) in [
            ("  s3:\n    bucket: Media_Bucket\n", "media.s3.bucket"),
            ("  s3:\n    bucket: ab\n", "media.s3.bucket"),
            (
                "  s3:\n    bucket: media\n    region: ''\n",
                "media.s3.region",
            ),
            (
                "  s3:\n    bucket: media\n    endpoint: http://h:9000\n",
                "media.s3.endpoint",
            ),
            (
                "  s3:\n    bucket: media\n    endpoint: ftp://h\n",
                "media.s3.endpoint",
            ),
            (
                "  s3:\n    bucket: media\n    access_key_id: x\n",
                "media.s3.access_key_id",
            ),
            (
                "  s3:\n    bucket: media\n    prefix: /a\n",
                "media.s3.prefix",
            ),
            (
                "  s3:\n    bucket: media\n    prefix: a/../b\n",
                "media.s3.prefix",
            ),
            ("  s3:\n    bucket: media\n    bogus: 1\n", "bogus"),
        ] {
            let err = with(s3).unwrap_err().to_string();
            assert!(err.contains(key), "{s3}: {err}");
        }
        let err = Config::from_yaml("media:\n  store: gcs\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("store") || err.contains("gcs"), "{err}");
        // The secret never shows in a printed config.
        let config = with(
            "  s3:\n    bucket: media\n    access_key_id: id\n    secret_access_key: hunter2\n",
        )
        .unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn bad_trusted_proxy_is_named() {
        let err = Config::from_yaml("trusted_proxies: ['10.0.0.0/8', '10.0.0.0/40']\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("trusted_proxies") && err.contains("10.0.0.0/40"),
            "{err}"
        );
        let err = Config::from_yaml("caches:\n  rooms: 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("caches.rooms"), "{err}");
        for (yaml, key) in [
            (
                "limits:\n  max_to_device_messages: 0\n",
                "limits.max_to_device_messages",
            ),
            (
                "limits:\n  max_to_device_bytes: 1000\n",
                "limits.max_to_device_bytes",
            ),
            ("caches:\n  device_keys: 0\n", "caches.device_keys"),
        ] {
            let err = Config::from_yaml(yaml).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_yaml("server_name: a.b\nbogus: 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let err = Config::from_yaml("server_name: 'not a server!'\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("server_name"), "{err}");
        let err = Config::from_yaml("database:\n  url: mysql://x\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("database.url"), "{err}");
        for bad in [
            "shutdown_timeout_secs: 0\n",
            "shutdown_timeout_secs: 3601\n",
        ] {
            let err = Config::from_yaml(bad).unwrap_err().to_string();
            assert!(err.contains("shutdown_timeout_secs"), "{err}");
        }
    }

    /// Any stable room version, 1 to 12, may be the default; nothing else.
    #[test]
    fn default_room_version_is_a_stable_one() {
        let with = |v: &str| Config::from_yaml(&format!("rooms:\n  default_version: '{v}'\n"));
        for v in ["1", "6", "9", "12"] {
            assert_eq!(with(v).unwrap().rooms.default_version, v);
        }
        for v in ["0", "13", "01", "foo"] {
            let err = with(v).unwrap_err().to_string();
            assert!(err.contains("rooms.default_version"), "{v}: {err}");
        }
    }

    #[test]
    fn log_and_metrics_keys_round_trip_and_are_checked() {
        let text = Config::default().to_commented_yaml();
        assert!(
            text.contains("log:\n  format: text\n  levels: {}"),
            "{text}"
        );
        assert!(text.contains("metrics:\n  listen: null"), "{text}");
        let mut c = Config::default();
        c.log.format = LogFormat::Json;
        c.log.levels.insert("myelin::http".into(), "debug".into());
        c.metrics.listen = Some("127.0.0.1:9092".parse().unwrap());
        let back = Config::from_yaml(&c.to_commented_yaml()).unwrap();
        assert_eq!(back.log.format, LogFormat::Json);
        assert_eq!(back.log.levels, c.log.levels);
        assert_eq!(back.metrics.listen, c.metrics.listen);
        assert_eq!(
            back.log_filter(),
            "info,ruma_state_res=warn,myelin::http=debug"
        );

        let check = |f: &dyn Fn(&mut Config)| {
            let mut c = Config::default();
            f(&mut c);
            c.validate().map_err(|e| e.to_string())
        };
        for bad in ["loud", ""] {
            let err = check(&|c| {
                c.log.levels.insert("myelin".into(), bad.into());
            })
            .unwrap_err();
            assert!(err.contains("log.levels"), "{err}");
        }
        let err = check(&|c| {
            c.log.levels.insert("a=b".into(), "info".into());
        })
        .unwrap_err();
        assert!(err.contains("log.levels"), "{err}");
        for same in ["127.0.0.1:8008", "0.0.0.0:8008"] {
            let err = check(&|c| c.metrics.listen = Some(same.parse().unwrap())).unwrap_err();
            assert!(err.contains("metrics.listen"), "{same}: {err}");
        }
        assert!(check(&|c| c.metrics.listen = Some("127.0.0.1:9092".parse().unwrap())).is_ok());
        assert!(Config::from_yaml("log:\n  format: xml\n").is_err());
    }
}
