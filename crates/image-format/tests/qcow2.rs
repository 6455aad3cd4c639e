//! qcow2 uploads: accepted when plain, refused when they reach for other files
//! or use features we do not know. Images are made by qemu-img.

mod common;

use common::{patch, Scratch};
use image_format::{verify_path, DiskFormat, ErrorKind, Inspection};

/// Byte 79 is the low byte of the big-endian incompatible_features field.
const INCOMPATIBLE_LOW_BYTE: u64 = 79;

#[test]
fn plain_qcow2_when_verified_as_qcow2_is_accepted_with_header_size() {
    let scratch = Scratch::new();
    let image = scratch.qemu_img_create("plain.qcow2", "qcow2", &[], Some("64M"));

    let inspection = verify_path(&image, DiskFormat::Qcow2).unwrap();

    assert_eq!(
        inspection,
        Inspection {
            detected: DiskFormat::Qcow2,
            virtual_size: Some(64 << 20)
        }
    );
}

#[test]
fn version_2_qcow2_when_verified_is_accepted() {
    let scratch = Scratch::new();
    let image = scratch.qemu_img_create("v2.qcow2", "qcow2", &["-o", "compat=0.10"], Some("3G"));

    let inspection = verify_path(&image, DiskFormat::Qcow2).unwrap();

    assert_eq!(inspection.virtual_size, Some(3 << 30));
}

#[test]
fn qcow2_with_extended_l2_and_zstd_when_verified_is_accepted() {
    let scratch = Scratch::new();
    let options = ["-o", "extended_l2=on,compression_type=zstd"];
    let image = scratch.qemu_img_create("l2.qcow2", "qcow2", &options, Some("1G"));

    let inspection = verify_path(&image, DiskFormat::Qcow2).unwrap();

    assert_eq!(inspection.detected, DiskFormat::Qcow2);
}

#[test]
fn qcow2_with_backing_file_when_verified_is_refused_as_backing_file() {
    let scratch = Scratch::new();
    scratch.qemu_img_create("base.raw", "raw", &[], Some("1M"));
    let image =
        scratch.qemu_img_create("top.qcow2", "qcow2", &["-b", "base.raw", "-F", "raw"], None);

    let error = verify_path(&image, DiskFormat::Qcow2).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::BackingFile);
    assert_eq!(
        error.to_string(),
        "qcow2 image refers to a backing file; uploaded images may not"
    );
}

#[test]
fn qcow2_with_data_file_when_verified_is_refused_as_data_file() {
    let scratch = Scratch::new();
    let image = scratch.qemu_img_create(
        "df.qcow2",
        "qcow2",
        &["-o", "data_file=data.raw"],
        Some("16M"),
    );

    let error = verify_path(&image, DiskFormat::Qcow2).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::DataFile);
}

#[test]
fn qcow2_naming_a_data_file_with_the_bit_cleared_when_verified_is_refused_as_data_file() {
    let scratch = Scratch::new();
    let image = scratch.qemu_img_create(
        "df.qcow2",
        "qcow2",
        &["-o", "data_file=data.raw"],
        Some("16M"),
    );
    patch(&image, INCOMPATIBLE_LOW_BYTE, &[0]);

    let error = verify_path(&image, DiskFormat::Qcow2).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::DataFile);
    assert!(error.to_string().contains("header extensions"));
}

#[test]
fn qcow2_with_unknown_incompatible_bit_when_verified_is_refused() {
    let scratch = Scratch::new();
    let image = scratch.qemu_img_create("bit5.qcow2", "qcow2", &[], Some("16M"));
    patch(&image, INCOMPATIBLE_LOW_BYTE, &[1 << 5]);

    let error = verify_path(&image, DiskFormat::Qcow2).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::UnknownFeatures);
}

#[test]
fn qcow2_when_claimed_raw_is_format_mismatch() {
    let scratch = Scratch::new();
    let image = scratch.qemu_img_create("sneaky.qcow2", "qcow2", &[], Some("16M"));

    let error = verify_path(&image, DiskFormat::Raw).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::FormatMismatch);
    assert_eq!(
        error.to_string(),
        "image was declared raw but its content is a qcow2 image"
    );
}

#[test]
fn qcow2_with_backing_file_when_claimed_ami_is_format_mismatch() {
    let scratch = Scratch::new();
    scratch.qemu_img_create("base.raw", "raw", &[], Some("1M"));
    let image =
        scratch.qemu_img_create("top.qcow2", "qcow2", &["-b", "base.raw", "-F", "raw"], None);

    let error = verify_path(&image, DiskFormat::Ami).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::FormatMismatch);
}

#[test]
fn raw_disk_when_claimed_qcow2_is_format_mismatch() {
    let scratch = Scratch::new();
    let image = scratch.qemu_img_create("disk.raw", "raw", &[], Some("1M"));

    let error = verify_path(&image, DiskFormat::Qcow2).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::FormatMismatch);
    assert_eq!(
        error.to_string(),
        "image was declared qcow2 but its content is raw data"
    );
}

#[test]
fn qcow2_with_mbr_boot_signature_when_verified_is_ambiguous() {
    let scratch = Scratch::new();
    let image = scratch.qemu_img_create("polyglot.qcow2", "qcow2", &[], Some("16M"));
    patch(&image, 510, &[0x55, 0xaa]);

    let error = verify_path(&image, DiskFormat::Qcow2).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::AmbiguousFormat);
}

#[test]
fn qcow_version_1_when_verified_as_qcow2_is_unsupported() {
    let scratch = Scratch::new();
    let image = scratch.qemu_img_create("old.qcow2", "qcow2", &[], Some("16M"));
    patch(&image, 4, &1u32.to_be_bytes());

    let error = verify_path(&image, DiskFormat::Qcow2).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::UnsupportedFormat);
}
