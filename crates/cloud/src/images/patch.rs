//! JSON patches of image metadata, as Glance reads them
//! (`application/openstack-images-v2.1-json-patch`): `add`, `replace` and
//! `remove` on one attribute each (`/name`, `/tags`, `/hw_disk_bus`, …).
//! Read-only attributes → 403; unknown ops or malformed paths → 400;
//! replacing or removing a property that does not exist → 409.

use domain::identity::Caller;
use domain::image::{validate_property, Image, ImageStatus, Visibility, READ_ONLY_FIELDS};
use domain::{Error, Result};
use serde_json::Value;

use super::request::{boolean, non_negative, string_or_null, tag_list};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Add,
    Replace,
    Remove,
}

/// One operation of a patch document.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOp {
    pub kind: PatchKind,
    /// The attribute, unescaped (`/a~1b` → `a/b`).
    pub attribute: String,
    pub value: Option<Value>,
}

/// Reads a patch document (a JSON list of operations).
pub fn parse_document(doc: Value) -> Result<Vec<PatchOp>> {
    let Value::Array(items) = doc else {
        return Err(Error::invalid("A JSON patch must be a list of operations."));
    };
    items.into_iter().map(parse_op).collect()
}

fn parse_op(item: Value) -> Result<PatchOp> {
    let Value::Object(mut obj) = item else {
        return Err(Error::invalid("Each patch operation must be an object."));
    };
    // v2.1 patches say {"op": "add", "path": "/x"}; v2.0 ones {"add": "/x"}.
    let (op, path) = match obj.remove("op") {
        Some(op) => (op.as_str().map(str::to_owned), obj.remove("path")),
        None => match ["add", "replace", "remove"]
            .into_iter()
            .find(|k| obj.contains_key(*k))
        {
            Some(k) => (Some(k.to_owned()), obj.remove(k)),
            None => (None, None),
        },
    };
    let kind = match op.as_deref() {
        Some("add") => PatchKind::Add,
        Some("replace") => PatchKind::Replace,
        Some("remove") => PatchKind::Remove,
        Some(other) => {
            return Err(Error::invalid(format!(
                "Patch operation '{other}' is not supported: use add, replace or remove."
            )))
        }
        None => return Err(Error::invalid("A patch operation needs an 'op'.")),
    };
    let path = path
        .and_then(|v| v.as_str().map(str::to_owned))
        .ok_or_else(|| Error::invalid("A patch operation needs a 'path' string."))?;
    let attribute = parse_path(&path)?;
    let value = obj.remove("value");
    if kind != PatchKind::Remove && value.is_none() {
        return Err(Error::invalid(format!(
            "Patch operation on '{path}' needs a 'value'."
        )));
    }
    if let Some(extra) = obj.keys().next() {
        return Err(Error::invalid(format!(
            "Unknown member '{extra}' in a patch operation."
        )));
    }
    Ok(PatchOp {
        kind,
        attribute,
        value,
    })
}

fn parse_path(path: &str) -> Result<String> {
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| Error::invalid(format!("Patch path '{path}' must start with '/'.")))?;
    if rest.is_empty() || rest.contains('/') {
        return Err(Error::invalid(format!(
            "Patch path '{path}' must name exactly one attribute."
        )));
    }
    Ok(rest.replace("~1", "/").replace("~0", "~"))
}

/// Applies one operation to `img`.
pub fn apply(img: &mut Image, op: &PatchOp, caller: &Caller) -> Result<()> {
    let attr = op.attribute.as_str();
    if READ_ONLY_FIELDS.contains(&attr) {
        return Err(Error::forbidden(format!(
            "Attribute '{attr}' is read-only."
        )));
    }
    let value = op.value.as_ref().unwrap_or(&Value::Null);
    if op.kind == PatchKind::Remove {
        return remove(img, attr);
    }
    match attr {
        "name" => img.name = string_or_null(attr, value)?,
        "visibility" => {
            let s = value
                .as_str()
                .ok_or_else(|| Error::invalid("'visibility' must be a string."))?;
            img.visibility = Visibility::parse(s)?;
        }
        "protected" => img.protected = boolean(attr, value)?,
        "os_hidden" => img.os_hidden = boolean(attr, value)?,
        "min_disk" => img.min_disk = non_negative(attr, value)?,
        "min_ram" => img.min_ram = non_negative(attr, value)?,
        "tags" => img.tags = tag_list(value)?,
        "disk_format" | "container_format" => {
            if img.status != ImageStatus::Queued {
                return Err(Error::forbidden(format!(
                    "Attribute '{attr}' can only be changed while the image is queued."
                )));
            }
            let v = string_or_null(attr, value)?;
            if attr == "disk_format" {
                img.disk_format = v;
            } else {
                img.container_format = v;
            }
        }
        "owner" => {
            if !caller.is_admin() {
                return Err(Error::forbidden(
                    "Only an admin may change the owner of an image.",
                ));
            }
            let s = value
                .as_str()
                .ok_or_else(|| Error::invalid("'owner' must be a project id."))?;
            img.owner = s
                .parse()
                .map_err(|_| Error::invalid(format!("'{s}' is not a project id.")))?;
        }
        property => {
            let Value::String(s) = value else {
                return Err(Error::invalid(format!(
                    "Property '{property}' must be a string."
                )));
            };
            validate_property(property, s)?;
            if op.kind == PatchKind::Replace && !img.properties.contains_key(property) {
                return Err(Error::conflict(format!(
                    "Property '{property}' does not exist; use 'add' to create it."
                )));
            }
            img.properties.insert(property.to_string(), s.clone());
        }
    }
    Ok(())
}

