//! Issue 9, point 8: races between a task's end and its clean-up. The
//! supervisor removes the task's cgroup as the CLI's `run --rm` reads it
//! (its wait, then `rm`): a cgroup file removed under a reader answers
//! `ENODEV` (open) or `ENOENT` (not yet open), and either means "gone".
//! Before that was so, 2 of 600 isolated `run --rm -- /bin/true` failed with
//! `read …/cgroup.procs: No such device` and left their state directories.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{self, root_or_skip};
use crate::leftovers::{self, CgroupParent, Tmpfs};

/// Runs per loop (two loops at once): `NOMAD_SHIM_RACE_RUNS`, else 1,500 on
/// the host (about 35 s), and 40 where time is stretched (the emulated v2
/// VM, where a run takes a second or two).
fn runs_per_loop() -> usize {
    std::env::var("NOMAD_SHIM_RACE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if common::time_scale() > 1.0 { 40 } else { 1500 })
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn isolated_run_rm_of_true_from_two_loops_always_exits_0_and_leaves_nothing() {
    if !root_or_skip("isolated_run_rm_of_true_from_two_loops_always_exits_0_and_leaves_nothing") {
        return;
    }
    let fs = Tmpfs::new("nomad-shim-race.", "256m");
    let parent = CgroupParent(fs.cgroup_parent());
    let root = fs.path().join("root");
    let n = runs_per_loop();
    let t0 = Instant::now();
    let failures: Vec<String> = std::thread::scope(|s| {
        let loops: Vec<_> = (0..2)
            .map(|l| {
                let (root, parent, task_dir) = (&root, &parent.0, fs.path().join(format!("td{l}")));
                s.spawn(move || {
                    std::fs::create_dir(&task_dir).unwrap();
                    let mut failed = Vec::new();
                    for i in 0..n {
                        let out = common::output(
                            Command::new(common::shim())
                                .arg("--root")
                                .arg(root)
                                .arg("--cgroup-parent")
                                .arg(parent)
                                .args(["run", "--rm", "--task-dir"])
                                .arg(&task_dir)
                                .args(["--chroot", "--ns", "pid,ipc,uts", "--user", "nobody"])
                                .args(["--memory", "256M", "--pids-limit", "128"])
                                .args(["--", "/bin/true"]),
                        );
                        if !out.status.success() {
                            failed.push(format!(
                                "loop {l} run {i}: {} {}",
                                out.status,
                                String::from_utf8_lossy(&out.stderr).trim()
                            ));
                        }
                    }
                    failed
                })
            })
            .collect();
        loops.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let took = t0.elapsed();
    eprintln!(
        "{} isolated run --rm in {took:.1?} ({:.1} ms each, 2 at once)",
        2 * n,
        took.as_secs_f64() * 1000.0 / (2 * n) as f64
    );
    assert!(
        failures.is_empty(),
        "{} of {} runs failed, first: {:#?}",
        failures.len(),
        2 * n,
        &failures[..failures.len().min(10)]
    );
    // The state root is empty (--rm removed every task), no secrets/ tmpfs
    // is mounted in a task dir, no cgroup or process is left.
    leftovers::assert_none(&parent.0, fs.path(), &root, Duration::from_secs(2));
}

/// `ps` (the library's `list`) while tasks start and are removed never
/// shows one of them `broken`. A start takes the task's lock with its
/// directory and hands it to the supervisor, so a directory without a
/// state yet is `starting`; a removal renames the directory away before
/// it empties it. Before, 93 of 454 `ps` beside a `run --rm` loop showed a
/// task broken (`state.json: no such file`).
#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn ps_never_shows_a_starting_or_removed_task_broken() {
    if !root_or_skip("ps_never_shows_a_starting_or_removed_task_broken") {
        return;
    }
    let root = common::TestRoot::new();
    let runs = if common::time_scale() > 1.0 { 20 } else { 150 };
    let (lists, seen, starting, broken) = std::thread::scope(|s| {
        let starter = s.spawn(|| {
            for i in 0..runs {
                // The CLI's start and the library's, each with its removal.
                if i % 2 == 0 {
                    let out = common::output(root.cli().args(["run", "--rm", "--", "true"]));
                    assert_eq!(out.status.code(), Some(0), "{out:?}");
                } else {
                    let mut task = root.sh("exit 0");
                    task.wait().unwrap();
                    common::supervisor_finished(&task);
                    root.exec.remove(task.id().as_str(), false).unwrap();
                }
            }
        });
        let (mut lists, mut seen, mut starting, mut broken) = (0, 0, 0, Vec::new());
        // Until the starter is done (or has failed: its panic is re-raised).
        while !starter.is_finished() {
            lists += 1;
            for (id, state) in root.exec.list().unwrap() {
                seen += 1;
                match state {
                    Ok(st) if st.status == nomad_shim::Status::Starting => starting += 1,
                    Ok(_) => {}
                    Err(e) => broken.push(format!("{id}: {e}")),
                }
            }
        }
        starter.join().unwrap();
        (lists, seen, starting, broken)
    });
    eprintln!("{lists} lists saw {seen} tasks, {starting} of them starting");
    assert!(
        seen > 0,
        "no list overlapped a task: the test proves nothing"
    );
    assert!(
        broken.is_empty(),
        "{} broken: {:?}",
        broken.len(),
        &broken[..broken.len().min(5)]
    );
}
