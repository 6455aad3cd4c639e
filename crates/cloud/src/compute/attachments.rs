//! Volumes attached to servers: what a server's disks are, and (below) the
//! attach and detach of a volume.
//!
//! A server's disks, in the order QEMU gets them: its image-backed root disk
//! (node `root`) if it has one, then every attachment's volume — the root
//! volume (boot_index 0) first, then by boot index, then by device — read
//! from the volume's current location each time the server starts.

use domain::server::Server;
use domain::volume::{Volume, VolumeAttachment};
use domain::{Error, Result};
use hypervisor::{DiskFormat, DiskSpec};

use crate::Cloud;

impl Cloud {
    /// A server's attachments with their volumes, root volume first.
    pub(crate) async fn server_volumes(
        &self,
        server: &Server,
    ) -> Result<Vec<(VolumeAttachment, Volume)>> {
        let mut out = Vec::new();
        for attachment in self.store.attachments_of_server(server.id).await? {
            let volume = self.store.volume(attachment.volume_id).await?;
            out.push((attachment, volume));
        }
        Ok(out)
    }

    /// The disk QEMU gets for an attached volume (node name: the
    /// attachment's `disk_id`).
    pub(crate) fn volume_disk_spec(
        &self,
        attachment: &VolumeAttachment,
        volume: &Volume,
    ) -> Result<DiskSpec> {
        let location = volume.location.as_deref().ok_or_else(|| {
            Error::conflict(format!(
                "Volume {} has no data yet (it is {}).",
                volume.id, volume.status
            ))
        })?;
        let source = self.volume_pool()?.volume_source(location)?;
        Ok(disk_spec(&attachment.disk_id, source))
    }
}

/// A pool's disk source as the hypervisor's disk `id`.
pub(crate) fn disk_spec(id: &str, source: storage::DiskSource) -> DiskSpec {
    let (source, format) = match source {
        storage::DiskSource::File { path, format } => (
            hypervisor::DiskSource::File(path),
            if format == "raw" {
                DiskFormat::Raw
            } else {
                DiskFormat::Qcow2
            },
        ),
        storage::DiskSource::Rbd {
            pool,
            image,
            conf,
            user,
        } => (
            hypervisor::DiskSource::Rbd {
                pool,
                image,
                snapshot: None,
                conf: Some(conf),
                user: Some(user),
            },
            DiskFormat::Raw,
        ),
    };
    DiskSpec {
        id: id.to_string(),
        source,
        format,
        read_only: false,
    }
}
