//! Issue 10 item 3: observability. The library's `log` events (seen by a
//! capturing logger installed in this test binary), and the supervisor's
//! events in `state.json`, shown by `inspect`.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use nomad_shim::cgroup::{CgroupRoot, Owner, Resources, TaskCgroup};
use nomad_shim::state::events::kind;
use nomad_shim::{Status, TaskExit, TaskSpec, TaskState};

use crate::common::{self, alive, root_or_skip, TestRoot};

/// Every record logged in this process: (level, target, message).
static RECORDS: Mutex<Vec<(log::Level, String, String)>> = Mutex::new(Vec::new());

/// A `log::Log` that keeps everything: the test-only logger the brief asks
/// for (no logging crate needed).
struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        RECORDS.lock().unwrap().push((
            record.level(),
            record.target().to_owned(),
            record.args().to_string(),
        ));
    }

    fn flush(&self) {}
}

fn capture() {
    static ONCE: Once = Once::new();
    static LOGGER: Capture = Capture;
    ONCE.call_once(|| {
        log::set_logger(&LOGGER).expect("no other logger in the test binary");
        log::set_max_level(log::LevelFilter::Debug);
    });
}

/// The records that mention `needle` (tests run in parallel: each looks
/// only at its own task's records, which name its id).
fn records_with(needle: &str) -> Vec<(log::Level, String)> {
    RECORDS
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, m)| m.contains(needle))
        .map(|(l, _, m)| (*l, m.clone()))
        .collect()
}

/// The one record at `level` that starts with `prefix`; panics with all of
/// the task's records otherwise.
fn expect_record(id: &str, level: log::Level, prefix: &str) -> String {
    let mine = records_with(id);
    let hits: Vec<&String> = mine
        .iter()
        .filter(|(l, m)| *l == level && m.starts_with(prefix))
        .map(|(_, m)| m)
        .collect();
    assert!(
        !hits.is_empty(),
        "no {level} record starting {prefix:?}; the task's records: {mine:#?}"
    );
    hits[0].clone()
}

fn kinds(state: &TaskState) -> Vec<&str> {
    state.events.iter().map(|e| e.kind.as_str()).collect()
}

/// `nomad-shim inspect ID` (text) and `inspect --json ID`'s `events`.
fn inspect(root: &TestRoot, id: &str) -> (String, Vec<serde_json::Value>) {
    let out = common::output(root.cli().arg("inspect").arg(id));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let out = common::output(root.cli().arg("inspect").arg("--json").arg(id));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let events = json["events"].as_array().cloned().unwrap_or_default();
    (text, events)
}

