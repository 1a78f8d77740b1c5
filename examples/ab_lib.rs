//! Interleaved A/B of the library's start with several shim binaries
//! (`scripts/ab` builds and runs it; docs/performance.md, "Second pass").
//!
//! ```text
//! ab_lib N [--isolated] SHIM...
//! ```
//!
//! Each round runs `Executor::start(TaskSpec::new("/bin/true"))` and
//! `Task::wait()` once with every SHIM in the order given (with
//! `--isolated`, the isolation of the bench's `lib-isolated`: user nobody,
//! chroot, pid+ipc+uts namespaces, a fresh task dir made untimed each run;
//! with the issue-11 CLI's limits, memory 256 MiB and 128 pids, where the
//! bench's are 64 MiB and 64), each with its own
//! root (a temp dir on /dev/shm) and cgroup parent (`nomad-shim-ab<i>`), and
//! removes the task untimed. Five untimed rounds first. Prints per SHIM the
//! median start-to-exit time and the median over rounds of (its time ÷ the
//! first SHIM's). As root, in a process that reaps what it starts (it makes
//! itself a subreaper: docs/architecture.md, "Who reaps the supervisor").

use std::time::Instant;

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nomad_shim::cgroup::Resources;
use nomad_shim::isolate::IsolationSpec;
use nomad_shim::{Executor, TaskSpec};

fn one(exec: &Executor, spec: &TaskSpec, task_dirs: Option<&std::path::Path>, n: usize) -> f64 {
    let mut spec = spec.clone();
    if let Some(dirs) = task_dirs {
        let dir = dirs.join(format!("t{n}"));
        std::fs::create_dir_all(&dir).expect("task dir");
        spec.isolation.task_dir = Some(dir);
    }
    let t0 = Instant::now();
    let mut task = exec.start(&spec).expect("start");
    task.wait().expect("wait");
    let took = t0.elapsed().as_secs_f64() * 1e3;
    let id = task.id().to_string();
    drop(task);
    exec.remove(&id, false).expect("remove");
    if let Some(dir) = &spec.isolation.task_dir {
        std::fs::remove_dir_all(dir).expect("remove task dir");
    }
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
    let mut shims: Vec<String> = args.collect();
    let isolated = shims.first().is_some_and(|a| a == "--isolated");
    if isolated {
        shims.remove(0);
    }
    if rounds == 0 || shims.is_empty() {
        eprintln!("usage: ab_lib N [--isolated] SHIM...");
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
    let mut spec = TaskSpec::new("/bin/true");
    if isolated {
        spec.resources(Resources {
            memory_max: Some(256 << 20),
            pids_max: Some(128),
            ..Resources::default()
        })
        .user("nobody")
        .isolation(IsolationSpec {
            chroot: true,
            pid: true,
            ipc: true,
            uts: true,
            ..IsolationSpec::default()
        });
    }
    let task_dirs: Vec<_> = (0..execs.len())
        .map(|i| isolated.then(|| tmp.path().join(format!("taskdirs{i}"))))
        .collect();
    let mut times = vec![Vec::new(); execs.len()];
    let mut ratios = vec![Vec::new(); execs.len()];
    for round in 0..rounds + 5 {
        let t: Vec<f64> = execs
            .iter()
            .zip(&task_dirs)
            .map(|(e, d)| one(e, &spec, d.as_deref(), round))
            .collect();
        if round >= 5 {
            for (k, &tk) in t.iter().enumerate() {
                times[k].push(tk);
                ratios[k].push(tk / t[0]);
            }
        }
    }
    for (k, shim) in shims.iter().enumerate() {
        println!(
            "{}  {shim:50} median {:.3} ms  ÷ first, per round: {:.3}",
            if isolated { "lib-iso" } else { "library" },
            median(&mut times[k]),
            median(&mut ratios[k])
        );
    }
}
