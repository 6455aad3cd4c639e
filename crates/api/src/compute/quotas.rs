//! `/os-quota-sets`, `/os-quota-class-sets` and `/limits` (Nova shapes).
//!
//! The keys follow the microversion: from 2.36 the network quotas
//! (`fixed_ips`, `floating_ips`, `security_group*`) are gone, from 2.57 the
//! `injected_file*` ones; `/limits` drops the matching `max*` entries (and
//! `maxImageMeta` from 2.39).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use cloud::quotas::{QuotaDetail, Service};
use domain::Error;
use serde::Serialize;
use serde_json::{Map, Value};

use super::{Microversion, NovaResult};
use crate::auth::Auth;
use crate::json::JsonBody;
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/os-quota-sets/{project}",
            get(show).put(update).delete(reset),
        )
        .route("/os-quota-sets/{project}/detail", get(detail))
        .route("/os-quota-sets/{project}/defaults", get(defaults))
        .route(
            "/os-quota-class-sets/{class}",
            get(show_class).put(update_class),
        )
        .route("/limits", get(limits))
}

const NETWORK_KEYS: &[&str] = &[
    "fixed_ips",
    "floating_ips",
    "security_groups",
    "security_group_rules",
];
const INJECTED_KEYS: &[&str] = &[
    "injected_files",
    "injected_file_content_bytes",
    "injected_file_path_bytes",
];

/// Whether `key` is shown at microversion `v`.
fn shown(v: Microversion, key: &str) -> bool {
    !(v.at_least(36) && NETWORK_KEYS.contains(&key)
        || v.at_least(57) && INJECTED_KEYS.contains(&key))
}

fn quota_set<T: Serialize>(
    v: Microversion,
    id: Option<&str>,
    items: BTreeMap<String, T>,
) -> Map<String, Value> {
    let mut set: Map<String, Value> = items
        .into_iter()
        .filter(|(k, _)| shown(v, k))
        .map(|(k, x)| (k, serde_json::to_value(x).unwrap_or(Value::Null)))
        .collect();
    if let Some(id) = id {
        set.insert("id".into(), Value::String(id.into()));
    }
    set
}

fn wrap(key: &str, set: Map<String, Value>) -> Json<Value> {
    let mut body = Map::new();
    body.insert(key.into(), Value::Object(set));
    Json(Value::Object(body))
}

#[derive(Serialize)]
struct DetailView {
    in_use: i64,
    limit: i64,
    reserved: i64,
}

impl From<QuotaDetail> for DetailView {
    fn from(d: QuotaDetail) -> Self {
        DetailView {
            in_use: d.in_use,
            limit: d.limit,
            reserved: d.reserved,
        }
    }
}

/// Nova's `force` in a quota-set update (oslo's `bool_from_string`: a JSON
/// boolean or `true`/`1`/`yes`/`on`/`y`/`t`, any case); absent: false.
pub(crate) fn forced(body: &Value, key: &str) -> bool {
    match body.get(key).and_then(|q| q.get("force")) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "true" | "1" | "yes" | "on" | "y" | "t"
        ),
        Some(Value::Number(n)) => n.as_i64() == Some(1),
        _ => false,
    }
}

/// The limits a PUT body asks for (`force` is read by [`forced`]).
pub(crate) fn requested_limits(body: &Value, key: &str) -> Result<BTreeMap<String, i64>, Error> {
    let obj = body.get(key).and_then(Value::as_object).ok_or_else(|| {
        Error::invalid(format!("Missing required element '{key}' in request body."))
    })?;
    obj.iter()
        .filter(|(k, _)| !matches!(k.as_str(), "force" | "id" | "tenant_id"))
        .map(|(k, v)| {
            let n = match v {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            };
            n.map(|n| (k.clone(), n)).ok_or_else(|| {
                Error::invalid(format!(
                    "Invalid input for field/attribute {k}. Value: {v}. {v} is not of type 'integer'"
                ))
            })
        })
        .collect()
}

