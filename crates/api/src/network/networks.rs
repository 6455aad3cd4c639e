//! `/v2.0/networks`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use cloud::network::{NetworkChanges, NewNetwork};
use serde_json::{json, Value};

use super::query::ListQuery;
use super::requests::{resource, NetworkBody};
use super::views::{to_value, NetworkView};
use super::{created, NeutronResult};
use crate::auth::Auth;
use crate::json::JsonBody;
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.0/networks", get(list).post(create))
        .route("/v2.0/networks/{id}", get(show).put(update).delete(delete))
}

async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    q: ListQuery,
) -> NeutronResult<Json<Value>> {
    let networks = s.cloud.networks(&caller).await?;
    let subnets = s.cloud.subnets(&caller).await?;
    let views = networks
        .iter()
        .map(|n| to_value(NetworkView::new(n, &subnets)))
        .collect();
    Ok(Json(json!({"networks": q.apply(views)?})))
}

async fn show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    q: ListQuery,
) -> NeutronResult<Json<Value>> {
    let network = s.cloud.network(&caller, &id).await?;
    let subnets = s.cloud.subnets(&caller).await?;
    let view = to_value(NetworkView::new(&network, &subnets));
    Ok(q.one("network", view))
}

async fn create(
    State(s): State<AppState>,
    Auth(caller): Auth,
    JsonBody(body): JsonBody<Value>,
) -> NeutronResult<Response> {
    let b: NetworkBody = resource(body, "network")?;
    let network = s
        .cloud
        .create_network(
            &caller,
            NewNetwork {
                name: b.name.unwrap_or_default(),
                description: b.description.unwrap_or_default(),
                admin_state_up: b.admin_state_up,
                shared: b.shared,
                external: b.external,
                mtu: b.mtu,
                port_security_enabled: b.port_security_enabled,
                project_id: b.project_id.or(b.tenant_id),
            },
        )
        .await?;
    Ok(created(
        "network",
        to_value(NetworkView::new(&network, &[])),
    ))
}

async fn update(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> NeutronResult<Json<Value>> {
    let b: NetworkBody = resource(body, "network")?;
    if b.project_id.is_some() || b.tenant_id.is_some() {
        return Err(domain::Error::invalid("Cannot update read-only attribute project_id").into());
    }
    let network = s
        .cloud
        .update_network(
            &caller,
            &id,
            NetworkChanges {
                name: b.name,
                description: b.description,
                admin_state_up: b.admin_state_up,
                shared: b.shared,
                external: b.external,
                mtu: b.mtu,
                port_security_enabled: b.port_security_enabled,
            },
        )
        .await?;
    let subnets = s.cloud.subnets(&caller).await?;
    Ok(Json(
        json!({"network": to_value(NetworkView::new(&network, &subnets))}),
    ))
}

async fn delete(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> NeutronResult<StatusCode> {
    s.cloud.delete_network(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
