//! Issue 7 items 3, 8, 9, 13: what a chrooted task sees of the kernel's
//! filesystems (/sys, /proc), of the host's DNS files, and of host mounts.
//! Real mounts, Debian's python3 and sh as the tasks.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};

use nomad_shim::cgroup::{CgroupRoot, Layout, Resources};
use nomad_shim::isolate::{DnsSpec, IsolateError, IsolationSpec, MountSpec};
use nomad_shim::{Error, Task, TaskExit, TaskSpec};

use crate::common::{root_or_skip, TestRoot};

/// A task directory beside the test's root; on drop, no mount under it (or
/// under the test's other paths) may be left in the host's mount table.
struct TaskDir {
    path: PathBuf,
}

impl TaskDir {
    fn new(root: &TestRoot, name: &str) -> TaskDir {
        let path = root.path().with_file_name(name);
        fs::create_dir_all(&path).unwrap();
        TaskDir { path }
    }
}

impl Drop for TaskDir {
    fn drop(&mut self) {
        crate::common::assert_no_mounts_under(self.path.parent().unwrap());
    }
}

fn chrooted(dir: &TaskDir, program: &str, args: &[&str]) -> TaskSpec {
    let mut spec = TaskSpec::new(program);
    spec.args(args.iter().copied()).isolation(IsolationSpec {
        chroot: true,
        task_dir: Some(dir.path.clone()),
        ..IsolationSpec::default()
    });
    spec
}

