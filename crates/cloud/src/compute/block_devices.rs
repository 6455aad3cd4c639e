//! Block device mappings at server create (Nova's `block_device_mapping_v2`):
//! boot from a volume, and volumes attached from the first boot.
//!
//! ```text
//!  request:  plan (pure checks: one root, boot indexes 0..n, devices)
//!            ─▶ resolve (every volume, snapshot, image visible and usable)
//!            ─▶ existing volumes reserved (CAS available → reserved; undone on failure)
//!            ─▶ server recorded building ─▶ new volumes created (O(1) sagas, `creating`)
//!            ─▶ one attachment row per volume (root volume: boot_index 0, /dev/vda)
//!  build:    wait until every volume is made ─▶ reserved → attaching
//!            ─▶ (image root: root disk) ─▶ QEMU with all disks ─▶ attaching → in-use
//! ```
//! A build that fails leaves the volumes attached to the server in `error`;
//! deleting it releases them (and deletes those with `delete_on_termination`).
//! A server booted from a volume has no image (`image` is `""` in its view)
//! and no root disk of its own.

use std::time::Duration;

use chrono::Utc;
use domain::identity::Caller;
use domain::image::ImageStatus;
use domain::server::Server;
use domain::volume::{self, VolumeAttachment, VolumeStatus, GIB};
use domain::{AttachmentId, Error, ErrorKind, Result, VolumeId};

use crate::volumes::NewVolume;
use crate::Cloud;

/// How long a build waits for the volumes it creates.
const VOLUME_WAIT: Duration = Duration::from_secs(600);
const POLL: Duration = Duration::from_millis(200);

/// One `block_device_mapping_v2` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlockDevice {
    /// `image`, `volume`, `snapshot` or `blank`.
    pub source_type: String,
    /// `local` or `volume`.
    pub destination_type: String,
    pub uuid: Option<String>,
    /// `None` (or negative): not bootable.
    pub boot_index: Option<i64>,
    /// GiB.
    pub volume_size: Option<u64>,
    pub delete_on_termination: bool,
    pub device_name: Option<String>,
}

impl BlockDevice {
    fn is_volume(&self) -> bool {
        self.destination_type == "volume"
    }
}

/// What a volume of the plan comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Volume(String),
    Snapshot(String),
    Image(String),
    Blank,
}

/// One volume the server gets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Planned {
    source: Source,
    size: Option<u64>,
    boot_index: Option<u32>,
    device: String,
    delete_on_termination: bool,
}

/// The checked mapping: the image the root disk is made from (if the
/// server boots from an image) and the volumes, root volume first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    image_root: Option<String>,
    volumes: Vec<Planned>,
}

fn bad(why: &str) -> Error {
    Error::invalid(format!("Block Device Mapping is Invalid: {why}"))
}

const BAD_BOOT: &str =
    "Boot sequence for the instance and image/block device mapping combination is not valid.";

