//! Nova's image proxy, `/images` (below microversion 2.36): Glance images
//! in Nova's shape, with their properties as `metadata`.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use cloud::images::patch;
use domain::identity::Caller;
use domain::image::{Image, ImageStatus};
use domain::Error;
use serde_json::{json, Value};

use super::{Microversion, NovaResult};
use crate::auth::Auth;
use crate::json::JsonBody;
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/images", get(list))
        .route("/images/detail", get(list_detail))
        .route("/images/{id}", get(show).delete(delete))
        .route(
            "/images/{id}/metadata",
            get(metadata).post(merge_metadata).put(replace_metadata),
        )
        .route(
            "/images/{id}/metadata/{key}",
            get(metadata_item)
                .put(put_metadata_item)
                .delete(delete_metadata_item),
        )
}

/// The proxy is gone from 2.36.
fn check(v: Microversion) -> Result<(), Error> {
    if v.at_least(36) {
        return Err(Error::not_found("API", "images (removed at 2.36)"));
    }
    Ok(())
}

fn status(img: &Image) -> (&'static str, u32) {
    match img.status {
        ImageStatus::Active => ("ACTIVE", 100),
        ImageStatus::Queued => ("SAVING", 25),
        ImageStatus::Saving => ("SAVING", 50),
        ImageStatus::Deleted => ("DELETED", 0),
        ImageStatus::Killed => ("ERROR", 0),
        ImageStatus::Deactivated => ("UNKNOWN", 0),
    }
}

fn links(s: &AppState, id: &str) -> Value {
    json!([
        {"rel": "self", "href": s.url(&format!("/compute/v2.1/images/{id}"))},
        {"rel": "bookmark", "href": s.url(&format!("/compute/images/{id}"))},
        {"rel": "alternate", "type": "application/vnd.openstack.image", "href": s.url(&format!("/image/v2/images/{id}"))},
    ])
}

fn stamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn summary(s: &AppState, img: &Image) -> Value {
    let id = img.id.to_string();
    json!({"id": id, "name": img.name, "links": links(s, &id)})
}

fn detail(s: &AppState, img: &Image) -> Value {
    let id = img.id.to_string();
    let (st, progress) = status(img);
    let mut out = json!({
        "id": id,
        "name": img.name,
        "status": st,
        "progress": progress,
        "created": stamp(img.created_at),
        "updated": stamp(img.updated_at),
        "minDisk": img.min_disk,
        "minRam": img.min_ram,
        "metadata": img.properties,
        "links": links(s, &id),
        "OS-EXT-IMG-SIZE:size": img.size,
    });
    if let Some(server) = img.properties.get("instance_uuid") {
        out["server"] = json!({"id": server, "links": [
            {"rel": "self", "href": s.url(&format!("/compute/v2.1/servers/{server}"))},
            {"rel": "bookmark", "href": s.url(&format!("/compute/servers/{server}"))},
        ]});
    }
    out
}

/// Every image the caller sees, filtered as Nova's proxy does.
async fn filtered(
    s: &AppState,
    caller: &Caller,
    q: &BTreeMap<String, String>,
) -> Result<Vec<Image>, Error> {
    let filter = store::ImageFilter {
        limit: cloud::images::MAX_PAGE,
        ..Default::default()
    };
    let mut images = s.cloud.list_images(caller, filter).await?.images;
    let num = |key: &str| -> Result<Option<u64>, Error> {
        q.get(key)
            .map(|t| {
                t.parse()
                    .map_err(|_| Error::invalid(format!("Invalid {key}: {t}")))
            })
            .transpose()
    };
    if let Some(name) = q.get("name") {
        images.retain(|i| i.name.as_deref() == Some(name.as_str()));
    }
    if let Some(st) = q.get("status") {
        images.retain(|i| status(i).0.eq_ignore_ascii_case(st));
    }
    if let Some(server) = q.get("server") {
        let server = server.rsplit('/').next().unwrap_or_default().to_string();
        images.retain(|i| i.properties.get("instance_uuid") == Some(&server));
    }
    if let Some(kind) = q.get("type") {
        images.retain(|i| i.properties.get("image_type") == Some(kind));
    }
    if let Some(min) = num("minRam")? {
        images.retain(|i| i.min_ram >= min);
    }
    if let Some(min) = num("minDisk")? {
        images.retain(|i| i.min_disk >= min);
    }
    if let Some(since) = q.get("changes-since") {
        let since = chrono::DateTime::parse_from_rfc3339(since)
            .map_err(|_| Error::invalid(format!("Invalid changes-since value: {since}")))?;
        images.retain(|i| i.updated_at >= since);
    }
    if let Some(marker) = q.get("marker") {
        let pos = images
            .iter()
            .position(|i| i.id.to_string() == *marker)
            .ok_or_else(|| Error::invalid(format!("marker [{marker}] not found")))?;
        images.drain(..=pos);
    }
    if let Some(limit) = num("limit")? {
        images.truncate(limit as usize);
    }
    Ok(images)
}

