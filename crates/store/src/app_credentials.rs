//! Application credentials (Keystone's): only a hash of each secret is kept.

use chrono::{DateTime, Utc};
use domain::identity::Role;
use domain::{Error, ProjectId, Result, UserId};
use sqlx::Row;

use crate::{db_error, parse_id, parse_ts, ts, Store};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppCredentialRecord {
    pub id: String,
    pub user_id: UserId,
    pub project_id: ProjectId,
    pub name: String,
    pub description: Option<String>,
    pub secret_hash: String,
    pub roles: Vec<Role>,
    pub unrestricted: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

fn from_row(row: &sqlx::sqlite::SqliteRow) -> Result<AppCredentialRecord> {
    let roles: Vec<String> = serde_json::from_str(row.get::<&str, _>("roles"))
        .map_err(|e| Error::internal(format!("Corrupt application credential roles: {e}")))?;
    let expires: Option<String> = row.get("expires_at");
    Ok(AppCredentialRecord {
        id: row.get("id"),
        user_id: parse_id(row.get::<&str, _>("user_id"))?,
        project_id: parse_id(row.get::<&str, _>("project_id"))?,
        name: row.get("name"),
        description: row.get("description"),
        secret_hash: row.get("secret_hash"),
        roles: roles.iter().filter_map(|r| Role::from_name(r)).collect(),
        unrestricted: row.get::<i64, _>("unrestricted") != 0,
        expires_at: expires.as_deref().map(parse_ts).transpose()?,
        created_at: parse_ts(row.get("created_at"))?,
    })
}

impl Store {
    pub async fn insert_app_credential(&self, c: &AppCredentialRecord) -> Result<()> {
        let roles: Vec<&str> = c.roles.iter().map(|r| r.name()).collect();
        sqlx::query(
            "INSERT INTO application_credentials (id, user_id, project_id, name, description, secret_hash, \
             roles, unrestricted, expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&c.id)
        .bind(c.user_id.to_string())
        .bind(c.project_id.to_string())
        .bind(&c.name)
        .bind(&c.description)
        .bind(&c.secret_hash)
        .bind(serde_json::to_string(&roles).unwrap_or_default())
        .bind(c.unrestricted as i64)
        .bind(c.expires_at.map(ts))
        .bind(ts(c.created_at))
        .execute(&self.pool)
        .await
        .map_err(db_error(&format!(
            "Cannot create application credential '{}'",
            c.name
        )))?;
        Ok(())
    }

    pub async fn app_credential(&self, id: &str) -> Result<AppCredentialRecord> {
        let row = sqlx::query("SELECT * FROM application_credentials WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("Cannot read an application credential"))?
            .ok_or_else(|| Error::not_found("application credential", id))?;
        from_row(&row)
    }

    pub async fn app_credential_by_name(
        &self,
        user: UserId,
        name: &str,
    ) -> Result<Option<AppCredentialRecord>> {
        let row =
            sqlx::query("SELECT * FROM application_credentials WHERE user_id = ? AND name = ?")
                .bind(user.to_string())
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error("Cannot read an application credential"))?;
        row.as_ref().map(from_row).transpose()
    }

    pub async fn app_credentials(&self, user: UserId) -> Result<Vec<AppCredentialRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM application_credentials WHERE user_id = ? ORDER BY created_at, name",
        )
        .bind(user.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("Cannot list application credentials"))?;
        rows.iter().map(from_row).collect()
    }

    /// Deletes a credential and revokes the tokens it issued.
    pub async fn delete_app_credential(&self, id: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM application_credentials WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db_error("Cannot delete an application credential"))?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("application credential", id));
        }
        sqlx::query("UPDATE tokens SET revoked = 1 WHERE app_cred_id = ?")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db_error("Cannot revoke an application credential's tokens"))?;
        Ok(())
    }
}
