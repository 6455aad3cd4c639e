//! An in-memory [`VolumePool`] for fast unit tests of the layers above:
//! volumes and snapshots are entries that remember their parent, so that
//! garbage collection keeps what something stands on, as the real pools do.
//! Creating calls are idempotent, as the trait asks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;

use async_trait::async_trait;
use domain::{Error, Result};

use super::{FrozenVolume, VolumePool};
use crate::{DiskSource, Garbage, GarbageKind};

const SCHEME: &str = "fake-volume://";
/// Where a hypervisor "opens" fake volumes.
const VOLUME_FILES: &str = "/fake-volumes";

#[derive(Debug, Clone)]
struct Entry {
    /// What it stands on: an image location, a snapshot, or a volume.
    parent: Option<String>,
    size: u64,
    /// Clone generations under it.
    depth: usize,
}

/// In-memory volumes and snapshots.
#[derive(Debug, Default)]
pub struct FakeVolumes {
    entries: Mutex<BTreeMap<String, Entry>>,
    /// Snapshots freeze the volume's top and put a new top over it (the
    /// file pool), instead of snapshotting in place (rbd).
    layered: bool,
    /// Layered: new tops named by `planned_snapshot` that a hypervisor is
    /// to create, by path → (location, the top it goes over).
    planned: Mutex<BTreeMap<PathBuf, (String, String)>>,
    /// The next call that creates data fails (tests of undo paths).
    fail_next: std::sync::atomic::AtomicBool,
}

impl FakeVolumes {
    /// Volumes snapshotted in place, as on rbd.
    pub fn new() -> Self {
        Self::default()
    }

    /// Volumes snapshotted as layers, as on the file pool: the frozen top
    /// is the snapshot, the volume goes on in a new top (made by the
    /// hypervisor for an attached volume: see [`file_created`](Self::file_created)).
    pub fn layered() -> Self {
        FakeVolumes {
            layered: true,
            ..Self::default()
        }
    }

    /// Makes the next call that creates a volume or a snapshot fail with
    /// `Unavailable`, creating nothing; `false` takes it back.
    pub fn fail_next_create(&self, fail: bool) {
        self.fail_next
            .store(fail, std::sync::atomic::Ordering::SeqCst);
    }

