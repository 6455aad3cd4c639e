//! The `file` pool: images are files under `<root>/images/`, named by image
//! id. Importing a staged upload is a rename (O(1)); the file is never
//! written again, so later layers can use it as a backing file.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use domain::{Error, ImageId, Result};
use tokio::io::AsyncSeekExt;

use crate::{ImageReader, Pool};

const SCHEME: &str = "file://";

#[derive(Debug, Clone)]
pub struct FilePool {
    root: PathBuf,
}

impl FilePool {
    /// Opens (creating its directories) the pool under `root`.
    pub async fn open(root: impl Into<PathBuf>) -> Result<FilePool> {
        let root = root.into();
        let images = root.join("images");
        tokio::fs::create_dir_all(&images).await.map_err(|e| {
            Error::unavailable(format!("Cannot create the file pool at {}: {e}", images.display()))
        })?;
        Ok(FilePool { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn image_path(&self, id: ImageId) -> PathBuf {
        self.root.join("images").join(id.to_string())
    }

    /// The path behind a location, refusing anything outside the pool.
    pub fn path_of(&self, location: &str) -> Result<PathBuf> {
        let path = location
            .strip_prefix(SCHEME)
            .map(PathBuf::from)
            .ok_or_else(|| Error::internal(format!("'{location}' is not a file pool location.")))?;
        let images = self.root.join("images");
        let inside = path.parent() == Some(images.as_path())
            && path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.parse::<ImageId>().is_ok());
        if !inside {
            return Err(Error::internal(format!("'{location}' is outside the file pool.")));
        }
        Ok(path)
    }
}

fn io_error(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::new(domain::ErrorKind::NotFound, format!("{what}: not found.")),
        _ => Error::unavailable(format!("{what}: {e}")),
    }
}

#[async_trait]
impl Pool for FilePool {
    fn kind(&self) -> &'static str {
        "file"
    }

    async fn import_image(&self, id: ImageId, staged: &Path, _format: &str) -> Result<String> {
        let dest = self.image_path(id);
        tokio::fs::rename(staged, &dest)
            .await
            .map_err(io_error(format!("Cannot move the upload of image {id} into the pool")))?;
        // The layer is immutable from now on.
        let mut perms = tokio::fs::metadata(&dest)
            .await
            .map_err(io_error(format!("Cannot read image {id} in the pool")))?
            .permissions();
        perms.set_readonly(true);
        tokio::fs::set_permissions(&dest, perms)
            .await
            .map_err(io_error(format!("Cannot make image {id} read-only")))?;
        Ok(format!("{SCHEME}{}", dest.display()))
    }

    async fn open_image(&self, location: &str, offset: u64) -> Result<ImageReader> {
        let path = self.path_of(location)?;
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(io_error(format!("Cannot open {}", path.display())))?;
        let size = file
            .metadata()
            .await
            .map_err(io_error(format!("Cannot stat {}", path.display())))?
            .len();
        file.seek(SeekFrom::Start(offset))
            .await
            .map_err(io_error(format!("Cannot seek in {}", path.display())))?;
        Ok(ImageReader { reader: Box::pin(file), size })
    }

    async fn delete_image(&self, location: &str) -> Result<()> {
        let path = self.path_of(location)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::unavailable(format!("Cannot delete {}: {e}", path.display()))),
        }
    }

    async fn image_locations(&self) -> Result<Vec<String>> {
        let images = self.root.join("images");
        let mut dir = tokio::fs::read_dir(&images)
            .await
            .map_err(io_error(format!("Cannot list {}", images.display())))?;
        let mut found = Vec::new();
        while let Some(entry) = dir
            .next_entry()
            .await
            .map_err(io_error(format!("Cannot list {}", images.display())))?
        {
            found.push(format!("{SCHEME}{}", entry.path().display()));
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn imported_image_when_read_from_offset_then_tail_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let pool = FilePool::open(dir.path().join("pool")).await.unwrap();
        let staged = dir.path().join("upload");
        tokio::fs::write(&staged, b"0123456789").await.unwrap();
        let location = pool.import_image(ImageId::new(), &staged, "raw").await.unwrap();

        let mut reader = pool.open_image(&location, 6).await.unwrap();
        let mut tail = Vec::new();
        reader.reader.read_to_end(&mut tail).await.unwrap();

        assert_eq!(tail, b"6789");
        assert_eq!(reader.size, 10);
        assert!(!staged.exists());
    }

    #[tokio::test]
    async fn deleted_image_when_deleted_again_then_ok_and_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        let pool = FilePool::open(dir.path().join("pool")).await.unwrap();
        let staged = dir.path().join("upload");
        tokio::fs::write(&staged, b"x").await.unwrap();
        let location = pool.import_image(ImageId::new(), &staged, "raw").await.unwrap();

        pool.delete_image(&location).await.unwrap();
        pool.delete_image(&location).await.unwrap();

        assert!(pool.image_locations().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn location_when_outside_pool_then_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pool = FilePool::open(dir.path().join("pool")).await.unwrap();

        let err = pool.delete_image("file:///etc/passwd").await.unwrap_err();

        assert_eq!(err.kind(), domain::ErrorKind::Internal);
    }
}
