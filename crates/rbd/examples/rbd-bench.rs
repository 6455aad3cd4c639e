//! Measures clone and flatten through this crate against the `rbd` command line tool, on the
//! cluster of `CEPH_CONF`.
//!
//! ```text
//! CEPH_DEV_MEMSTORE_BYTES=$((4 << 30)) scripts/ceph-dev.sh start
//! eval "$(scripts/ceph-dev.sh env)"
//! cargo run --release -p rbd --example rbd-bench -- [SIZE_MIB (default 1024)] [CLONES (default 10)]
//! ```
//! It writes a SIZE_MIB image in `images` fully, snapshots and protects it, then times
//! `rbd clone` (a process each: start + connect + clone) against `IoCtx::clone_image` on an
//! open connection, and `rbd flatten` against `Image::flatten_with_progress`, one flattened
//! clone at a time (memstore holds the parent plus one full copy). Everything it creates is
//! removed at the end.

use std::process::Command;
use std::time::{Duration, Instant};

use rbd::{CloneSource, Cluster, CreateOptions, IoCtx};

const MIB: u64 = 1 << 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let size_mib: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1024);
    let clones: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(10);
    let conf = std::env::var("CEPH_CONF").map_err(|_| "CEPH_CONF is not set")?;

    let t = Instant::now();
    let cluster = Cluster::connect(conf.as_ref(), "admin", None)?;
    let (images, vms) = (cluster.io_ctx("images")?, cluster.io_ctx("vms")?);
    println!("connect + 2 io contexts: {:?}", t.elapsed());

    let parent = format!("bench-parent-{}", std::process::id());
    write_parent(&images, &parent, size_mib)?;
    let source = CloneSource {
        pool: &images,
        image: &parent,
        snapshot: "snap",
    };
    let parent_spec = format!("images/{parent}@snap");

    // Clone latency.
    let mut cli = Vec::new();
    let mut lib = Vec::new();
    for i in 0..clones {
        let name = format!("{parent}-cli-{i}");
        let t = Instant::now();
        rbd_cli(&["clone", &parent_spec, &format!("vms/{name}")])?;
        cli.push(t.elapsed());
        vms.remove_image(&name)?;

        let name = format!("{parent}-lib-{i}");
        let t = Instant::now();
        vms.clone_image(&name, &source, &CreateOptions::default())?;
        lib.push(t.elapsed());
        vms.remove_image(&name)?;
    }
    println!(
        "clone, `rbd clone` process: median {:?} (min {:?})",
        median(&mut cli),
        cli[0]
    );
    println!(
        "clone, IoCtx::clone_image:  median {:?} (min {:?})",
        median(&mut lib),
        lib[0]
    );

    // Flatten of a clone of the fully written parent; the order alternates between rounds.
    for round in 0..4 {
        if round % 2 == 0 {
            flatten_with_cli(&vms, &source, &parent, size_mib, round)?;
            flatten_with_lib(&vms, &source, &parent, size_mib, round)?;
        } else {
            flatten_with_lib(&vms, &source, &parent, size_mib, round)?;
            flatten_with_cli(&vms, &source, &parent, size_mib, round)?;
        }
    }

    let image = images.open_image(&parent)?;
    image.unprotect_snap("snap")?;
    image.remove_snap("snap")?;
    image.close()?;
    images.remove_image(&parent)?;
    Ok(())
}

type BenchResult = Result<(), Box<dyn std::error::Error>>;

fn flatten_with_cli(
    vms: &IoCtx,
    source: &CloneSource<'_>,
    parent: &str,
    size_mib: u64,
    round: u32,
) -> BenchResult {
    let name = format!("{parent}-flat-cli");
    vms.clone_image(&name, source, &CreateOptions::default())?;
    let t = Instant::now();
    rbd_cli(&["flatten", "--no-progress", &format!("vms/{name}")])?;
    println!(
        "round {round}: `rbd flatten` {size_mib} MiB: {:?}",
        t.elapsed()
    );
    vms.remove_image(&name)?;
    Ok(())
}

fn flatten_with_lib(
    vms: &IoCtx,
    source: &CloneSource<'_>,
    parent: &str,
    size_mib: u64,
    round: u32,
) -> BenchResult {
    let name = format!("{parent}-flat-lib");
    vms.clone_image(&name, source, &CreateOptions::default())?;
    let image = vms.open_image(&name)?;
    let mut reports = 0u64;
    let t = Instant::now();
    image.flatten_with_progress(|_| reports += 1)?;
    println!(
        "round {round}: Image::flatten_with_progress {size_mib} MiB: {:?} ({reports} progress reports)",
        t.elapsed()
    );
    image.close()?;
    vms.remove_image(&name)?;
    Ok(())
}

/// Creates `name` of `size_mib` MiB, writes every byte, snapshots and protects `snap`.
fn write_parent(
    images: &IoCtx,
    name: &str,
    size_mib: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    images.create_image(name, size_mib * MIB, &CreateOptions::default())?;
    let image = images.open_image(name)?;
    let chunk: Vec<u8> = (0..4 * MIB).map(|i| (i % 251) as u8).collect();
    let t = Instant::now();
    for offset in (0..size_mib * MIB).step_by(chunk.len()) {
        let len = chunk.len().min((size_mib * MIB - offset) as usize);
        image.write_at(offset, &chunk[..len])?;
    }
    image.flush()?;
    println!("write {size_mib} MiB parent: {:?}", t.elapsed());
    image.create_snap("snap")?;
    image.protect_snap("snap")?;
    Ok(())
}

fn rbd_cli(args: &[&str]) -> Result<(), Box<dyn std::error::Error>> {
    let status = Command::new("rbd").args(args).status()?;
    if !status.success() {
        return Err(format!("rbd {args:?} failed: {status}").into());
    }
    Ok(())
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}
