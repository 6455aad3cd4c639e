//! `/servers` and `/servers/{id}/action`.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cloud::compute::{BlockDevice, NewServer, ServerChanges};
use cloud::network::{NicRequest, ServerNetworks};
use domain::server::ServerAction;
use domain::Error;
use http::HeaderValue;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{views, volume_attachments, Microversion, NovaResult};
use crate::auth::Auth;
use crate::json::JsonBody;
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/servers", get(list).post(create))
        .route("/servers/detail", get(list_detail))
        .route("/servers/{id}", get(show).put(update).delete(delete))
        .route("/servers/{id}/action", post(action))
}

/// Keys Nova's schema allows in `server` (those we do not act on are
/// accepted and ignored, as a cloud without that feature would).
const SERVER_FIELDS: &[&str] = &[
    "name",
    "imageRef",
    "flavorRef",
    "networks",
    "metadata",
    "availability_zone",
    "key_name",
    "security_groups",
    "user_data",
    "config_drive",
    "adminPass",
    "block_device_mapping_v2",
    "block_device_mapping",
    "min_count",
    "max_count",
    "return_reservation_id",
    "description",
    "tags",
    "OS-DCF:diskConfig",
    "accessIPv4",
    "accessIPv6",
    "personality",
    "hostname",
    "trusted_image_certificates",
    "host",
    "hypervisor_hostname",
];

fn string_map(v: Option<&Value>, what: &str) -> Result<BTreeMap<String, String>, Error> {
    let Some(v) = v else {
        return Ok(BTreeMap::new());
    };
    let obj = v
        .as_object()
        .ok_or_else(|| Error::invalid(format!("'{what}' must be an object of strings.")))?;
    obj.iter()
        .map(|(k, v)| match v {
            Value::String(s) if k.len() <= 255 && s.len() <= 255 => Ok((k.clone(), s.clone())),
            _ => Err(Error::invalid(format!(
                "'{what}' values must be strings of at most 255 characters."
            ))),
        })
        .collect()
}

/// Snapstack has no virtual networks; the one network it lists, `none`
/// (see [`super::networks`]), stands for "no NIC" so that
/// `openstack server create --network none` works at any microversion.
fn is_no_network(entry: &Value) -> bool {
    entry.get("uuid").and_then(Value::as_str) == Some(super::networks::NO_NETWORK_ID)
        && entry
            .as_object()
            .is_some_and(|o| o.keys().all(|k| k == "uuid" || k == "tag"))
}

/// Keys Nova's schema allows in a `block_device_mapping_v2` entry (those
/// we do not act on are accepted and ignored).
const BDM_FIELDS: &[&str] = &[
    "source_type",
    "destination_type",
    "uuid",
    "boot_index",
    "volume_size",
    "delete_on_termination",
    "device_name",
    "guest_format",
    "disk_bus",
    "device_type",
    "tag",
    "volume_type",
    "no_device",
    "volume_id",
    "snapshot_id",
    "image_id",
];

/// An integer Nova accepts as a number or a numeric string.
fn int_field(bdm: &Map<String, Value>, key: &str) -> Result<Option<i64>, Error> {
    match bdm.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| Error::invalid(format!("'{key}' must be an integer."))),
        Some(Value::String(t)) if t.is_empty() => Ok(None),
        Some(Value::String(t)) => t
            .parse()
            .map(Some)
            .map_err(|_| Error::invalid(format!("'{key}' must be an integer ('{t}' is not)."))),
        Some(_) => Err(Error::invalid(format!("'{key}' must be an integer."))),
    }
}

