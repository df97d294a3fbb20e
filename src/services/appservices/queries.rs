//! What the homeserver asks application services (`Authorization: Bearer
//! hs_token`), as Synapse asks them:
//! - `GET /_matrix/app/v1/users/{userId}`: a local user no account exists
//!   for, in a service's user namespace (a profile lookup, an invite): the
//!   service creates it and answers 200, or answers 404.
//! - `GET /_matrix/app/v1/rooms/{roomAlias}`: an unknown local alias in a
//!   service's alias namespace: the service creates the room and alias.
//! - `/_matrix/app/v1/thirdparty/...`: the client API's `/thirdparty/*`,
//!   routed to the services whose registration lists the protocol.
//!
//! A service that fails (an error status, no answer, a bad body) counts as
//! knowing nothing, as on Synapse.

use serde_json::{Map, Value};

use super::{AppService, AppServices};

/// Which third-party lookup: users (`userid` is what a result must carry)
/// or locations (`alias`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThirdPartyKind {
    User,
    Location,
}

impl ThirdPartyKind {
    fn path(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Location => "location",
        }
    }

    fn required_field(self) -> &'static str {
        match self {
            Self::User => "userid",
            Self::Location => "alias",
        }
    }
}

impl AppServices {
    /// `{url}/_matrix/app/v1/{segments...}`, each segment encoded.
    fn app_url(a: &AppService, segments: &[&str]) -> Option<String> {
        let base = a.url.as_deref()?;
        let mut url = url::Url::parse(base).ok()?;
        {
            let mut path = url.path_segments_mut().ok()?;
            path.pop_if_empty();
            path.extend(["_matrix", "app", "v1"]);
            path.extend(segments);
        }
        Some(url.into())
    }

    /// GETs a service's URL; the JSON body of a 2xx answer.
    async fn ask(&self, a: &AppService, url: &str, query: &[(String, String)]) -> Option<Value> {
        match self.http.get_bearer(url, &a.hs_token, query).await {
            Ok(r) if r.status().is_success() => r.json().await.ok(),
            Ok(r) => {
                if r.status() != http::StatusCode::NOT_FOUND {
                    tracing::warn!(appservice = %a.id, %url, status = %r.status(), "application service query failed");
                }
                None
            }
            Err(e) => {
                tracing::warn!(appservice = %a.id, %url, error = %e, "application service query failed");
                None
            }
        }
    }

    /// Asks the services whose user namespaces hold `user_id` whether it
    /// exists (they create it before answering 200); whether one said so.
    /// The caller checks the account again.
    pub async fn query_user(&self, user_id: &str) -> bool {
        for a in self
            .list
            .iter()
            .filter(|a| a.is_interested_in_user(user_id))
        {
            let Some(url) = Self::app_url(a, &["users", user_id]) else {
                continue;
            };
            if self.ask(a, &url, &[]).await.is_some() {
                return true;
            }
        }
        false
    }

    /// Asks the services whose alias namespaces hold `alias` to create it;
    /// whether one said it did. The caller reads the alias again.
    pub async fn query_alias(&self, alias: &str) -> bool {
        for a in self.list.iter().filter(|a| a.is_interested_in_alias(alias)) {
            let Some(url) = Self::app_url(a, &["rooms", alias]) else {
                continue;
            };
            if self.ask(a, &url, &[]).await.is_some() {
                return true;
            }
        }
        false
    }

    /// Every protocol the services list (or only `only`), with the
    /// metadata the first service that answers gives and every service's
    /// `instances` merged; each instance gets `instance_id`
    /// (`{service id}|{network_id}`) as Synapse makes it. A protocol no
    /// service answered for is left out.
    pub async fn thirdparty_protocols(&self, only: Option<&str>) -> Map<String, Value> {
        let mut out: Map<String, Value> = Map::new();
        for a in &self.list {
            for p in a
                .protocols
                .iter()
                .filter(|p| only.is_none_or(|o| o == p.as_str()))
            {
                let Some(info) = self.protocol_info(a, p).await else {
                    continue;
                };
                match out.get_mut(p) {
                    None => {
                        out.insert(p.clone(), info);
                    }
                    Some(merged) => {
                        let more = info["instances"].as_array().cloned().unwrap_or_default();
                        if let Some(list) = merged["instances"].as_array_mut() {
                            list.extend(more);
                        }
                    }
                }
            }
        }
        out
    }

