//! `/flavors`.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use domain::server::Flavor;
use domain::Error;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{views, Microversion, NovaResult};
use crate::auth::Auth;
use crate::json::JsonBody;
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/flavors", get(list).post(create))
        .route("/flavors/detail", get(list_detail))
        .route("/flavors/{id}", get(show).delete(delete))
}

const FLAVOR_FIELDS: &[&str] = &[
    "name",
    "id",
    "ram",
    "vcpus",
    "disk",
    "OS-FLV-EXT-DATA:ephemeral",
    "swap",
    "rxtx_factor",
    "os-flavor-access:is_public",
    "description",
];

fn uint(obj: &Map<String, Value>, key: &str, required: bool) -> Result<u64, Error> {
    match obj.get(key) {
        None | Some(Value::Null) if !required => Ok(0),
        None | Some(Value::Null) => Err(Error::invalid(format!("'{key}' is a required property."))),
        Some(Value::String(s)) if s.is_empty() && !required => Ok(0),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| Error::invalid(format!("'{key}' must be a non-negative integer."))),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| Error::invalid(format!("'{key}' must be a non-negative integer."))),
    }
}

/// Nova's `parameter_types.boolean`: JSON booleans and their usual spellings.
fn nova_bool(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>, Error> {
    let bad = || Error::invalid(format!("'{key}' must be a boolean."));
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Some(true)),
            "false" | "0" | "no" | "off" => Ok(Some(false)),
            _ => Err(bad()),
        },
        Some(_) => Err(bad()),
    }
}

fn parse_flavor(body: &Value) -> Result<Flavor, Error> {
    let obj = body
        .get("flavor")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::invalid("Expecting 'flavor' in the request body."))?;
    if let Some(extra) = obj.keys().find(|k| !FLAVOR_FIELDS.contains(&k.as_str())) {
        return Err(Error::invalid(format!(
            "Additional properties are not allowed ('{extra}' was unexpected)."
        )));
    }
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid("'name' is a required property."))?;
    let id = match obj.get("id") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        // Nova's schema takes a number too (tempest sends one).
        Some(Value::Number(n)) if n.is_u64() => n.to_string(),
        Some(_) => return Err(Error::invalid("'id' must be a string.")),
    };
    let vcpus = u32::try_from(uint(obj, "vcpus", true)?)
        .map_err(|_| Error::invalid("'vcpus' is too large."))?;
    Ok(Flavor {
        id,
        name: name.to_string(),
        vcpus,
        ram: uint(obj, "ram", true)?,
        disk: uint(obj, "disk", true)?,
        ephemeral: uint(obj, "OS-FLV-EXT-DATA:ephemeral", false)?,
        swap: uint(obj, "swap", false)?,
        is_public: nova_bool(obj, "os-flavor-access:is_public")?.unwrap_or(true),
        description: obj
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_owned),
        extra_specs: BTreeMap::new(),
    })
}

async fn create(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    let flavor = s.cloud.create_flavor(&caller, parse_flavor(&body)?).await?;
    Ok(Json(json!({"flavor": views::flavor(&s, &flavor, v)})))
}

/// Nova's flavor list filters and paging.
#[derive(Deserialize, Default)]
struct FlavorQuery {
    #[serde(rename = "minRam")]
    min_ram: Option<String>,
    #[serde(rename = "minDisk")]
    min_disk: Option<String>,
    limit: Option<String>,
    marker: Option<String>,
}

fn number(v: &Option<String>, what: &str) -> Result<Option<u64>, Error> {
    v.as_deref()
        .map(|t| {
            t.parse()
                .map_err(|_| Error::invalid(format!("Invalid {what} filter [{t}]")))
        })
        .transpose()
}

/// The flavors the caller sees, filtered by `minRam`/`minDisk`, after
/// `marker` (400 if unknown, as Nova), at most `limit`.
async fn filtered(
    s: &AppState,
    caller: &domain::identity::Caller,
    q: &FlavorQuery,
) -> Result<Vec<Flavor>, Error> {
    let mut flavors = s.cloud.flavors(caller).await?;
    if let Some(min) = number(&q.min_ram, "minRam")? {
        flavors.retain(|f| f.ram >= min);
    }
    if let Some(min) = number(&q.min_disk, "minDisk")? {
        flavors.retain(|f| f.disk >= min);
    }
    if let Some(marker) = &q.marker {
        let pos = flavors
            .iter()
            .position(|f| f.id == *marker)
            .ok_or_else(|| Error::invalid(format!("marker [{marker}] not found")))?;
        flavors.drain(..=pos);
    }
    if let Some(limit) = number(&q.limit, "limit")? {
        flavors.truncate(limit as usize);
    }
    Ok(flavors)
}

async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Query(q): Query<FlavorQuery>,
) -> NovaResult<Json<Value>> {
    let flavors = filtered(&s, &caller, &q).await?;
    Ok(Json(
        json!({"flavors": flavors.iter().map(|f| views::flavor_summary(&s, f, v)).collect::<Vec<_>>()}),
    ))
}

async fn list_detail(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Query(q): Query<FlavorQuery>,
) -> NovaResult<Json<Value>> {
    let flavors = filtered(&s, &caller, &q).await?;
    Ok(Json(
        json!({"flavors": flavors.iter().map(|f| views::flavor(&s, f, v)).collect::<Vec<_>>()}),
    ))
}

async fn show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Path(id): Path<String>,
) -> NovaResult<Json<Value>> {
    let flavor = s.cloud.flavor(&caller, &id).await?;
    Ok(Json(json!({"flavor": views::flavor(&s, &flavor, v)})))
}

async fn delete(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> NovaResult<StatusCode> {
    s.cloud.delete_flavor(&caller, &id).await?;
    Ok(StatusCode::ACCEPTED)
}
