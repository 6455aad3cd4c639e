//! Keypairs, per user (see [`domain::keypair`]).

use domain::keypair::Keypair;
use domain::{Error, Result, UserId};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::{db_error, parse_id, parse_ts, ts, Store};

fn keypair_from_row(row: &SqliteRow) -> Result<Keypair> {
    Ok(Keypair {
        id: row.get("id"),
        user_id: parse_id(row.get::<&str, _>("user_id"))?,
        name: row.get("name"),
        key_type: row.get("key_type"),
        public_key: row.get("public_key"),
        fingerprint: row.get("fingerprint"),
        created_at: parse_ts(row.get("created_at"))?,
    })
}

impl Store {
    /// Stores a new keypair and returns it with its row id; a name the user
    /// already has is a conflict.
    pub async fn insert_keypair(&self, k: &Keypair) -> Result<Keypair> {
        let row = sqlx::query(
            "INSERT INTO keypairs (user_id, name, key_type, public_key, fingerprint, created_at) \
             VALUES (?, ?, ?, ?, ?, ?) RETURNING *",
        )
        .bind(k.user_id.to_string())
        .bind(&k.name)
        .bind(&k.key_type)
        .bind(&k.public_key)
        .bind(&k.fingerprint)
        .bind(ts(k.created_at))
        .fetch_one(&self.pool)
        .await
        .map_err(db_error(&format!("Key pair '{}'", k.name)))?;
        keypair_from_row(&row)
    }

    pub async fn keypair(&self, user: UserId, name: &str) -> Result<Keypair> {
        let row = sqlx::query("SELECT * FROM keypairs WHERE user_id = ? AND name = ?")
            .bind(user.to_string())
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("Cannot read a keypair"))?
            .ok_or_else(|| Error::not_found("Keypair", name))?;
        keypair_from_row(&row)
    }

    /// A user's keypairs, by name.
    pub async fn keypairs(&self, user: UserId) -> Result<Vec<Keypair>> {
        let rows = sqlx::query("SELECT * FROM keypairs WHERE user_id = ? ORDER BY name")
            .bind(user.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("Cannot list keypairs"))?;
        rows.iter().map(keypair_from_row).collect()
    }

    pub async fn delete_keypair(&self, user: UserId, name: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM keypairs WHERE user_id = ? AND name = ?")
            .bind(user.to_string())
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db_error("Cannot delete a keypair"))?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("Keypair", name));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keypair(user: UserId, name: &str) -> Keypair {
        Keypair {
            id: 0,
            user_id: user,
            name: name.into(),
            key_type: "ssh".into(),
            public_key: "ssh-ed25519 AAAA test".into(),
            fingerprint: "00:11".into(),
            created_at: chrono::Utc::now(),
        }
    }

    #[tokio::test]
    async fn keypair_when_name_taken_by_same_user_then_conflict() {
        let store = Store::in_memory().await.unwrap();
        let user = UserId::new();
        store.insert_keypair(&keypair(user, "k")).await.unwrap();

        let err = store.insert_keypair(&keypair(user, "k")).await.unwrap_err();

        assert_eq!(err.kind(), domain::ErrorKind::Conflict);
    }

    #[tokio::test]
    async fn keypairs_when_other_user_then_not_listed() {
        let store = Store::in_memory().await.unwrap();
        let (a, b) = (UserId::new(), UserId::new());
        store.insert_keypair(&keypair(a, "k")).await.unwrap();
        store.insert_keypair(&keypair(b, "k")).await.unwrap();

        let listed = store.keypairs(a).await.unwrap();

        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].user_id, a);
    }
}