fn remove(img: &mut Image, attr: &str) -> Result<()> {
    match attr {
        "name" | "visibility" | "protected" | "os_hidden" | "min_disk" | "min_ram"
        | "disk_format" | "container_format" | "owner" => Err(Error::forbidden(format!(
            "Attribute '{attr}' cannot be removed; replace it instead."
        ))),
        "tags" => {
            img.tags.clear();
            Ok(())
        }
        property => match img.properties.remove(property) {
            Some(_) => Ok(()),
            None => Err(Error::conflict(format!(
                "Property '{property}' does not exist."
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use domain::identity::Role;
    use domain::{ErrorKind, ImageId, ProjectId, UserId};
    use serde_json::json;

    use super::*;

    fn member() -> Caller {
        Caller {
            user_id: UserId::new(),
            user_name: "u".into(),
            project_id: Some(ProjectId::new()),
            project_name: Some("p".into()),
            roles: vec![Role::Member, Role::Reader],
            expires_at: Utc::now(),
            restricted_app_credential: false,
        }
    }

    fn image() -> Image {
        Image::new_queued(ImageId::new(), ProjectId::new(), Utc::now())
    }

    fn apply_doc(img: &mut Image, doc: Value) -> Result<()> {
        for op in parse_document(doc)? {
            apply(img, &op, &member())?;
        }
        Ok(())
    }

    #[test]
    fn patch_when_add_property_then_set() {
        let mut img = image();

        apply_doc(
            &mut img,
            json!([{"op": "add", "path": "/os_distro", "value": "debian"}]),
        )
        .unwrap();

        assert_eq!(
            img.properties.get("os_distro").map(String::as_str),
            Some("debian")
        );
    }

    #[test]
    fn patch_when_remove_missing_property_then_conflict() {
        let mut img = image();

        let err = apply_doc(&mut img, json!([{"op": "remove", "path": "/nope"}])).unwrap_err();

        assert_eq!(err.kind(), ErrorKind::Conflict);
    }

    #[test]
    fn patch_when_status_replaced_then_forbidden() {
        let mut img = image();

        let err = apply_doc(
            &mut img,
            json!([{"op": "replace", "path": "/status", "value": "active"}]),
        )
        .unwrap_err();

        assert_eq!(err.kind(), ErrorKind::Forbidden);
    }

    #[test]
    fn patch_when_v2_0_dialect_then_same_operation() {
        let ops = parse_document(json!([{"replace": "/name", "value": "n"}])).unwrap();

        assert_eq!(ops[0].kind, PatchKind::Replace);
        assert_eq!(ops[0].attribute, "name");
    }

    #[test]
    fn patch_when_move_op_then_invalid() {
        let err = parse_document(json!([{"op": "move", "from": "/a", "path": "/b"}])).unwrap_err();

        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn patch_when_path_has_escapes_then_unescaped_attribute() {
        let ops = parse_document(json!([{"op": "add", "path": "/a~1b~0c", "value": "v"}])).unwrap();

        assert_eq!(ops[0].attribute, "a/b~c");
    }

    #[test]
    fn patch_when_owner_changed_by_member_then_forbidden() {
        let mut img = image();
        let other = ProjectId::new().to_string();

        let err = apply_doc(
            &mut img,
            json!([{"op": "replace", "path": "/owner", "value": other}]),
        )
        .unwrap_err();

        assert_eq!(err.kind(), ErrorKind::Forbidden);
    }
}
