//! Identity: projects, users, roles and the authenticated caller.
//!
//! Roles imply each other as Keystone's default roles do:
//! `admin ⇒ member ⇒ reader`. A caller acts within one project (the scope of
//! its token); `admin` is also cloud-wide (it sees every project's resources).

use chrono::{DateTime, Utc};

use crate::{Error, ProjectId, Result, RoleId, UserId};

/// The one identity domain Snapstack has, as Keystone's `default`.
pub const DEFAULT_DOMAIN_ID: &str = "default";
pub const DEFAULT_DOMAIN_NAME: &str = "Default";

/// Names are at most this long (Keystone and Glance both use 255).
pub const MAX_NAME_LEN: usize = 255;

/// The three roles, from most to least powerful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Reader,
    Member,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Member, Role::Reader];

    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Reader => "reader",
        }
    }

    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }

    /// This role and every role it implies (`admin` → admin, member, reader).
    pub fn implied(self) -> impl Iterator<Item = Role> {
        Role::ALL.into_iter().filter(move |r| *r <= self)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub id: ProjectId,
    pub name: String,
    pub description: String,
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub email: Option<String>,
    pub description: String,
    pub enabled: bool,
    pub default_project_id: Option<ProjectId>,
    /// Attributes Keystone does not know, kept and shown as given (its `extra`).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRecord {
    pub id: RoleId,
    pub role: Role,
}

/// Who is calling: the user, the project its token is scoped to, and the
/// roles it holds there (already expanded through implication).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: UserId,
    pub user_name: String,
    pub project_id: Option<ProjectId>,
    pub project_name: Option<String>,
    pub roles: Vec<Role>,
    pub expires_at: DateTime<Utc>,
    /// The token came from an application credential that is restricted:
    /// it may not make or delete application credentials.
    pub restricted_app_credential: bool,
}

impl Caller {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.iter().any(|r| *r >= role)
    }

    pub fn is_admin(&self) -> bool {
        self.has_role(Role::Admin)
    }

    /// The project this caller acts in; unscoped tokens may not use services.
    pub fn project(&self) -> Result<ProjectId> {
        self.project_id
            .ok_or_else(|| Error::unauthenticated("The token is not scoped to a project."))
    }

    /// Refuses (403) unless the caller holds at least `role`.
    pub fn require(&self, role: Role, action: &str) -> Result<()> {
        if self.has_role(role) {
            Ok(())
        } else {
            Err(Error::forbidden(format!(
                "You are not authorized to {action}: the {} role is required.",
                role.name()
            )))
        }
    }

    /// Whether the caller may see a resource owned by `owner`
    /// (its own project's, or any if admin).
    pub fn can_see_project(&self, owner: ProjectId) -> bool {
        self.is_admin() || self.project_id == Some(owner)
    }
}

/// Checks a user, project or image name.
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    if name.chars().count() > MAX_NAME_LEN {
        return Err(Error::invalid(format!(
            "The {what} name is longer than {MAX_NAME_LEN} characters."
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(roles: Vec<Role>) -> Caller {
        Caller {
            user_id: UserId::new(),
            user_name: "u".into(),
            project_id: Some(ProjectId::new()),
            project_name: Some("p".into()),
            roles,
            expires_at: Utc::now(),
            restricted_app_credential: false,
        }
    }

    #[test]
    fn admin_when_checked_for_member_then_allowed() {
        let admin = caller(vec![Role::Admin]);

        assert!(admin.require(Role::Member, "create an image").is_ok());
    }

    #[test]
    fn reader_when_checked_for_member_then_forbidden() {
        let reader = caller(vec![Role::Reader]);

        let err = reader.require(Role::Member, "create an image").unwrap_err();

        assert_eq!(err.kind(), crate::ErrorKind::Forbidden);
    }

    #[test]
    fn admin_role_when_expanded_then_implies_member_and_reader() {
        let implied: Vec<Role> = Role::Admin.implied().collect();

        assert_eq!(implied, vec![Role::Admin, Role::Member, Role::Reader]);
    }

    #[test]
    fn member_when_looking_at_other_project_then_not_visible() {
        let member = caller(vec![Role::Member]);

        assert!(!member.can_see_project(ProjectId::new()));
    }
}
