//! Issued tokens. Only a SHA-256 of each token is kept, so a copy of the
//! database does not hand out working tokens; expiry and revocation are
//! columns, so both survive a restart.

use chrono::{DateTime, Utc};
use domain::{ProjectId, Result, UserId};
use sqlx::Row;

use crate::{db_error, parse_id, parse_ts, ts, Store};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub token_hash: String,
    pub user_id: UserId,
    pub project_id: Option<ProjectId>,
    pub audit_id: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked: bool,
    /// The application credential the token was issued for, if any.
    pub app_cred_id: Option<String>,
    /// Scoped to the system (`"scope": {"system": {"all": true}}`), not a project.
    pub system_scope: bool,
}

impl Store {
    pub async fn insert_token(&self, t: &TokenRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO tokens (token_hash, user_id, project_id, audit_id, issued_at, expires_at, revoked, app_cred_id, system_scope) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&t.token_hash)
        .bind(t.user_id.to_string())
        .bind(t.project_id.map(|p| p.to_string()))
        .bind(&t.audit_id)
        .bind(ts(t.issued_at))
        .bind(ts(t.expires_at))
        .bind(t.revoked as i64)
        .bind(&t.app_cred_id)
        .bind(t.system_scope as i64)
        .execute(&self.pool)
        .await
        .map_err(db_error("Cannot store a token"))?;
        Ok(())
    }

    pub async fn token(&self, token_hash: &str) -> Result<Option<TokenRecord>> {
        let row = sqlx::query("SELECT * FROM tokens WHERE token_hash = ?")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("Cannot read a token"))?;
        let Some(row) = row else { return Ok(None) };
        let project: Option<String> = row.get("project_id");
        Ok(Some(TokenRecord {
            token_hash: row.get("token_hash"),
            user_id: parse_id(row.get::<&str, _>("user_id"))?,
            project_id: project.as_deref().map(parse_id).transpose()?,
            audit_id: row.get("audit_id"),
            issued_at: parse_ts(row.get("issued_at"))?,
            expires_at: parse_ts(row.get("expires_at"))?,
            revoked: row.get::<i64, _>("revoked") != 0,
            app_cred_id: row.get("app_cred_id"),
            system_scope: row.get::<i64, _>("system_scope") != 0,
        }))
    }

    pub async fn revoke_token(&self, token_hash: &str) -> Result<bool> {
        let done =
            sqlx::query("UPDATE tokens SET revoked = 1 WHERE token_hash = ? AND revoked = 0")
                .bind(token_hash)
                .execute(&self.pool)
                .await
                .map_err(db_error("Cannot revoke a token"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Revokes every token of `user` (disabled, or its password changed).
    pub async fn revoke_user_tokens(&self, user: UserId) -> Result<u64> {
        let done = sqlx::query("UPDATE tokens SET revoked = 1 WHERE user_id = ? AND revoked = 0")
            .bind(user.to_string())
            .execute(&self.pool)
            .await
            .map_err(db_error("Cannot revoke a user's tokens"))?;
        Ok(done.rows_affected())
    }

    /// Revokes every token scoped to `project` (disabled).
    pub async fn revoke_project_tokens(&self, project: ProjectId) -> Result<u64> {
        let done =
            sqlx::query("UPDATE tokens SET revoked = 1 WHERE project_id = ? AND revoked = 0")
                .bind(project.to_string())
                .execute(&self.pool)
                .await
                .map_err(db_error("Cannot revoke a project's tokens"))?;
        Ok(done.rows_affected())
    }

    /// Forgets tokens that expired before `before`.
    pub async fn purge_tokens(&self, before: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query("DELETE FROM tokens WHERE expires_at < ?")
            .bind(ts(before))
            .execute(&self.pool)
            .await
            .map_err(db_error("Cannot purge expired tokens"))?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use domain::identity::User;

    use super::*;

    fn token(user: UserId, hash: &str, expires_at: DateTime<Utc>) -> TokenRecord {
        TokenRecord {
            token_hash: hash.into(),
            user_id: user,
            project_id: None,
            audit_id: "a".into(),
            issued_at: Utc::now(),
            expires_at,
            revoked: false,
            app_cred_id: None,
            system_scope: false,
        }
    }

    #[tokio::test]
    async fn purge_when_tokens_expired_then_only_live_ones_kept() {
        let store = Store::in_memory().await.unwrap();
        let user = User {
            id: UserId::new(),
            name: "u".into(),
            email: None,
            description: String::new(),
            enabled: true,
            default_project_id: None,
            extra: Default::default(),
        };
        store.insert_user(&user, "").await.unwrap();
        let now = Utc::now();
        store
            .insert_token(&token(user.id, "old", now - chrono::Duration::hours(1)))
            .await
            .unwrap();
        store
            .insert_token(&token(user.id, "live", now + chrono::Duration::hours(1)))
            .await
            .unwrap();

        let purged = store.purge_tokens(now).await.unwrap();

        assert_eq!(purged, 1);
        assert!(store.token("old").await.unwrap().is_none());
        assert!(store.token("live").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn revoke_user_tokens_when_called_then_every_token_of_user_revoked() {
        let store = Store::in_memory().await.unwrap();
        let user = User {
            id: UserId::new(),
            name: "u".into(),
            email: None,
            description: String::new(),
            enabled: true,
            default_project_id: None,
            extra: Default::default(),
        };
        store.insert_user(&user, "").await.unwrap();
        let later = Utc::now() + chrono::Duration::hours(1);
        store
            .insert_token(&token(user.id, "a", later))
            .await
            .unwrap();
        store
            .insert_token(&token(user.id, "b", later))
            .await
            .unwrap();

        let revoked = store.revoke_user_tokens(user.id).await.unwrap();

        assert_eq!(revoked, 2);
        assert!(store.token("a").await.unwrap().unwrap().revoked);
    }
}
