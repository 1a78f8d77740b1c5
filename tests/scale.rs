//! Issue 9, points 5 and 6: scale and churn, against the real kernel, from a
//! separate agent process (examples/scale_agent.rs). Opt-in: a few minutes
//! on a 2-core machine, so `#[ignore = "scale: ..."]` and skipped by the
//! normal runs; `scripts/test --scale` (and so CI) runs them:
//!
//! ```text
//! cargo build --workspace --all-targets
//! cargo test --test tests -- --ignored --test-threads=1 --nocapture scale::
//! ```
//!
//! Each prints its numbers as one JSON line (docs/performance.md, "Scale
//! (issue 9)").

use std::process::Command;
use std::time::{Duration, Instant};

use nomad_shim::Status;
use serde_json::Value;

use crate::common::{self, root_or_skip, TestRoot};
use crate::leftovers;

/// The agent and the supervisor binary: this build's, or others (a release
/// build, for numbers) named by `NOMAD_SHIM_SCALE_AGENT` and
/// `NOMAD_SHIM_SCALE_SHIM`.
fn scale_agent(root: &TestRoot) -> Command {
    let agent = std::env::var_os("NOMAD_SHIM_SCALE_AGENT").map_or_else(
        || common::target_dir().join("examples").join("scale_agent"),
        Into::into,
    );
    let shim = std::env::var_os("NOMAD_SHIM_SCALE_SHIM").map_or_else(common::shim, Into::into);
    let mut c = Command::new(agent);
    c.env("NOMAD_SHIM", shim)
        .arg("--cgroup-parent")
        .arg(&root.cgroup_parent)
        .arg(root.path());
    c
}

fn json_line(out: &[u8]) -> Value {
    let text = String::from_utf8_lossy(out);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line: {text:?}: {e}"))
}

/// Proportional set size of `pid` in KiB (`/proc/PID/smaps_rollup`): its
/// share of the pages it shares with others (the binary, libc), all of its
/// own.
fn pss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

const N: usize = 1000;