    /// The service's metadata for `protocol`, from memory when it answered
    /// within [`super::PROTOCOL_CACHE_TTL`]; `None` when it does not answer
    /// usable metadata (not remembered: asked again next time).
    async fn protocol_info(&self, a: &AppService, protocol: &str) -> Option<Value> {
        let key = (a.id.clone(), protocol.to_owned());
        if let Some((at, info)) = self.protocol_cache.lock().get(&key)
            && at.elapsed() < super::PROTOCOL_CACHE_TTL
        {
            return Some(info.clone());
        }
        let info = self.ask_protocol_info(a, protocol).await?;
        self.protocol_cache
            .lock()
            .insert(key, (std::time::Instant::now(), info.clone()));
        Some(info)
    }

    async fn ask_protocol_info(&self, a: &AppService, protocol: &str) -> Option<Value> {
        let url = Self::app_url(a, &["thirdparty", "protocol", protocol])?;
        let mut info = self.ask(a, &url, &[]).await?;
        // As Synapse's check: an object whose `instances` is a list of
        // objects with a string `desc`, their `network_id` strings if any.
        let instances = info.get_mut("instances")?.as_array_mut()?;
        for instance in instances.iter_mut() {
            let obj = instance.as_object_mut()?;
            if !obj.get("desc").is_some_and(Value::is_string) {
                return None;
            }
            if let Some(network) = obj.get("network_id") {
                let network = network.as_str()?.to_owned();
                obj.insert(
                    "instance_id".into(),
                    Value::String(format!("{}|{network}", a.id)),
                );
            }
        }
        Some(info)
    }

    /// A third-party lookup of `kind` for `protocol` with the client's
    /// query fields, asked of every service that lists the protocol; the
    /// valid results of all of them, in service order.
    pub async fn thirdparty_query(
        &self,
        kind: ThirdPartyKind,
        protocol: &str,
        fields: &[(String, String)],
    ) -> Vec<Value> {
        self.gather(kind, Some(protocol), fields).await
    }

    /// A reverse lookup (`/thirdparty/location?alias=` or
    /// `/thirdparty/user?userid=`): asked of every service with a protocol
    /// (Synapse asks the services a matching namespace names; a service
    /// answers `[]` for what it does not know).
    pub async fn thirdparty_reverse(
        &self,
        kind: ThirdPartyKind,
        fields: &[(String, String)],
    ) -> Vec<Value> {
        self.gather(kind, None, fields).await
    }

    /// The valid results of every service asked: those that list
    /// `protocol`, or with none, every service that has a protocol.
    async fn gather(
        &self,
        kind: ThirdPartyKind,
        protocol: Option<&str>,
        fields: &[(String, String)],
    ) -> Vec<Value> {
        let mut out = Vec::new();
        let asked = self.list.iter().filter(|a| match protocol {
            Some(p) => a.protocols.iter().any(|x| x == p),
            None => !a.protocols.is_empty(),
        });
        for a in asked {
            let mut path = vec!["thirdparty", kind.path()];
            path.extend(protocol);
            let Some(url) = Self::app_url(a, &path) else {
                continue;
            };
            let Some(Value::Array(results)) = self.ask(a, &url, fields).await else {
                continue;
            };
            out.extend(
                results
                    .into_iter()
                    .filter(|r| valid_result(r, kind.required_field())),
            );
        }
        out
    }
}

/// A result a service may give: an object with string `protocol` and
/// `field` and an object `fields` (Synapse's check).
fn valid_result(r: &Value, field: &str) -> bool {
    r.get(field).is_some_and(Value::is_string)
        && r.get("protocol").is_some_and(Value::is_string)
        && r.get("fields").is_some_and(Value::is_object)
}