/// Checks a request's mapping without looking anything up.
pub(crate) fn plan(image_ref: &str, devices: &[BlockDevice]) -> Result<Plan> {
    let mut image_root = (!image_ref.is_empty()).then(|| image_ref.to_string());
    let mut local_root = false;
    let mut volumes = Vec::new();
    for d in devices {
        let boot_index = match d.boot_index {
            Some(i) if i >= 0 => Some(u32::try_from(i).map_err(|_| bad(BAD_BOOT))?),
            _ => None,
        };
        match (d.source_type.as_str(), d.is_volume()) {
            ("image", false) => {
                if boot_index != Some(0) {
                    return Err(bad(
                        "an image can only be mapped to a local disk as the root (boot_index 0).",
                    ));
                }
                let uuid = d
                    .uuid
                    .clone()
                    .ok_or_else(|| bad("the image mapping needs a uuid."))?;
                match &image_root {
                    Some(image) if *image != uuid => {
                        return Err(bad("the local root image differs from imageRef."))
                    }
                    _ => image_root = Some(uuid),
                }
                local_root = true;
            }
            (_, false) if d.destination_type == "local" => {
                return Err(bad(
                    "local disks other than the image root (ephemeral, swap) are not supported.",
                ))
            }
            (kind, true) => {
                let uuid = || {
                    d.uuid
                        .clone()
                        .filter(|u| !u.is_empty())
                        .ok_or_else(|| bad(&format!("a {kind} mapping needs a uuid.")))
                };
                let source = match kind {
                    "volume" => Source::Volume(uuid()?),
                    "snapshot" => Source::Snapshot(uuid()?),
                    "image" => Source::Image(uuid()?),
                    "blank" => Source::Blank,
                    other => return Err(bad(&format!("unknown source_type '{other}'."))),
                };
                if source == Source::Blank && d.volume_size.is_none() {
                    return Err(bad("a blank volume needs a volume_size."));
                }
                if d.volume_size == Some(0) {
                    return Err(bad("volume_size must be at least 1 (GiB)."));
                }
                volumes.push(Planned {
                    source,
                    size: d.volume_size,
                    boot_index,
                    device: match d.device_name.as_deref().filter(|n| !n.is_empty()) {
                        Some(name) => volume::normalize_device(name)?,
                        None => String::new(),
                    },
                    delete_on_termination: d.delete_on_termination,
                });
            }
            (_, false) => {
                return Err(bad(&format!(
                    "unknown destination_type '{}'.",
                    d.destination_type
                )))
            }
        }
    }
    let volume_root = volumes.iter().any(|v| v.boot_index == Some(0));
    if volume_root && local_root {
        return Err(bad(BAD_BOOT));
    }
    if volume_root {
        // OSC sends imageRef "" with --volume; an image given beside a root
        // volume is ignored, as Nova does.
        image_root = None;
    }
    if image_root.is_none() && !volume_root {
        return Err(bad(BAD_BOOT));
    }
    let mut indexes: Vec<u32> = volumes.iter().filter_map(|v| v.boot_index).collect();
    if image_root.is_some() {
        indexes.push(0);
    }
    indexes.sort_unstable();
    if indexes.iter().enumerate().any(|(i, b)| *b as usize != i) {
        return Err(bad(BAD_BOOT));
    }
    // Root first, then by boot index, then as given.
    volumes.sort_by_key(|v| v.boot_index.unwrap_or(u32::MAX));
    let mut used: Vec<String> = volumes
        .iter()
        .map(|v| v.device.clone())
        .filter(|d| !d.is_empty())
        .collect();
    let mut seen = used.clone();
    seen.sort();
    seen.dedup();
    if seen.len() != used.len() {
        return Err(bad("a device name is used twice."));
    }
    for (i, v) in volumes.iter_mut().enumerate() {
        if v.device.is_empty() {
            v.device = if i == 0 && volume_root && !used.iter().any(|u| u == "/dev/vda") {
                "/dev/vda".to_string()
            } else {
                volume::next_device(used.iter().map(String::as_str), 1)?
            };
            used.push(v.device.clone());
        }
    }
    if image_root.is_some() && used.iter().any(|u| u == "/dev/vda") {
        return Err(bad("/dev/vda is the image root disk."));
    }
    Ok(Plan {
        image_root,
        volumes,
    })
}

impl Plan {
    /// The image the root disk is made from, if the server boots from one.
    pub(crate) fn image_root(&self) -> Option<&str> {
        self.image_root.as_deref()
    }

    pub(crate) fn has_volumes(&self) -> bool {
        !self.volumes.is_empty()
    }
}

/// The plan's volumes once resolved: existing ones reserved for the server.
pub(crate) struct Claimed {
    volumes: Vec<(Planned, Option<VolumeId>)>,
}

impl Claimed {
    /// The existing volumes reserved.
    pub(crate) fn reserved(&self) -> Vec<VolumeId> {
        self.volumes.iter().filter_map(|(_, id)| *id).collect()
    }
}

impl Cloud {
    /// Checks every source the plan names and reserves the existing
    /// volumes (undone if any check fails): 400 for anything unusable.
    pub(crate) async fn claim_block_devices(
        &self,
        caller: &Caller,
        plan: &Plan,
    ) -> Result<Claimed> {
        if plan.has_volumes() {
            self.volume_pool()?;
        }
        let mut reserved: Vec<VolumeId> = Vec::new();
        let result = self.resolve_planned(caller, plan, &mut reserved).await;
        if result.is_err() {
            self.unreserve(&reserved).await;
        }
        result
    }

