//! Application credentials (Keystone's): a user hands a program a secret
//! that stands for it on one project, with all or some of its roles there,
//! until the credential expires or is deleted (its tokens die with it).
//!
//! A token from a restricted credential (the default) cannot create or
//! delete application credentials. The secret is shown once and kept only
//! as an Argon2 hash.

use chrono::{DateTime, Utc};
use domain::identity::{Caller, Role};
use domain::{Error, Result, UserId};
use store::AppCredentialRecord;

use super::{denied, new_secret, TokenInfo, UserRef, AUTH_FAILED};
use crate::Cloud;

/// What a create request carries.
#[derive(Debug, Clone, Default)]
pub struct NewAppCredential {
    pub name: String,
    pub description: Option<String>,
    pub secret: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Role ids or names; empty: every role the caller has on the project.
    pub roles: Vec<String>,
    pub unrestricted: bool,
}

/// `POST /v3/auth/tokens` with the application_credential method.
#[derive(Debug, Clone)]
pub enum AppCredentialAuth {
    Id {
        id: String,
        secret: String,
    },
    Name {
        name: String,
        user: UserRef,
        secret: String,
    },
}

impl Cloud {
    fn own_credentials(caller: &Caller, user: &str, action: &str) -> Result<UserId> {
        let uid: UserId = user.parse().map_err(|_| Error::not_found("user", user))?;
        if uid != caller.user_id {
            return Err(denied(action));
        }
        Ok(uid)
    }

    /// Creates a credential for the caller's project; returns it and its
    /// secret (shown only now).
    pub async fn create_app_credential(
        &self,
        caller: &Caller,
        user: &str,
        new: NewAppCredential,
    ) -> Result<(AppCredentialRecord, String)> {
        let uid = Self::own_credentials(caller, user, "create_application_credential")?;
        if caller.restricted_app_credential {
            return Err(Error::forbidden(
                "Using method 'application_credential' is not allowed for managing additional application credentials.",
            ));
        }
        let project = caller.project()?;
        domain::identity::validate_name("application credential", &new.name)?;
        if new.name.is_empty() {
            return Err(Error::invalid("An application credential needs a name."));
        }
        if new.expires_at.is_some_and(|at| at <= Utc::now()) {
            return Err(Error::invalid(
                "The expiration date of an application credential must be in the future.",
            ));
        }
        let assigned = self.store.roles_on(uid, project).await?;
        let held: Vec<Role> = assigned.iter().flat_map(|r| r.implied()).collect();
        let roles = if new.roles.is_empty() {
            assigned
        } else {
            let records = self.store.roles().await?;
            let mut roles = Vec::new();
            for wanted in &new.roles {
                let role = records
                    .iter()
                    .find(|r| r.id.to_string() == *wanted || r.role.name() == wanted)
                    .map(|r| r.role)
                    .filter(|r| held.contains(r))
                    .ok_or_else(|| {
                        Error::not_found(
                            "role assignment",
                            format!("{wanted} of user {uid} on project {project}"),
                        )
                    })?;
                roles.push(role);
            }
            roles
        };
        if self
            .store
            .app_credential_by_name(uid, &new.name)
            .await?
            .is_some()
        {
            return Err(Error::conflict(format!(
                "Conflict occurred attempting to store application_credential - Duplicate name, {}.",
                new.name
            )));
        }
        let secret = new
            .secret
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| new_secret(48));
        let record = AppCredentialRecord {
            id: uuid::Uuid::new_v4().simple().to_string(),
            user_id: uid,
            project_id: project,
            name: new.name,
            description: new.description,
            secret_hash: self.passwords.hash(secret.clone()).await?,
            roles,
            unrestricted: new.unrestricted,
            expires_at: new.expires_at,
            created_at: Utc::now(),
        };
        self.store.insert_app_credential(&record).await?;
        Ok((record, secret))
    }

    pub async fn app_credentials(
        &self,
        caller: &Caller,
        user: &str,
        name: Option<&str>,
    ) -> Result<Vec<AppCredentialRecord>> {
        let uid = if caller.is_admin() {
            user.parse().map_err(|_| Error::not_found("user", user))?
        } else {
            Self::own_credentials(caller, user, "list_application_credentials")?
        };
        let all = self.store.app_credentials(uid).await?;
        Ok(all
            .into_iter()
            .filter(|c| name.is_none_or(|n| c.name == n))
            .collect())
    }

    pub async fn app_credential(
        &self,
        caller: &Caller,
        user: &str,
        id: &str,
    ) -> Result<AppCredentialRecord> {
        let credential = self.store.app_credential(id).await?;
        let owner_ok = credential.user_id.to_string() == user;
        if !owner_ok || (!caller.is_admin() && credential.user_id != caller.user_id) {
            return Err(Error::not_found("application credential", id));
        }
        Ok(credential)
    }

    pub async fn delete_app_credential(&self, caller: &Caller, user: &str, id: &str) -> Result<()> {
        let credential = self.app_credential(caller, user, id).await?;
        if caller.restricted_app_credential {
            return Err(Error::forbidden(
                "Using method 'application_credential' is not allowed for managing additional application credentials.",
            ));
        }
        self.store.delete_app_credential(&credential.id).await
    }

    /// Checks a credential's secret and issues a token scoped to its
    /// project with its roles; 401 for anything wrong (unknown, expired,
    /// wrong secret, user disabled, role gone).
    pub async fn authenticate_app_credential(&self, auth: AppCredentialAuth) -> Result<TokenInfo> {
        let (found, secret) = match auth {
            AppCredentialAuth::Id { id, secret } => {
                (self.store.app_credential(&id).await.ok(), secret)
            }
            AppCredentialAuth::Name { name, user, secret } => {
                let found = match self.resolve_user(&user).await? {
                    Some((u, _)) => self.store.app_credential_by_name(u.id, &name).await?,
                    None => None,
                };
                (found, secret)
            }
        };
        let hash = found.as_ref().map(|c| c.secret_hash.clone());
        let matches = self.passwords.verify(secret, hash).await?;
        let credential = found
            .filter(|_| matches)
            .ok_or_else(|| Error::unauthenticated(AUTH_FAILED))?;
        if credential.expires_at.is_some_and(|at| at <= Utc::now()) {
            return Err(Error::unauthenticated(
                "The application credential has expired.",
            ));
        }
        let user = self.store.user(credential.user_id).await?;
        if !user.enabled {
            return Err(Error::unauthenticated(AUTH_FAILED));
        }
        let info = self
            .issue_token(
                user.id,
                Some(credential.project_id),
                Some(&credential),
                false,
            )
            .await?;
        if info.caller.roles.is_empty() {
            return Err(Error::unauthenticated(
                "The application credential's user no longer has its roles on the project.",
            ));
        }
        Ok(info)
    }
}