#[test]
#[ignore = "scale: 1,000 tasks, about a minute; scripts/test --scale runs it"]
fn a_thousand_tasks_start_are_listed_survive_the_agent_and_stop_with_exact_exits() {
    if !root_or_skip(
        "a_thousand_tasks_start_are_listed_survive_the_agent_and_stop_with_exact_exits",
    ) {
        return;
    }
    let root = TestRoot::new();
    // 1. An agent starts 1,000 tasks, one after the other, each with limits.
    let mut agent = common::spawn(
        scale_agent(&root)
            .args(["start", &N.to_string()])
            .stdout(std::process::Stdio::piped()),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(agent.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let started: Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("agent said {line:?} ({e}); it failed (stderr above)"));
    assert_eq!(started["started"], N);

    // 2. `ps` lists all of them, running.
    let t0 = Instant::now();
    let ps = common::output(root.cli().args(["ps", "--json"]));
    let ps_took = t0.elapsed();
    assert!(
        ps.status.success(),
        "{}",
        String::from_utf8_lossy(&ps.stderr)
    );
    let listed: Vec<Value> = serde_json::from_slice(&ps.stdout).unwrap();
    assert_eq!(listed.len(), N);
    assert!(
        listed.iter().all(|t| t["status"] == "running"),
        "not all running: {:?}",
        listed.iter().find(|t| t["status"] != "running")
    );

    // The supervisors' memory, all 1,000 of them, and their tasks' pids.
    let states: Vec<_> = root
        .exec
        .list()
        .unwrap()
        .into_iter()
        .map(|(id, s)| s.unwrap_or_else(|e| panic!("{id}: {e}")))
        .collect();
    assert!(states.iter().all(|s| s.status == Status::Running));
    let sups: Vec<i32> = states.iter().map(|s| s.supervisor.unwrap().pid).collect();
    let pss: u64 = sups.iter().map(|&p| pss_kib(p)).sum();
    let task_pids: Vec<i32> = states.iter().map(|s| s.task.unwrap().pid).collect();

    // 3. The agent is SIGKILLed with its 1,000 handles open: every task and
    //    supervisor lives on.
    let pid = agent.id() as i32;
    agent.kill().unwrap();
    agent.wait().unwrap();
    common::disown(pid);
    assert!(sups.iter().chain(&task_pids).all(|&p| common::alive(p)));

    // 4. A new agent reattaches to all, stops all (SIGTERM, each exits with
    //    its own code), checks every exit and removes every task.
    let out = common::output(scale_agent(&root).args(["reattach", &N.to_string()]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json_line(&out.stdout);
    eprintln!(
        "{}",
        serde_json::json!({
            "tasks": N,
            "start_s": started["start_s"],
            "starts_per_s": started["starts_per_s"],
            "first_50_median_s": started["first_50_median_s"],
            "last_50_median_s": started["last_50_median_s"],
            "ps_s": ps_took.as_secs_f64(),
            "supervisors_pss_kib": pss,
            "supervisor_pss_kib_each": pss as f64 / N as f64,
            "reattach_s": report["reattach_s"],
            "stop_all_s": report["stop_all_s"],
            "remove_all_s": report["remove_all_s"],
        })
    );
    assert_eq!(report["wrong"], serde_json::json!([]), "{report}");
    assert_eq!(report["exact"], N, "{report}");
    assert_eq!(report["zombies"], serde_json::json!([]), "{report}");
    // The issue's targets (on the host; stretched in the emulated VM).
    let secs = |v: &Value| Duration::from_secs_f64(v.as_f64().unwrap());
    assert!(
        secs(&report["reattach_s"]) < common::scaled(Duration::from_secs(1)),
        "reattach of {N} live tasks took {:?}",
        secs(&report["reattach_s"])
    );
    // Starts do not slow down as tasks accumulate: the median of the last
    // 50 (with 950 running) within 3x that of the first 50. Medians, so that
    // a few starts stalled by a busy machine do not decide it.
    let (first, last) = (
        secs(&started["first_50_median_s"]),
        secs(&started["last_50_median_s"]),
    );
    assert!(
        last < first * 3,
        "starts slowed down as tasks accumulated: median {first:?} for the first 50, {last:?} for the last 50"
    );
    // 1,000 starts in 10 s is 10 ms a start. On a machine measured slower
    // (shared, a debug build), the target scales by the median of the first
    // 50 starts (3 x 1,000 of them), and by how oversubscribed its CPUs were
    // over the starts (the 1-minute load average per CPU, when over 1):
    // starts stalled by other work (each v1 cgroup migration waits for an
    // RCU grace period) add up.
    let start_s = secs(&started["start_s"]);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let load: f64 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let busy = (load / cpus).max(1.0);
    let limit = common::scaled(Duration::from_secs(10))
        .max(first * N as u32 * 3)
        .mul_f64(busy);
    assert!(
        start_s < limit,
        "{N} sequential starts took {start_s:?}, over {limit:?} (10 s, or 3 x {N} times the \
         median of the first 50, {first:?}; times {busy:.1} for a load average of {load} on {cpus} CPUs)"
    );

    // 5. Nothing left: no process (supervisor, task, its sleep), no cgroup,
    //    no state directory.
    leftovers::assert_none(
        &root.cgroup_parent,
        root.path().parent().unwrap(),
        root.path(),
        Duration::from_secs(10),
    );
}

#[test]
#[ignore = "scale: 10,000 start/wait/remove cycles, about a minute; scripts/test --scale runs it"]
fn ten_thousand_start_wait_remove_cycles_leave_the_agent_as_it_was() {
    if !root_or_skip("ten_thousand_start_wait_remove_cycles_leave_the_agent_as_it_was") {
        return;
    }
    let root = TestRoot::new();
    let cycles = std::env::var("NOMAD_SHIM_CHURN_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000usize);
    let out = common::output(scale_agent(&root).args(["churn", &cycles.to_string(), "4"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json_line(&out.stdout);
    eprintln!("{r}");
    assert_eq!(r["wrong"], serde_json::json!([]), "{r}");
    assert_eq!(r["zombies"], serde_json::json!([]), "{r}");
    assert_eq!(r["children"], serde_json::json!([]), "{r}");
    let (before, after) = (&r["before"], &r["after"]);
    let n = |v: &Value, k: &str| v[k].as_i64().unwrap();
    // fds and threads exactly; memory within what a leak of 16 bytes a cycle
    // would exceed (heap) and allocator slack (RSS).
    assert_eq!(n(after, "fds"), n(before, "fds"), "{r}");
    assert_eq!(n(after, "threads"), n(before, "threads"), "{r}");
    assert!(
        n(after, "heap_bytes") - n(before, "heap_bytes") < 16 * cycles as i64,
        "heap grew: {r}"
    );
    assert!(
        n(after, "rss_kib") - n(before, "rss_kib") < 2048,
        "RSS grew: {r}"
    );
    // No zombie anywhere of this run: the supervisors were reaped by this
    // test process (their subreaper) and nothing of the tasks is left.
    leftovers::assert_none(
        &root.cgroup_parent,
        root.path().parent().unwrap(),
        root.path(),
        Duration::from_secs(10),
    );
    assert!(
        common::eventually(Duration::from_secs(5), || common::children()
            .iter()
            .all(|&p| !common::is_zombie(p))),
        "zombie children of the test process"
    );
}
