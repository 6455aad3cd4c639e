//! Snapshots of several volumes of one server at one instant (a "cut").
//!
//! What makes the instant depends on where the volumes live and whether a
//! QEMU has them open:
//!
//! | server | `file` pool | `rbd` pool |
//! |---|---|---|
//! | running or paused | one QMP `transaction` of `blockdev-snapshot-sync`: every volume goes on in a new top at once, no guest pause | one QMP `transaction` of `blockdev-snapshot-internal-sync` (QEMU's rbd driver snapshots each image, all I/O drained at once), no guest pause; protected afterwards. A hypervisor that cannot: vCPUs stopped around the pool's concurrent `rbd snap create`s (one volume: no pause) |
//! | stopped | `qemu-img` per volume: nothing writes | `rbd snap create` per volume: nothing writes |
//!
//! A cut is planned first ([`Cloud::plan_volume_cut`]: names only, no side
//! effect) so that a saga can record it before it runs, then made
//! ([`Cloud::cut_volumes`]), and after a crash checked
//! ([`Cloud::volume_cut_happened`]): a cut is all or nothing — when only part
//! of it exists the saga undoes it rather than finishing it at a later
//! instant. The caller holds the garbage collector's read lock from the plan
//! until the volumes' new locations are recorded (a new top is not yet a
//! root).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use domain::server::Server;
use domain::{Error, Result, VolumeId, VolumeSnapshotId};
use hypervisor::{DiskOverlay, NativeSnapshot, VmStatus};
use serde::{Deserialize, Serialize};
use storage::volumes::FrozenVolume;

use super::hypervisor_error;
use crate::Cloud;

/// One volume of a cut, as recorded in a saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CutVolume {
    pub volume: VolumeId,
    pub snapshot: VolumeSnapshotId,
    /// The volume's QEMU node name in the server.
    pub disk_id: String,
    /// The volume's location before the cut.
    pub old: String,
    /// Where the snapshot's data will be.
    pub frozen: String,
    /// The volume's location after the cut.
    pub new: String,
    /// The new top QEMU creates, on pools where it must (file).
    pub overlay: Option<PathBuf>,
}

/// How a cut went.
#[derive(Debug)]
pub(crate) struct CutMade {
    /// Held until the caller has recorded the volumes' new locations.
    pub _guard: tokio::sync::OwnedMutexGuard<()>,
    /// How long the guest's vCPUs were stopped for it.
    pub guest_pause: Duration,
}

/// The pool's name of a volume snapshot's data.
pub(crate) fn snapshot_name(snapshot: VolumeSnapshotId) -> String {
    format!("snapshot-{snapshot}")
}

impl Cloud {
    /// Chooses the names a cut of `volumes` ((volume, snapshot, disk id,
    /// current location)) will use; creates nothing.
    pub(crate) fn plan_volume_cut(
        &self,
        volumes: Vec<(VolumeId, VolumeSnapshotId, String, String)>,
    ) -> Result<Vec<CutVolume>> {
        let pool = self.volume_pool()?;
        volumes
            .into_iter()
            .map(|(volume, snapshot, disk_id, old)| {
                let (frozen, overlay) = pool.planned_snapshot(&old, &snapshot_name(snapshot))?;
                Ok(CutVolume {
                    volume,
                    snapshot,
                    disk_id,
                    old,
                    frozen: frozen.snapshot,
                    new: frozen.volume,
                    overlay,
                })
            })
            .collect()
    }

