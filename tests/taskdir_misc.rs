//! Issue 7, items 4, 7 and 10: `secrets/` is a host tmpfs in every mode and
//! is gone however the task ends; Nomad's program lookup; `oom_score_adj`;
//! the operator's capability allow list. Real mounts, real programs.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use nomad_shim::isolate::{IsolateError, IsolationSpec};
use nomad_shim::{Error, Status, Task, TaskExit, TaskSpec};

use crate::common::{self, alive, eventually, root_or_skip, TestRoot};

/// A task directory beside the test's root. On drop it unmounts a secrets
/// tmpfs a failed test left behind (only a `nomad-shim-secrets:` tmpfs
/// mounted exactly at its `secrets/`), so the root's removal can proceed.
struct TaskDir {
    path: PathBuf,
}

impl TaskDir {
    fn new(root: &TestRoot, name: &str) -> TaskDir {
        TaskDir {
            path: root.path().with_file_name(name),
        }
    }

    fn secrets(&self) -> PathBuf {
        self.path.join("secrets")
    }
}

impl Drop for TaskDir {
    fn drop(&mut self) {
        if secrets_mount(&self.secrets()).is_some() {
            let _ = nix::mount::umount2(&self.secrets(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// The host's mountinfo entry (fstype, source) of what is mounted exactly at
/// `path`, if it is a secrets tmpfs (the last such line: the topmost).
fn secrets_mount(path: &Path) -> Option<(String, String)> {
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = path.to_str().unwrap().replace(' ', "\\040");
    mounts
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mp = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let (fstype, source) = (r.next()?, r.next()?);
            (mp == want).then(|| (fstype.to_string(), source.to_string()))
        })
        .next_back()
}

/// Anything at all mounted at or under `path` in the host's table.
fn mounts_under(path: &Path) -> Vec<String> {
    let needle = path.to_str().unwrap().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|mp| mp.starts_with(&needle))
        })
        .map(str::to_string)
        .collect()
}

fn spec(dir: &TaskDir, chroot: bool, program: &str, args: &[&str]) -> TaskSpec {
    let mut spec = TaskSpec::new(program);
    spec.args(args.iter().copied()).isolation(IsolationSpec {
        chroot,
        task_dir: Some(dir.path.clone()),
        ..IsolationSpec::default()
    });
    spec
}

fn start(root: &TestRoot, spec: &TaskSpec) -> Task {
    root.exec
        .start(spec)
        .unwrap_or_else(|e| panic!("start {spec:?}: {e}"))
}

fn stdout(task: &Task) -> String {
    fs::read_to_string(task.dir().join("stdout.log")).unwrap()
}

