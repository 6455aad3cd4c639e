//! Block Storage v3 (Cinder shapes) under `/volume/v3/{project_id}`:
//! volumes, their actions and metadata ([`volume`]), snapshots
//! ([`snapshots`]). Microversions are negotiated per request
//! ([`microversion`]); errors use Cinder's bodies
//! (`{"itemNotFound": {"code": 404, "message": …}}`, as Nova's).
//!
//! A project id in the URL that is not the token's is a 400 ("Malformed
//! request url"), as Cinder answers.

mod microversion;
mod quotas;
mod snapshots;
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

/// The id Cinder's default volume type (`__DEFAULT__`) has here.
pub(crate) const DEFAULT_TYPE_ID: &str = "5ad01bd4-5d8f-4c6b-8a6f-2b5d3a2f0001";

pub(crate) fn routes() -> Router<AppState> {
    volume::routes()
        .merge(snapshots::routes())
        .merge(quotas::routes())
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
    name: Option<String>,
    display_name: Option<String>,
    status: Option<String>,
    volume_id: Option<String>,
    limit: Option<String>,
    marker: Option<String>,
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

    /// Keeps the page after `marker`, at most `limit` long.
    fn page<T>(&self, mut items: Vec<T>, id: impl Fn(&T) -> String) -> Result<Vec<T>, Error> {
        if let Some(marker) = &self.marker {
            let pos = items.iter().position(|i| id(i) == *marker).ok_or_else(|| {
                Error::invalid(format!(
                    "Invalid input received: marker [{marker}] not found"
                ))
            })?;
            items.drain(..=pos);
        }
        if let Some(limit) = &self.limit {
            let n: usize = limit.parse().map_err(|_| {
                Error::invalid(format!(
                    "Invalid input received: limit '{limit}' is not a non-negative integer."
                ))
            })?;
            items.truncate(n);
        }
        Ok(items)
    }
}
