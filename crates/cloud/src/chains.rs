//! Keeping backing chains short (pools that layer: the file pool), with one
//! idempotent reconciler, [`Cloud::shorten_chains`], run after a snapshot,
//! before every garbage collection (so after every delete) and at start-up
//! after the sagas are recovered.
//!
//! Every snapshot adds a layer under a disk's or volume's top; deleting a
//! snapshot, image or point leaves its layer wherever it sits. Two passes,
//! both under garbage collection's lock held exclusively (no snapshot,
//! create or collection runs meanwhile):
//!
//! ```text
//!  release   a layer L no record names (a deleted snapshot's, image's),
//!            with exactly one file C standing on it:
//!              B ◀── L ◀── C ◀── …      ⇒      B ◀── C' ◀── …   (C' = C + L's clusters)
//!            L then has no dependant and the collection deletes it.
//!
//!  bound     a file F whose chain has more than `max_chain_depth` files:
//!              bottom ◀── … ◀── F      ⇒      bottom ◀── F'
//!            (F' = F + every cluster of the layers in between); those
//!            layers stay as long as something else stands on them.
//! ```
//! How C (or F) is rewritten: when a live VM has it open (its disk or an
//! attached volume, top or inner file), QMP `block-stream` into its node
//! with the new backing as `base-node`; otherwise `qemu-img rebase` in safe
//! mode. Neither changes what anyone reading C sees, nor writes B.
//!
//! Crash safety: `qemu-img rebase` (safe) first copies into C every cluster
//! that reads differently through the new backing, then rewrites C's header;
//! `block-stream` changes C's backing file when the job completes. At every
//! instant C reads the same against its old and its new backing, and L is
//! removed only by the collection, once no header names it. Interrupted,
//! the next run starts again from what the headers say.
//!
//! Skipped (the layer stays; the chain is one file longer): a layer with no
//! backing file of its own (the bottom), or with several dependants (each
//! would get a copy); a C with internal snapshots (their clusters read
//! through to L); a C two live VMs read (an image layer several servers
//! boot from); a file a QEMU unknown to the records holds (qemu-img's
//! write lock refuses, the run goes on with the next).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use domain::image::ImageStatus;
use domain::Result;
use serde_json::Value;

use crate::compute::hypervisor_error;
use crate::Cloud;

/// A file of the pool → the file its header names as backing file.
type Graph = BTreeMap<PathBuf, Option<PathBuf>>;

impl Cloud {
    /// Releases the layers no record names and bounds every chain (see the
    /// module header); returns how many files it rewrote. Pools that do
    /// not layer have nothing to do.
    pub async fn shorten_chains(&self) -> Result<usize> {
        if !self.gc_ready.load(std::sync::atomic::Ordering::SeqCst) {
            // Open sagas are recovered first: what they name is known then.
            return Ok(0);
        }
        let _exclusive = self.gc_lock.write().await;
        self.shorten_chains_locked().await
    }

