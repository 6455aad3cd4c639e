//! The vmdk descriptor rules (oslo.utils' `check_descriptor`, plus one more).
//!
//! The descriptor is case-insensitive ASCII text. Every line must be one we
//! understand, or the image is refused:
//!
//! ```text
//!   blank, or starting with '#'          ignored
//!   starting with "ddb"                   disk database entry, ignored
//!   key=value, no space in the key        header field
//!   starting with "rw ", "rdonly ", "noaccess "   extent
//! ```
//!
//! Then: `createType` must be `monolithicSparse` or `streamOptimized`; no
//! extent line may contain '/'; there must be at least one extent.
//!
//! Beyond oslo, closing gaps between its parser and qemu's (which looks for
//! keys with a case-sensitive substring search over the whole text, comments
//! included):
//! - `parentFileNameHint` anywhere in the text is refused: qemu takes the
//!   first occurrence as a backing file name;
//! - `createType` must appear exactly once, so both parsers read the same one.

use crate::error::{Error, ErrorKind};

const ACCEPTED_CREATE_TYPES: [&str; 2] = ["monolithicsparse", "streamoptimized"];
const EXTENT_ACCESS: [&str; 3] = ["rw", "rdonly", "noaccess"];
/// oslo ignores a `createType` value this long or longer.
const MAX_CREATE_TYPE_LEN: usize = 64;

enum Line {
    Ignored,
    Field,
    Extent,
}

/// Checks a descriptor (already cut at its first NUL).
pub(crate) fn check(descriptor: &[u8]) -> Result<(), Error> {
    if !descriptor.is_ascii() {
        return Err(Error::new(
            ErrorKind::VmdkDescriptor,
            "vmdk embedded descriptor is not ASCII text",
        ));
    }
    let text = String::from_utf8_lossy(descriptor).to_ascii_lowercase();
    if text.contains("parentfilenamehint") {
        return Err(Error::new(
            ErrorKind::BackingFile,
            "vmdk descriptor names a parent disk (parentFileNameHint); uploaded images may not",
        ));
    }
    if text.matches("createtype").count() > 1 {
        return Err(Error::new(
            ErrorKind::VmdkDescriptor,
            "vmdk descriptor sets createType more than once",
        ));
    }

    match create_type(&text) {
        Some(kind) if ACCEPTED_CREATE_TYPES.contains(&kind) => {}
        Some(kind) => {
            return Err(Error::new(
                ErrorKind::VmdkSubformat,
                format!("vmdk image has createType \"{}\"; only monolithicSparse and streamOptimized images are accepted", printable(kind)),
            ))
        }
        None => {
            return Err(Error::new(
                ErrorKind::VmdkSubformat,
                "vmdk descriptor does not say its createType; only monolithicSparse and streamOptimized images are accepted",
            ))
        }
    }

    let mut extents = Vec::new();
    for line in text.split('\n').map(str::trim) {
        match classify(line)? {
            Line::Ignored | Line::Field => {}
            Line::Extent => extents.push(line),
        }
    }
    if let Some(line) = extents.iter().find(|line| line.contains('/')) {
        return Err(Error::new(
            ErrorKind::VmdkExtentPath,
            format!("vmdk descriptor extent \"{}\" names a path; an uploaded image may only name its own file", printable(line)),
        ));
    }
    if extents.is_empty() {
        return Err(Error::new(
            ErrorKind::VmdkDescriptor,
            "vmdk descriptor lists no extents",
        ));
    }
    Ok(())
}

fn classify(line: &str) -> Result<Line, Error> {
    if line.is_empty() || line.starts_with('#') || line.starts_with("ddb") {
        return Ok(Line::Ignored);
    }
    if let Some((key, _)) = line.split_once('=') {
        if !key.contains(' ') {
            return Ok(Line::Field);
        }
    }
    let first_word = line.split(' ').next().unwrap_or_default();
    if EXTENT_ACCESS.contains(&first_word) {
        return Ok(Line::Extent);
    }
    Err(Error::new(
        ErrorKind::VmdkDescriptor,
        format!(
            "vmdk descriptor has a line this inspector does not understand: \"{}\"",
            printable(line)
        ),
    ))
}