    /// Consumes an injected failure, if any.
    fn injected_failure(&self) -> Result<()> {
        if self
            .fail_next
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(Error::unavailable(
                "injected failure of the fake volume pool",
            ));
        }
        Ok(())
    }

    /// A hypervisor created the file at `path`: a planned new top there
    /// exists from now on. False when no top was planned there.
    pub fn file_created(&self, path: &std::path::Path) -> bool {
        let planned = self.planned.lock().ok().and_then(|mut p| p.remove(path));
        if let Some((top, under)) = planned {
            let _ = self.add_top(&top, &under);
            return true;
        }
        // A snapshot the hypervisor took natively: `<volume file>@<name>`.
        let Some(name) = path
            .strip_prefix(VOLUME_FILES)
            .ok()
            .and_then(|n| n.to_str())
        else {
            return false;
        };
        let Some((volume, snap)) = name.rsplit_once('@') else {
            return false;
        };
        let volume = format!("{SCHEME}{volume}");
        let Ok(entry) = self.get(&volume) else {
            return false;
        };
        let snapshot = format!("{volume}@{snap}");
        let _ = self.with(|entries| {
            entries.entry(snapshot).or_insert(Entry {
                parent: Some(volume),
                size: entry.size,
                depth: entry.depth,
            });
            Ok(())
        });
        true
    }

    /// The new top of `volume` for snapshot `snap` (layered).
    fn top_of(volume: &str, snap: &str) -> String {
        format!("{volume}.{snap}")
    }

    fn add_top(&self, top: &str, under: &str) -> Result<()> {
        let entry = self.get(under)?;
        self.with(|entries| {
            entries.entry(top.to_string()).or_insert(Entry {
                parent: Some(under.to_string()),
                size: entry.size,
                depth: entry.depth + 1,
            });
            Ok(())
        })
    }

    /// Every volume and snapshot location held.
    pub fn locations(&self) -> Vec<String> {
        self.entries
            .lock()
            .map(|e| e.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether a volume or snapshot is stored at `location`.
    pub fn exists(&self, location: &str) -> bool {
        self.entries.lock().is_ok_and(|e| e.contains_key(location))
    }

    /// Every volume and snapshot location held, with what it stands on.
    pub fn parents(&self) -> BTreeMap<String, Option<String>> {
        self.entries
            .lock()
            .map(|e| {
                e.iter()
                    .map(|(l, e)| (l.clone(), e.parent.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, Entry>) -> Result<T>) -> Result<T> {
        let mut entries = self
            .entries
            .lock()
            .map_err(|_| Error::internal("fake volume pool poisoned"))?;
        f(&mut entries)
    }

    fn add(&self, name: &str, entry: Entry) -> Result<String> {
        let location = format!("{SCHEME}{name}");
        self.with(|entries| {
            entries.entry(location.clone()).or_insert(entry);
            Ok(())
        })?;
        Ok(location)
    }

    fn get(&self, location: &str) -> Result<Entry> {
        self.with(|entries| {
            entries
                .get(location)
                .cloned()
                .ok_or_else(|| Error::not_found("volume data", location))
        })
    }
}

#[async_trait]
impl VolumePool for FakeVolumes {
    async fn create_volume(&self, name: &str, size: u64) -> Result<String> {
        self.injected_failure()?;
        self.add(
            name,
            Entry {
                parent: None,
                size,
                depth: 0,
            },
        )
    }

    async fn volume_from_image(
        &self,
        name: &str,
        image_location: &str,
        _image_format: &str,
        size: u64,
    ) -> Result<String> {
        self.injected_failure()?;
        self.add(
            name,
            Entry {
                parent: Some(image_location.to_string()),
                size,
                depth: 1,
            },
        )
    }

    fn planned_snapshot(
        &self,
        volume: &str,
        snap: &str,
    ) -> Result<(FrozenVolume, Option<std::path::PathBuf>)> {
        if self.layered {
            let top = Self::top_of(volume, snap);
            let path = match self.volume_source(&top)? {
                DiskSource::File { path, .. } => path,
                DiskSource::Rbd { .. } => unreachable!("fake volumes are files"),
            };
            if let Ok(mut planned) = self.planned.lock() {
                planned.insert(path.clone(), (top.clone(), volume.to_string()));
            }
            return Ok((
                FrozenVolume {
                    snapshot: volume.to_string(),
                    volume: top,
                },
                Some(path),
            ));
        }
        Ok((
            FrozenVolume {
                snapshot: format!("{volume}@{snap}"),
                volume: volume.to_string(),
            },
            None,
        ))
    }

    async fn snapshot_volume(&self, volume: &str, snap: &str) -> Result<FrozenVolume> {
        self.injected_failure()?;
        if self.layered {
            let top = Self::top_of(volume, snap);
            self.add_top(&top, volume)?;
            return Ok(FrozenVolume {
                snapshot: volume.to_string(),
                volume: top,
            });
        }
        let entry = self.get(volume)?;
        let snapshot = format!("{volume}@{snap}");
        self.with(|entries| {
            entries.entry(snapshot.clone()).or_insert(Entry {
                parent: Some(volume.to_string()),
                size: entry.size,
                depth: entry.depth,
            });
            Ok(())
        })?;
        Ok(FrozenVolume {
            snapshot,
            volume: volume.to_string(),
        })
    }

    async fn snapshot_exists(&self, snapshot: &str) -> Result<bool> {
        Ok(self.get(snapshot).is_ok())
    }

    async fn volume_from_snapshot(&self, name: &str, snapshot: &str, size: u64) -> Result<String> {
        self.injected_failure()?;
        let parent = self.get(snapshot)?;
        self.add(
            name,
            Entry {
                parent: Some(snapshot.to_string()),
                size: size.max(parent.size),
                depth: parent.depth + 1,
            },
        )
    }

    async fn extend_volume(&self, volume: &str, size: u64) -> Result<()> {
        self.with(|entries| {
            let entry = entries
                .get_mut(volume)
                .ok_or_else(|| Error::not_found("volume data", volume))?;
            entry.size = entry.size.max(size);
            Ok(())
        })
    }

    async fn clone_depth(&self, volume: &str) -> Result<usize> {
        Ok(self.get(volume)?.depth)
    }

    async fn flatten_volume(&self, volume: &str) -> Result<()> {
        self.with(|entries| {
            let entry = entries
                .get_mut(volume)
                .ok_or_else(|| Error::not_found("volume data", volume))?;
            entry.parent = None;
            entry.depth = 0;
            Ok(())
        })
    }

    async fn volume_size(&self, volume: &str) -> Result<u64> {
        Ok(self.get(volume)?.size)
    }

    fn volume_source(&self, location: &str) -> Result<DiskSource> {
        let name = location
            .strip_prefix(SCHEME)
            .ok_or_else(|| Error::internal(format!("'{location}' is not a fake volume.")))?;
        Ok(DiskSource::File {
            path: PathBuf::from(VOLUME_FILES).join(name),
            format: "raw".into(),
        })
    }

    async fn plan_volume_garbage(&self, roots: &BTreeSet<String>) -> Result<Vec<Garbage>> {
        self.with(|entries| {
            // Mark: every root and what it stands on, whole chains.
            let mut needed = BTreeSet::new();
            for root in roots {
                let mut at = Some(root.clone());
                while let Some(location) = at {
                    if !needed.insert(location.clone()) {
                        break;
                    }
                    at = entries.get(&location).and_then(|e| e.parent.clone());
                }
            }
            Ok(entries
                .keys()
                .filter(|l| !needed.contains(*l))
                .map(|location| Garbage {
                    location: location.clone(),
                    what: GarbageKind::Volume,
                    reason: "no root stands on it".into(),
                })
                .collect())
        })
    }

    async fn delete_volume_garbage(&self, garbage: &[Garbage]) -> Result<Vec<String>> {
        self.with(|entries| {
            Ok(garbage
                .iter()
                .filter(|g| entries.remove(&g.location).is_some())
                .map(|g| g.location.clone())
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn snapshot_with_a_clone_when_not_a_root_then_kept_until_the_clone_goes() {
        let pool = FakeVolumes::new();
        let v1 = pool.create_volume("v1", 10).await.unwrap();
        let frozen = pool.snapshot_volume(&v1, "s").await.unwrap();
        let v2 = pool
            .volume_from_snapshot("v2", &frozen.snapshot, 5)
            .await
            .unwrap();

        let first = pool
            .collect_volume_garbage(&BTreeSet::from([v2.clone()]))
            .await
            .unwrap();
        let second = pool.collect_volume_garbage(&BTreeSet::new()).await.unwrap();

        assert!(first.is_empty());
        assert_eq!(second.len(), 3);
        assert!(pool.locations().is_empty());
    }
}
