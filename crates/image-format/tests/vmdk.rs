//! vmdk uploads: single-file monolithicSparse and streamOptimized images are
//! accepted; every other subformat, and descriptors that reach for other
//! files, are refused. Images are made by qemu-img, then patched.

mod common;

use common::{patch, rewrite_vmdk_descriptor, Scratch};
use image_format::{detect_path, verify_path, DiskFormat, ErrorKind, Inspection};

#[test]
fn monolithic_sparse_when_verified_is_accepted_with_header_size() {
    let scratch = Scratch::new();
    let image = scratch.qemu_img_create("s.vmdk", "vmdk", &[], Some("64M"));

    let inspection = verify_path(&image, DiskFormat::Vmdk).unwrap();

    assert_eq!(
        inspection,
        Inspection {
            detected: DiskFormat::Vmdk,
            virtual_size: Some(64 << 20)
        }
    );
}

#[test]
fn stream_optimized_when_verified_is_accepted() {
    let scratch = Scratch::new();
    let options = ["-o", "subformat=streamOptimized"];
    let image = scratch.qemu_img_create("so.vmdk", "vmdk", &options, Some("32M"));

    let inspection = verify_path(&image, DiskFormat::Vmdk).unwrap();

    assert_eq!(inspection.virtual_size, Some(32 << 20));
}

#[test]
fn monolithic_flat_descriptor_when_verified_is_refused_as_subformat() {
    let scratch = Scratch::new();
    let options = ["-o", "subformat=monolithicFlat"];
    let image = scratch.qemu_img_create("mf.vmdk", "vmdk", &options, Some("1M"));

    let error = verify_path(&image, DiskFormat::Vmdk).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::VmdkSubformat);
}

#[test]
fn two_gb_max_extent_sparse_descriptor_when_verified_is_refused_as_subformat() {
    let scratch = Scratch::new();
    let options = ["-o", "subformat=twoGbMaxExtentSparse"];
    let image = scratch.qemu_img_create("tg.vmdk", "vmdk", &options, Some("1M"));

    let error = verify_path(&image, DiskFormat::Vmdk).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::VmdkSubformat);
}

#[test]
fn extent_of_a_two_gb_max_extent_sparse_image_when_verified_is_refused_as_subformat() {
    let scratch = Scratch::new();
    let options = ["-o", "subformat=twoGbMaxExtentSparse"];
    scratch.qemu_img_create("tg.vmdk", "vmdk", &options, Some("1M"));

    let error = verify_path(scratch.path("tg-s001.vmdk"), DiskFormat::Vmdk).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::VmdkSubformat);
}

#[test]
fn embedded_descriptor_claiming_another_subformat_when_verified_is_refused() {
    let scratch = Scratch::new();
    let image = scratch.qemu_img_create("s.vmdk", "vmdk", &[], Some("1M"));
    rewrite_vmdk_descriptor(&image, |text| {
        text.replace("monolithicSparse", "twoGbMaxExtentSparse")
    });

    let error = verify_path(&image, DiskFormat::Vmdk).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::VmdkSubformat);
}

#[test]
fn embedded_extent_naming_etc_passwd_when_verified_is_refused_as_extent_path() {
    let scratch = Scratch::new();
    let image = scratch.qemu_img_create("s.vmdk", "vmdk", &[], Some("1M"));
    rewrite_vmdk_descriptor(&image, |text| {
        text.replace("SPARSE \"s.vmdk\"", "FLAT \"/etc/passwd\" 0")
    });

    let error = verify_path(&image, DiskFormat::Vmdk).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::VmdkExtentPath);
}

#[test]
fn embedded_parent_file_name_hint_when_verified_is_refused_as_backing_file() {
    let scratch = Scratch::new();
    let image = scratch.qemu_img_create("s.vmdk", "vmdk", &[], Some("1M"));
    rewrite_vmdk_descriptor(&image, |text| {
        text.replace(
            "parentCID=ffffffff",
            "parentCID=12345678\nparentFileNameHint=\"base.vmdk\"",
        )
    });

    let error = verify_path(&image, DiskFormat::Vmdk).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::BackingFile);
}

#[test]
fn parent_file_name_hint_hidden_in_a_comment_when_verified_is_refused_as_backing_file() {
    // qemu-img 7.2 reports "backing file: base.raw" for this image.
    let scratch = Scratch::new();
    let image = scratch.qemu_img_create("s.vmdk", "vmdk", &[], Some("1M"));
    rewrite_vmdk_descriptor(&image, |text| {
        text.replace("# Extent description", "# parentFileNameHint=\"base.raw\"")
    });

    let error = verify_path(&image, DiskFormat::Vmdk).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::BackingFile);
}

#[test]
fn capacity_zero_header_wrapping_a_flat_descriptor_when_verified_is_refused() {
    // qemu-img 7.2 opens such a file as a descriptor and reads base.raw as its extent.
    let scratch = Scratch::new();
    let image = scratch.qemu_img_create("s.vmdk", "vmdk", &[], Some("1M"));
    patch(&image, 12, &0u64.to_le_bytes());
    rewrite_vmdk_descriptor(&image, |_| {
        "version=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 2048 FLAT \"base.raw\" 0\n".to_owned()
    });

    let error = verify_path(&image, DiskFormat::Vmdk).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::VmdkSubformat);
}

#[test]
fn second_create_type_differing_in_case_when_verified_is_refused() {
    // oslo.utils reads the first (case-insensitively), qemu the case-sensitive one.
    let scratch = Scratch::new();
    let image = scratch.qemu_img_create("s.vmdk", "vmdk", &[], Some("1M"));
    rewrite_vmdk_descriptor(&image, |text| {
        text.replace(
            "createType=\"monolithicSparse\"",
            "CREATETYPE=\"monolithicSparse\"\ncreateType=\"monolithicFlat\"",
        )
    });

    let error = verify_path(&image, DiskFormat::Vmdk).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::VmdkDescriptor);
}

#[test]
fn embedded_descriptor_with_unknown_line_when_verified_is_refused() {
    let scratch = Scratch::new();
    let image = scratch.qemu_img_create("s.vmdk", "vmdk", &[], Some("1M"));
    rewrite_vmdk_descriptor(&image, |text| format!("{text}\nmystery line\n"));

    let error = verify_path(&image, DiskFormat::Vmdk).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::VmdkDescriptor);
}

#[test]
fn sparse_vmdk_when_claimed_raw_is_format_mismatch() {
    let scratch = Scratch::new();
    let image = scratch.qemu_img_create("s.vmdk", "vmdk", &[], Some("1M"));

    let error = verify_path(&image, DiskFormat::Raw).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::FormatMismatch);
}

#[test]
fn text_descriptor_when_claimed_raw_is_format_mismatch() {
    let scratch = Scratch::new();
    let options = ["-o", "subformat=monolithicFlat"];
    let image = scratch.qemu_img_create("mf.vmdk", "vmdk", &options, Some("1M"));

    let error = verify_path(&image, DiskFormat::Raw).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::FormatMismatch);
}

#[test]
fn text_descriptor_when_detected_is_vmdk_without_size() {
    let scratch = Scratch::new();
    let options = ["-o", "subformat=monolithicFlat"];
    let image = scratch.qemu_img_create("mf.vmdk", "vmdk", &options, Some("1M"));

    let inspection = detect_path(&image).unwrap();

    assert_eq!(
        inspection,
        Inspection {
            detected: DiskFormat::Vmdk,
            virtual_size: None
        }
    );
}