/// One `block_device_mapping_v2` entry, checked for shape.
fn parse_bdm(entry: &Value) -> Result<BlockDevice, Error> {
    let bdm = entry
        .as_object()
        .ok_or_else(|| Error::invalid("Each block_device_mapping_v2 entry must be an object."))?;
    if let Some(extra) = bdm.keys().find(|k| !BDM_FIELDS.contains(&k.as_str())) {
        return Err(Error::invalid(format!(
            "Additional properties are not allowed ('{extra}' was unexpected)."
        )));
    }
    let text = |key: &str| -> Result<Option<String>, Error> {
        match bdm.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Error::invalid(format!("'{key}' must be a string."))),
        }
    };
    let source_type = text("source_type")?.ok_or_else(|| {
        Error::invalid("'source_type' is a required property of a block device mapping.")
    })?;
    if !["image", "volume", "snapshot", "blank"].contains(&source_type.as_str()) {
        return Err(Error::invalid(format!(
            "'{source_type}' is not one of ['blank', 'image', 'snapshot', 'volume']."
        )));
    }
    let destination_type = match text("destination_type")? {
        Some(d) if d == "local" || d == "volume" => d,
        Some(d) => {
            return Err(Error::invalid(format!(
                "'{d}' is not one of ['local', 'volume']."
            )))
        }
        None if source_type == "volume" || source_type == "snapshot" => "volume".to_string(),
        None => "local".to_string(),
    };
    if text("device_type")?.is_some_and(|t| t != "disk") {
        return Err(Error::invalid("Only device_type 'disk' is supported."));
    }
    let delete_on_termination = match bdm.get("delete_on_termination") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(t)) => match t.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => {
                return Err(Error::invalid(format!(
                    "'{t}' is not a valid boolean for delete_on_termination."
                )))
            }
        },
        Some(_) => return Err(Error::invalid("'delete_on_termination' must be a boolean.")),
    };
    let volume_size = match int_field(bdm, "volume_size")? {
        None => None,
        Some(n) if n > 0 => Some(n as u64),
        Some(n) => {
            return Err(Error::invalid(format!(
                "volume_size must be 1 or more ({n} is not)."
            )))
        }
    };
    let uuid = text("uuid")?
        .or(text("volume_id")?)
        .or(text("snapshot_id")?)
        .or(text("image_id")?);
    Ok(BlockDevice {
        source_type,
        destination_type,
        uuid,
        boot_index: int_field(bdm, "boot_index")?,
        volume_size,
        delete_on_termination,
        device_name: text("device_name")?,
    })
}

/// `accessIPv4`/`accessIPv6`: an address of that family (IPv6 stored in
/// its canonical form, as Nova shows it), or empty/null for none.
fn access_ip(obj: &Map<String, Value>, key: &str) -> Result<Option<Option<String>>, Error> {
    let invalid = || Error::invalid(format!("Invalid input for field/attribute {key}."));
    match obj.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(t)) if t.is_empty() => Ok(Some(None)),
        Some(Value::String(t)) if key == "accessIPv4" => t
            .parse::<std::net::Ipv4Addr>()
            .map(|ip| Some(Some(ip.to_string())))
            .map_err(|_| invalid()),
        Some(Value::String(t)) => t
            .parse::<std::net::Ipv6Addr>()
            .map(|ip| Some(Some(ip.to_string())))
            .map_err(|_| invalid()),
        Some(_) => Err(invalid()),
    }
}

