//! `/{project_id}/types`: volume types, their extra specs, access to private
//! types (`os-volume-type-access`) and encryption specs, in Cinder's shapes.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use cloud::volumes::{EncryptionSpecs, NewVolumeType, VolumeTypeChanges};
use domain::identity::Caller;
use domain::volume_type::{Encryption, VolumeType};
use domain::Error;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{check_project, flag, object, opt_text, string_map, views::timestamp};
use crate::auth::Auth;
use crate::compute::NovaResult;
use crate::json::JsonBody;
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/{project}/types", get(list).post(create))
        .route(
            "/{project}/types/{id}",
            get(show).put(update).delete(delete),
        )
        .route("/{project}/types/{id}/action", post(action))
        .route(
            "/{project}/types/{id}/os-volume-type-access",
            get(access_list),
        )
        .route(
            "/{project}/types/{id}/extra_specs",
            get(extra_specs).post(set_extra_specs),
        )
        .route(
            "/{project}/types/{id}/extra_specs/{key}",
            get(extra_spec)
                .put(put_extra_spec)
                .delete(delete_extra_spec),
        )
        .route(
            "/{project}/types/{id}/encryption",
            get(encryption).post(create_encryption),
        )
        .route(
            "/{project}/types/{id}/encryption/{item}",
            get(encryption_item)
                .put(update_encryption)
                .delete(delete_encryption),
        )
}

/// Extra specs a non-admin sees (Cinder's user-visible keys).
const USER_VISIBLE_SPECS: &[&str] = &[
    "multiattach",
    "replication_enabled",
    "RESKEY:availability_zones",
];

/// The type as `GET` shows it: admins see every extra spec and the QoS id.
fn type_view(t: &VolumeType, caller: &Caller) -> Value {
    let mut out = base_view(t, caller);
    if caller.is_admin() {
        out["qos_specs_id"] = json!(t.qos_specs_id.map(|q| q.to_string()));
    }
    out
}

fn base_view(t: &VolumeType, caller: &Caller) -> Value {
    let specs: BTreeMap<&String, &String> = t
        .extra_specs
        .iter()
        .filter(|(k, _)| caller.is_admin() || USER_VISIBLE_SPECS.contains(&k.as_str()))
        .collect();
    json!({
        "id": t.id.to_string(),
        "name": t.name,
        "description": t.description,
        "is_public": t.is_public,
        "os-volume-type-access:is_public": t.is_public,
        "extra_specs": specs,
    })
}

#[derive(Deserialize, Default)]
struct TypeListQuery {
    is_public: Option<String>,
}

async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(project): Path<String>,
    Query(q): Query<TypeListQuery>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let is_public = match q
        .is_public
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("none") => None,
        Some(v) => Some(flag(Some(&json!(v)), "is_public")?),
    };
    let types = s.cloud.volume_types(&caller, is_public).await?;
    let shown: Vec<Value> = types.iter().map(|t| type_view(t, &caller)).collect();
    Ok(Json(json!({"volume_types": shown})))
}

async fn show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, String)>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let t = s.cloud.volume_type(&caller, &id).await?;
    Ok(Json(json!({"volume_type": type_view(&t, &caller)})))
}

fn name_of(obj: &Map<String, Value>) -> Result<Option<String>, Error> {
    opt_text(obj, &["name"])?
        .map(|n| {
            n.ok_or_else(|| Error::invalid("Invalid input received: the name cannot be null."))
        })
        .transpose()
}

fn is_public_of(obj: &Map<String, Value>) -> Result<Option<bool>, Error> {
    ["os-volume-type-access:is_public", "is_public"]
        .iter()
        .find_map(|k| obj.get(*k).map(|v| flag(Some(v), k)))
        .transpose()
}

