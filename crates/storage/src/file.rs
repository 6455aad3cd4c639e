//! The `file` pool: images are files under `<root>/images/`, named by image
//! id. Importing a staged upload is a rename (O(1)); the file is never
//! written again, so disks and later layers can use it as a backing file.
//! Disks are qcow2 overlays under `<root>/disks/<name>.qcow2` whose backing
//! file is an image: creating one is O(1) whatever the image's size.

use std::collections::{BTreeMap, BTreeSet};
use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use domain::{Error, ImageId, Result};
use tokio::io::AsyncSeekExt;

use crate::{qemu_img, DiskSource, Garbage, GarbageKind, ImageReader, Pool};

const SCHEME: &str = "file://";
/// Files a backing chain may have when its identity is named for an export
/// (never follow a chain blindly; snapshots keep chains far shorter).
const MAX_EXPORT_CHAIN: usize = 4096;

#[derive(Debug, Clone)]
pub struct FilePool {
    root: PathBuf,
}

impl FilePool {
    /// Opens (creating its directories) the pool under `root`.
    pub async fn open(root: impl Into<PathBuf>) -> Result<FilePool> {
        let root = root.into();
        for dir in ["images", "disks"] {
            let dir = root.join(dir);
            tokio::fs::create_dir_all(&dir).await.map_err(|e| {
                Error::unavailable(format!(
                    "Cannot create the file pool at {}: {e}",
                    dir.display()
                ))
            })?;
        }
        Ok(FilePool { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn image_path(&self, id: ImageId) -> PathBuf {
        self.root.join("images").join(id.to_string())
    }

    fn disk_path(&self, name: &str) -> Result<PathBuf> {
        if !is_safe_name(name) {
            return Err(Error::invalid(format!(
                "'{name}' is not a valid disk name."
            )));
        }
        Ok(self.root.join("disks").join(format!("{name}.qcow2")))
    }

    /// The path behind an image location, refusing anything outside the
    /// pool: an upload under `images/`, or a layer under `disks/` (an image
    /// made from a server's disk).
    pub fn path_of(&self, location: &str) -> Result<PathBuf> {
        self.path_in(location, "images", |n| n.parse::<ImageId>().is_ok())
            .or_else(|_| self.disk_path_of(location))
    }

    /// The path behind a disk location, refusing anything outside the pool.
    pub fn disk_path_of(&self, location: &str) -> Result<PathBuf> {
        self.path_in(location, "disks", |n| {
            n.strip_suffix(".qcow2").is_some_and(is_safe_name)
        })
    }

    fn path_in(
        &self,
        location: &str,
        dir: &str,
        valid_name: impl Fn(&str) -> bool,
    ) -> Result<PathBuf> {
        let path = location
            .strip_prefix(SCHEME)
            .map(PathBuf::from)
            .ok_or_else(|| Error::internal(format!("'{location}' is not a file pool location.")))?;
        let parent = self.root.join(dir);
        let inside = path.parent() == Some(parent.as_path())
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(valid_name);
        if !inside {
            return Err(Error::internal(format!(
                "'{location}' is outside the file pool's {dir}."
            )));
        }
        Ok(path)
    }

    async fn list(&self, dir: &str) -> Result<Vec<String>> {
        let dir = self.root.join(dir);
        let mut entries = tokio::fs::read_dir(&dir)
            .await
            .map_err(io_error(format!("Cannot list {}", dir.display())))?;
        let mut found = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(io_error(format!("Cannot list {}", dir.display())))?
        {
            found.push(format!("{SCHEME}{}", entry.path().display()));
        }
        Ok(found)
    }
}

/// Disk names are ids: letters, digits, `-` and `_` only.
pub(crate) fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

async fn remove_if_present(path: &Path) -> Result<()> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => {
            Err(Error::unavailable(format!("Cannot delete {}: {e}", path.display())).with_source(e))
        }
    }
}

fn io_error(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| {
        let error = match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::new(domain::ErrorKind::NotFound, format!("{what}: not found."))
            }
            _ => Error::unavailable(format!("{what}: {e}")),
        };
        error.with_source(e)
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
            .map_err(io_error(format!(
                "Cannot move the upload of image {id} into the pool"
            )))?;
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
        Ok(ImageReader {
            reader: Box::pin(file),
            size,
        })
    }

    async fn delete_image(&self, location: &str) -> Result<()> {
        remove_if_present(&self.path_of(location)?).await
    }

    async fn image_locations(&self) -> Result<Vec<String>> {
        self.list("images").await
    }

    async fn create_disk(
        &self,
        name: &str,
        image_location: &str,
        image_format: &str,
        size: u64,
    ) -> Result<String> {
        let path = self.disk_path(name)?;
        let backing = self.path_of(image_location)?;
        let image_size = qemu_img::info_of_own(&backing, image_format)
            .await?
            .virtual_size;
        let partial = path.with_extension("qcow2.part");
        qemu_img::create_overlay(&partial, &backing, image_format, size.max(image_size)).await?;
        tokio::fs::rename(&partial, &path)
            .await
            .map_err(io_error(format!("Cannot create disk {name}")))?;
        Ok(format!("{SCHEME}{}", path.display()))
    }

    fn disk_source(&self, location: &str) -> Result<DiskSource> {
        Ok(DiskSource::File {
            path: self.disk_path_of(location)?,
            format: "qcow2".into(),
        })
    }

    async fn delete_disk(&self, location: &str) -> Result<()> {
        remove_if_present(&self.disk_path_of(location)?).await
    }

    async fn disk_locations(&self) -> Result<Vec<String>> {
        let all = self.list("disks").await?;
        Ok(all.into_iter().filter(|l| l.ends_with(".qcow2")).collect())
    }

    /// Mark and sweep, deciding only: every file a root needs, following
    /// qcow2 backing files through whole chains (no depth cap), is kept;
    /// every other file under `images/` and `disks/` is garbage. A chain
    /// that cannot be read (a backing file missing or unreadable, a cycle)
    /// fails the plan: nothing is deleted on a guess.
    async fn plan_garbage(&self, roots: &BTreeSet<String>) -> Result<Vec<Garbage>> {
        let needed = self.mark(roots).await?;
        let mut garbage = Vec::new();
        for (what, dir) in [(GarbageKind::Image, "images"), (GarbageKind::Disk, "disks")] {
            for location in self.list(dir).await? {
                let Ok(path) = self.path_of(&location) else {
                    continue;
                };
                if !needed.contains(&path) {
                    garbage.push(Garbage {
                        location,
                        what,
                        reason: "no root's backing chain goes through it".into(),
                    });
                }
            }
        }
        Ok(garbage)
    }

    async fn delete_garbage(&self, garbage: &[Garbage]) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for g in garbage {
            remove_if_present(&self.path_of(&g.location)?).await?;
            tracing::info!(pool = "file", location = %g.location, reason = %g.reason, "garbage deleted");
            removed.push(g.location.clone());
        }
        Ok(removed)
    }

    fn new_overlay(&self, disk: &str, name: &str) -> Result<Option<(String, PathBuf)>> {
        self.disk_path_of(disk)?;
        let path = self.disk_path(name)?;
        Ok(Some((format!("{SCHEME}{}", path.display()), path)))
    }

    async fn create_overlay(&self, disk: &str, target: &str) -> Result<()> {
        let backing = self.disk_path_of(disk)?;
        let path = self.disk_path_of(target)?;
        let size = qemu_img::info_of_own(&backing, "qcow2").await?.virtual_size;
        let partial = path.with_extension("qcow2.part");
        qemu_img::create_overlay(&partial, &backing, "qcow2", size).await?;
        tokio::fs::rename(&partial, &path)
            .await
            .map_err(io_error(format!(
                "Cannot create the overlay {}",
                path.display()
            )))
    }

    async fn overlay_is_valid(&self, location: &str) -> Result<bool> {
        let path = self.disk_path_of(location)?;
        if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(false);
        }
        let Some(path) = path.to_str() else {
            return Ok(false);
        };
        Ok(qemu_img::run(&["check", "-q", "-f", "qcow2", "-U", path])
            .await
            .is_ok())
    }

    fn volumes(&self) -> Option<&dyn crate::volumes::VolumePool> {
        Some(self)
    }

    fn layer_path(&self, location: &str) -> Option<PathBuf> {
        self.path_of(location).ok()
    }

    async fn backing_graph(&self) -> Result<Option<BTreeMap<PathBuf, Option<PathBuf>>>> {
        let mut graph = BTreeMap::new();
        for location in self
            .list("images")
            .await?
            .into_iter()
            .chain(self.list("disks").await?)
        {
            let Ok(path) = self.path_of(&location) else {
                continue;
            };
            let backing = backing_of(&path).await?.map(|b| resolved(&path, &b));
            graph.insert(path, backing);
        }
        Ok(Some(graph))
    }

    async fn export_image(&self, location: &str, format: &str, dest: &Path) -> Result<bool> {
        let path = self.path_of(location)?;
        if backing_of(&path).await?.is_none() {
            return Ok(false);
        }
        let (Some(src), Some(out)) = (path.to_str(), dest.to_str()) else {
            return Err(Error::internal("A pool path is not UTF-8."));
        };
        qemu_img::run(&["convert", "-q", "-U", "-f", "qcow2", "-O", format, src, out]).await?;
        Ok(true)
    }

    async fn export_identity(&self, location: &str) -> Result<Option<String>> {
        let top = self.path_of(location)?;
        let mut chain = vec![top.clone()];
        let mut at = top;
        while let Some(parent) = backing_of(&at).await? {
            let parent = resolved(&at, &parent);
            if chain.contains(&parent) || chain.len() > MAX_EXPORT_CHAIN {
                return Err(Error::internal(format!(
                    "The backing chain of {location} is a cycle or deeper than {MAX_EXPORT_CHAIN} files."
                )));
            }
            chain.push(parent.clone());
            at = parent;
        }
        if chain.len() == 1 {
            return Ok(None);
        }
        let names: Vec<String> = chain.iter().map(|p| p.display().to_string()).collect();
        Ok(Some(names.join("\n")))
    }
}

