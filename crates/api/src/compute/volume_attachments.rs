//! `/servers/{id}/os-volume_attachments` (Nova shapes): list, show, attach,
//! detach. Thin: parse, call `cloud`, convert; errors in Nova's shape.
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | `/servers/{id}/os-volume_attachments` | `{"volumeAttachments": [...]}` |
//! | POST | `/servers/{id}/os-volume_attachments` | attach: 200 `{"volumeAttachment": ...}` (the volume is `reserved`, then `in-use`) |
//! | GET | `/servers/{id}/os-volume_attachments/{volume_id}` | one attachment |
//! | DELETE | `/servers/{id}/os-volume_attachments/{volume_id}` | detach: 202 (then `available`) |
//!
//! Fields by microversion, as Nova: `id` (the volume id) until 2.88, `tag`
//! from 2.70, `delete_on_termination` from 2.79.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use cloud::compute::AttachVolume;
use domain::volume::VolumeAttachment;
use domain::Error;
use serde_json::{json, Value};

use super::{Microversion, NovaResult};
use crate::auth::Auth;
use crate::json::JsonBody;
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/servers/{id}/os-volume_attachments",
            get(list).post(attach),
        )
        .route(
            "/servers/{id}/os-volume_attachments/{volume}",
            get(show).delete(detach).put(swap),
        )
}

/// One attachment in Nova's shape at microversion `v`.
pub(crate) fn view(a: &VolumeAttachment, v: Microversion) -> Value {
    let mut out = json!({
        "device": a.device,
        "serverId": a.server_id.to_string(),
        "volumeId": a.volume_id.to_string(),
    });
    if !v.at_least(89) {
        out["id"] = json!(a.volume_id.to_string());
    }
    if v.at_least(70) {
        out["tag"] = Value::Null;
    }
    if v.at_least(79) {
        out["delete_on_termination"] = json!(a.delete_on_termination);
    }
    if v.at_least(89) {
        out["attachment_id"] = json!(a.id.to_string());
        out["bdm_uuid"] = json!(a.id.to_string());
    }
    out
}

/// `os-extended-volumes:volumes_attached` of a server view.
pub(crate) fn volumes_attached(attachments: &[VolumeAttachment], v: Microversion) -> Value {
    json!(attachments
        .iter()
        .map(|a| {
            let mut entry = json!({"id": a.volume_id.to_string()});
            if v.at_least(3) {
                entry["delete_on_termination"] = json!(a.delete_on_termination);
            }
            entry
        })
        .collect::<Vec<_>>())
}

fn parse_attach(body: &Value, v: Microversion) -> Result<AttachVolume, Error> {
    let obj = body
        .get("volumeAttachment")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::invalid("'volumeAttachment' is a required property."))?;
    let mut allowed = vec!["volumeId", "device"];
    if v.at_least(49) {
        allowed.push("tag");
    }
    if v.at_least(79) {
        allowed.push("delete_on_termination");
    }
    if let Some(extra) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(Error::invalid(format!(
            "Additional properties are not allowed ('{extra}' was unexpected)."
        )));
    }
    let volume_id = match obj.get("volumeId") {
        Some(Value::String(id)) => id.clone(),
        Some(_) => return Err(Error::invalid("'volumeId' must be a string.")),
        None => return Err(Error::invalid("'volumeId' is a required property.")),
    };
    let device = match obj.get("device") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) => Some(d.clone()),
        Some(_) => return Err(Error::invalid("'device' must be a string or null.")),
    };
    let delete_on_termination = match obj.get("delete_on_termination") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(Error::invalid("'delete_on_termination' must be a boolean.")),
    };
    Ok(AttachVolume {
        volume_id,
        device,
        delete_on_termination,
    })
}

async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Path(id): Path<String>,
) -> NovaResult<Json<Value>> {
    let attachments = s.cloud.server_attachments(&caller, &id).await?;
    Ok(Json(
        json!({"volumeAttachments": attachments.iter().map(|a| view(a, v)).collect::<Vec<_>>()}),
    ))
}

async fn show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Path((id, volume)): Path<(String, String)>,
) -> NovaResult<Json<Value>> {
    let attachment = s.cloud.server_attachment(&caller, &id, &volume).await?;
    Ok(Json(json!({"volumeAttachment": view(&attachment, v)})))
}

async fn attach(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    let request = parse_attach(&body, v)?;
    let attachment = s.cloud.attach_volume(&caller, &id, request).await?;
    Ok(Json(json!({"volumeAttachment": view(&attachment, v)})))
}

async fn detach(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((id, volume)): Path<(String, String)>,
) -> NovaResult<StatusCode> {
    s.cloud.detach_volume(&caller, &id, &volume).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Nova's swap-volume (`PUT`) is not offered.
async fn swap(
    Auth(_caller): Auth,
    Path((_id, _volume)): Path<(String, String)>,
) -> NovaResult<StatusCode> {
    Err(Error::invalid("Swapping a server's volume is not supported.").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_body_when_unknown_field_then_invalid() {
        let body = json!({"volumeAttachment": {"volumeId": "x", "bogus": 1}});

        let err = parse_attach(&body, Microversion(79)).unwrap_err();

        assert!(err.message().contains("bogus"));
    }

    #[test]
    fn attach_body_when_delete_on_termination_before_2_79_then_invalid() {
        let body = json!({"volumeAttachment": {"volumeId": "x", "delete_on_termination": true}});

        assert!(parse_attach(&body, Microversion(60)).is_err());
        assert!(
            parse_attach(&body, Microversion(79))
                .unwrap()
                .delete_on_termination
        );
    }
}