fn parse_create(body: &Value, v: Microversion) -> Result<NewServer, Error> {
    let top = body
        .as_object()
        .ok_or_else(|| Error::invalid("The request body must be a JSON object."))?;
    if let Some(extra) = top.keys().find(|k| {
        !["server", "os:scheduler_hints", "OS-SCH-HNT:scheduler_hints"].contains(&k.as_str())
    }) {
        return Err(Error::invalid(format!(
            "Additional properties are not allowed ('{extra}' was unexpected)."
        )));
    }
    let obj: &Map<String, Value> = top
        .get("server")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::invalid("'server' is a required property."))?;
    if let Some(extra) = obj.keys().find(|k| !SERVER_FIELDS.contains(&k.as_str())) {
        return Err(Error::invalid(format!(
            "Additional properties are not allowed ('{extra}' was unexpected)."
        )));
    }
    let text = |key: &str| -> Result<String, Error> {
        match obj.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(Error::invalid(format!("'{key}' must be a string."))),
            None => Err(Error::invalid(format!("'{key}' is a required property."))),
        }
    };
    let networks = parse_networks(obj.get("networks"), v)?;
    if obj.contains_key("block_device_mapping") {
        return Err(Error::invalid(
            "The legacy block_device_mapping is not supported: use block_device_mapping_v2.",
        ));
    }
    let block_devices = match obj.get("block_device_mapping_v2") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list.iter().map(parse_bdm).collect::<Result<_, _>>()?,
        Some(_) => return Err(Error::invalid("'block_device_mapping_v2' must be a list.")),
    };
    let image_ref = match obj.get("imageRef") {
        None | Some(Value::Null) if !block_devices.is_empty() => String::new(),
        _ => text("imageRef")?,
    };
    let mut counts = [1u64, 1u64];
    for (slot, count) in counts.iter_mut().zip(["min_count", "max_count"]) {
        let n = match obj.get(count) {
            None => continue,
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(t)) => t.parse::<u64>().ok(),
            Some(_) => None,
        };
        *slot = n.filter(|n| *n >= 1).ok_or_else(|| {
            Error::invalid(format!(
                "Invalid input for field/attribute {count}: it must be an integer of 1 or more."
            ))
        })?;
    }
    if counts[0] > counts[1] {
        return Err(Error::invalid("min_count must be <= max_count"));
    }
    if counts != [1, 1] {
        return Err(Error::invalid(
            "Creating more than one server per request is not supported.",
        ));
    }
    Ok(NewServer {
        name: text("name")?,
        image_ref,
        flavor_ref: text("flavorRef")?,
        metadata: string_map(obj.get("metadata"), "metadata")?,
        access_ipv4: access_ip(obj, "accessIPv4")?.flatten(),
        access_ipv6: access_ip(obj, "accessIPv6")?.flatten(),
        key_name: match obj.get("key_name") {
            None | Some(Value::Null) => None,
            Some(Value::String(k)) => Some(k.clone()),
            Some(_) => return Err(Error::invalid("'key_name' must be a string.")),
        },
        block_devices,
        networks,
    })
}

/// Nova's `networks`: `auto`, `none`, or a list of `{uuid, fixed_ip}` / `{port}`
/// entries (required from 2.37). The old `none` pseudo-network is still understood.
fn parse_networks(value: Option<&Value>, v: Microversion) -> Result<ServerNetworks, Error> {
    let list = match value {
        None if v.at_least(37) => {
            return Err(Error::invalid(
                "'networks' is a required property (microversion 2.37 and later).",
            ))
        }
        None => return Ok(ServerNetworks::Auto),
        Some(Value::String(n)) if n == "auto" => return Ok(ServerNetworks::Auto),
        Some(Value::String(n)) if n == "none" => return Ok(ServerNetworks::None),
        Some(Value::Array(list)) => list,
        Some(other) => {
            return Err(Error::invalid(format!(
                "Invalid input for field/attribute networks. Value: {other}. It must be 'auto', 'none' or a list."
            )))
        }
    };
    if !list.is_empty() && list.iter().all(is_no_network) {
        return Ok(ServerNetworks::None);
    }
    let mut nics = Vec::new();
    for entry in list {
        let obj = entry
            .as_object()
            .ok_or_else(|| Error::invalid("Each entry of 'networks' must be an object."))?;
        if let Some(extra) = obj
            .keys()
            .find(|k| !["uuid", "port", "fixed_ip", "tag"].contains(&k.as_str()))
        {
            return Err(Error::invalid(format!(
                "Additional properties are not allowed ('{extra}' was unexpected)."
            )));
        }
        let text = |key: &str| match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Error::invalid(format!(
                "Invalid input for field/attribute {key}: it must be a string."
            ))),
        };
        let fixed_ip = match text("fixed_ip")? {
            None => None,
            Some(ip) => Some(ip.parse().map_err(|_| {
                Error::invalid(format!(
                    "Invalid input for field/attribute fixed_ip. Value: {ip}. '{ip}' is not an IPv4 address."
                ))
            })?),
        };
        nics.push(match (text("port")?, text("uuid")?) {
            (Some(port), _) => NicRequest::Port(port),
            (None, Some(id)) => NicRequest::Network { id, fixed_ip },
            (None, None) => {
                return Err(Error::invalid(
                    "Bad networks format: each entry needs a network 'uuid' or a 'port'.",
                ))
            }
        });
    }
    Ok(ServerNetworks::Nics(nics))
}