impl FilePool {
    fn is_inside(&self, path: &Path) -> bool {
        let loc = format!("{SCHEME}{}", path.display());
        self.path_of(&loc).is_ok()
    }

    /// Every file of the pool the chains of `roots` go through. Whole
    /// chains are followed, however deep; a walk ends at a file an earlier
    /// walk marked (its whole chain is marked already), at a file with no
    /// backing file, or at a backing file outside the pool (never deleted
    /// here anyway). A root whose file does not exist needs nothing. A
    /// backing file that is missing or unreadable, or a cycle, is an error.
    pub async fn mark(&self, roots: &BTreeSet<String>) -> Result<BTreeSet<PathBuf>> {
        let mut needed = BTreeSet::new();
        for root in roots {
            let Ok(path) = self.path_of(root) else {
                continue;
            };
            if !tokio::fs::try_exists(&path).await.unwrap_or(true) {
                tracing::warn!(%root, "a root's file does not exist; it needs nothing");
                continue;
            }
            let mut walk = Vec::new();
            let mut at = path;
            loop {
                if needed.contains(&at) {
                    break;
                }
                if walk.contains(&at) {
                    return Err(Error::internal(format!(
                        "The backing chain of {root} goes round in a cycle through {}; garbage collection stops.",
                        at.display()
                    )));
                }
                walk.push(at.clone());
                match backing_of(&at).await? {
                    Some(parent) if self.is_inside(&resolved(&at, &parent)) => {
                        let parent = resolved(&at, &parent);
                        if !tokio::fs::try_exists(&parent).await.unwrap_or(false) {
                            return Err(Error::unavailable(format!(
                                "{} stands on {}, which is missing; garbage collection stops.",
                                at.display(),
                                parent.display()
                            )));
                        }
                        at = parent;
                    }
                    _ => break,
                }
            }
            needed.extend(walk);
        }
        Ok(needed)
    }
}

