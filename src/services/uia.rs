//! User-interactive authentication (UIA): the 401 challenge, sessions, and
//! checking the stages Myelin offers (`m.login.password`, `m.login.dummy`,
//! `m.login.registration_token`).
//!
//! A session is bound to the operation that opened it: its method, its path,
//! its body's parameters (everything but `auth`) and, on an endpoint that
//! needs an access token, the caller. The spec requires the operation to be
//! "consistent" through a session; a request that names a session opened for
//! another operation is 403 and changes nothing. A request whose body holds
//! no parameters continues the session with the parameters it remembers
//! (how a client finishes a registration it began with a username and
//! password, as Synapse allows); the first request with parameters binds them
//! when the session was opened without any.
//!
//! A completed session stays until it expires, as Synapse's do: repeating the
//! completed operation with it passes again (a registration repeated with its
//! session answers with the account it created).

use std::time::Duration;

use rand::distr::{Alphanumeric, SampleString};
use ruma::api::client::uiaa::{AuthData, AuthFlow, AuthType, UiaaInfo, UserIdentifier};
use ruma::api::error::{ErrorKind, StandardErrorBody};
use ruma::{OwnedUserId, UserId};
use serde_json::{Map, Value};

use crate::error::{MatrixError, Result};
use crate::services::accounts::Accounts;
use crate::services::expiring::ExpiringMap;
use crate::services::registration_tokens::RegistrationTokens;

const SESSION_TTL: Duration = Duration::from_secs(30 * 60);

/// The operation a request performs, as a session binds it.
#[derive(Debug, Clone)]
pub struct Operation {
    /// The HTTP method.
    pub method: String,
    /// The request's path, as sent (without the query).
    pub path: String,
    /// The body's fields other than `auth`.
    pub params: Map<String, Value>,
}

/// What a session holds between requests.
struct Session {
    method: String,
    path: String,
    params: Map<String, Value>,
    /// The caller the session authenticates, on endpoints with an access
    /// token; `None` for registration.
    user: Option<OwnedUserId>,
    completed: Vec<AuthType>,
    /// The registration token a registration session validated.
    token: Option<String>,
    /// The account a registration session created.
    registered: Option<OwnedUserId>,
}

/// A request's session, after its binding was checked.
#[derive(Debug)]
pub struct Bound {
    /// The session's id (a new session when the request named none).
    pub id: String,
    /// The operation's parameters: the request's, or the ones the session
    /// remembers when the request sent none.
    pub params: Map<String, Value>,
    /// The account this registration session already created.
    pub registered: Option<OwnedUserId>,
    completed: Vec<AuthType>,
    token: Option<String>,
}

/// Open sessions expire `SESSION_TTL` after they were issued; at most
/// `caches.uia_sessions` are kept (the oldest forgotten first).
pub struct Uia {
    sessions: ExpiringMap<Session>,
}

impl Uia {
    pub fn new(max_sessions: usize) -> Self {
        Self {
            sessions: ExpiringMap::new(SESSION_TTL, max_sessions),
        }
    }

    /// The request's session, checked against the operation (and caller), or
    /// a new session bound to them when the request names none. A session we
    /// never issued (or that expired) is 400; one opened for another
    /// operation or caller is 403.
    pub fn bind(
        &self,
        auth: Option<&AuthData>,
        op: &Operation,
        user: Option<&UserId>,
    ) -> Result<Bound> {
        let Some(id) = auth.and_then(AuthData::session) else {
            let id = Alphanumeric.sample_string(&mut rand::rng(), 24);
            self.sessions.insert(
                id.clone(),
                Session {
                    method: op.method.clone(),
                    path: op.path.clone(),
                    params: op.params.clone(),
                    user: user.map(ToOwned::to_owned),
                    completed: Vec::new(),
                    token: None,
                    registered: None,
                },
            );
            return Ok(Bound {
                id,
                params: op.params.clone(),
                registered: None,
                completed: Vec::new(),
                token: None,
            });
        };
        self.sessions
            .with(id, |s| {
                let same_caller = s.user.is_none() || s.user.as_deref() == user;
                let same_params =
                    s.params.is_empty() || op.params.is_empty() || s.params == op.params;
                if s.method != op.method || s.path != op.path || !same_caller || !same_params {
                    return Err(MatrixError::forbidden(
                        "Requested operation has changed during the UI authentication session",
                    ));
                }
                if s.params.is_empty() {
                    s.params.clone_from(&op.params);
                }
                Ok(Bound {
                    id: id.to_owned(),
                    params: s.params.clone(),
                    registered: s.registered.clone(),
                    completed: s.completed.clone(),
                    token: s.token.clone(),
                })
            })
            .unwrap_or_else(|| {
                Err(MatrixError::unknown(
                    http::StatusCode::BAD_REQUEST,
                    format!("Unknown session ID: {id}"),
                ))
            })
    }