    async fn resolve_planned(
        &self,
        caller: &Caller,
        plan: &Plan,
        reserved: &mut Vec<VolumeId>,
    ) -> Result<Claimed> {
        let as_bad = |what: &str, id: &str| {
            let what = what.to_string();
            let id = id.to_string();
            move |e: Error| match e.kind() {
                ErrorKind::NotFound => bad(&format!("failed to get {what} {id}.")),
                _ => e,
            }
        };
        let mut out = Vec::new();
        for planned in &plan.volumes {
            let existing = match &planned.source {
                Source::Volume(id) => {
                    let volume = self
                        .volume(caller, id)
                        .await
                        .map_err(as_bad("volume", id))?;
                    if volume.status != VolumeStatus::Available {
                        return Err(Error::invalid(format!(
                            "Invalid volume: volume {} status must be 'available'. Currently in '{}'",
                            volume.id, volume.status
                        )));
                    }
                    self.store
                        .set_volume_status(
                            volume.id,
                            VolumeStatus::Available,
                            VolumeStatus::Reserved,
                            None,
                        )
                        .await
                        .map_err(|_| {
                            Error::invalid(format!(
                                "Invalid volume: volume {} is no longer available.",
                                volume.id
                            ))
                        })?;
                    reserved.push(volume.id);
                    Some(volume.id)
                }
                Source::Snapshot(id) => {
                    self.resolve_volume_source(caller, &new_volume(planned, None))
                        .await
                        .map_err(as_bad("snapshot", id))?;
                    None
                }
                Source::Image(id) => {
                    let size = self.image_volume_size(caller, id, planned.size).await?;
                    self.resolve_volume_source(caller, &new_volume(planned, Some(size)))
                        .await
                        .map_err(as_bad("image", id))?;
                    None
                }
                Source::Blank => {
                    volume::validate_size(planned.size.unwrap_or(0))?;
                    None
                }
            };
            out.push((planned.clone(), existing));
        }
        Ok(Claimed { volumes: out })
    }

    /// The size of a volume made from an image: the one asked for, else
    /// what the image needs (its virtual size, its min_disk, 1 GiB).
    async fn image_volume_size(
        &self,
        caller: &Caller,
        id: &str,
        asked: Option<u64>,
    ) -> Result<u64> {
        if let Some(size) = asked {
            return Ok(size);
        }
        let image = self.image(caller, id).await.map_err(|e| match e.kind() {
            ErrorKind::NotFound => bad(&format!("failed to get image {id}.")),
            _ => e,
        })?;
        if image.status != ImageStatus::Active {
            return Err(bad(&format!("image {id} is not active.")));
        }
        let needed = image.virtual_size.or(image.size).unwrap_or(0).div_ceil(GIB);
        Ok(needed.max(image.min_disk).max(1))
    }

    /// Puts reserved volumes back to `available`.
    pub(crate) async fn unreserve(&self, volumes: &[VolumeId]) {
        for id in volumes {
            let _ = self
                .store
                .set_volume_status(*id, VolumeStatus::Reserved, VolumeStatus::Available, None)
                .await;
        }
    }

    /// Makes the planned volumes of a recorded server (new ones start
    /// being created) and records an attachment for each, root first. On a
    /// failure the caller puts the server in `error`: what was recorded is
    /// released when it is deleted.
    pub(crate) async fn record_block_devices(
        &self,
        caller: &Caller,
        server: &Server,
        claimed: Claimed,
    ) -> Result<()> {
        for (planned, existing) in claimed.volumes {
            let id = match existing {
                Some(id) => id,
                None => {
                    let size = match &planned.source {
                        Source::Image(image) => {
                            Some(self.image_volume_size(caller, image, planned.size).await?)
                        }
                        _ => planned.size,
                    };
                    self.create_volume(caller, new_volume(&planned, size))
                        .await?
                        .id
                }
            };
            let attachment = VolumeAttachment {
                id: AttachmentId::new(),
                volume_id: id,
                server_id: server.id,
                device: planned.device.clone(),
                disk_id: volume::disk_id_of(id),
                boot_index: planned.boot_index,
                delete_on_termination: planned.delete_on_termination,
                created_at: Utc::now(),
            };
            self.store.insert_attachment(&attachment).await?;
        }
        Ok(())
    }

