//! Identity (Keystone v3 semantics): password authentication, project-scoped
//! tokens, users, projects and role assignments.
//!
//! Tokens are 256 random bits; the store keeps only their SHA-256, with the
//! expiry and a revoked flag, so expiry and revocation survive a restart.
//! Roles are looked up at validation time, so removing a role takes effect
//! on tokens already issued (as Keystone's Fernet tokens do).
//! Passwords are hashed with Argon2id on the blocking pool.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use chrono::{DateTime, Utc};
use domain::identity::{validate_name, Caller, Project, Role, RoleRecord, User};
use domain::{Error, ProjectId, Result, RoleId, UserId};
use rand::RngCore;
use sha2::{Digest, Sha256};
use store::TokenRecord;

use crate::Cloud;

const AUTH_FAILED: &str = "The request you have made requires authentication.";

/// A user named by id or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    Id(String),
    Name(String),
}

/// A project named by id or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectRef {
    Id(String),
    Name(String),
}

/// `POST /v3/auth/tokens` with the password method.
#[derive(Debug, Clone)]
pub struct PasswordAuth {
    pub user: UserRef,
    pub password: String,
    pub scope: Option<ProjectRef>,
}

/// A token as issued or validated: the secret (only when just issued) and
/// everything a token body shows.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub token: Option<String>,
    pub caller: Caller,
    pub audit_id: String,
    pub issued_at: DateTime<Utc>,
    pub roles: Vec<RoleRecord>,
}

/// What a user-creation request carries.
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    pub name: String,
    pub password: String,
    pub email: Option<String>,
    pub description: String,
    pub enabled: bool,
    pub default_project_id: Option<ProjectId>,
}

/// The admin created by bootstrap, and its password when generated.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub created: bool,
}

fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn new_secret(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// A random password for the bootstrap admin.
pub fn generate_password() -> String {
    new_secret(18)
}

async fn hash_password(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::internal(format!("Cannot hash a password: {e}")))
    })
    .await
    .map_err(|e| Error::internal(format!("Password hashing task failed: {e}")))?
}

async fn verify_password(password: String, hash: String) -> Result<bool> {
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&hash)
            .map_err(|e| Error::internal(format!("Corrupt password hash: {e}")))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await
    .map_err(|e| Error::internal(format!("Password check task failed: {e}")))?
}

impl Cloud {
    /// Creates the roles and, on first start, the admin project and user.
    /// With `reset_password`, an existing admin's password is set again.
    pub async fn bootstrap(
        &self,
        user_name: &str,
        project_name: &str,
        password: &str,
        reset_password: bool,
    ) -> Result<Bootstrap> {
        let roles = self.store.ensure_roles().await?;
        let admin_role = roles
            .iter()
            .find(|r| r.role == Role::Admin)
            .ok_or_else(|| Error::internal("The admin role is missing after bootstrap."))?;
        let project = match self.store.project_by_name(project_name).await? {
            Some(p) => p,
            None => {
                let p = Project {
                    id: ProjectId::new(),
                    name: project_name.into(),
                    description: "Bootstrap project for the cloud administrator".into(),
                    enabled: true,
                };
                self.store.insert_project(&p).await?;
                p
            }
        };
        let (user, created) = match self.store.user_by_name(user_name).await? {
            Some((u, _)) => {
                if reset_password {
                    self.store
                        .set_password_hash(u.id, &hash_password(password.into()).await?)
                        .await?;
                }
                (u, false)
            }
            None => {
                let u = User {
                    id: UserId::new(),
                    name: user_name.into(),
                    email: None,
                    description: "Cloud administrator".into(),
                    enabled: true,
                    default_project_id: Some(project.id),
                };
                self.store
                    .insert_user(&u, &hash_password(password.into()).await?)
                    .await?;
                (u, true)
            }
        };
        self.store
            .assign_role(user.id, project.id, admin_role.id)
            .await?;
        Ok(Bootstrap { created })
    }

