//! Detection of every format, and what each claim accepts: vhd, vhdx, vdi and
//! ploop from qemu-img; ISO, MBR/GPT and kernel-like bytes built here.

mod common;

use std::io::Cursor;

use common::{gpt_disk, iso_image, patch, Scratch};
use image_format::{detect, detect_path, verify, verify_path, DiskFormat, ErrorKind, Inspection};

#[test]
fn dynamic_vhd_when_detected_is_vhd_with_footer_current_size() {
    let scratch = Scratch::new();
    let image = scratch.qemu_img_create("d.vhd", "vpc", &[], Some("64M"));

    let inspection = verify_path(&image, DiskFormat::Vhd).unwrap();

    // qemu rounds 64 MiB to a CHS geometry: `qemu-img info` says 67125248 too.
    assert_eq!(
        inspection,
        Inspection {
            detected: DiskFormat::Vhd,
            virtual_size: Some(67_125_248)
        }
    );
}

#[test]
fn fixed_vhd_when_detected_is_vhd_from_its_trailing_footer() {
    let scratch = Scratch::new();
    let image = scratch.qemu_img_create("f.vhd", "vpc", &["-o", "subformat=fixed"], Some("4M"));

    let inspection = detect_path(&image).unwrap();

    assert_eq!(inspection.detected, DiskFormat::Vhd);
}

#[test]
fn fixed_vhd_when_claimed_raw_is_format_mismatch() {
    let scratch = Scratch::new();
    let image = scratch.qemu_img_create("f.vhd", "vpc", &["-o", "subformat=fixed"], Some("4M"));

    let error = verify_path(&image, DiskFormat::Raw).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::FormatMismatch);
}

#[test]
fn vhdx_when_verified_is_vhdx_with_metadata_size() {
    let scratch = Scratch::new();
    let image = scratch.qemu_img_create("x.vhdx", "vhdx", &[], Some("64M"));

    let inspection = verify_path(&image, DiskFormat::Vhdx).unwrap();

    assert_eq!(
        inspection,
        Inspection {
            detected: DiskFormat::Vhdx,
            virtual_size: Some(64 << 20)
        }
    );
}

#[test]
fn vdi_when_verified_is_vdi_with_header_size() {
    let scratch = Scratch::new();
    let image = scratch.qemu_img_create("i.vdi", "vdi", &[], Some("64M"));

    let inspection = verify_path(&image, DiskFormat::Vdi).unwrap();

    assert_eq!(
        inspection,
        Inspection {
            detected: DiskFormat::Vdi,
            virtual_size: Some(64 << 20)
        }
    );
}

#[test]
fn parallels_image_when_verified_as_ploop_is_accepted_with_header_size() {
    let scratch = Scratch::new();
    let image = scratch.qemu_img_create("p.hds", "parallels", &[], Some("64M"));

    let inspection = verify_path(&image, DiskFormat::Ploop).unwrap();

    assert_eq!(
        inspection,
        Inspection {
            detected: DiskFormat::Ploop,
            virtual_size: Some(64 << 20)
        }
    );
}

#[test]
fn vdi_when_claimed_vhd_is_format_mismatch() {
    let scratch = Scratch::new();
    let image = scratch.qemu_img_create("i.vdi", "vdi", &[], Some("1M"));

    let error = verify_path(&image, DiskFormat::Vhd).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::FormatMismatch);
}

#[test]
fn qed_when_detected_is_unsupported() {
    let scratch = Scratch::new();
    let image = scratch.qemu_img_create("q.qed", "qed", &[], Some("1M"));

    let error = detect_path(&image).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::UnsupportedFormat);
}

#[test]
fn qed_when_claimed_raw_is_format_mismatch() {
    let scratch = Scratch::new();
    let image = scratch.qemu_img_create("q.qed", "qed", &[], Some("1M"));

    let error = verify_path(&image, DiskFormat::Raw).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::FormatMismatch);
}

#[test]
fn luks_header_when_claimed_raw_is_format_mismatch() {
    let mut bytes = vec![0u8; 4096];
    bytes[..6].copy_from_slice(b"LUKS\xba\xbe");

    let error = verify(&mut Cursor::new(bytes), DiskFormat::Raw).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::FormatMismatch);
}

