//! `/{project_id}/snapshots`: create, list, show, update, delete, metadata.
//!
//! `force`: an `in-use` volume is snapshotted only with `force: true` (400
//! otherwise), as Cinder does up to microversion 3.65, the newest served
//! (see [`VOLUME_MAX_MICROVERSION`](crate::versions::VOLUME_MAX_MICROVERSION)).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cloud::volumes::{NewSnapshot, VolumeChanges};
use domain::Error;
use serde_json::{json, Value};

use super::{
    check_project, flag, object, opt_text, string_map, views, ListQuery, SortValue, VolumeVersion,
};
use crate::auth::Auth;
use crate::compute::NovaResult;
use crate::json::JsonBody;
use crate::AppState;
use domain::volume::VolumeSnapshot;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/{project}/snapshots", get(list).post(create))
        .route("/{project}/snapshots/detail", get(list_detail))
        .route(
            "/{project}/snapshots/{id}",
            get(show).put(update).delete(delete),
        )
        .route(
            "/{project}/snapshots/{id}/action",
            axum::routing::post(action),
        )
        .route(
            "/{project}/snapshots/{id}/metadata",
            get(metadata).post(merge_metadata).put(replace_metadata),
        )
        .route(
            "/{project}/snapshots/{id}/metadata/{key}",
            get(metadata_item)
                .put(put_metadata_item)
                .delete(delete_metadata_item),
        )
}

fn parse_create(body: &Value) -> Result<NewSnapshot, Error> {
    let obj = object(body, "snapshot")?;
    let volume_id = opt_text(obj, &["volume_id"])?
        .flatten()
        // Cinder looks the missing volume up: 404.
        .ok_or_else(|| Error::not_found("Volume", "None"))?;
    let force = flag(obj.get("force"), "force")?;
    Ok(NewSnapshot {
        volume_id,
        name: opt_text(obj, &["name", "display_name"])?.flatten(),
        description: opt_text(obj, &["description", "display_description"])?.flatten(),
        metadata: string_map(obj.get("metadata"), "metadata")?.unwrap_or_default(),
        force,
    })
}

async fn create(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: VolumeVersion,
    Path(project): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Response> {
    check_project(&caller, &project)?;
    let snap = s
        .cloud
        .create_volume_snapshot(&caller, parse_create(&body)?)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"snapshot": views::snapshot(&snap, v, false)})),
    )
        .into_response())
}

async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: VolumeVersion,
    Path(project): Path<String>,
    Query(q): Query<ListQuery>,
    uri: http::Uri,
) -> NovaResult<Json<Value>> {
    listing(&s, &caller, v, &project, &q, &uri, false).await
}

async fn list_detail(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: VolumeVersion,
    Path(project): Path<String>,
    Query(q): Query<ListQuery>,
    uri: http::Uri,
) -> NovaResult<Json<Value>> {
    listing(&s, &caller, v, &project, &q, &uri, true).await
}

const SNAPSHOT_SORT_KEYS: &[&str] = &[
    "id",
    "name",
    "display_name",
    "status",
    "size",
    "created_at",
    "updated_at",
    "volume_id",
];

fn snapshot_sort_value(x: &VolumeSnapshot, key: &str) -> Option<SortValue> {
    Some(match key {
        "id" => SortValue::Text(x.id.to_string()),
        "name" | "display_name" => SortValue::Text(x.name.clone().unwrap_or_default()),
        "status" => SortValue::Text(x.status.as_str().to_string()),
        "size" => SortValue::Int(x.size as i64),
        "created_at" => SortValue::Text(views::timestamp(x.created_at)),
        "updated_at" => SortValue::Text(views::timestamp(x.updated_at)),
        "volume_id" => SortValue::Text(x.volume_id.to_string()),
        _ => return None,
    })
}

async fn listing(
    s: &AppState,
    caller: &domain::identity::Caller,
    v: VolumeVersion,
    project: &str,
    q: &ListQuery,
    uri: &http::Uri,
    detailed: bool,
) -> NovaResult<Json<Value>> {
    check_project(caller, project)?;
    let mut snaps = s.cloud.volume_snapshots(caller, q.all_projects()).await?;
    if let Some(name) = q.name() {
        snaps.retain(|x| x.name.as_deref() == Some(name));
    }
    if let Some(status) = &q.status {
        snaps.retain(|x| x.status.as_str() == status);
    }
    if let Some(volume) = &q.volume_id {
        snaps.retain(|x| x.volume_id.to_string() == *volume);
    }
    let snaps = q.page(snaps, SNAPSHOT_SORT_KEYS, snapshot_sort_value, |x| {
        x.id.to_string()
    })?;
    let shown: Vec<Value> = snaps
        .iter()
        .map(|x| views::snapshot(x, v, detailed))
        .collect();
    let mut out = json!({"snapshots": shown});
    let last = snaps.last().map(|x| x.id.to_string());
    if let Some(links) = q.links(s, uri, snaps.len(), last) {
        out["snapshots_links"] = links;
    }
    Ok(Json(out))
}

