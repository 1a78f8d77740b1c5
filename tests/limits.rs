//! Issue 3: resource limits through the supervisor, on whichever cgroup
//! hierarchy this kernel has (v1 on the project's hosts, v2 in the VM).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use nomad_shim::cgroup::{CgroupPaths, CgroupRoot, Layout, Resources, TaskCgroup};
use nomad_shim::{Status, TaskExit, TaskSpec, TaskState};

use crate::common::{self, alive, root_or_skip, TestRoot};

const PYTHON: &str = "/usr/bin/python3";

fn layout() -> Layout {
    CgroupRoot::detect().unwrap().layout()
}

fn paths(state: &TaskState) -> CgroupPaths {
    state.cgroup.clone().expect("a task has a cgroup")
}

/// A file of the task's cgroup: `controller` picks the v1 hierarchy.
fn cg_file(state: &TaskState, controller: &str, file: &str) -> PathBuf {
    match paths(state) {
        CgroupPaths::V2(p) => p.join(file),
        CgroupPaths::V1(m) => m[controller].join(file),
    }
}

fn read(p: PathBuf) -> String {
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_owned()
}

/// Every directory of the task's cgroup is gone.
fn assert_cgroup_gone(state: &TaskState) {
    let dirs: Vec<PathBuf> = match paths(state) {
        CgroupPaths::V2(p) => vec![p],
        CgroupPaths::V1(m) => m.into_values().collect(),
    };
    for d in dirs {
        assert!(
            common::eventually(Duration::from_secs(2), || !d.exists()),
            "cgroup {} left behind",
            d.display()
        );
    }
}