/// The directories of a task's cgroup, from `state.json` as operators read
/// it (v2: a path; v1: an object controller → path).
fn cgroup_dirs(task_dir: &Path) -> Vec<PathBuf> {
    let raw: serde_json::Value =
        serde_json::from_slice(&std::fs::read(task_dir.join("state.json")).unwrap()).unwrap();
    match &raw["cgroup"] {
        serde_json::Value::String(p) => vec![PathBuf::from(p)],
        serde_json::Value::Object(m) => m
            .values()
            .map(|p| PathBuf::from(p.as_str().unwrap()))
            .collect(),
        other => panic!("no cgroup in the state: {other}"),
    }
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn the_library_logs_start_open_stop_and_a_reconcile_that_finds_a_task_lost() {
    if !root_or_skip("the_library_logs_start_open_stop_and_a_reconcile_that_finds_a_task_lost") {
        return;
    }
    capture();
    let root = TestRoot::new();

    // start → open → stop.
    let task = root.sh("exec sleep 1000");
    let id = task.id().to_string();
    let (pid, sup) = (task.pid().unwrap(), task.supervisor_pid().unwrap());
    let started = expect_record(&id, log::Level::Info, &format!("task {id} started: "));
    assert!(
        started.contains(&format!("pid {pid}, supervisor pid {sup}, in ")),
        "{started}"
    );
    let mut task = root.exec.open(&id).unwrap();
    let opened = expect_record(&id, log::Level::Info, &format!("task {id} opened: "));
    assert!(
        opened.contains("running") && opened.contains(&format!("supervisor pid {sup}")),
        "{opened}"
    );
    task.stop(None, None).unwrap();
    let stopped = expect_record(&id, log::Level::Info, &format!("task {id} stopped: "));
    assert!(stopped.ends_with("signal 15"), "{stopped}");
    // Nothing went wrong: no warning about this task.
    let warnings: Vec<_> = records_with(&id)
        .into_iter()
        .filter(|(l, _)| *l <= log::Level::Warn)
        .collect();
    assert!(warnings.is_empty(), "{warnings:?}");

    // kill -9 of the supervisor; the next open reconciles: it says what it
    // found and did (info), and that the task is lost (warn), and the lost
    // state carries the event.
    let task = root.sh("sleep 1000 & echo ready; wait");
    let id = task.id().to_string();
    let log = task.dir().join("stdout.log");
    assert!(common::eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(&log).unwrap_or_default() == "ready\n"
    }));
    let sup = task.supervisor_pid().unwrap();
    kill(Pid::from_raw(sup), Signal::SIGKILL).unwrap();
    assert!(common::eventually(Duration::from_secs(5), || !alive(sup)));
    let task = root.exec.open(&id).unwrap();
    let found = expect_record(&id, log::Level::Info, &format!("reconcile {id}: running"));
    assert!(found.contains("supervisor is gone"), "{found}");
    let lost = expect_record(&id, log::Level::Warn, &format!("task {id} lost: "));
    assert!(
        lost.contains(&format!("supervisor (pid {sup}) died"))
            && lost.contains("killed and its cgroup removed"),
        "{lost}"
    );
    expect_record(&id, log::Level::Info, &format!("task {id} opened: lost"));
    let state = task.state().unwrap();
    assert_eq!(state.status, Status::Lost);
    assert_eq!(kinds(&state), [kind::LOST], "{:?}", state.events);
    assert!(
        state.events[0].message.contains("died"),
        "{:?}",
        state.events
    );
    let (text, events) = inspect(&root, &id);
    assert!(
        text.contains("events:") && text.contains(" lost "),
        "{text}"
    );
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["kind"], "lost");

    // A single task's error in list is a warning naming it.
    std::fs::create_dir(root.path().join("broken.1")).unwrap();
    let list = root.exec.list().unwrap();
    assert!(list
        .iter()
        .any(|(i, s)| i.as_str() == "broken.1" && s.is_err()));
    let broken = expect_record("broken.1", log::Level::Warn, "list: task broken.1: ");
    assert!(broken.contains("state.json"), "{broken}");
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn an_oom_killed_task_has_an_oom_event_that_inspect_shows() {
    if !root_or_skip("an_oom_killed_task_has_an_oom_event_that_inspect_shows") {
        return;
    }
    let root = TestRoot::new();
    let mut spec = TaskSpec::new("/usr/bin/python3");
    spec.args(["-c", "b = bytearray(200 << 20)"])
        .resources(Resources {
            memory_max: Some(64 << 20),
            ..Resources::default()
        });
    let mut task = root.exec.start(&spec).unwrap();
    let exit = task.wait().unwrap();
    let TaskExit::Exited(rec) = &exit else {
        panic!("{exit:?}")
    };
    assert_eq!(
        (rec.signal, rec.oom_killed),
        (Some(libc::SIGKILL), Some(true))
    );
    let state = task.state().unwrap();
    assert_eq!(kinds(&state), [kind::OOM_KILL], "{:?}", state.events);
    let msg = &state.events[0].message;
    assert!(
        msg.contains("the OOM killer killed")
            && msg.contains(&format!("memory limit {} bytes", 64 << 20))
            && msg.contains("signal 9"),
        "{msg}"
    );
    assert!(
        humantime::parse_rfc3339(&state.events[0].time.to_string()).is_ok(),
        "{:?}",
        state.events[0]
    );
    let (text, events) = inspect(&root, task.id().as_str());
    assert!(
        text.contains("oom_kill") && text.contains("the OOM killer killed"),
        "{text}"
    );
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["kind"], "oom_kill");

    // A task that ends normally records no event, and its state has no
    // `events` field at all (the format of older versions).
    let mut task = root.sh("exit 0");
    task.wait().unwrap();
    assert!(task.state().unwrap().events.is_empty());
    let raw = std::fs::read_to_string(task.dir().join("state.json")).unwrap();
    assert!(!raw.contains("\"events\""), "{raw}");
}