async fn create(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(project): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let obj = object(&body, "volume_type")?;
    let new = NewVolumeType {
        name: name_of(obj)?
            .ok_or_else(|| Error::invalid("Invalid input received: a name is required."))?,
        description: opt_text(obj, &["description"])?.flatten(),
        is_public: is_public_of(obj)?.unwrap_or(true),
        extra_specs: string_map(obj.get("extra_specs"), "extra_specs")?.unwrap_or_default(),
    };
    let t = s.cloud.create_volume_type(&caller, new).await?;
    Ok(Json(json!({"volume_type": base_view(&t, &caller)})))
}

async fn update(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let obj = object(&body, "volume_type")?;
    let changes = VolumeTypeChanges {
        name: name_of(obj)?,
        description: opt_text(obj, &["description"])?,
        is_public: is_public_of(obj)?,
    };
    if changes.name.is_none() && changes.description.is_none() && changes.is_public.is_none() {
        return Err(Error::invalid(
            "Invalid input received: Specify volume type name, description, is_public or a combination thereof.",
        )
        .into());
    }
    let t = s.cloud.update_volume_type(&caller, &id, changes).await?;
    let mut shown = base_view(&t, &caller);
    if let Some(o) = shown.as_object_mut() {
        o.remove("os-volume-type-access:is_public");
    }
    Ok(Json(json!({"volume_type": shown})))
}

async fn delete(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, String)>,
) -> NovaResult<StatusCode> {
    check_project(&caller, &project)?;
    s.cloud.delete_volume_type(&caller, &id).await?;
    Ok(StatusCode::ACCEPTED)
}

/// `addProjectAccess` / `removeProjectAccess`.
async fn action(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<StatusCode> {
    check_project(&caller, &project)?;
    let (grant, args) = if let Some(a) = body.get("addProjectAccess") {
        (true, a)
    } else if let Some(a) = body.get("removeProjectAccess") {
        (false, a)
    } else {
        return Err(Error::invalid(
            "Invalid input received: the action must be addProjectAccess or removeProjectAccess.",
        )
        .into());
    };
    let target = args
        .get("project")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid("Missing required element 'project' in request body."))?;
    s.cloud
        .change_volume_type_access(&caller, &id, target, grant)
        .await?;
    Ok(StatusCode::ACCEPTED)
}

async fn access_list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, String)>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let t = s.cloud.volume_type(&caller, &id).await?;
    let projects = s.cloud.volume_type_access(&caller, &id).await?;
    let shown: Vec<Value> = projects
        .iter()
        .map(|p| json!({"volume_type_id": t.id.to_string(), "project_id": p.to_string()}))
        .collect();
    Ok(Json(json!({"volume_type_access": shown})))
}

async fn extra_specs(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, String)>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let specs = s.cloud.volume_type_extra_specs(&caller, &id).await?;
    Ok(Json(json!({"extra_specs": specs})))
}

async fn set_extra_specs(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    object(&body, "extra_specs")?;
    let given = string_map(body.get("extra_specs"), "extra_specs")?.unwrap_or_default();
    let specs = s
        .cloud
        .set_volume_type_extra_specs(&caller, &id, given.clone())
        .await?;
    let shown: BTreeMap<&String, &String> = specs
        .iter()
        .filter(|(k, _)| given.contains_key(*k))
        .collect();
    Ok(Json(json!({"extra_specs": shown})))
}

async fn extra_spec(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id, key)): Path<(String, String, String)>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let specs = s.cloud.volume_type_extra_specs(&caller, &id).await?;
    let value = specs
        .get(&key)
        .ok_or_else(|| Error::not_found("Volume Type extra spec", &key))?;
    Ok(Json(json!({key: value})))
}

