//! Identity v3 (Keystone shapes): tokens, users, projects, roles, role
//! assignments and the one `default` domain.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use cloud::identity::{NewUser, PasswordAuth, ProjectRef, TokenInfo, UserRef};
use domain::identity::{Project, RoleRecord, User, DEFAULT_DOMAIN_ID, DEFAULT_DOMAIN_NAME};
use domain::Error;
use serde::Deserialize;
use serde_json::{json, Map, Value};

mod application_credentials;

use crate::auth::Auth;
use crate::error::ApiResult;
use crate::json::JsonBody;
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/auth/tokens",
            get(check_token)
                .head(check_token)
                .post(issue_token)
                .delete(revoke_token),
        )
        .route("/auth/projects", get(auth_projects))
        .route("/auth/catalog", get(auth_catalog))
        .route("/users", get(list_users).post(create_user))
        .route(
            "/users/{id}",
            get(show_user).patch(update_user).delete(delete_user),
        )
        .route("/users/{id}/projects", get(user_projects))
        .route("/users/{id}/password", post(change_password))
        .route("/projects", get(list_projects).post(create_project))
        .route(
            "/projects/{id}",
            get(show_project)
                .patch(update_project)
                .delete(delete_project),
        )
        .route(
            "/projects/{p}/users/{u}/roles",
            get(list_user_project_roles),
        )
        .route(
            "/projects/{p}/users/{u}/roles/{r}",
            put(assign_role)
                .delete(unassign_role)
                .head(check_role)
                .get(check_role),
        )
        .route("/roles", get(list_roles))
        .route("/roles/{id}", get(show_role))
        .route("/role_assignments", get(list_assignments))
        .route("/domains", get(list_domains))
        .route("/domains/{id}", get(show_domain))
        .merge(application_credentials::routes())
}

// ---- views -------------------------------------------------------------

fn domain_ref() -> Value {
    json!({"id": DEFAULT_DOMAIN_ID, "name": DEFAULT_DOMAIN_NAME})
}

fn domain_view(s: &AppState) -> Value {
    json!({
        "id": DEFAULT_DOMAIN_ID, "name": DEFAULT_DOMAIN_NAME, "description": "The default domain",
        "enabled": true, "tags": [], "options": {},
        "links": {"self": s.url("/identity/v3/domains/default")},
    })
}

fn user_view(s: &AppState, u: &User) -> Value {
    let mut v = json!({
        "id": u.id.to_string(), "name": u.name, "domain_id": DEFAULT_DOMAIN_ID, "enabled": u.enabled,
        "description": u.description, "password_expires_at": null, "options": {},
        "default_project_id": u.default_project_id.map(|p| p.to_string()),
        "links": {"self": s.url(&format!("/identity/v3/users/{}", u.id))},
    });
    if let Some(email) = &u.email {
        v["email"] = json!(email);
    }
    v
}

fn project_view(s: &AppState, p: &Project) -> Value {
    json!({
        "id": p.id.to_string(), "name": p.name, "domain_id": DEFAULT_DOMAIN_ID, "description": p.description,
        "enabled": p.enabled, "parent_id": DEFAULT_DOMAIN_ID, "is_domain": false, "tags": [], "options": {},
        "links": {"self": s.url(&format!("/identity/v3/projects/{}", p.id))},
    })
}

fn role_view(s: &AppState, r: &RoleRecord) -> Value {
    json!({
        "id": r.id.to_string(), "name": r.role.name(), "domain_id": null, "description": null, "options": {},
        "links": {"self": s.url(&format!("/identity/v3/roles/{}", r.id))},
    })
}

pub(crate) fn list_view(s: &AppState, key: &str, path: &str, items: Vec<Value>) -> Json<Value> {
    Json(json!({key: items, "links": {"self": s.url(path), "next": null, "previous": null}}))
}

