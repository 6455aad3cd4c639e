//! Volume types, their extra specs and encryption specs (JSON columns), and
//! the access lists of private types.

use std::collections::BTreeMap;

use domain::volume_type::{Encryption, VolumeType};
use domain::{Error, ProjectId, Result, VolumeTypeId};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::{db_error, parse_id, parse_ts, ts, Store};

fn type_from_row(row: &SqliteRow) -> Result<VolumeType> {
    let corrupt =
        |what: &str| Error::internal(format!("Corrupt {what} in the volume_types table."));
    let extra_specs: BTreeMap<String, String> =
        serde_json::from_str(row.get("extra_specs")).map_err(|_| corrupt("extra_specs"))?;
    let encryption: Option<Encryption> = match row.get::<Option<&str>, _>("encryption") {
        None => None,
        Some(text) => Some(serde_json::from_str(text).map_err(|_| corrupt("encryption"))?),
    };
    Ok(VolumeType {
        id: parse_id(row.get::<&str, _>("id"))?,
        name: row.get("name"),
        description: row.get("description"),
        is_public: row.get::<i64, _>("is_public") != 0,
        extra_specs,
        encryption,
        qos_specs_id: row
            .get::<Option<&str>, _>("qos_specs_id")
            .map(|q| uuid::Uuid::parse_str(q).map_err(|_| corrupt("qos_specs_id")))
            .transpose()?,
        created_at: parse_ts(row.get("created_at"))?,
        updated_at: parse_ts(row.get("updated_at"))?,
    })
}

fn specs_json(specs: &BTreeMap<String, String>) -> String {
    serde_json::to_string(specs).unwrap_or_else(|_| "{}".into())
}

fn encryption_json(e: &Option<Encryption>) -> Option<String> {
    e.as_ref().and_then(|e| serde_json::to_string(e).ok())
}

