//! Hostile input: truncated, mutated and random images must never panic, and
//! truncated headers must never be accepted.
//!
//! A deterministic xorshift generator stands in for a fuzzer, so a failure
//! reproduces on every run.

mod common;

use std::fs;
use std::io::{self, Cursor, Read, Seek, SeekFrom};
use std::ops::Range;

use common::{iso_image, Scratch};
use image_format::{detect, verify, DiskFormat, ErrorKind};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// A valid image of each format, its claim, and the shortest prefix that may
/// pass `verify` (every structure the inspector reads lies before it).
struct Sample {
    name: &'static str,
    claimed: DiskFormat,
    bytes: Vec<u8>,
    min_valid_len: usize,
}

fn samples(scratch: &Scratch) -> Vec<Sample> {
    let made = |name: &str, format: &str, options: &[&str]| {
        fs::read(scratch.qemu_img_create(name, format, options, Some("1M"))).unwrap()
    };
    vec![
        Sample {
            name: "qcow2",
            claimed: DiskFormat::Qcow2,
            bytes: made("a.qcow2", "qcow2", &[]),
            min_valid_len: 104,
        },
        Sample {
            name: "vmdk",
            claimed: DiskFormat::Vmdk,
            bytes: made("s.vmdk", "vmdk", &[]),
            min_valid_len: 512 + 20 * 512,
        },
        Sample {
            name: "streamOptimized vmdk",
            claimed: DiskFormat::Vmdk,
            bytes: made("so.vmdk", "vmdk", &["-o", "subformat=streamOptimized"]),
            min_valid_len: 512 + 20 * 512,
        },
        Sample {
            name: "vhd",
            claimed: DiskFormat::Vhd,
            bytes: made("d.vhd", "vpc", &[]),
            min_valid_len: 512,
        },
        Sample {
            name: "vhdx",
            claimed: DiskFormat::Vhdx,
            bytes: made("x.vhdx", "vhdx", &[]),
            min_valid_len: 0x200000 + 32,
        },
        Sample {
            name: "vdi",
            claimed: DiskFormat::Vdi,
            bytes: made("i.vdi", "vdi", &[]),
            min_valid_len: 0x1c8,
        },
        Sample {
            name: "ploop",
            claimed: DiskFormat::Ploop,
            bytes: made("p.hds", "parallels", &[]),
            min_valid_len: 64,
        },
        Sample {
            name: "iso",
            claimed: DiskFormat::Iso,
            bytes: iso_image(16),
            min_valid_len: 0x8006,
        },
    ]
}

/// Runs every entry point on `bytes`; panics propagate and fail the test.
fn inspect_everything(bytes: &[u8]) {
    let _ = detect(&mut Cursor::new(bytes));
    for claimed in DiskFormat::ALL {
        let _ = verify(&mut Cursor::new(bytes), claimed);
    }
}

fn truncation_lengths(full: usize) -> Vec<usize> {
    let mut lengths: Vec<usize> = (0..=1024).collect();
    lengths.extend((1024..0x10000).step_by(509));
    lengths.extend((0x10000..full).step_by(65_521));
    lengths.extend(full.saturating_sub(2048)..=full);
    lengths.retain(|&n| n <= full);
    lengths
}

#[test]
fn every_sample_when_verified_whole_is_accepted() {
    let scratch = Scratch::new();

    let refused: Vec<String> = samples(&scratch)
        .iter()
        .filter_map(|s| {
            verify(&mut Cursor::new(&s.bytes), s.claimed)
                .err()
                .map(|e| format!("{}: {e}", s.name))
        })
        .collect();

    assert!(refused.is_empty(), "{refused:?}");
}

#[test]
fn truncated_headers_when_verified_are_never_accepted() {
    let scratch = Scratch::new();

    let mut accepted = Vec::new();
    for sample in samples(&scratch) {
        for len in truncation_lengths(sample.min_valid_len - 1) {
            if verify(&mut Cursor::new(&sample.bytes[..len]), sample.claimed).is_ok() {
                accepted.push((sample.name, len));
            }
        }
    }

    assert!(
        accepted.is_empty(),
        "truncated images accepted: {accepted:?}"
    );
}

