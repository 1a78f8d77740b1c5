//! Issue 7 items 1 and 2: the device controller closes the mknod hole for a
//! root task (with and without a chroot), and `--device` passes exactly one
//! host node through. Real nodes, real programs (sh, python3), as root; on
//! the host's cgroup v1 and in the v2 VM.

use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nomad_shim::isolate::{DeviceSpec, IsolationSpec};
use nomad_shim::{Task, TaskExit, TaskSpec};

use crate::common::{self, root_or_skip, TestRoot};

const PYTHON: &str = "/usr/bin/python3";

/// Opens each `path:flags` argument and prints `path OK` or `path ERRNO`
/// (EPERM, EACCES, ...), then makes a pty pair through /dev/ptmx.
const PROBE: &str = r#"
import errno, os, pty, stat, sys
def tryopen(path, flags):
    try:
        os.close(os.open(path, flags | os.O_NOCTTY))
        return "OK"
    except OSError as e:
        return errno.errorcode[e.errno]
for arg in sys.argv[1:]:
    op, path, rest = arg.split(":", 2)
    if op == "mknod":
        kind, major, minor = rest.split(",")
        mode = 0o600 | (stat.S_IFCHR if kind == "c" else stat.S_IFBLK)
        try:
            os.mknod(path, mode, os.makedev(int(major), int(minor)))
            print(path, "MADE")
        except OSError as e:
            print(path, "MKNOD", errno.errorcode[e.errno])
    else:
        flags = {"r": os.O_RDONLY, "w": os.O_WRONLY, "rw": os.O_RDWR}[rest]
        print(path, rest, tryopen(path, flags))
m, s = pty.openpty()
print("pty", os.ttyname(s))
"#;

/// A task directory beside the test's root; on drop, checks that no mount
/// under it is left in the host's table.
struct TaskDir(PathBuf);

impl TaskDir {
    fn new(root: &TestRoot, name: &str) -> TaskDir {
        TaskDir(root.path().with_file_name(name))
    }
}

impl Drop for TaskDir {
    fn drop(&mut self) {
        crate::common::assert_no_mounts_under(&self.0);
    }
}

fn chrooted(dir: &Path, program: &str, args: &[&str]) -> TaskSpec {
    let mut spec = TaskSpec::new(program);
    spec.args(args.iter().copied()).isolation(IsolationSpec {
        chroot: true,
        task_dir: Some(dir.to_path_buf()),
        pid: true,
        ipc: true,
        uts: true,
        ..IsolationSpec::default()
    });
    spec
}

fn run_to_end(root: &TestRoot, spec: &TaskSpec) -> (Task, TaskExit, String, String) {
    let mut task = root
        .exec
        .start(spec)
        .unwrap_or_else(|e| panic!("start: {e}"));
    let exit = task.wait().unwrap();
    let out = fs::read_to_string(task.dir().join("stdout.log")).unwrap();
    let err = fs::read_to_string(task.dir().join("stderr.log")).unwrap();
    (task, exit, out, err)
}

/// The line of `out` that starts with `key `, without the key.
fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {key} in {out}"))
}

