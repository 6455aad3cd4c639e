//! Image members: the projects a `shared` image is offered to. The owner
//! adds and removes members; a member project accepts or rejects (only
//! accepted images show up in its image list; all are reachable by id).

use chrono::Utc;
use domain::identity::{Caller, Role};
use domain::image::Visibility;
use domain::{Error, ProjectId, Result};
use store::{ImageMember, MemberStatus};

use crate::Cloud;

impl Cloud {
    pub async fn add_image_member(
        &self,
        caller: &Caller,
        id: &str,
        member: &str,
    ) -> Result<ImageMember> {
        let img = self.image_for_change(caller, id, "share images").await?;
        if img.visibility != Visibility::Shared {
            return Err(Error::forbidden(format!(
                "Image {} is {}; only shared images can have members.",
                img.id,
                img.visibility.as_str()
            )));
        }
        let member: ProjectId = member
            .parse()
            .map_err(|_| Error::invalid(format!("'{member}' is not a project id.")))?;
        if self
            .store
            .members(img.id)
            .await?
            .iter()
            .any(|m| m.member == member)
        {
            return Err(Error::conflict(format!(
                "Project {member} is already a member of image {}.",
                img.id
            )));
        }
        let now = Utc::now();
        let m = ImageMember {
            image_id: img.id,
            member,
            status: MemberStatus::Pending,
            created_at: now,
            updated_at: now,
        };
        self.store.upsert_member(&m).await?;
        Ok(m)
    }

    /// The owner sees every member; a member project sees itself.
    pub async fn image_members(&self, caller: &Caller, id: &str) -> Result<Vec<ImageMember>> {
        let img = self.image(caller, id).await?;
        let all = self.store.members(img.id).await?;
        if caller.can_see_project(img.owner) {
            return Ok(all);
        }
        Ok(all
            .into_iter()
            .filter(|m| Some(m.member) == caller.project_id)
            .collect())
    }

    pub async fn image_member(
        &self,
        caller: &Caller,
        id: &str,
        member: &str,
    ) -> Result<ImageMember> {
        self.image_members(caller, id)
            .await?
            .into_iter()
            .find(|m| m.member.to_string() == member)
            .ok_or_else(|| Error::not_found("image member", member))
    }

    /// A member project accepts or rejects an image offered to it.
    pub async fn set_image_member_status(
        &self,
        caller: &Caller,
        id: &str,
        member: &str,
        status: &str,
    ) -> Result<ImageMember> {
        caller.require(Role::Member, "accept or reject shared images")?;
        let mut m = self.image_member(caller, id, member).await?;
        if caller.project_id != Some(m.member) {
            return Err(Error::forbidden(
                "Only the member project may accept or reject a shared image.",
            ));
        }
        m.status = MemberStatus::parse(status)?;
        m.updated_at = Utc::now();
        self.store.upsert_member(&m).await?;
        Ok(m)
    }

    pub async fn remove_image_member(&self, caller: &Caller, id: &str, member: &str) -> Result<()> {
        let img = self.image_for_change(caller, id, "unshare images").await?;
        let pid: ProjectId = member
            .parse()
            .map_err(|_| Error::not_found("image member", member))?;
        if !self.store.delete_member(img.id, pid).await? {
            return Err(Error::not_found("image member", member));
        }
        Ok(())
    }
}
