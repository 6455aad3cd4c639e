//! Every saga kind, crashed at every fault point, on fakes: the operation
//! is started through the public [`Cloud`] API with an in-process crash
//! hook that stops the saga dead at one fault point (as if the process
//! died there), then "the restart" — a new [`Cloud`] over the same store,
//! the same [`FakePool`] and the same [`FakeHypervisor`] — reconciles, and
//! the invariants of DESIGN.md §5 are checked:
//!
//! - no open saga is left, no row (server task, image, volume, volume
//!   snapshot, restore point) is in a transitional state;
//! - every location a row names exists in the pool, with every layer,
//!   snapshot or image it stands on;
//! - what a live VM writes is what its rows name (root disk, volumes), and
//!   no guest stays frozen;
//! - an image is active with data or gone, a volume or snapshot available
//!   with data or in error (the operation finished or left nothing);
//! - after a collection, the pool holds nothing no row needs.
//!
//! Layered-pool server-image cases are the slow ones: the saga reads the
//! frozen layer's size and the chain with `qemu-img` on the fake's paths
//! (`layer_size`, `shorten_chain`), a process each time, failing.
//!
//! The fault points are not listed here: each scenario first runs with a
//! hook that records every point its kind passes (`"{kind}:{step}:start"`,
//! `"{kind}:{step}"`), and the test asserts they cover every step the saga
//! registry declares. Each recorded point is then crashed at; the points
//! the recovery passes are recorded too, and every `":undo"` point among
//! them is crashed at once more during recovery (a second crash), followed
//! by a second restart.
//!
//! Scenarios `…WhenTheCutFails` (`…WhenThePoolFails`) make the fake
//! hypervisor fail the cut (the fake volume pool fail to make data), so
//! the saga undoes itself in process: their `":undo"` points are crashed at
//! as first crashes. After each recovery the same operation (without the
//! failure) runs once more on the same server or volume and must make
//! something. Two more tests stop two sagas of different kinds at once.
//!
//! Adding a saga kind: add a [`Scenario`] variant (what it prepares, how it
//! starts the operation) and its line in `crash_tests!`;
//! [`every_saga_kind_has_a_scenario`] fails until then.

mod saga_crash_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use cloud::compute::AttachVolume;
use cloud::volumes::{NewSnapshot, NewVolume};
use domain::server::ServerAction;
use domain::{ServerId, VolumeId};
use hypervisor::Operation;
use saga_crash_support::{disk_only_point, Rig};

/// One way to start an operation of one saga kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    ImageOfRunningServer,
    /// Its image asks for a quiesced guest (the guest agent freezes it).
    ImageOfQuiescedServer,
    ImageOfStoppedServer,
    ImageOfVolumeBackedServer,
    BlankVolume,
    VolumeFromImage,
    VolumeFromSnapshot,
    VolumeFromVolume,
    SnapshotOfAvailableVolume,
    SnapshotOfInUseVolume,
    /// A disk-only restore point of a running server.
    PointOfRunningServer,
    /// A revert to a disk-only point (the server ends stopped on it).
    RevertToPoint,
    /// A delete of a point (one is made first when the server has none).
    DeletePoint,
    /// The hypervisor fails the cut: the saga undoes itself (in process).
    ImageWhenTheCutFails,
    VolumeBackedImageWhenTheCutFails,
    InUseSnapshotWhenTheCutFails,
    /// The pool fails to make the data: the saga undoes itself.
    BlankVolumeWhenThePoolFails,
    VolumeFromVolumeWhenThePoolFails,
    SnapshotWhenThePoolFails,
}

/// What is made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Hypervisor(Operation),
    /// The volume pool's next creating call.
    VolumePool,
}

/// What a scenario made before the operation under test.
#[derive(Debug, Default)]
struct Prepared {
    server: Option<ServerId>,
    volume: Option<VolumeId>,
    snapshot: Option<String>,
}

impl Scenario {
    /// The same operation without an injected failure.
    fn without_failure(self) -> Scenario {
        match self {
            Scenario::ImageWhenTheCutFails => Scenario::ImageOfRunningServer,
            Scenario::VolumeBackedImageWhenTheCutFails => Scenario::ImageOfVolumeBackedServer,
            Scenario::InUseSnapshotWhenTheCutFails => Scenario::SnapshotOfInUseVolume,
            Scenario::BlankVolumeWhenThePoolFails => Scenario::BlankVolume,
            Scenario::VolumeFromVolumeWhenThePoolFails => Scenario::VolumeFromVolume,
            Scenario::SnapshotWhenThePoolFails => Scenario::SnapshotOfAvailableVolume,
            other => other,
        }
    }