    /// [`shorten_chains`](Cloud::shorten_chains) for a caller that holds
    /// the collector's lock exclusively (a saga step declared exclusive).
    pub(crate) async fn shorten_chains_locked(&self) -> Result<usize> {
        let Some(mut graph) = self.pool.backing_graph().await? else {
            return Ok(0);
        };
        let named = self.named_layers().await?;
        // Only what records need is worth rewriting: garbage goes as it is.
        let needed: BTreeSet<PathBuf> = named.iter().flat_map(|f| chain(&graph, f)).collect();
        graph.retain(|file, _| needed.contains(file));
        let live = self.live_files(&graph).await?;
        let mut rewritten = 0;
        let mut failed = BTreeSet::new();
        while let Some((layer, child, base)) = next_release(&graph, &named, &failed) {
            match self.rebase(&live, &child, &base, &layer).await {
                Ok(()) => {
                    tracing::info!(layer = %layer.display(), into = %child.display(),
                        base = %base.display(), "released layer merged into the file standing on it");
                    graph.insert(child, Some(base));
                    // Nothing stands on it any more: garbage, not part of
                    // any chain (it would count as a child of its backing).
                    graph.remove(&layer);
                    rewritten += 1;
                }
                Err(e) => {
                    tracing::warn!(layer = %layer.display(), error = %e, "released layer kept");
                    failed.insert(layer);
                }
            }
        }
        let cap = self.config.max_chain_depth.max(2);
        let mut failed = BTreeSet::new();
        while let Some((file, bottom)) = next_too_deep(&graph, cap, &failed) {
            let above_bottom = chain(&graph, &file)
                .into_iter()
                .find(|f| graph.get(f).cloned().flatten().as_ref() == Some(&bottom));
            let Some(above_bottom) = above_bottom else {
                failed.insert(file);
                continue;
            };
            match self.rebase(&live, &file, &bottom, &above_bottom).await {
                Ok(()) => {
                    tracing::info!(file = %file.display(), base = %bottom.display(), cap,
                        "chain too deep: file rebased onto the bottom of its chain");
                    graph.insert(file, Some(bottom));
                    rewritten += 1;
                }
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "deep chain left as it is");
                    failed.insert(file);
                }
            }
        }
        Ok(rewritten)
    }

    /// [`shorten_chains`](Cloud::shorten_chains), logging a failure (it
    /// runs again before the next collection).
    pub(crate) async fn shorten_chains_quietly(&self) {
        if let Err(e) = self.shorten_chains().await {
            tracing::warn!(error = %e, "chains not shortened; tried again at the next collection");
        }
    }

    /// The files records name: the collection's roots and the data of
    /// every image not deleted (a `saving` image's layer too).
    async fn named_layers(&self) -> Result<BTreeSet<PathBuf>> {
        let mut locations = self.gc_roots().await?;
        for status in [ImageStatus::Queued, ImageStatus::Saving] {
            for image in self.store.images_in_status(status).await? {
                locations.extend(image.location);
            }
        }
        Ok(locations
            .iter()
            .filter_map(|l| self.pool.layer_path(l))
            .collect())
    }

    /// Every file a live VM has open (the chains of its disk and of its
    /// attached volumes) → the VMs that have it.
    async fn live_files(&self, graph: &Graph) -> Result<BTreeMap<PathBuf, Vec<String>>> {
        let mut live: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
        for server in self.store.servers(None).await? {
            let name = server.id.to_string();
            let up = matches!(
                self.hypervisor.status(&name).await,
                Ok(hypervisor::VmStatus::Running | hypervisor::VmStatus::Paused { .. })
            );
            if !up {
                continue;
            }
            let mut tops: Vec<String> = server.root_disk.iter().cloned().collect();
            for attachment in self.store.attachments_of_server(server.id).await? {
                if let Ok(volume) = self.store.volume(attachment.volume_id).await {
                    tops.extend(volume.location);
                }
            }
            for top in tops.iter().filter_map(|t| self.pool.layer_path(t)) {
                for file in chain(graph, &top) {
                    let vms = live.entry(file).or_default();
                    if !vms.contains(&name) {
                        vms.push(name.clone());
                    }
                }
            }
        }
        Ok(live)
    }

    /// Makes `file` stand on `base` instead of the chain down from its
    /// current backing file, `below` being the file whose header names
    /// `base` (so that it knows `base`'s format); content unchanged.
    async fn rebase(
        &self,
        live: &BTreeMap<PathBuf, Vec<String>>,
        file: &Path,
        base: &Path,
        below: &Path,
    ) -> Result<()> {
        let file_info = info(file).await?;
        if file_info["snapshots"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
        {
            return Err(domain::Error::conflict(format!(
                "{} holds internal snapshots.",
                file.display()
            )));
        }
        match live.get(file).map(Vec::as_slice) {
            Some([vm]) => self
                .hypervisor
                .stream_into(vm, file, base)
                .await
                .map_err(hypervisor_error),
            Some(_) => Err(domain::Error::conflict(format!(
                "{} is open in several VMs.",
                file.display()
            ))),
            None => {
                let format = info(below).await?["backing-filename-format"]
                    .as_str()
                    .unwrap_or("raw")
                    .to_string();
                let (Some(f), Some(b)) = (file.to_str(), base.to_str()) else {
                    return Err(domain::Error::internal("A pool path is not UTF-8."));
                };
                storage::qemu_img::run(&["rebase", "-q", "-f", "qcow2", "-b", b, "-F", &format, f])
                    .await
                    .map(|_| ())
            }
        }
    }
}