async fn show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: VolumeVersion,
    Path((project, id)): Path<(String, String)>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let snap = s.cloud.volume_snapshot(&caller, &id).await?;
    Ok(Json(json!({"snapshot": views::snapshot(&snap, v, true)})))
}

async fn update(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: VolumeVersion,
    Path((project, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let obj = object(&body, "snapshot")?;
    let changes = VolumeChanges {
        name: opt_text(obj, &["name", "display_name"])?,
        description: opt_text(obj, &["description", "display_description"])?,
        metadata: string_map(obj.get("metadata"), "metadata")?,
    };
    let snap = s
        .cloud
        .update_volume_snapshot(&caller, &id, changes)
        .await?;
    Ok(Json(json!({"snapshot": views::snapshot(&snap, v, false)})))
}

async fn delete(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, String)>,
) -> NovaResult<StatusCode> {
    check_project(&caller, &project)?;
    s.cloud.delete_volume_snapshot(&caller, &id).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn metadata(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, String)>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let snap = s.cloud.volume_snapshot(&caller, &id).await?;
    Ok(Json(json!({"metadata": snap.metadata})))
}

async fn change_metadata(
    s: &AppState,
    caller: &domain::identity::Caller,
    (project, id): (String, String),
    body: &Value,
    replace: bool,
) -> NovaResult<Json<Value>> {
    check_project(caller, &project)?;
    let given = string_map(body.get("metadata"), "metadata")?
        .ok_or_else(|| Error::invalid("Malformed request body: 'metadata' is required."))?;
    let mut metadata = if replace {
        Default::default()
    } else {
        s.cloud.volume_snapshot(caller, &id).await?.metadata
    };
    metadata.extend(given);
    let changes = VolumeChanges {
        metadata: Some(metadata),
        ..Default::default()
    };
    let snap = s.cloud.update_volume_snapshot(caller, &id, changes).await?;
    Ok(Json(json!({"metadata": snap.metadata})))
}

async fn merge_metadata(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(path): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    change_metadata(&s, &caller, path, &body, false).await
}

async fn replace_metadata(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(path): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    change_metadata(&s, &caller, path, &body, true).await
}

async fn metadata_item(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id, key)): Path<(String, String, String)>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let snap = s.cloud.volume_snapshot(&caller, &id).await?;
    let value = snap
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
    let mut metadata = s.cloud.volume_snapshot(&caller, &id).await?.metadata;
    metadata.insert(k.clone(), value.clone());
    let changes = VolumeChanges {
        metadata: Some(metadata),
        ..Default::default()
    };
    s.cloud
        .update_volume_snapshot(&caller, &id, changes)
        .await?;
    Ok(Json(json!({"meta": {k: value}})))
}

async fn delete_metadata_item(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id, key)): Path<(String, String, String)>,
) -> NovaResult<StatusCode> {
    check_project(&caller, &project)?;
    let mut metadata = s.cloud.volume_snapshot(&caller, &id).await?.metadata;
    if metadata.remove(&key).is_none() {
        return Err(Error::not_found("metadata key", &key).into());
    }
    let changes = VolumeChanges {
        metadata: Some(metadata),
        ..Default::default()
    };
    s.cloud
        .update_volume_snapshot(&caller, &id, changes)
        .await?;
    Ok(StatusCode::OK)
}

/// `POST …/snapshots/{id}/action`: `os-reset_status`, `os-force_delete`,
/// `os-update_snapshot_status`.
async fn action(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<StatusCode> {
    check_project(&caller, &project)?;
    let obj = body
        .as_object()
        .filter(|o| o.len() == 1)
        .ok_or_else(|| Error::invalid("A snapshot action body names exactly one action."))?;
    let (name, args) = obj.iter().next().expect("one entry");
    let status = || {
        args.get("status")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::invalid("Invalid input received: 'status' is required."))
    };
    match name.as_str() {
        "os-reset_status" => {
            s.cloud
                .reset_snapshot_status(&caller, &id, status()?)
                .await?
        }
        "os-force_delete" => s.cloud.force_delete_snapshot(&caller, &id).await?,
        "os-update_snapshot_status" => {
            let progress = args.get("progress").and_then(Value::as_str);
            s.cloud
                .update_snapshot_status(&caller, &id, status()?, progress)
                .await?
        }
        other => {
            s.cloud.volume_snapshot(&caller, &id).await?;
            return Err(Error::invalid(format!(
                "Invalid input received: the snapshot action '{other}' is not supported by Snapstack."
            ))
            .into());
        }
    }
    Ok(StatusCode::ACCEPTED)
}