/// What update and rebuild answer below 2.75: the base server view,
/// without the extended attributes (zone, states, key, volumes, usage).
fn update_view(mut out: Value, v: Microversion) -> Value {
    const BASE: &[&str] = &[
        "OS-DCF:diskConfig",
        "accessIPv4",
        "accessIPv6",
        "addresses",
        "created",
        "fault",
        "flavor",
        "hostId",
        "id",
        "image",
        "links",
        "metadata",
        "name",
        "progress",
        "status",
        "tenant_id",
        "updated",
        "user_id",
        "locked",
        "locked_reason",
        "description",
        "tags",
        "trusted_image_certificates",
    ];
    if !v.at_least(75) {
        if let Some(obj) = out.as_object_mut() {
            obj.retain(|k, _| BASE.contains(&k.as_str()));
        }
    }
    out
}

/// A server as Nova shows it, with its volumes.
async fn server_view(
    s: &AppState,
    server: &domain::server::Server,
    caller: &domain::identity::Caller,
    v: Microversion,
) -> Result<Value, Error> {
    let mut out = views::server(s, server, caller, v);
    let attachments = s.cloud.attachments_of(server).await?;
    out["os-extended-volumes:volumes_attached"] =
        volume_attachments::volumes_attached(&attachments, v);
    let mut addresses = serde_json::Map::new();
    for a in s.cloud.server_addresses(server.id).await? {
        let entry = json!({
            "version": 4,
            "addr": a.addr.to_string(),
            "OS-EXT-IPS:type": if a.floating { "floating" } else { "fixed" },
            "OS-EXT-IPS-MAC:mac_addr": a.mac,
        });
        if let Some(list) = addresses
            .entry(a.network)
            .or_insert_with(|| json!([]))
            .as_array_mut()
        {
            list.push(entry);
        }
    }
    out["addresses"] = Value::Object(addresses);
    let groups: Vec<Value> = s
        .cloud
        .server_security_groups(server.id)
        .await?
        .into_iter()
        .map(|name| json!({"name": name}))
        .collect();
    if out.get("security_groups").is_some() {
        out["security_groups"] = Value::Array(groups);
    }
    Ok(out)
}

async fn create(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Response> {
    let server = s
        .cloud
        .create_server(&caller, parse_create(&body, v)?)
        .await?;
    let id = server.id.to_string();
    // Nova answers a create with id, links, diskConfig, security groups
    // (and adminPass): not the name.
    let mut out = views::server_summary(&s, &server);
    if let Some(obj) = out.as_object_mut() {
        obj.remove("name");
    }
    out["OS-DCF:diskConfig"] = json!("MANUAL");
    out["security_groups"] = json!([{"name": "default"}]);
    let mut response = (StatusCode::ACCEPTED, Json(json!({"server": out}))).into_response();
    if let Ok(loc) = HeaderValue::from_str(&s.url(&format!("/compute/v2.1/servers/{id}"))) {
        response.headers_mut().insert(http::header::LOCATION, loc);
    }
    Ok(response)
}

#[derive(Deserialize, Default)]
struct ListQuery {
    all_tenants: Option<String>,
    name: Option<String>,
    status: Option<String>,
    image: Option<String>,
    flavor: Option<String>,
    limit: Option<String>,
    marker: Option<String>,
}

async fn filtered(
    s: &AppState,
    caller: &domain::identity::Caller,
    q: &ListQuery,
) -> Result<Vec<domain::server::Server>, Error> {
    let all = q
        .all_tenants
        .as_deref()
        .is_some_and(|v| !matches!(v, "0" | "false" | "False"));
    let mut servers = s.cloud.servers(caller, all).await?;
    if let Some(name) = &q.name {
        servers.retain(|srv| srv.name.contains(name.as_str()));
    }
    if let Some(status) = &q.status {
        servers.retain(|srv| srv.status().eq_ignore_ascii_case(status));
    }
    // Nova matches `image` and `flavor` against the id (a URL's last part).
    let last_part = |r: &str| r.rsplit('/').next().unwrap_or_default().to_string();
    if let Some(image) = &q.image {
        let image = last_part(image);
        servers.retain(|srv| srv.image_id.is_some_and(|i| i.to_string() == image));
    }
    if let Some(flavor) = &q.flavor {
        let flavor = last_part(flavor);
        servers.retain(|srv| srv.flavor.id == flavor);
    }
    if let Some(marker) = &q.marker {
        let pos = servers
            .iter()
            .position(|srv| srv.id.to_string() == *marker)
            .ok_or_else(|| Error::invalid(format!("marker [{marker}] not found")))?;
        servers.drain(..=pos);
    }
    if let Some(limit) = &q.limit {
        let n: usize = limit.parse().map_err(|_| {
            Error::invalid(format!("limit '{limit}' is not a non-negative integer."))
        })?;
        servers.truncate(n);
    }
    Ok(servers)
}

async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Query(q): Query<ListQuery>,
) -> NovaResult<Json<Value>> {
    let servers = filtered(&s, &caller, &q).await?;
    Ok(Json(
        json!({"servers": servers.iter().map(|srv| views::server_summary(&s, srv)).collect::<Vec<_>>()}),
    ))
}