    /// Build step: waits until every volume of the server is made, then
    /// moves each to `attaching` (the root disk and QEMU come next).
    pub(crate) async fn prepare_boot_volumes(&self, server: &Server) -> Result<()> {
        for attachment in self.store.attachments_of_server(server.id).await? {
            let id = attachment.volume_id;
            let deadline = tokio::time::Instant::now() + VOLUME_WAIT;
            loop {
                let volume = self.store.volume(id).await?;
                match volume.status {
                    VolumeStatus::Creating if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(POLL).await;
                    }
                    VolumeStatus::Available => {
                        self.store
                            .set_volume_status(
                                id,
                                VolumeStatus::Available,
                                VolumeStatus::Reserved,
                                None,
                            )
                            .await?;
                    }
                    VolumeStatus::Reserved => {
                        self.store
                            .set_volume_status(
                                id,
                                VolumeStatus::Reserved,
                                VolumeStatus::Attaching,
                                None,
                            )
                            .await?;
                    }
                    VolumeStatus::Attaching | VolumeStatus::InUse => break,
                    other => {
                        return Err(Error::conflict(format!(
                            "Volume {id} for device {} could not be made (it is {other}).",
                            attachment.device
                        )))
                    }
                }
            }
        }
        Ok(())
    }

    /// After a build, successful or not: the server's volumes are `in-use`.
    pub(crate) async fn settle_boot_volumes(&self, server: &Server) {
        let Ok(attachments) = self.store.attachments_of_server(server.id).await else {
            return;
        };
        for attachment in attachments {
            let _ = self
                .store
                .set_volume_status(
                    attachment.volume_id,
                    VolumeStatus::Attaching,
                    VolumeStatus::InUse,
                    None,
                )
                .await;
        }
    }
}

fn new_volume(planned: &Planned, size: Option<u64>) -> NewVolume {
    let mut new = NewVolume {
        size,
        ..NewVolume::default()
    };
    match &planned.source {
        Source::Snapshot(id) => new.snapshot_id = Some(id.clone()),
        Source::Image(id) => new.image_ref = Some(id.clone()),
        Source::Volume(_) | Source::Blank => {}
    }
    new
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bdm(source: &str, dest: &str, uuid: Option<&str>, boot: Option<i64>) -> BlockDevice {
        BlockDevice {
            source_type: source.into(),
            destination_type: dest.into(),
            uuid: uuid.map(str::to_string),
            boot_index: boot,
            volume_size: Some(1),
            ..BlockDevice::default()
        }
    }

    #[test]
    fn plan_when_volume_boot_index_0_then_root_on_vda_and_no_image() {
        let devices = [
            bdm("blank", "volume", None, None),
            bdm("volume", "volume", Some("v1"), Some(0)),
        ];

        let plan = plan("", &devices).unwrap();

        assert_eq!(plan.image_root(), None);
        assert_eq!(plan.volumes[0].source, Source::Volume("v1".into()));
        assert_eq!(plan.volumes[0].device, "/dev/vda");
        assert_eq!(plan.volumes[1].device, "/dev/vdb");
    }

    #[test]
    fn plan_when_image_local_root_and_blank_volume_then_image_root_and_vdb() {
        let devices = [
            bdm("image", "local", Some("img"), Some(0)),
            bdm("blank", "volume", None, Some(1)),
        ];

        let plan = plan("img", &devices).unwrap();

        assert_eq!(plan.image_root(), Some("img"));
        assert_eq!(plan.volumes[0].device, "/dev/vdb");
    }

    #[test]
    fn plan_when_no_root_then_invalid() {
        let err = plan("", &[bdm("blank", "volume", None, None)]).unwrap_err();

        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.message().contains("Boot sequence"));
    }

    #[test]
    fn plan_when_boot_indexes_have_a_gap_then_invalid() {
        let devices = [
            bdm("volume", "volume", Some("v1"), Some(0)),
            bdm("blank", "volume", None, Some(2)),
        ];

        assert!(plan("", &devices).is_err());
    }

    #[test]
    fn plan_when_blank_without_size_then_invalid() {
        let mut blank = bdm("blank", "volume", None, None);
        blank.volume_size = None;
        let devices = [bdm("volume", "volume", Some("v1"), Some(0)), blank];

        assert!(plan("", &devices)
            .unwrap_err()
            .message()
            .contains("volume_size"));
    }

    #[test]
    fn plan_when_device_named_twice_then_invalid() {
        let mut a = bdm("volume", "volume", Some("v1"), Some(0));
        a.device_name = Some("vdb".into());
        let mut b = bdm("blank", "volume", None, None);
        b.device_name = Some("/dev/vdb".into());

        assert!(plan("", &[a, b]).is_err());
    }
}