    /// The hypervisor operation made to fail, if any.
    fn failure(self) -> Option<Failure> {
        match self {
            Scenario::ImageWhenTheCutFails => Some(Failure::Hypervisor(Operation::SnapshotDisk)),
            Scenario::VolumeBackedImageWhenTheCutFails | Scenario::InUseSnapshotWhenTheCutFails => {
                Some(Failure::Hypervisor(Operation::CreateRestorePoint))
            }
            Scenario::BlankVolumeWhenThePoolFails
            | Scenario::VolumeFromVolumeWhenThePoolFails
            | Scenario::SnapshotWhenThePoolFails => Some(Failure::VolumePool),
            _ => None,
        }
    }

    /// The saga kind the operation runs as.
    fn kind(self) -> &'static str {
        if self.without_failure() != self {
            return self.without_failure().kind();
        }
        match self {
            Scenario::ImageOfRunningServer
            | Scenario::ImageOfQuiescedServer
            | Scenario::ImageOfStoppedServer => "server-image",
            Scenario::ImageOfVolumeBackedServer => "server-volume-image",
            Scenario::BlankVolume
            | Scenario::VolumeFromImage
            | Scenario::VolumeFromSnapshot
            | Scenario::VolumeFromVolume => "volume-create",
            Scenario::SnapshotOfAvailableVolume | Scenario::SnapshotOfInUseVolume => {
                "volume-snapshot"
            }
            Scenario::PointOfRunningServer => "restore-point-create",
            Scenario::RevertToPoint => "restore-point-revert",
            Scenario::DeletePoint => "restore-point-delete",
            Scenario::ImageWhenTheCutFails
            | Scenario::VolumeBackedImageWhenTheCutFails
            | Scenario::InUseSnapshotWhenTheCutFails
            | Scenario::BlankVolumeWhenThePoolFails
            | Scenario::VolumeFromVolumeWhenThePoolFails
            | Scenario::SnapshotWhenThePoolFails => {
                unreachable!("{self:?} is {:?} with a failure", self.without_failure())
            }
        }
    }

    /// Makes what the operation needs (no fault point is armed yet).
    async fn prepare(self, rig: &Rig) -> Prepared {
        if self.without_failure() != self {
            return Box::pin(self.without_failure().prepare(rig)).await;
        }
        match self {
            Scenario::ImageOfRunningServer => Prepared {
                server: Some(rig.server().await),
                ..Prepared::default()
            },
            Scenario::ImageOfQuiescedServer => Prepared {
                server: Some(rig.server_of(&rig.quiesced_image_id).await),
                ..Prepared::default()
            },
            Scenario::ImageOfStoppedServer => {
                let server = rig.server().await;
                rig.cloud
                    .server_action(&rig.admin, &server.to_string(), ServerAction::Stop)
                    .await
                    .unwrap();
                rig.settled(server).await;
                Prepared {
                    server: Some(server),
                    ..Prepared::default()
                }
            }
            Scenario::ImageOfVolumeBackedServer => {
                let root = rig.blank().await;
                let data = rig.blank().await;
                let server = rig.volume_backed_server(root, data).await;
                Prepared {
                    server: Some(server),
                    volume: Some(root),
                    ..Prepared::default()
                }
            }
            Scenario::BlankVolume | Scenario::VolumeFromImage => Prepared::default(),
            Scenario::VolumeFromSnapshot => {
                let volume = rig.blank().await;
                let snapshot = rig.snapshot(volume, false).await;
                rig.wait_snapshot(&snapshot).await;
                Prepared {
                    volume: Some(volume),
                    snapshot: Some(snapshot),
                    ..Prepared::default()
                }
            }
            Scenario::VolumeFromVolume | Scenario::SnapshotOfAvailableVolume => Prepared {
                volume: Some(rig.blank().await),
                ..Prepared::default()
            },
            Scenario::PointOfRunningServer => Prepared {
                server: Some(rig.server().await),
                ..Prepared::default()
            },
            Scenario::RevertToPoint | Scenario::DeletePoint => {
                let server = rig.server().await;
                rig.point(server).await;
                Prepared {
                    server: Some(server),
                    ..Prepared::default()
                }
            }
            Scenario::SnapshotOfInUseVolume => {
                let server = rig.server().await;
                let volume = rig.blank().await;
                let request = AttachVolume {
                    volume_id: volume.to_string(),
                    ..Default::default()
                };
                rig.cloud
                    .attach_volume(&rig.admin, &server.to_string(), request)
                    .await
                    .unwrap();
                rig.settled(server).await;
                Prepared {
                    server: Some(server),
                    volume: Some(volume),
                    ..Prepared::default()
                }
            }
            Scenario::ImageWhenTheCutFails
            | Scenario::VolumeBackedImageWhenTheCutFails
            | Scenario::InUseSnapshotWhenTheCutFails
            | Scenario::BlankVolumeWhenThePoolFails
            | Scenario::VolumeFromVolumeWhenThePoolFails
            | Scenario::SnapshotWhenThePoolFails => {
                unreachable!("{self:?} is {:?} with a failure", self.without_failure())
            }
        }
    }

    /// Starts the operation under test; a crash may make it fail.
    async fn start(self, rig: &Rig, prepared: &Prepared) -> domain::Result<()> {
        if let Some(failure) = self.failure() {
            match failure {
                Failure::Hypervisor(operation) => {
                    rig.hv.fail_next(operation, hypervisor::ErrorKind::Monitor)
                }
                Failure::VolumePool => rig.pool.fake_volumes().fail_next_create(true),
            }
            return Box::pin(self.without_failure().start(rig, prepared)).await;
        }
        let server = prepared.server.map(|s| s.to_string()).unwrap_or_default();
        let volume = prepared.volume.map(|v| v.to_string());
        match self {
            Scenario::ImageOfRunningServer
            | Scenario::ImageOfQuiescedServer
            | Scenario::ImageOfStoppedServer
            | Scenario::ImageOfVolumeBackedServer => rig
                .cloud
                .create_server_image(&rig.admin, &server, "snap".into(), BTreeMap::new())
                .await
                .map(drop),
            Scenario::BlankVolume
            | Scenario::VolumeFromImage
            | Scenario::VolumeFromSnapshot
            | Scenario::VolumeFromVolume => {
                let new = NewVolume {
                    size: Some(1),
                    image_ref: (self == Scenario::VolumeFromImage).then(|| rig.image_id.clone()),
                    snapshot_id: prepared.snapshot.clone(),
                    source_volid: volume.filter(|_| self == Scenario::VolumeFromVolume),
                    ..Default::default()
                };
                rig.cloud.create_volume(&rig.admin, new).await.map(drop)
            }
            Scenario::SnapshotOfAvailableVolume | Scenario::SnapshotOfInUseVolume => {
                let new = NewSnapshot {
                    volume_id: volume.unwrap_or_default(),
                    name: Some("snap".into()),
                    description: None,
                    metadata: BTreeMap::new(),
                    force: true,
                };
                rig.cloud
                    .create_volume_snapshot(&rig.admin, new)
                    .await
                    .map(drop)
            }
            Scenario::PointOfRunningServer => rig
                .cloud
                .create_restore_point(&rig.admin, &server, disk_only_point())
                .await
                .map(drop),
            Scenario::RevertToPoint => {
                let point = rig.available_point(prepared.server.unwrap()).await;
                rig.cloud
                    .revert_to_restore_point(&rig.admin, &server, &point)
                    .await
                    .map(drop)
            }
            Scenario::DeletePoint => {
                let id = prepared.server.unwrap();
                let point = match rig.points(id).await.pop() {
                    Some(point) => point,
                    None => rig.point(id).await,
                };
                rig.cloud
                    .delete_restore_point(&rig.admin, &server, &point)
                    .await
            }
            Scenario::ImageWhenTheCutFails
            | Scenario::VolumeBackedImageWhenTheCutFails
            | Scenario::InUseSnapshotWhenTheCutFails
            | Scenario::BlankVolumeWhenThePoolFails
            | Scenario::VolumeFromVolumeWhenThePoolFails
            | Scenario::SnapshotWhenThePoolFails => {
                unreachable!("{self:?} is {:?} with a failure", self.without_failure())
            }
        }
    }
}

