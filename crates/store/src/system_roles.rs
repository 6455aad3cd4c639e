//! Role assignments on the system scope (Keystone's `system: all`).

use domain::{Result, RoleId, UserId};

use crate::{db_error, parse_id, Store};

impl Store {
    /// The roles `user` holds on the system, in the order they were given.
    pub async fn system_roles(&self, user: UserId) -> Result<Vec<RoleId>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT role_id FROM system_role_assignments WHERE user_id = ? ORDER BY rowid",
        )
        .bind(user.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("Cannot read system role assignments"))?;
        rows.iter().map(|r| parse_id(r)).collect()
    }

    pub async fn assign_system_role(&self, user: UserId, role: RoleId) -> Result<()> {
        sqlx::query(
            "INSERT INTO system_role_assignments (user_id, role_id) VALUES (?, ?) \
             ON CONFLICT DO NOTHING",
        )
        .bind(user.to_string())
        .bind(role.to_string())
        .execute(&self.pool)
        .await
        .map_err(db_error("Cannot assign a system role"))?;
        Ok(())
    }

    /// `false` if the user did not hold the role.
    pub async fn unassign_system_role(&self, user: UserId, role: RoleId) -> Result<bool> {
        let done =
            sqlx::query("DELETE FROM system_role_assignments WHERE user_id = ? AND role_id = ?")
                .bind(user.to_string())
                .bind(role.to_string())
                .execute(&self.pool)
                .await
                .map_err(db_error("Cannot remove a system role assignment"))?;
        Ok(done.rows_affected() > 0)
    }
}
