//! Cinder user messages (`/messages`, 3.3+): recorded when an asynchronous
//! volume operation fails for a reason the project can act on, readable
//! and deletable by the project (admins: any), kept 30 days.

use chrono::{Duration, Utc};
use domain::identity::{Caller, Role};
use domain::volume::Volume;
use domain::volume_message::VolumeMessage;
use domain::{Error, Result};

use crate::Cloud;

/// How long a message is kept at least (Cinder's default).
const MESSAGE_TTL_DAYS: i64 = 30;

impl Cloud {
    /// Records a message about `volume`; a failure to record is logged
    /// (the operation's outcome stands either way).
    pub(crate) async fn record_volume_message(&self, volume: &Volume, event_id: &str, text: &str) {
        let now = Utc::now();
        let message = VolumeMessage {
            id: uuid::Uuid::new_v4(),
            project_id: volume.project_id,
            resource_type: "VOLUME".into(),
            resource_uuid: Some(volume.id.uuid()),
            event_id: event_id.into(),
            message_level: "ERROR".into(),
            user_message: text.into(),
            request_id: format!("req-{}", uuid::Uuid::new_v4()),
            created_at: now,
            expires_at: now + Duration::days(MESSAGE_TTL_DAYS),
        };
        if let Err(e) = self.store.insert_volume_message(&message).await {
            tracing::warn!(volume = %volume.id, error = %e, "cannot record a user message");
        }
    }

    /// The messages of the caller's project (all projects: an admin asking).
    pub async fn volume_messages(&self, caller: &Caller, all: bool) -> Result<Vec<VolumeMessage>> {
        caller.require(Role::Reader, "list messages")?;
        let project = if all && caller.is_admin() {
            None
        } else {
            Some(caller.project()?)
        };
        let now = Utc::now();
        Ok(self
            .store
            .volume_messages(project)
            .await?
            .into_iter()
            .filter(|m| m.expires_at > now)
            .collect())
    }

    pub async fn volume_message(&self, caller: &Caller, id: &str) -> Result<VolumeMessage> {
        caller.require(Role::Reader, "read messages")?;
        let uuid = uuid::Uuid::parse_str(id).map_err(|_| Error::not_found("Message", id))?;
        let m = self.store.volume_message(uuid).await?;
        if !caller.can_see_project(m.project_id) {
            return Err(Error::not_found("Message", id));
        }
        Ok(m)
    }

    pub async fn delete_volume_message(&self, caller: &Caller, id: &str) -> Result<()> {
        let m = self.volume_message(caller, id).await?;
        caller.require(Role::Member, "delete messages")?;
        self.store.delete_volume_message(m.id).await
    }
}
