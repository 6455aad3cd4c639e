//! Image v2 (Glance shapes): images, their data, tags, members, actions.

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use cloud::images::{patch, Download, NewImage, DEFAULT_PAGE};
use domain::identity::Caller;
use domain::image::{Image, ImageStatus, Visibility};
use domain::{Error, ErrorKind};
use futures_util::TryStreamExt;
use http::HeaderValue;
use serde_json::{json, Value};
use store::{ImageFilter, ImageMember, SortDir};
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::json::{parse, JsonBody};
use crate::AppState;

mod info;
mod metadefs;

const PATCH_TYPES: &str =
    "application/openstack-images-v2.0-json-patch, application/openstack-images-v2.1-json-patch";

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/images", get(list_images).post(create_image))
        .route(
            "/images/{id}",
            get(show_image).patch(update_image).delete(delete_image),
        )
        .route(
            "/images/{id}/file",
            put(upload).layer(DefaultBodyLimit::disable()).get(download),
        )
        .route("/images/{id}/actions/deactivate", post(deactivate))
        .route("/images/{id}/actions/reactivate", post(reactivate))
        .route("/images/{id}/tags/{tag}", put(add_tag).delete(remove_tag))
        .route("/images/{id}/members", get(list_members).post(add_member))
        .route(
            "/images/{id}/members/{member}",
            get(show_member).put(update_member).delete(remove_member),
        )
        .route("/schemas/image", get(image_schema))
        .route("/schemas/images", get(images_schema))
        .route("/schemas/member", get(member_schema))
        .route("/schemas/members", get(members_schema))
        .merge(metadefs::routes())
        .merge(info::routes())
}

// ---- views -------------------------------------------------------------

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn image_view(img: &Image, caller: &Caller) -> Value {
    let mut v = json!({
        "id": img.id.to_string(),
        "name": img.name,
        "status": img.status.as_str(),
        "visibility": img.visibility.as_str(),
        "protected": img.protected,
        "os_hidden": img.os_hidden,
        "checksum": img.checksum,
        "os_hash_algo": img.os_hash_algo,
        "os_hash_value": img.os_hash_value,
        "owner": img.owner.to_string(),
        "size": img.size,
        "virtual_size": img.virtual_size,
        "min_disk": img.min_disk,
        "min_ram": img.min_ram,
        "disk_format": img.disk_format,
        "container_format": img.container_format,
        "tags": img.tags,
        "created_at": timestamp(img.created_at),
        "updated_at": timestamp(img.updated_at),
        "self": format!("/v2/images/{}", img.id),
        "file": format!("/v2/images/{}/file", img.id),
        "schema": "/v2/schemas/image",
    });
    if let Some(obj) = v.as_object_mut() {
        for (key, value) in &img.properties {
            obj.insert(key.clone(), json!(value));
        }
        if let (true, Some(location)) = (caller.is_admin(), &img.location) {
            obj.insert("direct_url".into(), json!(location));
        }
    }
    v
}

fn member_view(m: &ImageMember) -> Value {
    json!({
        "image_id": m.image_id.to_string(), "member_id": m.member.to_string(), "status": m.status.as_str(),
        "created_at": timestamp(m.created_at), "updated_at": timestamp(m.updated_at),
        "schema": "/v2/schemas/member",
    })
}

// ---- images ------------------------------------------------------------

