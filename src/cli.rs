//! The `myelin` command line: `serve`, `generate-config`, `create-account`,
//! `admin`, `backup`, `restore`, `migrate-db`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde_json::json;

use crate::config::Config;
use crate::services::accounts::{Accounts, Registration};
use crate::services::passwords::PasswordHasherService;
use crate::storage::{AccountType, Storage};

#[derive(Parser)]
#[command(name = "myelin", version, about = "A fast, small Matrix homeserver")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the homeserver.
    Serve {
        /// YAML config file; without it: server name `localhost`, port 8008,
        /// SQLite in ./data.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print a complete, commented config file to stdout.
    GenerateConfig {
        #[arg(long)]
        server_name: String,
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        database_url: Option<String>,
        #[arg(long)]
        registration_shared_secret: Option<String>,
        #[arg(long)]
        disable_rate_limits: bool,
        /// A CA certificate file (PEM) trusted for outgoing https besides the
        /// system's (federation.ca_files and outbound.ca_files); may be
        /// repeated. Named as the sytest adapter expects; it covers every
        /// outgoing request.
        #[arg(long = "federation-ca-file")]
        ca_files: Vec<PathBuf>,
        /// Outgoing requests (federation, push gateways) may reach private
        /// and loopback addresses: federation.allow_private_addresses is
        /// set and outbound.ip_range_blocklist left empty.
        #[arg(long = "federation-allow-private-addresses")]
        allow_private_addresses: bool,
        /// The federation TLS listener (federation.listen), e.g.
        /// 0.0.0.0:8448; needs --tls-cert and --tls-key.
        #[arg(long = "federation-listen", requires_all = ["tls_cert", "tls_key"])]
        federation_listen: Option<std::net::SocketAddr>,
        /// PEM certificate chain of the federation TLS listener.
        #[arg(long = "tls-cert")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of the federation TLS listener.
        #[arg(long = "tls-key")]
        tls_key: Option<PathBuf>,
        /// An application service registration file (app_services); may be
        /// repeated. Named as the sytest adapter expects.
        #[arg(long = "app-service-config")]
        app_services: Vec<PathBuf>,
    },
    /// Operate a running server through its admin API (needs an admin's token).
    Admin {
        /// Base URL of the server; defaults to the `listen` address of --config, else localhost:8008.
        #[arg(long)]
        url: Option<String>,
        /// An admin's access token (or set MYELIN_ADMIN_TOKEN).
        #[arg(long, env = "MYELIN_ADMIN_TOKEN")]
        token: String,
        /// Config file to take the listen address from.
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Copy the database (SQLite: a consistent copy while the server runs),
    /// the signing key and the local media store into a new directory.
    Backup {
        #[arg(long, short)]
        config: PathBuf,
        /// Directory to write the backup to (created; must be empty).
        #[arg(long)]
        to: PathBuf,
    },
    /// Put a backup made by `myelin backup` in place for the server of
    /// --config (run it with that server stopped).
    Restore {
        /// The backup's directory.
        #[arg(long)]
        from: PathBuf,
        #[arg(long, short)]
        config: PathBuf,
        /// Replace what the data dir (and the SQLite file) holds.
        #[arg(long)]
        force: bool,
    },
    /// Copy every table of the SQLite database of --config into an empty
    /// PostgreSQL database (run it with the server stopped).
    MigrateDb {
        #[arg(long, short)]
        config: PathBuf,
        /// The PostgreSQL database: postgres://USER:PASSWORD@HOST/DATABASE.
        #[arg(long)]
        to: String,
    },
    /// Create an account directly in the database.
    CreateAccount {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, short)]
        username: String,
        #[arg(long, short)]
        password: String,
        /// Make the account a server admin.
        #[arg(long)]
        admin: bool,
    },
}

