//! Glance metadata definitions (`/v2/metadefs`): namespaces that describe
//! the properties images, volumes, flavors… may carry, with their
//! properties, objects, tags and resource type associations.
//!
//! Policy (Glance's defaults): anyone may read public namespaces and their
//! project's private ones; only admins create, change or delete them. A
//! `protected` namespace cannot be deleted (403) until it is unprotected.
//!
//! A namespace's content is one JSON document (see
//! [`store::MetadefNamespaceRecord`]); every change reads it, edits it and
//! writes it back under a compare-and-swap, retried a few times when
//! another change came first.

use std::collections::BTreeMap;

use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::{Error, ErrorKind, Result};
use serde_json::{json, Map, Value};
use store::MetadefNamespaceRecord;

use crate::Cloud;

/// The resource types Glance knows (its seeded list).
pub const RESOURCE_TYPES: &[&str] = &[
    "OS::Glance::Image",
    "OS::Cinder::Volume",
    "OS::Nova::Flavor",
    "OS::Nova::Aggregate",
    "OS::Nova::Server",
    "OS::Trove::Instance",
    "OS::Glance::Snapshot",
];

/// The kinds of named elements a namespace holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadefKind {
    Property,
    Object,
    Tag,
}

impl MetadefKind {
    fn key(self) -> &'static str {
        match self {
            MetadefKind::Property => "properties",
            MetadefKind::Object => "objects",
            MetadefKind::Tag => "tags",
        }
    }

    fn what(self) -> &'static str {
        match self {
            MetadefKind::Property => "Metadata definition property",
            MetadefKind::Object => "Metadata definition object",
            MetadefKind::Tag => "Metadata definition tag",
        }
    }
}

/// What a namespace create or update gives.
#[derive(Debug, Clone, Default)]
pub struct NamespaceFields {
    pub namespace: Option<String>,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub visibility: Option<String>,
    pub protected: Option<bool>,
}

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.trim().is_empty() || name.chars().count() > 80 {
        return Err(Error::invalid(format!(
            "The {what} name must be 1 to 80 characters."
        )));
    }
    Ok(())
}

fn check_visibility(v: &str) -> Result<()> {
    if matches!(v, "public" | "private") {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "Invalid visibility '{v}': it must be public or private."
        )))
    }
}

