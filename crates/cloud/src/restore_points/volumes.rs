//! The attached volumes of a restore point, on the file pool.
//!
//! A point covers every disk of the server: its root disk (if it has one; a
//! server booted from a volume has none) and each attached volume, cut at
//! the same instant as the root disk (one QMP `transaction`, with the memory
//! when asked). A volume's cut is the root disk's: its current top becomes
//! the point's layer for that volume (recorded with the volume's id) and the
//! volume goes on in a new top — `volume.location` moves old → new by
//! compare-and-swap, under the garbage collector's read lock until recorded.
//!
//! Reverting gives each volume a **new** top over the point's layer (its
//! location moves from its current top to it); the layer is never written.
//! A revert is refused while the server's attachments differ from the
//! point's (a volume detached or attached since): the point could not give
//! the server back its disks.
//!
//! Each volume of a saga is recorded ([`SagaVolume`]) before anything is
//! made, so that recovery can check the cut ([`Cloud::point_volumes_took`])
//! and move the locations forward or back (both idempotent).

use std::collections::BTreeSet;
use std::path::PathBuf;

use domain::restore_point::{PointDisk, RestorePoint};
use domain::server::Server;
use domain::{Error, Result, ServerId, VolumeId};
use serde::{Deserialize, Serialize};

use crate::Cloud;

/// One volume of a restore-point saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SagaVolume {
    pub volume: VolumeId,
    /// The volume's QEMU node name in the server.
    pub disk_id: String,
    /// The volume's location before the saga (its top then).
    pub old: String,
    /// Its location after the saga (a new top).
    pub new: String,
    /// What the new top stands on: `old` for a create, the point's layer
    /// for a revert.
    pub base: String,
    /// The new top's file.
    pub overlay: PathBuf,
}

impl SagaVolume {
    /// The locations it names (garbage-collection roots while its saga is open).
    pub(super) fn pool_names(&self) -> [String; 3] {
        [self.old.clone(), self.new.clone(), self.base.clone()]
    }
}

impl Cloud {
    /// Refuses (409) what restore points cannot cover: volumes on a pool
    /// other than `file`, internal points of servers with volumes.
    pub(super) async fn check_point_volumes(&self, server: &Server, internal: bool) -> Result<()> {
        if self
            .store
            .attachments_of_server(server.id)
            .await?
            .is_empty()
        {
            return Ok(());
        }
        if self.native_points().is_some() {
            return Err(Error::conflict(format!(
                "Restore points of servers with volumes are available on the file pool only; this server's volumes are on the {} pool.",
                self.pool.kind()
            )));
        }
        if internal {
            return Err(Error::conflict(
                "Internal restore points cover the root disk only; a server with volumes takes external points (with or without memory).",
            ));
        }
        Ok(())
    }

    /// Chooses the new top of every attached volume for point `tag`;
    /// creates nothing.
    pub(super) async fn plan_point_volume_cut(
        &self,
        server: &Server,
        tag: &str,
    ) -> Result<Vec<SagaVolume>> {
        let attached = self.server_volumes(server).await?;
        if attached.is_empty() {
            return Ok(Vec::new());
        }
        let pool = self.volume_pool()?;
        let mut planned = Vec::new();
        for (attachment, volume) in attached {
            let old = volume.location.clone().ok_or_else(|| {
                Error::conflict(format!(
                    "Volume {} has no data yet (it is {}).",
                    volume.id, volume.status
                ))
            })?;
            let (frozen, overlay) = pool.planned_snapshot(&old, tag)?;
            let overlay = overlay
                .ok_or_else(|| Error::conflict("This pool's volumes cannot be layered by QEMU."))?;
            planned.push(SagaVolume {
                volume: volume.id,
                disk_id: attachment.disk_id,
                base: old.clone(),
                old,
                new: frozen.volume,
                overlay,
            });
        }
        Ok(planned)
    }

    /// Chooses a new top over the point's layer for every volume of the
    /// point; creates nothing. The server's attachments must be the point's.
    pub(super) async fn plan_point_volume_revert(
        &self,
        point: &RestorePoint,
    ) -> Result<Vec<SagaVolume>> {
        if point.disks.iter().all(|d| d.volume_id.is_none()) {
            return Ok(Vec::new());
        }
        let pool = self.volume_pool()?;
        let mut planned = Vec::new();
        for disk in &point.disks {
            let Some(volume_id) = disk.volume_id else {
                continue;
            };
            let volume = self.store.volume(volume_id).await?;
            let old = volume
                .location
                .clone()
                .ok_or_else(|| Error::conflict(format!("Volume {} has no data.", volume.id)))?;
            let tag = format!("revert-{}", uuid::Uuid::new_v4().simple());
            let (frozen, overlay) = pool.planned_snapshot(&disk.layer, &tag)?;
            let overlay = overlay
                .ok_or_else(|| Error::conflict("This pool's volumes cannot be layered by QEMU."))?;
            planned.push(SagaVolume {
                volume: volume_id,
                disk_id: disk.disk_id.clone(),
                old,
                new: frozen.volume,
                base: disk.layer.clone(),
                overlay,
            });
        }
        Ok(planned)
    }

