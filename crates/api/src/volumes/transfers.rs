//! Volume transfers: `/{project_id}/os-volume-transfer` (the original API)
//! and `/{project_id}/volume-transfers` (3.55+: `no_snapshots`; 3.57+:
//! `source_project_id`, `destination_project_id`, `accepted`).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use cloud::volumes::NewTransfer;
use domain::volume_transfer::VolumeTransfer;
use domain::Error;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{check_project, flag, object, opt_text, views::timestamp, VolumeVersion};
use crate::auth::Auth;
use crate::compute::NovaResult;
use crate::json::JsonBody;
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    let mut router = Router::new();
    for base in ["os-volume-transfer", "volume-transfers"] {
        router = router
            .route(&format!("/{{project}}/{base}"), get(list).post(create))
            .route(&format!("/{{project}}/{base}/detail"), get(list_detail))
            .route(
                &format!("/{{project}}/{base}/{{id}}"),
                get(show).delete(delete),
            )
            .route(&format!("/{{project}}/{base}/{{id}}/accept"), post(accept));
    }
    router
}

fn links(s: &AppState, t: &VolumeTransfer) -> Value {
    let (project, id) = (t.project_id.to_string(), t.id.to_string());
    json!([
        {"rel": "self", "href": s.url(&format!("/volume/v3/{project}/os-volume-transfer/{id}"))},
        {"rel": "bookmark", "href": s.url(&format!("/volume/{project}/os-volume-transfer/{id}"))},
    ])
}

/// The detailed view (show, `/detail`, create without its auth key).
fn view(s: &AppState, t: &VolumeTransfer, v: VolumeVersion) -> Value {
    let mut out = json!({
        "id": t.id.to_string(),
        "name": t.name,
        "volume_id": t.volume_id.to_string(),
        "created_at": timestamp(t.created_at),
        "links": links(s, t),
    });
    if v.at_least(55) {
        out["no_snapshots"] = json!(t.no_snapshots);
    }
    if v.at_least(57) {
        out["source_project_id"] = json!(t.project_id.to_string());
        out["destination_project_id"] = Value::Null;
        out["accepted"] = json!(false);
    }
    out
}

async fn create(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: VolumeVersion,
    Path(project): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<(StatusCode, Json<Value>)> {
    check_project(&caller, &project)?;
    let obj = object(&body, "transfer")?;
    let volume_id = opt_text(obj, &["volume_id"])?
        .flatten()
        .ok_or_else(|| Error::invalid("Invalid input received: 'volume_id' is required."))?;
    let new = NewTransfer {
        volume_id,
        name: opt_text(obj, &["name"])?.flatten(),
        no_snapshots: v.at_least(55) && flag(obj.get("no_snapshots"), "no_snapshots")?,
    };
    let (t, key) = s.cloud.create_volume_transfer(&caller, new).await?;
    let mut shown = view(&s, &t, v);
    shown["auth_key"] = json!(key);
    Ok((StatusCode::ACCEPTED, Json(json!({"transfer": shown}))))
}

#[derive(Deserialize, Default)]
struct TransferQuery {
    all_tenants: Option<String>,
}

async fn listed(
    s: &AppState,
    caller: &domain::identity::Caller,
    project: &str,
    q: &TransferQuery,
) -> Result<Vec<VolumeTransfer>, Error> {
    check_project(caller, project)?;
    let all = q
        .all_tenants
        .as_deref()
        .is_some_and(|v| !matches!(v, "0" | "false" | "False"));
    s.cloud.volume_transfers(caller, all).await
}

async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(project): Path<String>,
    Query(q): Query<TransferQuery>,
) -> NovaResult<Json<Value>> {
    let shown: Vec<Value> = listed(&s, &caller, &project, &q)
        .await?
        .iter()
        .map(|t| {
            json!({
                "id": t.id.to_string(), "name": t.name,
                "volume_id": t.volume_id.to_string(), "links": links(&s, t),
            })
        })
        .collect();
    Ok(Json(json!({"transfers": shown})))
}

async fn list_detail(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: VolumeVersion,
    Path(project): Path<String>,
    Query(q): Query<TransferQuery>,
) -> NovaResult<Json<Value>> {
    let shown: Vec<Value> = listed(&s, &caller, &project, &q)
        .await?
        .iter()
        .map(|t| view(&s, t, v))
        .collect();
    Ok(Json(json!({"transfers": shown})))
}

async fn show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: VolumeVersion,
    Path((project, id)): Path<(String, String)>,
) -> NovaResult<Json<Value>> {
    check_project(&caller, &project)?;
    let t = s.cloud.volume_transfer(&caller, &id).await?;
    Ok(Json(json!({"transfer": view(&s, &t, v)})))
}

async fn delete(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, String)>,
) -> NovaResult<StatusCode> {
    check_project(&caller, &project)?;
    s.cloud.delete_volume_transfer(&caller, &id).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn accept(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<(StatusCode, Json<Value>)> {
    check_project(&caller, &project)?;
    let obj = object(&body, "accept")?;
    let key = opt_text(obj, &["auth_key"])?
        .flatten()
        .ok_or_else(|| Error::invalid("Invalid input received: 'auth_key' is required."))?;
    let t = s.cloud.accept_volume_transfer(&caller, &id, &key).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"transfer": {
            "id": t.id.to_string(), "name": t.name,
            "volume_id": t.volume_id.to_string(), "links": links(&s, &t),
        }})),
    ))
}
