//! `/v2.0/security-groups` and `/v2.0/security-group-rules`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use cloud::network::{NewSecurityGroup, NewSecurityGroupRule};
use domain::Error;
use serde_json::{json, Value};

use super::query::ListQuery;
use super::requests::{port_number, protocol, resource, RuleBody, SecurityGroupBody};
use super::views::{to_value, RuleView, SecurityGroupView};
use super::{created, NeutronResult};
use crate::auth::Auth;
use crate::json::JsonBody;
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.0/security-groups", get(list).post(create))
        .route(
            "/v2.0/security-groups/{id}",
            get(show).put(update).delete(delete),
        )
        .route(
            "/v2.0/security-group-rules",
            get(list_rules).post(create_rule),
        )
        .route(
            "/v2.0/security-group-rules/{id}",
            get(show_rule).delete(delete_rule),
        )
}

async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    q: ListQuery,
) -> NeutronResult<Json<Value>> {
    let groups = s.cloud.security_groups(&caller).await?;
    let rules = s.cloud.security_group_rules(&caller).await?;
    let views = groups
        .iter()
        .map(|g| to_value(SecurityGroupView::new(g, &rules)))
        .collect();
    Ok(Json(json!({"security_groups": q.apply(views)?})))
}

async fn show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    q: ListQuery,
) -> NeutronResult<Json<Value>> {
    let group = s.cloud.security_group(&caller, &id).await?;
    let rules = s.cloud.security_group_rules(&caller).await?;
    let view = to_value(SecurityGroupView::new(&group, &rules));
    Ok(q.one("security_group", view))
}

async fn create(
    State(s): State<AppState>,
    Auth(caller): Auth,
    JsonBody(body): JsonBody<Value>,
) -> NeutronResult<Response> {
    let b: SecurityGroupBody = resource(body, "security_group")?;
    let group = s
        .cloud
        .create_security_group(
            &caller,
            NewSecurityGroup {
                name: b.name.unwrap_or_default(),
                description: b.description.unwrap_or_default(),
                stateful: b.stateful,
                project_id: b.project_id.or(b.tenant_id),
            },
        )
        .await?;
    let rules = s.cloud.security_group_rules(&caller).await?;
    Ok(created(
        "security_group",
        to_value(SecurityGroupView::new(&group, &rules)),
    ))
}

async fn update(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> NeutronResult<Json<Value>> {
    let b: SecurityGroupBody = resource(body, "security_group")?;
    if b.stateful.is_some() || b.project_id.is_some() || b.tenant_id.is_some() {
        return Err(Error::invalid("Cannot update read-only attribute of a security group").into());
    }
    let group = s
        .cloud
        .update_security_group(&caller, &id, b.name, b.description)
        .await?;
    let rules = s.cloud.security_group_rules(&caller).await?;
    Ok(Json(
        json!({"security_group": to_value(SecurityGroupView::new(&group, &rules))}),
    ))
}

async fn delete(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> NeutronResult<StatusCode> {
    s.cloud.delete_security_group(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn default_groups(
    s: &AppState,
    caller: &domain::identity::Caller,
) -> NeutronResult<Vec<domain::SecurityGroupId>> {
    Ok(s.cloud
        .security_groups(caller)
        .await?
        .iter()
        .filter(|g| g.is_default)
        .map(|g| g.id)
        .collect())
}

async fn list_rules(
    State(s): State<AppState>,
    Auth(caller): Auth,
    q: ListQuery,
) -> NeutronResult<Json<Value>> {
    let defaults = default_groups(&s, &caller).await?;
    let views = s
        .cloud
        .security_group_rules(&caller)
        .await?
        .iter()
        .map(|r| to_value(RuleView::new(r, &defaults)))
        .collect();
    Ok(Json(json!({"security_group_rules": q.apply(views)?})))
}

async fn show_rule(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    q: ListQuery,
) -> NeutronResult<Json<Value>> {
    let defaults = default_groups(&s, &caller).await?;
    let view = to_value(RuleView::new(
        &s.cloud.security_group_rule(&caller, &id).await?,
        &defaults,
    ));
    Ok(q.one("security_group_rule", view))
}

async fn create_rule(
    State(s): State<AppState>,
    Auth(caller): Auth,
    JsonBody(body): JsonBody<Value>,
) -> NeutronResult<Response> {
    let b: RuleBody = resource(body, "security_group_rule")?;
    let rule = s
        .cloud
        .create_security_group_rule(
            &caller,
            NewSecurityGroupRule {
                security_group_id: b.security_group_id.clone().ok_or_else(|| {
                    Error::invalid("Invalid input for operation: 'security_group_id' is required.")
                })?,
                direction: b.direction.clone().ok_or_else(|| {
                    Error::invalid("Invalid input for operation: 'direction' is required.")
                })?,
                ethertype: b.ethertype.clone(),
                protocol: protocol(&b.protocol)?,
                port_range_min: port_number(&b.port_range_min, "port_range_min")?,
                port_range_max: port_number(&b.port_range_max, "port_range_max")?,
                remote_ip_prefix: b.remote_ip_prefix.clone(),
                remote_group_id: b.remote_group_id.clone(),
                description: b.description.clone().unwrap_or_default(),
                project_id: b.project_id.clone().or(b.tenant_id.clone()),
            },
        )
        .await?;
    let defaults = default_groups(&s, &caller).await?;
    Ok(created(
        "security_group_rule",
        to_value(RuleView::new(&rule, &defaults)),
    ))
}

async fn delete_rule(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> NeutronResult<StatusCode> {
    s.cloud.delete_security_group_rule(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