/// Whether the test process itself (in no task cgroup) can open `path`
/// for writing: the control that shows an EPERM in the task is the device
/// controller's, not the filesystem's.
fn host_can_open(path: &Path, write: bool) -> bool {
    fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
        .is_ok()
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_root_task_in_the_chroot_can_mknod_but_not_open_host_devices() {
    if !root_or_skip("a_root_task_in_the_chroot_can_mknod_but_not_open_host_devices") {
        return;
    }
    let root = TestRoot::new();
    let dir = TaskDir::new(&root, "task-devices-chroot");
    let args = [
        "-c",
        PROBE,
        "mknod:/dev/x:c,1,11",
        "open:/dev/x:w",
        "open:/dev/x:r",
        "mknod:/dev/b:b,7,0",
        "open:/dev/b:r",
        "mknod:/dev/b8:b,8,0",
        "open:/dev/b8:r",
        "mknod:/tmp/k:c,1,11",
        "open:/tmp/k:w",
        "open:/dev/null:rw",
        "open:/dev/zero:r",
        "open:/dev/full:w",
        "open:/dev/urandom:r",
        "open:/dev/tty:rw",
    ];
    let (_task, exit, out, err) = run_to_end(&root, &chrooted(&dir.0, PYTHON, &args));
    assert!(exit.success(), "{exit:?} {out} {err}");
    // mknod is allowed (CAP_MKNOD is in the default set, `c/b *:* m`)...
    for node in ["/dev/x", "/dev/b", "/dev/b8", "/tmp/k"] {
        assert_eq!(line(&out, node), "MADE", "{out}");
    }
    // ...but using the nodes is not.
    assert_eq!(line(&out, "/dev/x w"), "EPERM", "{out}");
    assert_eq!(line(&out, "/dev/x r"), "EPERM", "{out}");
    assert_eq!(line(&out, "/dev/b r"), "EPERM", "{out}");
    assert_eq!(line(&out, "/dev/b8 r"), "EPERM", "{out}");
    // The task dirs are nodev mounts besides: a node there is refused
    // before the device controller is asked.
    assert_eq!(line(&out, "/tmp/k w"), "EACCES", "{out}");
    // The default list works; /dev/tty is allowed (5:0) but the task has no
    // controlling terminal: ENXIO, not EPERM.
    assert_eq!(line(&out, "/dev/null rw"), "OK", "{out}");
    assert_eq!(line(&out, "/dev/zero r"), "OK", "{out}");
    assert_eq!(line(&out, "/dev/full w"), "OK", "{out}");
    assert_eq!(line(&out, "/dev/urandom r"), "OK", "{out}");
    assert_eq!(line(&out, "/dev/tty rw"), "ENXIO", "{out}");
    // /dev/ptmx and a pty of the task's own devpts (136:*).
    assert!(line(&out, "pty").starts_with("/dev/pts/"), "{out}");

    // The same with a shell redirection: the error text an operator sees.
    let script = "mknod /dev/k c 1 11 && echo made; echo hello > /dev/k";
    let (_task, exit, out, err) = run_to_end(&root, &chrooted(&dir.0, "/bin/sh", &["-c", script]));
    assert_eq!(exit.code(), Some(2), "{exit:?} {out} {err}");
    assert_eq!(out, "made\n");
    assert!(err.contains("/dev/k: Operation not permitted"), "{err}");
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn without_a_chroot_a_root_task_cannot_open_a_node_it_makes() {
    if !root_or_skip("without_a_chroot_a_root_task_cannot_open_a_node_it_makes") {
        return;
    }
    let root = TestRoot::new();
    let dir = TaskDir::new(&root, "task-devices-host");
    fs::create_dir_all(&dir.0).unwrap();
    let mut spec = TaskSpec::new(PYTHON);
    spec.args([
        "-c",
        PROBE,
        "mknod:kmsg:c,1,11",
        "open:kmsg:w",
        "open:/dev/kmsg:w",
    ])
    .isolation(IsolationSpec {
        task_dir: Some(dir.0.clone()),
        ..IsolationSpec::default()
    });
    let (task, exit, out, err) = run_to_end(&root, &spec);
    assert!(exit.success(), "{exit:?} {out} {err}");
    assert_eq!(line(&out, "kmsg"), "MADE", "{out}");
    assert_eq!(line(&out, "kmsg w"), "EPERM", "{out}");
    // The host's own node, in the host's /dev, is refused just the same.
    assert_eq!(line(&out, "/dev/kmsg w"), "EPERM", "{out}");
    // Control: the node the task made opens for the test process.
    assert!(
        host_can_open(&dir.0.join("kmsg"), true),
        "the filesystem itself refuses device nodes: the test proves nothing"
    );
    drop(task);
}

/// Whether the kernel log holds `marker` (read from /dev/kmsg, as root).
fn kernel_log_has(marker: &str) -> bool {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .unwrap();
    let mut buf = vec![0u8; 8192];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => {
                if String::from_utf8_lossy(&buf[..n]).contains(marker) {
                    return true;
                }
            }
            // EPIPE: records overwritten while reading; go on.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(_) => return false, // EAGAIN: the end
        }
    }
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_passed_through_device_works_and_nothing_else_does() {
    if !root_or_skip("a_passed_through_device_works_and_nothing_else_does") {
        return;
    }
    let root = TestRoot::new();
    let dir = TaskDir::new(&root, "task-devices-pass");
    let marker = format!("nomad-shim devices test {}", std::process::id());
    // /dev/kmsg (1:11), write only, at a path of the task's own; nothing else.
    let mut spec = chrooted(
        &dir.0,
        PYTHON,
        &[
            "-c",
            &format!("{PROBE}\nwith open('/dev/sub/kmsg', 'w') as f: f.write('{marker}\\n')"),
            "open:/dev/sub/kmsg:w",
            "open:/dev/sub/kmsg:r",
            "mknod:/dev/kmsg2:c,1,11",
            "open:/dev/kmsg2:w",
            "mknod:/dev/console:c,5,1",
            "open:/dev/console:r",
        ],
    );
    spec.isolation.devices = vec![DeviceSpec::parse("/dev/kmsg:/dev/sub/kmsg:w").unwrap()];
    let (_task, exit, out, err) = run_to_end(&root, &spec);
    assert!(exit.success(), "{exit:?} {out} {err}");
    assert_eq!(line(&out, "/dev/sub/kmsg w"), "OK", "{out}");
    assert_eq!(
        line(&out, "/dev/sub/kmsg r"),
        "EPERM",
        "read was not passed: {out}"
    );
    // The same device through a node of its own making: the rule is the
    // device's (1:11, w), wherever its node is.
    assert_eq!(line(&out, "/dev/kmsg2 w"), "OK", "{out}");
    assert_eq!(line(&out, "/dev/console r"), "EPERM", "{out}");
    assert!(
        kernel_log_has(&marker),
        "the write did not reach the kernel log"
    );

    // Without a chroot: the host's node, at its host path.
    let mut spec = TaskSpec::new(PYTHON);
    spec.args(["-c", PROBE, "open:/dev/kmsg:w", "open:/dev/console:r"]);
    spec.isolation.devices = vec![DeviceSpec::parse("/dev/kmsg:w").unwrap()];
    let (_task, exit, out, err) = run_to_end(&root, &spec);
    assert!(exit.success(), "{exit:?} {out} {err}");
    assert_eq!(line(&out, "/dev/kmsg w"), "OK", "{out}");
    assert_eq!(line(&out, "/dev/console r"), "EPERM", "{out}");
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_device_that_is_not_one_is_refused_naming_it() {
    if !root_or_skip("a_device_that_is_not_one_is_refused_naming_it") {
        return;
    }
    let root = TestRoot::new();
    let out =
        common::output(
            root.cli()
                .args(["run", "--device", "/etc/hostname", "--", "/bin/true"]),
        );
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("device /etc/hostname: not a character or block device"),
        "{err}"
    );
    let out =
        common::output(
            root.cli()
                .args(["run", "--device", "/dev/null:wx", "--", "/bin/true"]),
        );
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--device"), "the option is named: {err}");
    // Nothing is left of the refused start but its state.
    assert!(
        common::eventually(std::time::Duration::from_secs(5), || {
            !Path::new("/sys/fs/cgroup/devices")
                .join(&root.cgroup_parent)
                .read_dir()
                .is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e.path().is_dir())))
        }),
        "a task cgroup was left"
    );
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn state_lists_the_devices_cgroup_and_nothing_is_left_after_the_task() {
    if !root_or_skip("state_lists_the_devices_cgroup_and_nothing_is_left_after_the_task") {
        return;
    }
    let root = TestRoot::new();
    let mut task = root.sh("grep -E '(^|:)devices:|^0::' /proc/self/cgroup");
    let exit = task.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    // The cgroup goes after the exit is recorded (and `wait` has returned).
    common::supervisor_finished(&task);
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(task.dir().join("state.json")).unwrap()).unwrap();
    let out = fs::read_to_string(task.dir().join("stdout.log")).unwrap();
    let cgroup = &state["cgroup"];
    let dirs: Vec<PathBuf> = match cgroup {
        // v1: controller → path, the devices hierarchy among them.
        serde_json::Value::Object(map) => {
            let devices = map["devices"].as_str().unwrap_or_else(|| panic!("{state}"));
            let want = format!(
                "/sys/fs/cgroup/devices/{}/{}",
                root.cgroup_parent,
                task.id()
            );
            assert_eq!(devices, want, "{state}");
            let joined = format!(":devices:/{}/{}\n", root.cgroup_parent, task.id());
            assert!(out.contains(&joined), "the task ran in it: {out}");
            map.values()
                .map(|v| PathBuf::from(v.as_str().unwrap()))
                .collect()
        }
        // v2: one directory (the device program goes with it).
        serde_json::Value::String(p) => vec![PathBuf::from(p)],
        other => panic!("cgroup {other}"),
    };
    for d in dirs {
        assert!(!d.exists(), "{} left after the task", d.display());
    }
}
