//! `/v2.0/routers` (with `add_router_interface` / `remove_router_interface`) and
//! `/v2.0/floatingips`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, put};
use axum::{Json, Router};
use cloud::network::{
    InterfaceRequest, NewFloatingIp, NewRouter, RouterChanges, RouterInterfaceInfo,
};
use domain::Error;
use serde_json::{json, Value};

use super::query::ListQuery;
use super::requests::{resource, FloatingIpBody, InterfaceBody, RouterBody};
use super::views::{to_value, FloatingIpView, RouterView};
use super::{created, NeutronResult};
use crate::auth::Auth;
use crate::json::JsonBody;
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.0/routers", get(list).post(create))
        .route("/v2.0/routers/{id}", get(show).put(update).delete(delete))
        .route(
            "/v2.0/routers/{id}/add_router_interface",
            put(add_interface),
        )
        .route(
            "/v2.0/routers/{id}/remove_router_interface",
            put(remove_interface),
        )
        .route("/v2.0/floatingips", get(list_fips).post(create_fip))
        .route(
            "/v2.0/floatingips/{id}",
            get(show_fip).put(update_fip).delete(delete_fip),
        )
}

async fn view(s: &AppState, r: &domain::network::Router) -> NeutronResult<Value> {
    let ips = s.cloud.router_gateway_ips(r).await?;
    Ok(to_value(RouterView::new(r, &ips)))
}

async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    q: ListQuery,
) -> NeutronResult<Json<Value>> {
    let mut views = Vec::new();
    for r in s.cloud.routers(&caller).await? {
        views.push(view(&s, &r).await?);
    }
    Ok(Json(json!({"routers": q.apply(views)?})))
}

async fn show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    q: ListQuery,
) -> NeutronResult<Json<Value>> {
    let v = view(&s, &s.cloud.router(&caller, &id).await?).await?;
    Ok(q.one("router", v))
}

async fn create(
    State(s): State<AppState>,
    Auth(caller): Auth,
    JsonBody(body): JsonBody<Value>,
) -> NeutronResult<Response> {
    let b: RouterBody = resource(body, "router")?;
    if b.routes.is_some() {
        return Err(Error::invalid(
            "Invalid input for routes: set them with an update once the router has interfaces.",
        )
        .into());
    }
    let gateway = match &b.external_gateway_info {
        Some(Some(g)) => g.request()?,
        _ => None,
    };
    let router = s
        .cloud
        .create_router(
            &caller,
            NewRouter {
                name: b.name.unwrap_or_default(),
                description: b.description.unwrap_or_default(),
                admin_state_up: b.admin_state_up,
                gateway,
                project_id: b.project_id.or(b.tenant_id),
            },
        )
        .await?;
    Ok(created("router", view(&s, &router).await?))
}

async fn update(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> NeutronResult<Json<Value>> {
    let b: RouterBody = resource(body, "router")?;
    let gateway = match &b.external_gateway_info {
        None => None,
        Some(None) => Some(None),
        Some(Some(g)) => Some(g.request()?),
    };
    let router = s
        .cloud
        .update_router(
            &caller,
            &id,
            RouterChanges {
                name: b.name.clone(),
                description: b.description.clone(),
                admin_state_up: b.admin_state_up,
                gateway,
                routes: b.routes(),
            },
        )
        .await?;
    Ok(Json(json!({"router": view(&s, &router).await?})))
}

async fn delete(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> NeutronResult<StatusCode> {
    s.cloud.delete_router(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn interface_request(body: Value) -> Result<InterfaceRequest, Error> {
    let b: InterfaceBody = serde_json::from_value(body)
        .map_err(|e| Error::invalid(format!("Invalid input for operation: {e}.")))?;
    match (b.subnet_id, b.port_id) {
        (Some(_), Some(_)) => Err(Error::invalid(
            "Bad router request: Cannot specify both subnet-id and port-id",
        )),
        (Some(subnet), None) => Ok(InterfaceRequest::Subnet(subnet)),
        (None, Some(port)) => Ok(InterfaceRequest::Port(port)),
        (None, None) => Err(Error::invalid(
            "Bad router request: Either subnet_id or port_id must be specified",
        )),
    }
}

fn interface_view(info: &RouterInterfaceInfo) -> Value {
    json!({
        "id": info.router_id.to_string(),
        "port_id": info.port_id.to_string(),
        "subnet_id": info.subnet_id.to_string(),
        "subnet_ids": [info.subnet_id.to_string()],
        "network_id": info.network_id.to_string(),
        "project_id": info.project_id.to_string(),
        "tenant_id": info.project_id.to_string(),
        "tags": [],
    })
}

async fn add_interface(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> NeutronResult<Json<Value>> {
    let info = s
        .cloud
        .add_router_interface(&caller, &id, interface_request(body)?)
        .await?;
    Ok(Json(interface_view(&info)))
}

async fn remove_interface(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> NeutronResult<Json<Value>> {
    let info = s
        .cloud
        .remove_router_interface(&caller, &id, interface_request(body)?)
        .await?;
    Ok(Json(interface_view(&info)))
}

async fn list_fips(
    State(s): State<AppState>,
    Auth(caller): Auth,
    q: ListQuery,
) -> NeutronResult<Json<Value>> {
    let views = s
        .cloud
        .floating_ips(&caller)
        .await?
        .iter()
        .map(|f| to_value(FloatingIpView::new(f)))
        .collect();
    Ok(Json(json!({"floatingips": q.apply(views)?})))
}

async fn show_fip(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    q: ListQuery,
) -> NeutronResult<Json<Value>> {
    let v = to_value(FloatingIpView::new(
        &s.cloud.floating_ip(&caller, &id).await?,
    ));
    Ok(q.one("floatingip", v))
}

async fn create_fip(
    State(s): State<AppState>,
    Auth(caller): Auth,
    JsonBody(body): JsonBody<Value>,
) -> NeutronResult<Response> {
    let b: FloatingIpBody = resource(body, "floatingip")?;
    let fip = s
        .cloud
        .create_floating_ip(
            &caller,
            NewFloatingIp {
                floating_network_id: b.floating_network_id.ok_or_else(|| {
                    Error::invalid(
                        "Invalid input for operation: 'floating_network_id' is required.",
                    )
                })?,
                floating_ip_address: b.floating_ip_address,
                subnet_id: b.subnet_id,
                port_id: b.port_id.flatten(),
                fixed_ip_address: b.fixed_ip_address,
                description: b.description.unwrap_or_default(),
                project_id: b.project_id.or(b.tenant_id),
            },
        )
        .await?;
    Ok(created("floatingip", to_value(FloatingIpView::new(&fip))))
}

async fn update_fip(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> NeutronResult<Json<Value>> {
    let b: FloatingIpBody = resource(body, "floatingip")?;
    if b.floating_network_id.is_some() || b.floating_ip_address.is_some() {
        return Err(Error::invalid("Cannot update read-only attribute floating_network_id").into());
    }
    let fip = s
        .cloud
        .update_floating_ip(&caller, &id, b.port_id, b.fixed_ip_address, b.description)
        .await?;
    Ok(Json(
        json!({"floatingip": to_value(FloatingIpView::new(&fip))}),
    ))
}

async fn delete_fip(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> NeutronResult<StatusCode> {
    s.cloud.delete_floating_ip(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