/// `PUT …/extra_specs/{key}` with `{key: value}`: exactly the URL's key.
async fn put_extra_spec(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id, key)): Path<(String, String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let obj = body
        .as_object()
        .ok_or_else(|| Error::invalid("Malformed request body: an object is expected."))?;
    if obj.len() != 1 {
        return Err(Error::invalid("Request body contains too many items.").into());
    }
    let (k, v) = obj.iter().next().expect("one entry");
    if *k != key {
        return Err(Error::invalid("Request body and URI mismatch").into());
    }
    let v = v.as_str().ok_or_else(|| {
        Error::invalid("Invalid input received: extra spec values must be strings.")
    })?;
    let given = BTreeMap::from([(k.clone(), v.to_string())]);
    s.cloud
        .set_volume_type_extra_specs(&caller, &id, given)
        .await?;
    Ok(Json(json!({k: v})))
}

async fn delete_extra_spec(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id, key)): Path<(String, String, String)>,
) -> NovaResult<StatusCode> {
    check_project(&caller, &project)?;
    s.cloud
        .unset_volume_type_extra_spec(&caller, &id, &key)
        .await?;
    Ok(StatusCode::ACCEPTED)
}

fn encryption_view(t: &VolumeType, e: &Encryption) -> Value {
    json!({
        "volume_type_id": t.id.to_string(),
        "encryption_id": e.encryption_id.to_string(),
        "provider": e.provider,
        "cipher": e.cipher,
        "key_size": e.key_size,
        "control_location": e.control_location,
        "deleted": false,
        "created_at": timestamp(e.created_at),
        "updated_at": e.updated_at.map(timestamp),
        "deleted_at": null,
    })
}

fn encryption_specs(body: &Value) -> Result<EncryptionSpecs, Error> {
    let obj = object(body, "encryption")?;
    let key_size = match obj.get("key_size") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(v) => Some(Some(
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| {
                    Error::invalid("Invalid input received: key_size must be an integer.")
                })?,
        )),
    };
    Ok(EncryptionSpecs {
        provider: opt_text(obj, &["provider"])?.flatten(),
        cipher: opt_text(obj, &["cipher"])?,
        key_size,
        control_location: opt_text(obj, &["control_location"])?.flatten(),
    })
}

/// `GET …/encryption`: the specs, or `{}` for a type without them.
async fn encryption(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, String)>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let (t, e) = s.cloud.volume_type_encryption(&caller, &id).await?;
    Ok(Json(
        e.map_or_else(|| json!({}), |e| encryption_view(&t, &e)),
    ))
}

async fn encryption_item(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id, item)): Path<(String, String, String)>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let (t, e) = s.cloud.volume_type_encryption(&caller, &id).await?;
    let e = e.ok_or_else(|| Error::not_found("Volume type encryption for type", &id))?;
    let view = encryption_view(&t, &e);
    let value = view
        .get(&item)
        .filter(|v| !v.is_null())
        .ok_or_else(|| Error::not_found("Volume type encryption spec", &item))?;
    Ok(Json(json!({item: value})))
}

async fn create_encryption(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let specs = encryption_specs(&body)?;
    let (t, e) = s
        .cloud
        .create_volume_type_encryption(&caller, &id, specs)
        .await?;
    let mut shown = encryption_view(&t, &e);
    if let Some(o) = shown.as_object_mut() {
        o.retain(|k, _| {
            matches!(
                k.as_str(),
                "volume_type_id"
                    | "encryption_id"
                    | "provider"
                    | "cipher"
                    | "key_size"
                    | "control_location"
            )
        });
    }
    Ok(Json(json!({"encryption": shown})))
}

async fn update_encryption(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id, _encryption_id)): Path<(String, String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let specs = encryption_specs(&body)?;
    let e = s
        .cloud
        .update_volume_type_encryption(&caller, &id, specs)
        .await?;
    Ok(Json(json!({"encryption": {
        "provider": e.provider,
        "cipher": e.cipher,
        "key_size": e.key_size,
        "control_location": e.control_location,
    }})))
}

async fn delete_encryption(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id, _encryption_id)): Path<(String, String, String)>,
) -> NovaResult<StatusCode> {
    check_project(&caller, &project)?;
    s.cloud.delete_volume_type_encryption(&caller, &id).await?;
    Ok(StatusCode::ACCEPTED)
}