async fn create_image(
    State(s): State<AppState>,
    Auth(caller): Auth,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Response> {
    let Value::Object(obj) = body else {
        return Err(Error::invalid("The request body must be a JSON object.").into());
    };
    let img = s
        .cloud
        .create_image(&caller, NewImage::from_json(obj)?)
        .await?;
    let mut response = (StatusCode::CREATED, Json(image_view(&img, &caller))).into_response();
    if let Ok(v) = HeaderValue::from_str(&s.url(&format!("/image/v2/images/{}", img.id))) {
        response.headers_mut().insert(http::header::LOCATION, v);
    }
    Ok(response)
}

fn parse_filter(query: &str) -> Result<(ImageFilter, Vec<(String, String)>), Error> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|e| Error::invalid(format!("Cannot read the query string: {e}")))?;
    let mut f = ImageFilter {
        limit: DEFAULT_PAGE,
        ..Default::default()
    };
    let mut kept = Vec::new();
    for (key, value) in pairs {
        match key.as_str() {
            "limit" => {
                f.limit = value.parse::<u32>().map_err(|_| {
                    Error::invalid(format!("limit '{value}' is not a non-negative integer."))
                })?;
                continue;
            }
            "marker" => {
                f.marker = Some(value.parse().map_err(|_| {
                    Error::invalid(format!("marker '{value}' is not an image id."))
                })?);
                continue;
            }
            "name" => f.name = Some(value.clone()),
            "status" => {
                f.status =
                    Some(ImageStatus::parse(&value).ok_or_else(|| {
                        Error::invalid(format!("Invalid status filter '{value}'."))
                    })?)
            }
            "visibility" if value == "all" => {}
            "visibility" => f.visibility = Some(Visibility::parse(&value)?),
            "owner" => {
                f.owner =
                    Some(value.parse().map_err(|_| {
                        Error::invalid(format!("owner '{value}' is not a project id."))
                    })?)
            }
            "tag" => f.tags.push(value.clone()),
            "disk_format" => f.disk_format = Some(value.clone()),
            "container_format" => f.container_format = Some(value.clone()),
            "protected" => f.protected = Some(parse_bool(&key, &value)?),
            "os_hidden" => f.os_hidden = Some(parse_bool(&key, &value)?),
            "sort_dir" => f.sort_dir = parse_sort_dir(&value)?,
            "sort_key" => check_sort_key(&value)?,
            "sort" => {
                let (k, dir) = value.split_once(':').unwrap_or((value.as_str(), "desc"));
                check_sort_key(k)?;
                f.sort_dir = parse_sort_dir(dir)?;
            }
            "member_status" => {}
            // As Glance: any other key filters on a free-form property
            // (`openstack image list --property k=v`).
            _ => f.properties.push((key.clone(), value.clone())),
        }
        kept.push((key, value));
    }
    Ok((f, kept))
}

fn parse_bool(key: &str, value: &str) -> Result<bool, Error> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(Error::invalid(format!("{key} '{value}' is not a boolean."))),
    }
}

fn parse_sort_dir(v: &str) -> Result<SortDir, Error> {
    match v {
        "desc" => Ok(SortDir::Desc),
        "asc" => Ok(SortDir::Asc),
        other => Err(Error::invalid(format!(
            "Invalid sort direction '{other}': use asc or desc."
        ))),
    }
}

fn check_sort_key(k: &str) -> Result<(), Error> {
    if k == "created_at" {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "Sorting by '{k}' is not supported; images sort by created_at."
        )))
    }
}

