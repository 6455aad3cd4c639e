//! MBR and GPT protective MBR: oslo.utils' partition-table safety check.
//!
//! A disk image that carries an MBR boot signature is still raw to qemu, but
//! Glance (with its default `gpt_safety_checks_nonfatal = []`) and nova refuse
//! one whose table is not sane:
//!
//! - every entry's boot flag is 0x00 or 0x80;
//! - at least one entry has a non-zero type;
//! - an entry of type 0xEE (GPT protective) starts at CHS 0/2/0 and LBA 1, and
//!   is then the only entry, in slot 0.

use std::io::{Read, Seek};

use crate::error::{Error, ErrorKind};
use crate::fields::Fields;
use crate::source::Source;

const ENTRIES_AT: usize = 446;
const ENTRY_LEN: usize = 16;
const GPT_PROTECTIVE: u8 = 0xee;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    boot_flag: u8,
    start_chs: [u8; 3],
    os_type: u8,
    start_lba: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PartitionTable {
    entries: [Entry; 4],
}

impl PartitionTable {
    pub(crate) fn read<R: Read + Seek + ?Sized>(source: &mut Source<'_, R>) -> Result<Self, Error> {
        let sector = source.read_exact_at(0, 512, "master boot record")?;
        let fields = Fields::new(&sector, "master boot record");
        let entry = |slot: usize| -> Result<Entry, Error> {
            let at = ENTRIES_AT + slot * ENTRY_LEN;
            let chs = fields.slice(at + 1, 3)?;
            Ok(Entry {
                boot_flag: fields.u8(at)?,
                start_chs: [chs[0], chs[1], chs[2]],
                os_type: fields.u8(at + 4)?,
                start_lba: fields.le_u32(at + 8)?,
            })
        };
        Ok(Self {
            entries: [entry(0)?, entry(1)?, entry(2)?, entry(3)?],
        })
    }

    /// The rules an uploaded partitioned raw disk must pass.
    pub(crate) fn check(&self) -> Result<(), Error> {
        let refuse = |why: String| Err(Error::new(ErrorKind::PartitionTable, why));
        let mut used = Vec::new();
        let mut found_gpt = false;
        for (slot, entry) in self.entries.iter().enumerate() {
            if !matches!(entry.boot_flag, 0x00 | 0x80) {
                return refuse(format!(
                    "MBR partition entry {slot} has an invalid boot flag"
                ));
            }
            if entry.os_type != 0 {
                used.push(slot);
            }
            if entry.os_type == GPT_PROTECTIVE {
                found_gpt = true;
                if entry.start_chs != [0x00, 0x02, 0x00] {
                    return refuse("GPT protective MBR has an invalid start CHS".to_owned());
                }
                if entry.start_lba != 1 {
                    return refuse("GPT protective MBR has an invalid start LBA".to_owned());
                }
            }
        }
        if found_gpt && used != [0] {
            return refuse("GPT protective MBR defines extra partitions".to_owned());
        }
        if used.is_empty() {
            return refuse("MBR defines no partitions".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn mbr(entries: &[(usize, [u8; 16])]) -> Vec<u8> {
        let mut sector = vec![0u8; 512];
        for (slot, entry) in entries {
            let at = ENTRIES_AT + slot * ENTRY_LEN;
            sector[at..at + ENTRY_LEN].copy_from_slice(entry);
        }
        sector[510] = 0x55;
        sector[511] = 0xaa;
        sector
    }

    fn protective_entry() -> [u8; 16] {
        [
            0, 0, 2, 0, 0xee, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0xff, 0xff, 0, 0,
        ]
    }

    fn check(sector: Vec<u8>) -> Result<(), Error> {
        let mut cursor = Cursor::new(sector);
        PartitionTable::read(&mut Source::new(&mut cursor).unwrap())
            .unwrap()
            .check()
    }

    #[test]
    fn gpt_protective_mbr_when_checked_is_accepted() {
        let result = check(mbr(&[(0, protective_entry())]));

        assert!(result.is_ok());
    }

    #[test]
    fn protective_mbr_with_second_partition_when_checked_is_refused() {
        let mut linux = [0u8; 16];
        linux[4] = 0x83;

        let error = check(mbr(&[(0, protective_entry()), (1, linux)])).unwrap_err();

        assert_eq!(error.kind(), ErrorKind::PartitionTable);
    }

    #[test]
    fn empty_table_when_checked_is_refused() {
        let error = check(mbr(&[])).unwrap_err();

        assert_eq!(error.kind(), ErrorKind::PartitionTable);
    }

    #[test]
    fn bad_boot_flag_when_checked_is_refused() {
        let mut entry = [0u8; 16];
        entry[0] = 0x12;
        entry[4] = 0x83;

        let error = check(mbr(&[(2, entry)])).unwrap_err();

        assert_eq!(error.kind(), ErrorKind::PartitionTable);
    }
}
