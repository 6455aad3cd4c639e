//! `/v2.0/quotas/{project_id}` (with `/default` and `/details`): Neutron's limits of a
//! project (the defaults; they cannot be changed yet) and what it uses.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::NeutronResult;
use crate::auth::Auth;
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.0/quotas/{project}", get(show))
        .route("/v2.0/quotas/{project}/default", get(show))
        .route("/v2.0/quotas/{project}/details", get(details))
        .route("/v2.0/quotas/{project}/details.json", get(details))
}

async fn show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(project): Path<String>,
) -> NeutronResult<Json<Value>> {
    let quota: Map<String, Value> = s
        .cloud
        .network_quota(&caller, &project)
        .await?
        .into_iter()
        .map(|(resource, limit, _)| (resource.to_string(), json!(limit)))
        .collect();
    Ok(Json(json!({"quota": quota})))
}

async fn details(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(project): Path<String>,
) -> NeutronResult<Json<Value>> {
    let quota: Map<String, Value> = s
        .cloud
        .network_quota(&caller, &project)
        .await?
        .into_iter()
        .map(|(resource, limit, used)| {
            (
                resource.to_string(),
                json!({"limit": limit, "used": used, "reserved": 0}),
            )
        })
        .collect();
    Ok(Json(json!({"quota": quota})))
}
