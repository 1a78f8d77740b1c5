//! Interleaved A/B of the library's start with several shim binaries
//! (`scripts/ab` builds and runs it; docs/performance.md, "Second pass").
//!
//! ```text
//! ab_lib N SHIM...
//! ```
//!
//! Each round runs `Executor::start(TaskSpec::new("/bin/true"))` and
//! `Task::wait()` once with every SHIM in the order given, each with its own
//! root (a temp dir on /dev/shm) and cgroup parent (`nomad-shim-ab<i>`), and
//! removes the task untimed. Five untimed rounds first. Prints per SHIM the
//! median start-to-exit time and the median over rounds of (its time ÷ the
//! first SHIM's). As root, in a process that reaps what it starts (it makes
//! itself a subreaper: docs/architecture.md, "Who reaps the supervisor").

use std::time::Instant;

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nomad_shim::{Executor, TaskSpec};

fn one(exec: &Executor) -> f64 {
    let t0 = Instant::now();
    let mut task = exec.start(&TaskSpec::new("/bin/true")).expect("start");
    task.wait().expect("wait");
    let took = t0.elapsed().as_secs_f64() * 1e3;
    let id = task.id().to_string();
    drop(task);
    exec.remove(&id, false).expect("remove");
    // The supervisors, re-parented to us: reaped as they go.
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
    took
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let shims: Vec<String> = args.collect();
    if rounds == 0 || shims.is_empty() {
        eprintln!("usage: ab_lib N SHIM...");
        std::process::exit(2);
    }
    nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
    let tmp = tempfile::Builder::new()
        .prefix("nomad-shim-ab-lib.")
        .tempdir_in("/dev/shm")
        .expect("temp dir");
    let execs: Vec<Executor> = shims
        .iter()
        .enumerate()
        .map(|(i, shim)| {
            Executor::with_root(tmp.path().join(format!("root{i}")))
                .shim_path(shim)
                .cgroup_parent(format!("nomad-shim-ab{i}"))
        })
        .collect();
    let mut times = vec![Vec::new(); execs.len()];
    let mut ratios = vec![Vec::new(); execs.len()];
    for round in 0..rounds + 5 {
        let t: Vec<f64> = execs.iter().map(one).collect();
        if round >= 5 {
            for (k, &tk) in t.iter().enumerate() {
                times[k].push(tk);
                ratios[k].push(tk / t[0]);
            }
        }
    }
    for (k, shim) in shims.iter().enumerate() {
        println!(
            "library  {shim:50} median {:.3} ms  ÷ first, per round: {:.3}",
            median(&mut times[k]),
            median(&mut ratios[k])
        );
    }
}
