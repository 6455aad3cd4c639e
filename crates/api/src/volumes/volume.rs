//! `/{project_id}/volumes`: create, list, show, update, delete, the
//! `os-extend` action and metadata.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cloud::volumes::{NewVolume, VolumeChanges};
use domain::Error;
use serde_json::{json, Value};

use super::{
    check_project, flag, object, opt_text, size_of, string_map, views, ListQuery, SortValue,
    VolumeVersion,
};
use crate::auth::Auth;
use crate::compute::NovaResult;
use crate::json::JsonBody;
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/{project}/volumes", get(list).post(create))
        .route("/{project}/volumes/detail", get(list_detail))
        .route("/{project}/volumes/summary", get(summary))
        .route(
            "/{project}/volumes/{id}",
            get(show).put(update).delete(delete),
        )
        .route("/{project}/volumes/{id}/action", post(action))
        .route(
            "/{project}/volumes/{id}/metadata",
            get(metadata).post(merge_metadata).put(replace_metadata),
        )
        .route(
            "/{project}/volumes/{id}/metadata/{key}",
            get(metadata_item)
                .put(put_metadata_item)
                .delete(delete_metadata_item),
        )
}

fn parse_create(body: &Value) -> Result<NewVolume, Error> {
    let obj = super::object(body, "volume")?;
    let id =
        |keys: &[&str]| -> Result<Option<String>, Error> { Ok(opt_text(obj, keys)?.flatten()) };
    if flag(obj.get("multiattach"), "multiattach")? {
        return Err(Error::invalid(
            "Invalid input received: multiattach volumes are not supported.",
        ));
    }
    if obj.get("backup_id").is_some_and(|b| !b.is_null()) {
        return Err(Error::invalid(
            "Invalid input received: Snapstack has no volume backups.",
        ));
    }
    Ok(NewVolume {
        name: opt_text(obj, &["name", "display_name"])?.flatten(),
        description: opt_text(obj, &["description", "display_description"])?.flatten(),
        size: size_of(obj.get("size"), "size")?,
        image_ref: id(&["imageRef", "image_id"])?,
        snapshot_id: id(&["snapshot_id"])?,
        source_volid: id(&["source_volid"])?,
        metadata: string_map(obj.get("metadata"), "metadata")?.unwrap_or_default(),
        volume_type: opt_text(obj, &["volume_type"])?.flatten(),
    })
}

/// A volume as Cinder shows it, with its attachment (Cinder's legacy
/// `attachments` list: one entry while attached to a server).
async fn volume_view(
    s: &AppState,
    volume: &domain::volume::Volume,
    caller: &domain::identity::Caller,
    v: VolumeVersion,
) -> Result<Value, Error> {
    let type_name = s.cloud.volume_type_name(volume.volume_type_id).await?;
    let mut out = views::volume(s, volume, &type_name, caller, v);
    if let Some(a) = s.cloud.attachment_of_volume(volume).await? {
        let id = volume.id.to_string();
        out["attachments"] = json!([{
            "server_id": a.server_id.to_string(),
            "attachment_id": a.id.to_string(),
            "attached_at": a.created_at.format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
            "host_name": null,
            "volume_id": id,
            "device": a.device,
            "id": id,
        }]);
    }
    Ok(out)
}