fn python(dir: &TaskDir, script: &str) -> TaskSpec {
    chrooted(dir, "/usr/bin/python3", &["-c", script])
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

/// Runs `spec` and returns its stdout; the task must succeed.
fn stdout_of(root: &TestRoot, spec: &TaskSpec) -> String {
    let (exit, out, err) = run_to_end(root, spec);
    assert!(exit.success(), "{exit:?}\nstdout: {out}\nstderr: {err}");
    out
}

/// A python helper for the task: `attempt(what, fn)` prints `what: ok` or
/// `what: ERRNO_NAME`.
const PY_ATTEMPT: &str = r#"
import errno, os
def attempt(what, fn):
    try:
        fn()
        print(what + ": ok")
    except OSError as e:
        print(what + ": " + errno.errorcode.get(e.errno, str(e.errno)))
def write(path, data=b"x"):
    with open(path, "wb") as f:
        f.write(data)
"#;

fn line<'a>(out: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}: ");
    out.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {key:?} in {out}"))
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn sys_is_read_only_and_shows_the_tasks_own_memory_limit() {
    if !root_or_skip("sys_is_read_only_and_shows_the_tasks_own_memory_limit") {
        return;
    }
    let root = TestRoot::new();
    let dir = TaskDir::new(&root, "task-sys");
    let limit_file = match CgroupRoot::detect().unwrap().layout() {
        Layout::V2 => "/sys/fs/cgroup/memory.max",
        _ => "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    };
    let script = format!(
        "{PY_ATTEMPT}
print('limit: ' + open('{limit_file}').read().strip())
attempt('write sys', lambda: write('/sys/kernel/nomad-shim-test'))
attempt('create in sys', lambda: os.mkdir('/sys/nomad-shim-test'))
attempt('write limit', lambda: write('{limit_file}', b'max'))
attempt('mkdir in cgroup', lambda: os.mkdir('/sys/fs/cgroup/x'))
print('cpu topology: ' + str(os.path.isdir('/sys/devices/system/cpu')))
"
    );
    let mut spec = python(&dir, &script);
    spec.resources(Resources {
        memory_max: Some(64 << 20),
        ..Resources::default()
    });
    let out = stdout_of(&root, &spec);
    assert_eq!(line(&out, "limit"), (64u64 << 20).to_string(), "{out}");
    assert_eq!(line(&out, "write sys"), "EROFS", "{out}");
    assert_eq!(line(&out, "create in sys"), "EROFS", "{out}");
    assert_eq!(line(&out, "write limit"), "EROFS", "{out}");
    assert_eq!(line(&out, "mkdir in cgroup"), "EROFS", "{out}");
    assert_eq!(line(&out, "cpu topology"), "True", "{out}");
}

/// runc's masked paths that exist on this kernel read empty in the task;
/// those that do not exist stay absent.
#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn masked_paths_show_nothing_and_proc_sys_is_read_only_even_with_cap_sys_admin() {
    if !root_or_skip("masked_paths_show_nothing_and_proc_sys_is_read_only_even_with_cap_sys_admin")
    {
        return;
    }
    let root = TestRoot::new();
    let dir = TaskDir::new(&root, "task-proc");
    let host_hostname = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let files = [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
        "/proc/latency_stats",
    ];
    let dirs = ["/proc/scsi", "/proc/acpi", "/sys/firmware"];
    let script = format!(
        "{PY_ATTEMPT}
for f in {files:?}:
    try:
        print(f + ': ' + str(len(open(f, 'rb').read(65536))))
    except OSError as e:
        print(f + ': ' + errno.errorcode[e.errno])
for d in {dirs:?}:
    try:
        print(d + ': ' + str(len(os.listdir(d))))
    except OSError as e:
        print(d + ': ' + errno.errorcode[e.errno])
print('caps: ' + [l for l in open('/proc/self/status') if l.startswith('CapEff')][0].split()[1])
attempt('hostname', lambda: write('/proc/sys/kernel/hostname', b'nomad-shim-test'))
attempt('sysrq', lambda: write('/proc/sysrq-trigger', b'h'))
attempt('irq', lambda: write('/proc/irq/default_smp_affinity', b'1'))
"
    );
    // --ns uts: were the protection missing, the write would change only
    // the task's own hostname, never the host's.
    let mut spec = python(&dir, &script);
    spec.isolation.uts = true;
    spec.isolation.pid = true;
    spec.isolation.cap_add = vec!["SYS_ADMIN".into()];
    let out = stdout_of(&root, &spec);
    // CAP_SYS_ADMIN is bit 21.
    let caps = u64::from_str_radix(line(&out, "caps"), 16).unwrap();
    assert_ne!(caps & (1 << 21), 0, "the task lacks CAP_SYS_ADMIN: {out}");
    for f in files {
        let want = if Path::new(f).exists() { "0" } else { "ENOENT" };
        assert_eq!(line(&out, f), want, "{f}: {out}");
    }
    for d in dirs {
        let want = if Path::new(d).exists() { "0" } else { "ENOENT" };
        assert_eq!(line(&out, d), want, "{d}: {out}");
    }
    assert_eq!(line(&out, "hostname"), "EROFS", "{out}");
    if Path::new("/proc/sysrq-trigger").exists() {
        assert_eq!(line(&out, "sysrq"), "EROFS", "{out}");
    }
    assert_eq!(line(&out, "irq"), "EROFS", "{out}");
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_hostname
    );
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn default_dns_files_are_the_hosts_and_read_only() {
    if !root_or_skip("default_dns_files_are_the_hosts_and_read_only") {
        return;
    }
    let root = TestRoot::new();
    let dir = TaskDir::new(&root, "task-dns-default");
    let script = format!(
        "{PY_ATTEMPT}
import sys
sys.stdout.write(open('/etc/resolv.conf').read() + '--\\n' + open('/etc/hosts').read() + '--\\n')
attempt('write resolv.conf', lambda: write('/etc/resolv.conf'))
attempt('write hosts', lambda: write('/etc/hosts'))
"
    );
    let out = stdout_of(&root, &python(&dir, &script));
    let want = format!(
        "{}--\n{}--\n",
        fs::read_to_string("/etc/resolv.conf").unwrap(),
        fs::read_to_string("/etc/hosts").unwrap()
    );
    assert!(out.starts_with(&want), "{out}\nwant:\n{want}");
    assert_eq!(line(&out, "write resolv.conf"), "EROFS", "{out}");
    assert_eq!(line(&out, "write hosts"), "EROFS", "{out}");
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn dns_options_give_exactly_the_generated_resolv_conf() {
    if !root_or_skip("dns_options_give_exactly_the_generated_resolv_conf") {
        return;
    }
    let root = TestRoot::new();
    let dir = TaskDir::new(&root, "task-dns");
    // A symlink planted where the private file was once written (the task
    // dir): it is no longer written there, and never through the link.
    let decoy = root.path().with_file_name("decoy-resolv.conf");
    fs::write(&decoy, "decoy\n").unwrap();
    symlink(&decoy, dir.path.join("resolv.conf")).unwrap();
    let host_resolv = fs::read("/etc/resolv.conf").unwrap();
    let script = format!(
        "{PY_ATTEMPT}
import sys
sys.stdout.write(open('/etc/resolv.conf').read() + '--\\n')
attempt('write resolv.conf', lambda: write('/etc/resolv.conf'))
"
    );
    let mut spec = python(&dir, &script);
    spec.isolation.dns = Some(DnsSpec {
        servers: vec!["192.0.2.53".into(), "2001:db8::53".into()],
        searches: vec!["svc.example".into(), "example".into()],
        options: vec!["ndots:2".into(), "edns0".into()],
    });
    let out = stdout_of(&root, &spec);
    let want = "# written by nomad-shim for this task\n\
                nameserver 192.0.2.53\nnameserver 2001:db8::53\n\
                search svc.example example\noptions ndots:2 edns0\n--\n";
    assert!(out.starts_with(want), "{out}");
    assert_eq!(line(&out, "write resolv.conf"), "EROFS", "{out}");
    assert_eq!(fs::read_to_string(&decoy).unwrap(), "decoy\n");
    assert_eq!(fs::read("/etc/resolv.conf").unwrap(), host_resolv);

    // Only a search domain: the servers stay the host's (Nomad's rule).
    spec.isolation.dns = Some(DnsSpec {
        searches: vec!["svc.example".into()],
        ..DnsSpec::default()
    });
    let out = stdout_of(&root, &spec);
    let servers = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("nameserver"))
            .map(str::to_owned)
            .collect()
    };
    let host_text = String::from_utf8(host_resolv.clone()).unwrap();
    assert_eq!(servers(&out), servers(&host_text), "{out}");
    assert!(out.lines().any(|l| l == "search svc.example"), "{out}");

    // A server that is not an IP: a typed error naming it, before any process.
    spec.isolation.dns = Some(DnsSpec {
        servers: vec!["dns.example".into()],
        ..DnsSpec::default()
    });
    match root.exec.start(&spec) {
        Err(Error::Isolate(IsolateError::InvalidDnsServer { value })) => {
            assert_eq!(value, "dns.example")
        }
        other => panic!("{:?}", other.map(|t| t.id().to_string())),
    }
}

