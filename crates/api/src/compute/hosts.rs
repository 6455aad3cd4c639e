//! `/os-hosts` (admins, removed at 2.43) and `/os-migrations` (admins):
//! this one host, with its three services; its power and status cannot be driven
//! from the API (400), and Snapstack never migrates.

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use domain::identity::{Caller, Role};
use domain::server::VmState;
use domain::Error;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Microversion, NovaResult};
use crate::auth::Auth;
use crate::json::JsonBody;
use crate::AppState;

const HOST: &str = "localhost";
/// (service, zone) for each Nova service this host plays.
const SERVICES: &[(&str, &str)] = &[
    ("conductor", "internal"),
    ("scheduler", "internal"),
    ("compute", "nova"),
];

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/os-hosts", get(list))
        .route("/os-hosts/{host}", get(show).put(update))
        .route("/os-hosts/{host}/{power}", get(power))
        .route("/os-migrations", get(migrations))
}

#[derive(Deserialize, Default)]
struct HostQuery {
    zone: Option<String>,
}

/// Admins only, and only below 2.43 (where Nova removed the API).
fn check(caller: &Caller, v: Microversion) -> Result<(), Error> {
    if v.at_least(43) {
        return Err(Error::not_found("API", "os-hosts"));
    }
    caller.require(Role::Admin, "manage hosts")
}

fn ours(host: &str) -> Result<(), Error> {
    if host == HOST {
        Ok(())
    } else {
        Err(Error::not_found("Compute host", host))
    }
}

async fn list(
    Auth(caller): Auth,
    v: Microversion,
    Query(q): Query<HostQuery>,
) -> NovaResult<Json<Value>> {
    check(&caller, v)?;
    let hosts: Vec<Value> = SERVICES
        .iter()
        .filter(|(_, zone)| q.zone.as_deref().is_none_or(|z| z.is_empty() || z == *zone))
        .map(|(service, zone)| json!({"host_name": HOST, "service": service, "zone": zone}))
        .collect();
    Ok(Json(json!({"hosts": hosts})))
}

async fn show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Path(host): Path<String>,
) -> NovaResult<Json<Value>> {
    check(&caller, v)?;
    ours(&host)?;
    let servers = s.cloud.servers(&caller, true).await?;
    let live: Vec<_> = servers
        .iter()
        .filter(|srv| srv.vm_state != VmState::Deleted)
        .collect();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let resource = |project: &str, cpu: u64, memory_mb: u64, disk_gb: u64| json!({"resource": {"host": HOST, "project": project, "cpu": cpu, "memory_mb": memory_mb, "disk_gb": disk_gb}});
    let used = (
        live.iter()
            .map(|srv| u64::from(srv.flavor.vcpus))
            .sum::<u64>(),
        live.iter().map(|srv| srv.flavor.ram).sum::<u64>(),
        live.iter().map(|srv| srv.flavor.disk).sum::<u64>(),
    );
    let mut rows = vec![
        resource("(total)", cpus, 0, 0),
        resource("(used_now)", used.0, used.1, used.2),
        resource("(used_max)", used.0, used.1, used.2),
    ];
    let mut projects: Vec<String> = live.iter().map(|srv| srv.project_id.to_string()).collect();
    projects.sort();
    projects.dedup();
    for p in projects {
        let mine: Vec<_> = live
            .iter()
            .filter(|srv| srv.project_id.to_string() == p)
            .collect();
        rows.push(resource(
            &p,
            mine.iter().map(|srv| u64::from(srv.flavor.vcpus)).sum(),
            mine.iter().map(|srv| srv.flavor.ram).sum(),
            mine.iter().map(|srv| srv.flavor.disk).sum(),
        ));
    }
    Ok(Json(json!({"host": rows})))
}

async fn update(
    Auth(caller): Auth,
    v: Microversion,
    Path(host): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    check(&caller, v)?;
    let obj = body
        .as_object()
        .ok_or_else(|| Error::invalid("The request body must be an object."))?;
    if obj.is_empty() {
        return Err(Error::invalid("'status' or 'maintenance_mode' is required.").into());
    }
    for (key, allowed) in [
        ("status", ["enable", "disable"]),
        ("maintenance_mode", ["enable", "disable"]),
    ] {
        if let Some(val) = obj.get(key) {
            if !val.as_str().is_some_and(|t| allowed.contains(&t)) {
                return Err(Error::invalid(format!("Invalid {key}: {val}")).into());
            }
        }
    }
    if let Some(extra) = obj
        .keys()
        .find(|k| *k != "status" && *k != "maintenance_mode")
    {
        return Err(Error::invalid(format!(
            "Additional properties are not allowed ('{extra}' was unexpected)"
        ))
        .into());
    }
    ours(&host)?;
    Err(Error::invalid("Snapstack hosts cannot be disabled or put in maintenance.").into())
}

/// `startup`, `shutdown`, `reboot`.
async fn power(
    Auth(caller): Auth,
    v: Microversion,
    Path((host, action)): Path<(String, String)>,
) -> NovaResult<Json<Value>> {
    check(&caller, v)?;
    if !["startup", "shutdown", "reboot"].contains(&action.as_str()) {
        return Err(Error::not_found("API", format!("os-hosts/{host}/{action}")).into());
    }
    ours(&host)?;
    Err(Error::invalid("Snapstack does not drive its host's power.").into())
}

async fn migrations(Auth(caller): Auth) -> NovaResult<Json<Value>> {
    caller.require(Role::Admin, "list migrations")?;
    Ok(Json(json!({"migrations": []})))
}