async fn list_detail(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Query(q): Query<ListQuery>,
) -> NovaResult<Json<Value>> {
    let servers = filtered(&s, &caller, &q).await?;
    let mut shown = Vec::with_capacity(servers.len());
    for srv in &servers {
        shown.push(server_view(&s, srv, &caller, v).await?);
    }
    Ok(Json(json!({"servers": shown})))
}

async fn show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Path(id): Path<String>,
) -> NovaResult<Json<Value>> {
    let server = s.cloud.server(&caller, &id).await?;
    Ok(Json(
        json!({"server": server_view(&s, &server, &caller, v).await?}),
    ))
}

async fn update(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Json<Value>> {
    let obj = body
        .get("server")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::invalid("'server' is a required property."))?;
    if let Some(extra) = obj.keys().find(|k| {
        ![
            "name",
            "description",
            "accessIPv4",
            "accessIPv6",
            "OS-DCF:diskConfig",
            "hostname",
        ]
        .contains(&k.as_str())
    }) {
        return Err(Error::invalid(format!(
            "Additional properties are not allowed ('{extra}' was unexpected)."
        ))
        .into());
    }
    let name = match obj.get("name") {
        None => None,
        Some(Value::String(n)) => Some(n.clone()),
        Some(_) => return Err(Error::invalid("'name' must be a string.").into()),
    };
    let changes = ServerChanges {
        name,
        access_ipv4: access_ip(obj, "accessIPv4")?,
        access_ipv6: access_ip(obj, "accessIPv6")?,
        metadata: None,
    };
    let server = s.cloud.update_server(&caller, &id, changes).await?;
    let shown = update_view(server_view(&s, &server, &caller, v).await?, v);
    Ok(Json(json!({"server": shown})))
}

