#!/usr/bin/env python3
"""Reads the Snapstack test guest's record log from a disk image, on the host.

    scripts/guest-check.py [--format FMT] [--records] DISK_IMAGE

Prints one JSON object, e.g.
    {"boot": 2, "last_seq": 265, "corrupt": 0, "initialized": true, ...}

DISK_IMAGE is a raw file, a qcow2 file (backing chain followed), or anything
`qemu-img convert` can read with --format (e.g. --format raw rbd:pool/img).
Non-raw images are converted with `qemu-img convert -U` (so an image in use
by a running VM can be read; what it shows is then whatever was on disk at
that instant) into a temporary sparse raw file.

The format is the one guest/seqwriter.c writes; guest/README.md documents it.
Exit status: 0 when the image was read (even if its log is empty or has
corrupt records), 1 when it could not be read.
"""

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib

SECTOR = 512
HEADER_MAGIC = b"SNAPSTKH"
RECORD_MAGIC = b"SNAPSTKR"
FORMAT_VERSION = 1
CRC_OFFSET = 508
DATA_PARTITION_TYPE = 0xDA
ZERO_SECTOR = bytes(SECTOR)
CHUNK_SECTORS = 2048


def crc_ok(sector):
    (stored,) = struct.unpack_from("<I", sector, CRC_OFFSET)
    return stored == zlib.crc32(sector[:CRC_OFFSET])


def decode_header(sector):
    if sector[:8] != HEADER_MAGIC or not crc_ok(sector):
        return None
    version, boot, base_seq, capacity = struct.unpack_from("<IIQQ", sector, 8)
    if version != FORMAT_VERSION:
        return None
    return {"boot": boot, "base_seq": base_seq, "capacity": capacity}


def locate_region(f, total_sectors):
    """Returns (layout, first sector, sector count) like seqwriter does."""
    f.seek(0)
    first = f.read(SECTOR)
    if decode_header(first) is not None:
        return "whole-disk", 0, total_sectors
    if len(first) == SECTOR and first[510:512] == b"\x55\xaa":
        ptype = first[446 + 16 + 4]
        start, count = struct.unpack_from("<II", first, 446 + 16 + 8)
        if ptype == DATA_PARTITION_TYPE and count >= 4 and start + count <= total_sectors:
            return "partition", start, count
    return "whole-disk", 0, total_sectors


def check(path, want_records):
    total_sectors = os.path.getsize(path) // SECTOR
    with open(path, "rb") as f:
        layout, start, sectors = locate_region(f, total_sectors)
        f.seek(start * SECTOR)
        header = decode_header(f.read(SECTOR))
        result = {
            "initialized": header is not None,
            "layout": layout,
            "region_start_sector": start,
            "region_sectors": sectors,
        }
        if header is None:
            result.update(boot=0, last_seq=0, corrupt=0, base_seq=0, records=0, last_boot=None)
            return result
        base = header["base_seq"]
        slots = sectors - 1
        n = corrupt = 0
        last_boot = None
        records = []
        done = False
        while not done and n < slots:
            count = min(CHUNK_SECTORS, slots - n)
            f.seek((start + 1 + n) * SECTOR)
            chunk = f.read(count * SECTOR)
            for i in range(count):
                sector = chunk[i * SECTOR:(i + 1) * SECTOR]
                if len(sector) < SECTOR or sector == ZERO_SECTOR:
                    done = True
                    break
                seq, boot, _reserved, ram = struct.unpack_from("<QIIQ", sector, 8)
                ok = sector[:8] == RECORD_MAGIC and seq == base + n and crc_ok(sector)
                if ok:
                    last_boot = boot
                else:
                    corrupt += 1
                if want_records:
                    records.append({"slot": n, "seq": seq, "boot": boot, "ram": ram, "ok": ok})
                n += 1
        result.update(
            boot=header["boot"],
            last_seq=base + n - 1,
            corrupt=corrupt,
            base_seq=base,
            records=n,
            capacity=header["capacity"],
            last_boot=last_boot,
        )
        if want_records:
            result["record_list"] = records
        return result


def is_qcow2(path):
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"QFI\xfb"
    except OSError:
        return False


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--format", help="qemu-img format of IMAGE (default: qcow2 if it looks like one, else raw)")
    parser.add_argument("--records", action="store_true", help="also list every record (slot, seq, boot, ram, ok)")
    args = parser.parse_args()

    fmt = args.format or ("qcow2" if is_qcow2(args.image) else "raw")
    if fmt == "raw" and os.path.isfile(args.image):
        result = check(args.image, args.records)
    else:
        with tempfile.TemporaryDirectory(prefix="guest-check-") as tmp:
            raw = os.path.join(tmp, "disk.raw")
            proc = subprocess.run(
                ["qemu-img", "convert", "-U", "-f", fmt, "-O", "raw", args.image, raw],
                capture_output=True, text=True,
            )
            if proc.returncode != 0:
                print(f"guest-check: qemu-img convert failed: {proc.stderr.strip()}", file=sys.stderr)
                return 1
            result = check(raw, args.records)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except OSError as err:
        print(f"guest-check: {err}", file=sys.stderr)
        sys.exit(1)
