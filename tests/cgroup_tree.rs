//! The task's cgroup as a tree and as a name (issue 7, items 6, 11, 12):
//! a leftover `<parent>/<id>` of this root is killed and reused, another
//! root's is never touched; a process the task moved into a sub-cgroup of its
//! own dies with `stop`, `rm --force` and a reconcile, and no sub-cgroup is
//! left; the task runs on every CPU of its cpuset, not the caller's.
//!
//! Runs as root on the host (cgroup v1, hybrid) and in the v2 VM.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use nomad_shim::cgroup::{CgroupRoot, Layout, OWNER_XATTR};
use nomad_shim::{Status, TaskSpec};

use crate::common::{self, alive, eventually, root_or_skip, TestRoot};

const CG: &str = "/sys/fs/cgroup";

fn is_v2() -> bool {
    CgroupRoot::detect().unwrap().layout() == Layout::V2
}

/// The hierarchies a task with no limits is in: v2 the root; v1 the
/// freezer, devices and the accounting controllers that are mounted (as
/// `src/cgroup/v1.rs` picks them), by the path the kernel shows.
fn task_hierarchies() -> Vec<PathBuf> {
    if is_v2() {
        return vec![PathBuf::from(CG)];
    }
    let mut out: Vec<PathBuf> = Vec::new();
    for c in ["freezer", "devices", "memory", "cpu", "cpuacct", "pids"] {
        let p = Path::new(CG).join(c);
        let Ok(real) = std::fs::canonicalize(&p) else {
            continue;
        };
        if real.join("cgroup.procs").exists() && !out.contains(&real) {
            out.push(real);
        }
    }
    out
}

/// Every hierarchy mounted under /sys/fs/cgroup (v1), or the root (v2).
fn all_hierarchies() -> Vec<PathBuf> {
    if is_v2() {
        return vec![PathBuf::from(CG)];
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(CG).unwrap().flatten() {
        let p = e.path();
        if !e.file_type().unwrap().is_symlink() && p.join("cgroup.procs").exists() {
            out.push(p);
        }
    }
    out
}

/// Kills whatever is left under a test's cgroup parent (by pid, in every
/// hierarchy) and removes its sub-cgroups deepest first, on drop: a failed
/// test leaves nothing behind. Runs before the TestRoot's own guard.
struct ParentGuard(String);

impl Drop for ParentGuard {
    fn drop(&mut self) {
        for h in all_hierarchies() {
            let top = h.join(&self.0);
            let mut dirs = Vec::new();
            collect(&top, &mut dirs);
            for d in &dirs {
                for pid in read_pids(d) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                let _ = std::fs::write(d.join("freezer.state"), "THAWED");
            }
            for d in dirs.iter().rev() {
                let _ = eventually(Duration::from_secs(2), || {
                    std::fs::remove_dir(d).is_ok() || !d.exists()
                });
            }
        }
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    out.push(dir.to_path_buf());
    let mut subs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    subs.sort();
    for s in subs {
        collect(&s, out);
    }
}

fn read_pids(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The lines of /proc/PID/cgroup that name a cgroup other than "/", as
/// (controllers, path).
fn cgroups_of(pid: i32) -> Vec<(String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctl, path) = (f.next()?, f.next()?, f.next()?);
            (path != "/" && !ctl.starts_with("name=")).then(|| (ctl.to_string(), path.to_string()))
        })
        .collect()
}

fn get_mark(dir: &Path) -> Option<Vec<u8>> {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    let name = std::ffi::CString::new(OWNER_XATTR).unwrap();
    let mut buf = [0u8; 4096];
    let n = nomad_shim::sys::lgetxattr(&path, &name, &mut buf).ok()?;
    Some(buf[..n].to_vec())
}

