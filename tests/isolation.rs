//! Issue 4: filesystem isolation and least privilege, through the
//! supervisor, with real mounts and real programs from Debian packages.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nomad_shim::isolate::IsolationSpec;
use nomad_shim::{Task, TaskExit, TaskSpec};

use crate::common::{self, root_or_skip, TestRoot};

const PYTHON: &str = "/usr/bin/python3";
/// Nomad's default bounding set: Docker's defaults minus NET_RAW (CHOWN,
/// DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP,
/// NET_BIND_SERVICE, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP).
const DEFAULT_BOUNDING: &str = "00000000a80405fb";

/// A task directory beside the test's root, with a guard that checks no
/// mount under it is left in this (the host's) mount namespace.
struct TaskDir {
    path: PathBuf,
}

impl TaskDir {
    fn new(root: &TestRoot, name: &str) -> TaskDir {
        TaskDir {
            path: root.path().with_file_name(name),
        }
    }
}

impl Drop for TaskDir {
    fn drop(&mut self) {
        crate::common::assert_no_mounts_under(&self.path);
    }
}

fn chrooted(task_dir: &Path, user: Option<&str>, program: &str, args: &[&str]) -> TaskSpec {
    let mut spec = TaskSpec::new(program);
    spec.args(args.iter().copied()).isolation(IsolationSpec {
        chroot: true,
        task_dir: Some(task_dir.to_path_buf()),
        ..IsolationSpec::default()
    });
    if let Some(u) = user {
        spec.user(u);
    }
    spec
}

fn run_to_end(root: &TestRoot, spec: &TaskSpec) -> (TaskExit, String, String) {
    let mut task: Task = root
        .exec
        .start(spec)
        .unwrap_or_else(|e| panic!("start: {e}"));
    let exit = task.wait().unwrap();
    let out = fs::read_to_string(task.dir().join("stdout.log")).unwrap();
    let err = fs::read_to_string(task.dir().join("stderr.log")).unwrap();
    (exit, out, err)
}

