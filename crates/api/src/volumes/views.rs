//! Volume and snapshot records as Cinder shows them. Storage details (the
//! pool location) never appear.

use domain::identity::Caller;
use domain::volume::{SnapshotStatus, Volume, VolumeSnapshot, VolumeSource};
use serde_json::{json, Value};

use super::VolumeVersion;
use crate::AppState;

/// Cinder's timestamps: microseconds, no zone.
pub(crate) fn timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

fn links(s: &AppState, project: &str, kind: &str, id: &str) -> Value {
    json!([
        {"rel": "self", "href": s.url(&format!("/volume/v3/{project}/{kind}/{id}"))},
        {"rel": "bookmark", "href": s.url(&format!("/volume/{project}/{kind}/{id}"))},
    ])
}

/// `GET /volumes`: id, name, links.
pub(crate) fn volume_summary(s: &AppState, v: &Volume) -> Value {
    let id = v.id.to_string();
    json!({"id": id, "name": v.name, "links": links(s, &v.project_id.to_string(), "volumes", &id)})
}

/// `GET /volumes/{id}`, `/volumes/detail`, and the create answer.
pub(crate) fn volume(
    s: &AppState,
    v: &Volume,
    type_name: &str,
    caller: &Caller,
    version: VolumeVersion,
) -> Value {
    let id = v.id.to_string();
    let project = v.project_id.to_string();
    let (snapshot_id, source_volid) = match v.source {
        VolumeSource::Snapshot(sid) => (Some(sid.to_string()), None),
        VolumeSource::Volume(vid) => (None, Some(vid.to_string())),
        _ => (None, None),
    };
    let mut out = json!({
        "id": id,
        "name": v.name,
        "description": v.description,
        "status": v.status.as_str(),
        "size": v.size,
        "availability_zone": "nova",
        "created_at": timestamp(v.created_at),
        "updated_at": timestamp(v.updated_at),
        "attachments": [],
        "volume_type": type_name,
        "snapshot_id": snapshot_id,
        "source_volid": source_volid,
        "metadata": metadata_with_readonly(v),
        "links": links(s, &project, "volumes", &id),
        "user_id": v.user_id.to_string(),
        "bootable": if v.bootable { "true" } else { "false" },
        "encrypted": false,
        "replication_status": null,
        "consistencygroup_id": null,
        "multiattach": false,
        "migration_status": null,
    });
    if !v.image_metadata.is_empty() {
        out["volume_image_metadata"] = json!(v.image_metadata);
    }
    // Cinder's `volume_extension:volume_tenant_attribute`: admin or owner
    // (project reader); the host and migration attributes: admin only.
    out["os-vol-tenant-attr:tenant_id"] = json!(project);
    if caller.is_admin() {
        out["os-vol-host-attr:host"] = json!(super::backend::pool_name(s));
        out["os-vol-mig-status-attr:migstat"] = Value::Null;
        out["os-vol-mig-status-attr:name_id"] = Value::Null;
    }
    if version.at_least(13) {
        out["group_id"] = Value::Null;
    }
    if version.at_least(21) {
        out["provider_id"] = Value::Null;
    }
    if version.at_least(48) {
        out["service_uuid"] = json!("00000000-0000-0000-0000-000000000000");
        out["shared_targets"] = json!(false);
    }
    if version.at_least(63) {
        out["volume_type_id"] = json!(v.volume_type_id.to_string());
    }
    if version.at_least(65) {
        out["consumes_quota"] = json!(true);
    }
    out
}

/// The volume's metadata, with Cinder's admin metadata `readonly`
/// ("True"/"False") once it was set.
fn metadata_with_readonly(v: &Volume) -> Value {
    let mut m = json!(v.metadata);
    if let Some(r) = v.readonly {
        m["readonly"] = json!(if r { "True" } else { "False" });
    }
    m
}

/// Cinder answers create and update with the base view: the attributes its
/// extensions add to show and list (tenant, host, migration, image
/// metadata) are not there.
pub(crate) fn strip_extended_attributes(volume: &mut Value) {
    if let Some(obj) = volume.as_object_mut() {
        obj.retain(|k, _| !k.starts_with("os-vol-") && k != "volume_image_metadata");
    }
}

/// A snapshot: `detailed` (show, `/detail`) adds the extended attributes
/// (progress, project); create, update and the plain list do not.
pub(crate) fn snapshot(snap: &VolumeSnapshot, version: VolumeVersion, detailed: bool) -> Value {
    let progress = snap.progress.as_deref().unwrap_or(match snap.status {
        SnapshotStatus::Creating => "0%",
        _ => "100%",
    });
    let mut out = json!({
        "id": snap.id.to_string(),
        "name": snap.name,
        "description": snap.description,
        "status": snap.status.as_str(),
        "size": snap.size,
        "volume_id": snap.volume_id.to_string(),
        "created_at": timestamp(snap.created_at),
        "updated_at": timestamp(snap.updated_at),
        "metadata": snap.metadata,
    });
    if detailed {
        out["os-extended-snapshot-attributes:progress"] = json!(progress);
        out["os-extended-snapshot-attributes:project_id"] = json!(snap.project_id.to_string());
    }
    if version.at_least(14) {
        out["group_snapshot_id"] = Value::Null;
    }
    if version.at_least(41) {
        out["user_id"] = json!(snap.user_id.to_string());
    }
    if version.at_least(65) {
        out["consumes_quota"] = json!(true);
    }
    out
}
