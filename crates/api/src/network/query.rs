//! Neutron's list semantics over serialized views: every query parameter that names
//! an attribute filters (repeat it for "any of"), `fields` selects attributes,
//! `sort_key`/`sort_dir` sort (repeatable), `limit`/`marker`/`page_reverse` page.

use axum::extract::FromRequestParts;
use http::request::Parts;
use serde_json::{Map, Value};

use domain::Error;

use super::NeutronError;

/// The query string, as (name, value) pairs in order.
#[derive(Debug, Default)]
pub(crate) struct ListQuery(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for ListQuery {
    type Rejection = NeutronError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let pairs = parts
            .uri
            .query()
            .map(|q| url_pairs(q).into_iter().collect::<Vec<_>>())
            .unwrap_or_default();
        Ok(ListQuery(pairs))
    }
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

const CONTROL: &[&str] = &[
    "fields",
    "sort_key",
    "sort_dir",
    "limit",
    "marker",
    "page_reverse",
    "verbose",
];

impl ListQuery {
    fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The `fields` asked for (empty: all).
    pub fn fields(&self) -> Vec<&str> {
        self.all("fields")
            .into_iter()
            .flat_map(|f| f.split(','))
            .filter(|f| !f.is_empty())
            .collect()
    }

    /// Filters, sorts, pages and selects `items` (views of one kind).
    pub fn apply(&self, mut items: Vec<Value>) -> Result<Vec<Value>, Error> {
        let filters: Vec<(&str, Vec<&str>)> = {
            let mut keys: Vec<&str> = self
                .0
                .iter()
                .map(|(k, _)| k.as_str())
                .filter(|k| !CONTROL.contains(k))
                .collect();
            keys.dedup();
            keys.into_iter().map(|k| (k, self.all(k))).collect()
        };
        items.retain(|item| {
            filters.iter().all(|(key, wanted)| {
                let key = if *key == "tenant_id" {
                    "project_id"
                } else {
                    key
                };
                match item.get(key) {
                    // An attribute this resource does not have filters nothing (Neutron ignores it).
                    None => true,
                    Some(value) => wanted.iter().any(|w| matches(value, w)),
                }
            })
        });
        let keys = self.all("sort_key");
        let dirs = self.all("sort_dir");
        if !keys.is_empty() {
            for key in &keys {
                if items.first().is_some_and(|i| i.get(*key).is_none()) {
                    return Err(Error::invalid(format!(
                        "{key} is invalid attribute for sort_key"
                    )));
                }
            }
            for dir in &dirs {
                if *dir != "asc" && *dir != "desc" {
                    return Err(Error::invalid(format!(
                        "{dir} is invalid value for sort_dir, valid values are 'asc' and 'desc'"
                    )));
                }
            }
            items.sort_by(|a, b| {
                for (i, key) in keys.iter().enumerate() {
                    let ord = compare(a.get(*key), b.get(*key));
                    let ord = if dirs.get(i) == Some(&"desc") {
                        ord.reverse()
                    } else {
                        ord
                    };
                    if ord != std::cmp::Ordering::Equal {
                        return ord;
                    }
                }
                std::cmp::Ordering::Equal
            });
        }
        if self.all("page_reverse").first() == Some(&"True")
            || self.all("page_reverse").first() == Some(&"true")
        {
            items.reverse();
        }
        if let Some(marker) = self.all("marker").first() {
            let pos = items
                .iter()
                .position(|i| i.get("id").and_then(Value::as_str) == Some(marker))
                .ok_or_else(|| Error::not_found("Marker", marker))?;
            items.drain(..=pos);
        }
        if let Some(limit) = self.all("limit").first() {
            let n: usize = limit.parse().map_err(|_| {
                Error::invalid(format!(
                    "Bad limit request: limit '{limit}' is not an integer."
                ))
            })?;
            if n > 0 {
                items.truncate(n);
            }
        }
        let fields = self.fields();
        if !fields.is_empty() {
            for item in &mut items {
                select(item, &fields);
            }
        }
        Ok(items)
    }
}

impl ListQuery {
    /// `{key: view}`, the view cut to the `fields` asked for (a `show`).
    pub fn one(&self, key: &str, mut view: Value) -> axum::Json<Value> {
        let fields = self.fields();
        if !fields.is_empty() {
            select(&mut view, &fields);
        }
        axum::Json(serde_json::json!({ key: view }))
    }
}

/// Keeps only `fields` of one view.
pub(crate) fn select(item: &mut Value, fields: &[&str]) {
    if let Value::Object(map) = item {
        let kept: Map<String, Value> = map
            .iter()
            .filter(|(k, _)| fields.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        *map = kept;
    }
}

fn matches(value: &Value, wanted: &str) -> bool {
    match value {
        Value::String(s) => s == wanted,
        Value::Bool(b) => wanted.eq_ignore_ascii_case(if *b { "true" } else { "false" }),
        Value::Number(n) => n.to_string() == wanted,
        Value::Null => wanted.is_empty() || wanted == "None",
        Value::Array(list) => list.iter().any(|v| matches(v, wanted)),
        Value::Object(_) => false,
    }
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(std::cmp::Ordering::Equal),
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn apply_when_filter_and_fields_then_selected() {
        let q = ListQuery(vec![
            ("name".into(), "a".into()),
            ("fields".into(), "id".into()),
        ]);
        let items = vec![
            json!({"id": "1", "name": "a"}),
            json!({"id": "2", "name": "b"}),
        ];

        let out = q.apply(items).unwrap();

        assert_eq!(out, vec![json!({"id": "1"})]);
    }

    #[test]
    fn decode_when_percent_then_byte() {
        assert_eq!(decode("a%20b+c"), "a b c");
    }
}
