//! Every saga kind Snapstack has, in one list: start-up recovery and the
//! garbage collector find an open saga's kind here. An open saga of a kind
//! not listed stops start-up with an error (it would otherwise never be
//! finished, and its data never protected).

use std::collections::BTreeSet;

use domain::{Error, Result};
use futures_util::future::BoxFuture;
use store::SagaRecord;

use super::{engine, Saga, SagaStep};
use crate::Cloud;

/// One saga kind, type-erased.
pub(crate) struct Kind {
    pub name: &'static str,
    /// The kind's step names, in order.
    pub steps: fn() -> Vec<&'static str>,
    recover: for<'a> fn(&'a Cloud, SagaRecord) -> BoxFuture<'a, Result<String>>,
    pool_names: fn(&SagaRecord) -> Result<Vec<String>>,
}

impl Kind {
    fn of<S: Saga>() -> Kind {
        Kind {
            name: S::KIND,
            steps: || S::Step::ALL.iter().map(|s| s.name()).collect(),
            recover: |cloud, record| Box::pin(engine::recover::<S>(cloud, record)),
            pool_names: engine::pool_names::<S>,
        }
    }
}

/// Every saga kind.
pub(crate) fn kinds() -> Vec<Kind> {
    vec![
        Kind::of::<crate::compute::snapshot::ServerImage>(),
        Kind::of::<crate::compute::volume_image::VolumeImage>(),
        Kind::of::<crate::volumes::create::VolumeCreate>(),
        Kind::of::<crate::volumes::snapshots::VolumeSnapshotCreate>(),
        Kind::of::<crate::restore_points::create::PointCreate>(),
        Kind::of::<crate::restore_points::revert::PointRevert>(),
        Kind::of::<crate::restore_points::delete::PointDelete>(),
    ]
}

fn kind_of(record: &SagaRecord) -> Result<Kind> {
    kinds()
        .into_iter()
        .find(|k| k.name == record.kind)
        .ok_or_else(|| {
            Error::internal(format!(
                "Open saga {} is of kind {:?}, which this build does not know: it cannot be \
                 finished or undone. Start the Snapstack version that began it, let it finish, \
                 then upgrade.",
                record.id, record.kind
            ))
        })
}

impl Cloud {
    /// Finishes or undoes every open saga, oldest first; a line for each.
    pub(crate) async fn recover_sagas(&self) -> Result<Vec<String>> {
        let open = self.store.open_sagas().await?;
        // Every kind is checked before any saga is touched.
        let kinds = open.iter().map(kind_of).collect::<Result<Vec<_>>>()?;
        let mut lines = Vec::with_capacity(open.len());
        for (kind, record) in kinds.into_iter().zip(open) {
            lines.push((kind.recover)(self, record).await?);
        }
        Ok(lines)
    }

    /// Everything open sagas name: garbage-collection roots.
    pub(crate) async fn saga_roots(&self) -> Result<BTreeSet<String>> {
        let mut roots = BTreeSet::new();
        for record in self.store.open_sagas().await? {
            roots.extend((kind_of(&record)?.pool_names)(&record)?);
        }
        Ok(roots)
    }
}
