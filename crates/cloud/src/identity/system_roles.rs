//! Role assignments on the system scope, under Keystone's default policies
//! (`identity:create_system_grant_for_user` and friends: admin only; a user
//! may list its own). Snapstack issues project-scoped tokens only, so a system
//! role grants nothing yet: it is recorded, listed, checked and removed.

use domain::identity::{Caller, RoleRecord};
use domain::{Error, Result, RoleId, UserId};

use super::denied;
use crate::Cloud;

impl Cloud {
    /// Checks that the user and role exist; returns them.
    async fn system_grant_ids(&self, user: &str, role: &str) -> Result<(UserId, RoleRecord)> {
        let uid: UserId = user.parse().map_err(|_| Error::not_found("user", user))?;
        let rid: RoleId = role.parse().map_err(|_| Error::not_found("role", role))?;
        self.store.user(uid).await?;
        let record = self
            .store
            .roles()
            .await?
            .into_iter()
            .find(|r| r.id == rid)
            .ok_or_else(|| Error::not_found("role", role))?;
        Ok((uid, record))
    }

    pub async fn assign_system_role(&self, caller: &Caller, user: &str, role: &str) -> Result<()> {
        if !caller.is_admin() {
            return Err(denied("create_system_grant_for_user"));
        }
        let (u, r) = self.system_grant_ids(user, role).await?;
        self.store.assign_system_role(u, r.id).await
    }

    pub async fn unassign_system_role(
        &self,
        caller: &Caller,
        user: &str,
        role: &str,
    ) -> Result<()> {
        if !caller.is_admin() {
            return Err(denied("revoke_system_grant_for_user"));
        }
        let (u, r) = self.system_grant_ids(user, role).await?;
        if !self.store.unassign_system_role(u, r.id).await? {
            return Err(Error::not_found(
                "role assignment",
                format!("{role} of user {user} on the system"),
            ));
        }
        Ok(())
    }

    /// Whether `user` holds `role` on the system: the admin's question only.
    pub async fn has_system_role(&self, caller: &Caller, user: &str, role: &str) -> Result<bool> {
        if !caller.is_admin() {
            return Err(denied("check_system_grant_for_user"));
        }
        let (u, r) = self.system_grant_ids(user, role).await?;
        Ok(self.store.system_roles(u).await?.contains(&r.id))
    }

    /// The roles a user holds on the system: an admin's question, or the user's own.
    pub async fn system_roles(&self, caller: &Caller, user: &str) -> Result<Vec<RoleRecord>> {
        let uid: UserId = user.parse().map_err(|_| Error::not_found("user", user))?;
        if !caller.is_admin() && caller.user_id != uid {
            return Err(denied("list_system_grants_for_user"));
        }
        self.store.user(uid).await?;
        let held = self.store.system_roles(uid).await?;
        Ok(self
            .store
            .roles()
            .await?
            .into_iter()
            .filter(|r| held.contains(&r.id))
            .collect())
    }
}
