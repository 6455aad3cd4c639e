//! `/flavors/{id}/os-flavor-access`, the `addTenantAccess` and
//! `removeTenantAccess` actions, and `/flavors/{id}/os-extra_specs`.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use domain::{Error, ProjectId};
use serde::Serialize;
use serde_json::{json, Value};

use super::NovaResult;
use crate::auth::Auth;
use crate::json::JsonBody;
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/flavors/{id}/os-flavor-access", get(list_access))
        .route("/flavors/{id}/action", post(action))
        .route(
            "/flavors/{id}/os-extra_specs",
            get(list_specs).post(set_specs),
        )
        .route(
            "/flavors/{id}/os-extra_specs/{key}",
            get(show_spec).put(put_spec).delete(delete_spec),
        )
}

#[derive(Serialize)]
struct AccessView {
    flavor_id: String,
    tenant_id: String,
}

fn access_body(flavor: &str, projects: &[ProjectId]) -> Json<Value> {
    let items: Vec<AccessView> = projects
        .iter()
        .map(|p| AccessView {
            flavor_id: flavor.to_string(),
            tenant_id: p.to_string(),
        })
        .collect();
    Json(json!({ "flavor_access": items }))
}

async fn list_access(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> NovaResult<Json<Value>> {
    let projects = s.cloud.flavor_access(&caller, &id).await?;
    Ok(access_body(&id, &projects))
}

fn tenant_of(body: &Value, action: &str) -> Result<String, Error> {
    body.pointer(&format!("/{action}/tenant"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Error::invalid(format!("'tenant' is a required property of {action}.")))
}

async fn action(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    let projects = if body.get("addTenantAccess").is_some() {
        let tenant = tenant_of(&body, "addTenantAccess")?;
        s.cloud.add_flavor_access(&caller, &id, &tenant).await?
    } else if body.get("removeTenantAccess").is_some() {
        let tenant = tenant_of(&body, "removeTenantAccess")?;
        s.cloud.remove_flavor_access(&caller, &id, &tenant).await?
    } else {
        return Err(Error::invalid("Unknown flavor action.").into());
    };
    Ok(access_body(&id, &projects))
}

fn specs_of(v: Option<&Value>) -> Result<BTreeMap<String, String>, Error> {
    let obj = v
        .and_then(Value::as_object)
        .ok_or_else(|| Error::invalid("'extra_specs' must be an object."))?;
    obj.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            Value::Number(n) => Ok((k.clone(), n.to_string())),
            Value::Bool(b) => Ok((k.clone(), b.to_string())),
            _ => Err(Error::invalid(format!(
                "Invalid input for field/attribute extra_specs: the value of '{k}' must be a string."
            ))),
        })
        .collect()
}

async fn list_specs(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> NovaResult<Json<Value>> {
    let flavor = s.cloud.flavor(&caller, &id).await?;
    Ok(Json(json!({"extra_specs": flavor.extra_specs})))
}

async fn set_specs(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    let specs = specs_of(body.get("extra_specs"))?;
    let all = s.cloud.set_flavor_extra_specs(&caller, &id, specs).await?;
    Ok(Json(json!({ "extra_specs": all })))
}

async fn show_spec(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((id, key)): Path<(String, String)>,
) -> NovaResult<Json<Value>> {
    let flavor = s.cloud.flavor(&caller, &id).await?;
    let value = flavor
        .extra_specs
        .get(&key)
        .ok_or_else(|| Error::not_found("flavor extra spec", format!("{key} of flavor {id}")))?;
    Ok(Json(json!({ key: value })))
}

async fn put_spec(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((id, key)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    let specs = specs_of(Some(&body))?;
    if specs.len() != 1 || !specs.contains_key(&key) {
        return Err(Error::invalid("Request body and URI mismatch").into());
    }
    let value = specs[&key].clone();
    s.cloud.set_flavor_extra_specs(&caller, &id, specs).await?;
    Ok(Json(json!({ key: value })))
}

async fn delete_spec(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((id, key)): Path<(String, String)>,
) -> NovaResult<Json<Value>> {
    s.cloud.delete_flavor_extra_spec(&caller, &id, &key).await?;
    Ok(Json(json!({})))
}
