//! Block Storage v3 (Cinder shapes) under `/volume/v3/{project_id}`:
//! volumes, their actions and metadata ([`volume`]), snapshots
//! ([`snapshots`]). Microversions are negotiated per request
//! ([`microversion`]); errors use Cinder's bodies
//! (`{"itemNotFound": {"code": 404, "message": …}}`, as Nova's).
//!
//! A project id in the URL that is not the token's is a 400 ("Malformed
//! request url"), as Cinder answers.

mod actions;
mod backend;
mod messages;
mod microversion;
mod qos;
mod quotas;
mod snapshots;
mod transfers;
mod types;
mod views;
mod volume;

use std::collections::BTreeMap;

use axum::Router;
use domain::identity::Caller;
use domain::Error;
use serde::Deserialize;
use serde_json::Value;

use crate::AppState;

pub(crate) use microversion::VolumeVersion;

pub(crate) fn routes() -> Router<AppState> {
    volume::routes()
        .merge(snapshots::routes())
        .merge(quotas::routes())
        .merge(types::routes())
        .merge(backend::routes())
        .merge(transfers::routes())
        .merge(messages::routes())
        .merge(qos::routes())
        .route(
            "/{project}/os-availability-zone",
            axum::routing::get(availability_zones),
        )
        .route("/{project}/extensions", axum::routing::get(extensions))
        .layer(axum::middleware::from_fn(microversion::negotiate))
}

/// Refuses a URL naming another project than the token's (admins may).
fn check_project(caller: &Caller, project: &str) -> Result<(), Error> {
    let mine = caller.project_id.map(|p| p.to_string());
    if mine.as_deref() == Some(project) || caller.is_admin() {
        Ok(())
    } else {
        Err(Error::invalid("Malformed request url"))
    }
}

/// The object under `key` in a request body.
fn object<'a>(body: &'a Value, key: &str) -> Result<&'a serde_json::Map<String, Value>, Error> {
    body.get(key)
        .and_then(Value::as_object)
        .ok_or_else(|| Error::invalid(format!("Missing required element '{key}' in request body.")))
}

/// An optional string field (null allowed).
fn opt_text(
    obj: &serde_json::Map<String, Value>,
    keys: &[&str],
) -> Result<Option<Option<String>>, Error> {
    for key in keys {
        match obj.get(*key) {
            None => continue,
            Some(Value::Null) => return Ok(Some(None)),
            Some(Value::String(s)) => return Ok(Some(Some(s.clone()))),
            Some(_) => {
                return Err(Error::invalid(format!(
                    "Invalid input received: '{key}' must be a string."
                )))
            }
        }
    }
    Ok(None)
}

/// A string-to-string map (Cinder's metadata).
fn string_map(v: Option<&Value>, what: &str) -> Result<Option<BTreeMap<String, String>>, Error> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(obj)) => obj
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(Error::invalid(format!(
                    "Invalid input received: the values of '{what}' must be strings."
                ))),
            })
            .collect::<Result<_, _>>()
            .map(Some),
        Some(_) => Err(Error::invalid(format!(
            "Invalid input received: '{what}' must be an object."
        ))),
    }
}

/// The one pair of a `{"meta": {key: value}}` body, whose key must be the
/// URL's.
fn meta_item(body: &Value, url_key: &str) -> Result<(String, String), Error> {
    let meta = object(body, "meta")?;
    if meta.len() != 1 {
        return Err(Error::invalid("Request body contains too many items."));
    }
    let (k, v) = meta.iter().next().expect("one entry");
    if k != url_key {
        return Err(Error::invalid("Request body and URI mismatch"));
    }
    let v = v.as_str().ok_or_else(|| {
        Error::invalid("Invalid input received: metadata values must be strings.")
    })?;
    Ok((k.clone(), v.to_string()))
}

/// A size in GiB: an integer or a string of digits.
fn size_of(v: Option<&Value>, key: &str) -> Result<Option<u64>, Error> {
    let bad = || {
        Error::invalid(format!(
            "Invalid input received: '{key}' must be an integer greater than 0."
        ))
    };
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().filter(|n| *n > 0).map(Some).ok_or_else(bad),
        Some(Value::String(s)) => s
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(bad),
        Some(_) => Err(bad()),
    }
}

