//! A minimal agent: what a task driver does with the library. The
//! integration tests also use it as the "agent" process they kill.
//!
//! ```text
//! agent [--cgroup-parent P] ROOT ...   (every form below takes it)
//! agent ROOT start SCRIPT        start `sh -c SCRIPT`, print "ID SUPERVISOR_PID TASK_PID", then
//!                                wait to be killed (an agent that dies with its tasks running)
//! agent ROOT wait ID             reattach and wait; print the exit as JSON
//! agent ROOT concurrent N T      start N tasks from T threads (`exit K`), wait for all, and print
//!                                a JSON report: wrong exits, zombies and fds left in this process
//! ```
//!
//! The library's `log` events (start, reattach, reconcile, lost, clean-up
//! failures) go to stderr, one line each, at the level `AGENT_LOG` names
//! (`error`, `warn`, `info` — the default —, `debug`, `off`).

use std::time::Instant;

/// A logger of a dozen lines: what an agent needs to see the library's
/// events, without a logging crate. (`env_logger` does the same with
/// filters and colours; not worth a dependency here.)
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            eprintln!(
                "{} {:<5} {}: {}",
                nomad_shim::state::now_rfc3339(),
                record.level(),
                record.target(),
                record.args()
            );
        }
    }

    fn flush(&self) {}
}

fn init_log() {
    static LOGGER: StderrLog = StderrLog;
    let level = std::env::var("AGENT_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(log::LevelFilter::Info);
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

use nomad_shim::identity::{children, state};
use nomad_shim::{Executor, TaskExit, TaskSpec};

fn main() {
    init_log();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut parent = None;
    if args.first().is_some_and(|a| a == "--cgroup-parent") && args.len() > 1 {
        parent = Some(args.remove(1));
        args.remove(0);
    }
    let (root, cmd) = match (args.first(), args.get(1)) {
        (Some(r), Some(c)) => (r.as_str(), c.as_str()),
        _ => usage(),
    };
    let mut exec = Executor::with_root(root);
    if let Some(p) = parent {
        exec = exec.cgroup_parent(p);
    }
    match cmd {
        "start" => {
            let mut spec = TaskSpec::new("/bin/sh");
            spec.args(["-c", args.get(2).map_or_else(|| usage(), String::as_str)]);
            let task = exec.start(&spec).unwrap_or_else(|e| fail(e));
            println!(
                "{} {} {}",
                task.id(),
                task.supervisor_pid().unwrap_or(0),
                task.pid().unwrap_or(0)
            );
            // The agent now "works" until something kills it.
            loop {
                std::thread::park();
            }
        }
        "wait" => {
            let id = args.get(2).map_or_else(|| usage(), String::as_str);
            let t0 = Instant::now();
            let exit = exec
                .open(id)
                .and_then(|mut t| t.wait())
                .unwrap_or_else(|e| fail(e));
            let (code, signal, lost) = match &exit {
                TaskExit::Exited(r) => (r.code, r.signal, None),
                TaskExit::Lost { reason } => (None, None, Some(reason.clone())),
            };
            println!(
                "{}",
                serde_json::json!({"code": code, "signal": signal, "lost": lost, "wait_ms": t0.elapsed().as_secs_f64() * 1e3})
            );
        }
        "concurrent" => {
            let n: usize = args
                .get(2)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| usage());
            let threads: usize = args
                .get(3)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| usage());
            concurrent(&exec, n, threads);
        }
        _ => usage(),
    }
}

fn concurrent(exec: &Executor, n: usize, threads: usize) {
    let fds_before = count_fds();
    let wrong = std::sync::Mutex::new(Vec::<String>::new());
    std::thread::scope(|s| {
        for t in 0..threads {
            let wrong = &wrong;
            s.spawn(move || {
                let mut tasks = Vec::new();
                for k in (t..n).step_by(threads) {
                    let code = (k * 7 % 256) as i32;
                    let mut spec = TaskSpec::new("/bin/sh");
                    spec.args(["-c".to_string(), format!("exit {code}")]);
                    match exec.start(&spec) {
                        Ok(task) => tasks.push((code, task)),
                        Err(e) => wrong.lock().unwrap().push(format!("start {k}: {e}")),
                    }
                }
                for (code, mut task) in tasks {
                    match task.wait() {
                        Ok(exit) if exit.code() == Some(code) => {
                            if let Err(e) = exec.remove(task.id().as_str(), false) {
                                log::warn!("rm {}: {e}", task.id());
                            }
                        }
                        Ok(exit) => wrong
                            .lock()
                            .unwrap()
                            .push(format!("task {}: expected {code}, got {exit:?}", task.id())),
                        Err(e) => wrong
                            .lock()
                            .unwrap()
                            .push(format!("task {}: {e}", task.id())),
                    }
                }
            });
        }
    });
    // Every intermediate process must have been reaped by the library.
    let zombies: Vec<i32> = children()
        .into_iter()
        .filter(|&p| state(p) == Some('Z'))
        .collect();
    let report = serde_json::json!({
        "wrong": wrong.into_inner().unwrap(),
        "zombies": zombies,
        "children": children(),
        "fds_before": fds_before,
        "fds_after": count_fds(),
    });
    println!("{report}");
}

fn count_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn fail(e: nomad_shim::Error) -> ! {
    eprintln!("agent: {e}");
    std::process::exit(1)
}

fn usage() -> ! {
    eprintln!(
        "usage: agent ROOT start SCRIPT | agent ROOT wait ID | agent ROOT concurrent N THREADS"
    );
    std::process::exit(2)
}
