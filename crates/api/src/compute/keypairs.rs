//! `/os-keypairs`: a user's keypairs, by microversion: `type` from 2.2
//! (and 201/204 for create/delete), `user_id` (admins) from 2.10,
//! `limit`/`marker` from 2.35.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cloud::compute::NewKeypair;
use domain::keypair::Keypair;
use domain::Error;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Microversion, NovaResult};
use crate::auth::Auth;
use crate::json::JsonBody;
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/os-keypairs", get(list).post(create))
        .route("/os-keypairs/{name}", get(show).delete(delete))
}

#[derive(Deserialize, Default)]
struct KeypairQuery {
    user_id: Option<String>,
    limit: Option<String>,
    marker: Option<String>,
}

impl KeypairQuery {
    /// `user_id` counts from 2.10 only.
    fn user(&self, v: Microversion) -> Option<&str> {
        self.user_id.as_deref().filter(|_| v.at_least(10))
    }
}

fn summary(k: &Keypair, v: Microversion) -> Value {
    let mut out = json!({
        "name": k.name,
        "public_key": k.public_key,
        "fingerprint": k.fingerprint,
    });
    if v.at_least(2) {
        out["type"] = json!(k.key_type);
    }
    out
}

fn text(obj: &serde_json::Map<String, Value>, key: &str) -> Result<Option<String>, Error> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Error::invalid(format!(
            "Invalid input for field/attribute {key}: it must be a string."
        ))),
    }
}

async fn create(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Response> {
    let obj = body
        .get("keypair")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::invalid("'keypair' is a required property."))?;
    let mut allowed = vec!["name", "public_key"];
    if v.at_least(2) {
        allowed.push("type");
    }
    if v.at_least(10) {
        allowed.push("user_id");
    }
    if let Some(extra) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(Error::invalid(format!(
            "Additional properties are not allowed ('{extra}' was unexpected)."
        ))
        .into());
    }
    let name =
        text(obj, "name")?.ok_or_else(|| Error::invalid("'name' is a required property."))?;
    let new = NewKeypair {
        name,
        key_type: text(obj, "type")?,
        public_key: text(obj, "public_key")?,
        user_id: text(obj, "user_id")?,
    };
    let (keypair, private_key) = s.cloud.create_keypair(&caller, new).await?;
    let mut out = summary(&keypair, v);
    out["user_id"] = json!(keypair.user_id.to_string());
    if let Some(private_key) = private_key {
        out["private_key"] = json!(private_key);
    }
    let status = if v.at_least(2) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({"keypair": out}))).into_response())
}

async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Query(q): Query<KeypairQuery>,
) -> NovaResult<Json<Value>> {
    let mut keypairs = s.cloud.keypairs(&caller, q.user(v)).await?;
    if v.at_least(35) {
        if let Some(marker) = &q.marker {
            let pos = keypairs
                .iter()
                .position(|k| k.name == *marker)
                .ok_or_else(|| Error::invalid(format!("marker [{marker}] not found")))?;
            keypairs.drain(..=pos);
        }
        if let Some(limit) = &q.limit {
            let n: usize = limit
                .parse()
                .map_err(|_| Error::invalid(format!("limit '{limit}' is not an integer.")))?;
            keypairs.truncate(n);
        }
    }
    let shown: Vec<Value> = keypairs
        .iter()
        .map(|k| json!({"keypair": summary(k, v)}))
        .collect();
    Ok(Json(json!({"keypairs": shown})))
}

async fn show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Path(name): Path<String>,
    Query(q): Query<KeypairQuery>,
) -> NovaResult<Json<Value>> {
    let k = s.cloud.keypair(&caller, &name, q.user(v)).await?;
    let mut out = summary(&k, v);
    out["user_id"] = json!(k.user_id.to_string());
    out["id"] = json!(k.id);
    out["created_at"] = json!(k.created_at.format("%Y-%m-%dT%H:%M:%S%.6f").to_string());
    out["updated_at"] = Value::Null;
    out["deleted_at"] = Value::Null;
    out["deleted"] = json!(false);
    Ok(Json(json!({"keypair": out})))
}

async fn delete(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Path(name): Path<String>,
    Query(q): Query<KeypairQuery>,
) -> NovaResult<StatusCode> {
    s.cloud.delete_keypair(&caller, &name, q.user(v)).await?;
    Ok(if v.at_least(2) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::ACCEPTED
    })
}
