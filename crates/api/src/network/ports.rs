//! `/v2.0/ports`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use cloud::network::{NewPort, PortChanges};
use domain::Error;
use serde_json::{json, Value};

use super::query::ListQuery;
use super::requests::{resource, PortBody};
use super::views::{to_value, PortView};
use super::{created, NeutronResult};
use crate::auth::Auth;
use crate::json::JsonBody;
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.0/ports", get(list).post(create))
        .route("/v2.0/ports/{id}", get(show).put(update).delete(delete))
}

async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    q: ListQuery,
) -> NeutronResult<Json<Value>> {
    let views = s
        .cloud
        .ports(&caller)
        .await?
        .iter()
        .map(|p| to_value(PortView::new(p, &caller)))
        .collect();
    Ok(Json(json!({"ports": q.apply(views)?})))
}

async fn show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    q: ListQuery,
) -> NeutronResult<Json<Value>> {
    let view = to_value(PortView::new(&s.cloud.port(&caller, &id).await?, &caller));
    Ok(q.one("port", view))
}

async fn create(
    State(s): State<AppState>,
    Auth(caller): Auth,
    JsonBody(body): JsonBody<Value>,
) -> NeutronResult<Response> {
    let b: PortBody = resource(body, "port")?;
    b.check_vnic()?;
    let network_id = b
        .network_id
        .clone()
        .ok_or_else(|| Error::invalid("Invalid input for operation: 'network_id' is required."))?;
    let port = s
        .cloud
        .create_port(
            &caller,
            NewPort {
                network_id,
                name: b.name.clone().unwrap_or_default(),
                description: b.description.clone().unwrap_or_default(),
                admin_state_up: b.admin_state_up,
                mac_address: b.mac_address.clone(),
                fixed_ips: b.fixed_ips()?,
                device_id: b.device_id.clone().unwrap_or_default(),
                device_owner: b.device_owner.clone().unwrap_or_default(),
                port_security_enabled: b.port_security_enabled,
                security_groups: b.security_groups.clone(),
                allowed_address_pairs: b.pairs()?.unwrap_or_default(),
                host_id: b.host_id.clone(),
                project_id: b.project_id.clone().or(b.tenant_id.clone()),
            },
        )
        .await?;
    Ok(created("port", to_value(PortView::new(&port, &caller))))
}

async fn update(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> NeutronResult<Json<Value>> {
    let b: PortBody = resource(body, "port")?;
    b.check_vnic()?;
    for (set, field) in [
        (b.network_id.is_some(), "network_id"),
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
    let port = s
        .cloud
        .update_port(
            &caller,
            &id,
            PortChanges {
                name: b.name.clone(),
                description: b.description.clone(),
                admin_state_up: b.admin_state_up,
                mac_address: b.mac_address.clone(),
                fixed_ips: b.fixed_ips()?,
                device_id: b.device_id.clone(),
                device_owner: b.device_owner.clone(),
                port_security_enabled: b.port_security_enabled,
                security_groups: b.security_groups.clone(),
                allowed_address_pairs: b.pairs()?,
                host_id: b.host_id.clone(),
            },
        )
        .await?;
    Ok(Json(
        json!({"port": to_value(PortView::new(&port, &caller))}),
    ))
}

async fn delete(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> NeutronResult<StatusCode> {
    s.cloud.delete_port(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