fn status_field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key).map(str::trim))
        .unwrap_or_else(|| panic!("no {key} in {out}"))
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn nobody_in_the_chroot_holds_no_capability_and_cannot_regain_privilege() {
    if !root_or_skip("nobody_in_the_chroot_holds_no_capability_and_cannot_regain_privilege") {
        return;
    }
    let root = TestRoot::new();
    let dir = TaskDir::new(&root, "task-nobody");
    // A setuid-root copy of `id`, planted where the task can run it.
    fs::create_dir_all(dir.path.join("local")).unwrap();
    fs::copy("/usr/bin/id", dir.path.join("local/suid-id")).unwrap();
    fs::set_permissions(
        dir.path.join("local/suid-id"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    let script = "id -u; /local/suid-id -u; grep -E '^(NoNewPrivs|Cap(Inh|Prm|Eff|Bnd|Amb)):' /proc/self/status";
    let (exit, out, err) = run_to_end(
        &root,
        &chrooted(&dir.path, Some("nobody"), "/bin/sh", &["-c", script]),
    );
    assert!(exit.success(), "{exit:?} {err}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("65534"), "{out}");
    assert_eq!(
        lines.next(),
        Some("65534"),
        "the setuid copy raised the uid: {out}"
    );
    assert_eq!(status_field(&out, "NoNewPrivs:"), "1");
    for set in ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"] {
        assert_eq!(status_field(&out, set), "0000000000000000", "{set} {out}");
    }
    assert_eq!(status_field(&out, "CapBnd:"), DEFAULT_BOUNDING, "{out}");
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn cap_add_gives_exactly_that_capability_and_it_binds_port_80() {
    if !root_or_skip("cap_add_gives_exactly_that_capability_and_it_binds_port_80") {
        return;
    }
    let root = TestRoot::new();
    let dir = TaskDir::new(&root, "task-cap");
    let script = "grep -E '^Cap(Eff|Prm|Amb):' /proc/self/status; exec /usr/bin/python3 -c \"import socket; s = socket.socket(); s.bind(('127.0.0.1', 80)); print('bound')\"";
    let mut spec = chrooted(&dir.path, Some("nobody"), "/bin/sh", &["-c", script]);
    spec.isolation.cap_add = vec!["NET_BIND_SERVICE".into()];
    let (exit, out, err) = run_to_end(&root, &spec);
    assert!(exit.success(), "{exit:?} {out} {err}");
    for set in ["CapEff:", "CapPrm:", "CapAmb:"] {
        assert_eq!(status_field(&out, set), "0000000000000400", "{set} {out}");
    }
    assert!(out.ends_with("bound\n"), "{out}");
    // Without it, the same bind is refused.
    let (exit, _, err) = run_to_end(
        &root,
        &chrooted(
            &dir.path,
            Some("nobody"),
            PYTHON,
            &[
                "-c",
                "import socket; socket.socket().bind(('127.0.0.1', 80))",
            ],
        ),
    );
    assert_eq!(exit.code(), Some(1));
    assert!(err.contains("PermissionError"), "{err}");
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn only_the_task_dirs_are_writable_and_host_paths_are_absent() {
    if !root_or_skip("only_the_task_dirs_are_writable_and_host_paths_are_absent") {
        return;
    }
    let root = TestRoot::new();
    let dir = TaskDir::new(&root, "task-rw");
    // /sys is there, read-only, since issue 7 (filesystem::sys_is_read_only_…).
    let script =
        "for d in / /etc /usr /bin /lib /sbin; do touch $d/x 2>/dev/null && echo WROTE $d; done
for d in /local /alloc /secrets /tmp; do touch $d/x && echo ok $d; done
for p in /root /work /home /var /boot; do [ -e $p ] && echo SEES $p; done
ls /";
    for user in [Some("nobody"), None] {
        let (exit, out, err) = run_to_end(
            &root,
            &chrooted(&dir.path, user, "/bin/sh", &["-c", script]),
        );
        assert!(exit.success(), "{user:?}: {exit:?} {err}");
        assert!(
            !out.contains("WROTE") && !out.contains("SEES"),
            "{user:?}: {out}"
        );
        for d in ["/local", "/alloc", "/secrets", "/tmp"] {
            assert!(out.contains(&format!("ok {d}\n")), "{user:?}: {out}");
        }
    }
    // What the task wrote in local/ is on the host, in the task dir.
    assert!(dir.path.join("local/x").exists());
    assert_eq!(
        fs::metadata(dir.path.join("secrets")).unwrap().mode() & 0o777,
        0o700
    );
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_classic_chroot_escape_does_not_reach_the_host_root() {
    if !root_or_skip("a_classic_chroot_escape_does_not_reach_the_host_root") {
        return;
    }
    let root = TestRoot::new();
    let dir = TaskDir::new(&root, "task-escape");
    let marker = root.path().with_file_name("host-only-marker");
    fs::write(&marker, b"host").unwrap();
    let escape = format!(
        "import os\nos.chdir('/tmp'); os.mkdir('x'); os.chroot('x')\nfor _ in range(64): os.chdir('..')\nos.chroot('.')\nprint(os.path.exists({:?}), sorted(os.listdir('/')))",
        marker.display().to_string()
    );
    // A root task: it holds CAP_SYS_CHROOT, the escape's one requirement.
    let (exit, out, err) = run_to_end(&root, &chrooted(&dir.path, None, PYTHON, &["-c", &escape]));
    assert!(exit.success(), "{exit:?} {err}");
    assert!(out.starts_with("False "), "escaped: {out}");
    assert!(!out.contains("'work'") && !out.contains("'root'"), "{out}");
}

/// Names, sizes, modes, owners and mtimes of a directory's entries, and the
/// bytes of its regular files up to 64 KiB. Subdirectories' mtimes are left
/// out: other programs on the machine (cargo under /root/.cargo) change them,
/// and what the task could do to `dir` shows in its entries and in `dir`'s
/// own metadata, which the test compares apart.
fn snapshot(dir: &str) -> Vec<(String, u64, u32, u32, i64, Vec<u8>)> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let m = fs::symlink_metadata(e.path()).unwrap();
            let bytes = if m.is_file() && m.len() < 65536 {
                fs::read(e.path()).unwrap_or_default()
            } else {
                Vec::new()
            };
            (
                e.file_name().to_string_lossy().into_owned(),
                m.len(),
                m.mode(),
                m.uid(),
                if m.is_dir() { 0 } else { m.mtime() },
                bytes,
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn symlinks_planted_in_the_task_dir_leave_host_files_unchanged() {
    if !root_or_skip("symlinks_planted_in_the_task_dir_leave_host_files_unchanged") {
        return;
    }
    let root = TestRoot::new();
    let dir = TaskDir::new(&root, "task-planted");
    fs::create_dir_all(&dir.path).unwrap();
    std::os::unix::fs::symlink("/etc", dir.path.join("local")).unwrap();
    std::os::unix::fs::symlink("/root", dir.path.join("secrets")).unwrap();
    let (etc, root_home) = (snapshot("/etc"), snapshot("/root"));
    let (etc_meta, root_meta) = (
        fs::metadata("/etc").unwrap(),
        fs::metadata("/root").unwrap(),
    );
    let (exit, out, err) = run_to_end(
        &root,
        &chrooted(
            &dir.path,
            Some("nobody"),
            "/bin/sh",
            &[
                "-c",
                "echo pwned > /local/passwd; echo pwned > /secrets/x; ls -ld /local /secrets",
            ],
        ),
    );
    assert!(exit.success(), "{exit:?} {out} {err}");
    assert_eq!(snapshot("/etc"), etc);
    assert_eq!(snapshot("/root"), root_home);
    let (etc_after, root_after) = (
        fs::metadata("/etc").unwrap(),
        fs::metadata("/root").unwrap(),
    );
    assert_eq!(
        (etc_after.mode(), etc_after.uid(), etc_after.gid()),
        (etc_meta.mode(), etc_meta.uid(), etc_meta.gid())
    );
    assert_eq!(
        (root_after.mode(), root_after.uid(), root_after.gid()),
        (root_meta.mode(), root_meta.uid(), root_meta.gid())
    );
    // The task wrote into real directories of its own instead.
    assert!(!fs::symlink_metadata(dir.path.join("local"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::read_to_string(dir.path.join("local/passwd")).unwrap(),
        "pwned\n"
    );
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn namespaces_hostname_and_rlimits() {
    if !root_or_skip("namespaces_hostname_and_rlimits") {
        return;
    }
    let root = TestRoot::new();
    let dir = TaskDir::new(&root, "task-ns");
    let mut spec = chrooted(
        &dir.path,
        Some("nobody"),
        "/bin/sh",
        &[
            "-c",
            "echo $$; hostname; ls /proc | grep -c '^[0-9]'; ulimit -n",
        ],
    );
    spec.isolation.pid = true;
    spec.isolation.ipc = true;
    spec.isolation.uts = true;
    spec.isolation.hostname = Some("task-host".into());
    spec.isolation.rlimits = vec![nomad_shim::isolate::RlimitSpec {
        resource: "nofile".into(),
        soft: 100,
        hard: 200,
    }];
    let (exit, out, err) = run_to_end(&root, &spec);
    assert!(exit.success(), "{exit:?} {err}");
    let lines: Vec<&str> = out.lines().collect();
    // PID 1 is the shim's init (tests/init.rs); the program is its first child.
    assert_eq!(lines[0], "2", "not the init's first child: {out}");
    assert_eq!(lines[1], "task-host");
    // Only the task's own processes are visible: the init, the shell and ls/grep.
    let visible: u32 = lines[2].parse().unwrap();
    assert!(
        visible <= 4,
        "{visible} processes visible: the shim or the host shows through"
    );
    assert_eq!(lines[3], "100");
    assert_ne!(
        nix::unistd::gethostname().unwrap().to_string_lossy(),
        "task-host"
    );
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_user_that_does_not_exist_is_a_start_error() {
    if !root_or_skip("a_user_that_does_not_exist_is_a_start_error") {
        return;
    }
    let root = TestRoot::new();
    let mut spec = TaskSpec::new("/usr/bin/id");
    spec.user("no-such-user-xyz");
    let err = root.exec.start(&spec).unwrap_err();
    assert!(err.to_string().contains("no-such-user-xyz"), "{err}");
    assert!(root.exec.list().unwrap().is_empty());
    let out = common::output(
        root.cli()
            .args(["run", "--user", "no-such-user-xyz", "--", "id"]),
    );
    assert_eq!(out.status.code(), Some(125), "{out:?}");
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn an_isolation_step_failure_names_the_step_and_path() {
    if !root_or_skip("an_isolation_step_failure_names_the_step_and_path") {
        return;
    }
    let root = TestRoot::new();
    let dir = TaskDir::new(&root, "task-badbind");
    let mut spec = chrooted(&dir.path, None, "/bin/true", &[]);
    spec.isolation.chroot_env = vec![nomad_shim::isolate::BindSpec {
        src: "/no/such/dir".into(),
        dst: "/opt/x".into(),
    }];
    let err = root.exec.start(&spec).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("/no/such/dir") && msg.contains("No such file or directory"),
        "{msg}"
    );
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_real_server_runs_as_nobody_in_the_chroot_and_stops_cleanly() {
    if !root_or_skip("a_real_server_runs_as_nobody_in_the_chroot_and_stops_cleanly") {
        return;
    }
    let root = TestRoot::new();
    let dir = TaskDir::new(&root, "task-http");
    fs::create_dir_all(dir.path.join("local")).unwrap();
    fs::write(dir.path.join("local/hello.txt"), b"hello from the task\n").unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let id = "http";
    let out = common::output(root.cli().args([
        "start",
        "--id",
        id,
        "--user",
        "nobody",
        "--chroot",
        "--task-dir",
        dir.path.to_str().unwrap(),
        "--",
        PYTHON,
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--directory",
        "/local",
    ]));
    assert!(out.status.success(), "{out:?}");
    let get = || -> Option<String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.write_all(b"GET /hello.txt HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        Some(body)
    };
    assert!(
        common::eventually(Duration::from_secs(10), || get().is_some()),
        "the server never answered"
    );
    let body = get().unwrap();
    assert!(
        body.starts_with("HTTP/1.0 200") && body.ends_with("hello from the task\n"),
        "{body}"
    );
    let out = common::output(root.cli().args(["stop", id, "--timeout", "5s"]));
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value =
        serde_json::from_slice(&common::output(root.cli().args(["inspect", id, "--json"])).stdout)
            .unwrap();
    assert_eq!(v["exit"]["signal"], 15, "{v}");
    assert!(get().is_none(), "still serving after stop");
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_task_cannot_reach_the_shim_binary_through_its_supervisor() {
    if !root_or_skip("a_task_cannot_reach_the_shim_binary_through_its_supervisor") {
        return;
    }
    let root = TestRoot::new();
    // A root task (the default bounding set: no CAP_SYS_PTRACE) in the
    // host's pid namespace, where its parent, the supervisor, is visible.
    let probe = "import os\nppid = os.getppid()\nfor how in ('readlink', 'open'):\n    try:\n        os.readlink(f'/proc/{ppid}/exe') if how == 'readlink' else open(f'/proc/{ppid}/exe', 'rb')\n        print(how, 'allowed')\n    except PermissionError:\n        print(how, 'denied')";
    let (exit, out, err) = run_to_end(&root, TaskSpec::new(PYTHON).args(["-c", probe]));
    assert!(exit.success(), "{exit:?} {err}");
    assert_eq!(out, "readlink denied\nopen denied\n");
}

/// A network namespace of the test's own (`ip netns add`), deleted on drop.
struct NetNs(String);

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_task_joins_the_network_namespace_it_is_given() {
    if !root_or_skip("a_task_joins_the_network_namespace_it_is_given") {
        return;
    }
    let root = TestRoot::new();
    let name = format!("nomad-shim-test-{}", std::process::id());
    let out = common::output(std::process::Command::new("ip").args(["netns", "add", &name]));
    assert!(out.status.success(), "{out:?}");
    let ns = NetNs(name);
    let path = PathBuf::from("/run/netns").join(&ns.0);
    let want = fs::metadata(&path).unwrap().ino();
    let mut spec = TaskSpec::new("/usr/bin/stat");
    spec.args(["-L", "-c", "%i", "/proc/self/ns/net"])
        .isolation(IsolationSpec {
            netns: Some(path.clone()),
            ..IsolationSpec::default()
        });
    let (exit, out, err) = run_to_end(&root, &spec);
    assert!(exit.success(), "{exit:?} {err}");
    assert_eq!(
        out.trim(),
        want.to_string(),
        "the task is not in {}",
        path.display()
    );
    // A namespace that does not exist is a start error naming it.
    let mut spec = TaskSpec::new("/bin/true");
    spec.isolation(IsolationSpec {
        netns: Some("/run/netns/no-such-ns".into()),
        ..IsolationSpec::default()
    });
    let err = root.exec.start(&spec).unwrap_err();
    assert!(err.to_string().contains("/run/netns/no-such-ns"), "{err}");
}
