//! `/v2/metadefs/…` (Glance metadata definitions) and their schemas under
//! `/v2/schemas/metadefs/…`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use cloud::images::metadefs::{domain_time, MetadefKind, NamespaceFields, RESOURCE_TYPES};
use domain::Error;
use serde_json::{json, Map, Value};
use store::MetadefNamespaceRecord;

use crate::auth::Auth;
use crate::error::ApiResult;
use crate::json::JsonBody;
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    const NS: &str = "/metadefs/namespaces/{ns}";
    Router::new()
        .route("/metadefs/namespaces", get(list).post(create))
        .route(NS, get(show).put(update).delete(delete))
        .route("/metadefs/resource_types", get(resource_types))
        .route(
            &format!("{NS}/resource_types"),
            get(associations).post(associate),
        )
        .route(
            &format!("{NS}/resource_types/{{rt}}"),
            axum::routing::delete(dissociate),
        )
        .route(&format!("{NS}/objects"), get(objects).post(create_object))
        .route(
            &format!("{NS}/objects/{{name}}"),
            get(show_object).put(update_object).delete(delete_object),
        )
        .route(
            &format!("{NS}/properties"),
            get(properties).post(create_property),
        )
        .route(
            &format!("{NS}/properties/{{name}}"),
            get(show_property)
                .put(update_property)
                .delete(delete_property),
        )
        .route(
            &format!("{NS}/tags"),
            get(tags).post(replace_tags).delete(delete_tags),
        )
        .route(
            &format!("{NS}/tags/{{name}}"),
            get(show_tag)
                .post(create_tag)
                .put(update_tag)
                .delete(delete_tag),
        )
        .route("/schemas/metadefs/{name}", get(schema))
}

fn namespace_view(n: &MetadefNamespaceRecord, full: bool) -> Value {
    let mut out = json!({
        "namespace": n.namespace,
        "display_name": n.display_name,
        "description": n.description,
        "visibility": n.visibility,
        "protected": n.protected,
        "owner": n.owner.to_string(),
        "created_at": domain_time(n.created_at),
        "updated_at": domain_time(n.updated_at),
        "schema": "/v2/schemas/metadefs/namespace",
        "self": format!("/v2/metadefs/namespaces/{}", n.namespace),
    });
    let obj = out.as_object_mut().expect("an object");
    obj.retain(|_, v| !v.is_null());
    if let Some(rts) = n
        .doc
        .get("resource_type_associations")
        .and_then(Value::as_array)
    {
        if !rts.is_empty() {
            obj.insert("resource_type_associations".into(), json!(rts));
        }
    }
    if full {
        for (key, as_list) in [("properties", false), ("objects", true), ("tags", true)] {
            if let Some(m) = n.doc.get(key).and_then(Value::as_object) {
                if !m.is_empty() {
                    let v = if as_list {
                        Value::Array(m.values().cloned().collect())
                    } else {
                        Value::Object(m.clone())
                    };
                    obj.insert(key.into(), v);
                }
            }
        }
    }
    out
}

fn fields(body: &Value) -> Result<NamespaceFields, Error> {
    let text = |k: &str| -> Result<Option<String>, Error> {
        match body.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Error::invalid(format!("'{k}' must be a string."))),
        }
    };
    let protected = match body.get("protected") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(Error::invalid("'protected' must be a boolean.")),
    };
    Ok(NamespaceFields {
        namespace: text("namespace")?,
        display_name: text("display_name")?,
        description: text("description")?,
        visibility: text("visibility")?,
        protected,
    })
}

async fn list(State(s): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<Value>> {
    let shown: Vec<Value> = s
        .cloud
        .metadef_namespaces(&caller)
        .await?
        .iter()
        .map(|n| namespace_view(n, false))
        .collect();
    Ok(Json(json!({
        "namespaces": shown,
        "first": "/v2/metadefs/namespaces",
        "schema": "/v2/schemas/metadefs/namespaces",
    })))
}

/// The content a create body carries, as the stored document.
fn initial_doc(body: &Value) -> Value {
    let now = domain_time(chrono::Utc::now());
    let named = |key: &str| -> Map<String, Value> {
        match body.get(key) {
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| {
                    let mut v = v.clone();
                    v["name"] = json!(k);
                    (k.clone(), v)
                })
                .collect(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| {
                    let name = v.get("name")?.as_str()?.to_string();
                    let mut v = v.clone();
                    v["created_at"] = json!(now);
                    v["updated_at"] = json!(now);
                    Some((name, v))
                })
                .collect(),
            _ => Map::new(),
        }
    };
    let rts: Vec<Value> = body
        .get("resource_type_associations")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|v| {
                    let mut v = v.clone();
                    v["created_at"] = json!(now);
                    v["updated_at"] = json!(now);
                    v
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "properties": named("properties"),
        "objects": named("objects"),
        "tags": named("tags"),
        "resource_type_associations": rts,
    })
}