/// The service catalog: every service on this one port.
fn catalog(s: &AppState, project: Option<&str>) -> Value {
    let entry = |kind: &str, name: &str, url: String| {
        // Stable ids derived from the service type: 32 hex digits.
        let mut id = hex::encode(kind);
        id.truncate(32);
        let id = format!("{id:0<32}");
        let endpoints: Vec<Value> = ["public", "internal", "admin"]
            .iter()
            .map(|iface| {
                json!({"id": format!("{id}-{iface}"), "interface": iface, "region": "RegionOne",
                       "region_id": "RegionOne", "url": url})
            })
            .collect();
        json!({"id": id, "type": kind, "name": name, "endpoints": endpoints})
    };
    let volume = match project {
        Some(p) => s.url(&format!("/volume/v3/{p}")),
        None => s.url("/volume/v3"),
    };
    json!([
        entry("identity", "keystone", s.url("/identity")),
        entry("image", "glance", s.url("/image")),
        entry("compute", "nova", s.url("/compute/v2.1")),
        entry("network", "neutron", s.url("/networking")),
        entry("volumev3", "cinderv3", volume.clone()),
        entry("block-storage", "cinder", volume),
    ])
}

pub(crate) fn timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn token_view(s: &AppState, info: &TokenInfo, with_catalog: bool) -> Value {
    let c = &info.caller;
    let method = if info.application_credential.is_some() {
        "application_credential"
    } else {
        "password"
    };
    let mut token = json!({
        "methods": [method],
        "user": {"id": c.user_id.to_string(), "name": c.user_name, "domain": domain_ref(), "password_expires_at": null},
        "audit_ids": [info.audit_id],
        "expires_at": timestamp(c.expires_at),
        "issued_at": timestamp(info.issued_at),
    });
    if let Some(ac) = &info.application_credential {
        token["application_credential"] =
            json!({"id": ac.id, "name": ac.name, "restricted": ac.restricted});
    }
    if let (Some(pid), Some(pname)) = (c.project_id, &c.project_name) {
        token["project"] = json!({"id": pid.to_string(), "name": pname, "domain": domain_ref()});
        token["is_domain"] = json!(false);
        token["roles"] = json!(info
            .roles
            .iter()
            .map(|r| json!({"id": r.id.to_string(), "name": r.role.name()}))
            .collect::<Vec<_>>());
        if with_catalog {
            token["catalog"] = catalog(s, Some(&pid.to_string()));
        }
    }
    json!({"token": token})
}

fn token_response(
    status: StatusCode,
    s: &AppState,
    info: &TokenInfo,
    subject: &str,
    with_catalog: bool,
) -> Response {
    let mut response = (status, Json(token_view(s, info, with_catalog))).into_response();
    if let Ok(v) = http::HeaderValue::from_str(subject) {
        response.headers_mut().insert("x-subject-token", v);
    }
    response
}

// ---- tokens ------------------------------------------------------------

pub(crate) fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn parse_password_auth(body: &Value) -> Result<PasswordAuth, Error> {
    let identity = body
        .pointer("/auth/identity")
        .ok_or_else(|| Error::invalid("Expecting to find identity in auth."))?;
    let methods = identity
        .get("methods")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !methods.iter().any(|m| m == "password") {
        return Err(Error::unauthenticated(
            "Only the password authentication method is supported.",
        ));
    }
    let user = identity
        .pointer("/password/user")
        .ok_or_else(|| Error::invalid("Expecting to find user in password."))?;
    let user_ref = match (str_at(user, &["id"]), str_at(user, &["name"])) {
        (Some(id), _) => UserRef::Id(id.into()),
        (None, Some(name)) => UserRef::Name(name.into()),
        _ => return Err(Error::invalid("Expecting to find a user id or name.")),
    };
    let password = str_at(user, &["password"])
        .ok_or_else(|| Error::invalid("Expecting to find a password."))?;
    let scope = match body.pointer("/auth/scope") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s == "unscoped" => None,
        Some(scope) => {
            let project = scope
                .get("project")
                .ok_or_else(|| Error::invalid("Only project scope is supported."))?;
            match (str_at(project, &["id"]), str_at(project, &["name"])) {
                (Some(id), _) => Some(ProjectRef::Id(id.into())),
                (None, Some(name)) => Some(ProjectRef::Name(name.into())),
                _ => {
                    return Err(Error::invalid(
                        "Expecting to find a project id or name in scope.",
                    ))
                }
            }
        }
    };
    Ok(PasswordAuth {
        user: user_ref,
        password: password.into(),
        scope,
    })
}

