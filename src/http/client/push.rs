//! Push rules: the ruleset (`/pushrules/`), and reading and changing single
//! rules (`/pushrules/global/{kind}/{ruleId}[/enabled|/actions]`). The user's
//! rules live in the `m.push_rules` account data.

use axum::extract::State;
use axum::{Json, Router};
use ruma::UserId;
use ruma::api::client::push::{
    PushRule, RuleKind, delete_pushrule, get_pushrule, get_pushrule_actions, get_pushrule_enabled,
    get_pushrules_all, get_pushrules_global_scope, set_pushrule, set_pushrule_actions,
    set_pushrule_enabled,
};
use ruma::push::{InsertPushRuleError, RemovePushRuleError};
use serde_json::{Value, json};

use crate::error::{MatrixError, Result};
use crate::http::extract::{GuestAuth, Ruma, RumaResponse};
use crate::http::{AppState, ruma_route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<get_pushrules_all::v3::Request, _, _>(r, all);
    let r = ruma_route::<get_pushrules_global_scope::v3::Request, _, _>(r, global);
    let r = ruma_route::<get_pushrule::v3::Request, _, _>(r, get_rule);
    let r = ruma_route::<set_pushrule::v3::Request, _, _>(r, set_rule);
    let r = ruma_route::<delete_pushrule::v3::Request, _, _>(r, delete_rule);
    let r = ruma_route::<get_pushrule_enabled::v3::Request, _, _>(r, get_enabled);
    let r = ruma_route::<set_pushrule_enabled::v3::Request, _, _>(r, set_enabled);
    let r = ruma_route::<get_pushrule_actions::v3::Request, _, _>(r, get_actions);
    ruma_route::<set_pushrule_actions::v3::Request, _, _>(r, set_actions)
}

// JSON: ruma's `Ruleset` omits an empty rule kind, which Myelin sends as `[]`.
async fn all(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    _: Ruma<get_pushrules_all::v3::Request>,
) -> Result<Json<Value>> {
    Ok(Json(
        json!({ "global": s.account_data.push_rules_json(&r.user_id()).await? }),
    ))
}

// JSON: as `all`.
async fn global(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    _: Ruma<get_pushrules_global_scope::v3::Request>,
) -> Result<Json<Value>> {
    Ok(Json(s.account_data.push_rules_json(&r.user_id()).await?))
}

fn not_found() -> MatrixError {
    MatrixError::not_found("Push rule not found")
}

/// One rule of the user's ruleset.
async fn find_rule(s: &AppState, user: &UserId, kind: RuleKind, rule_id: &str) -> Result<PushRule> {
    let rules = s.account_data.push_rules_shared(user).await?;
    rules
        .get(kind, rule_id)
        .map(PushRule::from)
        .ok_or_else(not_found)
}

async fn get_rule(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<get_pushrule::v3::Request>,
) -> Result<RumaResponse<get_pushrule::v3::Response>> {
    let rule = find_rule(&s, &r.user_id(), req.kind, &req.rule_id).await?;
    Ok(RumaResponse(get_pushrule::v3::Response::new(rule)))
}

async fn set_rule(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<set_pushrule::v3::Request>,
) -> Result<RumaResponse<set_pushrule::v3::Response>> {
    let user = r.user_id();
    let mut rules = s.account_data.push_rules(&user).await?;
    rules
        .insert(req.rule, req.after.as_deref(), req.before.as_deref())
        .map_err(|e| match e {
            InsertPushRuleError::UnknownRuleId => not_found(),
            other => MatrixError::invalid_param(other.to_string()),
        })?;
    s.account_data.set_push_rules(&user, &rules).await?;
    Ok(RumaResponse(set_pushrule::v3::Response::new()))
}

async fn delete_rule(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<delete_pushrule::v3::Request>,
) -> Result<RumaResponse<delete_pushrule::v3::Response>> {
    let user = r.user_id();
    let mut rules = s.account_data.push_rules(&user).await?;
    rules.remove(req.kind, &req.rule_id).map_err(|e| match e {
        RemovePushRuleError::NotFound => not_found(),
        other => MatrixError::forbidden(other.to_string()),
    })?;
    s.account_data.set_push_rules(&user, &rules).await?;
    Ok(RumaResponse(delete_pushrule::v3::Response::new()))
}

async fn get_enabled(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<get_pushrule_enabled::v3::Request>,
) -> Result<RumaResponse<get_pushrule_enabled::v3::Response>> {
    let rule = find_rule(&s, &r.user_id(), req.kind, &req.rule_id).await?;
    Ok(RumaResponse(get_pushrule_enabled::v3::Response::new(
        rule.enabled,
    )))
}

async fn set_enabled(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<set_pushrule_enabled::v3::Request>,
) -> Result<RumaResponse<set_pushrule_enabled::v3::Response>> {
    let user = r.user_id();
    let mut rules = s.account_data.push_rules(&user).await?;
    rules
        .set_enabled(req.kind, &req.rule_id, req.enabled)
        .map_err(|_| not_found())?;
    s.account_data.set_push_rules(&user, &rules).await?;
    Ok(RumaResponse(set_pushrule_enabled::v3::Response::new()))
}

async fn get_actions(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<get_pushrule_actions::v3::Request>,
) -> Result<RumaResponse<get_pushrule_actions::v3::Response>> {
    let rule = find_rule(&s, &r.user_id(), req.kind, &req.rule_id).await?;
    Ok(RumaResponse(get_pushrule_actions::v3::Response::new(
        rule.actions,
    )))
}

async fn set_actions(
    State(s): State<AppState>,
    GuestAuth(r): GuestAuth,
    Ruma(req): Ruma<set_pushrule_actions::v3::Request>,
) -> Result<RumaResponse<set_pushrule_actions::v3::Response>> {
    let user = r.user_id();
    let mut rules = s.account_data.push_rules(&user).await?;
    rules
        .set_actions(req.kind, &req.rule_id, req.actions)
        .map_err(|_| not_found())?;
    s.account_data.set_push_rules(&user, &rules).await?;
    Ok(RumaResponse(set_pushrule_actions::v3::Response::new()))
}