/// One crash: at `point` while the operation runs, then (if given) at
/// `again` while the restart recovers it. Returns the recovery's fault
/// points and what is wrong afterwards.
async fn crash_once(
    rig: &mut Rig,
    scenario: Scenario,
    point: &str,
    again: Option<&str>,
) -> Result<Vec<String>, String> {
    let kind = scenario.kind();
    rig.arm(&[], &[]);
    let prepared = scenario.prepare(rig).await;
    rig.arm(&[kind], &[point]);
    let _ = scenario.start(rig, &prepared).await;
    rig.until_crashed(1).await?;
    rig.arm(&[kind], &again.into_iter().collect::<Vec<_>>());
    rig.restart().await?;
    let recovery = rig.seen();
    if let Some(again) = again {
        if rig.crashed() == 0 {
            return Err(format!("recovery never reached {again}"));
        }
        rig.arm(&[], &[]);
        rig.restart().await?;
    }
    rig.arm(&[], &[]);
    let wrong = rig.violations().await;
    if !wrong.is_empty() {
        return Err(wrong.join("; "));
    }
    // What the crash left can be used again: the same operation on the
    // same server or volume works.
    // (A failure injected for a step the crash came before is not due.)
    rig.hv.clear_failures();
    rig.pool.fake_volumes().fail_next_create(false);
    let before = rig.made().await;
    scenario
        .without_failure()
        .start(rig, &prepared)
        .await
        .map_err(|e| format!("after recovery, the operation again: {e}"))?;
    rig.sagas_closed().await?;
    if rig.made().await <= before {
        return Err("after recovery, the operation again made nothing".into());
    }
    let wrong = rig.violations().await;
    if !wrong.is_empty() {
        return Err(format!(
            "after recovery, the operation again: {}",
            wrong.join("; ")
        ));
    }
    Ok(recovery)
}

