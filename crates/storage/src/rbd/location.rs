//! RBD locations, the strings the cloud stores for the data in an RBD pool:
//!
//! ```text
//! rbd://<fsid>/<pool>/<image>/<snap>   an image: its protected snapshot (Glance's format)
//! rbd://<fsid>/<pool>/<image>          a disk: the image itself (a clone)
//! ```
//!
//! The fsid names the cluster, so a location from another cluster is never
//! mistaken for one of ours.

use std::fmt;

use domain::{Error, Result};

const SCHEME: &str = "rbd://";

/// A parsed RBD location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RbdLocation {
    pub fsid: String,
    pub pool: String,
    pub image: String,
    pub snap: Option<String>,
}

impl RbdLocation {
    /// Parses `rbd://fsid/pool/image[/snap]`; anything else is an internal
    /// error (locations are written by Snapstack, never by users).
    pub fn parse(location: &str) -> Result<Self> {
        let bad = || Error::internal(format!("'{location}' is not an RBD location."));
        let rest = location.strip_prefix(SCHEME).ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split('/').collect();
        if !parts.iter().all(|p| is_valid_component(p)) {
            return Err(bad());
        }
        let (fsid, pool, image, snap) = match parts.as_slice() {
            [fsid, pool, image] => (fsid, pool, image, None),
            [fsid, pool, image, snap] => (fsid, pool, image, Some(snap.to_string())),
            _ => return Err(bad()),
        };
        Ok(Self {
            fsid: fsid.to_string(),
            pool: pool.to_string(),
            image: image.to_string(),
            snap,
        })
    }
}

impl fmt::Display for RbdLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}/{}", self.fsid, self.pool, self.image)?;
        match &self.snap {
            Some(snap) => write!(f, "/{snap}"),
            None => Ok(()),
        }
    }
}

/// Pool, image, snapshot names and fsids: letters, digits, `-`, `_`, `.`,
/// not starting with a dot.
pub(crate) fn is_valid_component(part: &str) -> bool {
    !part.is_empty()
        && !part.starts_with('.')
        && part.len() <= 255
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_location_when_parsed_then_round_trips() {
        let text = "rbd://0c3e-11/images/6f1d-22/snap";

        let location = RbdLocation::parse(text).unwrap();

        assert_eq!(location.pool, "images");
        assert_eq!(location.image, "6f1d-22");
        assert_eq!(location.snap.as_deref(), Some("snap"));
        assert_eq!(location.to_string(), text);
    }

    #[test]
    fn disk_location_when_parsed_then_has_no_snapshot() {
        let location = RbdLocation::parse("rbd://f/vms/server-1").unwrap();

        assert_eq!(location.snap, None);
        assert_eq!(location.to_string(), "rbd://f/vms/server-1");
    }

    #[test]
    fn location_when_path_tricks_or_other_scheme_then_internal_error() {
        for text in [
            "file:///etc/passwd",
            "rbd://f/images/../x",
            "rbd://f/images",
            "rbd://f/images/a/b/c",
            "rbd://f//a",
            "rbd://f/images/a@snap",
        ] {
            let err = RbdLocation::parse(text).unwrap_err();

            assert_eq!(err.kind(), domain::ErrorKind::Internal, "{text}");
        }
    }
}
