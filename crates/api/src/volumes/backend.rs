//! Cinder's admin views of where volumes live: `os-services`, `os-hosts`,
//! `scheduler-stats/get_pools` and `capabilities/{host}`.
//!
//! One Snapstack is one Cinder host (`snapstack`) running a scheduler and
//! one volume backend named after its pool (`snapstack@file`, pool
//! `snapstack@file#file`; `rbd` likewise). Both services live in the
//! serving process, so they are `up` while it answers; they cannot be
//! disabled, frozen or failed over (400), and an unknown host or binary is
//! a 404 as Cinder answers.

use axum::extract::{Path, Query, State};
use axum::routing::{get, put};
use axum::{Json, Router};
use domain::identity::{Caller, Role};
use domain::Error;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{check_project, views::timestamp, VolumeVersion};
use crate::auth::Auth;
use crate::compute::NovaResult;
use crate::json::JsonBody;
use crate::AppState;

/// The one Cinder host name.
pub(crate) const HOST: &str = "snapstack";

use cloud::volumes::VENDOR_NAME as VENDOR;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/{project}/os-services", get(services))
        .route("/{project}/os-services/{action}", put(service_action))
        .route("/{project}/os-hosts", get(hosts))
        .route("/{project}/os-hosts/{host}", get(host))
        .route("/{project}/scheduler-stats/get_pools", get(pools))
        .route("/{project}/capabilities/{host}", get(capabilities))
}

/// `snapstack@<backend>`: the volume service's host.
pub(crate) fn backend_host(s: &AppState) -> String {
    format!("{HOST}@{}", s.cloud.volume_backend_name())
}

/// `snapstack@<backend>#<backend>`: the pool, as volumes show it.
pub(crate) fn pool_name(s: &AppState) -> String {
    let backend = s.cloud.volume_backend_name();
    format!("{HOST}@{backend}#{backend}")
}

fn storage_protocol(s: &AppState) -> &'static str {
    s.cloud.storage_protocol()
}

fn admin(caller: &Caller, project: &str, what: &str) -> Result<(), Error> {
    check_project(caller, project)?;
    caller.require(Role::Admin, what)
}

/// (binary, host) of each service.
fn service_list(s: &AppState) -> Vec<(&'static str, String)> {
    vec![
        ("cinder-scheduler", HOST.to_string()),
        ("cinder-volume", backend_host(s)),
    ]
}

#[derive(Deserialize, Default)]
struct ServiceQuery {
    host: Option<String>,
    binary: Option<String>,
}

/// A host filter matches `snapstack` and `snapstack@…` alike (Cinder
/// compares the part before `@` when no backend is given).
fn host_matches(filter: &str, host: &str) -> bool {
    filter == host || (!filter.contains('@') && host.split('@').next() == Some(filter))
}

async fn services(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: VolumeVersion,
    Path(project): Path<String>,
    Query(q): Query<ServiceQuery>,
) -> NovaResult<Json<Value>> {
    admin(&caller, &project, "list volume services")?;
    let now = timestamp(chrono::Utc::now());
    let shown: Vec<Value> = service_list(&s)
        .into_iter()
        .filter(|(b, h)| {
            q.binary.as_deref().is_none_or(|f| f == *b)
                && q.host.as_deref().is_none_or(|f| host_matches(f, h))
        })
        .map(|(binary, host)| {
            let mut out = json!({
                "binary": binary, "host": host, "zone": "nova",
                "status": "enabled", "state": "up", "updated_at": now,
                "disabled_reason": null, "frozen": false,
            });
            if binary == "cinder-volume" {
                out["replication_status"] = json!("disabled");
                out["active_backend_id"] = Value::Null;
                if v.at_least(49) {
                    out["backend_state"] = json!("up");
                }
            }
            if v.at_least(7) {
                out["cluster"] = Value::Null;
            }
            out
        })
        .collect();
    Ok(Json(json!({"services": shown})))
}

/// `PUT os-services/{enable|disable|disable-log-reason|freeze|thaw|failover_host}`.
async fn service_action(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, action)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    admin(&caller, &project, "change volume services")?;
    let host = body.get("host").and_then(Value::as_str);
    let binary = body.get("binary").and_then(Value::as_str);
    let known_host = |h: &str| service_list(&s).iter().any(|(_, sh)| host_matches(h, sh));
    match action.as_str() {
        "enable" | "disable" | "disable-log-reason" => {
            let host = host.ok_or_else(|| Error::invalid("Missing required element 'host'."))?;
            let binary =
                binary.ok_or_else(|| Error::invalid("Missing required element 'binary'."))?;
            if action == "disable-log-reason"
                && body
                    .get("disabled_reason")
                    .and_then(Value::as_str)
                    .is_none_or(|r| r.trim().is_empty())
            {
                return Err(
                    Error::invalid("Invalid input received: disabled_reason is required.").into(),
                );
            }
            if !service_list(&s)
                .iter()
                .any(|(b, h)| *b == binary && host_matches(host, h))
            {
                return Err(Error::not_found("Service", format!("{binary} on host {host}")).into());
            }
            Err(Error::invalid(
                "Invalid input received: Snapstack's volume services run in the serving process and cannot be disabled.",
            )
            .into())
        }
        "freeze" | "thaw" | "failover_host" | "failover" => {
            let host = host.ok_or_else(|| Error::invalid("Missing required element 'host'."))?;
            if !known_host(host) {
                return Err(Error::invalid(format!(
                    "Invalid input received: Invalid host {host}."
                ))
                .into());
            }
            Err(Error::invalid(format!(
                "Invalid input received: Snapstack's backend has no replication: it cannot {action}."
            ))
            .into())
        }
        other => Err(Error::not_found("Service action", other).into()),
    }
}

