//! `/servers/{id}/restore-points`: Snapstack's own API beside Nova's for
//! libvirt-style restore points (docs/restore-points.openapi.yaml). Thin:
//! parse, call `cloud`, convert; errors in Nova's shape.
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | `/servers/{id}/restore-points` | the tree: points with parent, children, current |
//! | POST | `/servers/{id}/restore-points` | create (202, point `creating`) |
//! | GET | `/servers/{id}/restore-points/{pid}` | one point |
//! | POST | `/servers/{id}/restore-points/{pid}/action` | `{"revert": {}}` (202) |
//! | DELETE | `/servers/{id}/restore-points/{pid}` | delete (204 when done) |

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cloud::restore_points::PointView;
use domain::restore_point::{NewRestorePoint, RestoreMethod, RestorePoint};
use domain::Error;
use serde_json::{json, Map, Value};

use super::NovaResult;
use crate::auth::Auth;
use crate::json::JsonBody;
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/servers/{id}/restore-points", get(list).post(create))
        .route(
            "/servers/{id}/restore-points/{point}",
            get(show).delete(delete),
        )
        .route("/servers/{id}/restore-points/{point}/action", post(action))
}

/// The JSON form of a point in the tree.
fn view(v: &PointView) -> Value {
    let p = &v.point;
    let mut out = point_json(p);
    out["children"] = json!(v.children.iter().map(|c| c.to_string()).collect::<Vec<_>>());
    out["current"] = json!(v.is_current);
    if v.broken {
        out["status"] = json!("broken");
    }
    out
}

fn point_json(p: &RestorePoint) -> Value {
    json!({
        "id": p.id.to_string(),
        "name": p.name,
        "server_id": p.server_id.to_string(),
        "parent_id": p.parent_id.map(|i| i.to_string()),
        "status": p.status.as_str(),
        "method": p.method.as_str(),
        "memory": p.memory,
        "quiesced": p.quiesced,
        "vm_state": p.vm_state.as_str(),
        "guest_pause_ms": p.guest_pause_us.map(|us| us as f64 / 1000.0),
        "created_at": p.created_at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        "updated_at": p.updated_at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
    })
}

/// Parses `{"restore_point": {"name", "memory"?, "method"?, "quiesce"?}}`.
fn parse_create(body: &Value) -> Result<NewRestorePoint, Error> {
    let obj = body
        .get("restore_point")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::invalid("'restore_point' is a required object."))?;
    if let Some(extra) = obj
        .keys()
        .find(|k| !["name", "memory", "method", "quiesce"].contains(&k.as_str()))
    {
        return Err(Error::invalid(format!(
            "Additional properties are not allowed ('{extra}' was unexpected)."
        )));
    }
    let name = match obj.get("name") {
        Some(Value::String(n)) => n.clone(),
        _ => return Err(Error::invalid("'name' is a required string.")),
    };
    let flag = |key: &str| match obj.get(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(Error::invalid(format!("'{key}' must be a boolean."))),
    };
    let method = match obj.get("method") {
        None => RestoreMethod::External,
        Some(Value::String(m)) => RestoreMethod::parse(m)?,
        Some(_) => return Err(Error::invalid("'method' must be a string.")),
    };
    Ok(NewRestorePoint {
        name,
        memory: flag("memory")?,
        method,
        quiesce: flag("quiesce")?,
    })
}

async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> NovaResult<Json<Value>> {
    let tree = s.cloud.restore_points(&caller, &id).await?;
    Ok(Json(json!({
        "restore_points": tree.points.iter().map(view).collect::<Vec<_>>(),
        "current": tree.current.map(|c| c.to_string()),
    })))
}

async fn create(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Response> {
    let new = parse_create(&body)?;
    let point = s.cloud.create_restore_point(&caller, &id, new).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"restore_point": point_json(&point)})),
    )
        .into_response())
}

async fn show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((id, point)): Path<(String, String)>,
) -> NovaResult<Json<Value>> {
    let v = s.cloud.restore_point(&caller, &id, &point).await?;
    Ok(Json(json!({"restore_point": view(&v)})))
}

async fn action(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((id, point)): Path<(String, String)>,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> NovaResult<StatusCode> {
    match body.keys().map(String::as_str).collect::<Vec<_>>()[..] {
        ["revert"] => {
            s.cloud
                .revert_to_restore_point(&caller, &id, &point)
                .await?;
            Ok(StatusCode::ACCEPTED)
        }
        _ => Err(Error::invalid("The action body must be {\"revert\": {}}.").into()),
    }
}

async fn delete(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((id, point)): Path<(String, String)>,
) -> NovaResult<StatusCode> {
    s.cloud.delete_restore_point(&caller, &id, &point).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_create_when_only_name_then_external_disk_only() {
        let body = json!({"restore_point": {"name": "a"}});

        let new = parse_create(&body).unwrap();

        assert_eq!(new.method, RestoreMethod::External);
        assert!(!new.memory && !new.quiesce);
    }

    #[test]
    fn parse_create_when_memory_not_boolean_then_invalid() {
        let body = json!({"restore_point": {"name": "a", "memory": "yes"}});

        let err = parse_create(&body).unwrap_err();

        assert_eq!(err.kind(), domain::ErrorKind::InvalidInput);
    }

    #[test]
    fn parse_create_when_unknown_key_then_invalid() {
        let body = json!({"restore_point": {"name": "a", "live": true}});

        let err = parse_create(&body).unwrap_err();

        assert_eq!(err.kind(), domain::ErrorKind::InvalidInput);
    }
}
