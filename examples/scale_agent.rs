//! An agent for the scale and churn tests (tests/scale.rs, issue 9): a
//! separate process that uses the library, so that a test can SIGKILL it with
//! its tasks running and start another.
//!
//! ```text
//! scale_agent [--cgroup-parent P] ROOT start N    start N tasks `scale-0000`...
//!     (sh waiting on a sleep, exits with code_of(k) on SIGTERM), each with a
//!     memory and pids limit, one after the other; print a JSON line (the
//!     starts' time), then wait to be killed
//! scale_agent [--cgroup-parent P] ROOT reattach N list and open every task,
//!     check all N run; then SIGTERM each and wait for each, compare every
//!     exit with code_of(k), remove each; print a JSON line (times, wrong exits)
//! scale_agent [--cgroup-parent P] ROOT churn N THREADS
//!     N start/wait/remove cycles (`sh -c 'exit K'`) from THREADS threads,
//!     after a warm-up; print a JSON line: this process's fds, threads, RSS and
//!     malloc'd heap before and after, wrong exits, zombies left
//! ```
//!
//! It is no subreaper: the supervisors re-parent to the test process, which
//! reaps them (docs/architecture.md, "Who reaps the supervisor"); its own
//! children are only the library's short-lived intermediates, which the
//! library reaps, so a zombie among them is a bug. It raises its soft
//! `RLIMIT_NOFILE` to the hard one (each open task holds two fds).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::signal::Signal;
use nomad_shim::identity::{children, state};
use nomad_shim::{Executor, Resources, TaskExit, TaskSpec};

/// The exit code of task `k` on SIGTERM: different neighbours, never 0,
/// never a signal's 128+n.
fn code_of(k: usize) -> i32 {
    (k % 100) as i32 + 10
}

fn id_of(k: usize) -> String {
    format!("scale-{k:04}")
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut parent = None;
    if args.first().is_some_and(|a| a == "--cgroup-parent") && args.len() > 1 {
        parent = Some(args.remove(1));
        args.remove(0);
    }
    let (root, cmd) = match (args.first(), args.get(1)) {
        (Some(r), Some(c)) => (r.clone(), c.clone()),
        _ => usage(),
    };
    let num = |i: usize| -> usize {
        args.get(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| usage())
    };
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or_else(|e| fail("getrlimit", e));
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap_or_else(|e| fail("setrlimit", e));
    let mut exec = Executor::with_root(&root);
    if let Some(p) = parent {
        exec = exec.cgroup_parent(p);
    }
    match cmd.as_str() {
        "start" => start(&exec, num(2)),
        "reattach" => reattach(&exec, num(2)),
        "churn" => churn(&exec, num(2), num(3)),
        _ => usage(),
    }
}

fn start(exec: &Executor, n: usize) {
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    let (mut first, mut last) = (Vec::new(), Vec::new());
    for k in 0..n {
        let t = Instant::now();
        let mut spec = TaskSpec::new("/bin/sh");
        // `wait` is interrupted by SIGTERM, then the trap exits with the
        // code; the sleep is left to the whole-cgroup kill.
        spec.args([
            "-c".to_string(),
            format!("trap 'exit {}' TERM; sleep 100000 & wait", code_of(k)),
        ])
        .id(id_of(k))
        .resources(Resources {
            memory_max: Some(64 << 20),
            pids_max: Some(16),
            cpu_shares: Some(128),
            ..Resources::default()
        });
        tasks.push(exec.start(&spec).unwrap_or_else(|e| fail(&id_of(k), e)));
        if k < 50 {
            first.push(t.elapsed());
        } else if k >= n.saturating_sub(50) {
            last.push(t.elapsed());
        }
    }
    let took = t0.elapsed();
    first.sort();
    last.sort();
    println!(
        "{}",
        serde_json::json!({
            "started": tasks.len(),
            "start_s": took.as_secs_f64(),
            "starts_per_s": n as f64 / took.as_secs_f64(),
            // This machine's speed now: what one start takes with few tasks.
            "first_50_median_s": first.get(first.len() / 2).map_or(0.0, Duration::as_secs_f64),
            // With n - 50 tasks running: whether starts slow down as they accumulate.
            "last_50_median_s": last.get(last.len() / 2).map_or(0.0, Duration::as_secs_f64),
        })
    );
    // The agent now "works" with 1,000 handles open, until it is killed.
    loop {
        std::thread::park();
    }
}