async fn create(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: VolumeVersion,
    Path(project): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Response> {
    check_project(&caller, &project)?;
    let volume = s.cloud.create_volume(&caller, parse_create(&body)?).await?;
    let mut shown = volume_view(&s, &volume, &caller, v).await?;
    views::strip_extended_attributes(&mut shown);
    Ok((StatusCode::ACCEPTED, Json(json!({"volume": shown}))).into_response())
}

async fn filtered(
    s: &AppState,
    caller: &domain::identity::Caller,
    project: &str,
    q: &ListQuery,
) -> Result<Vec<domain::volume::Volume>, Error> {
    check_project(caller, project)?;
    let mut volumes = s.cloud.volumes(caller, q.all_projects()).await?;
    if let (Some(p), true) = (&q.project_id, q.all_projects()) {
        volumes.retain(|v| v.project_id.to_string() == p.replace('-', ""));
    }
    if let Some(name) = q.name() {
        volumes.retain(|v| v.name.as_deref() == Some(name));
    }
    if let Some(status) = &q.status {
        volumes.retain(|v| v.status.as_str() == status);
    }
    q.page(volumes, VOLUME_SORT_KEYS, volume_sort_value, |v| {
        v.id.to_string()
    })
}

const VOLUME_SORT_KEYS: &[&str] = &[
    "id",
    "name",
    "display_name",
    "status",
    "size",
    "created_at",
    "updated_at",
    "bootable",
    "availability_zone",
];

fn volume_sort_value(v: &domain::volume::Volume, key: &str) -> Option<SortValue> {
    Some(match key {
        "id" => SortValue::Text(v.id.to_string()),
        "name" | "display_name" => SortValue::Text(v.name.clone().unwrap_or_default()),
        "status" => SortValue::Text(v.status.as_str().to_string()),
        "size" => SortValue::Int(v.size as i64),
        "created_at" => SortValue::Text(views::timestamp(v.created_at)),
        "updated_at" => SortValue::Text(views::timestamp(v.updated_at)),
        "bootable" => SortValue::Int(i64::from(v.bootable)),
        _ => return None,
    })
}

/// A list answer, with `volumes_links` when there is a next page.
fn list_answer(
    s: &AppState,
    q: &ListQuery,
    uri: &http::Uri,
    volumes: &[domain::volume::Volume],
    shown: Vec<Value>,
) -> Value {
    let mut out = json!({"volumes": shown});
    let last = volumes.last().map(|v| v.id.to_string());
    if let Some(links) = q.links(s, uri, volumes.len(), last) {
        out["volumes_links"] = links;
    }
    out
}

async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(project): Path<String>,
    Query(q): Query<ListQuery>,
    uri: http::Uri,
) -> NovaResult<Json<Value>> {
    let volumes = filtered(&s, &caller, &project, &q).await?;
    let shown: Vec<Value> = volumes
        .iter()
        .map(|v| views::volume_summary(&s, v))
        .collect();
    Ok(Json(list_answer(&s, &q, &uri, &volumes, shown)))
}

async fn list_detail(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: VolumeVersion,
    Path(project): Path<String>,
    Query(q): Query<ListQuery>,
    uri: http::Uri,
) -> NovaResult<Json<Value>> {
    let volumes = filtered(&s, &caller, &project, &q).await?;
    let mut shown = Vec::with_capacity(volumes.len());
    for vol in &volumes {
        shown.push(volume_view(&s, vol, &caller, v).await?);
    }
    Ok(Json(list_answer(&s, &q, &uri, &volumes, shown)))
}

/// `GET /volumes/summary` (3.12+): count and total size of the volumes
/// listed, with their metadata keys' values (3.36+).
async fn summary(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: VolumeVersion,
    Path(project): Path<String>,
    Query(q): Query<ListQuery>,
) -> NovaResult<Json<Value>> {
    if !v.at_least(12) {
        return Err(Error::not_found("API", "volumes/summary (3.12 and later)").into());
    }
    let volumes = filtered(&s, &caller, &project, &q).await?;
    let mut out = json!({
        "total_count": volumes.len(),
        "total_size": volumes.iter().map(|vol| vol.size).sum::<u64>(),
    });
    if v.at_least(36) {
        let mut metadata: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for vol in &volumes {
            for (k, val) in &vol.metadata {
                let values = metadata.entry(k.clone()).or_default();
                if !values.contains(val) {
                    values.push(val.clone());
                }
            }
        }
        out["metadata"] = json!(metadata);
    }
    Ok(Json(json!({"volume-summary": out})))
}

async fn show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: VolumeVersion,
    Path((project, id)): Path<(String, String)>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let volume = s.cloud.volume(&caller, &id).await?;
    Ok(Json(
        json!({"volume": volume_view(&s, &volume, &caller, v).await?}),
    ))
}