#[derive(Subcommand)]
pub enum AdminAction {
    /// Make every local member leave a room.
    EvacuateRoom { room_id: String },
    /// Make a user leave every room and reject every invite.
    EvacuateUser { user_id: String },
    /// Set a user's password.
    ResetPassword {
        user_id: String,
        #[arg(long)]
        password: String,
        /// Also log out all the user's devices.
        #[arg(long)]
        logout_devices: bool,
    },
    /// Evacuate and delete a room from this server.
    PurgeRoom { room_id: String },
    /// Rebuild the full-text search index (prints the job id).
    Reindex,
    /// Remove a room's old non-state events (Synapse's purge_history; prints
    /// the job id). Local users' events stay unless --delete-local.
    PurgeHistory {
        room_id: String,
        /// Purge up to (not including) this event.
        #[arg(
            long,
            required_unless_present = "before_ts",
            conflicts_with = "before_ts"
        )]
        event: Option<String>,
        /// Purge events sent before this time (ms since the epoch).
        #[arg(long)]
        before_ts: Option<i64>,
        #[arg(long)]
        delete_local: bool,
    },
    /// Show a tracked job (reindex, history purge, room deletion).
    Job { job_id: String },
    /// Send a server notice to one user, or with --all to every local user.
    Notice {
        #[arg(long, required_unless_present = "all")]
        user: Option<String>,
        #[arg(long)]
        all: bool,
        message: String,
    },
    /// Sessions, IPs and user agents of a user.
    Whois { user_id: String },
    /// List abuse reports.
    Reports {
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// List accounts.
    Users {
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// The content repository: list, delete, quarantine, purge old media.
    Media {
        #[command(subcommand)]
        action: MediaAction,
    },
}

#[derive(Subcommand)]
pub enum MediaAction {
    /// List the media a user uploaded, newest first.
    List {
        user_id: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, default_value_t = 0)]
        from: u32,
    },
    /// Delete one local media (its `mxc://server/id` URI).
    Delete { mxc: String },
    /// Quarantine one media (its `mxc://server/id` URI), or with --undo release it.
    Quarantine {
        mxc: String,
        #[arg(long)]
        undo: bool,
    },
    /// Delete local media last accessed before a time (ms since the epoch);
    /// quarantined and protected media stay, and so do avatars unless
    /// --include-avatars.
    PurgeBefore {
        before_ts: i64,
        /// Only media larger than this many bytes.
        #[arg(long, default_value_t = 0)]
        size_gt: u64,
        #[arg(long)]
        include_avatars: bool,
    },
}

/// Runs an admin action against a server's HTTP API; returns the JSON answer.
pub async fn run_admin(
    base: &str,
    token: &str,
    action: AdminAction,
) -> anyhow::Result<serde_json::Value> {
    let request = action.request()?;
    send_admin(base, token, request).await
}

/// One call of the admin API.
struct AdminRequest {
    method: reqwest::Method,
    /// Path and query, after the base URL.
    path: String,
    /// The JSON body of a POST.
    body: Option<serde_json::Value>,
}

impl AdminRequest {
    fn get(path: String) -> Self {
        Self {
            method: reqwest::Method::GET,
            path,
            body: None,
        }
    }

    fn post(path: String, body: serde_json::Value) -> Self {
        Self {
            method: reqwest::Method::POST,
            path,
            body: Some(body),
        }
    }

    fn delete(path: String) -> Self {
        Self {
            method: reqwest::Method::DELETE,
            path,
            body: None,
        }
    }
}

/// A path segment, percent-encoded.
fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl AdminAction {
    /// The admin API call that performs this action.
    fn request(self) -> anyhow::Result<AdminRequest> {
        let no_body = || json!({});
        Ok(match self {
            AdminAction::EvacuateRoom { room_id } => AdminRequest::post(
                format!("/_dendrite/admin/evacuateRoom/{}", enc(&room_id)),
                no_body(),
            ),
            AdminAction::EvacuateUser { user_id } => AdminRequest::post(
                format!("/_dendrite/admin/evacuateUser/{}", enc(&user_id)),
                no_body(),
            ),
            AdminAction::ResetPassword {
                user_id,
                password,
                logout_devices,
            } => AdminRequest::post(
                format!("/_dendrite/admin/resetPassword/{}", enc(&user_id)),
                json!({ "password": password, "logout_devices": logout_devices }),
            ),
            AdminAction::PurgeRoom { room_id } => AdminRequest::post(
                format!("/_dendrite/admin/purgeRoom/{}", enc(&room_id)),
                no_body(),
            ),
            AdminAction::Reindex => {
                AdminRequest::post("/_dendrite/admin/fulltext/reindex".to_owned(), no_body())
            }
            AdminAction::PurgeHistory {
                room_id,
                event,
                before_ts,
                delete_local,
            } => purge_history_request(&room_id, event, before_ts, delete_local)?,
            AdminAction::Job { job_id } => {
                AdminRequest::get(format!("/_myelin/admin/v1/jobs/{}", enc(&job_id)))
            }
            AdminAction::Notice { user, all, message } => notice_request(user, all, &message)?,
            AdminAction::Whois { user_id } => {
                AdminRequest::get(format!("/_synapse/admin/v1/whois/{}", enc(&user_id)))
            }
            AdminAction::Reports { limit } => {
                AdminRequest::get(format!("/_synapse/admin/v1/event_reports?limit={limit}"))
            }
            AdminAction::Users { limit } => {
                AdminRequest::get(format!("/_synapse/admin/v2/users?limit={limit}"))
            }
            AdminAction::Media { action } => action.request()?,
        })
    }
}

