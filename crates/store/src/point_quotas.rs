//! What the restore-point limits count: points per server, bytes of memory
//! states per project.

use domain::{ProjectId, RestorePointId, Result, ServerId};

use crate::{db_error, Store};

impl Store {
    /// How many restore points a server has (any status).
    pub async fn restore_point_count(&self, server: ServerId) -> Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM restore_points WHERE server_id = ?")
            .bind(server.to_string())
            .fetch_one(&self.pool)
            .await
            .map_err(db_error("Cannot count restore points"))
    }

    /// Bytes of the memory states of a project's restore points.
    pub async fn restore_point_memory_bytes(&self, project: ProjectId) -> Result<i64> {
        sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(memory_bytes), 0) AS INTEGER) FROM restore_points \
             WHERE project_id = ?",
        )
        .bind(project.to_string())
        .fetch_one(&self.pool)
        .await
        .map_err(db_error("Cannot count restore points' memory"))
    }

    pub async fn set_restore_point_memory_bytes(
        &self,
        point: RestorePointId,
        bytes: u64,
    ) -> Result<()> {
        sqlx::query("UPDATE restore_points SET memory_bytes = ? WHERE id = ?")
            .bind(i64::try_from(bytes).unwrap_or(i64::MAX))
            .bind(point.to_string())
            .execute(&self.pool)
            .await
            .map_err(db_error("Cannot record a memory state's size"))?;
        Ok(())
    }
}
