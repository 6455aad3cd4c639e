//! `POST /{project_id}/volumes/{id}/action`: one Cinder action per body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::identity::Caller;
use domain::Error;
use serde_json::{json, Value};

use super::{flag, size_of, string_map};
use crate::compute::NovaResult;
use crate::AppState;

fn accepted() -> NovaResult<Response> {
    Ok(StatusCode::ACCEPTED.into_response())
}

fn text_arg<'a>(args: &'a Value, key: &str) -> Result<&'a str, Error> {
    args.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid(format!("Invalid input received: '{key}' is required.")))
}

/// Runs the action `name` with its arguments on volume `id`.
pub(crate) async fn run(
    s: &AppState,
    caller: &Caller,
    id: &str,
    name: &str,
    args: &Value,
) -> NovaResult<Response> {
    let cloud = &s.cloud;
    match name {
        "os-extend" => {
            let new_size = size_of(args.get("new_size"), "new_size")?
                .ok_or_else(|| Error::invalid("Invalid input received: 'new_size' is required."))?;
            cloud.extend_volume(caller, id, new_size).await?;
            accepted()
        }
        "os-retype" => {
            let new_type = text_arg(args, "new_type")?;
            match args.get("migration_policy").and_then(Value::as_str) {
                None | Some("never") | Some("on-demand") => {}
                Some(other) => {
                    return Err(Error::invalid(format!(
                        "Invalid input received: migration_policy must be 'never' or 'on-demand', not '{other}'."
                    ))
                    .into())
                }
            }
            cloud.retype_volume(caller, id, new_type).await?;
            accepted()
        }
        "os-reserve" => {
            cloud.reserve_volume(caller, id).await?;
            accepted()
        }
        "os-unreserve" => {
            cloud.unreserve_volume(caller, id).await?;
            accepted()
        }
        "os-begin_detaching" => {
            cloud.mark_volume_detaching(caller, id, false).await?;
            accepted()
        }
        "os-roll_detaching" => {
            cloud.mark_volume_detaching(caller, id, true).await?;
            accepted()
        }
        "os-update_readonly_flag" => {
            let readonly = args
                .get("readonly")
                .ok_or_else(|| Error::invalid("Invalid input received: 'readonly' is required."))?;
            cloud
                .set_volume_readonly(caller, id, flag(Some(readonly), "readonly")?)
                .await?;
            accepted()
        }
        "os-set_image_metadata" => {
            let given = string_map(args.get("metadata"), "metadata")?
                .ok_or_else(|| Error::invalid("Malformed request body: 'metadata' is required."))?;
            let all = cloud.set_volume_image_metadata(caller, id, given).await?;
            Ok(Json(json!({"metadata": all})).into_response())
        }
        "os-unset_image_metadata" => {
            cloud
                .unset_volume_image_metadata(caller, id, text_arg(args, "key")?)
                .await?;
            Ok(StatusCode::OK.into_response())
        }
        "os-show_image_metadata" => {
            let volume = cloud.volume(caller, id).await?;
            Ok(Json(json!({"metadata": volume.image_metadata})).into_response())
        }
        "os-reset_status" => {
            match args.get("status").and_then(Value::as_str) {
                Some(status) => cloud.reset_volume_status(caller, id, status).await?,
                // attach_status / migration_status alone: nothing Snapstack
                // records apart from the status; the volume must exist.
                None => {
                    cloud.volume(caller, id).await?;
                }
            }
            accepted()
        }
        "os-force_delete" => {
            cloud.force_delete_volume(caller, id).await?;
            accepted()
        }
        other => {
            // A volume that does not exist is a 404 whatever the action.
            cloud.volume(caller, id).await?;
            let hint = match other {
                "os-attach" | "os-detach" | "os-force_detach" | "os-initialize_connection"
                | "os-terminate_connection" => {
                    " Snapstack attaches volumes itself: use Nova's POST /servers/{server_id}/os-volume_attachments."
                }
                _ => "",
            };
            Err(Error::invalid(format!(
                "Invalid input received: the volume action '{other}' is not supported by Snapstack.{hint}"
            ))
            .into())
        }
    }
}
