//! Which projects may use a private flavor, and flavors' extra specs.

use std::collections::BTreeMap;

use domain::{Error, ProjectId, Result};

use crate::{db_error, parse_id, Store};

impl Store {
    /// Projects given access to a flavor, in the order they were added.
    pub async fn flavor_access(&self, flavor: &str) -> Result<Vec<ProjectId>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT project_id FROM flavor_access WHERE flavor_id = ? ORDER BY rowid",
        )
        .bind(flavor)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("Cannot read flavor access"))?;
        rows.iter().map(|p| parse_id(p)).collect()
    }

    /// Gives `project` access; `false` if it already had it.
    pub async fn add_flavor_access(&self, flavor: &str, project: ProjectId) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO flavor_access (flavor_id, project_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(flavor)
        .bind(project.to_string())
        .execute(&self.pool)
        .await
        .map_err(db_error("Cannot add flavor access"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Takes `project`'s access away; `false` if it had none.
    pub async fn remove_flavor_access(&self, flavor: &str, project: ProjectId) -> Result<bool> {
        let done = sqlx::query("DELETE FROM flavor_access WHERE flavor_id = ? AND project_id = ?")
            .bind(flavor)
            .bind(project.to_string())
            .execute(&self.pool)
            .await
            .map_err(db_error("Cannot remove flavor access"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Replaces a flavor's extra specs.
    pub async fn set_flavor_extra_specs(
        &self,
        flavor: &str,
        specs: &BTreeMap<String, String>,
    ) -> Result<()> {
        let done = sqlx::query("UPDATE flavors SET extra_specs = ? WHERE id = ? AND deleted = 0")
            .bind(serde_json::to_string(specs).unwrap_or_default())
            .bind(flavor)
            .execute(&self.pool)
            .await
            .map_err(db_error("Cannot set flavor extra specs"))?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("flavor", flavor));
        }
        Ok(())
    }
}