/// A backing file name as QEMU resolves it: relative to the directory of
/// the file that names it.
fn resolved(file: &Path, backing: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if backing.is_relative() => dir.join(backing),
        _ => backing.to_path_buf(),
    }
}

/// The backing file named in a qcow2 header (offset 8: u64 offset of the
/// name, offset 16: u32 its length), or `None` for any other file. Only
/// Snapstack's own layers are read here; uploads never carry one.
async fn backing_of(path: &Path) -> Result<Option<PathBuf>> {
    use tokio::io::AsyncReadExt;
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::unavailable(format!(
                "Cannot open {}: {e}",
                path.display()
            )))
        }
    };
    let mut header = [0u8; 20];
    if file.read_exact(&mut header).await.is_err() || &header[..4] != b"QFI\xfb" {
        return Ok(None);
    }
    let offset = u64::from_be_bytes(header[8..16].try_into().unwrap_or_default());
    let len = u32::from_be_bytes(header[16..20].try_into().unwrap_or_default()) as usize;
    if offset == 0 || len == 0 || len > 4096 {
        return Ok(None);
    }
    let mut name = vec![0u8; len];
    file.seek(SeekFrom::Start(offset))
        .await
        .map_err(io_error(format!("Cannot read {}", path.display())))?;
    file.read_exact(&mut name)
        .await
        .map_err(io_error(format!("Cannot read {}", path.display())))?;
    Ok(String::from_utf8(name).ok().map(PathBuf::from))
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
        let location = pool
            .import_image(ImageId::new(), &staged, "raw")
            .await
            .unwrap();

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
        let location = pool
            .import_image(ImageId::new(), &staged, "raw")
            .await
            .unwrap();

        pool.delete_image(&location).await.unwrap();
        pool.delete_image(&location).await.unwrap();

        assert!(pool.image_locations().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn disk_when_created_from_image_then_overlay_reads_image_data() {
        let dir = tempfile::tempdir().unwrap();
        let pool = FilePool::open(dir.path().join("pool")).await.unwrap();
        let staged = dir.path().join("upload");
        tokio::fs::write(&staged, vec![7u8; 1 << 20]).await.unwrap();
        let image = pool
            .import_image(ImageId::new(), &staged, "raw")
            .await
            .unwrap();

        let disk = pool
            .create_disk("server-1", &image, "raw", 4 << 20)
            .await
            .unwrap();

        let DiskSource::File { path, .. } = pool.disk_source(&disk).unwrap() else {
            panic!("not a file")
        };
        let info = qemu_img::info_of_own(&path, "qcow2").await.unwrap();
        assert_eq!(info.virtual_size, 4 << 20);
        assert_eq!(
            info.backing_filename.as_deref(),
            pool.path_of(&image).unwrap().to_str()
        );
        assert_eq!(pool.disk_locations().await.unwrap(), vec![disk.clone()]);
        pool.delete_disk(&disk).await.unwrap();
        assert!(pool.disk_locations().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn garbage_when_layer_backs_a_root_then_chain_kept_and_rest_removed() {
        let dir = tempfile::tempdir().unwrap();
        let pool = FilePool::open(dir.path().join("pool")).await.unwrap();
        let staged = dir.path().join("upload");
        tokio::fs::write(&staged, vec![1u8; 1 << 20]).await.unwrap();
        let base = pool
            .import_image(ImageId::new(), &staged, "raw")
            .await
            .unwrap();
        let disk = pool.create_disk("vm-a", &base, "raw", 0).await.unwrap();
        let (top, _) = pool.new_overlay(&disk, "vm-a-2").unwrap().unwrap();
        pool.create_overlay(&disk, &top).await.unwrap();
        let other = pool.create_disk("vm-b", &base, "raw", 0).await.unwrap();

        let removed = pool
            .collect_garbage(&BTreeSet::from([top.clone()]))
            .await
            .unwrap();

        assert_eq!(removed, vec![other]);
        assert!(pool.overlay_is_valid(&top).await.unwrap());
        assert_eq!(pool.disk_locations().await.unwrap().len(), 2);
        assert_eq!(pool.image_locations().await.unwrap(), vec![base]);
    }

    /// A chain of `depth` overlays over a raw image, top last.
    async fn chain(pool: &FilePool, depth: usize) -> Vec<String> {
        let staged = pool.root().join("upload");
        tokio::fs::write(&staged, vec![1u8; 64 << 10])
            .await
            .unwrap();
        let base = pool
            .import_image(ImageId::new(), &staged, "raw")
            .await
            .unwrap();
        let mut files = vec![pool.create_disk("layer-0", &base, "raw", 0).await.unwrap()];
        for n in 1..depth {
            let (next, _) = pool
                .new_overlay(files.last().unwrap(), &format!("layer-{n}"))
                .unwrap()
                .unwrap();
            pool.create_overlay(files.last().unwrap(), &next)
                .await
                .unwrap();
            files.push(next);
        }
        files.insert(0, base);
        files
    }

    #[tokio::test]
    async fn garbage_when_chain_deeper_than_64_then_every_layer_kept() {
        let dir = tempfile::tempdir().unwrap();
        let pool = FilePool::open(dir.path().join("pool")).await.unwrap();
        let files = chain(&pool, 80).await;
        let top = files.last().unwrap().clone();
        // A second root part-way down: marked first, it must not cut the
        // walk from the top short.
        let middle = files[40].clone();

        let garbage = pool
            .plan_garbage(&BTreeSet::from([middle, top]))
            .await
            .unwrap();

        assert_eq!(garbage, vec![]);
    }

    #[tokio::test]
    async fn garbage_when_backing_file_missing_then_error_and_nothing_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let pool = FilePool::open(dir.path().join("pool")).await.unwrap();
        let files = chain(&pool, 4).await;
        let other = pool
            .create_disk("other", &files[0], "raw", 0)
            .await
            .unwrap();
        tokio::fs::remove_file(pool.path_of(&files[2]).unwrap())
            .await
            .unwrap();

        let err = pool
            .collect_garbage(&BTreeSet::from([files[4].clone()]))
            .await
            .unwrap_err();

        assert_eq!(err.kind(), domain::ErrorKind::Unavailable);
        assert!(pool.path_of(&other).unwrap().exists());
        assert!(pool.path_of(&files[1]).unwrap().exists());
    }

    #[tokio::test]
    async fn garbage_when_chain_is_a_cycle_then_error() {
        let dir = tempfile::tempdir().unwrap();
        let pool = FilePool::open(dir.path().join("pool")).await.unwrap();
        let files = chain(&pool, 3).await;
        // layer-1 is made to stand on layer-2, which stands on layer-1.
        let (lower, upper) = (
            pool.path_of(&files[2]).unwrap(),
            pool.path_of(&files[3]).unwrap(),
        );
        qemu_img::run(&[
            "rebase",
            "-u",
            "-f",
            "qcow2",
            "-b",
            upper.to_str().unwrap(),
            "-F",
            "qcow2",
            lower.to_str().unwrap(),
        ])
        .await
        .unwrap();

        let err = pool
            .plan_garbage(&BTreeSet::from([files[3].clone()]))
            .await
            .unwrap_err();

        assert!(err.to_string().contains("cycle"), "{err}");
    }

    #[tokio::test]
    async fn disk_when_name_has_path_characters_then_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let pool = FilePool::open(dir.path().join("pool")).await.unwrap();

        let err = pool
            .create_disk("../evil", "file:///x", "raw", 1)
            .await
            .unwrap_err();

        assert_eq!(err.kind(), domain::ErrorKind::InvalidInput);
    }

    #[tokio::test]
    async fn location_when_outside_pool_then_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pool = FilePool::open(dir.path().join("pool")).await.unwrap();

        let err = pool.delete_image("file:///etc/passwd").await.unwrap_err();

        assert_eq!(err.kind(), domain::ErrorKind::Internal);
    }
}
