//! Application services (bridges, bots): their registrations, read at start
//! from the YAML files the config's `app_services` names (the keys Synapse
//! reads), and the powers an `as_token` gives on the Client-Server API:
//! acting as any registered user of its namespace (`?user_id=`) and any
//! device of that user (`?org.matrix.msc3202.device_id=`), registering and
//! logging in its users without a password, and keeping the names of its
//! exclusive namespaces from everyone else.

mod overlap;
mod queries;

pub use queries::ThirdPartyKind;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use regex::Regex;
use ruma::api::error::{BadStatusErrorData, ErrorKind};
use ruma::{OwnedUserId, ServerName, UserId};
use serde_json::Value;

use crate::error::{MatrixError, Result};
use crate::model::accounts::{AccountType, Requester};
use crate::net::outbound::{IpFilter, Outbound, OutboundError};
use crate::services::accounts::{Accounts, Registration};
use crate::storage::Storage;
use crate::storage::accounts::{CreateOutcome, NewAccount};

/// How long `/appservice/{id}/ping` waits for the application service.
const PING_TIMEOUT: Duration = Duration::from_secs(15);

/// One regex of a namespace: matched from the start of the id, as Synapse
/// (`re.match`).
#[derive(Debug)]
pub struct Namespace {
    pub exclusive: bool,
    /// The regex as the file wrote it.
    pub source: String,
    regex: Regex,
}

impl Namespace {
    fn matches(&self, id: &str) -> bool {
        self.regex.is_match(id)
    }
}

/// The namespaces of a registration.
#[derive(Debug, Default)]
pub struct Namespaces {
    pub users: Vec<Namespace>,
    pub aliases: Vec<Namespace>,
    pub rooms: Vec<Namespace>,
}

/// One registered application service.
#[derive(Debug)]
pub struct AppService {
    pub id: String,
    /// `None` (an explicit `url: null`): the service receives no events and
    /// no queries.
    pub url: Option<String>,
    pub as_token: String,
    pub hs_token: String,
    /// `@<sender_localpart>:<server_name>`.
    pub sender: OwnedUserId,
    pub namespaces: Namespaces,
    /// Whether its users are rate limited (default true).
    pub rate_limited: bool,
    pub protocols: Vec<String>,
    /// MSC2409: receipts, typing and presence in transactions
    /// (`receive_ephemeral`, or the unstable `de.sorunome.msc2409.push_ephemeral`).
    pub receive_ephemeral: bool,
    /// Only the unstable flag: they go in the transaction's unstable key
    /// `de.sorunome.msc2409.ephemeral` (as Synapse), not `ephemeral`.
    pub ephemeral_unstable: bool,
    /// MSC3202: device lists and key counts in transactions (`org.matrix.msc3202`).
    pub msc3202: bool,
    /// The registration file it was read from.
    pub file: PathBuf,
}

impl AppService {
    /// Its sender, or a user its user namespaces name.
    pub fn is_interested_in_user(&self, user_id: &str) -> bool {
        self.sender == user_id || self.namespaces.users.iter().any(|n| n.matches(user_id))
    }

    /// Its sender, or a user an exclusive user namespace of it names.
    pub fn is_exclusive_user(&self, user_id: &str) -> bool {
        self.sender == user_id
            || self
                .namespaces
                .users
                .iter()
                .any(|n| n.exclusive && n.matches(user_id))
    }

    /// A room its room namespaces name.
    pub fn is_interested_in_room_id(&self, room_id: &str) -> bool {
        self.namespaces.rooms.iter().any(|n| n.matches(room_id))
    }

    /// An alias its alias namespaces name.
    pub fn is_interested_in_alias(&self, alias: &str) -> bool {
        self.namespaces.aliases.iter().any(|n| n.matches(alias))
    }

    /// An alias an exclusive alias namespace of it names.
    pub fn is_exclusive_alias(&self, alias: &str) -> bool {
        self.namespaces
            .aliases
            .iter()
            .any(|n| n.exclusive && n.matches(alias))
    }
}

/// A registration file that cannot be used: which file, which key, why.
#[derive(Debug, thiserror::Error)]
#[error("application service registration {}: `{key}`: {message}", file.display())]
pub struct RegistrationError {
    pub file: PathBuf,
    pub key: String,
    pub message: String,
}

fn bad(file: &Path, key: impl Into<String>, message: impl Into<String>) -> RegistrationError {
    RegistrationError {
        file: file.to_owned(),
        key: key.into(),
        message: message.into(),
    }
}

