//! `/v3/system/users/{u}/roles[/{r}]`: role assignments on the system scope.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use domain::Error;
use serde_json::Value;

use super::{list_view, role_view};
use crate::auth::Auth;
use crate::error::ApiResult;
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/system/users/{u}/roles", get(list))
        .route(
            "/system/users/{u}/roles/{r}",
            put(assign).delete(unassign).head(check).get(check),
        )
}

async fn assign(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((u, r)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    s.cloud.assign_system_role(&caller, &u, &r).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unassign(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((u, r)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    s.cloud.unassign_system_role(&caller, &u, &r).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn check(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((u, r)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    if s.cloud.has_system_role(&caller, &u, &r).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::not_found("role assignment", format!("{r} of user {u} on the system")).into())
    }
}

async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(u): Path<String>,
) -> ApiResult<Json<Value>> {
    let roles = s.cloud.system_roles(&caller, &u).await?;
    Ok(list_view(
        &s,
        "roles",
        &format!("/identity/v3/system/users/{u}/roles"),
        roles.iter().map(|r| role_view(&s, r)).collect(),
    ))
}