/// A boolean as Cinder reads one (`true`, `"True"`, `"yes"`, `1`, …).
fn flag(v: Option<&Value>, key: &str) -> Result<bool, Error> {
    match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "on" | "1" => Ok(true),
            "false" | "f" | "no" | "n" | "off" | "0" => Ok(false),
            _ => Err(Error::invalid(format!(
                "Invalid input received: '{key}' must be a boolean."
            ))),
        },
        Some(Value::Number(n)) => Ok(n.as_i64() != Some(0)),
        Some(_) => Err(Error::invalid(format!(
            "Invalid input received: '{key}' must be a boolean."
        ))),
    }
}

/// The list filters both collections take.
#[derive(Deserialize, Default, Debug)]
struct ListQuery {
    all_tenants: Option<String>,
    all_projects: Option<String>,
    /// With `all_tenants` (admins): the volumes of this project only.
    project_id: Option<String>,
    name: Option<String>,
    display_name: Option<String>,
    status: Option<String>,
    volume_id: Option<String>,
    limit: Option<String>,
    marker: Option<String>,
    offset: Option<String>,
    sort: Option<String>,
    sort_key: Option<String>,
    sort_dir: Option<String>,
}

/// A value a list is sorted on (the same key gives the same variant).
#[derive(Debug, PartialEq, PartialOrd)]
enum SortValue {
    Int(i64),
    Text(String),
}

impl ListQuery {
    fn all_projects(&self) -> bool {
        [&self.all_tenants, &self.all_projects].iter().any(|v| {
            v.as_deref()
                .is_some_and(|v| !matches!(v, "0" | "false" | "False" | "f"))
        })
    }

    fn name(&self) -> Option<&str> {
        self.name.as_deref().or(self.display_name.as_deref())
    }

    /// The sort keys with their direction (`true`: descending), as Cinder
    /// reads `sort=k1:dir,k2` or `sort_key`/`sort_dir`; default newest
    /// first. A key not in `allowed` is a 400.
    fn sort_keys(&self, allowed: &[&str]) -> Result<Vec<(String, bool)>, Error> {
        let desc_of = |dir: Option<&str>| -> Result<bool, Error> {
            match dir.map(str::to_ascii_lowercase).as_deref() {
                None | Some("desc") => Ok(true),
                Some("asc") => Ok(false),
                Some(other) => Err(Error::invalid(format!(
                    "Invalid input received: Unknown sort direction '{other}', must be 'desc' or 'asc'."
                ))),
            }
        };
        let mut keys = Vec::new();
        if let Some(sort) = &self.sort {
            if self.sort_key.is_some() || self.sort_dir.is_some() {
                return Err(Error::invalid(
                    "Invalid input received: The 'sort_key' and 'sort_dir' parameters are deprecated and cannot be used with the 'sort' parameter.",
                ));
            }
            for part in sort.split(',').filter(|p| !p.trim().is_empty()) {
                let mut it = part.trim().splitn(2, ':');
                let key = it.next().unwrap_or_default().to_string();
                keys.push((key, desc_of(it.next())?));
            }
        } else if let Some(key) = &self.sort_key {
            keys.push((key.clone(), desc_of(self.sort_dir.as_deref())?));
        } else if self.sort_dir.is_some() {
            keys.push(("created_at".into(), desc_of(self.sort_dir.as_deref())?));
        }
        for (key, _) in &keys {
            if !allowed.contains(&key.as_str()) {
                return Err(Error::invalid(format!(
                    "Invalid input received: Invalid sort key {key}."
                )));
            }
        }
        if keys.is_empty() {
            keys.push(("created_at".into(), true));
        }
        if !keys.iter().any(|(k, _)| k == "id") {
            let last_desc = keys.last().map(|(_, d)| *d).unwrap_or(true);
            keys.push(("id".into(), last_desc));
        }
        Ok(keys)
    }