    /// Makes the cut: every volume's snapshot at one instant. `Conflict`
    /// when a volume moved since the cut was planned (another snapshot).
    pub(crate) async fn cut_volumes(&self, server: &Server, cut: &[CutVolume]) -> Result<CutMade> {
        let guard = self.cut_lock.clone().lock_owned().await;
        for c in cut {
            let volume = self.store.volume(c.volume).await?;
            if volume.location.as_deref() != Some(c.old.as_str()) {
                return Err(Error::conflict(format!(
                    "Volume {} changed while it was being snapshotted; try again.",
                    c.volume
                )));
            }
        }
        let name = server.id.to_string();
        let live = self.vm_is_live(server).await;
        let qemu_cuts = cut.iter().all(|c| c.overlay.is_some());
        if live && qemu_cuts {
            let disks: Vec<DiskOverlay> = cut
                .iter()
                .filter_map(|c| {
                    c.overlay.as_ref().map(|overlay| DiskOverlay {
                        disk_id: c.disk_id.clone(),
                        overlay: overlay.clone(),
                    })
                })
                .collect();
            let taken = self
                .hypervisor
                .create_restore_point(&name, &disks, None)
                .await
                .map_err(hypervisor_error)?;
            return Ok(CutMade {
                _guard: guard,
                guest_pause: taken.guest_pause,
            });
        }
        if live && cut.len() > 1 {
            if let Some(taken) = self.native_cut(&name, cut).await? {
                return Ok(CutMade {
                    _guard: guard,
                    guest_pause: taken.guest_pause,
                });
            }
        }
        // One volume's snapshot is its own instant: no pause for it.
        let running = live
            && cut.len() > 1
            && matches!(self.hypervisor.status(&name).await, Ok(VmStatus::Running));
        let (from, started) = (std::time::SystemTime::now(), Instant::now());
        if running {
            self.hypervisor
                .pause(&name)
                .await
                .map_err(hypervisor_error)?;
        }
        let stopped = started.elapsed();
        let made = self.snapshot_each(cut).await;
        let snapped = started.elapsed();
        let guest_pause = if running {
            let resumed = self.hypervisor.resume(&name).await;
            let took = started.elapsed();
            resumed.map_err(hypervisor_error)?;
            // The vCPUs' own stop, from QEMU's STOP/RESUME events; the
            // wall-clock span (QMP round trips included) if none was seen.
            let pause = match self.hypervisor.pause_log(&name).await {
                Ok(spans) => hypervisor::paused_within(&spans, from, std::time::SystemTime::now()),
                Err(_) => took,
            };
            tracing::info!(server = %server.id, volumes = cut.len(),
                paused_ms = pause.as_secs_f64() * 1000.0,
                stop_ms = stopped.as_secs_f64() * 1000.0,
                snapshots_ms = (snapped - stopped).as_secs_f64() * 1000.0,
                resume_ms = (took - snapped).as_secs_f64() * 1000.0,
                "guest paused for a multi-volume cut");
            pause
        } else {
            Duration::ZERO
        };
        made?;
        Ok(CutMade {
            _guard: guard,
            guest_pause,
        })
    }

    /// Volumes whose storage QEMU snapshots natively (rbd) cut by QEMU in
    /// one transaction of `blockdev-snapshot-internal-sync`: every image's
    /// I/O drained at one instant, the vCPUs never stopped; protected
    /// when sealed. `None` when this hypervisor cannot (the caller stops
    /// the guest around the pool's snapshots instead).
    async fn native_cut(
        &self,
        name: &str,
        cut: &[CutVolume],
    ) -> Result<Option<hypervisor::PointTaken>> {
        let disks: Vec<NativeSnapshot> = cut
            .iter()
            .map(|c| NativeSnapshot {
                disk_id: c.disk_id.clone(),
                name: snapshot_name(c.snapshot),
            })
            .collect();
        let taken = match self
            .hypervisor
            .create_native_point(name, &disks, None)
            .await
        {
            Ok(taken) => taken,
            Err(e) if e.kind() == hypervisor::ErrorKind::InvalidArgument => return Ok(None),
            Err(e) => return Err(hypervisor_error(e)),
        };
        // Protected when the caller seals the snapshots (off the request's path).
        Ok(Some(taken))
    }