/// Reads one registration file (YAML) as Synapse does: `id`, `as_token`,
/// `hs_token` and `sender_localpart` are required strings, `url` a string
/// or an explicit `null`, `namespaces` an object whose `users`, `aliases`
/// and `rooms` lists hold `{exclusive: bool, regex: string}`.
pub fn read_registration(
    file: &Path,
    server_name: &ServerName,
) -> Result<AppService, RegistrationError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| bad(file, "(file)", format!("cannot read it: {e}")))?;
    let doc: Value = serde_norway::from_str(&text)
        .map_err(|e| bad(file, "(file)", format!("not valid YAML: {e}")))?;
    parse_registration(&doc, file, server_name)
}

fn parse_registration(
    doc: &Value,
    file: &Path,
    server_name: &ServerName,
) -> Result<AppService, RegistrationError> {
    let Some(map) = doc.as_object() else {
        return Err(bad(file, "(file)", "must be a YAML mapping"));
    };
    let required = |key: &str| -> Result<String, RegistrationError> {
        match map.get(key) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::String(_)) => Err(bad(file, key, "must not be empty")),
            Some(_) => Err(bad(file, key, "must be a string")),
            None => Err(bad(file, key, "is required")),
        }
    };
    let flag = |key: &str| -> Result<bool, RegistrationError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(bad(file, key, "must be true or false")),
        }
    };
    let id = required("id")?;
    let as_token = required("as_token")?;
    let hs_token = required("hs_token")?;
    let sender_localpart = required("sender_localpart")?;
    let url = match map.get("url") {
        Some(Value::Null) => None,
        Some(Value::String(u)) => {
            let parsed =
                url::Url::parse(u).map_err(|e| bad(file, "url", format!("not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(bad(file, "url", "must be an http or https URL"));
            }
            Some(u.trim_end_matches('/').to_owned())
        }
        Some(_) => return Err(bad(file, "url", "must be a string or null")),
        None => {
            return Err(bad(
                file,
                "url",
                "is required (write `url: null` for a service that receives nothing)",
            ));
        }
    };
    // As Synapse: nothing a URL would have to encode.
    if !sender_localpart
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-~/".contains(c))
    {
        return Err(bad(
            file,
            "sender_localpart",
            "may hold only letters, digits and _.-~/",
        ));
    }
    let sender = UserId::parse(format!("@{sender_localpart}:{server_name}")).map_err(|e| {
        bad(
            file,
            "sender_localpart",
            format!("not a valid localpart: {e}"),
        )
    })?;
    let namespaces = match map.get("namespaces") {
        Some(Value::Object(ns)) => Namespaces {
            users: namespace_list(ns, "users", file)?,
            aliases: namespace_list(ns, "aliases", file)?,
            rooms: namespace_list(ns, "rooms", file)?,
        },
        Some(_) => return Err(bad(file, "namespaces", "must be a mapping")),
        None => return Err(bad(file, "namespaces", "is required")),
    };
    let rate_limited = !matches!(map.get("rate_limited"), Some(Value::Bool(false)));
    let protocols = match map.get("protocols") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .map(|p| {
                p.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad(file, "protocols", "must be a list of strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad(file, "protocols", "must be a list of strings")),
    };
    Ok(AppService {
        id,
        url,
        as_token,
        hs_token,
        sender,
        namespaces,
        rate_limited,
        protocols,
        receive_ephemeral: flag("receive_ephemeral")?
            || flag("de.sorunome.msc2409.push_ephemeral")?,
        ephemeral_unstable: !flag("receive_ephemeral")?
            && flag("de.sorunome.msc2409.push_ephemeral")?,
        msc3202: flag("org.matrix.msc3202")?,
        file: file.to_owned(),
    })
}

fn namespace_list(
    ns: &serde_json::Map<String, Value>,
    kind: &str,
    file: &Path,
) -> Result<Vec<Namespace>, RegistrationError> {
    let key = format!("namespaces.{kind}");
    let list = match ns.get(kind) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(bad(file, key, "must be a list")),
    };
    list.iter()
        .enumerate()
        .map(|(i, entry)| {
            let key = format!("{key}[{i}]");
            let exclusive = match entry.get("exclusive") {
                Some(Value::Bool(b)) => *b,
                _ => {
                    return Err(bad(
                        file,
                        format!("{key}.exclusive"),
                        "must be true or false",
                    ));
                }
            };
            let Some(source) = entry.get("regex").and_then(Value::as_str) else {
                return Err(bad(file, format!("{key}.regex"), "must be a string"));
            };
            let regex = Regex::new(&format!("^(?:{source})")).map_err(|e| {
                bad(
                    file,
                    format!("{key}.regex"),
                    format!("not a valid regex: {e}"),
                )
            })?;
            Ok(Namespace {
                exclusive,
                source: source.to_owned(),
                regex,
            })
        })
        .collect()
}

/// Checks registrations against each other: ids and `as_token`s are unique
/// (as Synapse), so are `hs_token`s, and no exclusive namespace overlaps
/// another's (some id matched by both regexes), nor names another
/// service's sender.
fn check_together(list: &[AppService]) -> Result<(), RegistrationError> {
    let mut ids: HashMap<&str, &Path> = HashMap::new();
    let mut as_tokens: HashMap<&str, &Path> = HashMap::new();
    let mut hs_tokens: HashMap<&str, &Path> = HashMap::new();
    for a in list {
        if let Some(other) = ids.insert(&a.id, &a.file) {
            return Err(bad(
                &a.file,
                "id",
                format!("{:?} is also the id in {}", a.id, other.display()),
            ));
        }
        for (key, token, seen) in [
            ("as_token", &a.as_token, &mut as_tokens),
            ("hs_token", &a.hs_token, &mut hs_tokens),
        ] {
            if let Some(other) = seen.insert(token, &a.file) {
                return Err(bad(
                    &a.file,
                    key,
                    format!("the same token is used in {}", other.display()),
                ));
            }
        }
    }
    for (i, a) in list.iter().enumerate() {
        for b in &list[i + 1..] {
            for (kind, mine, theirs) in [
                ("users", &a.namespaces.users, &b.namespaces.users),
                ("aliases", &a.namespaces.aliases, &b.namespaces.aliases),
                ("rooms", &a.namespaces.rooms, &b.namespaces.rooms),
            ] {
                let clash = theirs.iter().find_map(|t| {
                    mine.iter()
                        .find(|n| (t.exclusive || n.exclusive) && overlaps(n, t))
                        .map(|n| (t, n))
                });
                if let Some((t, n)) = clash {
                    return Err(bad(
                        &b.file,
                        format!("namespaces.{kind}"),
                        format!(
                            "{:?} can name the same ids as {:?} of {} ({}), and one of them is exclusive",
                            t.source,
                            n.source,
                            a.id,
                            a.file.display()
                        ),
                    ));
                }
            }
            for (x, y) in [(a, b), (b, a)] {
                if y.is_exclusive_user(x.sender.as_str()) {
                    return Err(bad(
                        &x.file,
                        "sender_localpart",
                        format!(
                            "{} is in an exclusive user namespace of {} ({})",
                            x.sender,
                            y.id,
                            y.file.display()
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Whether some id is in both namespaces: decided on their regexes'
/// automata; when that cannot be decided (see [`overlap::can_overlap`]),
/// only the same regex written twice counts.
fn overlaps(a: &Namespace, b: &Namespace) -> bool {
    a.source == b.source || overlap::can_overlap(&a.source, &b.source).unwrap_or(false)
}

/// Reads every registration file the config names and checks them, alone
/// and together.
fn read_all(
    config: &crate::config::Config,
    server_name: &ServerName,
) -> Result<Vec<AppService>, RegistrationError> {
    let list = config
        .app_services
        .iter()
        .map(|f| read_registration(f, server_name))
        .collect::<Result<Vec<_>, _>>()?;
    check_together(&list)?;
    Ok(list)
}

/// Checks the registration files before anything is written: the start
/// stops here, before the data dir, the signing key or the database is
/// touched, when one of them cannot be used.
pub fn check_registrations(config: &crate::config::Config) -> anyhow::Result<()> {
    let server_name = ruma::OwnedServerName::try_from(config.server_name.as_str())?;
    read_all(config, &server_name)?;
    Ok(())
}

/// The registered application services.
pub struct AppServices {
    list: Vec<Arc<AppService>>,
    by_token: HashMap<String, Arc<AppService>>,
    storage: Storage,
    /// Requests to the services: their URLs are the operator's, so no
    /// address is blocked (as Synapse, whose IP blacklist leaves them alone).
    http: Outbound,
    /// Each (service id, protocol)'s metadata as last answered, kept for
    /// [`PROTOCOL_CACHE_TTL`] (as Synapse: bridges' metadata rarely
    /// changes, and clients ask for it on every start).
    protocol_cache: parking_lot::Mutex<HashMap<(String, String), (std::time::Instant, Value)>>,
}

/// How long a service's protocol metadata is answered from memory.
pub const PROTOCOL_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

impl AppServices {
    /// Reads and checks every registration file the config names.
    pub fn load(
        config: &crate::config::Config,
        server_name: &ServerName,
        storage: Storage,
    ) -> anyhow::Result<Self> {
        let list: Vec<Arc<AppService>> = read_all(config, server_name)?
            .into_iter()
            .map(Arc::new)
            .collect();
        let by_token = list
            .iter()
            .map(|a| (a.as_token.clone(), a.clone()))
            .collect();
        Ok(Self {
            list,
            by_token,
            storage,
            http: Outbound::new(
                &crate::net::outbound::extra_roots(&config.outbound.ca_files)?,
                IpFilter::new(Vec::new(), Vec::new()),
                PING_TIMEOUT,
            )?,
            protocol_cache: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    pub fn all(&self) -> &[Arc<AppService>] {
        &self.list
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The service whose `as_token` this is.
    pub fn by_token(&self, token: &str) -> Option<&Arc<AppService>> {
        self.by_token.get(token)
    }

    /// The service whose exclusive namespace holds this user, if any.
    pub fn exclusive_owner(&self, user_id: &str) -> Option<&Arc<AppService>> {
        self.list.iter().find(|a| a.is_exclusive_user(user_id))
    }

    /// 400 `M_EXCLUSIVE` when an exclusive user namespace of a service other
    /// than `allowed` holds the user.
    pub fn check_user_not_reserved(
        &self,
        user_id: &str,
        allowed: Option<&AppService>,
    ) -> Result<()> {
        match self.exclusive_owner(user_id) {
            Some(a) if allowed.is_none_or(|b| b.id != a.id) => Err(exclusive(
                "This user ID is reserved by an application service.",
            )),
            _ => Ok(()),
        }
    }

    /// Whether a request may create (or, for a service, delete) `alias`, as
    /// Synapse rules it: a service (`app_service`, its id) only aliases of
    /// its own alias namespaces, exclusive or not; anyone else none that an
    /// exclusive alias namespace holds. 400 `M_EXCLUSIVE` otherwise.
    pub fn check_alias_use(&self, alias: &str, app_service: Option<&str>) -> Result<()> {
        if let Some(id) = app_service
            && !self
                .list
                .iter()
                .any(|a| a.id == id && a.is_interested_in_alias(alias))
        {
            return Err(exclusive(
                "This application service has not reserved this kind of alias.",
            ));
        }
        match self.list.iter().find(|a| a.is_exclusive_alias(alias)) {
            Some(a) if app_service != Some(a.id.as_str()) => Err(exclusive(
                "This alias is reserved by an application service.",
            )),
            _ => Ok(()),
        }
    }

    /// The service whose `as_token` the request carries: 401
    /// `M_MISSING_TOKEN` without a token, `M_UNKNOWN_TOKEN` for another.
    pub fn by_request_token(&self, token: Option<&str>) -> Result<&Arc<AppService>> {
        let token = token.ok_or_else(|| {
            MatrixError::missing_token(
                "An application service token is needed for m.login.application_service",
            )
        })?;
        self.by_token(token).ok_or_else(MatrixError::unknown_token)
    }

    /// `m.login.application_service` registration: a user of the service's
    /// namespace (else 400 `M_EXCLUSIVE`), not in another's exclusive one,
    /// without a password. The localpart is taken as given, as Synapse
    /// does (bridges register ids other users could not).
    pub async fn register(
        &self,
        service: &AppService,
        accounts: &Accounts,
        localpart: &str,
    ) -> Result<OwnedUserId> {
        let user_id = accounts.user_id(localpart)?;
        if !service.is_interested_in_user(user_id.as_str()) {
            return Err(exclusive(
                "Invalid user localpart for this application service.",
            ));
        }
        self.check_user_not_reserved(user_id.as_str(), Some(service))?;
        accounts
            .register(Registration {
                localpart: Some(localpart),
                password: None,
                account_type: AccountType::User,
                displayname: None,
                user_type: None,
                registration_token: None,
                appservice_id: service
                    .is_exclusive_user(user_id.as_str())
                    .then_some(service.id.as_str()),
            })
            .await
    }

    /// `m.login.application_service` login: the user must be the service's
    /// (else 400 `M_EXCLUSIVE`, as the spec says; Synapse answers 403
    /// `M_FORBIDDEN`) and exist (else 403 `M_FORBIDDEN`).
    pub async fn check_login(&self, service: &AppService, user_id: &UserId) -> Result<()> {
        if !service.is_interested_in_user(user_id.as_str()) {
            return Err(exclusive(
                "This user is outside the application service's namespaces.",
            ));
        }
        match self.storage.account(user_id.as_str()).await? {
            Some(a) if !a.is_deactivated => Ok(()),
            Some(_) => Err(MatrixError::new(
                StatusCode::FORBIDDEN,
                ErrorKind::UserDeactivated,
                "This account has been deactivated",
            )),
            None => Err(MatrixError::forbidden("User not found")),
        }
    }

    /// Creates each service's sender account if it does not exist yet.
    pub async fn create_senders(&self, now_ms: i64) -> anyhow::Result<()> {
        for a in &self.list {
            let created = self
                .storage
                .create_account(&NewAccount {
                    user_id: a.sender.as_str(),
                    password_hash: None,
                    account_type: AccountType::User,
                    user_type: None,
                    displayname: Some(a.sender.localpart()),
                    registration_token: None,
                    appservice_id: Some(&a.id),
                    now: now_ms,
                })
                .await?;
            if matches!(created, CreateOutcome::Created) {
                tracing::info!(appservice = %a.id, sender = %a.sender, "created the application service's sender");
            }
        }
        Ok(())
    }

    /// Who a request with `service`'s token acts as: its sender, or the
    /// user `user_id` names (registered, and in its namespace: else 403
    /// `M_FORBIDDEN`, as Synapse), on the device `device_id` names (which
    /// must exist: else 400 `M_EXCLUSIVE`, as Synapse for MSC3202).
    pub async fn requester(
        &self,
        service: &AppService,
        user_id: Option<&str>,
        device_id: Option<&str>,
    ) -> Result<Requester> {
        let user_id = user_id.unwrap_or(service.sender.as_str());
        if !service.is_interested_in_user(user_id) {
            return Err(MatrixError::forbidden(format!(
                "Application service cannot masquerade as this user ({user_id})."
            )));
        }
        let Some(account) = self.storage.account(user_id).await? else {
            return Err(MatrixError::forbidden(format!(
                "Application service has not registered this user ({user_id})"
            )));
        };
        let device_id = match device_id {
            None => String::new(),
            Some(d) => {
                if self.storage.device(user_id, d).await?.is_none() {
                    return Err(exclusive(format!(
                        "Application service trying to use a device that doesn't exist ('{d}' for {user_id})"
                    )));
                }
                d.to_owned()
            }
        };
        Ok(Requester {
            user_id: account.user_id.to_string(),
            user: account.user_id,
            device_id,
            account_type: account.account_type,
            is_deactivated: account.is_deactivated,
            is_locked: account.locked,
            valid_until_ms: None,
            fresh: true,
            app_service: Some(service.id.clone()),
        })
    }

    /// `POST /appservice/{id}/ping`: asks the service's
    /// `/_matrix/app/v1/ping` and returns how long it took. Errors as the
    /// spec: 400 `M_URL_NOT_SET`, 502 `M_BAD_STATUS` (with the status and
    /// body), 502 `M_CONNECTION_FAILED`, 504 `M_CONNECTION_TIMEOUT`.
    pub async fn ping(&self, service: &AppService, transaction_id: Option<&str>) -> Result<u64> {
        let Some(url) = &service.url else {
            return Err(MatrixError::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::UrlNotSet,
                "Application service URL is not set",
            ));
        };
        let mut body = serde_json::Map::new();
        if let Some(t) = transaction_id {
            body.insert("transaction_id".into(), Value::String(t.to_owned()));
        }
        let started = std::time::Instant::now();
        let sent = self
            .http
            .post_json_bearer(
                &format!("{url}/_matrix/app/v1/ping"),
                &service.hs_token,
                &body,
            )
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(OutboundError::TimedOut) => {
                return Err(MatrixError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    ErrorKind::ConnectionTimeout,
                    "Timed out waiting for the application service",
                ));
            }
            Err(e) => {
                return Err(MatrixError::new(
                    StatusCode::BAD_GATEWAY,
                    ErrorKind::ConnectionFailed,
                    format!("Cannot reach the application service: {e}"),
                ));
            }
        };
        let status = response.status();
        if !status.is_success() {
            let mut data = BadStatusErrorData::new();
            data.status = Some(status);
            data.body = Some(response.text().await.unwrap_or_default());
            return Err(MatrixError::new(
                StatusCode::BAD_GATEWAY,
                ErrorKind::BadStatus(data),
                "Ping returned an error status",
            ));
        }
        Ok(started.elapsed().as_millis() as u64)
    }
}

fn exclusive(msg: impl Into<String>) -> MatrixError {
    MatrixError::new(StatusCode::BAD_REQUEST, ErrorKind::Exclusive, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<AppService, RegistrationError> {
        let doc: Value = serde_norway::from_str(yaml).unwrap();
        parse_registration(
            &doc,
            Path::new("bridge.yaml"),
            ruma::server_name!("example.org"),
        )
    }

    const GOOD: &str = r##"
id: bridge
url: http://localhost:9000
as_token: a
hs_token: h
sender_localpart: bridgebot
rate_limited: false
namespaces:
  users:
    - exclusive: true
      regex: "@bridge_.*:example.org"
  aliases:
    - exclusive: false
      regex: "#bridge_.*"
"##;

    #[test]
    fn a_registration_reads_as_synapse_reads_it() {
        let a = parse(GOOD).unwrap();
        assert_eq!(a.sender, "@bridgebot:example.org");
        assert!(!a.rate_limited);
        assert!(a.is_exclusive_user("@bridge_x:example.org"));
        assert!(a.is_exclusive_user("@bridgebot:example.org"));
        assert!(!a.is_exclusive_user("@alice:example.org"));
        // Anchored at the start only, as Python's re.match.
        assert!(!a.is_exclusive_user("@x@bridge_x:example.org"));
        assert!(!a.is_exclusive_alias("#bridge_a:example.org"));
        let null_url = parse(&GOOD.replace("url: http://localhost:9000", "url: null")).unwrap();
        assert!(null_url.url.is_none());
    }

    #[test]
    fn bad_registrations_name_the_key() {
        for (from, to, key) in [
            ("as_token: a\n", "", "as_token"),
            ("url: http://localhost:9000\n", "", "url"),
            (
                "regex: \"@bridge_.*:example.org\"",
                "regex: \"@bridge_(\"",
                "namespaces.users[0].regex",
            ),
            (
                "exclusive: true",
                "exclusive: yes please",
                "namespaces.users[0].exclusive",
            ),
            (
                "sender_localpart: bridgebot",
                "sender_localpart: \"a b\"",
                "sender_localpart",
            ),
        ] {
            let e = parse(&GOOD.replace(from, to)).unwrap_err();
            assert_eq!(e.key, key, "{e}");
        }
    }

    #[test]
    fn registrations_may_not_share_ids_tokens_or_exclusive_namespaces() {
        let a = parse(GOOD).unwrap();
        let other = |from: &str, to: &str| {
            parse(
                &GOOD
                    .replace("id: bridge", "id: other")
                    .replace("as_token: a", "as_token: a2")
                    .replace("hs_token: h", "hs_token: h2")
                    .replace("sender_localpart: bridgebot", "sender_localpart: otherbot")
                    .replace(from, to),
            )
            .unwrap()
        };
        assert!(check_together(&[parse(GOOD).unwrap(), other("", "")]).is_err());
        // Users apart; the alias namespace `#bridge_.*` shared, but neither
        // registration holds it exclusively.
        let distinct = other("@bridge_.*", "@other_.*");
        assert!(check_together(&[parse(GOOD).unwrap(), distinct]).is_ok());
        // Different regexes that name some ids in common.
        let overlapping = other("@bridge_.*", "@bridge_a.*");
        let e = check_together(&[parse(GOOD).unwrap(), overlapping]).unwrap_err();
        assert_eq!(e.key, "namespaces.users");
        assert!(e.message.contains("@bridge_.*"), "{}", e.message);
        let narrower_but_shared = other("exclusive: true", "exclusive: false");
        assert!(check_together(&[parse(GOOD).unwrap(), narrower_but_shared]).is_err());

        let same_token = other("as_token: a2", "as_token: a");
        let e = check_together(&[a, same_token]).unwrap_err();
        assert_eq!(e.key, "as_token");
    }
}