async fn create(
    State(s): State<AppState>,
    Auth(caller): Auth,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let n = s
        .cloud
        .create_metadef_namespace(&caller, fields(&body)?, initial_doc(&body))
        .await?;
    Ok((StatusCode::CREATED, Json(namespace_view(&n, true))))
}

async fn show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(ns): Path<String>,
) -> ApiResult<Json<Value>> {
    let n = s.cloud.metadef_namespace(&caller, &ns).await?;
    Ok(Json(namespace_view(&n, true)))
}

async fn update(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(ns): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    let n = s
        .cloud
        .update_metadef_namespace(&caller, &ns, fields(&body)?)
        .await?;
    Ok(Json(namespace_view(&n, false)))
}

async fn delete(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(ns): Path<String>,
) -> ApiResult<StatusCode> {
    s.cloud.delete_metadef_namespace(&caller, &ns).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn resource_types(Auth(caller): Auth) -> ApiResult<Json<Value>> {
    caller.require(domain::identity::Role::Reader, "list resource types")?;
    let epoch = "2014-08-28T17:13:06Z";
    let shown: Vec<Value> = RESOURCE_TYPES
        .iter()
        .map(|n| json!({"name": n, "created_at": epoch, "updated_at": epoch}))
        .collect();
    Ok(Json(json!({"resource_types": shown})))
}

async fn associations(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(ns): Path<String>,
) -> ApiResult<Json<Value>> {
    let list = s.cloud.metadef_resource_types(&caller, &ns).await?;
    Ok(Json(json!({"resource_type_associations": list})))
}

async fn associate(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(ns): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let stored = s
        .cloud
        .add_metadef_resource_type(&caller, &ns, body)
        .await?;
    Ok((StatusCode::CREATED, Json(stored)))
}

async fn dissociate(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((ns, rt)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    s.cloud
        .remove_metadef_resource_type(&caller, &ns, &rt)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn element_view(ns: &str, kind: MetadefKind, mut v: Value) -> Value {
    if kind == MetadefKind::Object {
        let name = v["name"].as_str().unwrap_or_default().to_string();
        v["schema"] = json!("/v2/schemas/metadefs/object");
        v["self"] = json!(format!("/v2/metadefs/namespaces/{ns}/objects/{name}"));
    }
    v
}

async fn objects(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(ns): Path<String>,
) -> ApiResult<Json<Value>> {
    let items: Vec<Value> = s
        .cloud
        .metadef_elements(&caller, &ns, MetadefKind::Object)
        .await?
        .into_values()
        .map(|v| element_view(&ns, MetadefKind::Object, v))
        .collect();
    Ok(Json(
        json!({"objects": items, "schema": "/v2/schemas/metadefs/objects"}),
    ))
}

async fn put_element(
    s: &AppState,
    caller: &domain::identity::Caller,
    ns: &str,
    kind: MetadefKind,
    old: Option<&str>,
    body: Value,
) -> Result<Value, Error> {
    if !body.is_object() {
        return Err(Error::invalid("The request body must be a JSON object."));
    }
    let stored = s
        .cloud
        .put_metadef_element(caller, ns, kind, old, body)
        .await?;
    Ok(element_view(ns, kind, stored))
}

async fn create_object(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(ns): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let v = put_element(&s, &caller, &ns, MetadefKind::Object, None, body).await?;
    Ok((StatusCode::CREATED, Json(v)))
}

async fn show_object(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let v = s
        .cloud
        .metadef_element(&caller, &ns, MetadefKind::Object, &name)
        .await?;
    Ok(Json(element_view(&ns, MetadefKind::Object, v)))
}

async fn update_object(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((ns, name)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    let v = put_element(&s, &caller, &ns, MetadefKind::Object, Some(&name), body).await?;
    Ok(Json(v))
}

async fn delete_object(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    s.cloud
        .delete_metadef_element(&caller, &ns, MetadefKind::Object, &name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn properties(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(ns): Path<String>,
) -> ApiResult<Json<Value>> {
    let items = s
        .cloud
        .metadef_elements(&caller, &ns, MetadefKind::Property)
        .await?;
    Ok(Json(json!({"properties": items})))
}

async fn create_property(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(ns): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let v = put_element(&s, &caller, &ns, MetadefKind::Property, None, body).await?;
    Ok((StatusCode::CREATED, Json(v)))
}

async fn show_property(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let v = s
        .cloud
        .metadef_element(&caller, &ns, MetadefKind::Property, &name)
        .await?;
    Ok(Json(v))
}

async fn update_property(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((ns, name)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    let v = put_element(&s, &caller, &ns, MetadefKind::Property, Some(&name), body).await?;
    Ok(Json(v))
}

async fn delete_property(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    s.cloud
        .delete_metadef_element(&caller, &ns, MetadefKind::Property, &name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn tags(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(ns): Path<String>,
) -> ApiResult<Json<Value>> {
    let items: Vec<Value> = s
        .cloud
        .metadef_elements(&caller, &ns, MetadefKind::Tag)
        .await?
        .into_values()
        .collect();
    Ok(Json(json!({"tags": items})))
}

/// `POST …/tags` with `{"tags": [{"name": …}, …]}`: replaces all tags.
async fn replace_tags(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(ns): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let names = body
        .get("tags")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::invalid("'tags' must be a list of {\"name\": …} objects."))?
        .iter()
        .map(|t| {
            t.get("name")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| Error::invalid("Every tag needs a name."))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let stored = s
        .cloud
        .replace_metadef_elements(&caller, &ns, MetadefKind::Tag, names)
        .await?;
    Ok((StatusCode::CREATED, Json(json!({"tags": stored}))))
}

async fn delete_tags(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(ns): Path<String>,
) -> ApiResult<StatusCode> {
    s.cloud
        .replace_metadef_elements(&caller, &ns, MetadefKind::Tag, Vec::new())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn show_tag(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let v = s
        .cloud
        .metadef_element(&caller, &ns, MetadefKind::Tag, &name)
        .await?;
    Ok(Json(v))
}

async fn create_tag(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let v = put_element(
        &s,
        &caller,
        &ns,
        MetadefKind::Tag,
        None,
        json!({"name": name}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(v)))
}

async fn update_tag(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((ns, name)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    let v = put_element(&s, &caller, &ns, MetadefKind::Tag, Some(&name), body).await?;
    Ok(Json(v))
}

async fn delete_tag(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    s.cloud
        .delete_metadef_element(&caller, &ns, MetadefKind::Tag, &name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v2/schemas/metadefs/{name}`: the JSON schemas Glance publishes.
async fn schema(Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let string = json!({"type": "string"});
    let stamp = json!({"type": "string", "readOnly": true, "format": "date-time"});
    let one = |title: &str, props: Value, required: &[&str]| json!({"name": title, "properties": props, "required": required, "additionalProperties": false});
    let many = |title: &str, item_key: &str, item: Value| {
        json!({
            "name": title,
            "properties": {item_key: {"type": "array", "items": item}, "first": string, "next": string, "schema": string},
            "links": [{"rel": "first", "href": "{first}"}, {"rel": "next", "href": "{next}"}, {"rel": "describedby", "href": "{schema}"}],
        })
    };
    let namespace = one(
        "namespace",
        json!({
            "namespace": {"type": "string", "maxLength": 80},
            "display_name": {"type": "string", "maxLength": 80},
            "description": {"type": "string", "maxLength": 500},
            "visibility": {"type": "string", "enum": ["public", "private"]},
            "protected": {"type": "boolean"},
            "owner": {"type": "string", "maxLength": 255},
            "created_at": stamp, "updated_at": stamp,
            "schema": {"type": "string", "readOnly": true},
            "self": {"type": "string", "readOnly": true},
        }),
        &["namespace"],
    );
    let resource_type = one(
        "resource_type_association",
        json!({
            "name": {"type": "string", "maxLength": 80},
            "prefix": {"type": "string", "maxLength": 80},
            "properties_target": {"type": "string", "maxLength": 80},
            "created_at": stamp, "updated_at": stamp,
        }),
        &["name"],
    );
    let property = one(
        "property",
        json!({
            "name": {"type": "string", "maxLength": 255},
            "title": string, "description": string,
            "type": {"type": "string", "enum": ["array", "boolean", "integer", "number", "object", "string", null]},
            "enum": {"type": "array"}, "default": {}, "readonly": {"type": "boolean"},
        }),
        &["name", "title", "type"],
    );
    let object = one(
        "object",
        json!({
            "name": {"type": "string", "maxLength": 80},
            "description": string,
            "required": {"type": "array", "items": string},
            "properties": {"type": "object"},
            "created_at": stamp, "updated_at": stamp,
            "schema": {"type": "string", "readOnly": true},
            "self": {"type": "string", "readOnly": true},
        }),
        &["name"],
    );
    let tag = one(
        "tag",
        json!({"name": {"type": "string", "maxLength": 255}, "created_at": stamp, "updated_at": stamp}),
        &["name"],
    );
    let doc = match name.as_str() {
        "namespace" => namespace,
        "namespaces" => many("namespaces", "namespaces", namespace),
        "resource_type" => resource_type,
        "resource_types" => many(
            "resource_type_associations",
            "resource_type_associations",
            resource_type,
        ),
        "property" => property,
        "properties" => {
            json!({"name": "properties", "properties": {"properties": {"type": "object", "additionalProperties": property}}})
        }
        "object" => object,
        "objects" => many("objects", "objects", object),
        "tag" => tag,
        "tags" => many("tags", "tags", tag),
        other => return Err(Error::not_found("Schema", format!("metadefs/{other}")).into()),
    };
    Ok(Json(doc))
}