    /// Snapshots every volume through the pool, concurrently (on a paused
    /// or stopped guest, or on a pool whose snapshots work on open volumes).
    async fn snapshot_each(&self, cut: &[CutVolume]) -> Result<()> {
        let pool = self.volume_pool()?;
        let names: Vec<String> = cut.iter().map(|c| snapshot_name(c.snapshot)).collect();
        let takes = cut
            .iter()
            .zip(&names)
            .map(|(c, name)| pool.snapshot_volume(&c.old, name));
        for (c, taken) in cut.iter().zip(futures_util::future::join_all(takes).await) {
            let taken = taken?;
            if taken.snapshot != c.frozen || taken.volume != c.new {
                return Err(Error::internal(format!(
                    "The pool put the snapshot of {c} elsewhere than it planned."
                )));
            }
        }
        Ok(())
    }

    /// After a crash: whether all of the cut exists — false when it never
    /// happened or happened only in part (the caller undoes it).
    pub(crate) async fn volume_cut_happened(
        &self,
        server: &Server,
        cut: &[CutVolume],
    ) -> Result<bool> {
        let pool = self.volume_pool()?;
        let name = server.id.to_string();
        let live = self.vm_is_live(server).await;
        for c in cut {
            let made = match &c.overlay {
                Some(overlay) if live => self
                    .hypervisor
                    .active_disk_file(&name, &c.disk_id)
                    .await
                    .is_ok_and(|f| &f == overlay),
                Some(_) => self.pool.overlay_is_valid(&c.new).await.unwrap_or(false),
                None => pool.snapshot_exists(&c.frozen).await?,
            };
            if !made {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl std::fmt::Display for CutVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "volume {} ({})", self.volume, self.disk_id)
    }
}

/// A snapshot of one attached volume a hypervisor took.
#[derive(Debug)]
pub(crate) struct AttachedCut {
    pub frozen: FrozenVolume,
    /// Held until the caller has recorded the volume's new location.
    pub _made: Option<CutMade>,
}

impl Cloud {
    /// Snapshot `snapshot` of `volume` (now at `old`) when a live QEMU has
    /// it open: a cut of that one volume. `None` when no running server has
    /// it (the pool's own snapshot is right). With `resumed` (the saga
    /// restarts at this step), a cut that already happened is not made
    /// again.
    pub(crate) async fn cut_attached_volume(
        &self,
        volume: VolumeId,
        snapshot: VolumeSnapshotId,
        old: &str,
        resumed: bool,
    ) -> Result<Option<AttachedCut>> {
        let Some(attachment) = self.store.attachment_of_volume(volume).await? else {
            return Ok(None);
        };
        let server = self.store.server(attachment.server_id).await?;
        if !self.vm_is_live(&server).await {
            return Ok(None);
        }
        let cut = self.plan_volume_cut(vec![(
            volume,
            snapshot,
            attachment.disk_id.clone(),
            old.to_string(),
        )])?;
        let made = if resumed && self.volume_cut_happened(&server, &cut).await? {
            None
        } else {
            Some(self.cut_volumes(&server, &cut).await?)
        };
        let c = &cut[0];
        self.volume_pool()?.seal_snapshot(&c.frozen).await?;
        Ok(Some(AttachedCut {
            frozen: FrozenVolume {
                snapshot: c.frozen.clone(),
                volume: c.new.clone(),
            },
            _made: made,
        }))
    }

    /// After a crash or a failure: whether a running server's QEMU cut
    /// `volume` (at `old`) for `snapshot` — it then writes the new top.
    pub(crate) async fn attached_cut_took(
        &self,
        volume: VolumeId,
        snapshot: VolumeSnapshotId,
        old: &str,
    ) -> Result<bool> {
        let Some(attachment) = self.store.attachment_of_volume(volume).await? else {
            return Ok(false);
        };
        let server = self.store.server(attachment.server_id).await?;
        if !self.vm_is_live(&server).await {
            return Ok(false);
        }
        let cut = self.plan_volume_cut(vec![(
            volume,
            snapshot,
            attachment.disk_id.clone(),
            old.to_string(),
        )])?;
        self.volume_cut_happened(&server, &cut).await
    }
}
