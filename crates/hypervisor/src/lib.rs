//! Running VMs: the [`Hypervisor`] driver trait, its QEMU implementation
//! ([`QemuHypervisor`]) and an in-memory fake ([`FakeHypervisor`]) for the unit tests
//! of the layers above.
//!
//! This crate knows nothing of the database or the API: a VM is a [`VmSpec`] (name,
//! memory, vCPUs, disks, NICs, optional direct kernel boot) and a [`VmStatus`].
//!
//! NICs are virtio-net on taps someone else made (Snapstack's network plane, crate
//! `netplane`): QEMU opens each by name, so it runs in the namespace holding them
//! ([`QemuConfig::netns`]).
//!
//! The QEMU driver keeps each VM in a run directory that outlives the service:
//!
//! ```text
//! <run_dir>/<name>/
//!   spec.json     the VmSpec it was last started with; its presence defines the VM
//!   qmp.sock      QMP monitor socket
//!   qga.sock      guest agent channel (every VM has one; see Hypervisor::freeze_filesystems)
//!   qemu.pid      written by QEMU (-pidfile)
//!   console.log   serial console (appended across boots)
//!   qemu.log      QEMU's stdout/stderr, each start preceded by a header line
//!   shutoff.json  why the VM stopped, written before we stop it on purpose
//! ```
//!
//! Tests: `cargo test -p hypervisor` runs the unit tests and, one at a time, short
//! tests on real QEMU (TCG, a blank disk on which SeaBIOS prints to the console).
//! Graceful power-off, soft reboot and a live guest's save/restore need the project's
//! test guest: `scripts/build-guest.sh`, then
//! `cargo test -p hypervisor --test guest -- --ignored`. Guest-agent freeze/thaw too:
//! `cargo test -p hypervisor --test agent -- --include-ignored` (the no-agent and
//! pause-log tests of that file need no guest and run by default).
//! `cargo test -p hypervisor --test network` boots two guests on a real network plane
//! (DHCP, guest to guest); it needs root and the test guest, and skips without root.

mod console;
mod driver;
mod error;
mod fake;
mod pauses;
mod qemu;
mod restore;
mod spec;
mod status;

pub use driver::Hypervisor;
pub use error::{Error, ErrorKind, Result};
pub use fake::{FakeHypervisor, FileCreated, Operation};
pub use pauses::{paused_within, PauseSpan, PAUSE_LOG_LIMIT};
pub use qemu::{
    Accel, QemuConfig, QemuHypervisor, CONSOLE_LOG_LIMIT, DEFAULT_EXIT_TIMEOUT,
    GUEST_AGENT_SYNC_TIMEOUT, GUEST_AGENT_THAW_TIMEOUT, STORAGE_NODE_SUFFIX,
};
pub use restore::{
    DiskOverlay, InternalSnapshot, MemoryState, NativeSnapshot, PointTaken, RbdState,
};
pub use spec::{validate_name, DiskFormat, DiskSource, DiskSpec, NicSpec, VmSpec};
pub use status::{ShutoffReason, VmStatus};