async fn hosts(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(project): Path<String>,
) -> NovaResult<Json<Value>> {
    admin(&caller, &project, "list volume hosts")?;
    let now = timestamp(chrono::Utc::now());
    let shown: Vec<Value> = service_list(&s)
        .into_iter()
        .map(|(binary, host)| {
            json!({
                "service": binary, "host_name": host, "zone": "nova",
                "service-status": "available", "service-state": "enabled",
                "last-update": now,
            })
        })
        .collect();
    Ok(Json(json!({"hosts": shown})))
}

/// `GET os-hosts/{host}`: the volume usage on the volume host, in total
/// and per project (Cinder's shape: counts as strings).
async fn host(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, host)): Path<(String, String)>,
) -> NovaResult<Json<Value>> {
    admin(&caller, &project, "show volume hosts")?;
    if host != backend_host(&s) {
        return Err(Error::not_found("Host", &host).into());
    }
    let volumes = s.cloud.volumes(&caller, true).await?;
    let snapshots = s.cloud.volume_snapshots(&caller, true).await?;
    let mut per_project: std::collections::BTreeMap<String, [u64; 4]> = Default::default();
    for v in &volumes {
        let e = per_project.entry(v.project_id.to_string()).or_default();
        e[0] += 1;
        e[1] += v.size;
    }
    for sn in &snapshots {
        let e = per_project.entry(sn.project_id.to_string()).or_default();
        e[2] += 1;
        e[3] += sn.size;
    }
    let total = per_project.values().fold([0u64; 4], |mut t, e| {
        for (a, b) in t.iter_mut().zip(e) {
            *a += b;
        }
        t
    });
    let resource = |project: &str, c: &[u64; 4]| {
        json!({"resource": {
            "host": host, "project": project,
            "volume_count": c[0].to_string(), "total_volume_gb": c[1].to_string(),
            "snapshot_count": c[2].to_string(), "total_snapshot_gb": c[3].to_string(),
        }})
    };
    let mut shown = vec![resource("(total)", &total)];
    shown.extend(per_project.iter().map(|(p, c)| resource(p, c)));
    Ok(Json(json!({"host": shown})))
}

#[derive(Deserialize, Default)]
struct PoolQuery {
    detail: Option<String>,
}

async fn pools(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(project): Path<String>,
    Query(q): Query<PoolQuery>,
) -> NovaResult<Json<Value>> {
    admin(&caller, &project, "list volume pools")?;
    let detail = super::flag(q.detail.as_ref().map(|d| json!(d)).as_ref(), "detail")?;
    let mut pool = json!({"name": pool_name(&s)});
    if detail {
        pool["capabilities"] = json!({
            "volume_backend_name": s.cloud.volume_backend_name(),
            "vendor_name": VENDOR,
            "driver_version": env!("CARGO_PKG_VERSION"),
            "storage_protocol": storage_protocol(&s),
            "total_capacity_gb": "unknown",
            "free_capacity_gb": "unknown",
            "reserved_percentage": 0,
            "QoS_support": false,
            "timestamp": timestamp(chrono::Utc::now()),
        });
    }
    Ok(Json(json!({"pools": [pool]})))
}

/// `GET capabilities/{host}`: the backend's stats and what its volume
/// types may ask for (no tunable properties).
async fn capabilities(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, host)): Path<(String, String)>,
) -> NovaResult<Json<Value>> {
    admin(&caller, &project, "show backend capabilities")?;
    let backend = backend_host(&s);
    if host != backend && host != pool_name(&s) {
        return Err(Error::not_found("Host", &host).into());
    }
    Ok(Json(json!({
        "namespace": format!("OS::Storage::Capabilities::{backend}"),
        "volume_backend_name": s.cloud.volume_backend_name(),
        "vendor_name": VENDOR,
        "driver_version": env!("CARGO_PKG_VERSION"),
        "storage_protocol": storage_protocol(&s),
        "pool_name": null,
        "description": null,
        "display_name": null,
        "visibility": null,
        "replication_targets": [],
        "properties": {},
    })))
}
