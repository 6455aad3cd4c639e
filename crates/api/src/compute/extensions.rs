//! `/extensions`: Nova's frozen list of API extensions (every Nova lists
//! the same ones since the v2.1 API); the ones Snapstack serves a part of.

use axum::extract::Path;
use axum::routing::get;
use axum::{Json, Router};
use domain::Error;
use serde_json::{json, Value};

use super::NovaResult;
use crate::auth::Auth;
use crate::AppState;

/// (name, alias, description).
const EXTENSIONS: &[(&str, &str, &str)] = &[
    (
        "AvailabilityZone",
        "os-availability-zone",
        "1. Add availability_zone to the Create Server API. 2. Add availability zones describing.",
    ),
    ("Consoles", "os-consoles", "Interactive Console support."),
    ("DiskConfig", "OS-DCF", "Disk Management Extension."),
    (
        "ExtendedAvailabilityZone",
        "OS-EXT-AZ",
        "Extended Availability Zone support.",
    ),
    ("ExtendedStatus", "OS-EXT-STS", "Extended Status support."),
    (
        "ExtendedVolumes",
        "os-extended-volumes",
        "Extended Volumes support.",
    ),
    (
        "FlavorExtraData",
        "OS-FLV-EXT-DATA",
        "Provide additional data for flavors.",
    ),
    ("Flavors", "flavors", "Flavors Extension."),
    ("Hosts", "os-hosts", "Admin-only host administration."),
    (
        "Hypervisors",
        "os-hypervisors",
        "Admin-only hypervisor administration.",
    ),
    (
        "ImageSize",
        "OS-EXT-IMG-SIZE",
        "Adds image size to image listings.",
    ),
    ("Images", "images", "Images Extension."),
    (
        "InstanceUsageAuditLog",
        "os-instance_usage_audit_log",
        "Admin-only Task Log Monitoring.",
    ),
    ("Keypairs", "os-keypairs", "Keypair Support."),
    ("Migrations", "os-migrations", "Provide data on migrations."),
    (
        "ServerExternalEvents",
        "os-server-external-events",
        "Server External Event Triggers.",
    ),
    (
        "ServerUsage",
        "OS-SRV-USG",
        "Adds launched_at and terminated_at on Servers.",
    ),
    ("Servers", "servers", "Servers."),
    ("Services", "os-services", "Services support."),
    (
        "SimpleTenantUsage",
        "os-simple-tenant-usage",
        "Simple tenant usage extension.",
    ),
    ("Volumes", "os-volumes", "Volumes support."),
];

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/extensions", get(list))
        .route("/extensions/{alias}", get(show))
}

fn view(&(name, alias, description): &(&str, &str, &str)) -> Value {
    json!({
        "name": name,
        "alias": alias,
        "description": description,
        "namespace": "http://docs.openstack.org/compute/ext/fake_xml",
        "updated": "2014-12-03T00:00:00Z",
        "links": [],
    })
}

async fn list(Auth(_caller): Auth) -> Json<Value> {
    Json(json!({"extensions": EXTENSIONS.iter().map(view).collect::<Vec<_>>()}))
}

async fn show(Auth(_caller): Auth, Path(alias): Path<String>) -> NovaResult<Json<Value>> {
    let ext = EXTENSIONS
        .iter()
        .find(|e| e.1 == alias)
        .ok_or_else(|| Error::not_found("Extension", &alias))?;
    Ok(Json(json!({"extension": view(ext)})))
}
