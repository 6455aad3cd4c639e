//! Two admin APIs of Nova's that Snapstack answers from what it has:
//! `/os-instance_usage_audit_log` (Nova's periodic usage audit, which this
//! host never runs: every report says so) and `/os-server-external-events`
//! (events other services send about servers; accepted per known server,
//! nothing here acts on them).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{NaiveDateTime, Utc};
use domain::identity::Role;
use domain::Error;
use serde_json::{json, Value};

use super::NovaResult;
use crate::auth::Auth;
use crate::json::JsonBody;
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/os-instance_usage_audit_log", get(audit_logs))
        .route("/os-instance_usage_audit_log/{before}", get(audit_log))
        .route("/os-server-external-events", post(external_events))
}

/// The audit period ending at `before` (Nova's: the month before it),
/// under `key` (the list's plural, the show's singular).
fn audit_report(key: &str, before: NaiveDateTime) -> Value {
    let end = before.format("%Y-%m-%d %H:%M:%S").to_string();
    let begin = (before - chrono::Duration::days(30))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    json!({key: {
        "hosts_not_run": ["localhost"],
        "log": {},
        "num_hosts": 1,
        "num_hosts_done": 0,
        "num_hosts_not_run": 1,
        "num_hosts_running": 0,
        "overall_status": "0 of 1 hosts done. 0 errors.",
        "period_beginning": begin,
        "period_ending": end,
        "total_errors": 0,
        "total_instances": 0,
    }})
}

async fn audit_logs(Auth(caller): Auth) -> NovaResult<Json<Value>> {
    caller.require(Role::Admin, "read the usage audit log")?;
    Ok(Json(audit_report(
        "instance_usage_audit_logs",
        Utc::now().naive_utc(),
    )))
}

async fn audit_log(Auth(caller): Auth, Path(before): Path<String>) -> NovaResult<Json<Value>> {
    caller.require(Role::Admin, "read the usage audit log")?;
    let at = [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(&before, f).ok())
    .ok_or_else(|| Error::invalid(format!("Invalid timestamp for date {before}")))?;
    Ok(Json(audit_report("instance_usage_audit_log", at)))
}

const EVENT_NAMES: &[&str] = &[
    "network-changed",
    "network-vif-plugged",
    "network-vif-unplugged",
    "network-vif-deleted",
    "volume-extended",
    "power-update",
    "accelerator-request-bound",
    "volume-reimaged",
];

async fn external_events(
    State(s): State<AppState>,
    Auth(caller): Auth,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Response> {
    caller.require(Role::Admin, "send server external events")?;
    let events = body
        .get("events")
        .and_then(Value::as_array)
        .filter(|e| !e.is_empty())
        .ok_or_else(|| Error::invalid("'events' must be a non-empty list."))?;
    let mut answered = Vec::with_capacity(events.len());
    let mut all_ok = true;
    for event in events {
        let name = event
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !EVENT_NAMES.contains(&name) {
            return Err(Error::invalid(format!("'{name}' is not a known event name.")).into());
        }
        let server_uuid = event
            .get("server_uuid")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::invalid("'server_uuid' is a required property."))?;
        let known = s.cloud.server(&caller, server_uuid).await.is_ok();
        all_ok &= known;
        let mut out = event.clone();
        out["status"] = json!(if known { "completed" } else { "failed" });
        out["code"] = json!(if known { 200 } else { 404 });
        answered.push(out);
    }
    if answered.iter().all(|e| e["code"] == 404) {
        return Err(Error::not_found("No instances found for any event", "").into());
    }
    let status = if all_ok {
        StatusCode::OK
    } else {
        StatusCode::MULTI_STATUS
    };
    Ok((status, Json(json!({"events": answered}))).into_response())
}
