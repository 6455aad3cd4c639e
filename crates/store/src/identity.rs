//! Projects, users, roles and role assignments.

use chrono::{DateTime, Utc};
use domain::identity::{Project, Role, RoleRecord, User};
use domain::{Error, ProjectId, Result, RoleId, UserId};
use sqlx::Row;

use crate::{db_error, parse_id, parse_ts, ts, Store};

fn project_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Project> {
    Ok(Project {
        id: parse_id(row.get::<&str, _>("id"))?,
        name: row.get("name"),
        description: row.get("description"),
        enabled: row.get::<i64, _>("enabled") != 0,
    })
}

fn user_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<User> {
    let default_project: Option<String> = row.get("default_project_id");
    Ok(User {
        id: parse_id(row.get::<&str, _>("id"))?,
        name: row.get("name"),
        email: row.get("email"),
        description: row.get("description"),
        enabled: row.get::<i64, _>("enabled") != 0,
        default_project_id: default_project.as_deref().map(parse_id).transpose()?,
        extra: serde_json::from_str(row.get("extra"))
            .map_err(|_| Error::internal("Corrupt user attributes in the database."))?,
    })
}

impl Store {
    pub async fn insert_project(&self, p: &Project) -> Result<()> {
        sqlx::query("INSERT INTO projects (id, name, description, enabled) VALUES (?, ?, ?, ?)")
            .bind(p.id.to_string())
            .bind(&p.name)
            .bind(&p.description)
            .bind(p.enabled as i64)
            .execute(&self.pool)
            .await
            .map_err(db_error(&format!("Cannot create project '{}'", p.name)))?;
        Ok(())
    }

