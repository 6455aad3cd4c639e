//! Identity (Keystone v3 semantics): password authentication, project-scoped
//! tokens, users, projects and role assignments.
//!
//! Tokens are 256 random bits; the store keeps only their SHA-256, with the
//! expiry and a revoked flag, so expiry and revocation survive a restart.
//! Roles are looked up at validation time, so removing a role takes effect
//! on tokens already issued (as Keystone's Fernet tokens do).
//! Passwords are hashed with Argon2id on a bounded pool ([`passwords`]).
//!
//! A token stops working when it expires or is revoked, when its user or
//! project is disabled or deleted, or when its user's password changes
//! (Keystone's revocation events): validation re-reads user and project,
//! and disabling or a password change revokes the user's tokens for good.
//! Expired tokens are purged ([`Cloud::purge_expired_tokens`]).
//!
//! Policies are Keystone's defaults for project-scoped tokens: users,
//! projects, roles and grants are the admin's; a user may read itself, its
//! projects and its current project.

mod app_credentials;
mod directory;
mod passwords;
mod system_roles;

use base64::Engine;
use chrono::{DateTime, Utc};
use domain::identity::{Caller, Project, Role, RoleRecord, User};
use domain::{Error, ProjectId, Result, UserId};
use rand::RngCore;
use sha2::{Digest, Sha256};
use store::TokenRecord;

use crate::Cloud;

pub use app_credentials::{AppCredentialAuth, NewAppCredential};
pub use passwords::IdentityConfig;
pub(crate) use passwords::Passwords;

pub(crate) const AUTH_FAILED: &str = "The request you have made requires authentication.";

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

/// What a token is asked to be scoped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenScope {
    Project(ProjectRef),
    /// Keystone's `"system": {"all": true}`: the user's system role assignments.
    System,
}

/// `POST /v3/auth/tokens` with the password method.
#[derive(Debug, Clone)]
pub struct PasswordAuth {
    pub user: UserRef,
    pub password: String,
    pub scope: Option<TokenScope>,
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
    /// The application credential the token came from.
    pub application_credential: Option<AppCredentialRef>,
    /// Scoped to the system rather than a project.
    pub system_scope: bool,
    user_enabled: bool,
    project_enabled: bool,
}

/// The application credential a token was issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppCredentialRef {
    pub id: String,
    pub name: String,
    pub restricted: bool,
}

/// What a user-creation request carries.
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    pub name: String,
    /// `None`: the user cannot use password authentication.
    pub password: Option<String>,
    pub email: Option<String>,
    pub description: String,
    pub enabled: bool,
    pub default_project_id: Option<ProjectId>,
    /// Attributes Keystone keeps as given.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The admin created by bootstrap, and its password when generated.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub created: bool,
}

fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub(crate) fn new_secret(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// A random password for the bootstrap admin.
pub fn generate_password() -> String {
    new_secret(18)
}

pub(crate) fn denied(action: &str) -> Error {
    Error::forbidden(format!(
        "You are not authorized to perform the requested action: identity:{action}."
    ))
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
                        .set_password_hash(u.id, &self.passwords.hash(password.into()).await?)
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
                    extra: Default::default(),
                };
                self.store
                    .insert_user(&u, &self.passwords.hash(password.into()).await?)
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
    /// Unknown users, users without a password and wrong passwords all
    /// cost one hash and answer the same 401; a locked-out user gets 401
    /// without its password being looked at.
    pub async fn authenticate(&self, auth: PasswordAuth) -> Result<TokenInfo> {
        let found = self.resolve_user(&auth.user).await?;
        if let Some((user, _)) = &found {
            self.check_not_locked(user).await?;
        }
        let hash = found.as_ref().map(|(_, h)| h.clone());
        let matches = self.passwords.verify(auth.password, hash).await?;
        let Some((user, _)) = found else {
            return Err(Error::unauthenticated(AUTH_FAILED));
        };
        if !matches {
            self.record_failed_login(&user).await?;
            return Err(Error::unauthenticated(AUTH_FAILED));
        }
        if !user.enabled {
            return Err(Error::unauthenticated(AUTH_FAILED));
        }
        self.store.clear_failed_logins(user.id).await?;
        let project = match &auth.scope {
            None => None,
            Some(TokenScope::System) => {
                if self.store.system_roles(user.id).await?.is_empty() {
                    return Err(Error::unauthenticated(format!(
                        "User {} has no role on the system.",
                        user.id
                    )));
                }
                return self.issue_token(user.id, None, None, true).await;
            }
            Some(TokenScope::Project(scope)) => {
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
        self.issue_token(user.id, project.map(|p| p.id), None, false)
            .await
    }

    /// Records a new token for `user` (scoped to `project`), or for an
    /// application credential, which also bounds its expiry.
    async fn issue_token(
        &self,
        user: UserId,
        project: Option<ProjectId>,
        credential: Option<&store::AppCredentialRecord>,
        system_scope: bool,
    ) -> Result<TokenInfo> {
        let token = new_secret(32);
        let now = Utc::now();
        let ttl = chrono::Duration::from_std(self.config.token_ttl)
            .map_err(|_| Error::internal("The token lifetime is out of range."))?;
        let mut expires_at = now + ttl;
        if let Some(limit) = credential.and_then(|c| c.expires_at) {
            expires_at = expires_at.min(limit);
        }
        let record = TokenRecord {
            token_hash: hash_token(&token),
            user_id: user,
            project_id: project,
            audit_id: new_secret(16),
            issued_at: now,
            expires_at,
            revoked: false,
            app_cred_id: credential.map(|c| c.id.clone()),
            system_scope,
        };
        self.store.insert_token(&record).await?;
        let mut info = self.token_info(&record).await?;
        info.token = Some(token);
        Ok(info)
    }

    async fn token_info(&self, record: &TokenRecord) -> Result<TokenInfo> {
        let user = self.store.user(record.user_id).await?;
        let credential = match &record.app_cred_id {
            Some(id) => Some(self.store.app_credential(id).await?),
            None => None,
        };
        let (project, roles) = match record.project_id {
            None if record.system_scope => {
                let held = self.store.system_roles(user.id).await?;
                let all = self.store.roles().await?;
                let mut expanded: Vec<Role> = all
                    .iter()
                    .filter(|r| held.contains(&r.id))
                    .flat_map(|r| r.role.implied())
                    .collect();
                expanded.sort();
                expanded.dedup();
                (None, expanded)
            }
            None => (None, Vec::new()),
            Some(pid) => {
                let project = self.store.project(pid).await?;
                let assigned = self.store.roles_on(user.id, pid).await?;
                let mut expanded: Vec<Role> = assigned.iter().flat_map(|r| r.implied()).collect();
                expanded.sort();
                expanded.dedup();
                if let Some(cred) = &credential {
                    let granted: Vec<Role> = cred.roles.iter().flat_map(|r| r.implied()).collect();
                    expanded.retain(|r| granted.contains(r));
                }
                (Some(project), expanded)
            }
        };
        let all_roles = self.store.roles().await?;
        let role_records = all_roles
            .into_iter()
            .filter(|r| roles.contains(&r.role))
            .collect();
        let user_enabled = user.enabled;
        let project_enabled = project.as_ref().is_none_or(|p| p.enabled);
        Ok(TokenInfo {
            token: None,
            user_enabled,
            project_enabled,
            caller: Caller {
                user_id: user.id,
                user_name: user.name,
                project_id: project.as_ref().map(|p| p.id),
                project_name: project.map(|p| p.name),
                roles,
                expires_at: record.expires_at,
                restricted_app_credential: credential.as_ref().is_some_and(|c| !c.unrestricted),
            },
            application_credential: credential.map(|c| AppCredentialRef {
                id: c.id,
                name: c.name,
                restricted: !c.unrestricted,
            }),
            system_scope: record.system_scope,
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
        if !info.user_enabled || !info.project_enabled {
            return Err(Error::unauthenticated(
                "The token's user or project is disabled.",
            ));
        }
        let scoped = info.caller.project_id.is_some() || info.system_scope;
        if scoped && info.caller.roles.is_empty() {
            return Err(Error::unauthenticated(
                "The token's user no longer has a role on its scope.",
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

    /// Refuses a locked-out user (Keystone's lockout_failure_attempts).
    async fn check_not_locked(&self, user: &User) -> Result<()> {
        let limit = self.config.identity.lockout_failure_attempts;
        if limit == 0 {
            return Ok(());
        }
        let (count, last) = self.store.failed_logins(user.id).await?;
        let window = chrono::Duration::from_std(self.config.identity.lockout_duration)
            .unwrap_or(chrono::Duration::MAX);
        let locked = count >= limit && last.is_some_and(|at| at + window > Utc::now());
        if locked {
            return Err(Error::unauthenticated(format!(
                "The account is locked for user: {}.",
                user.id
            )));
        }
        Ok(())
    }

    async fn record_failed_login(&self, user: &User) -> Result<()> {
        if self.config.identity.lockout_failure_attempts == 0 {
            return Ok(());
        }
        let (_, last) = self.store.failed_logins(user.id).await?;
        let window = chrono::Duration::from_std(self.config.identity.lockout_duration)
            .unwrap_or(chrono::Duration::MAX);
        let now = Utc::now();
        let restart = last.is_none_or(|at| at + window <= now);
        self.store.record_failed_login(user.id, now, restart).await
    }

    /// Forgets tokens that expired; returns how many.
    pub async fn purge_expired_tokens(&self) -> Result<u64> {
        self.store.purge_tokens(Utc::now()).await
    }
}
