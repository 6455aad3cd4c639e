//! Nova's volume proxies, `/os-volumes` and `/os-snapshots` (below
//! microversion 2.36): Cinder volumes and snapshots in Nova's camelCase
//! shape, `limit`/`offset` paging.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use cloud::volumes::{NewSnapshot, NewVolume};
use domain::volume::{Volume, VolumeSnapshot};
use domain::Error;
use serde_json::{json, Map, Value};

use super::{Microversion, NovaResult};
use crate::auth::Auth;
use crate::json::JsonBody;
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/os-volumes", get(list).post(create))
        .route("/os-volumes/detail", get(list))
        .route("/os-volumes/{id}", get(show).delete(delete))
        .route("/os-snapshots", get(list_snapshots).post(create_snapshot))
        .route("/os-snapshots/detail", get(list_snapshots))
        .route(
            "/os-snapshots/{id}",
            get(show_snapshot).delete(delete_snapshot),
        )
}

fn check(v: Microversion) -> Result<(), Error> {
    if v.at_least(36) {
        return Err(Error::not_found("API", "os-volumes (removed at 2.36)"));
    }
    Ok(())
}

fn stamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

async fn view(s: &AppState, v: &Volume) -> Result<Value, Error> {
    let attachments = match s.cloud.attachment_of_volume(v).await? {
        Some(a) => json!([{
            "id": v.id.to_string(),
            "volumeId": v.id.to_string(),
            "serverId": a.server_id.to_string(),
            "device": a.device,
        }]),
        None => json!([{}]),
    };
    let snapshot_id = match v.source {
        domain::volume::VolumeSource::Snapshot(sid) => Some(sid.to_string()),
        _ => None,
    };
    Ok(json!({
        "id": v.id.to_string(),
        "status": v.status.as_str(),
        "size": v.size,
        "availabilityZone": "nova",
        "createdAt": stamp(v.created_at),
        "displayName": v.name,
        "displayDescription": v.description,
        "volumeType": s.cloud.volume_type_name(v.volume_type_id).await?,
        "snapshotId": snapshot_id,
        "metadata": v.metadata,
        "attachments": attachments,
    }))
}

fn snapshot_view(x: &VolumeSnapshot) -> Value {
    json!({
        "id": x.id.to_string(),
        "volumeId": x.volume_id.to_string(),
        "status": x.status.as_str(),
        "size": x.size,
        "createdAt": stamp(x.created_at),
        "displayName": x.name,
        "displayDescription": x.description,
    })
}

/// `offset` then `limit`, as Nova pages these lists.
fn page<T>(mut items: Vec<T>, q: &BTreeMap<String, String>) -> Result<Vec<T>, Error> {
    let num = |key: &str| -> Result<Option<usize>, Error> {
        q.get(key)
            .map(|t| {
                t.parse()
                    .map_err(|_| Error::invalid(format!("Invalid {key}: {t}")))
            })
            .transpose()
    };
    if let Some(offset) = num("offset")? {
        items.drain(..offset.min(items.len()));
    }
    if let Some(limit) = num("limit")? {
        items.truncate(limit);
    }
    Ok(items)
}

fn text(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, Error> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(t)) => Ok(Some(t.clone())),
        Some(_) => Err(Error::invalid(format!("'{key}' must be a string."))),
    }
}

async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Query(q): Query<BTreeMap<String, String>>,
) -> NovaResult<Json<Value>> {
    check(v)?;
    let volumes = page(s.cloud.volumes(&caller, false).await?, &q)?;
    let mut shown = Vec::with_capacity(volumes.len());
    for vol in &volumes {
        shown.push(view(&s, vol).await?);
    }
    Ok(Json(json!({"volumes": shown})))
}

async fn show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Path(id): Path<String>,
) -> NovaResult<Json<Value>> {
    check(v)?;
    let vol = s.cloud.volume(&caller, &id).await?;
    Ok(Json(json!({"volume": view(&s, &vol).await?})))
}

async fn create(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    check(v)?;
    let obj = body
        .get("volume")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::invalid("'volume' is a required property."))?;
    let size = match obj.get("size") {
        Some(Value::Number(n)) => n.as_u64().filter(|n| *n > 0),
        Some(Value::String(t)) => t.trim().parse::<u64>().ok().filter(|n| *n > 0),
        _ => None,
    }
    .ok_or_else(|| Error::invalid("'size' must be an integer of 1 or more."))?;
    let metadata = match obj.get("metadata") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|t| (k.clone(), t.to_string()))
                    .ok_or_else(|| Error::invalid("Metadata values must be strings."))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(Error::invalid("'metadata' must be an object.").into()),
    };
    let new = NewVolume {
        name: text(obj, "display_name")?,
        description: text(obj, "display_description")?,
        size: Some(size),
        image_ref: text(obj, "imageRef")?,
        snapshot_id: text(obj, "snapshot_id")?,
        source_volid: None,
        metadata,
        volume_type: text(obj, "volume_type")?,
    };
    let vol = s.cloud.create_volume(&caller, new).await?;
    Ok(Json(json!({"volume": view(&s, &vol).await?})))
}

async fn delete(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Path(id): Path<String>,
) -> NovaResult<StatusCode> {
    check(v)?;
    s.cloud.delete_volume(&caller, &id, false).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn list_snapshots(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Query(q): Query<BTreeMap<String, String>>,
) -> NovaResult<Json<Value>> {
    check(v)?;
    let snaps = page(s.cloud.volume_snapshots(&caller, false).await?, &q)?;
    let shown: Vec<Value> = snaps.iter().map(snapshot_view).collect();
    Ok(Json(json!({"snapshots": shown})))
}

async fn show_snapshot(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Path(id): Path<String>,
) -> NovaResult<Json<Value>> {
    check(v)?;
    let snap = s.cloud.volume_snapshot(&caller, &id).await?;
    Ok(Json(json!({"snapshot": snapshot_view(&snap)})))
}

async fn create_snapshot(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    check(v)?;
    let obj = body
        .get("snapshot")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::invalid("'snapshot' is a required property."))?;
    let volume_id = text(obj, "volume_id")?
        .ok_or_else(|| Error::invalid("'volume_id' is a required property."))?;
    let force = match obj.get("force") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(t)) => matches!(t.to_ascii_lowercase().as_str(), "true" | "1" | "yes"),
        _ => false,
    };
    let new = NewSnapshot {
        volume_id,
        name: text(obj, "display_name")?,
        description: text(obj, "display_description")?,
        metadata: BTreeMap::new(),
        force,
    };
    let snap = s.cloud.create_volume_snapshot(&caller, new).await?;
    Ok(Json(json!({"snapshot": snapshot_view(&snap)})))
}

async fn delete_snapshot(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Path(id): Path<String>,
) -> NovaResult<StatusCode> {
    check(v)?;
    s.cloud.delete_volume_snapshot(&caller, &id).await?;
    Ok(StatusCode::ACCEPTED)
}
