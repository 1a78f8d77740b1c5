//! The public API as an agent sees it (issue 10): `agent` below names
//! nothing but the crate root — no module path, no `nix` — and compiling it
//! is the compile test; running it against the real kernel is the rest.

use crate::common::{root_or_skip, TestRoot};

/// An agent's code, written only against root-level names. Keep it so:
/// `the_agent_names_only_the_crate_root` fails on a module path.
// --- agent: root-level names only (checked) ---
mod agent {
    use std::os::fd::{AsFd, BorrowedFd};

    use nomad_shim::{
        Error, Executor, Resources, Signal, Stats, Status, Task, TaskExit, TaskId, TaskSpec,
        TaskState,
    };

    /// What the agent saw along the way.
    pub struct Seen {
        pub id: TaskId,
        pub pid: i32,
        pub stats: Stats,
        pub running: TaskState,
        pub exit: TaskExit,
        pub exit_again: TaskExit,
        pub signal_after_exit: Result<(), Error>,
        pub update_after_exit: Result<(), Error>,
    }

    /// Starts a task that exits 3 on SIGTERM, forgets its handle, reopens
    /// it by id, reads its stats, lowers its pids limit to `pids_max`, then
    /// signals it and waits; misuses the ended task (signal, update, wait
    /// again) to show none of it panics.
    pub fn run(
        executor: &Executor,
        pids_max: u64,
        limit_applied: impl FnOnce(i32) -> bool,
    ) -> Result<Seen, Error> {
        let mut spec = TaskSpec::new("/bin/sh");
        spec.args([
            "-c",
            "trap 'exit 3' TERM; echo ready; while :; do sleep 0.05; done",
        ]);
        let task = executor.start(&spec)?;
        let id = task.id().clone();
        // The SIGTERM below must find the trap set: wait for its word.
        let log = task.dir().join("stdout.log");
        for _ in 0..6000 {
            if std::fs::read_to_string(&log).is_ok_and(|s| s.contains("ready")) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        drop(task); // an agent restart: nothing happens to the task

        let mut task = executor.open(id.as_str())?;
        let pid = task.pid().ok_or_else(|| Error::NotRunning {
            id: id.clone(),
            status: Status::Starting,
        })?;
        let running = task.state()?;
        let stats = task.stats()?;
        task.update_resources(&Resources {
            pids_max: Some(pids_max),
            ..Resources::default()
        })?;
        assert!(
            limit_applied(pid),
            "pids_max {pids_max} not in the task's cgroup"
        );
        task.signal(Signal::SIGTERM)?;
        let exit = task.wait()?;

        let signal_after_exit = task.signal(Signal::SIGTERM);
        let update_after_exit = task.update_resources(Resources::default());
        let exit_again = task.wait()?;
        Ok(Seen {
            id,
            pid,
            stats,
            running,
            exit,
            exit_again,
            signal_after_exit,
            update_after_exit,
        })
    }

    /// Waiting without a thread per task: a `Task` is an fd that becomes
    /// readable once its exit is durable (an event loop polls many), and
    /// `try_wait` then answers at once.
    pub fn wait_fd(task: &Task) -> BorrowedFd<'_> {
        task.as_fd()
    }

    /// With the `tokio` feature: start, forget, reopen by id, and wait on
    /// tokio's reactor.
    #[cfg(feature = "tokio")]
    pub async fn run_async(executor: &Executor) -> Result<TaskExit, Error> {
        let mut spec = TaskSpec::new("/bin/sh");
        spec.args(["-c", "exit 4"]);
        let id = executor.start(&spec)?.id().clone();
        executor.open(id.as_str())?.wait_async().await
    }
}
// --- end agent ---

/// The pids limit of the cgroup `pid` is in, read from the kernel (v1: the
/// pids hierarchy; v2: the unified one).
fn pids_max_of(pid: i32) -> Option<String> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let (dir, rel) = cgroups.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        if controllers.split(',').any(|c| c == "pids") {
            Some(("/sys/fs/cgroup/pids", path))
        } else if controllers.is_empty() && !std::path::Path::new("/sys/fs/cgroup/pids").exists() {
            Some(("/sys/fs/cgroup", path))
        } else {
            None
        }
    })?;
    let file = format!("{dir}{rel}/pids.max");
    std::fs::read_to_string(file)
        .ok()
        .map(|s| s.trim().to_owned())
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn an_agent_with_only_root_names_starts_reopens_signals_updates_stats_and_waits() {
    if !root_or_skip("an_agent_with_only_root_names_starts_reopens_signals_updates_stats_and_waits")
    {
        return;
    }
    let root = TestRoot::new();
    let seen = agent::run(&root.exec, 77, |pid| {
        pids_max_of(pid).as_deref() == Some("77")
    })
    .unwrap_or_else(|e| panic!("agent: {e}"));

    assert_eq!(seen.running.status, nomad_shim::Status::Running);
    assert_eq!(seen.running.task.map(|t| t.pid), Some(seen.pid));
    // The shell and its current `sleep`, read from the task's cgroup.
    let pids = seen.stats.pids.expect("pids stats").current;
    assert!((1..=3).contains(&pids), "{pids} processes");
    assert!(seen.stats.memory.is_some_and(|m| m.current > 0));
    // SIGTERM reached the task: its trap chose the code.
    assert_eq!(seen.exit.code(), Some(3), "{:?}", seen.exit);
    assert_eq!(seen.exit_again, seen.exit);
    for (what, r) in [
        ("signal", &seen.signal_after_exit),
        ("update", &seen.update_after_exit),
    ] {
        assert!(
            matches!(r, Err(nomad_shim::Error::NotRunning { id, .. }) if *id == seen.id),
            "{what} after the exit: {r:?}"
        );
    }
    root.exec.remove(seen.id.as_str(), false).unwrap();
}

