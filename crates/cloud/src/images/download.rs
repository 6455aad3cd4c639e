//! `GET /v2/images/{id}/file`: streamed from the pool, with byte ranges.

use domain::identity::{Caller, Role};
use domain::image::ImageStatus;
use domain::{Error, ErrorKind, Result};
use storage::ImageReader;
use tokio::io::AsyncSeekExt;

use crate::Cloud;

/// What a download request gets.
#[derive(Debug)]
pub enum Download {
    /// The image has no data yet (Glance answers 204).
    NoData,
    /// The data from `offset`, `length` bytes of it, out of `total`.
    Data {
        reader: ImageReader,
        offset: u64,
        length: u64,
        total: u64,
        checksum: Option<String>,
    },
}

impl Cloud {
    /// Opens an image's data for reading; `range` is an inclusive byte range
    /// (`first`, optional `last`) as in `Range: bytes=first-last`, or a
    /// suffix length (`Range: bytes=-n`) when `first` is `None`.
    pub async fn download_image(
        &self,
        caller: &Caller,
        id: &str,
        range: Option<(Option<u64>, Option<u64>)>,
    ) -> Result<Download> {
        let img = self.image(caller, id).await?;
        caller.require(Role::Reader, "download images")?;
        match img.status {
            ImageStatus::Active => {}
            ImageStatus::Deactivated if caller.is_admin() => {}
            ImageStatus::Deactivated => {
                return Err(Error::forbidden(format!(
                    "Image {} is deactivated; only an admin may download it.",
                    img.id
                )))
            }
            _ => return Ok(Download::NoData),
        }
        let location = img.location.as_deref().ok_or_else(|| {
            Error::internal(format!("Active image {} has no data location.", img.id))
        })?;
        // A layer of a backing chain (an image made from a server) is
        // exported whole first; an upload is streamed as stored.
        let exported = self.export_whole(&img, location).await?;
        let total = match &exported {
            Some((_, size)) => *size,
            None => img.size.unwrap_or(0),
        };
        let (offset, last) = match range {
            None => (0, total.saturating_sub(1)),
            Some((Some(first), last)) => {
                (first, last.unwrap_or(u64::MAX).min(total.saturating_sub(1)))
            }
            Some((None, Some(suffix))) => (total.saturating_sub(suffix), total.saturating_sub(1)),
            Some((None, None)) => return Err(unsatisfiable(total)),
        };
        if range.is_some() && (offset >= total || offset > last) {
            return Err(unsatisfiable(total));
        }
        let length = if total == 0 { 0 } else { last - offset + 1 };
        let reader = match exported {
            Some((mut file, size)) => {
                file.seek(std::io::SeekFrom::Start(offset))
                    .await
                    .map_err(|e| {
                        Error::unavailable(format!("Cannot read the exported image: {e}"))
                    })?;
                ImageReader {
                    reader: Box::pin(file),
                    size,
                }
            }
            None => self.pool.open_image(location, offset).await?,
        };
        Ok(Download::Data {
            reader,
            offset,
            length,
            total,
            checksum: img.checksum,
        })
    }
}

fn unsatisfiable(total: u64) -> Error {
    Error::new(
        ErrorKind::RangeNotSatisfiable,
        format!("The requested range is outside the image's {total} bytes."),
    )
}
