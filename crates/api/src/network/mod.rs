//! Neutron's v2.0 API under `/networking` (catalog type `network`): networks, subnets,
//! ports, security groups and rules, with Neutron's list semantics — any attribute as
//! a filter, `fields`, `sort_key`/`sort_dir`, `limit`/`marker` — and its error body
//! `{"NeutronError": {"type", "message", "detail"}}`.

mod networks;
mod ports;
mod query;
mod quotas;
mod requests;
mod routers;
mod security_groups;
mod subnets;
mod views;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use domain::{Error, ErrorKind};
use serde_json::json;

use crate::error::status_of;
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(versions))
        .route("/v2.0", get(resources))
        .route("/v2.0/", get(resources))
        .route("/v2.0/extensions", get(extensions))
        .route("/v2.0/extensions/{alias}", get(extension))
        .merge(networks::routes())
        .merge(subnets::routes())
        .merge(ports::routes())
        .merge(security_groups::routes())
        .merge(routers::routes())
        .merge(quotas::routes())
}

/// An error in Neutron's shape.
#[derive(Debug)]
pub(crate) struct NeutronError(pub Error);

impl From<Error> for NeutronError {
    fn from(e: Error) -> Self {
        NeutronError(e)
    }
}

pub(crate) type NeutronResult<T> = Result<T, NeutronError>;

impl IntoResponse for NeutronError {
    fn into_response(self) -> Response {
        let status = status_of(self.0.kind());
        if status.is_server_error() {
            tracing::error!(error = %self.0, causes = %crate::error::causes(&self.0), "request failed");
        }
        let kind = match self.0.kind() {
            ErrorKind::NotFound => "NotFound",
            ErrorKind::InvalidInput => "InvalidInput",
            ErrorKind::Conflict => "Conflict",
            ErrorKind::Forbidden => "PolicyNotAuthorized",
            ErrorKind::Unauthenticated => "NotAuthenticated",
            _ => "ServiceUnavailable",
        };
        let body =
            json!({"NeutronError": {"type": kind, "message": self.0.message(), "detail": ""}});
        (status, Json(body)).into_response()
    }
}

async fn versions(
    axum::extract::State(s): axum::extract::State<AppState>,
) -> Json<serde_json::Value> {
    Json(json!({"versions": [{
        "id": "v2.0", "status": "CURRENT",
        "links": [{"href": s.url("/networking/v2.0/"), "rel": "self"}],
    }]}))
}

async fn resources(
    axum::extract::State(s): axum::extract::State<AppState>,
) -> Json<serde_json::Value> {
    let resources: Vec<_> = [("network", "networks"), ("subnet", "subnets"), ("port", "ports"), ("router", "routers"), ("floatingip", "floatingips"), ("security_group", "security-groups")]
        .iter()
        .map(|(name, collection)| {
            json!({"name": name, "collection": collection,
                   "links": [{"href": s.url(&format!("/networking/v2.0/{collection}")), "rel": "self"}]})
        })
        .collect();
    Json(json!({"resources": resources}))
}

/// The extensions Snapstack implements, as Neutron names them.
const EXTENSIONS: &[(&str, &str, &str)] = &[
    ("security-group", "security-group", "The security groups extension."),
    ("port-security", "Port Security", "Provides port security"),
    ("allowed-address-pairs", "Allowed Address Pairs", "Provides allowed address pairs"),
    ("binding", "Port Binding", "Expose port bindings of a virtual port to external application"),
    ("external-net", "Neutron external network", "Adds external network attribute to network resource."),
    ("net-mtu", "Network MTU", "Provides MTU attribute for a network resource."),
    ("standard-attr-description", "standard-attr-description", "Extension to add descriptions to standard attributes"),
    ("standard-attr-revisions", "Resource revision numbers", "This extension will display the revision number of neutron resources."),
    ("standard-attr-timestamp", "Resource timestamps", "Adds created_at and updated_at fields to all Neutron resources that have Neutron standard attributes."),
    ("project-id", "project_id field enabled", "Extension that indicates that project_id field is enabled."),
    ("quotas", "Quota management support", "Expose functions for quotas management per tenant"),
    ("quota_details", "Quota details extension", "Expose functions for quotas usage statistics per project"),
    ("router", "Neutron L3 Router", "Router abstraction for basic L3 forwarding between L2 Neutron networks and access to external networks via a NAT gateway."),
    ("ext-gw-mode", "Neutron L3 Configurable external gateway mode", "Extension of the router abstraction for specifying whether SNAT should occur on the external gateway"),
    ("extraroute", "Neutron Extra Route", "Extra routes configuration for L3 router"),
    ("stateful-security-group", "Stateful security group", "Indicates if the security group is stateful or not"),
];

fn extension_view(alias: &str, name: &str, description: &str) -> serde_json::Value {
    json!({"alias": alias, "name": name, "description": description,
           "updated": "2026-12-04T00:00:00-00:00", "links": []})
}

async fn extensions(crate::auth::Auth(_caller): crate::auth::Auth) -> Json<serde_json::Value> {
    let list: Vec<_> = EXTENSIONS
        .iter()
        .map(|(a, n, d)| extension_view(a, n, d))
        .collect();
    Json(json!({"extensions": list}))
}

async fn extension(
    crate::auth::Auth(_caller): crate::auth::Auth,
    axum::extract::Path(alias): axum::extract::Path<String>,
) -> NeutronResult<Json<serde_json::Value>> {
    EXTENSIONS
        .iter()
        .find(|(a, _, _)| *a == alias)
        .map(|(a, n, d)| Json(json!({"extension": extension_view(a, n, d)})))
        .ok_or_else(|| Error::not_found("Extension", &alias).into())
}

/// 201 with `{key: view}`.
pub(crate) fn created(key: &str, view: serde_json::Value) -> Response {
    (StatusCode::CREATED, Json(json!({key: view}))).into_response()
}