#[derive(Deserialize)]
struct NoCatalog {
    nocatalog: Option<String>,
}

async fn issue_token(
    State(s): State<AppState>,
    Query(q): Query<NoCatalog>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Response> {
    let uses_app_credential = body
        .pointer("/auth/identity/methods")
        .and_then(Value::as_array)
        .is_some_and(|m| m.iter().any(|m| m == "application_credential"));
    let info = if uses_app_credential {
        let identity = body.pointer("/auth/identity").unwrap_or(&Value::Null);
        let auth = application_credentials::parse_auth(identity)?;
        s.cloud.authenticate_app_credential(auth).await?
    } else {
        s.cloud.authenticate(parse_password_auth(&body)?).await?
    };
    let token = info.token.clone().unwrap_or_default();
    Ok(token_response(
        StatusCode::CREATED,
        &s,
        &info,
        &token,
        q.nocatalog.is_none(),
    ))
}

fn subject(headers: &HeaderMap) -> Result<String, Error> {
    headers
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| Error::invalid("X-Subject-Token header is required."))
}

async fn check_token(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Query(q): Query<NoCatalog>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let subject = subject(&headers)?;
    let info = s.cloud.check_token(&caller, &subject).await?;
    Ok(token_response(
        StatusCode::OK,
        &s,
        &info,
        &subject,
        q.nocatalog.is_none(),
    ))
}

async fn revoke_token(
    State(s): State<AppState>,
    Auth(caller): Auth,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let subject = subject(&headers)?;
    s.cloud.revoke(&caller, &subject).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn auth_projects(State(s): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<Value>> {
    let projects = s
        .cloud
        .user_projects(&caller, &caller.user_id.to_string())
        .await?;
    Ok(list_view(
        &s,
        "projects",
        "/identity/v3/auth/projects",
        projects.iter().map(|p| project_view(&s, p)).collect(),
    ))
}

async fn auth_catalog(State(s): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<Value>> {
    let project = caller.project()?.to_string();
    Ok(Json(
        json!({"catalog": catalog(&s, Some(&project)), "links": {"self": s.url("/identity/v3/auth/catalog")}}),
    ))
}

// ---- users -------------------------------------------------------------

#[derive(Deserialize)]
pub(crate) struct NameFilter {
    pub(crate) name: Option<String>,
}

fn object_of(body: &Value, key: &str) -> Result<Map<String, Value>, Error> {
    body.get(key)
        .and_then(Value::as_object)
        .cloned()
        .ok_or_else(|| Error::invalid(format!("Expecting to find '{key}' in the request body.")))
}

fn opt_string(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, Error> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Error::invalid(format!("'{key}' must be a string."))),
    }
}

fn opt_bool(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>, Error> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(Error::invalid(format!("'{key}' must be true or false."))),
    }
}

fn check_domain(obj: &Map<String, Value>) -> Result<(), Error> {
    match opt_string(obj, "domain_id")? {
        Some(d) if d != DEFAULT_DOMAIN_ID => Err(Error::invalid(format!(
            "Domain {d} does not exist; only 'default' does."
        ))),
        _ => Ok(()),
    }
}

async fn create_user(
    State(s): State<AppState>,
    Auth(caller): Auth,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let obj = object_of(&body, "user")?;
    check_domain(&obj)?;
    let default_project_id = opt_string(&obj, "default_project_id")?
        .map(|p| {
            p.parse()
                .map_err(|_| Error::invalid(format!("'{p}' is not a project id.")))
        })
        .transpose()?;
    let new = NewUser {
        name: opt_string(&obj, "name")?.ok_or_else(|| Error::invalid("A user needs a name."))?,
        password: opt_string(&obj, "password")?,
        email: opt_string(&obj, "email")?,
        description: opt_string(&obj, "description")?.unwrap_or_default(),
        enabled: opt_bool(&obj, "enabled")?.unwrap_or(true),
        default_project_id,
    };
    let user = s.cloud.create_user(&caller, new).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"user": user_view(&s, &user)})),
    ))
}