    /// The 401 answer: the flow, the session, the stages it completed, and
    /// optionally why the last attempt failed.
    fn challenge(stage: AuthType, bound: &Bound, error: Option<(ErrorKind, &str)>) -> MatrixError {
        let mut info = UiaaInfo::new(vec![AuthFlow::new(vec![stage])]);
        info.session = Some(bound.id.clone());
        info.completed.clone_from(&bound.completed);
        info.params = serde_json::value::to_raw_value(&serde_json::json!({})).ok();
        info.auth_error =
            error.map(|(kind, msg)| Box::new(StandardErrorBody::new(kind, msg.to_owned())));
        MatrixError::uiaa(info)
    }

    /// Records a completed stage (and the token it validated) in the session.
    fn complete(&self, bound: &Bound, stage: AuthType, token: Option<String>) {
        self.sessions.with(&bound.id, |s| {
            if !s.completed.contains(&stage) {
                s.completed.push(stage);
            }
            if token.is_some() {
                s.token = token;
            }
        });
    }

    /// Requires the caller's password (password change, deactivation, device
    /// deletion) for this operation. Passes once `m.login.password` is done
    /// in a session bound to the operation and the caller. Authenticating as
    /// anyone but the caller is 403.
    pub async fn require_password(
        &self,
        auth: Option<&AuthData>,
        op: &Operation,
        user_id: &UserId,
        accounts: &Accounts,
    ) -> Result<()> {
        let bound = self.bind(auth, op, Some(user_id))?;
        if bound.completed.contains(&AuthType::Password) {
            return Ok(());
        }
        let Some(auth) = auth else {
            return Err(Self::challenge(AuthType::Password, &bound, None));
        };
        let AuthData::Password(p) = auth else {
            return Err(Self::challenge(
                AuthType::Password,
                &bound,
                Some((
                    ErrorKind::Forbidden,
                    "Unsupported authentication type; use m.login.password",
                )),
            ));
        };
        let claimed = match &p.identifier {
            UserIdentifier::Matrix(m) => accounts.resolve_login_user(&m.user).ok(),
            _ => None,
        };
        if claimed.as_deref() != Some(user_id) {
            return Err(MatrixError::forbidden(
                "The identifier does not match the logged-in user",
            ));
        }
        if accounts.check_password(user_id, &p.password).await.is_err() {
            return Err(Self::challenge(
                AuthType::Password,
                &bound,
                Some((ErrorKind::Forbidden, "Invalid password")),
            ));
        }
        self.complete(&bound, AuthType::Password, None);
        Ok(())
    }

    /// Registration's stage for a bound session: `m.login.dummy`, or
    /// `m.login.registration_token` when tokens are required. Returns the
    /// token to spend, if any.
    pub async fn require_registration(
        &self,
        bound: &Bound,
        auth: Option<&AuthData>,
        requires_token: bool,
        tokens: &RegistrationTokens,
    ) -> Result<Option<String>> {
        let stage = if requires_token {
            AuthType::RegistrationToken
        } else {
            AuthType::Dummy
        };
        if bound.completed.contains(&stage) {
            return Ok(bound.token.clone());
        }
        let Some(auth) = auth else {
            return Err(Self::challenge(stage, bound, None));
        };
        match (auth, requires_token) {
            (AuthData::Dummy(_), false) => {
                self.complete(bound, stage, None);
                Ok(None)
            }
            (AuthData::RegistrationToken(t), true) => {
                if tokens.is_valid(&t.token).await? {
                    self.complete(bound, stage, Some(t.token.clone()));
                    Ok(Some(t.token.clone()))
                } else {
                    Err(Self::challenge(
                        stage,
                        bound,
                        Some((ErrorKind::Forbidden, "Invalid registration token")),
                    ))
                }
            }
            _ => Err(Self::challenge(
                stage,
                bound,
                Some((ErrorKind::Forbidden, "Unsupported authentication type")),
            )),
        }
    }

    /// Remembers the account a registration session created, so that
    /// repeating the registration with the session answers with it.
    pub fn note_registered(&self, bound: &Bound, user_id: &UserId) {
        self.sessions.with(&bound.id, |s| {
            s.registered = Some(user_id.to_owned());
        });
    }
}

impl crate::services::workers::CacheSizes for Uia {
    fn cache_sizes(&self) -> Vec<(&'static str, usize)> {
        vec![("sessions", self.sessions.len())]
    }
}