    /// 409 unless the server has exactly the volumes (and node names) the
    /// point has.
    pub(super) async fn check_point_attachments(
        &self,
        server: &Server,
        point: &RestorePoint,
    ) -> Result<()> {
        let now: BTreeSet<(VolumeId, String)> = self
            .store
            .attachments_of_server(server.id)
            .await?
            .into_iter()
            .map(|a| (a.volume_id, a.disk_id))
            .collect();
        let then: BTreeSet<(VolumeId, String)> = point
            .disks
            .iter()
            .filter_map(|d| d.volume_id.map(|v| (v, d.disk_id.clone())))
            .collect();
        if now == then {
            return Ok(());
        }
        let list = |s: &BTreeSet<(VolumeId, String)>| {
            if s.is_empty() {
                "none".to_string()
            } else {
                s.iter()
                    .map(|(v, _)| v.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        Err(Error::conflict(format!(
            "Server {} has other volumes attached ({}) than when restore point {} was taken ({}); attach or detach volumes to match before reverting.",
            server.id,
            list(&now),
            point.id,
            list(&then)
        )))
    }

    /// Makes the new tops of a stopped server's volumes (idempotent: a
    /// complete top is kept).
    pub(super) async fn make_point_volume_tops(&self, volumes: &[SagaVolume]) -> Result<()> {
        for v in volumes {
            if !self.pool.overlay_is_valid(&v.new).await.unwrap_or(false) {
                self.pool.create_overlay(&v.base, &v.new).await?;
            }
        }
        Ok(())
    }

    /// A reverted volume keeps the size its record says (a volume extended
    /// since the point stays that big; the point's layer is not changed).
    pub(super) async fn keep_point_volume_sizes(&self, volumes: &[SagaVolume]) -> Result<()> {
        if volumes.is_empty() {
            return Ok(());
        }
        let pool = self.volume_pool()?;
        for v in volumes {
            let want = self.store.volume(v.volume).await?.size * domain::volume::GIB;
            if pool.volume_size(&v.new).await? < want {
                pool.extend_volume(&v.new, want).await?;
            }
        }
        Ok(())
    }

    /// Marks the volumes' frozen layers read-only, as volume snapshots are.
    pub(super) async fn seal_point_volume_layers(&self, volumes: &[SagaVolume]) -> Result<()> {
        if volumes.is_empty() {
            return Ok(());
        }
        let pool = self.volume_pool()?;
        for v in volumes {
            pool.seal_snapshot(&v.base).await?;
        }
        Ok(())
    }

    /// Whether every volume's new top exists: in use by the live QEMU, or
    /// (no QEMU) a complete file.
    pub(super) async fn point_volumes_took(
        &self,
        server: ServerId,
        volumes: &[SagaVolume],
    ) -> bool {
        let name = server.to_string();
        let live = matches!(
            self.hypervisor.status(&name).await,
            Ok(hypervisor::VmStatus::Running | hypervisor::VmStatus::Paused { .. })
        );
        for v in volumes {
            let took = if live {
                self.hypervisor
                    .active_disk_file(&name, &v.disk_id)
                    .await
                    .is_ok_and(|f| f == v.overlay)
            } else {
                self.pool.overlay_is_valid(&v.new).await.unwrap_or(false)
            };
            if !took {
                return false;
            }
        }
        true
    }

    /// Moves every volume to its new top (compare-and-swap; a volume
    /// already there is fine).
    pub(super) async fn move_point_volumes_forward(&self, volumes: &[SagaVolume]) -> Result<()> {
        for v in volumes {
            self.move_point_volume(v.volume, &v.old, &v.new).await?;
        }
        Ok(())
    }

    /// Moves every volume back to where it was (an undone revert).
    pub(super) async fn move_point_volumes_back(&self, volumes: &[SagaVolume]) -> Result<()> {
        for v in volumes {
            self.move_point_volume(v.volume, &v.new, &v.old).await?;
        }
        Ok(())
    }

    async fn move_point_volume(&self, volume: VolumeId, from: &str, to: &str) -> Result<()> {
        let now = self.store.volume(volume).await?;
        if now.location.as_deref() == Some(to) {
            return Ok(());
        }
        self.store.move_volume_location(volume, from, to).await
    }
}

/// The point's disks for a cut: the root disk's layer (if any) and each
/// volume's.
pub(super) fn point_disks(root_layer: Option<&str>, volumes: &[SagaVolume]) -> Vec<PointDisk> {
    root_layer
        .map(|layer| PointDisk {
            disk_id: super::ROOT_DISK_ID.into(),
            layer: layer.to_string(),
            volume_id: None,
        })
        .into_iter()
        .chain(volumes.iter().map(|v| PointDisk {
            disk_id: v.disk_id.clone(),
            layer: v.base.clone(),
            volume_id: Some(v.volume),
        }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(disk: &str) -> SagaVolume {
        SagaVolume {
            volume: VolumeId::new(),
            disk_id: disk.into(),
            old: format!("file:///p/disks/{disk}.qcow2"),
            new: format!("file:///p/disks/{disk}-new.qcow2"),
            base: format!("file:///p/disks/{disk}.qcow2"),
            overlay: PathBuf::from(format!("/p/disks/{disk}-new.qcow2")),
        }
    }

    #[test]
    fn point_disks_when_root_and_volumes_then_root_first_and_volumes_named() {
        let volumes = [volume("vol-a"), volume("vol-b")];

        let disks = point_disks(Some("file:///p/disks/root.qcow2"), &volumes);

        assert_eq!(disks.len(), 3);
        assert_eq!(disks[0].disk_id, "root");
        assert_eq!(disks[0].volume_id, None);
        assert_eq!(disks[1].volume_id, Some(volumes[0].volume));
        assert_eq!(disks[2].layer, volumes[1].base);
    }

    #[test]
    fn point_disks_when_booted_from_volume_then_no_root_disk() {
        let volumes = [volume("vol-a")];

        let disks = point_disks(None, &volumes);

        assert_eq!(disks.len(), 1);
        assert_eq!(disks[0].disk_id, "vol-a");
    }

    #[test]
    fn saga_volume_when_serialized_then_read_back_equal() {
        let v = volume("vol-a");

        let back: SagaVolume = serde_json::from_value(serde_json::to_value(&v).unwrap()).unwrap();

        assert_eq!(back, v);
    }
}