async fn list_users(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Query(f): Query<NameFilter>,
) -> ApiResult<Json<Value>> {
    let users = s.cloud.users(&caller, f.name.as_deref()).await?;
    Ok(list_view(
        &s,
        "users",
        "/identity/v3/users",
        users.iter().map(|u| user_view(&s, u)).collect(),
    ))
}

async fn show_user(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let user = s.cloud.user(&caller, &id).await?;
    Ok(Json(json!({"user": user_view(&s, &user)})))
}

async fn update_user(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    let obj = object_of(&body, "user")?;
    let mut user = s.cloud.user(&caller, &id).await?;
    if let Some(name) = opt_string(&obj, "name")? {
        user.name = name;
    }
    if obj.contains_key("email") {
        user.email = opt_string(&obj, "email")?;
    }
    if let Some(d) = opt_string(&obj, "description")? {
        user.description = d;
    }
    if let Some(e) = opt_bool(&obj, "enabled")? {
        user.enabled = e;
    }
    if obj.contains_key("default_project_id") {
        user.default_project_id = opt_string(&obj, "default_project_id")?
            .map(|p| {
                p.parse()
                    .map_err(|_| Error::invalid(format!("'{p}' is not a project id.")))
            })
            .transpose()?;
    }
    let user = s
        .cloud
        .update_user(&caller, user, opt_string(&obj, "password")?)
        .await?;
    Ok(Json(json!({"user": user_view(&s, &user)})))
}

