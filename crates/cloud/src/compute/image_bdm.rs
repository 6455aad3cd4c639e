//! Booting from the image a snapshot of a volume-backed server made: its
//! `block_device_mapping` property (with `bdm_v2=True`) becomes the new
//! server's block device mapping, as Nova does — every volume snapshot in it
//! becomes a new volume attached where the old one was.
//!
//! The request's own mappings win over the image's for the same device (or
//! for the root, boot index 0). The image→local root entry clients send
//! along with an image (python-openstackclient always does) is dropped: the
//! image has no data to boot from.

use domain::identity::Caller;
use domain::image::{Image, ImageStatus};
use domain::{Error, Result};
use serde_json::Value;

use super::block_devices::BlockDevice;
use crate::Cloud;

impl Cloud {
    /// What a server create asking for `image_ref` and `devices` really
    /// asks for: for an image of a volume-backed snapshot, no image and the
    /// image's mapping merged with the request's; anything else unchanged
    /// (an unknown image is reported by the usual checks).
    pub(super) async fn expand_image_mapping(
        &self,
        caller: &Caller,
        image_ref: &str,
        devices: Vec<BlockDevice>,
    ) -> Result<(String, Vec<BlockDevice>)> {
        if image_ref.is_empty() {
            return Ok((String::new(), devices));
        }
        let Ok(image) = self.image(caller, image_ref).await else {
            return Ok((image_ref.to_string(), devices));
        };
        let Some(from_image) = image_block_devices(&image)? else {
            return Ok((image_ref.to_string(), devices));
        };
        if image.status != ImageStatus::Active {
            return Err(Error::invalid(format!(
                "Image {} is not active (it is {}).",
                image.id, image.status
            )));
        }
        Ok((String::new(), merge(&image, from_image, devices)))
    }
}

/// Nova's truthy strings.
fn is_true(v: Option<&String>) -> bool {
    v.is_some_and(|v| {
        matches!(
            v.to_ascii_lowercase().as_str(),
            "true" | "yes" | "1" | "on" | "y" | "t"
        )
    })
}

/// The image's mappings when it is a volume-backed snapshot image
/// (`bdm_v2` true and a `block_device_mapping` list); `None` for an image
/// with data. `InvalidInput` when the property is not a list of mappings.
pub(crate) fn image_block_devices(image: &Image) -> Result<Option<Vec<BlockDevice>>> {
    let Some(text) = image.properties.get("block_device_mapping") else {
        return Ok(None);
    };
    if !is_true(image.properties.get("bdm_v2")) {
        return Ok(None);
    }
    let bad = |why: String| {
        Error::invalid(format!(
            "Image {} has a block_device_mapping property Snapstack cannot use: {why}",
            image.id
        ))
    };
    let entries: Vec<Value> =
        serde_json::from_str(text).map_err(|e| bad(format!("not a JSON list ({e})")))?;
    entries
        .iter()
        .map(|entry| block_device(entry).map_err(bad))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// One of the image's mappings.
fn block_device(entry: &Value) -> std::result::Result<BlockDevice, String> {
    let obj = entry
        .as_object()
        .ok_or_else(|| "an entry is not an object".to_string())?;
    let text = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_owned);
    let number = |k: &str| match obj.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| format!("'{k}' is not an integer")),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| format!("'{k}' is not an integer")),
        Some(_) => Err(format!("'{k}' is not an integer")),
    };
    let source_type = text("source_type").ok_or("an entry has no source_type")?;
    let uuid = match source_type.as_str() {
        "snapshot" => text("snapshot_id"),
        "volume" => text("volume_id"),
        "image" => text("image_id"),
        "blank" => None,
        other => return Err(format!("unknown source_type '{other}'")),
    };
    let volume_size = number("volume_size")?
        .map(|s| u64::try_from(s).map_err(|_| "'volume_size' is negative".to_string()))
        .transpose()?;
    Ok(BlockDevice {
        source_type,
        destination_type: text("destination_type").unwrap_or_else(|| "volume".into()),
        uuid,
        boot_index: number("boot_index")?,
        volume_size,
        delete_on_termination: obj
            .get("delete_on_termination")
            .is_some_and(|v| v.as_bool() == Some(true) || v.as_str() == Some("True")),
        device_name: text("device_name"),
    })
}

