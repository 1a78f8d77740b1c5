//! Shared test machinery.
//!
//! * The test process is a **subreaper** (docs/architecture.md, "Who reaps the supervisor"): supervisors that the
//!   library detaches are re-parented to it, not to PID 1 (which never reaps
//!   on these machines). A reaper thread reaps them, and only them: children
//!   a test spawned itself are registered and left to the test's own wait.
//! * Each test gets its own root directory; its guard force-stops whatever
//!   is left, waits until every supervisor has exited, and removes the
//!   directory, also when the test fails. What goes wrong in the guard is
//!   written to the real stderr (`test guard of <test>: ...`), which shows
//!   in a run's log even when the test passed.
//! * Tests that need root skip with a printed reason when not root, unless
//!   `NOMAD_SHIM_REQUIRE_ROOT=1` (set by `scripts/test` and CI), where a
//!   skip is a failure.

#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use nomad_shim::{Executor, TaskSpec};

static SETUP: Once = Once::new();
/// Pids the tests wait for themselves. The reaper holds this lock while it
/// reaps, and `spawn` holds it from fork to registration, so the reaper can
/// never take a registered child.
static OWNED: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// Makes this process a subreaper with a reaper thread (once).
pub fn setup() {
    SETUP.call_once(|| {
        nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
        *OWNED.lock().unwrap() = Some(HashSet::new());
        // SAFETY: registers a plain extern "C" fn with no captured state;
        // atexit itself has no preconditions.
        #[allow(unsafe_code)]
        let registered = unsafe { libc::atexit(reap_all_at_exit) };
        assert_eq!(registered, 0, "atexit");
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(|| loop {
                reap_unowned();
                std::thread::sleep(Duration::from_millis(20));
            })
            .unwrap();
    });
}

/// At exit, every test is over: wait (up to 10 s) until no child is left,
/// so that no supervisor outlives this subreaper and becomes a zombie of
/// PID 1 for the life of the machine.
extern "C" fn reap_all_at_exit() {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let kids = children();
        if kids.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in kids {
            if is_zombie(pid) {
                let _ = nix::sys::wait::waitpid(
                    nix::unistd::Pid::from_raw(pid),
                    Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                );
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reaps every zombie child that no test owns.
pub fn reap_unowned() {
    let owned = OWNED.lock().unwrap();
    let Some(owned) = owned.as_ref() else { return };
    for pid in children() {
        if owned.contains(&pid) || !is_zombie(pid) {
            continue;
        }
        let _ = nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
    }
}

/// Direct children of this process (all threads), and a pid's one-letter
/// state (`R`, `S`, `Z`, ...): the library's own readers of /proc.
pub use nomad_shim::identity::{children, state as proc_state};

pub fn is_zombie(pid: i32) -> bool {
    proc_state(pid) == Some('Z')
}

/// Alive and not a zombie.
pub fn alive(pid: i32) -> bool {
    matches!(proc_state(pid), Some(c) if c != 'Z' && c != 'X')
}

/// Waits (10 s at most, scaled) until the task's supervisor has exited.
/// `Task::wait` on a started handle returns once the exit is durable, a
/// moment before the supervisor has removed the cgroup (and recorded a
/// failure to) and exited: a test that looks at what the end leaves calls
/// this first, as `Executor::remove` does.
pub fn supervisor_finished(task: &nomad_shim::Task) {
    let pid = task.supervisor_pid().expect("a supervisor pid");
    assert!(
        eventually(Duration::from_secs(10), || !alive(pid)),
        "supervisor {pid} still running 10 s after its task's exit"
    );
}

/// Spawns a child this test will wait for itself.
pub fn spawn(cmd: &mut Command) -> Child {
    setup();
    let mut owned = OWNED.lock().unwrap();
    let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    owned.as_mut().unwrap().insert(child.id() as i32);
    child
}

/// Waits for an owned child and releases it.
pub fn wait_output(child: Child) -> Output {
    let pid = child.id() as i32;
    let out = child.wait_with_output().expect("wait for child");
    OWNED.lock().unwrap().as_mut().unwrap().remove(&pid);
    out
}

/// Runs a command to completion (an owned child).
pub fn output(cmd: &mut Command) -> Output {
    wait_output(spawn(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    ))
}

/// Releases an owned child the test killed and no longer needs.
pub fn disown(pid: i32) {
    OWNED.lock().unwrap().as_mut().unwrap().remove(&pid);
}

/// True when the test may run; prints why not otherwise. Panics when root
/// is required (CI) but missing.
pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        setup();
        return true;
    }
    if std::env::var_os("NOMAD_SHIM_REQUIRE_ROOT").is_some_and(|v| v == "1") {
        panic!("{test}: needs root, and NOMAD_SHIM_REQUIRE_ROOT=1 forbids skipping");
    }
    eprintln!("SKIPPED {test}: needs root (run the tests as root)");
    false
}

/// target/<profile>/ of this test binary.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    deps.parent().unwrap().to_path_buf()
}

