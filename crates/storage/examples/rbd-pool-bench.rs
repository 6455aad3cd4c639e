//! Disk provisioning and flatten through the `rbd` pool (the storage layer),
//! against the `rbd` command line tool, on the cluster of `CEPH_CONF`.
//! Run by `bench/rbd-flatten.sh`, which prints the command and the table:
//!
//! ```text
//! cargo run --release -p storage --example rbd-pool-bench -- [SMALL_MIB (1024)] [BIG_MIB (16384)] [ROUNDS (5)]
//! ```
//!
//! - two images: SMALL_MIB imported through `Pool::import_image` from a fully
//!   written raw file, BIG_MIB made sparse with librbd (create, snap, protect);
//! - `Pool::create_disk` from each, ROUNDS times, alternating (an O(1) clone:
//!   the times should not depend on the image size);
//! - flatten of a disk cloned from the SMALL image, `RbdPool::flatten_disk`
//!   against `rbd flatten` of an identical clone, alternating which goes
//!   first; `rbd import` of the same file is shown next to the pool's import.
//!
//! Everything it creates is removed at the end.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use domain::ImageId;
use storage::rbd::{RbdConfig, RbdPool, IMAGE_SNAPSHOT};
use storage::Pool;

const MIB: u64 = 1 << 20;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let small_mib: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1024);
    let big_mib: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(16384);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let conf = std::env::var("CEPH_CONF").map_err(|_| "CEPH_CONF is not set")?;
    let pool = RbdPool::connect(RbdConfig::new(&conf, "admin")).await?;
    let work =
        tempfile::tempdir_in(std::env::var("BENCH_WORK_DIR").unwrap_or_else(|_| "/tmp".into()))?;
    let mut rows = Vec::new();

    // The small image, fully written, imported through the pool; the same
    // file through `rbd import` for comparison.
    let staged = work.path().join("small.raw");
    write_full_file(&staged, small_mib)?;
    let cli_name = format!("bench-rbd-import-{}", std::process::id());
    let t = Instant::now();
    rbd(
        &conf,
        &[
            "import",
            "--no-progress",
            staged.to_str().unwrap(),
            &format!("images/{cli_name}"),
        ],
    )?;
    let cli_import = t.elapsed();
    rbd(
        &conf,
        &["rm", "--no-progress", &format!("images/{cli_name}")],
    )?;
    let small_id = ImageId::new();
    let t = Instant::now();
    let small = pool.import_image(small_id, &staged, "raw").await?;
    let pool_import = t.elapsed();
    rows.push(row(
        &format!("import {small_mib} MiB raw (write + snap + protect)"),
        pool_import,
        "`rbd import`",
        cli_import,
    ));

    // The big image, sparse.
    let big_id = ImageId::new();
    let big = sparse_image(&conf, &pool, big_id, big_mib)?;

    // Disk provisioning from each, alternating.
    let (mut from_small, mut from_big) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for (image, samples) in [(&small, &mut from_small), (&big, &mut from_big)] {
            let name = format!("bench-disk-{}-{round}", std::process::id());
            let t = Instant::now();
            let disk = pool.create_disk(&name, image, "raw", 0).await?;
            samples.push(t.elapsed());
            pool.delete_disk(&disk).await?;
        }
    }
    let (small_med, big_med) = (median(&mut from_small), median(&mut from_big));
    rows.push(row(
        &format!("create_disk from {small_mib} MiB image (median of {rounds})"),
        small_med,
        &format!("create_disk from {big_mib} MiB image"),
        big_med,
    ));

    // Flatten: the pool against the CLI, on identical clones, alternating.
    let (mut by_pool, mut by_cli) = (Vec::new(), Vec::new());
    for round in 0..rounds.min(3) {
        let name = format!("bench-flat-{}-{round}", std::process::id());
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for through_pool in order {
            let disk = pool.create_disk(&name, &small, "raw", 0).await?;
            let t = Instant::now();
            if through_pool {
                pool.flatten_disk(&disk).await?;
                by_pool.push(t.elapsed());
            } else {
                rbd(&conf, &["flatten", "--no-progress", &format!("vms/{name}")])?;
                by_cli.push(t.elapsed());
            }
            pool.delete_disk(&disk).await?;
        }
    }
    let samples = by_pool.len();
    rows.push(row(
        &format!("flatten a clone of the {small_mib} MiB image (median of {samples})"),
        median(&mut by_pool),
        "`rbd flatten`",
        median(&mut by_cli),
    ));

    pool.delete_image(&small).await?;
    pool.delete_image(&big).await?;

    println!(
        "| operation | storage layer | baseline | baseline time | ratio (storage / baseline) |"
    );
    println!("|---|---|---|---|---|");
    for line in rows {
        println!("{line}");
    }
    Ok(())
}

fn row(what: &str, ours: Duration, baseline: &str, theirs: Duration) -> String {
    format!(
        "| {what} | {} | {baseline} | {} | {:.2} |",
        show(ours),
        show(theirs),
        ours.as_secs_f64() / theirs.as_secs_f64()
    )
}

fn show(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// `size_mib` MiB with no zero 4 MiB chunk (the import writes all of it).
fn write_full_file(path: &Path, size_mib: u64) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let chunk: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8 | 1).collect();
    for _ in 0..size_mib {
        out.write_all(&chunk)?;
    }
    out.into_inner()?.sync_all()?;
    Ok(())
}

/// A sparse image of `size_mib` MiB with its protected snapshot, made with
/// librbd directly (an upload would read every byte); its pool location.
fn sparse_image(conf: &str, pool: &RbdPool, id: ImageId, size_mib: u64) -> Result<String> {
    let cluster = rbd::Cluster::connect(conf.as_ref(), "admin", None)?;
    let images = cluster.io_ctx("images")?;
    let name = id.to_string();
    images.create_image(&name, size_mib * MIB, &rbd::CreateOptions::default())?;
    let image = images.open_image(&name)?;
    image.write_at(0, b"a sparse image")?;
    image.create_snap(IMAGE_SNAPSHOT)?;
    image.protect_snap(IMAGE_SNAPSHOT)?;
    image.close()?;
    Ok(format!(
        "rbd://{}/images/{name}/{IMAGE_SNAPSHOT}",
        pool.fsid()
    ))
}

fn rbd(conf: &str, args: &[&str]) -> Result<()> {
    let status = Command::new("rbd")
        .arg("-c")
        .arg(conf)
        .args(args)
        .status()?;
    if !status.success() {
        return Err(format!("rbd {args:?} failed: {status}").into());
    }
    Ok(())
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}