impl Store {
    /// Records a new type; `Conflict` if its name is taken.
    pub async fn insert_volume_type(&self, t: &VolumeType) -> Result<()> {
        sqlx::query(
            "INSERT INTO volume_types (id, name, description, is_public, extra_specs, encryption, \
             created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(t.id.to_string())
        .bind(&t.name)
        .bind(&t.description)
        .bind(t.is_public as i64)
        .bind(specs_json(&t.extra_specs))
        .bind(encryption_json(&t.encryption))
        .bind(ts(t.created_at))
        .bind(ts(t.updated_at))
        .execute(&self.pool)
        .await
        .map_err(db_error(&format!("Cannot create volume type {}", t.name)))?;
        Ok(())
    }

    /// A type by id, or `NotFound`.
    pub async fn volume_type(&self, id: VolumeTypeId) -> Result<VolumeType> {
        let row = sqlx::query("SELECT * FROM volume_types WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("Cannot read a volume type"))?
            .ok_or_else(|| Error::not_found("volume type", id))?;
        type_from_row(&row)
    }

    /// A type by name, if there is one.
    pub async fn volume_type_by_name(&self, name: &str) -> Result<Option<VolumeType>> {
        sqlx::query("SELECT * FROM volume_types WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("Cannot read a volume type"))?
            .as_ref()
            .map(type_from_row)
            .transpose()
    }

    /// Every type, oldest first.
    pub async fn volume_types(&self) -> Result<Vec<VolumeType>> {
        let rows = sqlx::query("SELECT * FROM volume_types ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("Cannot list volume types"))?;
        rows.iter().map(type_from_row).collect()
    }

    /// Writes every field of a type (a last-writer-wins admin edit);
    /// `Conflict` if the new name is taken, `NotFound` if it is gone.
    pub async fn update_volume_type(&self, t: &VolumeType) -> Result<()> {
        let done = sqlx::query(
            "UPDATE volume_types SET name = ?, description = ?, is_public = ?, extra_specs = ?, \
             encryption = ?, qos_specs_id = ?, updated_at = ? WHERE id = ?",
        )
        .bind(&t.name)
        .bind(&t.description)
        .bind(t.is_public as i64)
        .bind(specs_json(&t.extra_specs))
        .bind(encryption_json(&t.encryption))
        .bind(t.qos_specs_id.map(|q| q.to_string()))
        .bind(ts(t.updated_at))
        .bind(t.id.to_string())
        .execute(&self.pool)
        .await
        .map_err(db_error(&format!("Cannot update volume type {}", t.name)))?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("volume type", t.id));
        }
        Ok(())
    }

    /// Deletes a type that no volume (deleted ones apart) uses: `Invalid`
    /// (400, as Cinder) if one does.
    pub async fn delete_volume_type(&self, id: VolumeTypeId) -> Result<()> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db_error("Cannot delete a volume type"))?;
        let in_use: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM volumes WHERE volume_type_id = ? AND status <> 'deleted'",
        )
        .bind(id.to_string())
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error("Cannot delete a volume type"))?;
        if in_use > 0 {
            return Err(Error::invalid(format!(
                "Invalid volume type: Target volume type {id} is still in use by {in_use} volume(s)."
            )));
        }
        let done = sqlx::query("DELETE FROM volume_types WHERE id = ?")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_error("Cannot delete a volume type"))?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("volume type", id));
        }
        tx.commit()
            .await
            .map_err(db_error("Cannot delete a volume type"))?;
        Ok(())
    }

    /// The projects given access to a (private) type.
    pub async fn volume_type_access(&self, id: VolumeTypeId) -> Result<Vec<ProjectId>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT project_id FROM volume_type_access WHERE type_id = ? ORDER BY project_id",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("Cannot read a volume type's access"))?;
        rows.iter().map(|p| parse_id(p)).collect()
    }

    /// Gives a project access; `Conflict` if it has it already.
    pub async fn add_volume_type_access(&self, id: VolumeTypeId, project: ProjectId) -> Result<()> {
        sqlx::query("INSERT INTO volume_type_access (type_id, project_id) VALUES (?, ?)")
            .bind(id.to_string())
            .bind(project.to_string())
            .execute(&self.pool)
            .await
            .map_err(db_error(&format!(
                "Cannot give project {project} access to volume type {id}"
            )))?;
        Ok(())
    }

    /// Takes a project's access away; `NotFound` if it had none.
    pub async fn remove_volume_type_access(
        &self,
        id: VolumeTypeId,
        project: ProjectId,
    ) -> Result<()> {
        let done =
            sqlx::query("DELETE FROM volume_type_access WHERE type_id = ? AND project_id = ?")
                .bind(id.to_string())
                .bind(project.to_string())
                .execute(&self.pool)
                .await
                .map_err(db_error("Cannot remove a volume type access"))?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found(
                "volume type access for project",
                format!("{project} on type {id}"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn a_type(name: &str) -> VolumeType {
        VolumeType {
            id: VolumeTypeId::new(),
            name: name.into(),
            description: None,
            is_public: false,
            extra_specs: BTreeMap::from([("k".to_string(), "v".to_string())]),
            encryption: None,
            qos_specs_id: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn insert_when_name_taken_then_conflict() {
        let store = Store::in_memory().await.unwrap();
        store.insert_volume_type(&a_type("gold")).await.unwrap();

        let e = store.insert_volume_type(&a_type("gold")).await.unwrap_err();

        assert_eq!(e.kind(), domain::ErrorKind::Conflict);
    }

    #[tokio::test]
    async fn default_type_when_store_opened_then_listed() {
        let store = Store::in_memory().await.unwrap();

        let types = store.volume_types().await.unwrap();

        assert!(types
            .iter()
            .any(|t| t.is_default() && t.name == "__DEFAULT__"));
    }

    #[tokio::test]
    async fn access_when_added_then_listed_and_removed() {
        let store = Store::in_memory().await.unwrap();
        let t = a_type("silver");
        store.insert_volume_type(&t).await.unwrap();
        let project = ProjectId::new();

        store.add_volume_type_access(t.id, project).await.unwrap();
        let listed = store.volume_type_access(t.id).await.unwrap();
        store
            .remove_volume_type_access(t.id, project)
            .await
            .unwrap();

        assert_eq!(listed, vec![project]);
        assert!(store.volume_type_access(t.id).await.unwrap().is_empty());
    }
}