async fn update(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: VolumeVersion,
    Path((project, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let obj = object(&body, "volume")?;
    let changes = VolumeChanges {
        name: opt_text(obj, &["name", "display_name"])?,
        description: opt_text(obj, &["description", "display_description"])?,
        metadata: string_map(obj.get("metadata"), "metadata")?,
    };
    let volume = s.cloud.update_volume(&caller, &id, changes).await?;
    let mut shown = volume_view(&s, &volume, &caller, v).await?;
    views::strip_extended_attributes(&mut shown);
    Ok(Json(json!({"volume": shown})))
}

#[derive(serde::Deserialize, Default)]
struct DeleteQuery {
    cascade: Option<String>,
    force: Option<String>,
}

async fn delete(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, String)>,
    Query(q): Query<DeleteQuery>,
) -> NovaResult<StatusCode> {
    check_project(&caller, &project)?;
    let cascade = flag(q.cascade.as_ref().map(|c| json!(c)).as_ref(), "cascade")?;
    if flag(q.force.as_ref().map(|c| json!(c)).as_ref(), "force")? {
        s.cloud.force_delete_volume(&caller, &id).await?;
    } else {
        s.cloud.delete_volume(&caller, &id, cascade).await?;
    }
    Ok(StatusCode::ACCEPTED)
}

async fn action(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Response> {
    check_project(&caller, &project)?;
    let obj = body
        .as_object()
        .filter(|o| o.len() == 1)
        .ok_or_else(|| Error::invalid("A volume action body names exactly one action."))?;
    let (name, args) = obj.iter().next().expect("one entry");
    super::actions::run(&s, &caller, &id, name, args).await
}

async fn metadata(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, String)>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let volume = s.cloud.volume(&caller, &id).await?;
    Ok(Json(json!({"metadata": volume.metadata})))
}

/// `POST …/metadata`: merges; `PUT`: replaces.
async fn change_metadata(
    s: &AppState,
    caller: &domain::identity::Caller,
    project: &str,
    id: &str,
    body: &Value,
    replace: bool,
) -> NovaResult<Json<Value>> {
    check_project(caller, project)?;
    let given = string_map(body.get("metadata"), "metadata")?
        .ok_or_else(|| Error::invalid("Malformed request body: 'metadata' is required."))?;
    let mut metadata = if replace {
        Default::default()
    } else {
        s.cloud.volume(caller, id).await?.metadata
    };
    metadata.extend(given);
    let changes = VolumeChanges {
        metadata: Some(metadata),
        ..Default::default()
    };
    let volume = s.cloud.update_volume(caller, id, changes).await?;
    Ok(Json(json!({"metadata": volume.metadata})))
}

async fn merge_metadata(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    change_metadata(&s, &caller, &project, &id, &body, false).await
}

async fn replace_metadata(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    change_metadata(&s, &caller, &project, &id, &body, true).await
}

async fn metadata_item(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id, key)): Path<(String, String, String)>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let volume = s.cloud.volume(&caller, &id).await?;
    let value = volume
        .metadata
        .get(&key)
        .ok_or_else(|| Error::not_found("metadata key", &key))?;
    Ok(Json(json!({"meta": {key: value}})))
}

/// `PUT …/metadata/{key}` with `{"meta": {key: value}}`: sets one key.
async fn put_metadata_item(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id, key)): Path<(String, String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let (k, value) = super::meta_item(&body, &key)?;
    let mut metadata = s.cloud.volume(&caller, &id).await?.metadata;
    metadata.insert(k.clone(), value.clone());
    let changes = VolumeChanges {
        metadata: Some(metadata),
        ..Default::default()
    };
    s.cloud.update_volume(&caller, &id, changes).await?;
    Ok(Json(json!({"meta": {k: value}})))
}

async fn delete_metadata_item(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id, key)): Path<(String, String, String)>,
) -> NovaResult<StatusCode> {
    check_project(&caller, &project)?;
    let mut metadata = s.cloud.volume(&caller, &id).await?.metadata;
    if metadata.remove(&key).is_none() {
        return Err(Error::not_found("metadata key", &key).into());
    }
    let changes = VolumeChanges {
        metadata: Some(metadata),
        ..Default::default()
    };
    s.cloud.update_volume(&caller, &id, changes).await?;
    Ok(StatusCode::OK)
}