fn spec(program: &str, args: &[&str], resources: Resources) -> TaskSpec {
    let mut spec = TaskSpec::new(program);
    spec.args(args.iter().copied()).resources(resources);
    spec
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_task_past_its_memory_limit_is_oom_killed_and_reported() {
    if !root_or_skip("a_task_past_its_memory_limit_is_oom_killed_and_reported") {
        return;
    }
    let root = TestRoot::new();
    let r = Resources {
        memory_max: Some(64 << 20),
        ..Resources::default()
    };
    // bytearray zero-fills: 200 MiB of touched pages.
    let mut task = root
        .exec
        .start(&spec(
            PYTHON,
            &["-c", "b = bytearray(200 << 20); print('survived')"],
            r,
        ))
        .unwrap();
    let exit = task.wait().unwrap();
    let TaskExit::Exited(rec) = &exit else {
        panic!("the supervisor did not survive: {exit:?}")
    };
    assert_eq!(rec.signal, Some(libc::SIGKILL), "{rec:?}");
    assert_eq!(rec.oom_killed, Some(true), "{rec:?}");
    let state = task.state().unwrap();
    assert_eq!(state.status, Status::Exited);
    assert_eq!(
        std::fs::read_to_string(task.dir().join("stdout.log")).unwrap(),
        ""
    );
    assert_cgroup_gone(&state);
    // Without the limit, the same program lives and says so, and no OOM is reported.
    let mut task = root
        .exec
        .start(&spec(
            PYTHON,
            &["-c", "b = bytearray(200 << 20); print('survived')"],
            Resources::default(),
        ))
        .unwrap();
    let TaskExit::Exited(rec) = task.wait().unwrap() else {
        panic!("lost")
    };
    assert_eq!((rec.code, rec.oom_killed), (Some(0), Some(false)));
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_fork_bomb_is_contained_by_the_pids_limit_and_killed_in_under_a_second() {
    if !root_or_skip("a_fork_bomb_is_contained_by_the_pids_limit_and_killed_in_under_a_second") {
        return;
    }
    let root = TestRoot::new();
    let r = Resources {
        pids_max: Some(64),
        ..Resources::default()
    };
    // A bomb that never gives up: every process forks forever, backing off
    // a little when the limit refuses it (dash, by contrast, exits on a
    // failed fork and the bomb burns out).
    let bomb = "import os, time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.05)";
    let mut task = root.exec.start(&spec(PYTHON, &["-c", bomb], r)).unwrap();
    std::thread::sleep(common::scaled(Duration::from_millis(1500)));
    let state = task.state().unwrap();
    assert_eq!(state.status, Status::Running, "the bomb took the task down");
    let current: u64 = read(cg_file(&state, "pids", "pids.current"))
        .parse()
        .unwrap();
    assert!(current <= 64, "pids.current {current} > 64");
    assert!(
        current >= 48,
        "the bomb is not pressing on the limit ({current} pids)"
    );
    // The kernel refused forks at the limit.
    let events = read(cg_file(&state, "pids", "pids.events"));
    let refused: u64 = events.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(refused > 0, "{events}");
    assert!(task.stats().unwrap().pids.unwrap().current <= 64);
    let t0 = Instant::now();
    let exit = task.force_stop().unwrap();
    let took = t0.elapsed();
    assert_eq!(exit.signal(), Some(libc::SIGKILL));
    assert!(
        took < common::scaled(Duration::from_secs(1)),
        "killing the bomb took {took:?}"
    );
    assert_cgroup_gone(&state);
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn stop_leaves_no_process_even_of_daemons_that_left_the_session() {
    if !root_or_skip("stop_leaves_no_process_even_of_daemons_that_left_the_session") {
        return;
    }
    let root = TestRoot::new();
    let mut task = root
        .exec
        .start(&spec(
            "/bin/sh",
            &["-c", "setsid sleep 1000 & (sleep 1000 &); exec sleep 1000"],
            Resources::default(),
        ))
        .unwrap();
    let state = task.state().unwrap();
    let cg = TaskCgroup::from_paths(&CgroupRoot::detect().unwrap(), &paths(&state)).unwrap();
    assert!(
        common::eventually(Duration::from_secs(5), || cg.pids().unwrap().len() == 3),
        "{:?}",
        cg.pids()
    );
    let pids = cg.pids().unwrap();
    // One of them is in a session of its own (once setsid has run), one an
    // orphan: they are not all reachable through the task's process group.
    let sid = task.pid().unwrap();
    assert!(common::eventually(Duration::from_secs(5), || pids
        .iter()
        .any(|&p| !common::session_members(sid).contains(&p))));
    task.stop(None, Some(Duration::from_secs(5))).unwrap();
    assert!(
        common::eventually(Duration::from_secs(2), || pids.iter().all(|&p| !alive(p))),
        "survivors among {pids:?}"
    );
    assert_cgroup_gone(&state);
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_cpu_bound_task_under_half_a_cpu_uses_about_half_a_core() {
    if !root_or_skip("a_cpu_bound_task_under_half_a_cpu_uses_about_half_a_core") {
        return;
    }
    let root = TestRoot::new();
    // What a spinning task gets here right now without a limit: less than a
    // core on a loaded machine (other tests, other work), and then a
    // limited one getting less than half a core says nothing of the limit.
    let (free, _) = spin(&root, Resources::default(), Duration::from_secs(1));
    let r = Resources {
        cpus: Some(0.5),
        ..Resources::default()
    };
    let (pct, throttled) = spin(&root, r, Duration::from_secs(2));
    // The limit: never more than half a core (and slack for the sampling).
    assert!(pct <= 65.0, "used {pct:.1}% of a core under --cpus 0.5");
    // Its share: half a core, or what the machine gives an unlimited task
    // now if that is less.
    let share = free.min(50.0);
    assert!(
        pct >= 0.7 * share,
        "used {pct:.1}% of a core under --cpus 0.5, while an unlimited task got {free:.1}%"
    );
    if free >= 60.0 {
        assert!(
            throttled > 0,
            "never throttled (an unlimited task got {free:.1}%)"
        );
    }
}

/// Runs `while :; do :; done` with `r` and returns the share of a core it
/// used over `over` (after 300 ms to settle) and how often it was throttled.
fn spin(root: &TestRoot, r: Resources, over: Duration) -> (f64, u64) {
    let mut task = root
        .exec
        .start(&spec("/bin/sh", &["-c", "while :; do :; done"], r))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let a = task.stats().unwrap();
    let t0 = Instant::now();
    std::thread::sleep(over);
    let b = task.stats().unwrap();
    let pct = nomad_shim::cgroup::cpu_percent(&a, &b, t0.elapsed()).unwrap();
    task.force_stop().unwrap();
    (pct, b.cpu.map_or(0, |c| c.nr_throttled))
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn update_resources_raises_the_memory_limit_of_a_running_task() {
    if !root_or_skip("update_resources_raises_the_memory_limit_of_a_running_task") {
        return;
    }
    let root = TestRoot::new();
    let r = Resources {
        memory_max: Some(64 << 20),
        ..Resources::default()
    };
    let alloc = "b = bytearray(100 << 20); print('allocated')";
    // Under 64 MiB, the allocation fails (the OOM killer ends it).
    let mut before = root
        .exec
        .start(&spec(PYTHON, &["-c", alloc], r.clone()))
        .unwrap();
    assert_eq!(
        before.wait().unwrap().record().unwrap().oom_killed,
        Some(true)
    );
    // The same allocation in a running task, after its limit was raised.
    let marker = root.path().with_file_name("go");
    let script = format!(
        "while [ ! -e {} ]; do sleep 0.05; done; exec {PYTHON} -c \"{alloc}\"",
        marker.display()
    );
    let mut task = root
        .exec
        .start(&spec("/bin/sh", &["-c", &script], r))
        .unwrap();
    let state = task.state().unwrap();
    let limit_file = match layout() {
        Layout::V2 => cg_file(&state, "memory", "memory.max"),
        _ => cg_file(&state, "memory", "memory.limit_in_bytes"),
    };
    assert_eq!(read(limit_file.clone()), (64u64 << 20).to_string());
    task.update_resources(&Resources {
        memory_max: Some(256 << 20),
        ..Resources::default()
    })
    .unwrap();
    assert_eq!(read(limit_file), (256u64 << 20).to_string());
    std::fs::write(&marker, b"").unwrap();
    let TaskExit::Exited(rec) = task.wait().unwrap() else {
        panic!("lost")
    };
    assert_eq!(
        (rec.code, rec.oom_killed),
        (Some(0), Some(false)),
        "{rec:?}"
    );
    assert_eq!(
        std::fs::read_to_string(task.dir().join("stdout.log")).unwrap(),
        "allocated\n"
    );
    // An ended task's limits cannot be updated.
    assert!(task
        .update_resources(&Resources {
            pids_max: Some(10),
            ..Resources::default()
        })
        .is_err());
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn the_limits_written_match_what_was_asked() {
    if !root_or_skip("the_limits_written_match_what_was_asked") {
        return;
    }
    let root = TestRoot::new();
    let r = Resources {
        memory_max: Some(64 << 20),
        memory_reservation: Some(32 << 20),
        cpu_shares: Some(512),
        cpus: Some(1.5),
        pids_max: Some(100),
        cpuset_cpus: Some("0".into()),
        ..Resources::default()
    };
    let mut task = root.exec.start(&spec("/bin/sleep", &["1000"], r)).unwrap();
    let s = task.state().unwrap();
    let expect: Vec<(&str, &str, String)> = match layout() {
        Layout::V2 => vec![
            ("memory", "memory.max", (64u64 << 20).to_string()),
            ("memory", "memory.high", (32u64 << 20).to_string()),
            ("memory", "memory.oom.group", "1".into()),
            (
                "cpu",
                "cpu.weight",
                nomad_shim::cgroup::shares_to_weight(512).to_string(),
            ),
            ("cpu", "cpu.max", "150000 100000".into()),
            ("pids", "pids.max", "100".into()),
            ("cpuset", "cpuset.cpus", "0".into()),
        ],
        _ => vec![
            ("memory", "memory.limit_in_bytes", (64u64 << 20).to_string()),
            (
                "memory",
                "memory.soft_limit_in_bytes",
                (32u64 << 20).to_string(),
            ),
            ("cpu", "cpu.shares", "512".into()),
            ("cpu", "cpu.cfs_quota_us", "150000".into()),
            ("cpu", "cpu.cfs_period_us", "100000".into()),
            ("pids", "pids.max", "100".into()),
            ("cpuset", "cpuset.cpus", "0".into()),
        ],
    };
    for (controller, file, want) in expect {
        assert_eq!(read(cg_file(&s, controller, file)), want, "{file}");
    }
    // The task is in it, and the supervisor is not.
    let procs = read(cg_file(&s, "pids", "cgroup.procs"));
    assert_eq!(procs, task.pid().unwrap().to_string());
    let stats = task.stats().unwrap();
    assert!(stats.memory.unwrap().current > 0);
    assert_eq!(stats.pids.unwrap().current, 1);
    task.force_stop().unwrap();
    assert_cgroup_gone(&s);
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_limit_the_host_cannot_enforce_is_an_error_naming_it_unless_best_effort() {
    if !root_or_skip("a_limit_the_host_cannot_enforce_is_an_error_naming_it_unless_best_effort") {
        return;
    }
    let root = TestRoot::new();
    // A CPU that does not exist is refused by the kernel: the start fails
    // and names the file; nothing is left behind.
    let r = Resources {
        cpuset_cpus: Some("4095".into()),
        ..Resources::default()
    };
    let err = root.exec.start(&spec("/bin/true", &[], r)).unwrap_err();
    assert!(err.to_string().contains("cpuset.cpus"), "{err}");
    assert!(root.exec.list().unwrap().is_empty());
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn no_cgroup_is_left_after_a_supervisor_is_killed_and_the_task_reopened() {
    if !root_or_skip("no_cgroup_is_left_after_a_supervisor_is_killed_and_the_task_reopened") {
        return;
    }
    let root = TestRoot::new();
    let task = root
        .exec
        .start(&spec(
            "/bin/sh",
            &["-c", "setsid sleep 1000 & exec sleep 1000"],
            Resources::default(),
        ))
        .unwrap();
    let state = task.state().unwrap();
    let cg = TaskCgroup::from_paths(&CgroupRoot::detect().unwrap(), &paths(&state)).unwrap();
    assert!(common::eventually(Duration::from_secs(5), || cg
        .pids()
        .unwrap()
        .len()
        == 2));
    let pids = cg.pids().unwrap();
    kill(
        Pid::from_raw(task.supervisor_pid().unwrap()),
        Signal::SIGKILL,
    )
    .unwrap();
    assert!(common::eventually(Duration::from_secs(5), || !alive(
        task.supervisor_pid().unwrap()
    )));
    let reopened = root.exec.open(task.id().as_str()).unwrap();
    assert_eq!(reopened.state().unwrap().status, Status::Lost);
    assert!(
        common::eventually(Duration::from_secs(2), || pids.iter().all(|&p| !alive(p))),
        "survivors among {pids:?}"
    );
    assert_cgroup_gone(&state);
}
