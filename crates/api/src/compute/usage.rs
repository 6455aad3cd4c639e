//! `/os-simple-tenant-usage`: per project, the hours its servers ran in
//! [`start`, `end`] and the vCPU, memory and disk hours that make, from the
//! servers' records (a live server runs from its creation until now).

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, NaiveDateTime, Utc};
use domain::identity::Role;
use domain::server::{Server, VmState};
use domain::Error;
use serde::Deserialize;
use serde_json::{json, Value};

use super::NovaResult;
use crate::auth::Auth;
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/os-simple-tenant-usage", get(list))
        .route("/os-simple-tenant-usage/{project}", get(show))
}

#[derive(Deserialize, Default)]
struct UsageQuery {
    start: Option<String>,
    end: Option<String>,
    detailed: Option<String>,
}

fn parse_time(t: &str) -> Result<DateTime<Utc>, Error> {
    let t = t.trim_end_matches('Z');
    [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
    .map(|n| n.and_utc())
    .ok_or_else(|| Error::invalid(format!("Invalid time format: {t}")))
}

/// The period asked for: `start` (default: now) to `end` (default: now);
/// an end before the start is a 400.
fn period(q: &UsageQuery) -> Result<(DateTime<Utc>, DateTime<Utc>), Error> {
    let now = Utc::now();
    let start = q
        .start
        .as_deref()
        .map(parse_time)
        .transpose()?
        .unwrap_or(now);
    let end = q.end.as_deref().map(parse_time).transpose()?.unwrap_or(now);
    if end < start {
        return Err(Error::invalid(
            "Invalid start time. The start time cannot occur after the end time.",
        ));
    }
    Ok((start, end))
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

/// One project's usage (`detailed`: with each server's).
fn usage(
    project: &str,
    servers: &[&Server],
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    detailed: bool,
) -> Value {
    let now = Utc::now();
    let mut totals = (0.0, 0.0, 0.0, 0.0);
    let mut rows = Vec::new();
    for srv in servers {
        let from = srv.created_at.max(start);
        let to = now.min(end);
        let hours = if to > from {
            (to - from).num_seconds() as f64 / 3600.0
        } else {
            0.0
        };
        totals.0 += hours;
        totals.1 += hours * f64::from(srv.flavor.vcpus);
        totals.2 += hours * srv.flavor.ram as f64;
        totals.3 += hours * srv.flavor.disk as f64;
        rows.push(json!({
            "instance_id": srv.id.to_string(),
            "name": srv.name,
            "tenant_id": project,
            "flavor": srv.flavor.name,
            "hours": hours,
            "vcpus": srv.flavor.vcpus,
            "memory_mb": srv.flavor.ram,
            "local_gb": srv.flavor.disk,
            "started_at": stamp(srv.created_at),
            "ended_at": null,
            "state": srv.vm_state.as_str(),
            "uptime": (now - srv.created_at).num_seconds().max(0),
        }));
    }
    let mut out = json!({
        "tenant_id": project,
        "start": stamp(start),
        "stop": stamp(end),
        "total_hours": totals.0,
        "total_vcpus_usage": totals.1,
        "total_memory_mb_usage": totals.2,
        "total_local_gb_usage": totals.3,
    });
    if detailed {
        out["server_usages"] = json!(rows);
    }
    out
}

async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Query(q): Query<UsageQuery>,
) -> NovaResult<Json<Value>> {
    caller.require(Role::Admin, "list the usage of every project")?;
    let when = period(&q)?;
    let detailed = q
        .detailed
        .as_deref()
        .is_some_and(|d| d != "0" && !d.eq_ignore_ascii_case("false"));
    let servers = s.cloud.servers(&caller, true).await?;
    let mut projects: Vec<String> = servers
        .iter()
        .filter(|srv| srv.vm_state != VmState::Deleted)
        .map(|srv| srv.project_id.to_string())
        .collect();
    projects.sort();
    projects.dedup();
    let shown: Vec<Value> = projects
        .iter()
        .map(|p| {
            let mine: Vec<&Server> = servers
                .iter()
                .filter(|srv| srv.vm_state != VmState::Deleted && srv.project_id.to_string() == *p)
                .collect();
            usage(p, &mine, when, detailed)
        })
        .collect();
    Ok(Json(json!({"tenant_usages": shown})))
}

async fn show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(project): Path<String>,
    Query(q): Query<UsageQuery>,
) -> NovaResult<Json<Value>> {
    let own = caller.project_id.map(|p| p.to_string()) == Some(project.clone());
    if own {
        caller.require(Role::Reader, "read the project's usage")?;
    } else {
        caller.require(Role::Admin, "read another project's usage")?;
    }
    let when = period(&q)?;
    let servers = s.cloud.servers(&caller, caller.is_admin()).await?;
    let mine: Vec<&Server> = servers
        .iter()
        .filter(|srv| srv.vm_state != VmState::Deleted && srv.project_id.to_string() == project)
        .collect();
    Ok(Json(
        json!({"tenant_usage": usage(&project, &mine, when, true)}),
    ))
}