    pub async fn update_project(&self, p: &Project) -> Result<()> {
        let done =
            sqlx::query("UPDATE projects SET name = ?, description = ?, enabled = ? WHERE id = ?")
                .bind(&p.name)
                .bind(&p.description)
                .bind(p.enabled as i64)
                .bind(p.id.to_string())
                .execute(&self.pool)
                .await
                .map_err(db_error(&format!("Cannot update project '{}'", p.name)))?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("project", p.id));
        }
        Ok(())
    }

    pub async fn project(&self, id: ProjectId) -> Result<Project> {
        let row = sqlx::query("SELECT * FROM projects WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("Cannot read a project"))?
            .ok_or_else(|| Error::not_found("project", id))?;
        project_from_row(&row)
    }

    pub async fn project_by_name(&self, name: &str) -> Result<Option<Project>> {
        let row = sqlx::query("SELECT * FROM projects WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("Cannot read a project"))?;
        row.as_ref().map(project_from_row).transpose()
    }

    pub async fn projects(&self) -> Result<Vec<Project>> {
        let rows = sqlx::query("SELECT * FROM projects ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("Cannot list projects"))?;
        rows.iter().map(project_from_row).collect()
    }

    pub async fn delete_project(&self, id: ProjectId) -> Result<()> {
        let done = sqlx::query("DELETE FROM projects WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(db_error("Cannot delete a project"))?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("project", id));
        }
        Ok(())
    }

    pub async fn insert_user(&self, u: &User, password_hash: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO users (id, name, email, description, enabled, default_project_id, password_hash, extra) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(u.id.to_string())
        .bind(&u.name)
        .bind(&u.email)
        .bind(&u.description)
        .bind(u.enabled as i64)
        .bind(u.default_project_id.map(|p| p.to_string()))
        .bind(password_hash)
        .bind(serde_json::Value::Object(u.extra.clone()).to_string())
        .execute(&self.pool)
        .await
        .map_err(db_error(&format!("Cannot create user '{}'", u.name)))?;
        Ok(())
    }

    pub async fn update_user(&self, u: &User) -> Result<()> {
        let done = sqlx::query(
            "UPDATE users SET name = ?, email = ?, description = ?, enabled = ?, default_project_id = ?, extra = ? \
             WHERE id = ?",
        )
        .bind(&u.name)
        .bind(&u.email)
        .bind(&u.description)
        .bind(u.enabled as i64)
        .bind(u.default_project_id.map(|p| p.to_string()))
        .bind(serde_json::Value::Object(u.extra.clone()).to_string())
        .bind(u.id.to_string())
        .execute(&self.pool)
        .await
        .map_err(db_error(&format!("Cannot update user '{}'", u.name)))?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("user", u.id));
        }
        Ok(())
    }

    pub async fn set_password_hash(&self, id: UserId, hash: &str) -> Result<()> {
        sqlx::query("UPDATE users SET password_hash = ? WHERE id = ?")
            .bind(hash)
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(db_error("Cannot change a password"))?;
        Ok(())
    }

    pub async fn user(&self, id: UserId) -> Result<User> {
        let row = sqlx::query("SELECT * FROM users WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("Cannot read a user"))?
            .ok_or_else(|| Error::not_found("user", id))?;
        user_from_row(&row)
    }

    /// The user called `name` and its password hash.
    pub async fn user_by_name(&self, name: &str) -> Result<Option<(User, String)>> {
        let row = sqlx::query("SELECT * FROM users WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("Cannot read a user"))?;
        row.map(|r| Ok((user_from_row(&r)?, r.get("password_hash"))))
            .transpose()
    }

    pub async fn password_hash(&self, id: UserId) -> Result<String> {
        sqlx::query_scalar("SELECT password_hash FROM users WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("Cannot read a user"))?
            .ok_or_else(|| Error::not_found("user", id))
    }

    /// Failed password logins of a user since its last success: how many
    /// and when the last one was.
    pub async fn failed_logins(&self, id: UserId) -> Result<(u32, Option<DateTime<Utc>>)> {
        let row = sqlx::query("SELECT failed_auth_count, failed_auth_at FROM users WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("Cannot read a user"))?
            .ok_or_else(|| Error::not_found("user", id))?;
        let at: Option<String> = row.get("failed_auth_at");
        Ok((
            row.get::<i64, _>("failed_auth_count").max(0) as u32,
            at.as_deref().map(parse_ts).transpose()?,
        ))
    }

    /// Records one failed login at `at`; `restart` starts the count again
    /// (the previous lockout window is over).
    pub async fn record_failed_login(
        &self,
        id: UserId,
        at: DateTime<Utc>,
        restart: bool,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE users SET failed_auth_count = CASE WHEN ? THEN 1 ELSE failed_auth_count + 1 END, \
             failed_auth_at = ? WHERE id = ?",
        )
        .bind(restart)
        .bind(ts(at))
        .bind(id.to_string())
        .execute(&self.pool)
        .await
        .map_err(db_error("Cannot record a failed login"))?;
        Ok(())
    }

    /// Forgets a user's failed logins (a success, or an admin re-enabling it).
    pub async fn clear_failed_logins(&self, id: UserId) -> Result<()> {
        sqlx::query(
            "UPDATE users SET failed_auth_count = 0, failed_auth_at = NULL \
             WHERE id = ? AND failed_auth_count <> 0",
        )
        .bind(id.to_string())
        .execute(&self.pool)
        .await
        .map_err(db_error("Cannot reset failed logins"))?;
        Ok(())
    }

    pub async fn users(&self) -> Result<Vec<User>> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("Cannot list users"))?;
        rows.iter().map(user_from_row).collect()
    }

    pub async fn delete_user(&self, id: UserId) -> Result<()> {
        let done = sqlx::query("DELETE FROM users WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(db_error("Cannot delete a user"))?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("user", id));
        }
        Ok(())
    }

    /// Makes sure the three roles exist; returns them.
    pub async fn ensure_roles(&self) -> Result<Vec<RoleRecord>> {
        for role in Role::ALL {
            sqlx::query("INSERT INTO roles (id, name) VALUES (?, ?) ON CONFLICT (name) DO NOTHING")
                .bind(RoleId::new().to_string())
                .bind(role.name())
                .execute(&self.pool)
                .await
                .map_err(db_error("Cannot create the default roles"))?;
        }
        self.roles().await
    }

    pub async fn roles(&self) -> Result<Vec<RoleRecord>> {
        let rows = sqlx::query("SELECT id, name FROM roles ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("Cannot list roles"))?;
        rows.iter()
            .filter_map(|r| {
                let role = Role::from_name(r.get("name"))?;
                Some(parse_id(r.get::<&str, _>("id")).map(|id| RoleRecord { id, role }))
            })
            .collect()
    }

    pub async fn assign_role(&self, user: UserId, project: ProjectId, role: RoleId) -> Result<()> {
        sqlx::query(
            "INSERT INTO role_assignments (user_id, project_id, role_id) VALUES (?, ?, ?) \
             ON CONFLICT DO NOTHING",
        )
        .bind(user.to_string())
        .bind(project.to_string())
        .bind(role.to_string())
        .execute(&self.pool)
        .await
        .map_err(db_error("Cannot assign a role"))?;
        Ok(())
    }

    pub async fn unassign_role(
        &self,
        user: UserId,
        project: ProjectId,
        role: RoleId,
    ) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM role_assignments WHERE user_id = ? AND project_id = ? AND role_id = ?",
        )
        .bind(user.to_string())
        .bind(project.to_string())
        .bind(role.to_string())
        .execute(&self.pool)
        .await
        .map_err(db_error("Cannot remove a role assignment"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Assignments, optionally narrowed to a user and/or a project:
    /// `(user, project, role)` triples.
    pub async fn assignments(
        &self,
        user: Option<UserId>,
        project: Option<ProjectId>,
    ) -> Result<Vec<(UserId, ProjectId, RoleRecord)>> {
        let rows = sqlx::query(
            "SELECT a.user_id, a.project_id, r.id AS role_id, r.name AS role_name \
             FROM role_assignments a JOIN roles r ON r.id = a.role_id \
             WHERE (?1 IS NULL OR a.user_id = ?1) AND (?2 IS NULL OR a.project_id = ?2) \
             ORDER BY a.user_id, a.project_id, r.name",
        )
        .bind(user.map(|u| u.to_string()))
        .bind(project.map(|p| p.to_string()))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("Cannot list role assignments"))?;
        rows.iter()
            .filter_map(|r| {
                let role = Role::from_name(r.get("role_name"))?;
                Some((|| {
                    Ok((
                        parse_id(r.get::<&str, _>("user_id"))?,
                        parse_id(r.get::<&str, _>("project_id"))?,
                        RoleRecord {
                            id: parse_id(r.get::<&str, _>("role_id"))?,
                            role,
                        },
                    ))
                })())
            })
            .collect()
    }

    /// The roles `user` holds on `project`, directly assigned (not expanded).
    pub async fn roles_on(&self, user: UserId, project: ProjectId) -> Result<Vec<Role>> {
        Ok(self
            .assignments(Some(user), Some(project))
            .await?
            .into_iter()
            .map(|(_, _, r)| r.role)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use domain::ErrorKind;

    use super::*;

    fn project(name: &str) -> Project {
        Project {
            id: ProjectId::new(),
            name: name.into(),
            description: String::new(),
            enabled: true,
        }
    }

    #[tokio::test]
    async fn project_when_name_taken_then_conflict() {
        let store = Store::in_memory().await.unwrap();
        store.insert_project(&project("a")).await.unwrap();

        let err = store.insert_project(&project("a")).await.unwrap_err();

        assert_eq!(err.kind(), ErrorKind::Conflict);
    }

    #[tokio::test]
    async fn role_when_assigned_then_listed_for_user_and_project() {
        let store = Store::in_memory().await.unwrap();
        let roles = store.ensure_roles().await.unwrap();
        let p = project("p");
        store.insert_project(&p).await.unwrap();
        let u = User {
            id: UserId::new(),
            name: "u".into(),
            email: None,
            description: String::new(),
            enabled: true,
            default_project_id: None,
            extra: Default::default(),
        };
        store.insert_user(&u, "hash").await.unwrap();
        let member = roles.iter().find(|r| r.role == Role::Member).unwrap();

        store.assign_role(u.id, p.id, member.id).await.unwrap();

        assert_eq!(
            store.roles_on(u.id, p.id).await.unwrap(),
            vec![Role::Member]
        );
        assert_eq!(
            store.roles_on(u.id, ProjectId::new()).await.unwrap(),
            vec![]
        );
    }

    #[tokio::test]
    async fn roles_when_ensured_twice_then_three() {
        let store = Store::in_memory().await.unwrap();
        store.ensure_roles().await.unwrap();

        let roles = store.ensure_roles().await.unwrap();

        assert_eq!(roles.len(), 3);
    }
}