fn run_to_end(root: &TestRoot, spec: &TaskSpec) -> (TaskExit, String, String) {
    let mut task = start(root, spec);
    let exit = task.wait().unwrap();
    let err = fs::read_to_string(task.dir().join("stderr.log")).unwrap();
    (exit, stdout(&task), err)
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn secrets_is_a_tmpfs_of_the_task_user_with_and_without_chroot_and_goes_at_the_end() {
    if !root_or_skip(
        "secrets_is_a_tmpfs_of_the_task_user_with_and_without_chroot_and_goes_at_the_end",
    ) {
        return;
    }
    let root = TestRoot::new();
    for chroot in [false, true] {
        let dir = TaskDir::new(&root, &format!("task-secrets-{chroot}"));
        let s = if chroot {
            "/secrets".to_string()
        } else {
            dir.secrets().display().to_string()
        };
        // The task reports what it sees, writes a file, then waits for one
        // the host writes, and prints it.
        let script = format!(
            "stat -f -c %T {s}; stat -c '%a %u %g' {s}; \
             grep ' {s} ' /proc/self/mountinfo | cut -d' ' -f6; \
             echo from-task > {s}/t; echo ready; \
             while [ ! -f {s}/h ]; do sleep 0.02; done; cat {s}/h"
        );
        let mut spec = spec(&dir, chroot, "/bin/sh", &["-c", &script]);
        spec.user("nobody");
        let mut task = start(&root, &spec);
        assert!(
            eventually(Duration::from_secs(10), || stdout(&task).contains("ready")),
            "chroot={chroot}: {}",
            stdout(&task)
        );
        // Mounted on the host, with the task's tag.
        let (fstype, source) = secrets_mount(&dir.secrets()).expect("secrets mounted on the host");
        assert_eq!(fstype, "tmpfs");
        assert_eq!(source, format!("nomad-shim-secrets:{}", task.id()));
        // The host reads the task's file and writes one the task reads.
        assert_eq!(
            fs::read_to_string(dir.secrets().join("t")).unwrap(),
            "from-task\n"
        );
        fs::write(dir.secrets().join("h"), "from-host\n").unwrap();
        let exit = task.wait().unwrap();
        assert!(exit.success(), "chroot={chroot}: {exit:?}");
        let out = stdout(&task);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "tmpfs", "chroot={chroot}: {out}");
        assert_eq!(lines[1], "700 65534 65534", "chroot={chroot}: {out}");
        let opts: Vec<&str> = lines[2].split(',').collect();
        for o in ["nosuid", "nodev", "noexec"] {
            assert!(opts.contains(&o), "chroot={chroot}: {o} missing in {out}");
        }
        assert_eq!(lines[4], "from-host", "chroot={chroot}: {out}");
        // Ended normally: unmounted, nothing of the task dir left mounted,
        // and what was written is gone with the tmpfs.
        assert_eq!(mounts_under(&dir.path), Vec::<String>::new());
        assert!(!dir.secrets().join("t").exists());
        let md = fs::metadata(dir.secrets()).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, 0o700);
    }
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn secrets_is_unmounted_after_stop() {
    if !root_or_skip("secrets_is_unmounted_after_stop") {
        return;
    }
    let root = TestRoot::new();
    for chroot in [false, true] {
        let dir = TaskDir::new(&root, &format!("task-stop-{chroot}"));
        let mut task = start(&root, &spec(&dir, chroot, "/bin/sleep", &["1000"]));
        assert!(secrets_mount(&dir.secrets()).is_some(), "chroot={chroot}");
        let exit = task
            .stop(None, Some(common::scaled(Duration::from_secs(5))))
            .unwrap();
        assert_eq!(exit.signal(), Some(Signal::SIGTERM as i32), "{exit:?}");
        assert_eq!(
            mounts_under(&dir.path),
            Vec::<String>::new(),
            "chroot={chroot}"
        );
    }
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn secrets_is_unmounted_by_the_reconcile_after_the_supervisor_is_killed() {
    if !root_or_skip("secrets_is_unmounted_by_the_reconcile_after_the_supervisor_is_killed") {
        return;
    }
    let root = TestRoot::new();
    for chroot in [false, true] {
        let dir = TaskDir::new(&root, &format!("task-lost-{chroot}"));
        let task = start(&root, &spec(&dir, chroot, "/bin/sleep", &["1000"]));
        assert!(secrets_mount(&dir.secrets()).is_some(), "chroot={chroot}");
        let (sup, pid) = (task.supervisor_pid().unwrap(), task.pid().unwrap());
        kill(Pid::from_raw(sup), Signal::SIGKILL).unwrap();
        assert!(eventually(Duration::from_secs(5), || !alive(sup)));
        // Still mounted: nobody has looked yet.
        assert!(secrets_mount(&dir.secrets()).is_some(), "chroot={chroot}");
        let task = root.exec.open(task.id().as_str()).unwrap();
        let state = task.state().unwrap();
        assert_eq!(state.status, Status::Lost);
        let reason = state.exit.unwrap().error.unwrap();
        assert!(reason.contains("secrets/ tmpfs was unmounted"), "{reason}");
        assert_eq!(
            mounts_under(&dir.path),
            Vec::<String>::new(),
            "chroot={chroot}"
        );
        assert!(eventually(Duration::from_secs(5), || !alive(pid)));
    }
}

/// `#!/bin/sh` that prints `word`, executable.
fn script(path: &Path, word: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, format!("#!/bin/sh\necho {word}\n")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_bare_name_is_found_in_local_then_the_task_dir_then_path() {
    if !root_or_skip("a_bare_name_is_found_in_local_then_the_task_dir_then_path") {
        return;
    }
    let root = TestRoot::new();
    for chroot in [false, true] {
        let dir = TaskDir::new(&root, &format!("task-lookup-{chroot}"));
        // PATH's copy in the task's tmp/: /tmp/bin inside the chroot.
        let path_dir = if chroot {
            "/tmp/bin".to_string()
        } else {
            dir.path.join("tmp/bin").display().to_string()
        };
        script(&dir.path.join("local/hello"), "local");
        script(&dir.path.join("hello"), "taskdir");
        script(&dir.path.join("tmp/bin/hello"), "path");
        let mut spec = spec(&dir, chroot, "hello", &[]);
        spec.env("PATH", format!("{path_dir}:/usr/bin:/bin"));
        for (want, then_remove) in [
            ("local", Some("local/hello")),
            ("taskdir", Some("hello")),
            ("path", None),
        ] {
            let (exit, out, err) = run_to_end(&root, &spec);
            assert!(exit.success(), "chroot={chroot}: {exit:?} {err}");
            assert_eq!(out, format!("{want}\n"), "chroot={chroot}");
            if let Some(f) = then_remove {
                fs::remove_file(dir.path.join(f)).unwrap();
            }
        }
    }
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn an_absolute_path_missing_on_the_host_runs_from_the_task_dir_without_chroot() {
    if !root_or_skip("an_absolute_path_missing_on_the_host_runs_from_the_task_dir_without_chroot") {
        return;
    }
    let root = TestRoot::new();
    let dir = TaskDir::new(&root, "task-abs");
    let program = "/opt/nomad-shim-test-absent/hello";
    assert!(!Path::new(program).exists());
    script(&dir.path.join(&program[1..]), "under-task-dir");
    let (exit, out, err) = run_to_end(&root, &spec(&dir, false, program, &[]));
    assert!(exit.success(), "{exit:?} {err}");
    assert_eq!(out, "under-task-dir\n");
    // Present on the host: the host's program, not a task dir copy.
    script(&dir.path.join("bin/true"), "task-dir-copy");
    let (exit, out, _) = run_to_end(&root, &spec(&dir, false, "/bin/true", &[]));
    assert!(exit.success() && out.is_empty(), "{exit:?} {out}");
}

/// Whether this process holds CAP_SYS_RESOURCE (needed to lower an
/// oom_score_adj below what was ever set: proc(5)).
fn have_sys_resource() -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    u64::from_str_radix(eff, 16).unwrap() & (1 << 24) != 0
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn oom_score_adj_is_the_tasks_and_out_of_range_is_a_typed_error() {
    if !root_or_skip("oom_score_adj_is_the_tasks_and_out_of_range_is_a_typed_error") {
        return;
    }
    let root = TestRoot::new();
    let mut spec = TaskSpec::new("/bin/sh");
    spec.args(["-c", "cat /proc/self/oom_score_adj; sleep 1000"]);
    spec.isolation.oom_score_adj = Some(500);
    let mut task = start(&root, &spec);
    assert!(
        eventually(Duration::from_secs(5), || stdout(&task) == "500\n"),
        "{}",
        stdout(&task)
    );
    // The supervisor keeps its own (lowered where permitted).
    let sup = fs::read_to_string(format!(
        "/proc/{}/oom_score_adj",
        task.supervisor_pid().unwrap()
    ))
    .unwrap();
    let want = if have_sys_resource() { "-999\n" } else { "0\n" };
    assert_eq!(sup, want);
    task.force_stop().unwrap();

    // Lowering needs CAP_SYS_RESOURCE: with it the task gets -500, without
    // it the start fails at that step, saying so.
    spec.args.clear();
    spec.args(["-c", "cat /proc/self/oom_score_adj"]);
    spec.isolation.oom_score_adj = Some(-500);
    if have_sys_resource() {
        let (exit, out, _) = run_to_end(&root, &spec);
        assert!(exit.success());
        assert_eq!(out, "-500\n");
    } else {
        match root.exec.start(&spec) {
            Err(Error::Start { step, errno, .. }) => {
                assert_eq!(step, nomad_shim::step::Step::OomScoreAdj);
                assert_eq!(errno, Some(libc::EACCES));
            }
            other => panic!("expected a start error, got {other:?}"),
        }
    }

    // Out of range: a typed error before anything starts, and the CLI names
    // the option.
    spec.isolation.oom_score_adj = Some(1001);
    match root.exec.start(&spec) {
        Err(Error::Isolate(IsolateError::OomScoreAdjOutOfRange { value: 1001 })) => {}
        other => panic!("expected OomScoreAdjOutOfRange, got {other:?}"),
    }
    for bad in ["1001", "-1001", "x"] {
        let out =
            common::output(
                root.cli()
                    .args(["run", "--oom-score-adj", bad, "--", "/bin/true"]),
            );
        assert_eq!(out.status.code(), Some(125), "{bad}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--oom-score-adj"), "{bad}: {err}");
    }
    let out = common::output(root.cli().args([
        "run",
        "--oom-score-adj",
        "-0",
        "--",
        "/bin/cat",
        "/proc/self/oom_score_adj",
    ]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n", "{out:?}");
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn allowed_caps_refuses_a_cap_add_outside_it_and_limits_the_set() {
    if !root_or_skip("allowed_caps_refuses_a_cap_add_outside_it_and_limits_the_set") {
        return;
    }
    let root = TestRoot::new();
    let mut spec = TaskSpec::new("/bin/sh");
    spec.args(["-c", "grep -E '^Cap(Bnd|Eff):' /proc/self/status"]);
    spec.isolation.allowed_caps = Some(vec!["CHOWN".into(), "net_bind_service".into()]);
    spec.isolation.cap_add = vec!["NET_RAW".into()];
    match root.exec.start(&spec) {
        Err(e @ Error::Isolate(IsolateError::CapabilityNotAllowed { .. })) => {
            assert!(e.to_string().contains("CAP_NET_RAW"), "{e}");
        }
        other => panic!("expected CapabilityNotAllowed, got {other:?}"),
    }
    let out = common::output(root.cli().args([
        "run",
        "--allowed-caps",
        "CHOWN,NET_BIND_SERVICE",
        "--cap-add",
        "NET_RAW",
        "--",
        "/bin/true",
    ]));
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CAP_NET_RAW"), "{err}");

    // Inside the list: granted. A root task's set is the defaults ∩ the
    // list (CHOWN 0x1, NET_BIND_SERVICE 0x400).
    spec.isolation.cap_add = vec!["NET_BIND_SERVICE".into()];
    let (exit, out, err) = run_to_end(&root, &spec);
    assert!(exit.success(), "{exit:?} {err}");
    assert_eq!(
        out,
        "CapEff:\t0000000000000401\nCapBnd:\t0000000000000401\n"
    );
    spec.user("nobody");
    let (exit, out, err) = run_to_end(&root, &spec);
    assert!(exit.success(), "{exit:?} {err}");
    assert_eq!(
        out,
        "CapEff:\t0000000000000400\nCapBnd:\t0000000000000401\n"
    );
}

/// A directory of the test's, bound onto itself and made shared, with a
/// process in another mount namespace holding a slave copy of it (as a
/// systemd service's namespace holds of a shared `/`). Drop kills the
/// process (by pid) and detaches the bind.
struct SharedDir {
    path: PathBuf,
    slave: Option<std::process::Child>,
}

impl SharedDir {
    fn new(root: &TestRoot) -> SharedDir {
        let path = root.path().with_file_name("shared");
        fs::create_dir_all(&path).unwrap();
        let mut me = SharedDir { path, slave: None };
        let mount = |args: &[&str]| {
            let out = common::output(std::process::Command::new("mount").args(args));
            assert!(out.status.success(), "mount {args:?}: {out:?}");
        };
        let p = me.path.to_str().unwrap().to_string();
        mount(&["--bind", &p, &p]);
        mount(&["--make-shared", &p]);
        let script = format!("mount --make-slave {p} && echo ready && exec sleep 1000");
        let mut child = common::spawn(
            std::process::Command::new("unshare")
                .args(["-m", "--propagation", "unchanged", "sh", "-c", &script])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped()),
        );
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line, "ready\n");
        me.slave = Some(child);
        me
    }

    /// The slave namespace's mount table lines under `path`.
    fn slave_mounts_under(&self, path: &Path) -> Vec<String> {
        let pid = self.slave.as_ref().unwrap().id();
        let needle = path.to_str().unwrap().to_string();
        fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .unwrap()
            .lines()
            .filter(|l| {
                l.split(' ')
                    .nth(4)
                    .is_some_and(|mp| mp.starts_with(&needle))
            })
            .map(str::to_string)
            .collect()
    }
}

impl Drop for SharedDir {
    fn drop(&mut self) {
        if let Some(mut child) = self.slave.take() {
            let _ = child.kill();
            let _ = common::wait_output(child);
        }
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_secrets_copy_propagated_to_another_namespace_goes_with_the_task() {
    if !root_or_skip("a_secrets_copy_propagated_to_another_namespace_goes_with_the_task") {
        return;
    }
    let root = TestRoot::new();
    let shared = SharedDir::new(&root);
    for chroot in [false, true] {
        let dir = TaskDir {
            path: shared.path.join(format!("task-{chroot}")),
        };
        let mut task = start(&root, &spec(&dir, chroot, "/bin/sleep", &["1000"]));
        // The host's mount reached the slave namespace (its parent is shared)...
        let copies = shared.slave_mounts_under(&dir.secrets());
        assert_eq!(copies.len(), 1, "chroot={chroot}: {copies:?}");
        assert!(copies[0].contains("nomad-shim-secrets:"), "{copies:?}");
        task.force_stop().unwrap();
        // ...and left it with the task: the unmount propagated.
        assert_eq!(mounts_under(&dir.path), Vec::<String>::new());
        assert_eq!(
            shared.slave_mounts_under(&dir.path),
            Vec::<String>::new(),
            "chroot={chroot}: a copy is stuck in the other namespace"
        );
    }
}
