//! Typed identifiers. Every resource has its own id type so that an image id
//! can never be passed where a project id is expected.
//!
//! Identity ids are shown as 32 hex digits (as Keystone does), everything else
//! as a hyphenated UUID (as Glance, Nova and Cinder do). Both spellings parse.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $what:literal, $simple:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }

            pub fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub fn uuid(&self) -> Uuid {
                self.0
            }

            /// What this id names, for error messages ("image", "project").
            pub const WHAT: &'static str = $what;
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                if $simple {
                    write!(f, "{}", self.0.simple())
                } else {
                    write!(f, "{}", self.0.hyphenated())
                }
            }
        }

        /// From its text (either spelling), as it is serialized.
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl FromStr for $name {
            type Err = crate::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::try_parse(s)
                    .map(Self)
                    .map_err(|_| crate::Error::not_found($what, s))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}

typed_id!(
    /// A project (tenant): the unit of ownership and isolation.
    ProjectId, "project", true
);
typed_id!(
    /// A user of the identity service.
    UserId, "user", true
);
typed_id!(
    /// A role (admin, member, reader).
    RoleId, "role", true
);
typed_id!(
    /// A Glance image.
    ImageId, "image", false
);
typed_id!(
    /// A Nova server.
    ServerId, "server", false
);
typed_id!(
    /// A Cinder volume.
    VolumeId, "volume", false
);
typed_id!(
    /// A Cinder volume snapshot.
    VolumeSnapshotId, "snapshot", false
);
typed_id!(
    /// A restore point of a server (libvirt-style snapshot).
    RestorePointId, "restore point", false
);
typed_id!(
    /// One attachment of a volume to a server.
    AttachmentId, "attachment", false
);
typed_id!(
    /// A volume type (Cinder): a name for a set of extra specs.
    VolumeTypeId, "volume type", false
);
typed_id!(
    /// A volume transfer request (Cinder).
    TransferId, "volume transfer", false
);

typed_id!(
    /// A Neutron network.
    NetworkId, "network", false
);
typed_id!(
    /// A subnet of a network.
    SubnetId, "subnet", false
);
typed_id!(
    /// A port: a place on a network (a server's NIC, a DHCP server, a router interface).
    PortId, "port", false
);
typed_id!(
    /// A security group.
    SecurityGroupId, "security group", false
);
typed_id!(
    /// A rule of a security group.
    SecurityGroupRuleId, "security group rule", false
);
typed_id!(
    /// A router.
    RouterId, "router", false
);
typed_id!(
    /// A floating IP.
    FloatingIpId, "floating IP", false
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_id_when_displayed_then_keystone_hex() {
        let id = ProjectId::new();

        let shown = id.to_string();

        assert_eq!(shown.len(), 32);
        assert_eq!(shown.parse::<ProjectId>().unwrap(), id);
    }

    #[test]
    fn image_id_when_malformed_then_not_found() {
        let parsed = "not-a-uuid".parse::<ImageId>();

        assert_eq!(parsed.unwrap_err().kind(), crate::ErrorKind::NotFound);
    }
}
