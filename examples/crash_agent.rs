//! The agent of the crash tests (tests/crash.rs): one process that uses the
//! library and can be killed at any moment, or make the library stop at a
//! failpoint (built with `--features failpoints`; src/failpoint.rs).
//!
//! ```text
//! crash_agent ROOT PARENT run ID SCRIPT   start `sh -c SCRIPT` as task ID under cgroup
//!                                         parent PARENT, print "started SUP TASK", wait,
//!                                         print the exit as JSON
//! crash_agent ROOT PARENT wait ID         open + wait; print the exit as JSON, with this
//!                                         process's open fds before the open and after the
//!                                         task handle is dropped
//! ```
//!
//! The JSON: `{"code": .., "signal": .., "lost": reason|null, "error": message|null,
//! "no_such_task": bool, "fds_before": N, "fds_after": N}`.

use std::io::Write;

use nomad_shim::{Error, Executor, StateError, TaskExit, TaskSpec};

fn count_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn report(exit: Result<TaskExit, Error>, fds_before: usize) {
    let fds_after = count_fds();
    let (code, signal, lost, error, missing) = match &exit {
        Ok(TaskExit::Exited(r)) => (r.code, r.signal, None, None, false),
        Ok(TaskExit::Lost { reason }) => (None, None, Some(reason.clone()), None, false),
        Err(e) => (
            None,
            None,
            None,
            Some(e.to_string()),
            matches!(e, Error::State(StateError::NoSuchTask { .. })),
        ),
    };
    println!(
        "{}",
        serde_json::json!({
            "code": code, "signal": signal, "lost": lost, "error": error,
            "no_such_task": missing, "fds_before": fds_before, "fds_after": fds_after,
        })
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, parent, cmd, id, rest @ ..] = args.as_slice() else {
        eprintln!("usage: crash_agent ROOT PARENT (run ID SCRIPT | wait ID)");
        std::process::exit(2);
    };
    let exec = Executor::with_root(root).cgroup_parent(parent);
    match (cmd.as_str(), rest) {
        ("run", [script]) => {
            let mut spec = TaskSpec::new("/bin/sh");
            spec.id(id.as_str()).args(["-c", script.as_str()]);
            let fds_before = count_fds();
            let mut task = match exec.start(&spec) {
                Ok(task) => task,
                Err(e) => return report(Err(e), fds_before),
            };
            println!(
                "started {} {}",
                task.supervisor_pid().unwrap_or(0),
                task.pid().unwrap_or(0)
            );
            let _ = std::io::stdout().flush();
            let exit = task.wait();
            drop(task);
            report(exit, fds_before);
        }
        ("wait", []) => {
            let fds_before = count_fds();
            let exit = exec.open(id).and_then(|mut t| t.wait());
            report(exit, fds_before);
        }
        _ => {
            eprintln!("usage: crash_agent ROOT PARENT (run ID SCRIPT | wait ID)");
            std::process::exit(2);
        }
    }
}