/// Runs `scenario` once without a crash; returns the fault points it
/// passed (and checks the invariants hold without a crash).
async fn learn_points(rig: &mut Rig, scenario: Scenario) -> Vec<String> {
    let kind = scenario.kind();
    rig.arm(&[], &[]);
    let prepared = scenario.prepare(rig).await;
    rig.arm(&[kind], &[]);
    let started = scenario.start(rig, &prepared).await;
    assert!(
        started.is_ok() || scenario.failure().is_some(),
        "{scenario:?}: {started:?}"
    );
    rig.sagas_closed().await.unwrap();
    let points = rig.seen();
    rig.arm(&[], &[]);
    let clean = rig.violations().await;
    assert!(clean.is_empty(), "{scenario:?} without a crash: {clean:?}");
    points
}

/// Two sagas of different kinds stopped at once, one restart.
async fn crash_two(
    rig: &mut Rig,
    (first, at): (Scenario, &str),
    (second, second_at): (Scenario, &str),
) -> Result<(), String> {
    rig.arm(&[], &[]);
    let prepared = (first.prepare(rig).await, second.prepare(rig).await);
    rig.arm(&[first.kind(), second.kind()], &[at, second_at]);
    let _ = first.start(rig, &prepared.0).await;
    let _ = second.start(rig, &prepared.1).await;
    rig.until_crashed(2).await?;
    rig.arm(&[], &[]);
    rig.restart().await?;
    let wrong = rig.violations().await;
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("; "))
    }
}

