//! Glance metadata definition namespaces. A namespace's content (objects,
//! properties, tags, resource type associations) is one JSON document the
//! caller reads, changes and writes back with
//! [`Store::update_metadef_namespace`], a compare-and-swap on the revision
//! it read (`Conflict` if another request wrote first).

use chrono::{DateTime, Utc};
use domain::{Error, ProjectId, Result};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::{db_error, parse_id, parse_ts, ts, Store};

/// One namespace row; `doc` is the JSON document of its content.
#[derive(Debug, Clone, PartialEq)]
pub struct MetadefNamespaceRecord {
    pub namespace: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub visibility: String,
    pub protected: bool,
    pub owner: ProjectId,
    pub doc: serde_json::Value,
    pub revision: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn from_row(row: &SqliteRow) -> Result<MetadefNamespaceRecord> {
    Ok(MetadefNamespaceRecord {
        namespace: row.get("namespace"),
        display_name: row.get("display_name"),
        description: row.get("description"),
        visibility: row.get("visibility"),
        protected: row.get::<i64, _>("protected") != 0,
        owner: parse_id(row.get::<&str, _>("owner"))?,
        doc: serde_json::from_str(row.get("doc"))
            .map_err(|_| Error::internal("Corrupt doc in the metadef_namespaces table."))?,
        revision: row.get("revision"),
        created_at: parse_ts(row.get("created_at"))?,
        updated_at: parse_ts(row.get("updated_at"))?,
    })
}

impl Store {
    /// Records a namespace; `Conflict` if the name is taken.
    pub async fn insert_metadef_namespace(&self, n: &MetadefNamespaceRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO metadef_namespaces (namespace, display_name, description, visibility, \
             protected, owner, doc, revision, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
        )
        .bind(&n.namespace)
        .bind(&n.display_name)
        .bind(&n.description)
        .bind(&n.visibility)
        .bind(n.protected as i64)
        .bind(n.owner.to_string())
        .bind(n.doc.to_string())
        .bind(ts(n.created_at))
        .bind(ts(n.updated_at))
        .execute(&self.pool)
        .await
        .map_err(db_error(&format!(
            "Cannot create namespace {}",
            n.namespace
        )))?;
        Ok(())
    }

    pub async fn metadef_namespace(&self, namespace: &str) -> Result<MetadefNamespaceRecord> {
        let row = sqlx::query("SELECT * FROM metadef_namespaces WHERE namespace = ?")
            .bind(namespace)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("Cannot read a namespace"))?
            .ok_or_else(|| Error::not_found("Metadata definition namespace", namespace))?;
        from_row(&row)
    }

    pub async fn metadef_namespaces(&self) -> Result<Vec<MetadefNamespaceRecord>> {
        let rows = sqlx::query("SELECT * FROM metadef_namespaces ORDER BY namespace")
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("Cannot list namespaces"))?;
        rows.iter().map(from_row).collect()
    }

    /// Writes `next` (its name may change) over the namespace `prev` names,
    /// if it is still at `prev.revision`.
    pub async fn update_metadef_namespace(
        &self,
        prev: &MetadefNamespaceRecord,
        next: &MetadefNamespaceRecord,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE metadef_namespaces SET namespace = ?, display_name = ?, description = ?, \
             visibility = ?, protected = ?, doc = ?, revision = revision + 1, updated_at = ? \
             WHERE namespace = ? AND revision = ?",
        )
        .bind(&next.namespace)
        .bind(&next.display_name)
        .bind(&next.description)
        .bind(&next.visibility)
        .bind(next.protected as i64)
        .bind(next.doc.to_string())
        .bind(ts(next.updated_at))
        .bind(&prev.namespace)
        .bind(prev.revision)
        .execute(&self.pool)
        .await
        .map_err(db_error(&format!(
            "Cannot update namespace {}",
            prev.namespace
        )))?;
        if done.rows_affected() == 0 {
            return Err(Error::conflict(format!(
                "Namespace {} changed meanwhile; retry.",
                prev.namespace
            )));
        }
        Ok(())
    }

    pub async fn delete_metadef_namespace(&self, namespace: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM metadef_namespaces WHERE namespace = ?")
            .bind(namespace)
            .execute(&self.pool)
            .await
            .map_err(db_error("Cannot delete a namespace"))?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("Metadata definition namespace", namespace));
        }
        Ok(())
    }
}
