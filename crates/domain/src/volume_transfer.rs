//! Volume transfers (Cinder): a volume offered by its project to whichever
//! project presents the transfer's id and auth key. The key is shown once,
//! when the transfer is made; only a salted hash of it is kept.

use chrono::{DateTime, Utc};

use crate::{ProjectId, TransferId, VolumeId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeTransfer {
    pub id: TransferId,
    pub volume_id: VolumeId,
    /// The project that offers the volume.
    pub project_id: ProjectId,
    pub name: Option<String>,
    pub salt: String,
    /// Hex SHA-256 of salt + auth key.
    pub key_hash: String,
    /// The volume's snapshots stay behind (3.55's `no_snapshots`): then a
    /// volume with snapshots cannot be transferred.
    pub no_snapshots: bool,
    pub created_at: DateTime<Utc>,
}
