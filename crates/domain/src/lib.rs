//! The Snapstack domain: typed ids, the resources a user sees (projects, users,
//! images, …), their states and legal transitions, and the one error type every
//! layer above speaks. Nothing here does I/O.

pub mod error;
pub mod identity;
pub mod ids;
pub mod image;
pub mod keypair;
pub mod network;
pub mod restore_point;
pub mod server;
pub mod volume;
pub mod volume_message;
pub mod volume_transfer;
pub mod volume_type;

pub use error::{Error, ErrorKind, Result};
pub use ids::{
    AttachmentId, FloatingIpId, ImageId, NetworkId, PortId, ProjectId, RestorePointId, RoleId,
    RouterId, SecurityGroupId, SecurityGroupRuleId, ServerId, SubnetId, TransferId, UserId,
    VolumeId, VolumeSnapshotId, VolumeTypeId,
};
