//! `/os-services` (admins): the Nova services this host plays (conductor,
//! scheduler, compute), all up. Ids are integers below 2.53, UUIDs from it;
//! `forced_down` from 2.11. Snapstack services cannot be disabled: an
//! update names no service (404) or is refused (400).

use axum::extract::{Path, Query};
use axum::routing::{get, put};
use axum::{Json, Router};
use domain::identity::{Caller, Role};
use domain::Error;
use serde_json::{json, Value};

use super::{Microversion, NovaResult};
use crate::auth::Auth;
use crate::json::JsonBody;
use crate::AppState;

const HOST: &str = "localhost";
/// (integer id, UUID, binary, zone).
const SERVICES: &[(u32, &str, &str, &str)] = &[
    (
        1,
        "3f1c2a5e-7d1e-4f5b-8a11-0c0ffee00001",
        "nova-conductor",
        "internal",
    ),
    (
        2,
        "3f1c2a5e-7d1e-4f5b-8a11-0c0ffee00002",
        "nova-scheduler",
        "internal",
    ),
    (
        3,
        "3f1c2a5e-7d1e-4f5b-8a11-0c0ffee00003",
        "nova-compute",
        "nova",
    ),
];

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/os-services", get(list))
        .route("/os-services/{id}", put(update).delete(delete))
}

fn view(service: &(u32, &str, &str, &str), v: Microversion) -> Value {
    let (n, uuid, binary, zone) = *service;
    let mut out = json!({
        "id": if v.at_least(53) { json!(uuid) } else { json!(n) },
        "binary": binary,
        "host": HOST,
        "zone": zone,
        "state": "up",
        "status": "enabled",
        "disabled_reason": null,
        "updated_at": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
    });
    if v.at_least(11) {
        out["forced_down"] = json!(false);
    }
    out
}

fn admin(caller: &Caller) -> Result<(), Error> {
    caller.require(Role::Admin, "manage services")
}

async fn list(
    Auth(caller): Auth,
    v: Microversion,
    Query(q): Query<std::collections::BTreeMap<String, String>>,
) -> NovaResult<Json<Value>> {
    admin(&caller)?;
    if v.at_least(75) {
        if let Some(extra) = q.keys().find(|k| *k != "host" && *k != "binary") {
            return Err(Error::invalid(format!(
                "Additional properties are not allowed ('{extra}' was unexpected)"
            ))
            .into());
        }
    }
    let shown: Vec<Value> = SERVICES
        .iter()
        .filter(|_| q.get("host").is_none_or(|h| h == HOST))
        .filter(|s| q.get("binary").is_none_or(|b| b == s.2))
        .map(|s| view(s, v))
        .collect();
    Ok(Json(json!({"services": shown})))
}

fn find(
    id: &str,
    v: Microversion,
) -> Result<&'static (u32, &'static str, &'static str, &'static str), Error> {
    SERVICES
        .iter()
        .find(|s| {
            if v.at_least(53) {
                s.1 == id
            } else {
                s.0.to_string() == id
            }
        })
        .ok_or_else(|| Error::not_found("Service", id))
}

async fn update(
    Auth(caller): Auth,
    v: Microversion,
    Path(id): Path<String>,
    JsonBody(_body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    admin(&caller)?;
    if !v.at_least(53) {
        // enable, disable, disable-log-reason, force-down by host and binary.
        return Err(Error::invalid("Snapstack services cannot be disabled or forced down.").into());
    }
    find(&id, v)?;
    Err(Error::invalid("Snapstack services cannot be disabled or forced down.").into())
}

async fn delete(
    Auth(caller): Auth,
    v: Microversion,
    Path(id): Path<String>,
) -> NovaResult<Json<Value>> {
    admin(&caller)?;
    find(&id, v)?;
    Err(Error::invalid("Snapstack services cannot be deleted.").into())
}