    async fn resolve_user(&self, user: &UserRef) -> Result<Option<(User, String)>> {
        match user {
            UserRef::Name(name) => self.store.user_by_name(name).await,
            UserRef::Id(id) => {
                let Ok(id) = id.parse::<UserId>() else {
                    return Ok(None);
                };
                match self.store.user(id).await {
                    Ok(u) => Ok(Some((u, self.store.password_hash(id).await?))),
                    Err(e) if e.kind() == domain::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e),
                }
            }
        }
    }

    async fn resolve_project(&self, project: &ProjectRef) -> Result<Option<Project>> {
        match project {
            ProjectRef::Name(name) => self.store.project_by_name(name).await,
            ProjectRef::Id(id) => {
                let Ok(id) = id.parse::<ProjectId>() else {
                    return Ok(None);
                };
                match self.store.project(id).await {
                    Ok(p) => Ok(Some(p)),
                    Err(e) if e.kind() == domain::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Checks a password and issues a token, scoped to a project when asked.
    pub async fn authenticate(&self, auth: PasswordAuth) -> Result<TokenInfo> {
        let Some((user, hash)) = self.resolve_user(&auth.user).await? else {
            return Err(Error::unauthenticated(AUTH_FAILED));
        };
        if !user.enabled || !verify_password(auth.password, hash).await? {
            return Err(Error::unauthenticated(AUTH_FAILED));
        }
        let project = match &auth.scope {
            None => None,
            Some(scope) => {
                let project = self.resolve_project(scope).await?.filter(|p| p.enabled);
                let project = project.ok_or_else(|| Error::unauthenticated(AUTH_FAILED))?;
                if self.store.roles_on(user.id, project.id).await?.is_empty() {
                    return Err(Error::unauthenticated(format!(
                        "User {} has no role on project {}.",
                        user.id, project.id
                    )));
                }
                Some(project)
            }
        };
        let token = new_secret(32);
        let now = Utc::now();
        let ttl = chrono::Duration::from_std(self.config.token_ttl)
            .map_err(|_| Error::internal("The token lifetime is out of range."))?;
        let record = TokenRecord {
            token_hash: hash_token(&token),
            user_id: user.id,
            project_id: project.as_ref().map(|p| p.id),
            audit_id: new_secret(16),
            issued_at: now,
            expires_at: now + ttl,
            revoked: false,
        };
        self.store.insert_token(&record).await?;
        let mut info = self.token_info(&record).await?;
        info.token = Some(token);
        Ok(info)
    }

    async fn token_info(&self, record: &TokenRecord) -> Result<TokenInfo> {
        let user = self.store.user(record.user_id).await?;
        let (project, roles) = match record.project_id {
            None => (None, Vec::new()),
            Some(pid) => {
                let project = self.store.project(pid).await?;
                let assigned = self.store.roles_on(user.id, pid).await?;
                let mut expanded: Vec<Role> = assigned.iter().flat_map(|r| r.implied()).collect();
                expanded.sort();
                expanded.dedup();
                (Some(project), expanded)
            }
        };
        let all_roles = self.store.roles().await?;
        let role_records = all_roles
            .into_iter()
            .filter(|r| roles.contains(&r.role))
            .collect();
        Ok(TokenInfo {
            token: None,
            caller: Caller {
                user_id: user.id,
                user_name: user.name,
                project_id: project.as_ref().map(|p| p.id),
                project_name: project.map(|p| p.name),
                roles,
                expires_at: record.expires_at,
            },
            audit_id: record.audit_id.clone(),
            issued_at: record.issued_at,
            roles: role_records,
        })
    }

    /// The caller a token stands for; 401 if unknown, expired or revoked.
    pub async fn validate(&self, token: &str) -> Result<TokenInfo> {
        let record = self
            .store
            .token(&hash_token(token))
            .await?
            .ok_or_else(|| Error::unauthenticated("The token is not valid."))?;
        if record.revoked {
            return Err(Error::unauthenticated("The token has been revoked."));
        }
        if record.expires_at <= Utc::now() {
            return Err(Error::unauthenticated("The token has expired."));
        }
        let info = match self.token_info(&record).await {
            Ok(info) => info,
            Err(e) if e.kind() == domain::ErrorKind::NotFound => {
                return Err(Error::unauthenticated(
                    "The token's user or project no longer exists.",
                ))
            }
            Err(e) => return Err(e),
        };
        if info.caller.project_id.is_some() && info.caller.roles.is_empty() {
            return Err(Error::unauthenticated(
                "The token's user no longer has a role on its project.",
            ));
        }
        Ok(info)
    }

    /// `GET /v3/auth/tokens`: a caller may look at its own token; an admin at any.
    pub async fn check_token(&self, caller: &Caller, subject: &str) -> Result<TokenInfo> {
        let info = self.validate(subject).await.map_err(|e| {
            if e.kind() == domain::ErrorKind::Unauthenticated {
                Error::new(
                    domain::ErrorKind::NotFound,
                    format!("Could not find token: {}", e.message()),
                )
            } else {
                e
            }
        })?;
        if !caller.is_admin() && info.caller.user_id != caller.user_id {
            return Err(Error::forbidden("You may only validate your own tokens."));
        }
        Ok(info)
    }

    /// `DELETE /v3/auth/tokens`: revokes `subject`.
    pub async fn revoke(&self, caller: &Caller, subject: &str) -> Result<()> {
        let info = self.check_token(caller, subject).await?;
        let _ = info;
        self.store.revoke_token(&hash_token(subject)).await?;
        Ok(())
    }

    pub async fn create_project(&self, caller: &Caller, mut p: Project) -> Result<Project> {
        caller.require(Role::Admin, "create projects")?;
        validate_name("project", &p.name)?;
        if p.name.is_empty() {
            return Err(Error::invalid("A project needs a name."));
        }
        p.id = ProjectId::new();
        self.store.insert_project(&p).await?;
        Ok(p)
    }

    pub async fn projects(&self, caller: &Caller, name: Option<&str>) -> Result<Vec<Project>> {
        let all = self.store.projects().await?;
        let visible = all
            .into_iter()
            .filter(|p| caller.is_admin() || caller.project_id == Some(p.id));
        Ok(visible
            .filter(|p| name.is_none_or(|n| p.name == n))
            .collect())
    }

    pub async fn project(&self, caller: &Caller, id: &str) -> Result<Project> {
        let pid: ProjectId = id.parse()?;
        if !caller.is_admin() && caller.project_id != Some(pid) {
            return Err(Error::not_found("project", id));
        }
        self.store.project(pid).await
    }

    pub async fn update_project(&self, caller: &Caller, p: Project) -> Result<Project> {
        caller.require(Role::Admin, "update projects")?;
        validate_name("project", &p.name)?;
        self.store.update_project(&p).await?;
        Ok(p)
    }

    pub async fn delete_project(&self, caller: &Caller, id: &str) -> Result<()> {
        caller.require(Role::Admin, "delete projects")?;
        self.store.delete_project(id.parse()?).await
    }

    pub async fn create_user(&self, caller: &Caller, new: NewUser) -> Result<User> {
        caller.require(Role::Admin, "create users")?;
        validate_name("user", &new.name)?;
        if new.name.is_empty() {
            return Err(Error::invalid("A user needs a name."));
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
        };
        self.store
            .insert_user(&user, &hash_password(new.password).await?)
            .await?;
        Ok(user)
    }

    pub async fn users(&self, caller: &Caller, name: Option<&str>) -> Result<Vec<User>> {
        let all = self.store.users().await?;
        let visible = all
            .into_iter()
            .filter(|u| caller.is_admin() || u.id == caller.user_id);
        Ok(visible
            .filter(|u| name.is_none_or(|n| u.name == n))
            .collect())
    }

    pub async fn user(&self, caller: &Caller, id: &str) -> Result<User> {
        let uid: UserId = id.parse()?;
        if !caller.is_admin() && caller.user_id != uid {
            return Err(Error::not_found("user", id));
        }
        self.store.user(uid).await
    }

    /// Updates a user; `password` (if any) is set too.
    pub async fn update_user(
        &self,
        caller: &Caller,
        user: User,
        password: Option<String>,
    ) -> Result<User> {
        caller.require(Role::Admin, "update users")?;
        validate_name("user", &user.name)?;
        self.store.update_user(&user).await?;
        if let Some(pw) = password {
            self.store
                .set_password_hash(user.id, &hash_password(pw).await?)
                .await?;
        }
        Ok(user)
    }

    pub async fn delete_user(&self, caller: &Caller, id: &str) -> Result<()> {
        caller.require(Role::Admin, "delete users")?;
        self.store.delete_user(id.parse()?).await
    }

    /// The projects a user has a role on (`GET /v3/users/{id}/projects`).
    pub async fn user_projects(&self, caller: &Caller, id: &str) -> Result<Vec<Project>> {
        let user = self.user(caller, id).await?;
        let mut ids: Vec<ProjectId> = self
            .store
            .assignments(Some(user.id), None)
            .await?
            .into_iter()
            .map(|(_, p, _)| p)
            .collect();
        ids.dedup();
        let mut out = Vec::new();
        for pid in ids {
            out.push(self.store.project(pid).await?);
        }
        Ok(out)
    }

    pub async fn roles(&self, _caller: &Caller, name: Option<&str>) -> Result<Vec<RoleRecord>> {
        let roles = self.store.roles().await?;
        Ok(roles
            .into_iter()
            .filter(|r| name.is_none_or(|n| r.role.name() == n))
            .collect())
    }

    pub async fn role(&self, caller: &Caller, id: &str) -> Result<RoleRecord> {
        let rid: RoleId = id.parse()?;
        self.roles(caller, None)
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
        let uid: UserId = user.parse()?;
        let pid: ProjectId = project.parse()?;
        let rid: RoleId = role.parse()?;
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
        caller.require(Role::Admin, "assign roles")?;
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
        caller.require(Role::Admin, "remove role assignments")?;
        let (u, p, r) = self.assignment_ids(user, project, role).await?;
        if !self.store.unassign_role(u, p, r).await? {
            return Err(Error::not_found(
                "role assignment",
                format!("{role} of user {user} on project {project}"),
            ));
        }
        Ok(())
    }

    /// Whether `user` holds `role` on `project` directly.
    pub async fn has_assignment(
        &self,
        caller: &Caller,
        user: &str,
        project: &str,
        role: &str,
    ) -> Result<bool> {
        caller.require(Role::Reader, "read role assignments")?;
        let (u, p, r) = self.assignment_ids(user, project, role).await?;
        Ok(self
            .store
            .assignments(Some(u), Some(p))
            .await?
            .iter()
            .any(|(_, _, rr)| rr.id == r))
    }

    pub async fn assignments(
        &self,
        caller: &Caller,
        user: Option<&str>,
        project: Option<&str>,
    ) -> Result<Vec<(UserId, ProjectId, RoleRecord)>> {
        let user: Option<UserId> = user.map(str::parse).transpose()?;
        let project: Option<ProjectId> = project.map(str::parse).transpose()?;
        if !caller.is_admin() && user != Some(caller.user_id) {
            return Err(Error::forbidden(
                "Only an admin may list other users' role assignments.",
            ));
        }
        self.store.assignments(user, project).await
    }
}