async fn delete(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> NovaResult<StatusCode> {
    s.cloud
        .server_action(&caller, &id, ServerAction::Delete)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn parse_action(body: &Value) -> Result<(String, Value), Error> {
    let obj = body
        .as_object()
        .ok_or_else(|| Error::invalid("The action body must be a JSON object."))?;
    if obj.len() != 1 {
        return Err(Error::invalid(
            "The action body must name exactly one action.",
        ));
    }
    let (name, args) = obj
        .iter()
        .next()
        .ok_or_else(|| Error::invalid("No action given."))?;
    Ok((name.clone(), args.clone()))
}

async fn action(
    State(s): State<AppState>,
    Auth(caller): Auth,
    v: Microversion,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> NovaResult<Response> {
    let (name, args) = parse_action(&body)?;
    let simple = match name.as_str() {
        "os-stop" => Some(ServerAction::Stop),
        "os-start" => Some(ServerAction::Start),
        "pause" => Some(ServerAction::Pause),
        "unpause" => Some(ServerAction::Unpause),
        "suspend" => Some(ServerAction::Suspend),
        "resume" => Some(ServerAction::Resume),
        _ => None,
    };
    if let Some(act) = simple {
        s.cloud.server_action(&caller, &id, act).await?;
        return Ok(StatusCode::ACCEPTED.into_response());
    }
    match name.as_str() {
        "lock" | "unlock" => {
            s.cloud.lock_server(&caller, &id, name == "lock").await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "reboot" => {
            let kind = args.get("type").and_then(Value::as_str).unwrap_or("");
            let act = match kind.to_ascii_uppercase().as_str() {
                "SOFT" => ServerAction::RebootSoft,
                "HARD" => ServerAction::RebootHard,
                _ => {
                    return Err(Error::invalid(format!(
                        "Reboot type '{kind}' is not SOFT or HARD."
                    ))
                    .into())
                }
            };
            s.cloud.server_action(&caller, &id, act).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "os-getConsoleOutput" => {
            let length = match args.get("length") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) => n.as_i64().filter(|n| *n >= -1),
                Some(Value::String(t)) => t.parse::<i64>().ok().filter(|n| *n >= -1),
                Some(_) => None,
            };
            if args.get("length").is_some_and(|l| !l.is_null()) && length.is_none() {
                return Err(Error::invalid("'length' must be an integer of -1 or more.").into());
            }
            let lines = length.filter(|n| *n >= 0).map(|n| n as usize);
            let output = s.cloud.console_output(&caller, &id, lines).await?;
            Ok(Json(json!({"output": output})).into_response())
        }
        "createImage" => {
            let obj = args
                .as_object()
                .ok_or_else(|| Error::invalid("'createImage' must be an object."))?;
            if let Some(extra) = obj
                .keys()
                .find(|k| !["name", "metadata"].contains(&k.as_str()))
            {
                return Err(Error::invalid(format!(
                    "Additional properties are not allowed ('{extra}' was unexpected)."
                ))
                .into());
            }
            let name = obj
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.trim().is_empty())
                .ok_or_else(|| Error::invalid("'name' is a required property of createImage."))?;
            let metadata = string_map(obj.get("metadata"), "metadata")?;
            domain::image::check_snapshot_metadata(metadata.keys())?;
            let image = s
                .cloud
                .create_server_image(&caller, &id, name.to_string(), metadata)
                .await?;
            let image_id = image.id.to_string();
            let mut response = if v.at_least(45) {
                (StatusCode::ACCEPTED, Json(json!({"image_id": image_id}))).into_response()
            } else {
                StatusCode::ACCEPTED.into_response()
            };
            if let Ok(loc) = HeaderValue::from_str(&s.url(&format!("/image/v2/images/{image_id}")))
            {
                response.headers_mut().insert(http::header::LOCATION, loc);
            }
            Ok(response)
        }
        "rebuild" => {
            let image_ref = args
                .get("imageRef")
                .and_then(Value::as_str)
                .ok_or_else(|| Error::invalid("'imageRef' is a required property of rebuild."))?;
            // Name, metadata and access addresses given with the rebuild
            // are set first, so the rebuild carries them.
            let obj = args
                .as_object()
                .ok_or_else(|| Error::invalid("'rebuild' must be an object."))?;
            let changes = ServerChanges {
                name: match obj.get("name") {
                    None => None,
                    Some(Value::String(n)) => Some(n.clone()),
                    Some(_) => return Err(Error::invalid("'name' must be a string.").into()),
                },
                access_ipv4: access_ip(obj, "accessIPv4")?,
                access_ipv6: access_ip(obj, "accessIPv6")?,
                metadata: obj
                    .get("metadata")
                    .map(|m| string_map(Some(m), "metadata"))
                    .transpose()?,
            };
            let wanted = changes.name.is_some()
                || changes.access_ipv4.is_some()
                || changes.access_ipv6.is_some()
                || changes.metadata.is_some();
            if wanted {
                s.cloud.update_server(&caller, &id, changes).await?;
            }
            let server = s.cloud.rebuild_server(&caller, &id, image_ref).await?;
            let shown = update_view(server_view(&s, &server, &caller, v).await?, v);
            Ok((StatusCode::ACCEPTED, Json(json!({"server": shown}))).into_response())
        }
        other => {
            // A server that does not exist is a 404 whatever the action.
            s.cloud.server(&caller, &id).await?;
            Err(Error::invalid(format!("Action '{other}' is not supported.")).into())
        }
    }
}
