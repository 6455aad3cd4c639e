//! `/os-hypervisors` (admins): this host, the one hypervisor. Ids are `1`
//! below 2.53 and a fixed UUID from 2.53 (where search and servers move to
//! query parameters); `cpu_info` is a string below 2.28, an object from it.

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
use crate::AppState;

/// The hypervisor's name, as servers show it (`OS-EXT-SRV-ATTR:hypervisor_hostname`).
const HOSTNAME: &str = "localhost";
const UUID: &str = "6a1f0d5e-5c1b-4e4b-9a43-5e2f0a1b0001";

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/os-hypervisors", get(list))
        .route("/os-hypervisors/detail", get(list_detail))
        .route("/os-hypervisors/statistics", get(statistics))
        .route("/os-hypervisors/{id}", get(show))
        .route("/os-hypervisors/{id}/uptime", get(uptime))
        .route("/os-hypervisors/{pattern}/search", get(search))
        .route("/os-hypervisors/{pattern}/servers", get(servers))
}

#[derive(Deserialize, Default)]
struct HypervisorQuery {
    hypervisor_hostname_pattern: Option<String>,
    with_servers: Option<String>,
}

fn id(v: Microversion) -> Value {
    if v.at_least(53) {
        json!(UUID)
    } else {
        json!(1)
    }
}

fn is_ours(given: &str, v: Microversion) -> bool {
    if v.at_least(53) {
        given == UUID
    } else {
        given == "1"
    }
}

/// Host memory in MiB, from /proc/meminfo.
fn memory_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}

fn host_uptime() -> String {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|u| u.split_whitespace().next().map(str::to_owned))
        .map(|secs| format!(" up {secs} s"))
        .unwrap_or_else(|| " up".into())
}

/// What the host holds: (servers as (id, name), vcpus used, MiB used, GiB used).
async fn usage(
    s: &AppState,
    caller: &Caller,
) -> Result<(Vec<(String, String)>, u64, u64, u64), Error> {
    let servers = s.cloud.servers(caller, true).await?;
    let live: Vec<_> = servers
        .iter()
        .filter(|srv| srv.vm_state != VmState::Deleted)
        .collect();
    let vcpus = live.iter().map(|srv| u64::from(srv.flavor.vcpus)).sum();
    let ram = live.iter().map(|srv| srv.flavor.ram).sum();
    let disk = live.iter().map(|srv| srv.flavor.disk).sum();
    let named = live
        .iter()
        .map(|srv| (srv.id.to_string(), srv.name.clone()))
        .collect();
    Ok((named, vcpus, ram, disk))
}

fn summary(v: Microversion) -> Value {
    json!({"id": id(v), "hypervisor_hostname": HOSTNAME, "state": "up", "status": "enabled"})
}

fn with_servers(mut out: Value, servers: &[(String, String)]) -> Value {
    out["servers"] = servers
        .iter()
        .map(|(uuid, name)| json!({"uuid": uuid, "name": name}))
        .collect();
    out
}

