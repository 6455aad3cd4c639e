//! `/v2/info/import` and `/v2/tasks`: Snapstack offers no image import
//! (no staging area, no import from a URL), so the import methods are none
//! and an import task is refused when it is created (400), as a Glance
//! with import disabled answers. No task is ever recorded, so listing
//! shows none and any task id is a 404.

use axum::extract::Path;
use axum::routing::get;
use axum::{Json, Router};
use domain::identity::Role;
use domain::Error;
use serde_json::{json, Value};

use crate::auth::Auth;
use crate::error::ApiResult;
use crate::json::JsonBody;
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/info/import", get(import_info))
        .route("/tasks", get(list_tasks).post(create_task))
        .route("/tasks/{id}", get(show_task))
        .route("/schemas/task", get(task_schema))
        .route("/schemas/tasks", get(tasks_schema))
}

async fn import_info(Auth(caller): Auth) -> ApiResult<Json<Value>> {
    caller.require(Role::Reader, "read import information")?;
    Ok(Json(json!({"import-methods": {
        "description": "Import methods available.",
        "type": "array",
        "value": [],
    }})))
}

async fn list_tasks(Auth(caller): Auth) -> ApiResult<Json<Value>> {
    caller.require(Role::Reader, "list tasks")?;
    Ok(Json(json!({
        "tasks": [], "first": "/v2/tasks", "schema": "/v2/schemas/tasks",
    })))
}

async fn create_task(
    Auth(caller): Auth,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Admin, "create tasks")?;
    match body.get("type").and_then(Value::as_str) {
        Some("import") => Err(Error::invalid(
            "Import from a URI is not supported here: Snapstack has no image import; create the image and upload its data (PUT /v2/images/{id}/file).",
        )
        .into()),
        Some(other) => Err(Error::invalid(format!("Invalid type value: {other}")).into()),
        None => Err(Error::invalid("Task type is required.").into()),
    }
}

async fn show_task(Auth(caller): Auth, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    caller.require(Role::Reader, "read tasks")?;
    Err(Error::not_found("Task", id).into())
}

fn task_schema_value() -> Value {
    let string = json!({"type": "string"});
    json!({
        "name": "task",
        "properties": {
            "id": string, "type": {"type": "string", "enum": ["import", "api_image_import", "location_import"]},
            "status": {"type": "string", "enum": ["pending", "processing", "success", "failure"]},
            "input": {"type": ["null", "object"]}, "result": {"type": ["null", "object"]},
            "owner": string, "message": string, "image_id": string, "request_id": string, "user_id": string,
            "expires_at": {"type": ["null", "string"]}, "created_at": string, "updated_at": string,
            "self": string, "schema": string,
        },
        "required": ["type", "input"],
    })
}

async fn task_schema() -> Json<Value> {
    Json(task_schema_value())
}

async fn tasks_schema() -> Json<Value> {
    Json(json!({
        "name": "tasks",
        "properties": {"tasks": {"type": "array", "items": task_schema_value()},
                       "schema": {"type": "string"}, "first": {"type": "string"}, "next": {"type": "string"}},
        "links": [{"rel": "first", "href": "{first}"}, {"rel": "next", "href": "{next}"}, {"rel": "describedby", "href": "{schema}"}],
    }))
}
