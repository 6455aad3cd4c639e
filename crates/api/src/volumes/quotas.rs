//! `/{project}/os-quota-sets`, `/{project}/os-quota-class-sets` and
//! `/{project}/limits` (Cinder shapes). Over a limit, creates answer 413.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use cloud::quotas::Service;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{check_project, flag};
use crate::auth::Auth;
use crate::compute::quotas::requested_limits;
use crate::compute::NovaResult;
use crate::json::JsonBody;
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/{project}/os-quota-sets/{target}",
            get(show).put(update).delete(reset),
        )
        .route("/{project}/os-quota-sets/{target}/defaults", get(defaults))
        .route(
            "/{project}/os-quota-class-sets/{class}",
            get(show_class).put(update_class),
        )
        .route("/{project}/limits", get(limits))
}

#[derive(Deserialize, Default)]
struct UsageQuery {
    usage: Option<String>,
}

#[derive(Serialize)]
struct UsageView {
    limit: i64,
    in_use: i64,
    reserved: i64,
    allocated: i64,
}

fn with_id<T: Serialize>(id: Option<&str>, items: BTreeMap<String, T>) -> Map<String, Value> {
    let mut set: Map<String, Value> = items
        .into_iter()
        .map(|(k, x)| (k, serde_json::to_value(x).unwrap_or(Value::Null)))
        .collect();
    if let Some(id) = id {
        set.insert("id".into(), Value::String(id.into()));
    }
    set
}

async fn show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, target)): Path<(String, String)>,
    Query(q): Query<UsageQuery>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let usage = flag(q.usage.map(Value::String).as_ref(), "usage")?;
    if !usage {
        let limits = s
            .cloud
            .quota_limits(&caller, Service::Volume, &target)
            .await?;
        return Ok(Json(json!({"quota_set": with_id(Some(&target), limits)})));
    }
    let details = s
        .cloud
        .quota_details(&caller, Service::Volume, &target)
        .await?;
    let views = details
        .into_iter()
        .map(|(k, d)| {
            let view = UsageView {
                limit: d.limit,
                in_use: d.in_use,
                reserved: d.reserved,
                allocated: 0,
            };
            (k, view)
        })
        .collect();
    Ok(Json(json!({"quota_set": with_id(Some(&target), views)})))
}

async fn defaults(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, target)): Path<(String, String)>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let limits = s
        .cloud
        .quota_class(&caller, Service::Volume, "default")
        .await?;
    Ok(Json(json!({"quota_set": with_id(Some(&target), limits)})))
}

async fn update(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, target)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let changes = requested_limits(&body, "quota_set")?;
    let limits = s
        .cloud
        .update_quotas(&caller, Service::Volume, &target, changes, true)
        .await?;
    Ok(Json(json!({"quota_set": with_id(None, limits)})))
}

async fn reset(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, target)): Path<(String, String)>,
) -> NovaResult<StatusCode> {
    check_project(&caller, &project)?;
    s.cloud
        .reset_quotas(&caller, Service::Volume, &target)
        .await?;
    // Cinder answers 200 with no body.
    Ok(StatusCode::OK)
}

async fn show_class(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, class)): Path<(String, String)>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let limits = s
        .cloud
        .quota_class(&caller, Service::Volume, &class)
        .await?;
    Ok(Json(
        json!({"quota_class_set": with_id(Some(&class), limits)}),
    ))
}

async fn update_class(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, class)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let changes = requested_limits(&body, "quota_class_set")?;
    let limits = s
        .cloud
        .update_quota_class(&caller, Service::Volume, &class, changes)
        .await?;
    Ok(Json(json!({"quota_class_set": with_id(None, limits)})))
}

/// `GET /limits`: Cinder's absolute limits of the caller's project.
async fn limits(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(project): Path<String>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let own = caller.project()?.to_string();
    let d = s
        .cloud
        .quota_details(&caller, Service::Volume, &own)
        .await?;
    let limit = |k: &str| d.get(k).map_or(-1, |x| x.limit);
    let used = |k: &str| d.get(k).map_or(0, |x| x.in_use);
    let absolute: BTreeMap<&str, i64> = BTreeMap::from([
        ("maxTotalVolumes", limit("volumes")),
        ("maxTotalSnapshots", limit("snapshots")),
        ("maxTotalVolumeGigabytes", limit("gigabytes")),
        ("maxTotalBackups", limit("backups")),
        ("maxTotalBackupGigabytes", limit("backup_gigabytes")),
        ("totalVolumesUsed", used("volumes")),
        ("totalSnapshotsUsed", used("snapshots")),
        ("totalGigabytesUsed", used("gigabytes")),
        ("totalBackupsUsed", 0),
        ("totalBackupGigabytesUsed", 0),
    ]);
    Ok(Json(json!({"limits": {"rate": [], "absolute": absolute}})))
}