fn reattach(exec: &Executor, n: usize) {
    // Reattach: find every task and open a handle on each (what an agent
    // does at its start), checking that each runs.
    let t0 = Instant::now();
    let list = exec.list().unwrap_or_else(|e| fail("list", e));
    let mut tasks = Vec::with_capacity(list.len());
    let mut wrong = Vec::new();
    for (id, _) in &list {
        match exec.open(id.as_str()) {
            Ok(mut t) => match t.try_wait() {
                Ok(None) => tasks.push(t),
                Ok(Some(exit)) => wrong.push(format!("{id}: ended before the reattach: {exit:?}")),
                Err(e) => wrong.push(format!("{id}: try_wait: {e}")),
            },
            Err(e) => wrong.push(format!("{id}: open: {e}")),
        }
    }
    let reattach = t0.elapsed();
    if tasks.len() != n {
        wrong.push(format!("{} tasks running, {n} expected", tasks.len()));
    }
    // Stop all: SIGTERM to every task, then the exit of each.
    let t1 = Instant::now();
    for t in &tasks {
        if let Err(e) = t.signal(Signal::SIGTERM) {
            wrong.push(format!("{}: signal: {e}", t.id()));
        }
    }
    let mut exact = 0;
    for mut t in tasks {
        let id = t.id().clone();
        let k: usize = id.as_str()[6..].parse().unwrap_or(usize::MAX);
        match t.wait() {
            Ok(TaskExit::Exited(r)) if r.code == Some(code_of(k)) => exact += 1,
            Ok(other) => wrong.push(format!("{id}: expected code {}, got {other:?}", code_of(k))),
            Err(e) => wrong.push(format!("{id}: wait: {e}")),
        }
    }
    let stop_all = t1.elapsed();
    let t2 = Instant::now();
    for (id, _) in &list {
        if let Err(e) = exec.remove(id.as_str(), false) {
            wrong.push(format!("{id}: rm: {e}"));
        }
    }
    let remove_all = t2.elapsed();
    reap_all(Duration::from_secs(30));
    println!(
        "{}",
        serde_json::json!({
            "reattached": list.len(),
            "reattach_s": reattach.as_secs_f64(),
            "stop_all_s": stop_all.as_secs_f64(),
            "remove_all_s": remove_all.as_secs_f64(),
            "exact": exact,
            "wrong": wrong,
            "zombies": zombies(),
        })
    );
}

/// This process's fds, threads, RSS (KiB) and malloc'd heap in use (bytes),
/// once the worker threads are gone: a joined thread may still be listed
/// for a moment (pthread_join returns when the thread clears its tid, a
/// little before the kernel removes it), so wait up to a second for only
/// this thread to be left.
fn footprint() -> serde_json::Value {
    let read = || std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let t0 = Instant::now();
    let mut status = read();
    while !status.lines().any(|l| l == "Threads:\t1") && t0.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(5));
        status = read();
    }
    let field = |k: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    serde_json::json!({
        "fds": std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0),
        "threads": field("Threads:"),
        "rss_kib": field("VmRSS:"),
        "heap_bytes": heap_in_use(),
    })
}

/// Bytes malloc has handed out and not had back (glibc's `mallinfo2`).
fn heap_in_use() -> usize {
    // SAFETY: mallinfo2(3) takes no arguments and only reads the
    // allocator's counters (MT-Safe per its man page).
    #[allow(unsafe_code)]
    let info = unsafe { libc::mallinfo2() };
    info.uordblks + info.hblkhd
}

fn churn(exec: &Executor, n: usize, threads: usize) {
    let wrong = Mutex::new(Vec::<String>::new());
    let cycles = |count: usize| {
        std::thread::scope(|s| {
            for t in 0..threads {
                let wrong = &wrong;
                s.spawn(move || {
                    for k in (t..count).step_by(threads) {
                        let code = (k * 7 % 250) as i32;
                        let mut spec = TaskSpec::new("/bin/sh");
                        spec.args(["-c".to_string(), format!("exit {code}")]);
                        let r = exec.start(&spec).and_then(|mut task| {
                            let exit = task.wait()?;
                            exec.remove(task.id().as_str(), false)?;
                            Ok(exit)
                        });
                        match r {
                            Ok(exit) if exit.code() == Some(code) => {}
                            Ok(exit) => wrong
                                .lock()
                                .unwrap()
                                .push(format!("cycle {k}: expected {code}, got {exit:?}")),
                            Err(e) => wrong.lock().unwrap().push(format!("cycle {k}: {e}")),
                        }
                    }
                });
            }
        })
    };
    // Warm-up: the allocator's arenas of each thread, the log facade, lazy
    // statics are made once; what the cycles must not grow is measured after.
    cycles(threads * 50);
    reap_all(Duration::from_secs(10));
    let before = footprint();
    let t0 = Instant::now();
    cycles(n);
    let took = t0.elapsed();
    reap_all(Duration::from_secs(10));
    let after = footprint();
    println!(
        "{}",
        serde_json::json!({
            "cycles": n,
            "threads": threads,
            "churn_s": took.as_secs_f64(),
            "cycles_per_s": n as f64 / took.as_secs_f64(),
            "before": before,
            "after": after,
            "wrong": wrong.into_inner().unwrap(),
            "zombies": zombies(),
            "children": children(),
        })
    );
}

/// Waits until this process has no child (the library reaps its
/// intermediates), or `limit` passes.
fn reap_all(limit: Duration) {
    let t0 = Instant::now();
    while !children().is_empty() && t0.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn zombies() -> Vec<i32> {
    children()
        .into_iter()
        .filter(|&p| state(p) == Some('Z'))
        .collect()
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("scale_agent: {what}: {e}");
    std::process::exit(1)
}

fn usage() -> ! {
    eprintln!(
        "usage: scale_agent [--cgroup-parent P] ROOT (start N | reattach N | churn N THREADS)"
    );
    std::process::exit(2)
}