#[test]
fn truncations_of_every_sample_when_inspected_never_panic() {
    let scratch = Scratch::new();

    for sample in samples(&scratch) {
        for len in truncation_lengths(sample.bytes.len()) {
            let prefix = &sample.bytes[..len];
            let _ = detect(&mut Cursor::new(prefix));
            let _ = verify(&mut Cursor::new(prefix), sample.claimed);
            let _ = verify(&mut Cursor::new(prefix), DiskFormat::Raw);
        }
    }
}

#[test]
fn mutated_samples_when_inspected_never_panic() {
    let scratch = Scratch::new();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);

    for mut sample in samples(&scratch) {
        let len = sample.bytes.len();
        // Where the inspector reads: the first sectors, the vhdx tables, the end.
        let windows: Vec<Range<usize>> = [
            0..1024,
            0x8000..0x8100,
            0x30000..0x30100,
            0x200000..0x200100,
            len.saturating_sub(1536)..len,
        ]
        .into_iter()
        .filter(|w| w.end <= len && !w.is_empty())
        .collect();
        for _ in 0..300 {
            let original = sample.bytes.clone();
            for _ in 0..1 + rng.below(8) {
                let window = &windows[rng.below(windows.len())];
                let at = window.start + rng.below(window.len());
                sample.bytes[at] = if rng.below(4) == 0 {
                    0xff
                } else {
                    rng.next() as u8
                };
            }
            inspect_everything(&sample.bytes);
            sample.bytes = original;
        }
    }
}

#[test]
fn random_bytes_with_planted_signatures_when_inspected_never_panic() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let plants: [(usize, &[u8]); 14] = [
        (0, b"QFI\xfb\x00\x00\x00\x03"),
        (0, b"QFI\xfb\x00\x00\x00\x02"),
        (0, b"KDMV\x01\x00\x00\x00"),
        (0, b"COWD"),
        (0, b"version=1\n"),
        (0, b"conectix"),
        (0, b"vhdxfile"),
        (0x40, &0xbeda_107fu32.to_le_bytes()),
        (0x8001, b"CD001"),
        (510, &[0x55, 0xaa]),
        (0, b"WithoutFreeSpace\x02\x00\x00\x00"),
        (0, b"QED\x00"),
        (0, b"LUKS\xba\xbe"),
        (0, b""),
    ];

    for _ in 0..60 {
        for (offset, magic) in plants {
            let len = rng.below(0x12000);
            let mut bytes = rng.bytes(len);
            if bytes.len() >= offset + magic.len() {
                bytes[offset..offset + magic.len()].copy_from_slice(magic);
            }
            inspect_everything(&bytes);
        }
    }
}

#[test]
fn vhdx_with_region_table_pointing_past_the_end_when_verified_is_refused() {
    let scratch = Scratch::new();
    let mut bytes = fs::read(scratch.qemu_img_create("x.vhdx", "vhdx", &[], Some("1M"))).unwrap();
    // Region entry 1 of qemu's table is the metadata region; aim it at the last byte.
    bytes[0x30000 + 16 + 32 + 16..0x30000 + 16 + 32 + 24].copy_from_slice(&u64::MAX.to_le_bytes());

    let error = verify(&mut Cursor::new(bytes), DiskFormat::Vhdx).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::Truncated);
}

/// A reader whose reads always fail.
struct FailingReader;

impl Read for FailingReader {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::other("device gone"))
    }
}

impl Seek for FailingReader {
    fn seek(&mut self, _: SeekFrom) -> io::Result<u64> {
        Ok(4096)
    }
}

#[test]
fn reader_that_fails_when_verified_is_io_error() {
    let error = verify(&mut FailingReader, DiskFormat::Raw).unwrap_err();

    assert_eq!(error.kind(), ErrorKind::Io);
}

/// A reader that claims to have read more bytes than it was given room for.
struct LyingReader;

impl Read for LyingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(buf.len() + 1000)
    }
}

impl Seek for LyingReader {
    fn seek(&mut self, _: SeekFrom) -> io::Result<u64> {
        Ok(1 << 20)
    }
}

#[test]
fn reader_that_overstates_its_reads_when_detected_does_not_panic() {
    let inspection = detect(&mut LyingReader).unwrap();

    assert_eq!(inspection.detected, DiskFormat::Raw);
}