/// Regression: the private resolv.conf of `--dns-*` was written in the task
/// dir, which is the task's `/`: the task saw it as `/resolv.conf`, and it
/// stayed after `run --rm`. It is in the task's state directory now.
#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn dns_resolv_conf_is_not_in_the_tasks_root_and_nothing_is_left_after_run_rm() {
    if !root_or_skip("dns_resolv_conf_is_not_in_the_tasks_root_and_nothing_is_left_after_run_rm") {
        return;
    }
    let root = TestRoot::new();
    let dir = TaskDir::new(&root, "task-dns-rm");
    let out = crate::common::output(
        root.cli()
            .args(["run", "--rm", "--id", "dns-rm", "--chroot", "--task-dir"])
            .arg(&dir.path)
            .args(["--dns-server", "192.0.2.53", "--"])
            .args(["/bin/sh", "-c"])
            .arg("ls -a /; grep nameserver /etc/resolv.conf"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.lines().any(|l| l == "nameserver 192.0.2.53"),
        "the task does not see its resolv.conf: {stdout}"
    );
    assert!(
        stdout.lines().any(|l| l == "etc"),
        "no listing of /: {stdout}"
    );
    assert!(
        !stdout.lines().any(|l| l == "resolv.conf"),
        "the task sees /resolv.conf: {stdout}"
    );
    assert!(
        fs::symlink_metadata(dir.path.join("resolv.conf")).is_err(),
        "resolv.conf left in the task dir"
    );
    assert!(
        fs::symlink_metadata(root.path().join("dns-rm")).is_err(),
        "the state directory is left"
    );
}