fn section(doc: &mut Value, key: &str) -> Map<String, Value> {
    doc.get(key)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

impl Cloud {
    fn may_see_namespace(caller: &Caller, n: &MetadefNamespaceRecord) -> bool {
        n.visibility == "public" || caller.can_see_project(n.owner)
    }

    pub async fn metadef_namespaces(&self, caller: &Caller) -> Result<Vec<MetadefNamespaceRecord>> {
        caller.require(Role::Reader, "list metadata definitions")?;
        Ok(self
            .store
            .metadef_namespaces()
            .await?
            .into_iter()
            .filter(|n| Self::may_see_namespace(caller, n))
            .collect())
    }

    pub async fn metadef_namespace(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<MetadefNamespaceRecord> {
        caller.require(Role::Reader, "read metadata definitions")?;
        let n = self.store.metadef_namespace(name).await?;
        if !Self::may_see_namespace(caller, &n) {
            return Err(Error::not_found("Metadata definition namespace", name));
        }
        Ok(n)
    }

    /// Creates a namespace (admins), with any content given in `doc`.
    pub async fn create_metadef_namespace(
        &self,
        caller: &Caller,
        fields: NamespaceFields,
        doc: Value,
    ) -> Result<MetadefNamespaceRecord> {
        caller.require(Role::Admin, "create metadata definitions")?;
        let namespace = fields
            .namespace
            .ok_or_else(|| Error::invalid("A namespace name is required."))?;
        check_name("namespace", &namespace)?;
        let visibility = fields.visibility.unwrap_or_else(|| "private".into());
        check_visibility(&visibility)?;
        let now = Utc::now();
        let n = MetadefNamespaceRecord {
            namespace,
            display_name: fields.display_name,
            description: fields.description,
            visibility,
            protected: fields.protected.unwrap_or(false),
            owner: caller.project()?,
            doc,
            revision: 0,
            created_at: now,
            updated_at: now,
        };
        self.store
            .insert_metadef_namespace(&n)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::Conflict => Error::conflict(format!(
                    "Metadata definition namespace={} already exists.",
                    n.namespace
                )),
                _ => e,
            })?;
        Ok(n)
    }

    /// Changes a namespace's own fields (admins).
    pub async fn update_metadef_namespace(
        &self,
        caller: &Caller,
        name: &str,
        fields: NamespaceFields,
    ) -> Result<MetadefNamespaceRecord> {
        caller.require(Role::Admin, "change metadata definitions")?;
        let prev = self.metadef_namespace(caller, name).await?;
        let mut next = prev.clone();
        if let Some(n) = fields.namespace {
            check_name("namespace", &n)?;
            next.namespace = n;
        }
        if let Some(d) = fields.display_name {
            next.display_name = Some(d);
        }
        if let Some(d) = fields.description {
            next.description = Some(d);
        }
        if let Some(v) = fields.visibility {
            check_visibility(&v)?;
            next.visibility = v;
        }
        if let Some(p) = fields.protected {
            next.protected = p;
        }
        next.updated_at = Utc::now();
        self.store.update_metadef_namespace(&prev, &next).await?;
        Ok(next)
    }

    /// Deletes a namespace (admins): 403 while it is protected.
    pub async fn delete_metadef_namespace(&self, caller: &Caller, name: &str) -> Result<()> {
        caller.require(Role::Admin, "delete metadata definitions")?;
        let n = self.metadef_namespace(caller, name).await?;
        if n.protected {
            return Err(Error::forbidden(format!(
                "Namespace {name} is protected and cannot be deleted."
            )));
        }
        self.store.delete_metadef_namespace(name).await
    }

    /// Reads, edits (`edit`) and writes back a namespace's document
    /// (admins), retrying when another change came first.
    async fn edit_metadef_doc<R>(
        &self,
        caller: &Caller,
        name: &str,
        mut edit: impl FnMut(&mut Value) -> Result<R>,
    ) -> Result<R> {
        caller.require(Role::Admin, "change metadata definitions")?;
        let mut tries = 0;
        loop {
            let prev = self.metadef_namespace(caller, name).await?;
            let mut next = prev.clone();
            if !next.doc.is_object() {
                next.doc = json!({});
            }
            let out = edit(&mut next.doc)?;
            next.updated_at = Utc::now();
            match self.store.update_metadef_namespace(&prev, &next).await {
                Err(e) if e.kind() == ErrorKind::Conflict && tries < 3 => tries += 1,
                Err(e) => return Err(e),
                Ok(()) => return Ok(out),
            }
        }
    }

    /// The elements of one kind in a namespace, by name.
    pub async fn metadef_elements(
        &self,
        caller: &Caller,
        name: &str,
        kind: MetadefKind,
    ) -> Result<BTreeMap<String, Value>> {
        let mut n = self.metadef_namespace(caller, name).await?;
        Ok(section(&mut n.doc, kind.key()).into_iter().collect())
    }

    pub async fn metadef_element(
        &self,
        caller: &Caller,
        name: &str,
        kind: MetadefKind,
        element: &str,
    ) -> Result<Value> {
        self.metadef_elements(caller, name, kind)
            .await?
            .remove(element)
            .ok_or_else(|| Error::not_found(kind.what(), element))
    }

    /// Creates (`old` None: 409 if the name is taken) or replaces (`old`:
    /// 404 if absent; the element may be renamed) one element; `value` is
    /// stored with its name and timestamps. Answers what was stored.
    pub async fn put_metadef_element(
        &self,
        caller: &Caller,
        name: &str,
        kind: MetadefKind,
        old: Option<&str>,
        value: Value,
    ) -> Result<Value> {
        let new_name = value
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| old.map(str::to_owned))
            .ok_or_else(|| Error::invalid(format!("The {} name is required.", kind.what())))?;
        check_name(kind.what(), &new_name)?;
        self.edit_metadef_doc(caller, name, |doc| {
            let mut elements = section(doc, kind.key());
            let now = domain_time(Utc::now());
            let created_at = match old {
                None => {
                    if elements.contains_key(&new_name) {
                        return Err(Error::conflict(format!(
                            "{} {new_name} already exists in namespace {name}.",
                            kind.what()
                        )));
                    }
                    now.clone()
                }
                Some(old) => {
                    let prev = elements
                        .remove(old)
                        .ok_or_else(|| Error::not_found(kind.what(), old))?;
                    if elements.contains_key(&new_name) {
                        return Err(Error::conflict(format!(
                            "{} {new_name} already exists in namespace {name}.",
                            kind.what()
                        )));
                    }
                    prev.get("created_at")
                        .and_then(Value::as_str)
                        .unwrap_or(&now)
                        .to_string()
                }
            };
            let mut stored = value.as_object().cloned().unwrap_or_default();
            stored.insert("name".into(), json!(new_name));
            if kind != MetadefKind::Property {
                stored.insert("created_at".into(), json!(created_at));
                stored.insert("updated_at".into(), json!(now));
            }
            let stored = Value::Object(stored);
            elements.insert(new_name.clone(), stored.clone());
            doc[kind.key()] = Value::Object(elements);
            Ok(stored)
        })
        .await
    }

    pub async fn delete_metadef_element(
        &self,
        caller: &Caller,
        name: &str,
        kind: MetadefKind,
        element: &str,
    ) -> Result<()> {
        self.edit_metadef_doc(caller, name, |doc| {
            let mut elements = section(doc, kind.key());
            elements
                .remove(element)
                .ok_or_else(|| Error::not_found(kind.what(), element))?;
            doc[kind.key()] = Value::Object(elements);
            Ok(())
        })
        .await
    }

    /// Replaces every element of one kind (`POST …/tags` with a list;
    /// `DELETE …/tags` with none).
    pub async fn replace_metadef_elements(
        &self,
        caller: &Caller,
        name: &str,
        kind: MetadefKind,
        names: Vec<String>,
    ) -> Result<Vec<Value>> {
        for n in &names {
            check_name(kind.what(), n)?;
        }
        self.edit_metadef_doc(caller, name, |doc| {
            let now = domain_time(Utc::now());
            let mut elements = Map::new();
            for n in &names {
                let v = json!({"name": n, "created_at": now, "updated_at": now});
                if elements.insert(n.clone(), v).is_some() {
                    return Err(Error::conflict(format!("Duplicate tag {n}.")));
                }
            }
            doc[kind.key()] = Value::Object(elements.clone());
            Ok(elements.into_iter().map(|(_, v)| v).collect())
        })
        .await
    }

    /// The resource types associated with a namespace.
    pub async fn metadef_resource_types(&self, caller: &Caller, name: &str) -> Result<Vec<Value>> {
        let n = self.metadef_namespace(caller, name).await?;
        Ok(n.doc
            .get("resource_type_associations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    /// Associates a resource type (one of [`RESOURCE_TYPES`]: 404 else).
    pub async fn add_metadef_resource_type(
        &self,
        caller: &Caller,
        name: &str,
        association: Value,
    ) -> Result<Value> {
        let rt = association
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::invalid("A resource type name is required."))?
            .to_string();
        if !RESOURCE_TYPES.contains(&rt.as_str()) {
            return Err(Error::not_found("Metadata definition resource type", &rt));
        }
        self.edit_metadef_doc(caller, name, |doc| {
            let mut list = doc
                .get("resource_type_associations")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if list.iter().any(|a| a["name"] == json!(rt)) {
                return Err(Error::conflict(format!(
                    "Resource type {rt} is already associated with namespace {name}."
                )));
            }
            let now = domain_time(Utc::now());
            let mut stored = association.as_object().cloned().unwrap_or_default();
            stored.insert("created_at".into(), json!(now));
            stored.insert("updated_at".into(), json!(now));
            let stored = Value::Object(stored);
            list.push(stored.clone());
            doc["resource_type_associations"] = Value::Array(list);
            Ok(stored)
        })
        .await
    }

    pub async fn remove_metadef_resource_type(
        &self,
        caller: &Caller,
        name: &str,
        rt: &str,
    ) -> Result<()> {
        self.edit_metadef_doc(caller, name, |doc| {
            let mut list = doc
                .get("resource_type_associations")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let before = list.len();
            list.retain(|a| a["name"] != json!(rt));
            if list.len() == before {
                return Err(Error::not_found(
                    "Metadata definition resource type association",
                    rt,
                ));
            }
            doc["resource_type_associations"] = Value::Array(list);
            Ok(())
        })
        .await
    }
}

/// Glance's metadef timestamps.
pub fn domain_time(t: chrono::DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}
