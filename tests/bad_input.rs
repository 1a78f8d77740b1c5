//! Bad input gets a clear, typed error and loses nothing.

use std::fs;
use std::process::Command;

use nomad_shim::state::StateError;
use nomad_shim::{Error, Identity, Status, TaskSpec};

use crate::common::{self, root_or_skip, TestRoot};

const BAD_IDS: &[&str] = &["..", "a/b", "", "a\0b", "-rf", "new\nline", "../../etc"];

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn invalid_ids_are_refused_by_start_open_and_the_cli() {
    if !root_or_skip("invalid_ids_are_refused_by_start_open_and_the_cli") {
        return;
    }
    let root = TestRoot::new();
    let long = "x".repeat(200);
    for id in BAD_IDS.iter().copied().chain([long.as_str()]) {
        let err = root
            .exec
            .start(TaskSpec::new("/bin/true").id(id))
            .unwrap_err();
        assert!(
            matches!(err, Error::State(StateError::InvalidId { .. })),
            "{id:?}: {err}"
        );
        assert!(err.to_string().starts_with("invalid task id"), "{err}");
        let err = root.exec.open(id).unwrap_err();
        assert!(
            matches!(err, Error::State(StateError::InvalidId { .. })),
            "{id:?}: {err}"
        );
        if !id.contains('\0') {
            let out = common::output(root.cli().args([
                "start",
                &format!("--id={id}"),
                "--",
                "/bin/true",
            ]));
            assert_eq!(out.status.code(), Some(125), "{id:?}: {out:?}");
            assert!(
                String::from_utf8_lossy(&out.stderr).starts_with("nomad-shim: invalid task id"),
                "{out:?}"
            );
        }
    }
    // Nothing was created, anywhere.
    assert!(root.exec.list().unwrap().is_empty());
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn an_existing_id_is_refused_and_the_task_is_untouched() {
    if !root_or_skip("an_existing_id_is_refused_and_the_task_is_untouched") {
        return;
    }
    let root = TestRoot::new();
    let mut first = root
        .exec
        .start(TaskSpec::new("/bin/sleep").arg("1000").id("web.1"))
        .unwrap();
    let before = fs::read(first.dir().join("state.json")).unwrap();
    let err = root
        .exec
        .start(TaskSpec::new("/bin/true").id("web.1"))
        .unwrap_err();
    assert!(
        matches!(err, Error::State(StateError::Exists { .. })),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!("task web.1 already exists ({})", first.dir().display())
    );
    assert_eq!(fs::read(first.dir().join("state.json")).unwrap(), before);
    assert_eq!(first.state().unwrap().status, Status::Running);
    first.force_stop().unwrap();
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_missing_program_is_a_start_error_not_an_exit_127() {
    if !root_or_skip("a_missing_program_is_a_start_error_not_an_exit_127") {
        return;
    }
    let root = TestRoot::new();
    for prog in ["/usr/bin/nope", "no-such-program-anywhere"] {
        let err = root.exec.start(TaskSpec::new(prog).id("m")).unwrap_err();
        match &err {
            Error::Start {
                step,
                errno,
                message,
                ..
            } => {
                assert_eq!(*step, nomad_shim::step::Step::Exec);
                assert_eq!(*errno, Some(libc::ENOENT));
                assert_eq!(message, &format!("exec {prog}: No such file or directory"));
            }
            other => panic!("{prog}: expected a start error, got {other}"),
        }
        assert!(err.is_not_found());
        // Nothing is left behind: the id is free again.
        assert!(root.exec.list().unwrap().is_empty());
    }
    let out = common::output(root.cli().args(["run", "--id", "m", "--", "/usr/bin/nope"]));
    assert_eq!(out.status.code(), Some(127));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "nomad-shim: start m: exec /usr/bin/nope: No such file or directory\n"
    );
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_non_executable_file_is_a_start_error() {
    if !root_or_skip("a_non_executable_file_is_a_start_error") {
        return;
    }
    let root = TestRoot::new();
    let file = root.path().with_file_name("data.txt");
    fs::write(&file, "not a program").unwrap();
    let err = root
        .exec
        .start(&TaskSpec::new(file.to_str().unwrap()))
        .unwrap_err();
    assert!(err.is_not_executable(), "{err}");
    assert!(
        err.to_string()
            .ends_with(&format!("exec {}: Permission denied", file.display())),
        "{err}"
    );
    let out = common::output(root.cli().args(["run", "--", file.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    // A bad working directory names the directory.
    let err = root
        .exec
        .start(TaskSpec::new("/bin/true").cwd("/no/such/dir"))
        .unwrap_err();
    assert_eq!(
        err.to_string().split_once(": ").unwrap().1,
        "chdir /no/such/dir: No such file or directory"
    );
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_root_that_is_not_writable_is_a_clear_error() {
    if !root_or_skip("a_root_that_is_not_writable_is_a_clear_error") {
        return;
    }
    let root = TestRoot::new();
    let ro = root.path().with_file_name("ro");
    fs::create_dir_all(&ro).unwrap();
    // A read-only mount in a private mount namespace of a child: nothing
    // to clean up in the host's mount table.
    let script = format!(
        "mount -t tmpfs -o ro tmpfs {ro} && exec {shim} --root {ro}/root start -- /bin/true",
        ro = ro.display(),
        shim = common::shim().display()
    );
    let out = common::output(Command::new("unshare").args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ]));
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err,
        format!(
            "nomad-shim: create root directory {}/root: Read-only file system (os error 30)\n",
            ro.display()
        )
    );
}

/// Writes a copy of a real exited task's directory under another id, with
/// `state.json` replaced by what `mangle` makes of it.
fn broken_copy(
    root: &TestRoot,
    good_dir: &std::path::Path,
    id: &str,
    mangle: impl FnOnce(&std::path::Path),
) {
    let dir = root.path().join(id);
    fs::create_dir(&dir).unwrap();
    fs::copy(good_dir.join("spec.json"), dir.join("spec.json")).unwrap();
    mangle(&dir.join("state.json"));
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn broken_state_files_are_typed_errors_and_never_hide_the_others() {
    if !root_or_skip("broken_state_files_are_typed_errors_and_never_hide_the_others") {
        return;
    }
    let root = TestRoot::new();
    let mut good = root
        .exec
        .start(TaskSpec::new("/bin/sh").args(["-c", "exit 3"]).id("good"))
        .unwrap();
    good.wait().unwrap();
    let good_state = fs::read(good.dir().join("state.json")).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&good_state).unwrap();
    let with = |id: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = json.clone();
        v["id"] = id.into();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    let me = std::process::id() as i64;
    type Mangle<'a> = Box<dyn Fn(&std::path::Path) + 'a>;
    let cases: Vec<(&str, Mangle<'_>)> = vec![
        ("empty", Box::new(|p| fs::write(p, b"").unwrap())),
        (
            "truncated",
            Box::new(|p| fs::write(p, &good_state[..good_state.len() / 2]).unwrap()),
        ),
        ("nul", Box::new(|p| fs::write(p, vec![0u8; 512]).unwrap())),
        (
            "huge",
            Box::new(|p| fs::File::create(p).unwrap().set_len(100 << 20).unwrap()),
        ),
        (
            "symlink",
            Box::new(|p| std::os::unix::fs::symlink("/etc/passwd", p).unwrap()),
        ),
        (
            "fifo",
            Box::new(|p| {
                nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap()
            }),
        ),
        (
            "v99",
            Box::new(move |p| fs::write(p, with("v99", &|v| v["version"] = 99.into())).unwrap()),
        ),
        (
            "pid0",
            Box::new(move |p| {
                fs::write(p, with("pid0", &|v| v["supervisor"]["pid"] = 0.into())).unwrap()
            }),
        ),
        (
            "pid1",
            Box::new(move |p| {
                fs::write(p, with("pid1", &|v| v["task"]["pid"] = 1.into())).unwrap()
            }),
        ),
        (
            "pidself",
            Box::new(move |p| {
                fs::write(p, with("pidself", &|v| v["task"]["pid"] = me.into())).unwrap()
            }),
        ),
    ];
    let names: Vec<&str> = cases.iter().map(|(n, _)| *n).collect();
    for (id, mangle) in cases {
        broken_copy(&root, good.dir(), id, mangle);
        let err = root.exec.open(id).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&format!("{id}/state.json")), "{id}: {msg}");
        let typed = match &err {
            Error::State(StateError::Parse { .. }) => ["empty", "truncated", "nul"].contains(&id),
            Error::State(StateError::TooLarge { .. }) => id == "huge",
            Error::State(StateError::NotRegular { .. }) => ["symlink", "fifo"].contains(&id),
            Error::State(StateError::UnknownVersion { version: 99, .. }) => id == "v99",
            Error::State(StateError::Invalid { .. }) => id.starts_with("pid"),
            _ => false,
        };
        assert!(typed, "{id}: unexpected error {err:?}");
    }
    // The symlink target was not touched, and the FIFO did not block.
    let list = root.exec.list().unwrap();
    assert_eq!(list.len(), names.len() + 1);
    let good_entry = list.iter().find(|(id, _)| id.as_str() == "good").unwrap();
    assert_eq!(
        good_entry.1.as_ref().unwrap().exit.as_ref().unwrap().code,
        Some(3)
    );
    assert_eq!(list.iter().filter(|(_, s)| s.is_err()).count(), names.len());
    // The CLI shows the good one and a line for each broken one. ("pidself"
    // names this test's pid: bogus for this process, but a fine pid for the
    // `ps` process, which is another.)
    let out = common::output(root.cli().arg("ps"));
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("good ") && l.contains("exited")),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.contains("broken")).count(),
        names.len() - 1,
        "{text}"
    );
    let out = common::output(root.cli().args(["ps", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).lines().count(),
        names.len() - 1,
        "{out:?}"
    );
    // rm refuses a broken task without --force, removes it with.
    assert!(root.exec.remove("nul", false).is_err());
    root.exec.remove("nul", true).unwrap();
    assert!(!root.path().join("nul").exists());
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_lock_held_by_someone_else_is_reported() {
    if !root_or_skip("a_lock_held_by_someone_else_is_reported") {
        return;
    }
    let root = TestRoot::new();
    let mut t = root
        .exec
        .start(TaskSpec::new("/bin/true").id("src"))
        .unwrap();
    t.wait().unwrap();
    // A state that says running under a supervisor that is gone...
    let mut v: serde_json::Value =
        serde_json::from_slice(&fs::read(t.dir().join("state.json")).unwrap()).unwrap();
    v["id"] = "held".into();
    v["status"] = "running".into();
    v["exit"] = serde_json::Value::Null;
    v["finished_at"] = serde_json::Value::Null;
    v["supervisor"] = serde_json::to_value(Identity {
        pid: 2,
        start_time: 0,
    })
    .unwrap();
    let dir = root.path().join("held");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("state.json"), serde_json::to_vec(&v).unwrap()).unwrap();
    // ...and a lock held by another process.
    let lock = fs::File::create(dir.join("lock")).unwrap();
    lock.lock().unwrap();
    let err = root.exec.open("held").unwrap_err();
    assert!(
        matches!(
            err,
            Error::LockHeldByOther {
                supervisor_pid: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("held/lock is locked, but not by the task's supervisor"),
        "{err}"
    );
    // Once the lock is free, the same task is recognised as lost. (A child
    // forked by another test thread may share the lock's open file for a
    // moment, until its exec closes it.)
    drop(lock);
    assert!(common::eventually(
        std::time::Duration::from_secs(2),
        || root.exec.open("held").is_ok()
    ));
    assert_eq!(
        root.exec.open("held").unwrap().state().unwrap().status,
        Status::Lost
    );
}

/// Removes a cgroup the test made itself (killing what is in it), also
/// when the test fails.
struct CgroupGuard(nomad_shim::cgroup::TaskCgroup);

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        let _ = self.0.remove();
    }
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_tampered_cgroup_path_in_state_json_is_never_killed() {
    if !root_or_skip("a_tampered_cgroup_path_in_state_json_is_never_killed") {
        return;
    }
    use nomad_shim::cgroup::{CgroupRoot, Resources, TaskCgroup};
    let root = TestRoot::new();
    // A victim: a process in a cgroup that is not the task's.
    let cg_root = CgroupRoot::detect().unwrap();
    let (victim_cg, _) = TaskCgroup::create(
        &cg_root,
        &root.cgroup_parent,
        "victim",
        &Resources::default(),
        false,
    )
    .unwrap();
    let _victim_guard = CgroupGuard(victim_cg.clone());
    let mut victim = common::spawn(Command::new("/bin/sleep").arg("1000"));
    victim_cg.add_pid(victim.id() as i32).unwrap();
    // A task whose state says running under a dead supervisor, and names
    // the victim's cgroup as its own.
    let mut t = root
        .exec
        .start(TaskSpec::new("/bin/true").id("src"))
        .unwrap();
    t.wait().unwrap();
    let mut v: serde_json::Value =
        serde_json::from_slice(&fs::read(t.dir().join("state.json")).unwrap()).unwrap();
    v["status"] = "running".into();
    v["exit"] = serde_json::Value::Null;
    v["supervisor"] = serde_json::to_value(Identity {
        pid: 2,
        start_time: 0,
    })
    .unwrap();
    v["cgroup"] = serde_json::to_value(victim_cg.paths()).unwrap();
    let mut spec: serde_json::Value =
        serde_json::from_slice(&fs::read(t.dir().join("spec.json")).unwrap()).unwrap();
    // Two forgeries: another id's cgroup; and the victim's own name, under
    // a parent the task's spec did not ask for.
    for (id, parent) in [
        ("tampered", root.cgroup_parent.as_str()),
        ("victim", "some-other-parent"),
    ] {
        v["id"] = id.into();
        spec["id"] = id.into();
        spec["cgroup_parent"] = parent.into();
        let dir = root.path().join(id);
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("spec.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
        fs::write(dir.join("state.json"), serde_json::to_vec(&v).unwrap()).unwrap();
        let state = root.exec.open(id).unwrap().state().unwrap();
        assert_eq!(state.status, Status::Lost);
        let reason = state.exit.unwrap().error.unwrap();
        assert!(
            reason.contains(&format!(
                "a task's cgroup must be {parent}/{id} under a cgroup root"
            )),
            "{reason}"
        );
    }
    // A third: `<parent>/<id>` exactly, but deeper than a hierarchy's root
    // (inside someone else's tree).
    let deep_parent = format!("{}/nomad-shim", root.cgroup_parent);
    let (deep_cg, _) =
        TaskCgroup::create(&cg_root, &deep_parent, "deep", &Resources::default(), false).unwrap();
    let _deep_guard = CgroupGuard(deep_cg.clone());
    deep_cg.add_pid(victim.id() as i32).unwrap();
    v["id"] = "deep".into();
    v["cgroup"] = serde_json::to_value(deep_cg.paths()).unwrap();
    spec["id"] = "deep".into();
    spec["cgroup_parent"] = "nomad-shim".into();
    let dir = root.path().join("deep");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("spec.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
    fs::write(dir.join("state.json"), serde_json::to_vec(&v).unwrap()).unwrap();
    let reason = root
        .exec
        .open("deep")
        .unwrap()
        .state()
        .unwrap()
        .exit
        .unwrap()
        .error
        .unwrap();
    assert!(
        reason.contains("a task's cgroup must be nomad-shim/deep under a cgroup root"),
        "{reason}"
    );
    assert_eq!(deep_cg.pids().unwrap(), vec![victim.id() as i32]);
    victim_cg.add_pid(victim.id() as i32).unwrap();
    deep_cg.remove().unwrap();
    deep_cg.remove_parents_if_empty().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(common::alive(victim.id() as i32), "the victim was killed");
    assert_eq!(victim_cg.pids().unwrap(), vec![victim.id() as i32]);
    victim.kill().unwrap();
    victim.wait().unwrap();
    common::disown(victim.id() as i32);
    victim_cg.remove().unwrap();
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_fifo_in_place_of_spec_json_does_not_hang_ps() {
    if !root_or_skip("a_fifo_in_place_of_spec_json_does_not_hang_ps") {
        return;
    }
    let root = TestRoot::new();
    let mut t = root.exec.start(TaskSpec::new("/bin/true").id("f")).unwrap();
    t.wait().unwrap();
    fs::remove_file(t.dir().join("spec.json")).unwrap();
    nix::unistd::mkfifo(
        &t.dir().join("spec.json"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let out = common::output(root.cli().arg("ps"));
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("exited"),
        "{out:?}"
    );
}

/// Runs `script` under `sh` in a private mount namespace (nothing to clean
/// up in the host's mount table) with a tmpfs of `size` at `dir`.
fn in_small_tmpfs(dir: &std::path::Path, size: &str, script: &str) -> std::process::Output {
    fs::create_dir_all(dir).unwrap();
    let full = format!(
        "mount -t tmpfs -o size={size} tmpfs {} && {script}",
        dir.display()
    );
    common::output(Command::new("unshare").args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &full,
    ]))
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_full_disk_fails_a_start_clearly() {
    if !root_or_skip("a_full_disk_fails_a_start_clearly") {
        return;
    }
    let root = TestRoot::new();
    let d = root.path().with_file_name("full");
    let script = format!(
        "head -c 100M /dev/zero > {d}/fill 2>/dev/null; exec {shim} --root {d}/root --cgroup-parent {cg} start -- /bin/true",
        d = d.display(),
        shim = common::shim().display(),
        cg = root.cgroup_parent
    );
    let out = in_small_tmpfs(&d, "64k", &script);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("No space left on device") && err.contains(&d.display().to_string()),
        "{err}"
    );
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_task_that_fills_the_disk_still_has_its_exact_exit_recorded() {
    if !root_or_skip("a_task_that_fills_the_disk_still_has_its_exact_exit_recorded") {
        return;
    }
    let root = TestRoot::new();
    let d = root.path().with_file_name("filling");
    // The task writes 4 MiB of output into a 512 KiB filesystem, then
    // exits 7; the exit must still be recorded, exactly.
    let script = format!(
        "{shim} --root {d}/root --cgroup-parent {cg} run --id t -- sh -c 'head -c 4M /dev/zero; exit 7' >/dev/null; echo rc=$?; {shim} --root {d}/root inspect t --json",
        d = d.display(),
        shim = common::shim().display(),
        cg = root.cgroup_parent
    );
    let out = in_small_tmpfs(&d, "512k", &script);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rc=7"), "{out:?}");
    let json = &text[text.find('{').expect("inspect printed the state")..];
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["status"], "exited", "{v}");
    assert_eq!(v["exit"]["code"], 7, "{v}");
}

/// Regression (issue 10 third check): `--user 4294967295` ran the task as
/// root, since setresuid(2) reads (uid_t)-1 as "leave unchanged".
#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn the_id_minus_one_is_refused_not_run_as_root() {
    if !root_or_skip("the_id_minus_one_is_refused_not_run_as_root") {
        return;
    }
    let root = TestRoot::new();
    for args in [
        vec!["run", "--user", "4294967295", "--", "/usr/bin/id", "-u"],
        vec![
            "run",
            "--user",
            "65534",
            "--group",
            "4294967295",
            "--",
            "/usr/bin/id",
            "-u",
        ],
    ] {
        let out = common::output(root.cli().args(&args));
        assert_eq!(out.status.code(), Some(125), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "the task ran: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("4294967295"), "{err}");
    }
    // The library, with the ids set directly.
    let mut spec = nomad_shim::TaskSpec::new("/usr/bin/id");
    spec.isolation(nomad_shim::IsolationSpec {
        uid: Some(u32::MAX),
        gid: Some(u32::MAX),
        ..nomad_shim::IsolationSpec::default()
    });
    let e = root.exec.start(&spec).err();
    assert!(
        matches!(
            e,
            Some(nomad_shim::Error::Isolate(
                nomad_shim::IsolateError::InvalidId { .. }
            ))
        ),
        "{e:?}"
    );
}

/// Regression (issue 10 third check): `LogPolicy { max_files: u32::MAX }`
/// made each rotation attempt four billion renames, and the supervisor's
/// loop stopped answering.
#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn an_absurd_log_file_count_is_refused() {
    if !root_or_skip("an_absurd_log_file_count_is_refused") {
        return;
    }
    let root = TestRoot::new();
    let mut spec = nomad_shim::TaskSpec::new("/bin/true");
    spec.logs(nomad_shim::LogPolicy {
        max_files: u32::MAX,
        max_size: 1,
    });
    let e = root.exec.start(&spec).err();
    assert!(matches!(e, Some(nomad_shim::Error::Spec(_))), "{e:?}");
    let out = common::output(
        root.cli()
            .args(["run", "--log-max-files", "100000", "--", "true"]),
    );
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--log-max-files"),
        "{out:?}"
    );
}