impl MediaAction {
    /// The media admin API call that performs this action.
    fn request(self) -> anyhow::Result<AdminRequest> {
        const V1: &str = "/_synapse/admin/v1";
        Ok(match self {
            MediaAction::List {
                user_id,
                limit,
                from,
            } => AdminRequest::get(format!(
                "{V1}/users/{}/media?limit={limit}&from={from}",
                enc(&user_id)
            )),
            MediaAction::Delete { mxc } => {
                let (server, id) = mxc_parts(&mxc)?;
                AdminRequest::delete(format!("{V1}/media/{server}/{id}"))
            }
            MediaAction::Quarantine { mxc, undo } => {
                let (server, id) = mxc_parts(&mxc)?;
                let verb = if undo { "unquarantine" } else { "quarantine" };
                AdminRequest::post(format!("{V1}/media/{verb}/{server}/{id}"), json!({}))
            }
            MediaAction::PurgeBefore {
                before_ts,
                size_gt,
                include_avatars,
            } => AdminRequest::post(
                format!(
                    "{V1}/media/delete?before_ts={before_ts}&size_gt={size_gt}&keep_profiles={}",
                    !include_avatars
                ),
                json!({}),
            ),
        })
    }
}

/// The server name and media id of an `mxc://` URI, percent-encoded for a
/// path.
fn mxc_parts(mxc: &str) -> anyhow::Result<(String, String)> {
    let uri = <&ruma::MxcUri>::from(mxc);
    let (server, id) = uri
        .parts()
        .map_err(|e| anyhow::anyhow!("{mxc:?} is not an mxc://server/id URI: {e}"))?;
    Ok((enc(server.as_str()), enc(id)))
}

/// Synapse's purge_history, up to an event or a time.
fn purge_history_request(
    room_id: &str,
    event: Option<String>,
    before_ts: Option<i64>,
    delete_local: bool,
) -> anyhow::Result<AdminRequest> {
    let mut body = json!({ "delete_local_events": delete_local });
    match (event, before_ts) {
        (Some(e), _) => body["purge_up_to_event_id"] = json!(e),
        (None, Some(ts)) => body["purge_up_to_ts"] = json!(ts),
        (None, None) => anyhow::bail!("--event or --before-ts is needed"),
    }
    Ok(AdminRequest::post(
        format!("/_synapse/admin/v1/purge_history/{}", enc(room_id)),
        body,
    ))
}

/// A server notice to one user, or with `all` to every local user.
fn notice_request(user: Option<String>, all: bool, message: &str) -> anyhow::Result<AdminRequest> {
    let content = json!({ "msgtype": "m.text", "body": message });
    if all {
        return Ok(AdminRequest::post(
            "/_myelin/admin/v1/broadcast_server_notice".to_owned(),
            json!({ "content": content }),
        ));
    }
    let user = user.ok_or_else(|| anyhow::anyhow!("--user or --all is needed"))?;
    Ok(AdminRequest::post(
        "/_synapse/admin/v1/send_server_notice".to_owned(),
        json!({ "user_id": user, "content": content }),
    ))
}