/// `agent::wait_fd`: the fd of a running task is not readable; once the
/// task has ended it is, and `try_wait` answers without blocking.
#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn an_agent_waits_on_the_task_fd_without_a_thread() {
    if !root_or_skip("an_agent_waits_on_the_task_fd_without_a_thread") {
        return;
    }
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let root = TestRoot::new();
    let mut spec = nomad_shim::TaskSpec::new("/bin/sh");
    spec.args(["-c", "exec sleep 100"]);
    let mut task = root.exec.start(&spec).unwrap();
    let readable = |task: &nomad_shim::Task, ms: u16| {
        let mut fds = [PollFd::new(agent::wait_fd(task), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(ms)).unwrap() == 1
    };
    assert!(!readable(&task, 100), "readable while the task runs");
    task.signal(nomad_shim::Signal::SIGTERM).unwrap();
    assert!(readable(&task, 10_000), "not readable after the task ended");
    let exit = task
        .try_wait()
        .unwrap()
        .expect("an exit once the fd is readable");
    assert_eq!(exit.signal(), Some(15), "{exit:?}");
    root.exec.remove(task.id().as_str(), false).unwrap();
}

/// `agent::run_async`, on a current-thread runtime (feature `tokio`).
#[cfg(feature = "tokio")]
#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn an_agent_with_only_root_names_waits_async() {
    if !root_or_skip("an_agent_with_only_root_names_waits_async") {
        return;
    }
    let root = TestRoot::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let exit = rt
        .block_on(agent::run_async(&root.exec))
        .unwrap_or_else(|e| panic!("agent: {e}"));
    assert_eq!(exit.code(), Some(4), "{exit:?}");
}

/// Regression (issue 10 verification): `cpus: NaN` or an infinity was
/// accepted by `start` and written to spec.json as `null`, so the task ran
/// with no CPU limit at all.
#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_limit_that_is_not_a_number_is_refused_by_start() {
    if !root_or_skip("a_limit_that_is_not_a_number_is_refused_by_start") {
        return;
    }
    let root = TestRoot::new();
    for cpus in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut spec = nomad_shim::TaskSpec::new("/bin/true");
        spec.resources(nomad_shim::Resources {
            cpus: Some(cpus),
            ..nomad_shim::Resources::default()
        });
        let e = root.exec.start(&spec).err();
        assert!(
            matches!(e, Some(nomad_shim::Error::Cgroup(_))),
            "cpus {cpus}: {e:?}"
        );
    }
    assert_eq!(root.exec.list().unwrap().len(), 0, "nothing was made");
}

/// The agent module above may name the crate only through its root: a
/// `nomad_shim::<module>::` path, or `nix`, fails this test.
#[test]
fn the_agent_names_only_the_crate_root() {
    let src = include_str!("api.rs");
    let start = src.find("// --- agent: root-level").unwrap();
    let end = src.find("// --- end agent ---").unwrap();
    let agent = &src[start..end];
    let mut offenders = Vec::new();
    for (n, line) in agent.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let module_path = code.match_indices("nomad_shim::").any(|(i, m)| {
            let rest = &code[i + m.len()..];
            rest.starts_with(|c: char| c.is_ascii_lowercase())
                && rest
                    .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                    .next()
                    != Some("find_shim")
        });
        if module_path || code.contains("nix::") {
            offenders.push(format!("{}: {line}", n + 1));
        }
    }
    assert!(
        offenders.is_empty(),
        "not root-level names:\n{offenders:#?}"
    );
    assert!(
        agent.contains("use nomad_shim::{"),
        "the check found the agent"
    );
}

/// Misuse with extreme or wrong values is an error or plain behaviour,
/// never a panic: a kill timeout past `Instant`'s range (in the spec and in
/// `stop`), ids that are no ids, a task that does not exist.
#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn extreme_values_and_bad_ids_do_not_panic() {
    if !root_or_skip("extreme_values_and_bad_ids_do_not_panic") {
        return;
    }
    let root = TestRoot::new();
    let mut spec = nomad_shim::TaskSpec::new("/bin/sh");
    spec.args([
        "-c",
        "trap 'exit 4' TERM; echo ready; while :; do sleep 0.05; done",
    ])
    .kill_timeout(std::time::Duration::MAX);
    let mut task = root.exec.start(&spec).unwrap();
    // The SIGTERM must find the trap set (a slow VM is slow to get there).
    let log = task.dir().join("stdout.log");
    assert!(
        crate::common::eventually(
            crate::common::scaled(std::time::Duration::from_secs(5)),
            || { std::fs::read_to_string(&log).is_ok_and(|s| s.contains("ready")) }
        ),
        "the task never set its trap"
    );
    let exit = task
        .stop(
            Some(nomad_shim::Signal::SIGTERM),
            Some(std::time::Duration::MAX),
        )
        .unwrap();
    assert_eq!(exit.code(), Some(4), "{exit:?}");
    let long = "a".repeat(10_000);
    for bad in ["", "../etc", "-rf", "a/b", long.as_str()] {
        assert!(
            matches!(
                root.exec.open(bad),
                Err(nomad_shim::Error::State(
                    nomad_shim::StateError::InvalidId { .. }
                ))
            ),
            "open({bad:.20?})"
        );
        assert!(root.exec.remove(bad, true).is_err(), "remove({bad:.20?})");
    }
    assert!(root.exec.open("no-such-task").is_err());
    root.exec.remove(task.id().as_str(), false).unwrap();
}