/// The next released layer to merge: (layer, its one child, its backing).
fn next_release(
    graph: &Graph,
    named: &BTreeSet<PathBuf>,
    failed: &BTreeSet<PathBuf>,
) -> Option<(PathBuf, PathBuf, PathBuf)> {
    let mut children: BTreeMap<&PathBuf, Vec<&PathBuf>> = BTreeMap::new();
    for (file, backing) in graph {
        if let Some(b) = backing {
            children.entry(b).or_default().push(file);
        }
    }
    graph.iter().find_map(|(layer, backing)| {
        let base = backing.as_ref()?;
        if named.contains(layer) || failed.contains(layer) {
            return None;
        }
        match children.get(layer).map(Vec::as_slice) {
            Some([child]) => Some((layer.clone(), (*child).clone(), base.clone())),
            _ => None,
        }
    })
}

/// The shallowest file whose chain has more than `cap` files, and the
/// bottom of its chain.
fn next_too_deep(
    graph: &Graph,
    cap: usize,
    failed: &BTreeSet<PathBuf>,
) -> Option<(PathBuf, PathBuf)> {
    graph
        .keys()
        .filter(|f| !failed.contains(*f))
        .map(|f| (chain(graph, f), f))
        .filter(|(c, _)| c.len() > cap)
        .min_by_key(|(c, _)| c.len())
        .and_then(|(c, f)| Some((f.clone(), c.last()?.clone())))
}

/// The chain of `file`, itself first, as far as the headers go (a backing
/// file outside the pool ends it, included); a cycle ends it too.
fn chain(graph: &Graph, file: &Path) -> Vec<PathBuf> {
    let mut files = vec![file.to_path_buf()];
    let mut at = file.to_path_buf();
    while let Some(Some(next)) = graph.get(&at) {
        if files.contains(next) {
            break;
        }
        files.push(next.clone());
        at = next.clone();
    }
    files
}

async fn info(path: &Path) -> Result<Value> {
    let Some(p) = path.to_str() else {
        return Err(domain::Error::internal("A pool path is not UTF-8."));
    };
    let text = storage::qemu_img::run(&["info", "-U", "--output=json", p]).await?;
    serde_json::from_str(&text)
        .map_err(|e| domain::Error::internal(format!("qemu-img printed unexpected JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A linear chain f0 ◀── f1 ◀── … ◀── f(n-1).
    fn linear(n: usize) -> Graph {
        (0..n)
            .map(|i| {
                let backing = (i > 0).then(|| PathBuf::from(format!("/p/f{}", i - 1)));
                (PathBuf::from(format!("/p/f{i}")), backing)
            })
            .collect()
    }

    fn p(name: &str) -> PathBuf {
        PathBuf::from(format!("/p/{name}"))
    }

    #[test]
    fn release_when_unnamed_inner_layer_with_one_child_then_merged_into_it() {
        let graph = linear(4);
        let named = BTreeSet::from([p("f0"), p("f1"), p("f3")]);

        let next = next_release(&graph, &named, &BTreeSet::new());

        assert_eq!(next, Some((p("f2"), p("f3"), p("f1"))));
    }

    #[test]
    fn release_when_unnamed_layer_has_two_children_or_no_backing_then_skipped() {
        let mut graph = linear(3);
        graph.insert(p("g"), Some(p("f1")));
        let named = BTreeSet::from([p("f2"), p("g")]);

        let next = next_release(&graph, &named, &BTreeSet::new());

        assert_eq!(next, None);
    }

    #[test]
    fn too_deep_when_chain_longer_than_cap_then_shallowest_offender_onto_bottom() {
        let graph = linear(20);

        let next = next_too_deep(&graph, 8, &BTreeSet::new());

        assert_eq!(next, Some((p("f8"), p("f0"))));
    }

    #[test]
    fn chain_when_cycle_then_ends() {
        let mut graph = linear(3);
        graph.insert(p("f0"), Some(p("f2")));

        let files = chain(&graph, &p("f2"));

        assert_eq!(files, vec![p("f2"), p("f1"), p("f0")]);
    }
}