/// Names, sizes, modes, owners and mtimes of a directory's entries.
fn snapshot(dir: &str) -> Vec<(String, u64, u32, u32, i64)> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let m = fs::symlink_metadata(e.path()).unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            (name, m.len(), m.mode(), m.uid(), m.mtime())
        })
        .collect();
    v.sort();
    v
}

/// Lines of the host's mount table whose mount point is one of `paths` or
/// below it (other tests on this machine may mount elsewhere meanwhile).
fn host_mounts_on(paths: &[&str]) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| {
            let point = l.split(' ').nth(4).unwrap_or("");
            paths
                .iter()
                .any(|p| point == *p || point.starts_with(&format!("{p}/")))
        })
        .map(str::to_owned)
        .collect()
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn host_mounts_are_read_write_or_read_only_as_asked() {
    if !root_or_skip("host_mounts_are_read_write_or_read_only_as_asked") {
        return;
    }
    let root = TestRoot::new();
    let dir = TaskDir::new(&root, "task-mounts");
    let vols = root.path().with_file_name("volumes");
    fs::create_dir_all(vols.join("rw")).unwrap();
    fs::create_dir_all(vols.join("ro")).unwrap();
    fs::write(vols.join("ro/data"), "read me\n").unwrap();
    fs::write(vols.join("one-file"), "a file\n").unwrap();
    let script = format!(
        "{PY_ATTEMPT}
attempt('write rw', lambda: write('/data/written', b'from the task'))
print('read ro: ' + open('/srv/ro/data').read().strip())
attempt('write ro', lambda: write('/srv/ro/new'))
attempt('write ro file', lambda: write('/srv/ro/data'))
print('file: ' + open('/local/conf/one-file').read().strip())
"
    );
    let mut spec = python(&dir, &script);
    let m = |src: &Path, dst: &str, readonly| MountSpec {
        src: src.to_path_buf(),
        dst: dst.into(),
        readonly,
    };
    spec.isolation.mounts = vec![
        m(&vols.join("rw"), "/data", false),
        m(&vols.join("ro"), "/srv/ro", true),
        m(&vols.join("one-file"), "/local/conf/one-file", true),
    ];
    let out = stdout_of(&root, &spec);
    assert_eq!(line(&out, "write rw"), "ok", "{out}");
    assert_eq!(
        fs::read_to_string(vols.join("rw/written")).unwrap(),
        "from the task"
    );
    assert_eq!(line(&out, "read ro"), "read me", "{out}");
    assert_eq!(line(&out, "write ro"), "EROFS", "{out}");
    assert_eq!(line(&out, "write ro file"), "EROFS", "{out}");
    assert_eq!(line(&out, "file"), "a file", "{out}");
    assert!(!vols.join("ro/new").exists());
    assert_eq!(
        fs::read_to_string(vols.join("ro/data")).unwrap(),
        "read me\n"
    );
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_mount_destination_cannot_escape_the_root() {
    if !root_or_skip("a_mount_destination_cannot_escape_the_root") {
        return;
    }
    let root = TestRoot::new();
    let dir = TaskDir::new(&root, "task-escape");
    let vol = root.path().with_file_name("volume");
    fs::create_dir_all(&vol).unwrap();
    // Planted by an earlier task: the destination, and a directory on the
    // way to another one, point at host directories.
    symlink("/etc", dir.path.join("data")).unwrap();
    fs::create_dir_all(dir.path.join("local")).unwrap();
    symlink("/root", dir.path.join("local/cfg")).unwrap();
    let (etc, root_home) = (snapshot("/etc"), snapshot("/root"));
    let mounts_before = host_mounts_on(&["/etc", "/root"]);
    let script = format!(
        "{PY_ATTEMPT}
attempt('write data', lambda: write('/data/probe', b'in the volume'))
attempt('write cfg', lambda: write('/local/cfg/inner/probe', b'in the volume'))
"
    );
    let mut spec = python(&dir, &script);
    spec.isolation.mounts = vec![
        MountSpec {
            src: vol.clone(),
            dst: "/data".into(),
            readonly: false,
        },
        MountSpec {
            src: vol.clone(),
            dst: "/local/cfg/inner".into(),
            readonly: false,
        },
    ];
    let out = stdout_of(&root, &spec);
    assert_eq!(line(&out, "write data"), "ok", "{out}");
    assert_eq!(line(&out, "write cfg"), "ok", "{out}");
    assert_eq!(
        fs::read_to_string(vol.join("probe")).unwrap(),
        "in the volume"
    );
    assert_eq!(snapshot("/etc"), etc, "the host's /etc changed");
    assert_eq!(snapshot("/root"), root_home, "the host's /root changed");
    assert!(!Path::new("/etc/probe").exists());
    assert_eq!(
        host_mounts_on(&["/etc", "/root"]),
        mounts_before,
        "the host's mount table changed"
    );
    // The planted links were replaced by directories of the task dir.
    assert!(fs::symlink_metadata(dir.path.join("data"))
        .unwrap()
        .is_dir());
    assert!(fs::symlink_metadata(dir.path.join("local/cfg"))
        .unwrap()
        .is_dir());

    // `..` in a destination: a typed error, before any process.
    spec.isolation.mounts = vec![MountSpec {
        src: vol.clone(),
        dst: "/data/../../etc".into(),
        readonly: false,
    }];
    match root.exec.start(&spec) {
        Err(Error::Isolate(IsolateError::DotDotInPath { field, path })) => {
            assert_eq!(
                (field, path),
                ("mount dst", PathBuf::from("/data/../../etc"))
            )
        }
        other => panic!("{:?}", other.map(|t| t.id().to_string())),
    }
    // Without a chroot there is no root to resolve it in.
    spec.isolation.chroot = false;
    spec.isolation.mounts[0].dst = "/data".into();
    assert!(matches!(
        root.exec.start(&spec),
        Err(Error::Isolate(IsolateError::MountWithoutChroot))
    ));
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn the_default_chroot_env_works_here_and_a_missing_named_path_is_an_error() {
    if !root_or_skip("the_default_chroot_env_works_here_and_a_missing_named_path_is_an_error") {
        return;
    }
    let root = TestRoot::new();
    let dir = TaskDir::new(&root, "task-env");
    let out = stdout_of(&root, &chrooted(&dir, "/bin/sh", &["-c", "ls /"]));
    for name in ["bin", "etc", "usr", "proc", "sys", "dev", "local"] {
        assert!(out.lines().any(|l| l == name), "{name} missing: {out}");
    }
    // Entries of the default list this host lacks are simply absent.
    if !Path::new("/lib32").exists() {
        assert!(!out.lines().any(|l| l == "lib32"), "{out}");
    }
    let mut spec = chrooted(&dir, "/bin/true", &[]);
    spec.isolation.chroot_env = vec![
        nomad_shim::isolate::BindSpec {
            src: "/usr".into(),
            dst: "/usr".into(),
        },
        nomad_shim::isolate::BindSpec {
            src: "/nonexistent-chroot-env".into(),
            dst: "/opt".into(),
        },
    ];
    let msg = root
        .exec
        .start(&spec)
        .map(|t| t.id().to_string())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("/nonexistent-chroot-env") && msg.contains("No such file or directory"),
        "{msg}"
    );
}

/// The host layout of systemd-resolved: `/etc/resolv.conf` is a symlink
/// out of `/etc`. Played with a fixture `/etc` (the host's own files are
/// never touched): the link's target directory is bound at the path the
/// link names inside the root, so the task reads the file through the link;
/// with `--dns-server`, the private file is bound over that target instead.
#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_resolv_conf_symlink_out_of_etc_resolves_inside_the_root() {
    if !root_or_skip("a_resolv_conf_symlink_out_of_etc_resolves_inside_the_root") {
        return;
    }
    let root = TestRoot::new();
    let dir = TaskDir::new(&root, "task-dns-link");
    // Not under /tmp: the link's target directory is bound at the same
    // path in the root, and /tmp is the task's own.
    let fixture = tempfile::Builder::new()
        .prefix("nomad-shim-test.")
        .tempdir_in("/var/tmp")
        .unwrap();
    let etc = fixture.path().join("etc");
    let resolve = fixture.path().join("resolve");
    fs::create_dir_all(&etc).unwrap();
    fs::create_dir_all(&resolve).unwrap();
    fs::write(etc.join("hosts"), "127.0.0.1 localhost\n").unwrap();
    fs::write(resolve.join("stub-resolv.conf"), "nameserver 192.0.2.99\n").unwrap();
    symlink("../resolve/stub-resolv.conf", etc.join("resolv.conf")).unwrap();
    let mut env: Vec<nomad_shim::isolate::BindSpec> = ["/usr", "/bin", "/lib", "/lib64"]
        .iter()
        .filter(|p| Path::new(p).exists())
        .map(|p| nomad_shim::isolate::BindSpec {
            src: p.into(),
            dst: p.into(),
        })
        .collect();
    env.push(nomad_shim::isolate::BindSpec {
        src: etc.clone(),
        dst: "/etc".into(),
    });
    let mut spec = chrooted(&dir, "/bin/cat", &["/etc/resolv.conf", "/etc/hosts"]);
    spec.isolation.chroot_env = env.clone();
    assert_eq!(
        stdout_of(&root, &spec),
        "nameserver 192.0.2.99\n127.0.0.1 localhost\n"
    );

    spec.isolation.dns = Some(DnsSpec {
        servers: vec!["192.0.2.53".into()],
        ..DnsSpec::default()
    });
    let out = stdout_of(&root, &spec);
    assert!(
        out.starts_with("# written by nomad-shim for this task\nnameserver 192.0.2.53\n"),
        "{out}"
    );
    assert_eq!(
        fs::read_to_string(resolve.join("stub-resolv.conf")).unwrap(),
        "nameserver 192.0.2.99\n"
    );

    // A dangling link leaves nothing to bind the private file onto: a start
    // error that says so, naming the file.
    fs::remove_file(resolve.join("stub-resolv.conf")).unwrap();
    let msg = root
        .exec
        .start(&spec)
        .map(|t| t.id().to_string())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("cannot place the task's resolv.conf") && msg.contains("etc/resolv.conf"),
        "{msg}"
    );
}