/// The nomad-shim binary built with these tests. `cargo test` does not
/// build another package's binary: `cargo build` (or `scripts/test`) first.
pub fn shim() -> PathBuf {
    let shim = target_dir().join("nomad-shim");
    assert!(
        shim.exists(),
        "{} is missing: run `cargo build --workspace` before the tests (scripts/test does)",
        shim.display()
    );
    shim
}

/// The example agent (examples/agent.rs) built with these tests.
pub fn agent() -> PathBuf {
    target_dir().join("examples").join("agent")
}

/// A root directory and a cgroup parent of the test's own, both removed on
/// drop (after every task in them is stopped), also when the test fails.
pub struct TestRoot {
    dir: tempfile::TempDir,
    pub exec: Executor,
    /// The cgroup parent of this test's tasks (relative to each hierarchy).
    pub cgroup_parent: String,
}

impl TestRoot {
    pub fn new() -> TestRoot {
        setup();
        let dir = tempfile::Builder::new()
            .prefix("nomad-shim-test.")
            .tempdir()
            .unwrap();
        // Unique per test and per run, and flat: a shared level above it
        // would race with other tests' cleanup. Never the default parent.
        let name = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace('.', "-");
        let cgroup_parent = format!("{name}{}", run_tag());
        let exec = Executor::with_root(dir.path().join("root"))
            .shim_path(shim())
            .cgroup_parent(&cgroup_parent);
        TestRoot {
            dir,
            exec,
            cgroup_parent,
        }
    }

    pub fn path(&self) -> &Path {
        self.exec.root()
    }

    /// The example agent on this root and cgroup parent: append the
    /// subcommand and its arguments.
    pub fn agent(&self) -> Command {
        let mut c = Command::new(agent());
        c.env("NOMAD_SHIM", shim())
            .arg("--cgroup-parent")
            .arg(&self.cgroup_parent)
            .arg(self.path());
        c
    }

    /// A CLI command on this root.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(shim());
        c.arg("--root")
            .arg(self.path())
            .arg("--cgroup-parent")
            .arg(&self.cgroup_parent);
        c
    }

    /// Starts `sh -c SCRIPT`.
    pub fn sh(&self, script: &str) -> nomad_shim::Task {
        let mut spec = TaskSpec::new("/bin/sh");
        spec.args(["-c", script]);
        self.exec
            .start(&spec)
            .unwrap_or_else(|e| panic!("start sh -c {script:?}: {e}"))
    }
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        // Whatever a failed test left running: kill it through the library
        // (by verified pid only). Then every supervisor must be gone before
        // the directory goes: one still finishing (its exit being recorded,
        // its cgroup removed) would find its directory gone, retry its
        // final write for ever and leave its cgroup behind. What goes wrong
        // here is said on the real stderr (not the test's captured output),
        // so that a run's log shows it even when the test passed.
        let mut trouble = Vec::new();
        match self.exec.list() {
            Ok(list) => {
                for (id, state) in list {
                    self.stop_and_await(id.as_str(), state.ok(), &mut trouble);
                }
            }
            Err(e) => trouble.push(format!("list: {e}")),
        }
        let _ = std::fs::remove_dir_all(self.dir.path());
        // A supervisor removes its task's cgroup after it has recorded the
        // exit, so one whose task a test has just seen end may still be at
        // it (EBUSY for the parent): give it a moment, or the parent is
        // left behind in the hierarchies it had not reached yet.
        let deadline = Instant::now() + scaled(Duration::from_secs(2)).min(Duration::from_secs(10));
        while !remove_cgroup_parent(&self.cgroup_parent) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !trouble.is_empty() {
            use std::io::Write;
            let test = std::thread::current().name().unwrap_or("?").to_owned();
            let _ = writeln!(
                std::io::stderr(),
                "test guard of {test} ({}): {}",
                self.path().display(),
                trouble.join("; ")
            );
        }
    }
}