/// Sends the call with the admin's token; a non-2xx answer is an error
/// naming its Matrix error.
async fn send_admin(
    base: &str,
    token: &str,
    request: AdminRequest,
) -> anyhow::Result<serde_json::Value> {
    let client = reqwest::Client::new();
    let url = format!("{}{}", base.trim_end_matches('/'), request.path);
    let mut req = client.request(request.method, &url);
    if let Some(body) = request.body {
        req = req.json(&body);
    }
    let resp = req
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {base}: {e}"))?;
    let status = resp.status();
    let value: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        anyhow::bail!(
            "{status}: {} ({})",
            value["error"].as_str().unwrap_or("request failed"),
            value["errcode"].as_str().unwrap_or("no errcode")
        );
    }
    Ok(value)
}

pub fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    })
}

/// Changes the log levels of the running process ([`init_logging`]'s).
pub struct LogLevels(
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>,
);

impl LogLevels {
    /// Applies the config's `log_level` and `log.levels` (SIGHUP), unless
    /// `RUST_LOG` is set (it wins, at start and at reload).
    pub fn reload(&self, config: &Config) {
        if std::env::var_os("RUST_LOG").is_some() {
            tracing::warn!("RUST_LOG is set: the log levels stay as it says");
            return;
        }
        let filter = config.log_filter();
        match tracing_subscriber::EnvFilter::try_new(&filter) {
            Ok(f) => match self.0.reload(f) {
                Ok(()) => tracing::info!(%filter, "log levels reloaded"),
                Err(e) => tracing::warn!(error = %e, "could not reload the log levels"),
            },
            Err(e) => tracing::warn!(error = %e, "not a valid log filter; levels unchanged"),
        }
    }
}

/// Logs to stdout as `log.format` says (text or JSON lines), at the levels
/// of `log_level` and `log.levels` (or `RUST_LOG`). `None` when logging
/// was already set up.
pub fn init_logging(config: &Config) -> Option<LogLevels> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(config.log_filter()));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let format = match config.log.format {
        crate::config::LogFormat::Text => {
            tracing_subscriber::fmt::layer().with_target(false).boxed()
        }
        crate::config::LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(format)
        .try_init()
        .ok()
        .map(|()| LogLevels(handle))
}

/// `generate-config`: the commented config with the flags' values (one
/// argument per flag).
#[allow(clippy::too_many_arguments)]
pub fn generate_config(
    server_name: String,
    listen: Option<std::net::SocketAddr>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    shared_secret: Option<String>,
    disable_rate_limits: bool,
    outbound: crate::config::OutboundConfig,
    federation: crate::config::FederationConfig,
    app_services: Vec<PathBuf>,
) -> anyhow::Result<String> {
    let mut c = Config {
        server_name,
        ..Config::default()
    };
    if let Some(l) = listen {
        c.listen = l;
    }
    if let Some(d) = data_dir {
        c.data_dir = d;
    }
    if let Some(u) = database_url {
        c.database.url = u;
    }
    c.registration.shared_secret = shared_secret;
    c.rate_limits.enabled = !disable_rate_limits;
    c.outbound = outbound;
    *c.federation = federation;
    c.app_services = app_services;
    c.validate()?;
    Ok(c.to_commented_yaml())
}

/// Creates an account straight in the database (the server may be running).
pub async fn create_account(
    config: &Config,
    username: &str,
    password: &str,
    admin: bool,
) -> anyhow::Result<String> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        anyhow::anyhow!("cannot create data dir {}: {e}", config.data_dir.display())
    })?;
    let storage = Storage::connect(&config.database_url(), 1).await?;
    let accounts = Accounts::new(
        storage.clone(),
        PasswordHasherService::new(&config.password_hashing),
        config.server_name.as_str().try_into()?,
        crate::clock::SystemClock::shared(),
    );
    let result = async {
        let localpart = accounts.validate_localpart(username)?;
        accounts
            .register(Registration {
                localpart: Some(&localpart),
                password: Some(password),
                account_type: if admin {
                    AccountType::Admin
                } else {
                    AccountType::User
                },
                displayname: None,
                user_type: None,
                registration_token: None,
                appservice_id: None,
            })
            .await
    }
    .await;
    storage.close().await;
    result
        .map(|u| u.to_string())
        .map_err(|e| anyhow::anyhow!("{} ({})", e.message(), e.errcode()))
}