/// Unmounts (lazily) a mount the test made in the host's namespace, also
/// when the test fails.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Container hosts bind a file over `/etc/resolv.conf`. The root's `/etc`
/// is a non-recursive bind, which would show the file *under* that mount:
/// the host's mounted file is bound over it. Played with a fixture `/etc`
/// whose resolv.conf is a bind mount from the same filesystem (a device
/// comparison would miss it; statx's mount-root attribute does not).
#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_resolv_conf_that_is_a_mount_on_the_host_is_the_one_the_task_sees() {
    if !root_or_skip("a_resolv_conf_that_is_a_mount_on_the_host_is_the_one_the_task_sees") {
        return;
    }
    let root = TestRoot::new();
    let dir = TaskDir::new(&root, "task-dns-mounted");
    let fixture = tempfile::Builder::new()
        .prefix("nomad-shim-test.")
        .tempdir_in("/var/tmp")
        .unwrap();
    let etc = fixture.path().join("etc");
    fs::create_dir_all(&etc).unwrap();
    fs::write(
        etc.join("resolv.conf"),
        "nameserver 192.0.2.1 # under the mount\n",
    )
    .unwrap();
    fs::write(etc.join("hosts"), "127.0.0.1 localhost\n").unwrap();
    let real = fixture.path().join("real-resolv.conf");
    fs::write(&real, "nameserver 192.0.2.77\n").unwrap();
    nix::mount::mount(
        Some(&real),
        &etc.join("resolv.conf"),
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    let _unmount = Unmount(etc.join("resolv.conf"));
    let mut spec = chrooted(&dir, "/bin/cat", &["/etc/resolv.conf"]);
    spec.isolation.chroot_env = ["/usr", "/bin", "/lib", "/lib64"]
        .iter()
        .filter(|p| Path::new(p).exists())
        .map(|p| nomad_shim::isolate::BindSpec {
            src: p.into(),
            dst: p.into(),
        })
        .chain([nomad_shim::isolate::BindSpec {
            src: etc.clone(),
            dst: "/etc".into(),
        }])
        .collect();
    assert_eq!(stdout_of(&root, &spec), "nameserver 192.0.2.77\n");
}
