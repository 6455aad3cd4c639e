//! `/{project_id}/messages` (3.3+): Cinder user messages.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use domain::volume_message::VolumeMessage;
use domain::Error;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{check_project, views::timestamp, VolumeVersion};
use crate::auth::Auth;
use crate::compute::NovaResult;
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/{project}/messages", get(list))
        .route("/{project}/messages/{id}", get(show).delete(delete))
}

fn view(s: &AppState, m: &VolumeMessage) -> Value {
    let (project, id) = (m.project_id.to_string(), m.id.to_string());
    json!({
        "id": id,
        "resource_type": m.resource_type,
        "resource_uuid": m.resource_uuid.map(|u| u.to_string()),
        "event_id": m.event_id,
        "message_level": m.message_level,
        "user_message": m.user_message,
        "request_id": m.request_id,
        "created_at": timestamp(m.created_at),
        "guaranteed_until": timestamp(m.expires_at),
        "links": [
            {"rel": "self", "href": s.url(&format!("/volume/v3/{project}/messages/{id}"))},
            {"rel": "bookmark", "href": s.url(&format!("/volume/{project}/messages/{id}"))},
        ],
    })
}

fn require_3_3(v: VolumeVersion) -> Result<(), Error> {
    if v.at_least(3) {
        Ok(())
    } else {
        Err(Error::not_found("API", "messages (3.3 and later)"))
    }
}

#[derive(Deserialize, Default)]
struct MessageQuery {
    all_tenants: Option<String>,
}

async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: VolumeVersion,
    Path(project): Path<String>,
    Query(q): Query<MessageQuery>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    require_3_3(v)?;
    let all = q
        .all_tenants
        .as_deref()
        .is_some_and(|v| !matches!(v, "0" | "false" | "False"));
    let shown: Vec<Value> = s
        .cloud
        .volume_messages(&caller, all)
        .await?
        .iter()
        .map(|m| view(&s, m))
        .collect();
    Ok(Json(json!({"messages": shown})))
}

async fn show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: VolumeVersion,
    Path((project, id)): Path<(String, String)>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    require_3_3(v)?;
    let m = s.cloud.volume_message(&caller, &id).await?;
    Ok(Json(json!({"message": view(&s, &m)})))
}

async fn delete(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: VolumeVersion,
    Path((project, id)): Path<(String, String)>,
) -> NovaResult<StatusCode> {
    check_project(&caller, &project)?;
    require_3_3(v)?;
    s.cloud.delete_volume_message(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
