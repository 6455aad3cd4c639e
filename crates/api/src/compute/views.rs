//! Nova's JSON shapes for flavors and servers, by microversion.

use domain::identity::Caller;
use domain::server::{Flavor, Server, VmState};
use serde_json::{json, Value};

use super::Microversion;
use crate::AppState;

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn links(s: &AppState, kind: &str, id: &str) -> Value {
    json!([
        {"rel": "self", "href": s.url(&format!("/compute/v2.1/{kind}/{id}"))},
        {"rel": "bookmark", "href": s.url(&format!("/compute/{kind}/{id}"))},
    ])
}

pub(crate) fn flavor(s: &AppState, f: &Flavor, v: Microversion) -> Value {
    let mut out = json!({
        "id": f.id,
        "name": f.name,
        "ram": f.ram,
        "disk": f.disk,
        "vcpus": f.vcpus,
        "OS-FLV-EXT-DATA:ephemeral": f.ephemeral,
        "OS-FLV-DISABLED:disabled": false,
        "swap": if f.swap == 0 && !v.at_least(75) { json!("") } else { json!(f.swap) },
        "rxtx_factor": 1.0,
        "os-flavor-access:is_public": f.is_public,
        "links": links(s, "flavors", &f.id),
    });
    if v.at_least(55) {
        out["description"] = json!(f.description);
    }
    if v.at_least(61) {
        out["extra_specs"] = json!(f.extra_specs);
    }
    out
}

pub(crate) fn flavor_summary(s: &AppState, f: &Flavor, v: Microversion) -> Value {
    let mut out = json!({"id": f.id, "name": f.name, "links": links(s, "flavors", &f.id)});
    if v.at_least(55) {
        out["description"] = json!(f.description);
    }
    out
}

pub(crate) fn server_summary(s: &AppState, server: &Server) -> Value {
    let id = server.id.to_string();
    json!({"id": id, "name": server.name, "links": links(s, "servers", &id)})
}

pub(crate) fn server(s: &AppState, server: &Server, caller: &Caller, v: Microversion) -> Value {
    let id = server.id.to_string();
    let image = match server.image_id {
        Some(image) => {
            let image = image.to_string();
            json!({"id": image, "links": [{"rel": "bookmark", "href": s.url(&format!("/compute/images/{image}"))}]})
        }
        None => json!(""),
    };
    let f = &server.flavor;
    let flavor = if v.at_least(47) {
        json!({"vcpus": f.vcpus, "ram": f.ram, "disk": f.disk, "ephemeral": f.ephemeral, "swap": f.swap,
               "original_name": f.name, "extra_specs": f.extra_specs})
    } else {
        json!({"id": f.id, "links": [{"rel": "bookmark", "href": s.url(&format!("/compute/flavors/{}", f.id))}]})
    };
    let mut out = json!({
        "id": id,
        "name": server.name,
        "status": server.status(),
        "tenant_id": server.project_id.to_string(),
        "user_id": server.user_id.to_string(),
        "metadata": server.metadata,
        "hostId": "",
        "image": image,
        "flavor": flavor,
        "created": timestamp(server.created_at),
        "updated": timestamp(server.updated_at),
        "addresses": {},
        "accessIPv4": server.access_ipv4.as_deref().unwrap_or(""),
        "accessIPv6": server.access_ipv6.as_deref().unwrap_or(""),
        "links": links(s, "servers", &id),
        "OS-DCF:diskConfig": "MANUAL",
        "progress": server.progress,
        "OS-EXT-AZ:availability_zone": "nova",
        "config_drive": "",
        "key_name": server.key_name,
        "OS-SRV-USG:launched_at": server.launched_at.map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()),
        "OS-SRV-USG:terminated_at": null,
        "OS-EXT-STS:task_state": server.task_state.map(|t| t.as_str()),
        "OS-EXT-STS:vm_state": server.vm_state.as_str(),
        "OS-EXT-STS:power_state": server.power_state as i64,
        "os-extended-volumes:volumes_attached": [],
        "security_groups": [],
    });
    if caller.is_admin() {
        out["OS-EXT-SRV-ATTR:host"] = json!("localhost");
        out["OS-EXT-SRV-ATTR:hypervisor_hostname"] = json!("localhost");
        out["OS-EXT-SRV-ATTR:instance_name"] = json!(format!("instance-{id}"));
    }
    if let Some(fault) = &server.fault {
        if matches!(server.vm_state, VmState::Error | VmState::Stopped)
            || server.status() == "ERROR"
        {
            out["fault"] = if caller.is_admin() {
                json!({"code": fault.code, "message": fault.public_message(), "details": fault.message, "created": timestamp(fault.created)})
            } else {
                json!({"code": fault.code, "message": fault.public_message(), "created": timestamp(fault.created)})
            };
        }
    }
    if v.at_least(9) {
        out["locked"] = json!(server.locked);
    }
    if v.at_least(19) {
        out["description"] = json!(null);
    }
    if v.at_least(26) {
        out["tags"] = json!([]);
    }
    if v.at_least(63) {
        out["trusted_image_certificates"] = json!(null);
    }
    if v.at_least(71) {
        out["server_groups"] = json!([]);
    }
    if v.at_least(73) {
        out["locked_reason"] = json!(null);
    }
    out
}