/// The value of `createtype="..."`, when it is closed and short.
fn create_type(text: &str) -> Option<&str> {
    const KEY: &str = "createtype=\"";
    let start = text.find(KEY)? + KEY.len();
    let len = text[start..].find('"')?;
    (len < MAX_CREATE_TYPE_LEN).then(|| &text[start..start + len])
}

/// At most 80 characters of `text`, control characters replaced, for messages.
fn printable(text: &str) -> String {
    text.chars()
        .take(80)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(create_type: &str, extent: &str) -> Vec<u8> {
        format!(
            "# Disk DescriptorFile\r\nversion=1\r\nCID=9a81aed\r\nparentCID=ffffffff\r\ncreateType=\"{create_type}\"\r\n\r\n# Extent description\r\n{extent}\r\n\r\n#DDB\r\nddb.virtualHWVersion = \"4\"\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn monolithic_sparse_descriptor_when_checked_is_accepted() {
        let text = descriptor("monolithicSparse", "RW 131072 SPARSE \"s.vmdk\"");

        let result = check(&text);

        assert!(result.is_ok(), "{result:?}");
    }

    #[test]
    fn monolithic_flat_descriptor_when_checked_is_subformat() {
        let text = descriptor("monolithicFlat", "RW 131072 FLAT \"s-flat.vmdk\" 0");

        let error = check(&text).unwrap_err();

        assert_eq!(error.kind(), ErrorKind::VmdkSubformat);
    }

    #[test]
    fn missing_create_type_when_checked_is_subformat() {
        let text = b"version=1\nRW 1 SPARSE \"s.vmdk\"\n";

        let error = check(text).unwrap_err();

        assert_eq!(error.kind(), ErrorKind::VmdkSubformat);
    }

    #[test]
    fn extent_with_absolute_path_when_checked_is_extent_path() {
        let text = descriptor("monolithicSparse", "RDONLY 8 FLAT \"/etc/passwd\" 0");

        let error = check(&text).unwrap_err();

        assert_eq!(error.kind(), ErrorKind::VmdkExtentPath);
        assert!(error.to_string().contains("/etc/passwd"));
    }

    #[test]
    fn descriptor_without_extents_when_checked_is_descriptor_error() {
        let text = descriptor("streamOptimized", "# none");

        let error = check(&text).unwrap_err();

        assert_eq!(error.kind(), ErrorKind::VmdkDescriptor);
    }

    #[test]
    fn unknown_line_when_checked_is_descriptor_error() {
        let text = descriptor("streamOptimized", "RW 8 SPARSE \"s.vmdk\"\nrm -rf = /");

        let error = check(&text).unwrap_err();

        assert_eq!(error.kind(), ErrorKind::VmdkDescriptor);
    }

    #[test]
    fn parent_file_name_hint_when_checked_is_backing_file() {
        let text = descriptor(
            "monolithicSparse",
            "parentFileNameHint=\"base.vmdk\"\nRW 8 SPARSE \"s.vmdk\"",
        );

        let error = check(&text).unwrap_err();

        assert_eq!(error.kind(), ErrorKind::BackingFile);
    }

    #[test]
    fn parent_file_name_hint_in_a_comment_when_checked_is_backing_file() {
        let text = descriptor(
            "monolithicSparse",
            "# parentFileNameHint=\"/etc/shadow\"\nRW 8 SPARSE \"s.vmdk\"",
        );

        let error = check(&text).unwrap_err();

        assert_eq!(error.kind(), ErrorKind::BackingFile);
    }

    #[test]
    fn second_create_type_when_checked_is_descriptor_error() {
        let text = descriptor(
            "monolithicSparse",
            "createType=\"monolithicFlat\"\nRW 8 FLAT \"victim\" 0",
        );

        let error = check(&text).unwrap_err();

        assert_eq!(error.kind(), ErrorKind::VmdkDescriptor);
    }

    #[test]
    fn non_ascii_descriptor_when_checked_is_descriptor_error() {
        let mut text = descriptor("monolithicSparse", "RW 8 SPARSE \"s.vmdk\"");
        text.push(0xff);

        let error = check(&text).unwrap_err();

        assert_eq!(error.kind(), ErrorKind::VmdkDescriptor);
    }
}