/// The mapping a server booted from `image` gets: the image's, with the
/// request's entries replacing those for the same device or the root.
pub(crate) fn merge(
    image: &Image,
    from_image: Vec<BlockDevice>,
    requested: Vec<BlockDevice>,
) -> Vec<BlockDevice> {
    let image_id = image.id.to_string();
    let requested: Vec<BlockDevice> = requested
        .into_iter()
        .filter(|d| !(d.source_type == "image" && d.uuid.as_deref() == Some(image_id.as_str())))
        .collect();
    let is_root = |d: &BlockDevice| d.boot_index == Some(0);
    let mut merged: Vec<BlockDevice> = from_image
        .into_iter()
        .filter(|d| {
            !requested.iter().any(|r| {
                (is_root(r) && is_root(d))
                    || (r.device_name.is_some() && r.device_name == d.device_name)
            })
        })
        .collect();
    merged.extend(requested);
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use domain::{ImageId, ProjectId};

    fn bdm_image(mapping: &str) -> Image {
        let mut img = Image::new_queued(ImageId::new(), ProjectId::new(), Utc::now());
        img.properties
            .insert("block_device_mapping".into(), mapping.into());
        img.properties.insert("bdm_v2".into(), "True".into());
        img
    }

    const TWO: &str = r#"[{"source_type": "snapshot", "destination_type": "volume", "snapshot_id": "s-root", "volume_size": 2, "device_name": "/dev/vda", "boot_index": 0, "delete_on_termination": true},
        {"source_type": "snapshot", "destination_type": "volume", "snapshot_id": "s-data", "volume_size": "1", "device_name": "/dev/vdb", "boot_index": null}]"#;

    #[test]
    fn image_mapping_when_two_snapshots_then_two_volume_devices() {
        let img = bdm_image(TWO);

        let devices = image_block_devices(&img).unwrap().unwrap();

        assert_eq!(devices.len(), 2);
        assert_eq!(devices[0].uuid.as_deref(), Some("s-root"));
        assert_eq!(devices[0].boot_index, Some(0));
        assert!(devices[0].delete_on_termination);
        assert_eq!(devices[1].volume_size, Some(1));
        assert_eq!(devices[1].boot_index, None);
        assert_eq!(devices[1].device_name.as_deref(), Some("/dev/vdb"));
    }

    #[test]
    fn image_mapping_when_not_json_then_invalid_input() {
        let img = bdm_image("[{nope");

        let err = image_block_devices(&img).unwrap_err();

        assert_eq!(err.kind(), domain::ErrorKind::InvalidInput);
    }

    #[test]
    fn image_mapping_when_bdm_v2_unset_then_none() {
        let mut img = bdm_image(TWO);
        img.properties.remove("bdm_v2");

        assert!(image_block_devices(&img).unwrap().is_none());
    }

    #[test]
    fn merge_when_client_sends_the_image_as_local_root_then_image_mapping_kept() {
        let img = bdm_image(TWO);
        let from_image = image_block_devices(&img).unwrap().unwrap();
        let osc = BlockDevice {
            source_type: "image".into(),
            destination_type: "local".into(),
            uuid: Some(img.id.to_string()),
            boot_index: Some(0),
            delete_on_termination: true,
            ..Default::default()
        };

        let merged = merge(&img, from_image.clone(), vec![osc]);

        assert_eq!(merged, from_image);
    }

    #[test]
    fn merge_when_request_maps_vdb_then_request_wins_for_vdb() {
        let img = bdm_image(TWO);
        let from_image = image_block_devices(&img).unwrap().unwrap();
        let blank = BlockDevice {
            source_type: "blank".into(),
            destination_type: "volume".into(),
            volume_size: Some(3),
            device_name: Some("/dev/vdb".into()),
            ..Default::default()
        };

        let merged = merge(&img, from_image, vec![blank.clone()]);

        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].uuid.as_deref(), Some("s-root"));
        assert_eq!(merged[1], blank);
    }
}
