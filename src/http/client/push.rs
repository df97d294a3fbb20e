//! Push rules: the ruleset (`/pushrules/`, `/pushrules/global/`, a kind's
//! list at `/pushrules/global/{kind}/`), and reading and changing single
//! rules (`/pushrules/global/{kind}/{ruleId}[/enabled|/actions]`). The user's
//! rules live in the `m.push_rules` account data; `services::push_rules`
//! edits them.
//!
//! The paths are parsed here rather than by ruma's request types: a room
//! rule's id is any string (ruma wants a room id), a trailing slash selects
//! a list, and a malformed path is 400 `M_UNRECOGNIZED` as Synapse answers
//! (sytest's `61push/02add_rules.pl`), not a 404 for an unknown route.

use axum::extract::{Path, RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use crate::error::{MatrixError, Result};
use crate::http::AppState;
use crate::http::extract::{GuestAuth, JsonBody};
use crate::services::push_rules;

const PREFIX: &str = "/_matrix/client/v3/pushrules/";

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    // `/pushrules` without the slash stays unrouted (404), as in Synapse.
    r.route(PREFIX, get(all).put(no_rule).delete(no_rule))
        .route(
            &format!("{PREFIX}{{*path}}"),
            get(read).put(write).delete(delete),
        )
}

fn unrecognized(why: &str) -> MatrixError {
    MatrixError::new(
        http::StatusCode::BAD_REQUEST,
        ruma::api::error::ErrorKind::Unrecognized,
        why,
    )
}

/// A path below `/pushrules/` naming one rule: `global/{kind}/{ruleId}`,
/// and optionally `/{attr}`.
struct RulePath {
    kind: String,
    rule_id: String,
    attr: Option<String>,
}

impl RulePath {
    fn parse(path: &str) -> Result<Self> {
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            ["global", kind, rule_id, rest @ ..] if !rule_id.is_empty() && rest.len() <= 1 => {
                if !push_rules::is_kind(kind) {
                    return Err(unrecognized("Unknown rule kind"));
                }
                Ok(Self {
                    kind: (*kind).to_owned(),
                    rule_id: (*rule_id).to_owned(),
                    attr: rest
                        .first()
                        .filter(|a| !a.is_empty())
                        .map(|a| (*a).to_owned()),
                })
            }
            ["global", ..] => Err(unrecognized("The path names no push rule")),
            _ => Err(unrecognized("Unknown push rule scope")),
        }
    }

    fn check_attr(&self) -> Result<()> {
        match self.attr.as_deref() {
            None | Some("enabled" | "actions") => Ok(()),
            Some(_) => Err(unrecognized("Unknown push rule attribute")),
        }
    }
}

// JSON: ruma's `Ruleset` omits an empty rule kind, which Myelin sends as `[]`.
async fn all(State(s): State<AppState>, GuestAuth(r): GuestAuth) -> Result<Json<Value>> {
    Ok(Json(
        json!({ "global": s.account_data.push_rules_json(&r.user_id()).await? }),
    ))
}

/// `PUT`/`DELETE /pushrules/`: no scope, no rule.
async fn no_rule(GuestAuth(_): GuestAuth) -> Result<Json<Value>> {
    Err(unrecognized("The path names no push rule"))
}

/// `GET /pushrules/global/` (the ruleset), `.../{kind}/` (a kind's list),
/// `.../{kind}/{ruleId}` (a rule) and `.../{ruleId}/{attr}`.
async fn read(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Path(path): Path<String>,
) -> Result<Json<Value>> {
    let rules = s.account_data.push_rules_json(&r.user_id()).await?;
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["global", ""] => return Ok(Json(Value::Object(rules))),
        ["global", kind, ""] if push_rules::is_kind(kind) => {
            return Ok(Json(rules.get(*kind).cloned().unwrap_or(json!([]))));
        }
        _ => {}
    }
    let at = RulePath::parse(&path)?;
    at.check_attr()?;
    let rule = push_rules::get(&rules, &at.kind, &at.rule_id)?;
    Ok(Json(match at.attr.as_deref() {
        Some(attr) => json!({ attr: rule.get(attr).cloned().unwrap_or(Value::Null) }),
        None => rule.clone(),
    }))
}

/// `PUT .../{kind}/{ruleId}` adds or replaces a rule (`?before=`/`?after=`
/// place it); `PUT .../{ruleId}/enabled` and `/actions` change one field.
async fn write(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<Json<Value>> {
    let at = RulePath::parse(&path)?;
    at.check_attr()?;
    let user = r.user_id();
    let mut rules = s.account_data.push_rules_json(&user).await?;
    match at.attr.as_deref() {
        Some("enabled") => {
            let enabled = body
                .get("enabled")
                .filter(|v| v.is_boolean())
                .ok_or_else(|| MatrixError::bad_json("enabled must be true or false"))?;
            push_rules::set_attr(
                &mut rules,
                &at.kind,
                &at.rule_id,
                "enabled",
                enabled.clone(),
            )?;
        }
        Some(_) => {
            let actions = push_rules::check_actions(body.get("actions"))?;
            push_rules::set_attr(&mut rules, &at.kind, &at.rule_id, "actions", actions)?;
        }
        None => {
            let rule = push_rules::new_rule(&at.kind, &at.rule_id, &body)?;
            let param = |name: &str| {
                url::form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes())
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.into_owned())
            };
            let (before, after) = (param("before"), param("after"));
            push_rules::insert(
                &mut rules,
                &at.kind,
                rule,
                before.as_deref(),
                after.as_deref(),
            )?;
        }
    }
    s.account_data.set_push_rules_json(&user, rules).await?;
    Ok(Json(json!({})))
}

async fn delete(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Path(path): Path<String>,
) -> Result<Json<Value>> {
    let at = RulePath::parse(&path)?;
    if at.attr.is_some() {
        return Err(unrecognized("Only a whole rule can be deleted"));
    }
    let user = r.user_id();
    let mut rules = s.account_data.push_rules_json(&user).await?;
    push_rules::remove(&mut rules, &at.kind, &at.rule_id)?;
    s.account_data.set_push_rules_json(&user, rules).await?;
    Ok(Json(json!({})))
}
