//! Users, projects, roles and role assignments, under Keystone's default
//! policies for project-scoped tokens:
//!
//! | action | allowed |
//! |---|---|
//! | list users, list projects, list roles, grants, role assignments | admin |
//! | get / list projects of a user | admin, or the user itself |
//! | get a project | admin, or a token scoped to it |
//! | create, update, delete anything | admin |
//!
//! Disabling a user or project, deleting it, or changing a password revokes
//! the tokens it had.

use domain::identity::{validate_name, Caller, Project, RoleRecord, User};
use domain::{Error, ProjectId, Result, RoleId, UserId};

use super::{denied, NewUser};
use crate::Cloud;

fn require_admin(caller: &Caller, action: &str) -> Result<()> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(denied(action))
    }
}

impl Cloud {
    fn check_password_rules(&self, password: &str) -> Result<()> {
        let min = self.config.identity.min_password_length;
        if password.chars().count() < min {
            return Err(Error::invalid(format!(
                "Password validation error: the password must be at least {min} characters long."
            )));
        }
        Ok(())
    }

    pub async fn create_project(&self, caller: &Caller, mut p: Project) -> Result<Project> {
        require_admin(caller, "create_project")?;
        validate_name("project", &p.name)?;
        if p.name.is_empty() {
            return Err(Error::invalid("A project needs a name."));
        }
        p.id = ProjectId::new();
        self.store.insert_project(&p).await?;
        Ok(p)
    }

    pub async fn projects(&self, caller: &Caller, name: Option<&str>) -> Result<Vec<Project>> {
        require_admin(caller, "list_projects")?;
        let all = self.store.projects().await?;
        Ok(all
            .into_iter()
            .filter(|p| name.is_none_or(|n| p.name == n))
            .collect())
    }

    pub async fn project(&self, caller: &Caller, id: &str) -> Result<Project> {
        let pid: ProjectId = id.parse().map_err(|_| Error::not_found("project", id))?;
        if !caller.is_admin() && caller.project_id != Some(pid) {
            return Err(denied("get_project"));
        }
        self.store.project(pid).await
    }

    pub async fn update_project(&self, caller: &Caller, p: Project) -> Result<Project> {
        require_admin(caller, "update_project")?;
        validate_name("project", &p.name)?;
        self.store.update_project(&p).await?;
        if !p.enabled {
            self.store.revoke_project_tokens(p.id).await?;
        }
        Ok(p)
    }

    pub async fn delete_project(&self, caller: &Caller, id: &str) -> Result<()> {
        require_admin(caller, "delete_project")?;
        let pid: ProjectId = id.parse().map_err(|_| Error::not_found("project", id))?;
        self.store.delete_project(pid).await?;
        self.store.revoke_project_tokens(pid).await?;
        Ok(())
    }

    pub async fn create_user(&self, caller: &Caller, new: NewUser) -> Result<User> {
        require_admin(caller, "create_user")?;
        validate_name("user", &new.name)?;
        if new.name.is_empty() {
            return Err(Error::invalid("A user needs a name."));
        }
        if let Some(pw) = &new.password {
            self.check_password_rules(pw)?;
        }
        if let Some(p) = new.default_project_id {
            self.store
                .project(p)
                .await
                .map_err(|_| Error::invalid(format!("The default project {p} does not exist.")))?;
        }
        let user = User {
            id: UserId::new(),
            name: new.name,
            email: new.email,
            description: new.description,
            enabled: new.enabled,
            default_project_id: new.default_project_id,
            extra: new.extra,
        };
        // No password: an empty hash, which never matches.
        let hash = match new.password {
            Some(pw) => self.passwords.hash(pw).await?,
            None => String::new(),
        };
        self.store.insert_user(&user, &hash).await?;
        Ok(user)
    }

    pub async fn users(&self, caller: &Caller, name: Option<&str>) -> Result<Vec<User>> {
        require_admin(caller, "list_users")?;
        let all = self.store.users().await?;
        Ok(all
            .into_iter()
            .filter(|u| name.is_none_or(|n| u.name == n))
            .collect())
    }

    pub async fn user(&self, caller: &Caller, id: &str) -> Result<User> {
        let uid: UserId = id.parse().map_err(|_| Error::not_found("user", id))?;
        if !caller.is_admin() && caller.user_id != uid {
            return Err(denied("get_user"));
        }
        self.store.user(uid).await
    }

    /// Updates a user; `password` (if any) is set too. Disabling the user
    /// or changing its password revokes its tokens.
    pub async fn update_user(
        &self,
        caller: &Caller,
        user: User,
        password: Option<String>,
    ) -> Result<User> {
        require_admin(caller, "update_user")?;
        validate_name("user", &user.name)?;
        if let Some(pw) = &password {
            self.check_password_rules(pw)?;
        }
        let before = self.store.user(user.id).await?;
        self.store.update_user(&user).await?;
        if let Some(pw) = password {
            self.store
                .set_password_hash(user.id, &self.passwords.hash(pw).await?)
                .await?;
            self.store.revoke_user_tokens(user.id).await?;
        }
        if !user.enabled {
            self.store.revoke_user_tokens(user.id).await?;
        } else if !before.enabled {
            self.store.clear_failed_logins(user.id).await?;
        }
        Ok(user)
    }