/// For every kind (a scenario of each), with the next kind in the list as
/// its companion (a ring, so every kind is both): the first crashed after
/// each of its steps ran (the plain points; the `:start` ones are covered
/// alone) while the second is stopped too — at its first point (recovery
/// undoes it) or half-way (recovery finishes it), in turn.
async fn crash_kinds_in_pairs(native: bool) {
    let started = Instant::now();
    let mut one_per_kind: Vec<Scenario> = Vec::new();
    for scenario in SCENARIOS {
        if !one_per_kind.iter().any(|s| s.kind() == scenario.kind()) {
            one_per_kind.push(*scenario);
        }
    }
    let mut failures = Vec::new();
    let mut cases = 0;
    let mut rig = Rig::new(native).await;
    for (i, first) in one_per_kind.iter().enumerate() {
        for second in [&one_per_kind[(i + 1) % one_per_kind.len()]] {
            let points = learn_points(&mut rig, *first).await;
            let theirs = learn_points(&mut rig, *second).await;
            let stops = [theirs[0].clone(), theirs[theirs.len() / 2].clone()];
            let ran = points.iter().filter(|p| !p.ends_with(":start"));
            for (n, at) in ran.enumerate() {
                let second_at = &stops[n % 2];
                cases += 1;
                if let Err(wrong) = crash_two(&mut rig, (*first, at), (*second, second_at)).await {
                    failures.push(format!("crash at {at} and {second_at}: {wrong}"));
                }
            }
        }
    }
    eprintln!(
        "pairs of kinds ({} pool): {cases} cases, {:?}",
        if native { "native" } else { "layered" },
        started.elapsed()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn two_kinds_crashed_at_once_on_the_layered_pool_when_recovered_then_settled() {
    crash_kinds_in_pairs(false).await;
}

#[tokio::test]
async fn two_kinds_crashed_at_once_on_the_native_pool_when_recovered_then_settled() {
    crash_kinds_in_pairs(true).await;
}

/// Runs `scenario` once to learn its fault points, then crashes at each;
/// panics with every failing case.
async fn crash_everywhere(scenario: Scenario, native: bool) {
    let started = Instant::now();
    let mut rig = Rig::new(native).await;
    let kind = scenario.kind();
    let steps = cloud::saga::saga_kinds()
        .into_iter()
        .find(|k| k.name == kind)
        .unwrap_or_else(|| panic!("no saga kind {kind} in the registry"))
        .steps;

    let points = learn_points(&mut rig, scenario).await;
    // A failing operation stops at its failure and passes the undo points.
    let fails = points.iter().any(|p| p.ends_with(":undo"));
    assert!(
        !fails || scenario.failure().is_some(),
        "{scenario:?} failed without an injected failure: {points:?}"
    );
    for step in steps.iter().filter(|_| !fails) {
        for point in [format!("{kind}:{step}:start"), format!("{kind}:{step}")] {
            assert!(
                points.contains(&point),
                "{scenario:?} never passed {point}; it passed {points:?}"
            );
        }
    }

    let mut failures = Vec::new();
    let mut undo_points: BTreeMap<String, String> = BTreeMap::new();
    for point in &points {
        match crash_once(&mut rig, scenario, point, None).await {
            Ok(recovery) => {
                for undo in recovery.into_iter().filter(|p| p.ends_with(":undo")) {
                    undo_points.entry(undo).or_insert_with(|| point.clone());
                }
            }
            Err(wrong) => failures.push(format!("crash at {point}: {wrong}")),
        }
    }
    for (undo, first) in &undo_points {
        if let Err(wrong) = crash_once(&mut rig, scenario, first, Some(undo)).await {
            failures.push(format!("crash at {first}, then at {undo}: {wrong}"));
        }
    }
    eprintln!(
        "{scenario:?} ({} pool): {} fault points, {} undo points in recovery, {:?}",
        if native { "native" } else { "layered" },
        points.len(),
        undo_points.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{scenario:?} ({} pool):\n{}",
        if native { "native" } else { "layered" },
        failures.join("\n")
    );
}

/// For each scenario, a module with one test per pool mode; and
/// `SCENARIOS`, the list of them all.
macro_rules! crash_tests {
    ($($module:ident => $scenario:ident;)*) => {
        const SCENARIOS: &[Scenario] = &[$(Scenario::$scenario),*];
        $(
        mod $module {
            #[tokio::test]
            async fn layered_pool_when_crashed_anywhere_then_settled() {
                super::crash_everywhere(super::Scenario::$scenario, false).await;
            }

            #[tokio::test]
            async fn native_pool_when_crashed_anywhere_then_settled() {
                super::crash_everywhere(super::Scenario::$scenario, true).await;
            }
        }
    )*
    };
}

crash_tests! {
    image_of_running_server => ImageOfRunningServer;
    image_of_quiesced_server => ImageOfQuiescedServer;
    image_of_stopped_server => ImageOfStoppedServer;
    image_of_volume_backed_server => ImageOfVolumeBackedServer;
    blank_volume => BlankVolume;
    volume_from_image => VolumeFromImage;
    volume_from_snapshot => VolumeFromSnapshot;
    volume_from_volume => VolumeFromVolume;
    snapshot_of_available_volume => SnapshotOfAvailableVolume;
    snapshot_of_in_use_volume => SnapshotOfInUseVolume;
    point_of_running_server => PointOfRunningServer;
    revert_to_point => RevertToPoint;
    delete_point => DeletePoint;
    image_when_the_cut_fails => ImageWhenTheCutFails;
    volume_backed_image_when_the_cut_fails => VolumeBackedImageWhenTheCutFails;
    in_use_snapshot_when_the_cut_fails => InUseSnapshotWhenTheCutFails;
    blank_volume_when_the_pool_fails => BlankVolumeWhenThePoolFails;
    volume_from_volume_when_the_pool_fails => VolumeFromVolumeWhenThePoolFails;
    snapshot_when_the_pool_fails => SnapshotWhenThePoolFails;
}

#[test]
fn every_saga_kind_has_a_scenario() {
    let covered: BTreeSet<&str> = SCENARIOS.iter().map(|s| s.kind()).collect();

    let missing: Vec<&str> = cloud::saga::saga_kinds()
        .into_iter()
        .map(|k| k.name)
        .filter(|k| !covered.contains(k))
        .collect();

    assert!(
        missing.is_empty(),
        "saga kinds without a crash scenario: {missing:?}"
    );
}
