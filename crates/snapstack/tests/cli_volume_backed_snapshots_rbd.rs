//! Acceptance: snapshots of volume-backed servers on the `rbd` pool of the
//! Ceph dev cluster that `CEPH_CONF` names, on real QEMU through the real
//! `openstack` CLI — the scenario of `cli_volume_backed_snapshots.rs` (one
//! instant over two volumes, boot from the snapshot image, a forced
//! snapshot of an attached volume, the image's snapshots deleted with it,
//! nothing left in the volumes pool), with the data read through QEMU's rbd
//! driver. A missing cluster fails this test; it never skips it.

mod cli_volumes_support;
mod common;
mod rbd_support;
mod snapshot_support;
mod volume_backed_support;

use rbd_support::{ceph_conf, RbdServer};
use snapshot_support::LogOnFailure;
use volume_backed_support::*;

#[test]
fn snapshot_of_volume_backed_server_on_rbd_when_two_volumes_then_one_instant_boot_again_and_nothing_leaked(
) {
    let mut rbd = RbdServer::start();
    rbd.purge_pools = true;
    let _log = LogOnFailure::new(&rbd.server);
    let backend = Backend::Rbd {
        conf: ceph_conf().display().to_string(),
    };

    let pause = snapshot_boot_and_delete(&rbd.server, &backend);

    assert_eq!(
        pause, 0.0,
        "QEMU cuts the RBD volumes in one transaction: the guest never stops"
    );
}
