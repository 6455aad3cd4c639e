//! The crate's one error type: a matchable [`ErrorKind`] plus a sentence saying
//! what was wrong with the image, and the I/O error underneath when there is one.

use std::io;

/// What went wrong, for callers that need to react differently (for example map
/// a rejection to HTTP 400 but an [`ErrorKind::Io`] failure to 500).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The content is not in the format the uploader declared.
    FormatMismatch,
    /// The content carries the signatures of more than one format (say a qcow2
    /// header and an MBR boot signature), so it cannot be trusted as either.
    AmbiguousFormat,
    /// The content is a format we recognise but never accept (QED, LUKS,
    /// qcow version 1, Bochs, cloop).
    UnsupportedFormat,
    /// The image refers to a backing or parent file (qcow2 backing file, vmdk
    /// `parentFileNameHint`, differencing vhd/vhdx/vdi).
    BackingFile,
    /// A qcow2 image keeps its data in an external data file.
    DataFile,
    /// A qcow2 image uses incompatible feature bits this inspector does not know.
    UnknownFeatures,
    /// A vmdk image is not a single-file `monolithicSparse` or `streamOptimized` image.
    VmdkSubformat,
    /// A vmdk descriptor's extent line names a path.
    VmdkExtentPath,
    /// A vmdk descriptor is not text, has lines we do not understand, or lists no extent.
    VmdkDescriptor,
    /// An MBR or GPT protective MBR fails the partition-table checks.
    PartitionTable,
    /// The image ends before a structure its header promises.
    Truncated,
    /// A header field is out of range or inconsistent.
    Malformed,
    /// Reading the image failed.
    Io,
}

/// Why an image was not accepted, or could not be read.
///
/// `Display` is a sentence about the image; the underlying I/O error, if any,
/// is available through [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<io::Error>,
}

impl Error {
    /// What went wrong, to match on.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn io(message: impl Into<String>, source: io::Error) -> Self {
        Self {
            kind: ErrorKind::Io,
            message: message.into(),
            source: Some(source),
        }
    }

    pub(crate) fn truncated(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Truncated, message)
    }

    pub(crate) fn malformed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Malformed, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn io_error_when_displayed_does_not_repeat_its_source() {
        let source = io::Error::other("disk on fire");

        let error = Error::io("could not read the image at offset 0", source);

        assert_eq!(error.kind(), ErrorKind::Io);
        assert_eq!(error.to_string(), "could not read the image at offset 0");
        assert_eq!(error.source().unwrap().to_string(), "disk on fire");
    }
}