/// A mount on a directory makes `rmdir(2)` of it fail with EBUSY, in
/// cgroupfs as anywhere: a real, deterministic way to make the removal of a
/// task's cgroup fail. Unmounted (and the directory removed) on drop.
struct MountedSubCgroup(PathBuf);

impl MountedSubCgroup {
    fn new(cgroup: &Path) -> MountedSubCgroup {
        let dir = cgroup.join("held");
        std::fs::create_dir(&dir).unwrap();
        let guard = MountedSubCgroup(dir);
        nix::mount::mount(
            Some("none"),
            &guard.0,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=4k"),
        )
        .unwrap();
        guard
    }

    fn release(&self) {
        // Only our own mount, by its exact path.
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.0);
    }
}

impl Drop for MountedSubCgroup {
    fn drop(&mut self) {
        self.release();
    }
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_cgroup_that_cannot_be_removed_is_an_event_and_rm_removes_it_later() {
    if !root_or_skip("a_cgroup_that_cannot_be_removed_is_an_event_and_rm_removes_it_later") {
        return;
    }
    capture();
    let root = TestRoot::new();
    let mut task = root.sh("exec sleep 1000");
    let id = task.id().to_string();
    let dirs = cgroup_dirs(task.dir());
    let held = MountedSubCgroup::new(&dirs[0]);
    task.force_stop().unwrap();
    // The exit is recorded first; the failed removal is then added, before
    // the supervisor exits.
    common::supervisor_finished(&task);
    let state = task.state().unwrap();
    assert_eq!(state.status, Status::Exited);
    assert_eq!(
        kinds(&state),
        [kind::CGROUP_CLEANUP_FAILED],
        "{:?}",
        state.events
    );
    let msg = &state.events[0].message;
    assert!(
        msg.contains("not removed") && msg.contains(&held.0.display().to_string()),
        "{msg}"
    );
    assert!(dirs[0].exists());
    let (text, events) = inspect(&root, &id);
    assert!(text.contains("cgroup_cleanup_failed"), "{text}");
    assert_eq!(events[0]["kind"], "cgroup_cleanup_failed");

    // rm (the library) retries the removal: it fails again, and says so.
    assert!(root.exec.remove(&id, false).is_err());
    let failed = expect_record(
        &id,
        log::Level::Warn,
        &format!("rm {id}: clean-up failed: "),
    );
    assert!(failed.contains("held"), "{failed}");

    // Once the obstacle is gone, rm finishes the job.
    held.release();
    let out = common::output(root.cli().arg("rm").arg(&id));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for d in &dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_leftover_cgroup_killed_at_start_is_an_event() {
    if !root_or_skip("a_leftover_cgroup_killed_at_start_is_an_event") {
        return;
    }
    let root = TestRoot::new();
    // A cgroup of this root at the path the task will use, with a process
    // in it: what a crashed supervisor of an earlier task of the id leaves.
    let cg_root = CgroupRoot::detect().unwrap();
    let (leftover, _) = TaskCgroup::create_owned(
        &cg_root,
        &root.cgroup_parent,
        "left.1",
        &Resources::default(),
        true,
        &Owner::root(root.path()),
    )
    .unwrap();
    let mut sleeper = common::spawn(std::process::Command::new("sleep").arg("1000"));
    leftover.add_pid(sleeper.id() as i32).unwrap();

    let mut spec = TaskSpec::new("/bin/true");
    spec.id("left.1");
    let mut task = root.exec.start(&spec).unwrap();
    task.wait().unwrap();
    // The leftover's process was killed with it.
    let status = sleeper.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    let state = task.state().unwrap();
    assert_eq!(
        kinds(&state),
        [kind::LEFTOVER_CGROUP_KILLED],
        "{:?}",
        state.events
    );
    assert!(
        state.events[0].message.contains("left.1"),
        "{:?}",
        state.events
    );
    let (text, _) = inspect(&root, "left.1");
    assert!(text.contains("leftover_cgroup_killed"), "{text}");
}

/// A state root on a tmpfs of its own, small enough for a task's output to
/// fill; unmounted on drop (after its tasks are stopped).
struct SmallRoot {
    mount: tempfile::TempDir,
    exec: nomad_shim::Executor,
}

impl SmallRoot {
    fn new(test: &TestRoot, size: &str) -> SmallRoot {
        let mount = tempfile::Builder::new()
            .prefix("nomad-shim-small.")
            .tempdir()
            .unwrap();
        nix::mount::mount(
            Some("none"),
            mount.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size},mode=0700").as_str()),
        )
        .unwrap();
        let exec = nomad_shim::Executor::with_root(mount.path().join("root"))
            .shim_path(common::shim())
            .cgroup_parent(&test.cgroup_parent);
        SmallRoot { mount, exec }
    }
}

impl Drop for SmallRoot {
    fn drop(&mut self) {
        if let Ok(list) = self.exec.list() {
            for (id, _) in list {
                if let Ok(mut t) = self.exec.open(id.as_str()) {
                    let _ = t.force_stop();
                }
                let _ = self.exec.remove(id.as_str(), true);
            }
        }
        // Only our own mount, by its exact path.
        let _ = nix::mount::umount2(self.mount.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn output_dropped_on_a_full_disk_is_an_event_with_the_bytes_counted() {
    if !root_or_skip("output_dropped_on_a_full_disk_is_an_event_with_the_bytes_counted") {
        return;
    }
    let test = TestRoot::new();
    let small = SmallRoot::new(&test, "512k");
    // 4 MiB of output into 512 KiB: most of it cannot be written.
    let mut spec = TaskSpec::new("/bin/sh");
    spec.args(["-c", "head -c 4194304 /dev/zero; echo done >&2"]);
    let mut task = small.exec.start(&spec).unwrap();
    let exit = task.wait().unwrap();
    // The exit is recorded exactly despite the full disk (the reserved space).
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    let state = task.state().unwrap();
    let dropped: Vec<_> = state
        .events
        .iter()
        .filter(|e| e.kind == kind::LOG_DROPPED)
        .collect();
    assert!(
        dropped.len() >= 2,
        "an event when dropping starts and one with the count: {:?}",
        state.events
    );
    assert!(
        dropped[0].message.contains("stdout.log")
            && dropped[0].message.contains("No space left on device"),
        "{:?}",
        dropped[0]
    );
    let written = std::fs::metadata(task.dir().join("stdout.log"))
        .unwrap()
        .len();
    let counted: u64 = dropped
        .iter()
        .filter(|e| e.message.contains("stdout.log"))
        .filter_map(|e| {
            e.message
                .split(" bytes of output dropped")
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert_eq!(
        counted + written,
        4 << 20,
        "dropped {counted} + written {written}: {:?}",
        state.events
    );
    let out = common::output(
        std::process::Command::new(common::shim())
            .arg("--root")
            .arg(small.exec.root())
            .args(["inspect", task.id().as_str()]),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("log_dropped") && text.contains("bytes of output dropped"),
        "{out:?}"
    );
}