impl TestRoot {
    /// The guard's work for one task: force-stop it if it still runs, then
    /// wait (10 s at most, scaled) until its supervisor has exited; one that
    /// has not (or cannot be checked) is killed with its task by
    /// `remove --force`.
    fn stop_and_await(
        &self,
        id: &str,
        state: Option<nomad_shim::TaskState>,
        trouble: &mut Vec<String>,
    ) {
        use nomad_shim::Status;
        let running = state
            .as_ref()
            .is_some_and(|s| matches!(s.status, Status::Starting | Status::Running));
        if running {
            if let Err(e) = self.exec.open(id).and_then(|mut t| t.force_stop()) {
                trouble.push(format!("task {id}: force_stop: {e}"));
            }
        }
        let lost = state.as_ref().is_some_and(|s| s.status == Status::Lost);
        let Some(sup) = state.and_then(|s| s.supervisor) else {
            return;
        };
        let exited = match sup.open() {
            Ok(Some(pidfd)) => {
                // `lost` says the supervisor was found dead.
                if lost && !pidfd.wait_exit(Some(Duration::ZERO)).unwrap_or(true) {
                    trouble.push(format!(
                        "task {id}: listed lost, but its supervisor {} is alive",
                        sup.pid
                    ));
                }
                let exited = pidfd
                    .wait_exit(Some(scaled(Duration::from_secs(10))))
                    .unwrap_or(false);
                if !exited {
                    trouble.push(format!(
                        "task {id}: supervisor {} still running 10 s after the stop",
                        sup.pid
                    ));
                }
                exited
            }
            Ok(None) => true,
            Err(e) => {
                trouble.push(format!("task {id}: pidfd of supervisor {}: {e}", sup.pid));
                false
            }
        };
        if !exited {
            if let Err(e) = self.exec.remove(id, true) {
                trouble.push(format!("task {id}: remove --force: {e}"));
            }
        }
    }
}

/// `-<NOMAD_SHIM_TEST_RUN>`, or nothing: the name `scripts/test` gives its
/// run, appended to every cgroup parent a test makes, so that its check for
/// leftovers at the end finds this run's and no one else's.
pub fn run_tag() -> String {
    std::env::var("NOMAD_SHIM_TEST_RUN").map_or(String::new(), |r| format!("-{r}"))
}

/// Removes a test's (empty) cgroup parent from every hierarchy; returns
/// whether none is left.
pub fn remove_cgroup_parent(parent: &str) -> bool {
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        roots.extend(
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.join("cgroup.procs").exists()),
        );
    }
    let mut gone = true;
    for root in roots {
        let mut p = root.join(parent);
        while p != root {
            if std::fs::remove_dir(&p).is_err() {
                break;
            }
            p.pop();
        }
        gone &= !root.join(parent).exists();
    }
    gone
}

/// How much slower than the project's hosts this machine is taken to be:
/// `NOMAD_SHIM_TEST_TIME_SCALE` (default 1). `scripts/test` sets it inside
/// the cgroup v2 VM, which emulates its CPU (TCG) and runs a Python start-up
/// in seconds. Time limits that are requirements (a fork bomb killed in under
/// a second) are checked unscaled on the host.
pub fn time_scale() -> f64 {
    std::env::var("NOMAD_SHIM_TEST_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&f: &f64| f >= 1.0)
        .unwrap_or(1.0)
}

/// `d` stretched by [`time_scale`].
pub fn scaled(d: Duration) -> Duration {
    d.mul_f64(time_scale())
}

/// Polls `cond` every few ms until true or `timeout` (scaled; test helper
/// only: the library itself never polls on a clock).
/// For the drop guards of task dirs: no mount whose line in the host's
/// mountinfo names `path` may be left (skipped while a test panics, so that
/// its own failure is the one reported).
pub fn assert_no_mounts_under(path: &Path) {
    if std::thread::panicking() {
        return;
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let needle = path.to_string_lossy().into_owned();
    let left: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(needle.as_str()))
        .collect();
    assert!(left.is_empty(), "mounts left in the host's table: {left:?}");
}

pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let timeout = scaled(timeout);
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// Every process whose session id is `sid`.
pub fn session_members(sid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // fields after ')': state ppid pgrp session ...
        if f.get(3).and_then(|s| s.parse::<i32>().ok()) == Some(sid) && f[0] != "Z" {
            out.push(pid);
        }
    }
    out
}