async fn delete_user(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.cloud.delete_user(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v3/users/{id}/password` (no token, as Keystone).
async fn change_password(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<StatusCode> {
    let obj = object_of(&body, "user")?;
    let original = opt_string(&obj, "original_password")?
        .ok_or_else(|| Error::invalid("'original_password' is a required property."))?;
    let password = opt_string(&obj, "password")?
        .ok_or_else(|| Error::invalid("'password' is a required property."))?;
    s.cloud.change_own_password(&id, original, password).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn user_projects(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let projects = s.cloud.user_projects(&caller, &id).await?;
    let path = format!("/identity/v3/users/{id}/projects");
    Ok(list_view(
        &s,
        "projects",
        &path,
        projects.iter().map(|p| project_view(&s, p)).collect(),
    ))
}

// ---- projects ----------------------------------------------------------

async fn create_project(
    State(s): State<AppState>,
    Auth(caller): Auth,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let obj = object_of(&body, "project")?;
    check_domain(&obj)?;
    let project = Project {
        id: domain::ProjectId::new(),
        name: opt_string(&obj, "name")?.ok_or_else(|| Error::invalid("A project needs a name."))?,
        description: opt_string(&obj, "description")?.unwrap_or_default(),
        enabled: opt_bool(&obj, "enabled")?.unwrap_or(true),
    };
    let project = s.cloud.create_project(&caller, project).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"project": project_view(&s, &project)})),
    ))
}

async fn list_projects(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Query(f): Query<NameFilter>,
) -> ApiResult<Json<Value>> {
    let projects = s.cloud.projects(&caller, f.name.as_deref()).await?;
    Ok(list_view(
        &s,
        "projects",
        "/identity/v3/projects",
        projects.iter().map(|p| project_view(&s, p)).collect(),
    ))
}

async fn show_project(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let project = s.cloud.project(&caller, &id).await?;
    Ok(Json(json!({"project": project_view(&s, &project)})))
}

async fn update_project(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    let obj = object_of(&body, "project")?;
    let mut project = s.cloud.project(&caller, &id).await?;
    if let Some(name) = opt_string(&obj, "name")? {
        project.name = name;
    }
    if let Some(d) = opt_string(&obj, "description")? {
        project.description = d;
    }
    if let Some(e) = opt_bool(&obj, "enabled")? {
        project.enabled = e;
    }
    let project = s.cloud.update_project(&caller, project).await?;
    Ok(Json(json!({"project": project_view(&s, &project)})))
}

async fn delete_project(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.cloud.delete_project(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- roles and assignments ---------------------------------------------

async fn list_roles(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Query(f): Query<NameFilter>,
) -> ApiResult<Json<Value>> {
    let roles = s.cloud.roles(&caller, f.name.as_deref()).await?;
    Ok(list_view(
        &s,
        "roles",
        "/identity/v3/roles",
        roles.iter().map(|r| role_view(&s, r)).collect(),
    ))
}

async fn show_role(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let role = s.cloud.role(&caller, &id).await?;
    Ok(Json(json!({"role": role_view(&s, &role)})))
}

async fn assign_role(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((p, u, r)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    s.cloud.assign_role(&caller, &u, &p, &r).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unassign_role(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((p, u, r)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    s.cloud.unassign_role(&caller, &u, &p, &r).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn check_role(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((p, u, r)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    if s.cloud.has_assignment(&caller, &u, &p, &r).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::not_found("role assignment", format!("{r} of user {u} on project {p}")).into())
    }
}

async fn list_user_project_roles(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((p, u)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let assignments = s.cloud.assignments(&caller, Some(&u), Some(&p)).await?;
    let roles = assignments
        .iter()
        .map(|(_, _, r)| role_view(&s, r))
        .collect();
    Ok(list_view(
        &s,
        "roles",
        &format!("/identity/v3/projects/{p}/users/{u}/roles"),
        roles,
    ))
}

#[derive(Deserialize)]
struct AssignmentFilter {
    #[serde(rename = "user.id")]
    user: Option<String>,
    #[serde(rename = "scope.project.id")]
    project: Option<String>,
    include_names: Option<String>,
}

async fn list_assignments(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Query(f): Query<AssignmentFilter>,
) -> ApiResult<Json<Value>> {
    let assignments = s
        .cloud
        .assignments(&caller, f.user.as_deref(), f.project.as_deref())
        .await?;
    let names = f
        .include_names
        .is_some_and(|v| v.is_empty() || v.eq_ignore_ascii_case("true") || v == "1");
    let (mut user_names, mut project_names) = (HashMap::new(), HashMap::new());
    if names {
        for (u, p, _) in &assignments {
            if !user_names.contains_key(u) {
                user_names.insert(*u, s.cloud.user(&caller, &u.to_string()).await?.name);
            }
            if !project_names.contains_key(p) {
                project_names.insert(*p, s.cloud.project(&caller, &p.to_string()).await?.name);
            }
        }
    }
    let items = assignments
        .iter()
        .map(|(u, p, r)| {
            let mut role = json!({"id": r.id.to_string()});
            let mut user = json!({"id": u.to_string()});
            let mut project = json!({"id": p.to_string()});
            if names {
                role["name"] = json!(r.role.name());
                user["name"] = json!(user_names.get(u));
                user["domain"] = domain_ref();
                project["name"] = json!(project_names.get(p));
                project["domain"] = domain_ref();
            }
            json!({
                "role": role, "user": user, "scope": {"project": project},
                "links": {"assignment": s.url(&format!("/identity/v3/projects/{p}/users/{u}/roles/{}", r.id))},
            })
        })
        .collect();
    Ok(list_view(
        &s,
        "role_assignments",
        "/identity/v3/role_assignments",
        items,
    ))
}

async fn list_domains(
    State(s): State<AppState>,
    Auth(_caller): Auth,
    Query(f): Query<NameFilter>,
) -> Json<Value> {
    let matches = f
        .name
        .as_deref()
        .is_none_or(|n| n == DEFAULT_DOMAIN_NAME || n == DEFAULT_DOMAIN_ID);
    let items = if matches {
        vec![domain_view(&s)]
    } else {
        vec![]
    };
    list_view(&s, "domains", "/identity/v3/domains", items)
}

async fn show_domain(
    State(s): State<AppState>,
    Auth(_caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    if id == DEFAULT_DOMAIN_ID || id == DEFAULT_DOMAIN_NAME {
        Ok(Json(json!({"domain": domain_view(&s)})))
    } else {
        Err(Error::not_found("domain", id).into())
    }
}
