//! `/v2.0/subnets`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use cloud::network::{NewSubnet, SubnetChanges};
use domain::Error;
use serde_json::{json, Value};

use super::query::ListQuery;
use super::requests::{resource, SubnetBody};
use super::views::{to_value, SubnetView};
use super::{created, NeutronResult};
use crate::auth::Auth;
use crate::json::JsonBody;
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.0/subnets", get(list).post(create))
        .route("/v2.0/subnets/{id}", get(show).put(update).delete(delete))
}

async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    q: ListQuery,
) -> NeutronResult<Json<Value>> {
    let views = s
        .cloud
        .subnets(&caller)
        .await?
        .iter()
        .map(|n| to_value(SubnetView::new(n)))
        .collect();
    Ok(Json(json!({"subnets": q.apply(views)?})))
}

async fn show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    q: ListQuery,
) -> NeutronResult<Json<Value>> {
    let view = to_value(SubnetView::new(&s.cloud.subnet(&caller, &id).await?));
    Ok(q.one("subnet", view))
}

async fn create(
    State(s): State<AppState>,
    Auth(caller): Auth,
    JsonBody(body): JsonBody<Value>,
) -> NeutronResult<Response> {
    let b: SubnetBody = resource(body, "subnet")?;
    match b.ip_version {
        Some(4) => {}
        Some(6) => {
            return Err(Error::invalid(
                "Invalid input for operation: IPv6 subnets are not supported.",
            )
            .into())
        }
        Some(v) => {
            return Err(Error::invalid(format!(
                "Invalid input for ip_version. Reason: {v} is not in [4, 6]."
            ))
            .into())
        }
        None => {
            return Err(
                Error::invalid("Invalid input for operation: 'ip_version' is required.").into(),
            )
        }
    }
    let network_id = b
        .network_id
        .clone()
        .ok_or_else(|| Error::invalid("Invalid input for operation: 'network_id' is required."))?;
    let cidr = b.cidr.clone().ok_or_else(|| {
        Error::invalid(
            "Bad subnets request: a cidr must be specified in the absence of a subnet pool.",
        )
    })?;
    let subnet = s
        .cloud
        .create_subnet(
            &caller,
            NewSubnet {
                network_id,
                name: b.name.clone().unwrap_or_default(),
                description: b.description.clone().unwrap_or_default(),
                cidr,
                gateway_ip: b.gateway()?,
                enable_dhcp: b.enable_dhcp,
                allocation_pools: b.pools().unwrap_or_default(),
                dns_nameservers: b.dns()?.unwrap_or_default(),
                host_routes: b.routes().unwrap_or_default(),
                project_id: b.project_id.clone().or(b.tenant_id.clone()),
            },
        )
        .await?;
    Ok(created("subnet", to_value(SubnetView::new(&subnet))))
}

async fn update(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> NeutronResult<Json<Value>> {
    let b: SubnetBody = resource(body, "subnet")?;
    for (set, field) in [
        (b.cidr.is_some(), "cidr"),
        (b.network_id.is_some(), "network_id"),
        (b.ip_version.is_some(), "ip_version"),
        (
            b.project_id.is_some() || b.tenant_id.is_some(),
            "project_id",
        ),
    ] {
        if set {
            return Err(
                Error::invalid(format!("Cannot update read-only attribute {field}")).into(),
            );
        }
    }
    let subnet = s
        .cloud
        .update_subnet(
            &caller,
            &id,
            SubnetChanges {
                name: b.name.clone(),
                description: b.description.clone(),
                gateway_ip: b.gateway()?,
                enable_dhcp: b.enable_dhcp,
                allocation_pools: b.pools(),
                dns_nameservers: b.dns()?,
                host_routes: b.routes(),
            },
        )
        .await?;
    Ok(Json(json!({"subnet": to_value(SubnetView::new(&subnet))})))
}

async fn delete(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> NeutronResult<StatusCode> {
    s.cloud.delete_subnet(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