async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Query(q): Query<BTreeMap<String, String>>,
) -> NovaResult<Json<Value>> {
    check(v)?;
    let images = filtered(&s, &caller, &q).await?;
    let shown: Vec<Value> = images.iter().map(|i| summary(&s, i)).collect();
    Ok(Json(json!({"images": shown})))
}

async fn list_detail(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Query(q): Query<BTreeMap<String, String>>,
) -> NovaResult<Json<Value>> {
    check(v)?;
    let images = filtered(&s, &caller, &q).await?;
    let shown: Vec<Value> = images.iter().map(|i| detail(&s, i)).collect();
    Ok(Json(json!({"images": shown})))
}

async fn show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Path(id): Path<String>,
) -> NovaResult<Json<Value>> {
    check(v)?;
    let img = s.cloud.image(&caller, &id).await?;
    Ok(Json(json!({"image": detail(&s, &img)})))
}

async fn delete(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Path(id): Path<String>,
) -> NovaResult<StatusCode> {
    check(v)?;
    s.cloud.delete_image(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn metadata(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Path(id): Path<String>,
) -> NovaResult<Json<Value>> {
    check(v)?;
    let img = s.cloud.image(&caller, &id).await?;
    Ok(Json(json!({"metadata": img.properties})))
}

fn string_map(v: Option<&Value>, key: &str) -> Result<BTreeMap<String, String>, Error> {
    let obj = v
        .and_then(Value::as_object)
        .ok_or_else(|| Error::invalid(format!("Malformed request body: '{key}' is required.")))?;
    obj.iter()
        .map(|(k, v)| {
            v.as_str()
                .map(|t| (k.clone(), t.to_string()))
                .ok_or_else(|| Error::invalid("Metadata values must be strings."))
        })
        .collect()
}

/// Sets (`add`), replaces the whole set of, or removes properties through
/// Glance's patch, so Glance's rules (reserved names) apply.
async fn apply(
    s: &AppState,
    caller: &Caller,
    id: &str,
    set: &BTreeMap<String, String>,
    remove: &[String],
) -> Result<Image, Error> {
    let mut ops: Vec<Value> = set
        .iter()
        .map(|(k, v)| json!({"op": "add", "path": format!("/{}", k.replace('~', "~0").replace('/', "~1")), "value": v}))
        .collect();
    ops.extend(
        remove
            .iter()
            .map(|k| json!({"op": "remove", "path": format!("/{}", k.replace('~', "~0").replace('/', "~1"))})),
    );
    let ops = patch::parse_document(Value::Array(ops))?;
    s.cloud.update_image(caller, id, ops).await
}

async fn merge_metadata(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    check(v)?;
    let given = string_map(body.get("metadata"), "metadata")?;
    let img = apply(&s, &caller, &id, &given, &[]).await?;
    Ok(Json(json!({"metadata": img.properties})))
}

async fn replace_metadata(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    check(v)?;
    let given = string_map(body.get("metadata"), "metadata")?;
    let current = s.cloud.image(&caller, &id).await?.properties;
    let gone: Vec<String> = current
        .keys()
        .filter(|k| !given.contains_key(*k))
        .cloned()
        .collect();
    let img = apply(&s, &caller, &id, &given, &gone).await?;
    Ok(Json(json!({"metadata": img.properties})))
}

async fn metadata_item(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Path((id, key)): Path<(String, String)>,
) -> NovaResult<Json<Value>> {
    check(v)?;
    let img = s.cloud.image(&caller, &id).await?;
    let value = img
        .properties
        .get(&key)
        .ok_or_else(|| Error::not_found("Image metadata key", &key))?;
    Ok(Json(json!({"meta": {key: value}})))
}

async fn put_metadata_item(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Path((id, key)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    check(v)?;
    let meta = string_map(body.get("meta"), "meta")?;
    if meta.len() != 1 || !meta.contains_key(&key) {
        return Err(Error::invalid("Request body and URI mismatch").into());
    }
    apply(&s, &caller, &id, &meta, &[]).await?;
    Ok(Json(json!({"meta": meta})))
}

async fn delete_metadata_item(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Path((id, key)): Path<(String, String)>,
) -> NovaResult<StatusCode> {
    check(v)?;
    let img = s.cloud.image(&caller, &id).await?;
    if !img.properties.contains_key(&key) {
        return Err(Error::not_found("Image metadata key", &key).into());
    }
    apply(&s, &caller, &id, &BTreeMap::new(), &[key]).await?;
    Ok(StatusCode::NO_CONTENT)
}