async fn detail(
    s: &AppState,
    caller: &Caller,
    v: Microversion,
) -> Result<(Value, Vec<(String, String)>), Error> {
    let (servers, vcpus_used, ram_used, disk_used) = usage(s, caller).await?;
    let vcpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let memory = memory_mb();
    let local_gb = 100u64.max(disk_used);
    let cpu_info = json!({"arch": std::env::consts::ARCH, "model": "qemu-tcg", "vendor": "QEMU", "topology": {"cores": vcpus, "threads": 1, "sockets": 1}, "features": []});
    let mut out = summary(v);
    let extra = json!({
        "cpu_info": if v.at_least(28) { cpu_info } else { json!(cpu_info.to_string()) },
        "current_workload": 0,
        "disk_available_least": local_gb - disk_used,
        "host_ip": "127.0.0.1",
        "free_disk_gb": local_gb - disk_used,
        "free_ram_mb": memory.saturating_sub(ram_used),
        "hypervisor_type": "QEMU",
        "hypervisor_version": 7002000,
        "local_gb": local_gb,
        "local_gb_used": disk_used,
        "memory_mb": memory,
        "memory_mb_used": ram_used,
        "running_vms": servers.len(),
        "service": {"host": HOSTNAME, "id": if v.at_least(53) { json!("6a1f0d5e-5c1b-4e4b-9a43-5e2f0a1b0002") } else { json!(1) }, "disabled_reason": null},
        "vcpus": vcpus,
        "vcpus_used": vcpus_used,
    });
    if let (Some(o), Some(e)) = (out.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    Ok((out, servers))
}

fn admin(caller: &Caller) -> Result<(), Error> {
    caller.require(Role::Admin, "read hypervisors")
}

fn pattern_matches(q: &HypervisorQuery) -> bool {
    q.hypervisor_hostname_pattern
        .as_deref()
        .is_none_or(|p| HOSTNAME.contains(p))
}

fn wants_servers(q: &HypervisorQuery) -> bool {
    q.with_servers
        .as_deref()
        .is_some_and(|w| matches!(w.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Query(q): Query<HypervisorQuery>,
) -> NovaResult<Json<Value>> {
    admin(&caller)?;
    if !pattern_matches(&q) {
        return Err(Error::not_found(
            "Hypervisor matching",
            q.hypervisor_hostname_pattern.unwrap_or_default(),
        )
        .into());
    }
    let mut one = summary(v);
    if v.at_least(53) && wants_servers(&q) {
        let (servers, ..) = usage(&s, &caller).await?;
        one = with_servers(one, &servers);
    }
    Ok(Json(json!({"hypervisors": [one]})))
}

async fn list_detail(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Query(q): Query<HypervisorQuery>,
) -> NovaResult<Json<Value>> {
    admin(&caller)?;
    let (mut one, servers) = detail(&s, &caller, v).await?;
    if v.at_least(53) && wants_servers(&q) {
        one = with_servers(one, &servers);
    }
    Ok(Json(json!({"hypervisors": [one]})))
}

async fn show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Path(given): Path<String>,
    Query(q): Query<HypervisorQuery>,
) -> NovaResult<Json<Value>> {
    admin(&caller)?;
    if !is_ours(&given, v) {
        return Err(Error::not_found("Hypervisor", given).into());
    }
    let (mut one, servers) = detail(&s, &caller, v).await?;
    if v.at_least(53) && wants_servers(&q) {
        one = with_servers(one, &servers);
    }
    Ok(Json(json!({"hypervisor": one})))
}

async fn uptime(
    Auth(caller): Auth,
    v: Microversion,
    Path(given): Path<String>,
) -> NovaResult<Json<Value>> {
    admin(&caller)?;
    if !is_ours(&given, v) {
        return Err(Error::not_found("Hypervisor", given).into());
    }
    let mut one = summary(v);
    one["uptime"] = json!(host_uptime());
    Ok(Json(json!({"hypervisor": one})))
}

async fn statistics(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
) -> NovaResult<Json<Value>> {
    admin(&caller)?;
    let (one, _) = detail(&s, &caller, v).await?;
    let keys = [
        "current_workload",
        "disk_available_least",
        "free_disk_gb",
        "free_ram_mb",
        "local_gb",
        "local_gb_used",
        "memory_mb",
        "memory_mb_used",
        "running_vms",
        "vcpus",
        "vcpus_used",
    ];
    let mut stats = json!({"count": 1});
    for k in keys {
        stats[k] = one[k].clone();
    }
    Ok(Json(json!({"hypervisor_statistics": stats})))
}

/// Below 2.53: hypervisors whose name contains `pattern`.
async fn search(
    Auth(caller): Auth,
    v: Microversion,
    Path(pattern): Path<String>,
) -> NovaResult<Json<Value>> {
    admin(&caller)?;
    if v.at_least(53) || !HOSTNAME.contains(pattern.as_str()) {
        return Err(Error::not_found("Hypervisor matching", pattern).into());
    }
    Ok(Json(json!({"hypervisors": [summary(v)]})))
}

/// Below 2.53: the matching hypervisors with their servers.
async fn servers(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Path(pattern): Path<String>,
) -> NovaResult<Json<Value>> {
    admin(&caller)?;
    if v.at_least(53) || !HOSTNAME.contains(pattern.as_str()) {
        return Err(Error::not_found("Hypervisor matching", pattern).into());
    }
    let (servers, ..) = usage(&s, &caller).await?;
    Ok(Json(
        json!({"hypervisors": [with_servers(summary(v), &servers)]}),
    ))
}