/// Makes `<hierarchy>/<parent>/<id>` in every hierarchy a task uses, by hand,
/// marked with `owner` (none: unmarked), and puts a `sleep 1000` of ours in
/// it. Returns the sleep (an owned child) and the directories.
fn leftover(parent: &str, id: &str, owner: Option<&Path>) -> (std::process::Child, Vec<PathBuf>) {
    let mut dirs = Vec::new();
    for h in task_hierarchies() {
        let d = h.join(parent).join(id);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        if let Some(o) = owner {
            let path = std::ffi::CString::new(d.as_os_str().as_encoded_bytes()).unwrap();
            let name = std::ffi::CString::new(OWNER_XATTR).unwrap();
            let value = std::fs::canonicalize(o).unwrap();
            nomad_shim::sys::lsetxattr(&path, &name, value.as_os_str().as_encoded_bytes())
                .unwrap_or_else(|e| panic!("setxattr {}: {e}", d.display()));
        }
        dirs.push(d);
    }
    let sleep = common::spawn(Command::new("sleep").arg("1000").stdin(Stdio::null()));
    for d in &dirs {
        std::fs::write(d.join("cgroup.procs"), sleep.id().to_string())
            .unwrap_or_else(|e| panic!("join {}: {e}", d.display()));
    }
    (sleep, dirs)
}

/// Whether an owned child has ended (reaped here); its signal if any.
fn ended(child: &mut std::process::Child) -> Option<Option<i32>> {
    use std::os::unix::process::ExitStatusExt;
    child.try_wait().unwrap().map(|s| s.signal())
}

