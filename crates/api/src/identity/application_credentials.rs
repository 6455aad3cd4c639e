//! `/v3/users/{user}/application_credentials` and the
//! `application_credential` authentication method.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, NaiveDateTime, Utc};
use cloud::identity::{AppCredentialAuth, NewAppCredential, UserRef};
use domain::Error;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use store::AppCredentialRecord;

use super::{list_view, str_at, NameFilter};
use crate::auth::Auth;
use crate::error::ApiResult;
use crate::json::JsonBody;
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/users/{user}/application_credentials",
            get(list).post(create),
        )
        .route(
            "/users/{user}/application_credentials/{id}",
            get(show).delete(delete),
        )
}

#[derive(Serialize)]
struct RoleView {
    id: String,
    name: &'static str,
    domain_id: Option<String>,
}

#[derive(Serialize)]
struct Links {
    #[serde(rename = "self")]
    self_: String,
}

#[derive(Serialize)]
struct CredentialView {
    id: String,
    name: String,
    description: Option<String>,
    user_id: String,
    project_id: String,
    expires_at: Option<String>,
    roles: Vec<RoleView>,
    unrestricted: bool,
    access_rules: Vec<Value>,
    system: Option<String>,
    links: Links,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

async fn view(s: &AppState, c: &AppCredentialRecord, secret: Option<String>) -> CredentialView {
    let records = s.cloud.store().roles().await.unwrap_or_default();
    let roles = c
        .roles
        .iter()
        .filter_map(|role| records.iter().find(|r| r.role == *role))
        .map(|r| RoleView {
            id: r.id.to_string(),
            name: r.role.name(),
            domain_id: None,
        })
        .collect();
    CredentialView {
        id: c.id.clone(),
        name: c.name.clone(),
        description: c.description.clone(),
        user_id: c.user_id.to_string(),
        project_id: c.project_id.to_string(),
        expires_at: c.expires_at.map(expiry),
        roles,
        unrestricted: c.unrestricted,
        access_rules: Vec::new(),
        system: None,
        links: Links {
            self_: s.url(&format!(
                "/identity/v3/users/{}/application_credentials/{}",
                c.user_id, c.id
            )),
        },
        secret,
    }
}

/// Keystone echoes an expiry as Python's `isoformat()` of the naive UTC time: no zone,
/// microseconds only when there are some (tempest compares the strings).
fn expiry(t: DateTime<Utc>) -> String {
    if t.timestamp_subsec_micros() == 0 {
        t.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
    }
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, Error> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDateTime::parse_from_str(text.trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S%.f")
                .map(|t| t.and_utc())
        })
        .map_err(|_| Error::invalid(format!("'{text}' is not a valid date and time.")))
}

#[derive(Deserialize)]
struct CreateBody {
    application_credential: CreateFields,
}

#[derive(Deserialize)]
struct CreateFields {
    name: String,
    description: Option<String>,
    secret: Option<String>,
    expires_at: Option<String>,
    #[serde(default)]
    roles: Vec<RoleRef>,
    #[serde(default)]
    unrestricted: bool,
}

#[derive(Deserialize)]
struct RoleRef {
    id: Option<String>,
    name: Option<String>,
}

async fn create(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(user): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let body: CreateBody = serde_json::from_value(body)
        .map_err(|e| Error::invalid(format!("Invalid application credential: {e}")))?;
    let f = body.application_credential;
    let new = NewAppCredential {
        name: f.name,
        description: f.description,
        secret: f.secret,
        expires_at: f.expires_at.as_deref().map(parse_time).transpose()?,
        roles: f
            .roles
            .into_iter()
            .filter_map(|r| r.id.or(r.name))
            .collect(),
        unrestricted: f.unrestricted,
    };
    let (record, secret) = s.cloud.create_app_credential(&caller, &user, new).await?;
    let view = view(&s, &record, Some(secret)).await;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "application_credential": view })),
    ))
}

async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(user): Path<String>,
    Query(f): Query<NameFilter>,
) -> ApiResult<Json<Value>> {
    let all = s
        .cloud
        .app_credentials(&caller, &user, f.name.as_deref())
        .await?;
    let mut items = Vec::new();
    for c in &all {
        items.push(serde_json::to_value(view(&s, c, None).await).unwrap_or(Value::Null));
    }
    Ok(list_view(
        &s,
        "application_credentials",
        &format!("/identity/v3/users/{user}/application_credentials"),
        items,
    ))
}

async fn show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((user, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let c = s.cloud.app_credential(&caller, &user, &id).await?;
    let view = view(&s, &c, None).await;
    Ok(Json(json!({ "application_credential": view })))
}

async fn delete(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((user, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    s.cloud.delete_app_credential(&caller, &user, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The `application_credential` part of an auth request.
pub(super) fn parse_auth(identity: &Value) -> Result<AppCredentialAuth, Error> {
    let ac = identity
        .get("application_credential")
        .ok_or_else(|| Error::invalid("Expecting to find application_credential in identity."))?;
    let secret = str_at(ac, &["secret"])
        .ok_or_else(|| Error::invalid("Expecting to find a secret in application_credential."))?
        .to_string();
    if let Some(id) = str_at(ac, &["id"]) {
        return Ok(AppCredentialAuth::Id {
            id: id.into(),
            secret,
        });
    }
    let name = str_at(ac, &["name"])
        .ok_or_else(|| Error::invalid("Expecting to find an application credential id or name."))?;
    let user = match (str_at(ac, &["user", "id"]), str_at(ac, &["user", "name"])) {
        (Some(id), _) => UserRef::Id(id.into()),
        (None, Some(name)) => UserRef::Name(name.into()),
        _ => {
            return Err(Error::invalid(
                "An application credential named by name needs its user.",
            ))
        }
    };
    Ok(AppCredentialAuth::Name {
        name: name.into(),
        user,
        secret,
    })
}
