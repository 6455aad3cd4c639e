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

pub use error::{Error, ErrorKind, Result};
pub use ids::{
    AttachmentId, FloatingIpId, ImageId, NetworkId, PortId, ProjectId, RestorePointId, RoleId,
    RouterId, SecurityGroupId, SecurityGroupRuleId, ServerId, SubnetId, UserId, VolumeId,
    VolumeSnapshotId,
};