    /// Sorts (see [`Self::sort_keys`]), then keeps the page after `marker`
    /// (404 if it is not there, as Cinder), at most `limit` long.
    fn page<T>(
        &self,
        mut items: Vec<T>,
        allowed_sort_keys: &[&str],
        sort_value: impl Fn(&T, &str) -> Option<SortValue>,
        id: impl Fn(&T) -> String,
    ) -> Result<Vec<T>, Error> {
        let keys = self.sort_keys(allowed_sort_keys)?;
        items.sort_by(|a, b| {
            for (key, desc) in &keys {
                let (x, y) = (sort_value(a, key), sort_value(b, key));
                let ord = x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal);
                let ord = if *desc { ord.reverse() } else { ord };
                if ord.is_ne() {
                    return ord;
                }
            }
            std::cmp::Ordering::Equal
        });
        if let Some(marker) = &self.marker {
            let pos = items
                .iter()
                .position(|i| id(i) == *marker)
                .ok_or_else(|| Error::not_found("Marker", marker))?;
            items.drain(..=pos);
        }
        if let Some(offset) = &self.offset {
            let n: usize = offset.parse().map_err(|_| {
                Error::invalid(format!(
                    "Invalid input received: offset '{offset}' is not a non-negative integer."
                ))
            })?;
            items.drain(..n.min(items.len()));
        }
        if let Some(n) = self.limit()? {
            items.truncate(n);
        }
        Ok(items)
    }

    fn limit(&self) -> Result<Option<usize>, Error> {
        self.limit
            .as_ref()
            .map(|limit| {
                limit.parse().map_err(|_| {
                    Error::invalid(format!(
                        "Invalid input received: limit '{limit}' is not a non-negative integer."
                    ))
                })
            })
            .transpose()
    }

    /// `<collection>_links` with a `next` link when the page is full, as
    /// Cinder answers a list with a `limit`; `uri` is the request's, below
    /// the `/volume/v3` nest.
    fn links(
        &self,
        s: &AppState,
        uri: &http::Uri,
        shown: usize,
        last_id: Option<String>,
    ) -> Option<Value> {
        let limit = self.limit().ok().flatten()?;
        let last_id = last_id?;
        if limit == 0 || shown < limit {
            return None;
        }
        let mut query: Vec<String> = uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("marker="))
            .map(str::to_owned)
            .collect();
        query.push(format!("marker={last_id}"));
        // Handlers see the path below the `/volume/v3` nest.
        let href = format!(
            "{}?{}",
            s.url(&format!("/volume/v3{}", uri.path())),
            query.join("&")
        );
        Some(serde_json::json!([{"rel": "next", "href": href}]))
    }
}

/// `GET /{project}/os-availability-zone`: the one zone.
async fn availability_zones(
    axum::extract::State(_s): axum::extract::State<AppState>,
    crate::auth::Auth(_caller): crate::auth::Auth,
) -> axum::Json<Value> {
    axum::Json(serde_json::json!({"availabilityZoneInfo": [
        {"zoneName": "nova", "zoneState": {"available": true}}
    ]}))
}

/// `GET /{project}/extensions`: Cinder lists its API extensions; the ones
/// whose attributes Snapstack shows.
async fn extensions(crate::auth::Auth(_caller): crate::auth::Auth) -> axum::Json<Value> {
    let ext = |alias: &str, name: &str, description: &str| {
        serde_json::json!({
            "alias": alias, "name": name, "description": description,
            "links": [], "updated": "2013-04-18T00:00:00+00:00",
        })
    };
    axum::Json(serde_json::json!({"extensions": [
        ext("os-availability-zone", "AvailabilityZones", "Describe Availability Zones."),
        ext("os-extended-snapshot-attributes", "ExtendedSnapshotAttributes", "Extended SnapshotAttributes support."),
        ext("os-vol-tenant-attr", "VolumeTenantAttribute", "Expose the internal project_id as an attribute of a volume."),
        ext("os-vol-host-attr", "VolumeHostAttribute", "Show host for a volume."),
        ext("os-vol-mig-status-attr", "VolumeMigStatusAttribute", "Expose migration_status as an attribute of a volume."),
        ext("os-vol-image-meta", "VolumeImageMetadata", "Show image metadata associated with the volume."),
    ]}))
}
