//! `POST /v2/images` bodies, read as Glance's image schema reads them: the
//! base attributes with their types, read-only attributes refused (403), and
//! every other key a free-form string property (anything but a string → 400).

use std::collections::{BTreeMap, BTreeSet};

use domain::image::{validate_property, Visibility, BASE_FIELDS};
use domain::{Error, ImageId, Result};
use serde_json::{Map, Value};

/// A new image as requested.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewImage {
    pub id: Option<ImageId>,
    pub name: Option<String>,
    pub visibility: Option<Visibility>,
    pub protected: bool,
    pub os_hidden: bool,
    pub disk_format: Option<String>,
    pub container_format: Option<String>,
    pub min_disk: u64,
    pub min_ram: u64,
    pub tags: BTreeSet<String>,
    pub properties: BTreeMap<String, String>,
    /// Another project to own the image (admins only, as Glance).
    pub owner: Option<domain::ProjectId>,
}

pub(crate) fn string_or_null(key: &str, v: &Value) -> Result<Option<String>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(Error::invalid(format!("'{key}' must be a string."))),
    }
}

pub(crate) fn boolean(key: &str, v: &Value) -> Result<bool> {
    v.as_bool()
        .ok_or_else(|| Error::invalid(format!("'{key}' must be true or false.")))
}

pub(crate) fn non_negative(key: &str, v: &Value) -> Result<u64> {
    v.as_u64()
        .ok_or_else(|| Error::invalid(format!("'{key}' must be an integer of 0 or more.")))
}

pub(crate) fn tag_list(v: &Value) -> Result<BTreeSet<String>> {
    let items = v
        .as_array()
        .ok_or_else(|| Error::invalid("'tags' must be a list of strings."))?;
    let mut tags = BTreeSet::new();
    for item in items {
        let tag = item
            .as_str()
            .ok_or_else(|| Error::invalid("'tags' must be a list of strings."))?;
        tags.insert(tag.to_string());
    }
    Ok(tags)
}

impl NewImage {
    /// Reads a request body.
    pub fn from_json(body: Map<String, Value>) -> Result<NewImage> {
        let mut new = NewImage::default();
        for (key, value) in body {
            match key.as_str() {
                "id" => {
                    let s = value
                        .as_str()
                        .ok_or_else(|| Error::invalid("'id' must be a UUID string."))?;
                    let id = s.parse::<ImageId>().map_err(|_| {
                        Error::invalid(format!("'{s}' is not a valid image id (a UUID)."))
                    })?;
                    new.id = Some(id);
                }
                "name" => new.name = string_or_null(&key, &value)?,
                "visibility" => {
                    let s = string_or_null(&key, &value)?
                        .ok_or_else(|| Error::invalid("'visibility' must be a string."))?;
                    new.visibility = Some(Visibility::parse(&s)?);
                }
                "protected" => new.protected = boolean(&key, &value)?,
                "os_hidden" => new.os_hidden = boolean(&key, &value)?,
                "disk_format" => new.disk_format = string_or_null(&key, &value)?,
                "container_format" => new.container_format = string_or_null(&key, &value)?,
                "min_disk" => new.min_disk = non_negative(&key, &value)?,
                "min_ram" => new.min_ram = non_negative(&key, &value)?,
                "tags" => new.tags = tag_list(&value)?,
                "owner" => {
                    let s = value
                        .as_str()
                        .ok_or_else(|| Error::invalid("'owner' must be a project id."))?;
                    new.owner = Some(
                        s.parse()
                            .map_err(|_| Error::invalid(format!("'{s}' is not a project id.")))?,
                    );
                }
                other if BASE_FIELDS.contains(&other) => unreachable_base(other)?,
                other => {
                    let Value::String(s) = value else {
                        return Err(Error::invalid(format!(
                            "Property '{other}' must be a string; additional properties are strings."
                        )));
                    };
                    validate_property(other, &s)?;
                    new.properties.insert(other.to_string(), s);
                }
            }
        }
        Ok(new)
    }
}

fn unreachable_base(field: &str) -> Result<()> {
    Err(Error::internal(format!(
        "Base field '{field}' is not handled."
    )))
}

#[cfg(test)]
mod tests {
    use domain::ErrorKind;
    use serde_json::json;

    use super::*;

    fn parse(v: Value) -> Result<NewImage> {
        NewImage::from_json(v.as_object().unwrap().clone())
    }

    #[test]
    fn body_when_extra_string_then_property() {
        let new = parse(json!({"name": "n", "hw_disk_bus": "virtio"})).unwrap();

        assert_eq!(
            new.properties.get("hw_disk_bus").map(String::as_str),
            Some("virtio")
        );
    }

    #[test]
    fn body_when_extra_non_string_then_invalid() {
        let err = parse(json!({"name": "n", "bogus": 5})).unwrap_err();

        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn body_when_read_only_status_then_forbidden() {
        let err = parse(json!({"status": "active"})).unwrap_err();

        assert_eq!(err.kind(), ErrorKind::Forbidden);
    }

    #[test]
    fn body_when_min_disk_negative_then_invalid() {
        let err = parse(json!({"min_disk": -1})).unwrap_err();

        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }
}