async fn show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Path(project): Path<String>,
) -> NovaResult<Json<Value>> {
    let limits = s
        .cloud
        .quota_limits(&caller, Service::Compute, &project)
        .await?;
    Ok(wrap("quota_set", quota_set(v, Some(&project), limits)))
}

async fn detail(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Path(project): Path<String>,
) -> NovaResult<Json<Value>> {
    let details = s
        .cloud
        .quota_details(&caller, Service::Compute, &project)
        .await?;
    let views = details
        .into_iter()
        .map(|(k, d)| (k, DetailView::from(d)))
        .collect();
    Ok(wrap("quota_set", quota_set(v, Some(&project), views)))
}

async fn defaults(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Path(project): Path<String>,
) -> NovaResult<Json<Value>> {
    let limits = s
        .cloud
        .quota_class(&caller, Service::Compute, "default")
        .await?;
    Ok(wrap("quota_set", quota_set(v, Some(&project), limits)))
}

async fn update(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Path(project): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    let changes = requested_limits(&body, "quota_set")?;
    let force = forced(&body, "quota_set");
    let limits = s
        .cloud
        .update_quotas(&caller, Service::Compute, &project, changes, force)
        .await?;
    Ok(wrap("quota_set", quota_set(v, None, limits)))
}

async fn reset(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(project): Path<String>,
) -> NovaResult<StatusCode> {
    s.cloud
        .reset_quotas(&caller, Service::Compute, &project)
        .await?;
    Ok(StatusCode::ACCEPTED)
}

async fn show_class(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Path(class): Path<String>,
) -> NovaResult<Json<Value>> {
    let limits = s
        .cloud
        .quota_class(&caller, Service::Compute, &class)
        .await?;
    Ok(wrap("quota_class_set", quota_set(v, Some(&class), limits)))
}

async fn update_class(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Path(class): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    let changes = requested_limits(&body, "quota_class_set")?;
    let limits = s
        .cloud
        .update_quota_class(&caller, Service::Compute, &class, changes)
        .await?;
    Ok(wrap("quota_class_set", quota_set(v, None, limits)))
}

/// `GET /limits`: Nova's absolute limits of the caller's project.
async fn limits(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
) -> NovaResult<Json<Value>> {
    let project = caller.project()?.to_string();
    let d = s
        .cloud
        .quota_details(&caller, Service::Compute, &project)
        .await?;
    let limit = |k: &str| d.get(k).map_or(-1, |x| x.limit);
    let used = |k: &str| d.get(k).map_or(0, |x| x.in_use);
    let mut abs: BTreeMap<&str, i64> = BTreeMap::from([
        ("maxTotalInstances", limit("instances")),
        ("maxTotalCores", limit("cores")),
        ("maxTotalRAMSize", limit("ram")),
        ("maxServerMeta", limit("metadata_items")),
        ("maxTotalKeypairs", limit("key_pairs")),
        ("maxServerGroups", limit("server_groups")),
        ("maxServerGroupMembers", limit("server_group_members")),
        ("totalInstancesUsed", used("instances")),
        ("totalCoresUsed", used("cores")),
        ("totalRAMUsed", used("ram")),
        ("totalServerGroupsUsed", 0),
    ]);
    if !v.at_least(36) {
        abs.extend([
            ("maxTotalFloatingIps", limit("floating_ips")),
            ("totalFloatingIpsUsed", 0),
            ("maxSecurityGroups", limit("security_groups")),
            ("totalSecurityGroupsUsed", 0),
            ("maxSecurityGroupRules", limit("security_group_rules")),
        ]);
    }
    if !v.at_least(39) {
        abs.insert("maxImageMeta", limit("metadata_items"));
    }
    if !v.at_least(57) {
        abs.extend([
            ("maxPersonality", limit("injected_files")),
            ("maxPersonalitySize", limit("injected_file_content_bytes")),
        ]);
    }
    Ok(Json(
        serde_json::json!({"limits": {"rate": [], "absolute": abs}}),
    ))
}