fn spec(id: &str, args: &[&str]) -> TaskSpec {
    let mut s = TaskSpec::new(args[0]);
    s.args(args[1..].iter().copied()).id(id);
    s
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_leftover_cgroup_of_this_root_is_killed_and_reused() {
    if !root_or_skip("a_leftover_cgroup_of_this_root_is_killed_and_reused") {
        return;
    }
    let root = TestRoot::new();
    let _guard = ParentGuard(root.cgroup_parent.clone());
    std::fs::create_dir_all(root.path()).unwrap();
    let (mut old, dirs) = leftover(&root.cgroup_parent, "web", Some(root.path()));

    let task = root
        .exec
        .start(&spec("web", &["sleep", "1000"]))
        .unwrap_or_else(|e| panic!("start over a leftover of this root: {e}"));
    // The leftover's process is dead (SIGKILL), the task runs in exactly
    // <parent>/web, and the directory carries this root's mark.
    assert!(
        eventually(Duration::from_secs(5), || ended(&mut old).is_some()),
        "the leftover's sleep survived"
    );
    common::disown(old.id() as i32);
    assert_eq!(ended(&mut old), Some(Some(9)));
    let want = format!("/{}/web", root.cgroup_parent);
    let cgs = cgroups_of(task.pid().unwrap());
    assert!(
        !cgs.is_empty() && cgs.iter().all(|(_, p)| *p == want),
        "{cgs:?}"
    );
    let canonical = std::fs::canonicalize(root.path()).unwrap();
    for d in &dirs {
        assert_eq!(
            get_mark(d).as_deref(),
            Some(canonical.as_os_str().as_encoded_bytes()),
            "{}",
            d.display()
        );
    }
    let out = common::output(root.cli().args(["stop", "web", "--timeout", "0s"]));
    assert!(out.status.success(), "{out:?}");
    assert!(dirs.iter().all(|d| !d.exists()), "cgroup left: {dirs:?}");
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_cgroup_of_another_roots_live_task_is_never_touched() {
    if !root_or_skip("a_cgroup_of_another_roots_live_task_is_never_touched") {
        return;
    }
    let a = TestRoot::new();
    let _guard = ParentGuard(a.cgroup_parent.clone());
    let mut b = TestRoot::new();
    // b shares a's cgroup parent.
    b.exec = nomad_shim::Executor::with_root(b.path())
        .shim_path(common::shim())
        .cgroup_parent(a.cgroup_parent.clone());
    let theirs = a.exec.start(&spec("shared", &["sleep", "1000"])).unwrap();
    let pid = theirs.pid().unwrap();

    let e = b
        .exec
        .start(&spec("shared", &["sleep", "1000"]))
        .expect_err("b took over a's cgroup");
    let msg = e.to_string();
    let path = task_hierarchies()[0].join(&a.cgroup_parent).join("shared");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("another root"), "{msg}");
    // a's task is unharmed, in its cgroup, and b kept nothing of its start.
    assert!(alive(pid));
    assert!(read_pids(&path).contains(&pid));
    assert_eq!(theirs.state().unwrap().status, Status::Running);
    assert!(!b.path().join("shared").exists());
    let out = common::output(b.cli().arg("ps"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("shared"));
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn an_unmarked_cgroup_is_refused_unless_empty() {
    if !root_or_skip("an_unmarked_cgroup_is_refused_unless_empty") {
        return;
    }
    let root = TestRoot::new();
    let _guard = ParentGuard(root.cgroup_parent.clone());
    let (mut stranger, dirs) = leftover(&root.cgroup_parent, "u", None);
    let e = root
        .exec
        .start(&spec("u", &["true"]))
        .expect_err("an unmarked cgroup with a process was taken over");
    let msg = e.to_string();
    assert!(msg.contains("no owner mark"), "{msg}");
    assert!(msg.contains(&format!("{}/u", root.cgroup_parent)), "{msg}");
    assert_eq!(ended(&mut stranger), None, "the stranger was killed");
    // Emptied (as a start killed between mkdir and its mark leaves it), it
    // is taken.
    stranger.kill().unwrap();
    common::wait_output(stranger);
    assert!(eventually(Duration::from_secs(2), || dirs
        .iter()
        .all(|d| read_pids(d).is_empty())));
    let out = common::output(root.cli().args(["run", "--id", "u", "--", "true"]));
    assert!(out.status.success(), "{out:?}");
}

/// Starts a task (CLI, as root, no chroot) that makes `<its cgroup>/foo` in
/// every hierarchy it is in, moves a `setsid sleep` there, and goes on as a
/// `sleep`. Returns the escaped sleep's pid and the sub-cgroups.
fn start_escaper(root: &TestRoot, id: &str) -> (i32, Vec<PathBuf>) {
    let scratch = root.path().parent().unwrap().join(format!("{id}.out"));
    std::fs::create_dir_all(&scratch).unwrap();
    let script = format!(
        r#"cd {scratch}
while IFS=: read -r n ctl path; do
  case "$ctl" in name=*) continue;; esac
  [ "$path" = / ] && continue
  if [ -z "$ctl" ]; then m={CG}; else m={CG}/$ctl; fi
  mkdir "$m$path/foo" || exit 3
  echo "$m$path/foo" >> dirs
done < /proc/self/cgroup
setsid sleep 1000 &
p=$!
for d in $(cat dirs); do echo $p > "$d/cgroup.procs" || exit 4; done
echo $p > pid.tmp && mv pid.tmp pid
exec sleep 1000"#,
        scratch = scratch.display()
    );
    let out = common::output(
        root.cli()
            .args(["start", "--id", id, "--", "sh", "-c", &script]),
    );
    assert!(out.status.success(), "{out:?}");
    let pidfile = scratch.join("pid");
    assert!(
        eventually(Duration::from_secs(5), || pidfile.exists()),
        "the task did not escape: {:?}",
        std::fs::read_to_string(root.path().join(id).join("stderr.log"))
    );
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let subs: Vec<PathBuf> = std::fs::read_to_string(scratch.join("dirs"))
        .unwrap()
        .lines()
        .map(PathBuf::from)
        .collect();
    assert_eq!(subs.len(), task_hierarchies().len(), "{subs:?}");
    // Escaped: in foo in every hierarchy, in no task cgroup's own procs.
    let cgs = cgroups_of(pid);
    assert!(
        !cgs.is_empty() && cgs.iter().all(|(_, p)| p.ends_with(&format!("/{id}/foo"))),
        "{cgs:?}"
    );
    (pid, subs)
}

fn assert_all_gone(root: &TestRoot, id: &str, pid: i32, subs: &[PathBuf]) {
    assert!(
        eventually(Duration::from_secs(5), || !alive(pid)),
        "the sleep in the sub-cgroup survived (pid {pid})"
    );
    for s in subs {
        assert!(!s.exists(), "sub-cgroup left: {}", s.display());
        assert!(
            !s.parent().unwrap().exists(),
            "task cgroup left: {}",
            s.display()
        );
    }
    let _ = (root, id);
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_process_in_a_subcgroup_dies_with_stop() {
    if !root_or_skip("a_process_in_a_subcgroup_dies_with_stop") {
        return;
    }
    let root = TestRoot::new();
    let _guard = ParentGuard(root.cgroup_parent.clone());
    let (pid, subs) = start_escaper(&root, "esc");
    let out = common::output(root.cli().args(["stop", "esc", "--timeout", "1s"]));
    assert!(out.status.success(), "{out:?}");
    assert_all_gone(&root, "esc", pid, &subs);
    let state = root.exec.open("esc").unwrap().state().unwrap();
    assert_eq!(state.status, Status::Exited);
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_process_in_a_subcgroup_dies_with_rm_force() {
    if !root_or_skip("a_process_in_a_subcgroup_dies_with_rm_force") {
        return;
    }
    let root = TestRoot::new();
    let _guard = ParentGuard(root.cgroup_parent.clone());
    let (pid, subs) = start_escaper(&root, "esc");
    let out = common::output(root.cli().args(["rm", "--force", "esc"]));
    assert!(out.status.success(), "{out:?}");
    assert_all_gone(&root, "esc", pid, &subs);
    assert!(!root.path().join("esc").exists());
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_process_in_a_subcgroup_dies_with_a_reconcile_after_kill_9() {
    if !root_or_skip("a_process_in_a_subcgroup_dies_with_a_reconcile_after_kill_9") {
        return;
    }
    let root = TestRoot::new();
    let _guard = ParentGuard(root.cgroup_parent.clone());
    let (pid, subs) = start_escaper(&root, "esc");
    let task = root.exec.open("esc").unwrap();
    let sup = task.supervisor_pid().unwrap();
    kill(Pid::from_raw(sup), Signal::SIGKILL).unwrap();
    assert!(eventually(Duration::from_secs(5), || !alive(sup)));
    // Any reader reconciles: the lock is free while the state says running.
    let state = root.exec.open("esc").unwrap().state().unwrap();
    assert_eq!(state.status, Status::Lost);
    assert_all_gone(&root, "esc", pid, &subs);
}

/// `taskset -c 0 nomad-shim run [OPTS] -- grep Cpus_allowed_list /proc/self/status`.
fn allowed_cpus(root: &TestRoot, id: &str, opts: &[&str]) -> String {
    allowed_cpus_under(root, &root.cgroup_parent, id, opts)
}

/// [`allowed_cpus`] with the cgroup parent `parent`.
fn allowed_cpus_under(root: &TestRoot, parent: &str, id: &str, opts: &[&str]) -> String {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0"])
        .arg(common::shim())
        .arg("--root")
        .arg(root.path())
        .arg("--cgroup-parent")
        .arg(parent)
        .args(["run", "--id", id])
        .args(opts)
        .args(["--", "grep", "Cpus_allowed_list", "/proc/self/status"]);
    let out = common::output(&mut cmd);
    assert!(out.status.success(), "{out:?}");
    let s = String::from_utf8(out.stdout).unwrap();
    s.trim()
        .strip_prefix("Cpus_allowed_list:")
        .unwrap_or_else(|| panic!("{s:?}"))
        .trim()
        .to_string()
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_task_started_pinned_runs_on_every_cpu_of_its_cpuset() {
    if !root_or_skip("a_task_started_pinned_runs_on_every_cpu_of_its_cpuset") {
        return;
    }
    let root = TestRoot::new();
    let _guard = ParentGuard(root.cgroup_parent.clone());
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .unwrap()
        .trim()
        .to_string();
    // The caller is pinned to CPU 0; the task is not. The task without a
    // cpuset first: the parent it makes must not keep the cpuset cases from
    // getting the controller on v2.
    assert_eq!(allowed_cpus(&root, "all", &[]), online);
    if online != "0" {
        assert_eq!(allowed_cpus(&root, "one", &["--cpuset-cpus", "1"]), "1");
        assert_eq!(
            allowed_cpus(&root, "both", &["--cpuset-cpus", "0-1"]),
            "0-1"
        );
    } else {
        eprintln!("one CPU only: the --cpuset-cpus cases need two");
    }
}

/// Regression (v2): a parent made by a first task without a cpuset did not
/// offer the cpuset controller, and only it was asked to hand it down, so
/// `--cpuset-cpus` under it failed with `cgroup controller cpuset is not
/// available at …/cgroup.controllers`. Two levels of parent, so that the
/// case holds whatever an earlier test enabled in the root.
#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn cpuset_works_under_a_parent_made_by_a_task_without_it() {
    if !root_or_skip("cpuset_works_under_a_parent_made_by_a_task_without_it") {
        return;
    }
    let root = TestRoot::new();
    let _guard = ParentGuard(root.cgroup_parent.clone());
    let parent = format!("{}/inner", root.cgroup_parent);
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(allowed_cpus_under(&root, &parent, "plain", &[]), online);
    if is_v2() {
        let subtree = Path::new(CG).join(&parent).join("cgroup.subtree_control");
        let enabled = std::fs::read_to_string(&subtree).unwrap();
        assert!(
            !enabled.split_whitespace().any(|c| c == "cpuset"),
            "the case needs a parent without cpuset: {enabled:?}"
        );
    }
    assert_eq!(
        allowed_cpus_under(&root, &parent, "pinned", &["--cpuset-cpus", "0"]),
        "0"
    );
    if is_v2() {
        for dir in [root.cgroup_parent.as_str(), parent.as_str()] {
            let subtree = Path::new(CG).join(dir).join("cgroup.subtree_control");
            let enabled = std::fs::read_to_string(&subtree).unwrap();
            assert!(
                enabled.split_whitespace().any(|c| c == "cpuset"),
                "{}: {enabled:?}",
                subtree.display()
            );
        }
    }
}

/// v2's "no internal processes" rule: a parent with processes of its own
/// cannot hand a domain controller (memory, io) down to the task's cgroup
/// (EBUSY); a threaded one (cpuset) it can, but then the cgroup below it
/// cannot (EOPNOTSUPP). Either way the start fails with an error that names
/// the cgroup with the processes and says why.
#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_parent_with_processes_cannot_hand_a_controller_down() {
    if !root_or_skip("a_parent_with_processes_cannot_hand_a_controller_down") {
        return;
    }
    assert!(
        is_v2(),
        "needs cgroup v2 (subtree_control): scripts/test leaves it out on a v1 host (scripts/env-skips)"
    );
    let root = TestRoot::new();
    let _guard = ParentGuard(root.cgroup_parent.clone());
    // Our own parent, with a process of ours in it and no controller
    // enabled below it.
    let top = Path::new(CG).join(&root.cgroup_parent);
    std::fs::create_dir(&top).unwrap();
    let mut sleeper = Command::new("sleep").arg("600").spawn().unwrap();
    let _kill = KillOnDrop(sleeper.id() as i32);
    std::fs::write(top.join("cgroup.procs"), sleeper.id().to_string()).unwrap();
    let parent = format!("{}/inner", root.cgroup_parent);
    for (opt, value, controller) in [
        ("--memory", "64M", "memory"),
        ("--cpuset-cpus", "0", "cpuset"),
    ] {
        let out = common::output(
            Command::new(common::shim())
                .arg("--root")
                .arg(root.path())
                .arg("--cgroup-parent")
                .arg(&parent)
                .args(["run", "--id", "limited", opt, value, "--", "true"]),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{out:?}");
        let want = format!(
            "cannot enable cgroup controller {controller} below {}: \
             that cgroup has processes of its own",
            top.display()
        );
        assert!(err.contains(&want), "{opt}: {err}");
        assert!(
            !top.join("inner").exists(),
            "{opt}: nothing may be left below it"
        );
    }
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

/// SIGKILLs a pid of ours when dropped (a failed assertion included).
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
    }
}

/// Regression: a start refused by another root's leftover suggested
/// `nomad-shim --root X rm --force ID`, which answered `no task ID in X`
/// once X's task directory was gone (and named no cgroup parent). Now the
/// suggested command, run as given, kills and removes the cgroup marked by
/// X at exactly `<parent>/<id>`; without one, it still says there is no
/// such task.
#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn rm_force_of_a_missing_task_dir_kills_the_cgroup_marked_by_its_root() {
    if !root_or_skip("rm_force_of_a_missing_task_dir_kills_the_cgroup_marked_by_its_root") {
        return;
    }
    let a = TestRoot::new();
    let _guard = ParentGuard(a.cgroup_parent.clone());
    let b = TestRoot::new();
    std::fs::create_dir_all(b.path()).unwrap();
    // b's leftover in a's parent: b has no task directory for it.
    let (mut old, dirs) = leftover(&a.cgroup_parent, "gone", Some(b.path()));
    let e = a
        .exec
        .start(&spec("gone", &["true"]))
        .expect_err("a took over b's cgroup");
    let msg = e.to_string();
    let canonical_b = std::fs::canonicalize(b.path()).unwrap();
    let hint = format!(
        "nomad-shim --root {} --cgroup-parent {} rm --force gone",
        canonical_b.display(),
        a.cgroup_parent
    );
    assert!(msg.contains(&hint), "{msg}");
    // The hint, as given.
    let out = common::output(
        Command::new(common::shim())
            .arg("--root")
            .arg(&canonical_b)
            .arg("--cgroup-parent")
            .arg(&a.cgroup_parent)
            .args(["rm", "--force", "gone"]),
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        eventually(Duration::from_secs(5), || ended(&mut old).is_some()),
        "the leftover's sleep survived"
    );
    common::disown(old.id() as i32);
    assert!(dirs.iter().all(|d| !d.exists()), "cgroup left: {dirs:?}");
    // Now a's start goes through; and an id with nothing anywhere is still
    // no task.
    let out = common::output(a.cli().args(["run", "--id", "gone", "--", "true"]));
    assert!(out.status.success(), "{out:?}");
    let out = common::output(b.cli().args(["rm", "--force", "nothing"]));
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no task nothing in"),
        "{out:?}"
    );
}

/// `rm --force` of a missing task directory never touches a cgroup marked
/// by another root.
#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn rm_force_of_a_missing_task_dir_leaves_another_roots_cgroup() {
    if !root_or_skip("rm_force_of_a_missing_task_dir_leaves_another_roots_cgroup") {
        return;
    }
    let a = TestRoot::new();
    let _guard = ParentGuard(a.cgroup_parent.clone());
    std::fs::create_dir_all(a.path()).unwrap();
    let theirs = a.exec.start(&spec("shared", &["sleep", "1000"])).unwrap();
    let pid = theirs.pid().unwrap();
    let b = TestRoot::new();
    let out = common::output(
        Command::new(common::shim())
            .arg("--root")
            .arg(b.path())
            .arg("--cgroup-parent")
            .arg(&a.cgroup_parent)
            .args(["rm", "--force", "shared"]),
    );
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another root"),
        "{out:?}"
    );
    assert!(alive(pid));
    assert_eq!(theirs.state().unwrap().status, Status::Running);
}
