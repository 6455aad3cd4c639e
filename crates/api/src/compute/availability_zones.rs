//! `/os-availability-zone` (and `/detail`, admins): the one zone, `nova`,
//! with this host's compute service in the detailed answer.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use domain::identity::Role;
use serde_json::{json, Value};

use super::NovaResult;
use crate::auth::Auth;
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/os-availability-zone", get(list))
        .route("/os-availability-zone/detail", get(detail))
}

async fn list(Auth(caller): Auth) -> NovaResult<Json<Value>> {
    caller.require(Role::Reader, "list availability zones")?;
    Ok(Json(json!({"availabilityZoneInfo": [
        {"zoneName": "nova", "zoneState": {"available": true}, "hosts": null}
    ]})))
}

async fn detail(State(_s): State<AppState>, Auth(caller): Auth) -> NovaResult<Json<Value>> {
    caller.require(Role::Admin, "list availability zones in detail")?;
    let service = json!({"available": true, "active": true, "updated_at": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f").to_string()});
    Ok(Json(json!({"availabilityZoneInfo": [
        {"zoneName": "internal", "zoneState": {"available": true}, "hosts": {"snapstack": {"nova-conductor": service, "nova-scheduler": service}}},
        {"zoneName": "nova", "zoneState": {"available": true}, "hosts": {"snapstack": {"nova-compute": service}}}
    ]})))
}