    /// `POST /v3/users/{id}/password`: a user changes its own password,
    /// proving the old one (no token needed, as Keystone); a wrong one
    /// counts toward the lockout. Every token the user had is revoked.
    pub async fn change_own_password(
        &self,
        id: &str,
        original: String,
        password: String,
    ) -> Result<()> {
        let uid: UserId = id.parse().map_err(|_| Error::not_found("user", id))?;
        let user = self.store.user(uid).await?;
        self.check_password_rules(&password)?;
        self.check_not_locked(&user).await?;
        let hash = self.store.password_hash(uid).await?;
        if !self.passwords.verify(original, Some(hash)).await? {
            self.record_failed_login(&user).await?;
            return Err(Error::unauthenticated(
                "The original password is not correct.",
            ));
        }
        self.store
            .set_password_hash(uid, &self.passwords.hash(password).await?)
            .await?;
        self.store.clear_failed_logins(uid).await?;
        self.store.revoke_user_tokens(uid).await?;
        Ok(())
    }

    pub async fn delete_user(&self, caller: &Caller, id: &str) -> Result<()> {
        require_admin(caller, "delete_user")?;
        let uid: UserId = id.parse().map_err(|_| Error::not_found("user", id))?;
        self.store.revoke_user_tokens(uid).await?;
        self.store.delete_user(uid).await
    }

    /// The projects a user has a role on (`GET /v3/users/{id}/projects`):
    /// an admin's question, or a user's about itself.
    pub async fn user_projects(&self, caller: &Caller, id: &str) -> Result<Vec<Project>> {
        let uid: UserId = id.parse().map_err(|_| Error::not_found("user", id))?;
        if !caller.is_admin() && caller.user_id != uid {
            return Err(denied("list_user_projects"));
        }
        let user = self.store.user(uid).await?;
        let mut ids: Vec<ProjectId> = self
            .store
            .assignments(Some(user.id), None)
            .await?
            .into_iter()
            .map(|(_, p, _)| p)
            .collect();
        ids.sort();
        ids.dedup();
        let mut out = Vec::new();
        for pid in ids {
            out.push(self.store.project(pid).await?);
        }
        Ok(out)
    }

    pub async fn roles(&self, caller: &Caller, name: Option<&str>) -> Result<Vec<RoleRecord>> {
        require_admin(caller, "list_roles")?;
        let roles = self.store.roles().await?;
        Ok(roles
            .into_iter()
            .filter(|r| name.is_none_or(|n| r.role.name() == n))
            .collect())
    }

    pub async fn role(&self, caller: &Caller, id: &str) -> Result<RoleRecord> {
        require_admin(caller, "get_role")?;
        let rid: RoleId = id.parse().map_err(|_| Error::not_found("role", id))?;
        self.store
            .roles()
            .await?
            .into_iter()
            .find(|r| r.id == rid)
            .ok_or_else(|| Error::not_found("role", id))
    }

    /// Checks that user, project and role all exist; returns their ids.
    async fn assignment_ids(
        &self,
        user: &str,
        project: &str,
        role: &str,
    ) -> Result<(UserId, ProjectId, RoleId)> {
        let uid: UserId = user.parse().map_err(|_| Error::not_found("user", user))?;
        let pid: ProjectId = project
            .parse()
            .map_err(|_| Error::not_found("project", project))?;
        let rid: RoleId = role.parse().map_err(|_| Error::not_found("role", role))?;
        self.store.user(uid).await?;
        self.store.project(pid).await?;
        if !self.store.roles().await?.iter().any(|r| r.id == rid) {
            return Err(Error::not_found("role", role));
        }
        Ok((uid, pid, rid))
    }

    pub async fn assign_role(
        &self,
        caller: &Caller,
        user: &str,
        project: &str,
        role: &str,
    ) -> Result<()> {
        require_admin(caller, "create_grant")?;
        let (u, p, r) = self.assignment_ids(user, project, role).await?;
        self.store.assign_role(u, p, r).await
    }

    pub async fn unassign_role(
        &self,
        caller: &Caller,
        user: &str,
        project: &str,
        role: &str,
    ) -> Result<()> {
        require_admin(caller, "revoke_grant")?;
        let (u, p, r) = self.assignment_ids(user, project, role).await?;
        if !self.store.unassign_role(u, p, r).await? {
            return Err(Error::not_found(
                "role assignment",
                format!("{role} of user {user} on project {project}"),
            ));
        }
        Ok(())
    }

    /// Whether `user` holds `role` on `project` directly (`HEAD` grant
    /// check): the admin's question only, so a reader cannot probe others.
    pub async fn has_assignment(
        &self,
        caller: &Caller,
        user: &str,
        project: &str,
        role: &str,
    ) -> Result<bool> {
        require_admin(caller, "check_grant")?;
        let (u, p, r) = self.assignment_ids(user, project, role).await?;
        Ok(self
            .store
            .assignments(Some(u), Some(p))
            .await?
            .iter()
            .any(|(_, _, rr)| rr.id == r))
    }

    /// Role assignments (and `GET /projects/{p}/users/{u}/roles`): admin.
    pub async fn assignments(
        &self,
        caller: &Caller,
        user: Option<&str>,
        project: Option<&str>,
    ) -> Result<Vec<(UserId, ProjectId, RoleRecord)>> {
        require_admin(caller, "list_role_assignments")?;
        let user: Option<UserId> = user.map(str::parse).transpose()?;
        let project: Option<ProjectId> = project.map(str::parse).transpose()?;
        self.store.assignments(user, project).await
    }
}
