//! Cinder user messages: what a project is told about an asynchronous
//! failure (a volume that could not be placed ends in `error`, and a
//! message says why).

use chrono::{DateTime, Utc};

use crate::ProjectId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMessage {
    pub id: uuid::Uuid,
    pub project_id: ProjectId,
    /// `VOLUME`, `VOLUME_SNAPSHOT`, …
    pub resource_type: String,
    pub resource_uuid: Option<uuid::Uuid>,
    /// Cinder's event id, e.g. `VOLUME_VOLUME_001_003`.
    pub event_id: String,
    /// `ERROR`.
    pub message_level: String,
    pub user_message: String,
    pub request_id: String,
    pub created_at: DateTime<Utc>,
    /// Kept at least until then (Cinder's `guaranteed_until`).
    pub expires_at: DateTime<Utc>,
}
