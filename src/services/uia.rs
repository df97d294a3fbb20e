//! User-interactive authentication (UIA): the 401 challenge, sessions, and
//! checking the stages Myelin offers (`m.login.password`, `m.login.dummy`,
//! `m.login.registration_token`).

use std::time::Duration;

use rand::distr::{Alphanumeric, SampleString};
use ruma::UserId;
use ruma::api::client::uiaa::{AuthData, AuthFlow, AuthType, UiaaInfo, UserIdentifier};
use ruma::api::error::{ErrorKind, StandardErrorBody};

use crate::error::{MatrixError, Result};
use crate::services::accounts::Accounts;
use crate::services::expiring::ExpiringSet;
use crate::services::registration_tokens::RegistrationTokens;

const SESSION_TTL: Duration = Duration::from_secs(30 * 60);

/// Open sessions expire `SESSION_TTL` after they were issued; at most
/// `caches.uia_sessions` are kept (the oldest forgotten first).
pub struct Uia {
    sessions: ExpiringSet,
}

impl Uia {
    pub fn new(max_sessions: usize) -> Self {
        Self {
            sessions: ExpiringSet::new(SESSION_TTL, max_sessions),
        }
    }

    fn new_session(&self) -> String {
        let id = Alphanumeric.sample_string(&mut rand::rng(), 24);
        self.sessions.insert(id.clone());
        id
    }

    /// The 401 answer: the flows, a session (the client's, if it sent a live
    /// one), and optionally why the last attempt failed.
    fn challenge(
        &self,
        stage: AuthType,
        session: Option<&str>,
        error: Option<(ErrorKind, &str)>,
    ) -> MatrixError {
        let session = match session {
            Some(s) if self.sessions.contains(s) => s.to_owned(),
            _ => self.new_session(),
        };
        let mut info = UiaaInfo::new(vec![AuthFlow::new(vec![stage])]);
        info.session = Some(session);
        info.params = serde_json::value::to_raw_value(&serde_json::json!({})).ok();
        info.auth_error =
            error.map(|(kind, msg)| Box::new(StandardErrorBody::new(kind, msg.to_owned())));
        MatrixError::uiaa(info)
    }

    /// A session the client names must be one we issued and still hold.
    fn check_known(&self, session: Option<&str>) -> Result<()> {
        match session {
            Some(s) if !self.sessions.contains(s) => Err(MatrixError::unknown(
                http::StatusCode::BAD_REQUEST,
                format!("Unknown session ID: {s}"),
            )),
            _ => Ok(()),
        }
    }

    fn finish(&self, session: Option<&str>) {
        if let Some(s) = session {
            self.sessions.remove(s);
        }
    }

    /// Requires the requester's password (for password change, deactivation,
    /// device deletion). Succeeds once the `m.login.password` stage is passed.
    pub async fn require_password(
        &self,
        auth: Option<&AuthData>,
        user_id: &UserId,
        accounts: &Accounts,
    ) -> Result<()> {
        let Some(auth) = auth else {
            return Err(self.challenge(AuthType::Password, None, None));
        };
        let session = auth.session();
        self.check_known(session)?;
        let AuthData::Password(p) = auth else {
            return Err(self.challenge(
                AuthType::Password,
                session,
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
            return Err(self.challenge(
                AuthType::Password,
                session,
                Some((
                    ErrorKind::Forbidden,
                    "The identifier does not match the logged-in user",
                )),
            ));
        }
        match accounts.check_password(user_id, &p.password).await {
            Ok(_) => {
                self.finish(session);
                Ok(())
            }
            Err(_) => Err(self.challenge(
                AuthType::Password,
                session,
                Some((ErrorKind::Forbidden, "Invalid password")),
            )),
        }
    }

    /// Registration's stage: `m.login.dummy`, or `m.login.registration_token`
    /// when tokens are required. Returns the token to spend, if any.
    pub async fn require_registration(
        &self,
        auth: Option<&AuthData>,
        requires_token: bool,
        tokens: &RegistrationTokens,
    ) -> Result<Option<String>> {
        let stage = if requires_token {
            AuthType::RegistrationToken
        } else {
            AuthType::Dummy
        };
        let Some(auth) = auth else {
            return Err(self.challenge(stage, None, None));
        };
        let session = auth.session();
        self.check_known(session)?;
        match (auth, requires_token) {
            (AuthData::Dummy(_), false) => {
                self.finish(session);
                Ok(None)
            }
            (AuthData::RegistrationToken(t), true) => {
                if tokens.is_valid(&t.token).await? {
                    self.finish(session);
                    Ok(Some(t.token.clone()))
                } else {
                    Err(self.challenge(
                        stage,
                        session,
                        Some((ErrorKind::Forbidden, "Invalid registration token")),
                    ))
                }
            }
            _ => Err(self.challenge(
                stage,
                session,
                Some((ErrorKind::Forbidden, "Unsupported authentication type")),
            )),
        }
    }
}

impl crate::services::workers::CacheSizes for Uia {
    fn cache_sizes(&self) -> Vec<(&'static str, usize)> {
        vec![("sessions", self.sessions.len())]
    }
}
