//! `/{project_id}/qos-specs`: Cinder QoS specs and their association with
//! volume types (admins only).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use domain::volume_type::QosSpecs;
use domain::Error;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{check_project, flag, object, opt_text, string_map};
use crate::auth::Auth;
use crate::compute::NovaResult;
use crate::json::JsonBody;
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/{project}/qos-specs", get(list).post(create))
        .route(
            "/{project}/qos-specs/{id}",
            get(show).put(set_keys).delete(delete),
        )
        .route("/{project}/qos-specs/{id}/delete_keys", put(unset_keys))
        .route("/{project}/qos-specs/{id}/associations", get(associations))
        .route("/{project}/qos-specs/{id}/associate", get(associate))
        .route("/{project}/qos-specs/{id}/disassociate", get(disassociate))
        .route(
            "/{project}/qos-specs/{id}/disassociate_all",
            get(disassociate_all),
        )
}

fn view(q: &QosSpecs) -> Value {
    json!({"id": q.id.to_string(), "name": q.name, "consumer": q.consumer, "specs": q.specs})
}

fn links(s: &AppState, project: &str, q: &QosSpecs) -> Value {
    let id = q.id.to_string();
    json!([
        {"rel": "self", "href": s.url(&format!("/volume/v3/{project}/qos-specs/{id}"))},
        {"rel": "bookmark", "href": s.url(&format!("/volume/{project}/qos-specs/{id}"))},
    ])
}

async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(project): Path<String>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let shown: Vec<Value> = s
        .cloud
        .all_qos_specs(&caller)
        .await?
        .iter()
        .map(view)
        .collect();
    Ok(Json(json!({"qos_specs": shown})))
}

async fn create(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(project): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let obj = object(&body, "qos_specs")?;
    let name = opt_text(obj, &["name"])?
        .flatten()
        .ok_or_else(|| Error::invalid("Invalid input received: a name is required."))?;
    let consumer = opt_text(obj, &["consumer"])?.flatten();
    let mut rest = obj.clone();
    rest.remove("name");
    rest.remove("consumer");
    let specs = string_map(Some(&Value::Object(rest)), "qos_specs")?.unwrap_or_default();
    let q = s
        .cloud
        .create_qos_specs(&caller, name, consumer, specs)
        .await?;
    Ok(Json(
        json!({"qos_specs": view(&q), "links": links(&s, &project, &q)}),
    ))
}

async fn show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, String)>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let q = s.cloud.qos_specs(&caller, &id).await?;
    Ok(Json(
        json!({"qos_specs": view(&q), "links": links(&s, &project, &q)}),
    ))
}

async fn set_keys(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    object(&body, "qos_specs")?;
    let given = string_map(body.get("qos_specs"), "qos_specs")?.unwrap_or_default();
    let set = s.cloud.set_qos_keys(&caller, &id, given).await?;
    Ok(Json(json!({"qos_specs": set})))
}

async fn unset_keys(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<StatusCode> {
    check_project(&caller, &project)?;
    let keys: Vec<String> = body
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::invalid("Invalid input received: 'keys' must be a list."))?
        .iter()
        .map(|k| k.as_str().map(str::to_owned))
        .collect::<Option<_>>()
        .ok_or_else(|| Error::invalid("Invalid input received: keys must be strings."))?;
    s.cloud.unset_qos_keys(&caller, &id, &keys).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize, Default)]
struct QosQuery {
    force: Option<String>,
    vol_type_id: Option<String>,
}

async fn delete(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, String)>,
    Query(q): Query<QosQuery>,
) -> NovaResult<StatusCode> {
    check_project(&caller, &project)?;
    let force = flag(q.force.as_ref().map(|f| json!(f)).as_ref(), "force")?;
    s.cloud.delete_qos_specs(&caller, &id, force).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn associations(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, String)>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let shown: Vec<Value> = s
        .cloud
        .qos_associations(&caller, &id)
        .await?
        .iter()
        .map(|t| json!({"association_type": "volume_type", "id": t.id.to_string(), "name": t.name}))
        .collect();
    Ok(Json(json!({"qos_associations": shown})))
}

async fn change(
    s: &AppState,
    caller: &domain::identity::Caller,
    project: &str,
    id: &str,
    q: &QosQuery,
    associate: bool,
) -> NovaResult<StatusCode> {
    check_project(caller, project)?;
    let type_id = q
        .vol_type_id
        .as_deref()
        .ok_or_else(|| Error::invalid("Invalid input received: vol_type_id is required."))?;
    s.cloud
        .change_qos_association(caller, id, Some(type_id), associate)
        .await?;
    Ok(StatusCode::ACCEPTED)
}

async fn associate(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, String)>,
    Query(q): Query<QosQuery>,
) -> NovaResult<StatusCode> {
    change(&s, &caller, &project, &id, &q, true).await
}

async fn disassociate(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, String)>,
    Query(q): Query<QosQuery>,
) -> NovaResult<StatusCode> {
    change(&s, &caller, &project, &id, &q, false).await
}

async fn disassociate_all(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, String)>,
) -> NovaResult<StatusCode> {
    check_project(&caller, &project)?;
    s.cloud
        .change_qos_association(&caller, &id, None, false)
        .await?;
    Ok(StatusCode::ACCEPTED)
}