#[test]
fn iso_when_verified_as_iso_is_accepted_with_volume_size() {
    let mut iso = Cursor::new(iso_image(300));

    let inspection = verify(&mut iso, DiskFormat::Iso).unwrap();

    assert_eq!(
        inspection,
        Inspection {
            detected: DiskFormat::Iso,
            virtual_size: Some(300 * 2048)
        }
    );
}

#[test]
fn iso_when_claimed_raw_is_format_mismatch() {
    let mut iso = Cursor::new(iso_image(300));

    let error = verify(&mut iso, DiskFormat::Raw).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::FormatMismatch);
    assert_eq!(
        error.to_string(),
        "image was declared raw but its content is an ISO 9660/UDF image"
    );
}

#[test]
fn hybrid_iso_with_mbr_when_verified_as_iso_is_accepted() {
    let mut bytes = iso_image(300);
    bytes[446 + 4] = 0x17;
    bytes[510] = 0x55;
    bytes[511] = 0xaa;

    let inspection = verify(&mut Cursor::new(bytes), DiskFormat::Iso).unwrap();

    assert_eq!(inspection.detected, DiskFormat::Iso);
}

#[test]
fn zeroed_raw_disk_when_verified_as_raw_is_raw_with_file_length() {
    let scratch = Scratch::new();
    let image = scratch.qemu_img_create("disk.raw", "raw", &[], Some("3M"));

    let inspection = verify_path(&image, DiskFormat::Raw).unwrap();

    assert_eq!(
        inspection,
        Inspection {
            detected: DiskFormat::Raw,
            virtual_size: Some(3 << 20)
        }
    );
}

#[test]
fn empty_file_when_verified_as_raw_is_accepted() {
    let inspection = verify(&mut Cursor::new(Vec::new()), DiskFormat::Raw).unwrap();

    assert_eq!(inspection.virtual_size, Some(0));
}

#[test]
fn gpt_disk_when_verified_as_raw_is_accepted_as_raw() {
    let mut disk = Cursor::new(gpt_disk());

    let inspection = verify(&mut disk, DiskFormat::Raw).unwrap();

    assert_eq!(inspection.detected, DiskFormat::Raw);
}

#[test]
fn mbr_with_extra_partition_beside_gpt_when_verified_as_raw_is_partition_table_error() {
    let mut bytes = gpt_disk();
    bytes[462 + 4] = 0x83;

    let error = verify(&mut Cursor::new(bytes), DiskFormat::Raw).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::PartitionTable);
}

#[test]
fn kernel_like_bytes_with_boot_signature_when_verified_as_aki_are_accepted() {
    let mut kernel: Vec<u8> = (0..8192u32).map(|i| (i * 37 % 251) as u8).collect();
    kernel[510] = 0x55;
    kernel[511] = 0xaa;

    let inspection = verify(&mut Cursor::new(kernel), DiskFormat::Aki).unwrap();

    assert_eq!(inspection.detected, DiskFormat::Raw);
}

#[test]
fn qcow2_when_claimed_aki_is_format_mismatch() {
    let scratch = Scratch::new();
    let image = scratch.qemu_img_create("k.qcow2", "qcow2", &[], Some("1M"));

    let error = verify_path(&image, DiskFormat::Aki).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::FormatMismatch);
}

#[test]
fn raw_disk_ending_in_a_vhd_cookie_when_detected_is_vhd() {
    let scratch = Scratch::new();
    let image = scratch.qemu_img_create("disk.raw", "raw", &[], Some("1M"));
    patch(&image, (1 << 20) - 512, b"conectix");
    patch(&image, (1 << 20) - 512 + 60, &2u32.to_be_bytes());

    let inspection = detect_path(&image).unwrap();

    assert_eq!(inspection.detected, DiskFormat::Vhd);
}

#[test]
fn detect_when_done_leaves_the_reader_at_the_start() {
    let mut iso = Cursor::new(iso_image(10));

    detect(&mut iso).unwrap();

    assert_eq!(iso.position(), 0);
}

#[test]
fn missing_file_when_verified_is_io_error() {
    let scratch = Scratch::new();

    let error = verify_path(scratch.path("absent.qcow2"), DiskFormat::Qcow2).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::Io);
}