async fn list_images(
    State(s): State<AppState>,
    Auth(caller): Auth,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Value>> {
    let (filter, kept) = parse_filter(q.as_deref().unwrap_or(""))?;
    let limit = filter.limit;
    let page = s.cloud.list_images(&caller, filter).await?;
    let images: Vec<Value> = page.images.iter().map(|i| image_view(i, &caller)).collect();
    let mut body = json!({"images": images, "first": "/v2/images", "schema": "/v2/schemas/images"});
    if let Some(marker) = page.next_marker {
        let mut params = kept;
        params.push(("limit".into(), limit.to_string()));
        params.push(("marker".into(), marker.to_string()));
        let query = serde_urlencoded::to_string(&params).unwrap_or_default();
        body["next"] = json!(format!("/v2/images?{query}"));
    }
    Ok(Json(body))
}

async fn show_image(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let img = s.cloud.image(&caller, &id).await?;
    Ok(Json(image_view(&img, &caller)))
}

async fn update_image(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> ApiResult<Response> {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media != "application/openstack-images-v2.1-json-patch"
        && media != "application/openstack-images-v2.0-json-patch"
    {
        let err = ApiError(Error::new(
            ErrorKind::UnsupportedMediaType,
            format!("Content type '{media}' is not supported for PATCH; use {PATCH_TYPES}."),
        ));
        let mut response = err.into_response();
        response
            .headers_mut()
            .insert("accept-patch", HeaderValue::from_static(PATCH_TYPES));
        return Ok(response);
    }
    let ops = patch::parse_document(parse(&body)?)?;
    let img = s.cloud.update_image(&caller, &id, ops).await?;
    Ok(Json(image_view(&img, &caller)).into_response())
}

async fn delete_image(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.cloud.delete_image(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn deactivate(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.cloud.set_image_active(&caller, &id, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn reactivate(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.cloud.set_image_active(&caller, &id, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn add_tag(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((id, tag)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    s.cloud.set_image_tag(&caller, &id, &tag, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_tag(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((id, tag)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    s.cloud.set_image_tag(&caller, &id, &tag, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- data --------------------------------------------------------------

async fn upload(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<StatusCode> {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/octet-stream") {
        return Err(Error::new(
            ErrorKind::UnsupportedMediaType,
            format!("Image data must be sent as application/octet-stream, not '{content_type}'."),
        )
        .into());
    }
    let length = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    s.cloud.upload_image(&caller, &id, stream, length).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `Range: bytes=first-last` with either end left out (`a-`, `-n`).
type ByteRange = (Option<u64>, Option<u64>);

/// Reads `Range: bytes=a-b` (one range; `a-`, `-n` too).
fn parse_range(headers: &HeaderMap) -> Result<Option<ByteRange>, Error> {
    let Some(value) = headers.get(http::header::RANGE) else {
        return Ok(None);
    };
    let bad = || {
        Error::new(
            ErrorKind::RangeNotSatisfiable,
            "The Range header is malformed or asks for several ranges.",
        )
    };
    let spec = value
        .to_str()
        .map_err(|_| bad())?
        .strip_prefix("bytes=")
        .ok_or_else(bad)?;
    let (first, last) = spec.split_once('-').ok_or_else(bad)?;
    let num = |s: &str| -> Result<Option<u64>, Error> {
        if s.trim().is_empty() {
            Ok(None)
        } else {
            s.trim().parse().map(Some).map_err(|_| bad())
        }
    };
    let range = (num(first)?, num(last)?);
    if range == (None, None) || spec.contains(',') {
        return Err(bad());
    }
    Ok(Some(range))
}

async fn download(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let range = parse_range(&headers)?;
    let (reader, offset, length, total, checksum) =
        match s.cloud.download_image(&caller, &id, range).await? {
            Download::NoData => return Ok(StatusCode::NO_CONTENT.into_response()),
            Download::Data {
                reader,
                offset,
                length,
                total,
                checksum,
            } => (reader, offset, length, total, checksum),
        };
    let stream = ReaderStream::with_capacity(reader.reader.take(length), 1 << 20);
    let mut response = Response::new(Body::from_stream(stream));
    let h = response.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(length));
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        let end = offset + length.saturating_sub(1);
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {offset}-{end}/{total}")) {
            response
                .headers_mut()
                .insert(http::header::CONTENT_RANGE, v);
        }
    } else if let Some(Ok(v)) = checksum.map(|c| HeaderValue::from_str(&c)) {
        response.headers_mut().insert("content-md5", v);
    }
    Ok(response)
}

// ---- members -----------------------------------------------------------

async fn list_members(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let members = s.cloud.image_members(&caller, &id).await?;
    Ok(Json(
        json!({"members": members.iter().map(member_view).collect::<Vec<_>>(), "schema": "/v2/schemas/members"}),
    ))
}

async fn add_member(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    let member = body
        .get("member")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid("Expecting 'member' (a project id) in the request body."))?;
    let m = s.cloud.add_image_member(&caller, &id, member).await?;
    Ok(Json(member_view(&m)))
}

async fn show_member(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((id, member)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let m = s.cloud.image_member(&caller, &id, &member).await?;
    Ok(Json(member_view(&m)))
}

async fn update_member(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((id, member)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    let status = body
        .get("status")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid("Expecting 'status' in the request body."))?;
    let m = s
        .cloud
        .set_image_member_status(&caller, &id, &member, status)
        .await?;
    Ok(Json(member_view(&m)))
}

async fn remove_member(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((id, member)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    s.cloud.remove_image_member(&caller, &id, &member).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- schemas -----------------------------------------------------------

fn image_schema_value() -> Value {
    let string = json!({"type": ["null", "string"]});
    json!({
        "name": "image",
        "additionalProperties": {"type": "string"},
        "properties": {
            "id": {"type": "string", "readOnly": true},
            "name": {"type": ["null", "string"], "maxLength": 255},
            "status": {"type": "string", "readOnly": true, "enum": ["queued", "saving", "active", "killed", "deleted", "deactivated"]},
            "visibility": {"type": "string", "enum": ["community", "public", "private", "shared"]},
            "protected": {"type": "boolean"},
            "os_hidden": {"type": "boolean"},
            "checksum": {"type": ["null", "string"], "readOnly": true},
            "os_hash_algo": {"type": ["null", "string"], "readOnly": true},
            "os_hash_value": {"type": ["null", "string"], "readOnly": true},
            "owner": string,
            "size": {"type": ["null", "integer"], "readOnly": true},
            "virtual_size": {"type": ["null", "integer"], "readOnly": true},
            "min_ram": {"type": "integer"},
            "min_disk": {"type": "integer"},
            "container_format": {"type": ["null", "string"], "enum": [null, "ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed"]},
            "disk_format": {"type": ["null", "string"], "enum": [null, "ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop"]},
            "created_at": {"type": "string", "readOnly": true},
            "updated_at": {"type": "string", "readOnly": true},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 255}},
            "direct_url": {"type": "string", "readOnly": true},
            "self": {"type": "string", "readOnly": true},
            "file": {"type": "string", "readOnly": true},
            "schema": {"type": "string", "readOnly": true},
        },
        "links": [
            {"rel": "self", "href": "{self}"}, {"rel": "enclosure", "href": "{file}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    })
}

async fn image_schema() -> Json<Value> {
    Json(image_schema_value())
}

async fn images_schema() -> Json<Value> {
    Json(json!({
        "name": "images",
        "properties": {"images": {"type": "array", "items": image_schema_value()}, "schema": {"type": "string"},
                       "first": {"type": "string"}, "next": {"type": "string"}},
        "links": [{"rel": "first", "href": "{first}"}, {"rel": "next", "href": "{next}"}, {"rel": "describedby", "href": "{schema}"}],
    }))
}

/// Glance's member schema (`GET /schemas/member`).
fn member_schema_value() -> Value {
    json!({
        "name": "member",
        "properties": {
            "created_at": {"type": "string", "description": "Date and time of image member creation"},
            "image_id": {"type": "string", "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"},
            "member_id": {"type": "string", "description": "An identifier for the image member (tenantId)"},
            "schema": {"type": "string", "readOnly": true},
            "status": {"type": "string", "enum": ["pending", "accepted", "rejected"]},
            "updated_at": {"type": "string", "description": "Date and time of last modification of image member"},
        },
    })
}

async fn member_schema() -> Json<Value> {
    Json(member_schema_value())
}

async fn members_schema() -> Json<Value> {
    Json(json!({
        "name": "members",
        "properties": {
            "members": {"type": "array", "items": member_schema_value()},
            "schema": {"type": "string"},
        },
        "links": [{"rel": "schema", "href": "{schema}"}],
    }))
}
