//! Issue 7 item 5: the shim's init as PID 1 of the task's pid namespace
//! (`supervisor/init.rs`): signals reach the program, orphans are reaped,
//! and the exit is the program's exact status. Real programs (sh, python3)
//! against the real kernel.

use std::fs;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nomad_shim::isolate::IsolationSpec;
use nomad_shim::{ExitRecord, Task, TaskExit, TaskSpec};

use crate::common::{self, root_or_skip, TestRoot};

const PYTHON: &str = "/usr/bin/python3";

/// `--ns pid` (the init is automatic), `--ns pid --no-init`, `--init` alone.
fn pid_ns() -> IsolationSpec {
    IsolationSpec {
        pid: true,
        ..IsolationSpec::default()
    }
}

fn pid_ns_no_init() -> IsolationSpec {
    IsolationSpec {
        pid: true,
        init: Some(false),
        ..IsolationSpec::default()
    }
}

fn init_alone() -> IsolationSpec {
    IsolationSpec {
        init: Some(true),
        ..IsolationSpec::default()
    }
}

fn sh(script: &str, iso: IsolationSpec) -> TaskSpec {
    let mut spec = TaskSpec::new("/bin/sh");
    spec.args(["-c", script]).isolation(iso);
    spec
}

fn start(root: &TestRoot, spec: &TaskSpec) -> Task {
    root.exec
        .start(spec)
        .unwrap_or_else(|e| panic!("start {:?}: {e}", spec.argv()))
}

fn record(exit: &TaskExit) -> &ExitRecord {
    exit.record()
        .unwrap_or_else(|| panic!("the supervisor did not record the exit: {exit:?}"))
}

fn stdout(task: &Task) -> String {
    fs::read_to_string(task.dir().join("stdout.log")).unwrap_or_default()
}

/// Waits until the task has printed `line` (it is set up: traps installed,
/// children forked, the server listening).
fn wait_for_line(task: &Task, line: &str) {
    assert!(
        common::eventually(Duration::from_secs(30), || stdout(task)
            .lines()
            .any(|l| l.contains(line))),
        "the task never printed {line:?}; stdout: {:?}, stderr: {:?}",
        stdout(task),
        fs::read_to_string(task.dir().join("stderr.log")).unwrap_or_default()
    );
}

/// The children of `pid`, each with its state letter (`Z`: a zombie).
fn children_of(pid: i32) -> Vec<(i32, char)> {
    let Ok(s) = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) else {
        return Vec::new();
    };
    s.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .map(|p| (p, common::proc_state(p).unwrap_or('?')))
        .collect()
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn stop_of_a_python_server_under_ns_pid_ends_it_by_its_sigterm_in_under_a_second() {
    if !root_or_skip(
        "stop_of_a_python_server_under_ns_pid_ends_it_by_its_sigterm_in_under_a_second",
    ) {
        return;
    }
    let root = TestRoot::new();
    let serve = |extra: &[&str], id: &str| {
        let out = common::output(
            root.cli()
                .args(["start", "--id", id, "--ns", "pid"])
                .args(extra)
                .args(["--env", "PYTHONUNBUFFERED=1", "--", PYTHON])
                .args(["-m", "http.server", "--bind", "127.0.0.1", "0"]),
        );
        assert!(out.status.success(), "start: {out:?}");
        let task = root.exec.open(id).unwrap();
        wait_for_line(&task, "Serving HTTP");
        let t0 = Instant::now();
        let out = common::output(root.cli().args(["stop", id]));
        let took = t0.elapsed();
        let exit = root.exec.open(id).unwrap().wait().unwrap();
        (out, took, exit)
    };

    // Under the default kill timeout (5 s): only the SIGTERM can end it in
    // time, and the program must see it.
    let (out, took, exit) = serve(&[], "web");
    let rec = record(&exit);
    assert_eq!(
        (rec.code, rec.signal),
        (None, Some(libc::SIGTERM)),
        "{rec:?} {out:?}"
    );
    assert!(
        took < common::scaled(Duration::from_secs(1)),
        "stop took {took:?}"
    );
    eprintln!("stop of python3 -m http.server under --ns pid: {took:?}");

    // Without the init the program is PID 1: the kernel drops the SIGTERM
    // and only the SIGKILL after the kill timeout ends it (what the init
    // fixes; this also shows the test above can fail).
    let (_, took, exit) = serve(&["--no-init", "--kill-timeout", "1s"], "web-no-init");
    assert_eq!(record(&exit).signal, Some(libc::SIGKILL), "{exit:?}");
    assert!(took >= Duration::from_secs(1), "stop took {took:?}");
}

/// Forks 100 children that each fork an orphan and exit, so that 100
/// orphans are re-parented to whoever reaps for the namespace; orphan 0
/// lives on (to show who adopted it), the others exit after 0.2 s. Then
/// the program sleeps without ever calling wait for strangers.
const ORPHANS: &str = r#"
import os, time
for i in range(100):
    pid = os.fork()
    if pid == 0:
        if os.fork() == 0:
            time.sleep(60 if i == 0 else 0.2)
            os._exit(0)
        os._exit(0)
    os.waitpid(pid, 0)
print("forked", flush=True)
time.sleep(60)
"#;

/// Starts [`ORPHANS`] and returns the task, the pid of its main process
/// (the init, or the program without one) and of the program.
fn orphans(root: &TestRoot, iso: IsolationSpec) -> (Task, i32, i32) {
    let iso_init = iso.wants_init();
    let mut spec = TaskSpec::new(PYTHON);
    spec.args(["-c", ORPHANS]).isolation(iso);
    let task = start(root, &spec);
    wait_for_line(&task, "forked");
    let main = task.pid().unwrap();
    // Under an init, the program is its oldest child (forked before any
    // orphan existed); orphan 0 runs the same python.
    let program = if iso_init {
        children_of(main)
            .into_iter()
            .map(|(p, _)| p)
            .min_by_key(|p| nomad_shim::identity::start_time(*p).unwrap_or(u64::MAX))
            .unwrap_or(main)
    } else {
        main
    };
    (task, main, program)
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_task_that_leaves_100_orphans_ends_with_no_zombie_left() {
    if !root_or_skip("a_task_that_leaves_100_orphans_ends_with_no_zombie_left") {
        return;
    }
    let root = TestRoot::new();
    for (what, iso) in [("--ns pid", pid_ns()), ("--init", init_alone())] {
        let (mut task, init, program) = orphans(&root, iso);
        assert_ne!(init, program, "{what}: the program is not under an init");
        // Every orphan came to the init, which reaps them as they exit:
        // at last only the program and the long-lived orphan are its
        // children, and neither is a zombie.
        let settled = common::eventually(Duration::from_secs(10), || {
            let kids = children_of(init);
            kids.len() == 2 && kids.iter().all(|(_, s)| *s != 'Z')
        });
        let kids = children_of(init);
        assert!(settled, "{what}: children of the init {init}: {kids:?}");
        assert!(kids.iter().any(|(p, _)| *p == program), "{kids:?}");
        assert!(
            children_of(program).is_empty(),
            "{what}: {program} kept children"
        );
        let exit = task.stop(None, None).unwrap();
        assert_eq!(
            record(&exit).signal,
            Some(libc::SIGTERM),
            "{what}: {exit:?}"
        );
        // The whole task is gone, orphan included.
        for (p, _) in kids {
            assert!(
                common::eventually(Duration::from_secs(5), || !common::alive(p)),
                "{what}: {p} survived the task"
            );
        }
    }

    // Without the init, the program is PID 1 and never waits for strangers:
    // the orphans stay zombies (what the init fixes).
    let (mut task, main, _) = orphans(&root, pid_ns_no_init());
    let zombies = common::eventually(Duration::from_secs(10), || {
        children_of(main).iter().filter(|(_, s)| *s == 'Z').count() >= 99
    });
    assert!(zombies, "children of PID 1: {:?}", children_of(main));
    task.force_stop().unwrap();
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn signals_reach_the_program_through_the_init_exactly_once() {
    if !root_or_skip("signals_reach_the_program_through_the_init_exactly_once") {
        return;
    }
    let root = TestRoot::new();
    let trap_usr1 = "trap 'exit 42' USR1; echo ready; while :; do sleep 0.05; done";

    // The CLI: `kill ID SIGUSR1`.
    let out = common::output(root.cli().args([
        "start", "--id", "usr1", "--ns", "pid", "--", "/bin/sh", "-c", trap_usr1,
    ]));
    assert!(out.status.success(), "{out:?}");
    let mut task = root.exec.open("usr1").unwrap();
    wait_for_line(&task, "ready");
    let out = common::output(root.cli().args(["kill", "usr1", "SIGUSR1"]));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(task.wait().unwrap().code(), Some(42));

    // The library: Task::signal.
    let mut task = start(&root, &sh(trap_usr1, pid_ns()));
    wait_for_line(&task, "ready");
    task.signal(Signal::SIGUSR1).unwrap();
    assert_eq!(task.wait().unwrap().code(), Some(42));

    // A stop's signal arrives once, not twice (the supervisor signals the
    // init, which forwards it): a program that traps SIGTERM and keeps
    // running logs one line, then dies by the SIGKILL after the timeout.
    let mut task = start(
        &root,
        &sh(
            "trap 'echo term' TERM; echo ready; while :; do sleep 0.05; done",
            pid_ns(),
        ),
    );
    wait_for_line(&task, "ready");
    let exit = task
        .stop(
            Some(Signal::SIGTERM),
            Some(common::scaled(Duration::from_millis(500))),
        )
        .unwrap();
    assert_eq!(record(&exit).signal, Some(libc::SIGKILL), "{exit:?}");
    let terms = stdout(&task).lines().filter(|l| *l == "term").count();
    assert_eq!(terms, 1, "stdout: {:?}", stdout(&task));
}

/// (code, signal, core dumped) of `sh -c script` with `iso`, in `cwd`.
fn status_of(
    root: &TestRoot,
    script: &str,
    iso: IsolationSpec,
    cwd: &std::path::Path,
) -> (Option<i32>, Option<i32>, Option<bool>) {
    let mut spec = sh(script, iso);
    spec.cwd(cwd);
    let exit = start(root, &spec).wait().unwrap();
    let r = record(&exit);
    (r.code, r.signal, r.core_dumped)
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn the_exit_through_the_init_is_the_programs_exact_status() {
    if !root_or_skip("the_exit_through_the_init_is_the_programs_exact_status") {
        return;
    }
    let root = TestRoot::new();
    // Core files land in the working directory (core_pattern "core").
    let cwd = tempfile::tempdir().unwrap();
    let core_dumps =
        fs::read_to_string("/proc/sys/kernel/core_pattern").is_ok_and(|p| p.trim() == "core");
    for (script, want) in [
        ("exit 3", (Some(3), None, Some(false))),
        ("kill -TERM $$", (None, Some(libc::SIGTERM), Some(false))),
        ("kill -9 $$", (None, Some(libc::SIGKILL), Some(false))),
        (
            "ulimit -c unlimited; kill -SEGV $$",
            (None, Some(libc::SIGSEGV), Some(core_dumps)),
        ),
    ] {
        let with_init = status_of(&root, script, pid_ns(), cwd.path());
        let without = status_of(&root, script, IsolationSpec::default(), cwd.path());
        assert_eq!(with_init, want, "{script} under the init");
        assert_eq!(without, want, "{script} without a pid namespace");
        let alone = status_of(&root, script, init_alone(), cwd.path());
        assert_eq!(alone, want, "{script} under --init alone");
    }

    // OOM: still recorded (the cgroup's counter), the program's SIGKILL.
    let mut spec = TaskSpec::new(PYTHON);
    spec.args(["-c", "b = bytearray(200 << 20); print('survived')"])
        .isolation(pid_ns())
        .resources(nomad_shim::cgroup::Resources {
            memory_max: Some(64 << 20),
            ..Default::default()
        });
    let exit = start(&root, &spec).wait().unwrap();
    let r = record(&exit);
    assert_eq!(
        (r.signal, r.oom_killed),
        (Some(libc::SIGKILL), Some(true)),
        "{r:?}"
    );

    // rusage: wait4 of the init includes the program it waited for
    // (getrusage(2) RUSAGE_CHILDREN): 100 MiB touched and a burst of CPU.
    let mut spec = TaskSpec::new(PYTHON);
    spec.args([
        "-c",
        "b = bytearray(100 << 20)\nn = 0\nfor i in range(3_000_000): n += i",
    ])
    .isolation(pid_ns());
    let exit = start(&root, &spec).wait().unwrap();
    let r = record(&exit);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.max_rss_kib.unwrap() >= 100 << 10, "{r:?}");
    assert!(r.user_cpu_ns.unwrap() >= 50_000_000, "{r:?}");
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_program_that_cannot_be_executed_fails_the_start_as_without_the_init() {
    if !root_or_skip("a_program_that_cannot_be_executed_fails_the_start_as_without_the_init") {
        return;
    }
    let root = TestRoot::new();
    // A file without any execute bit: EACCES even for root (execve(2)).
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    fs::write(&plain, "#!/bin/sh\n").unwrap();
    let plain = plain.to_str().unwrap();
    let denied = format!("exec {plain}: Permission denied");
    for (program, code, message) in [
        (
            "/nonexistent/nope",
            127,
            "exec /nonexistent/nope: No such file or directory",
        ),
        (plain, 126, denied.as_str()),
    ] {
        for ns in [&["--ns", "pid"][..], &["--init"], &[]] {
            let out = common::output(root.cli().arg("run").args(ns).args(["--", program]));
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(code), "{ns:?} {program}: {err}");
            assert!(err.trim_end().ends_with(message), "{ns:?}: {err}");
        }
    }
    // Nothing is left of the failed starts.
    assert!(root.exec.list().unwrap().is_empty());
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn no_init_keeps_the_program_as_pid_1_and_init_alone_is_its_parent() {
    if !root_or_skip("no_init_keeps_the_program_as_pid_1_and_init_alone_is_its_parent") {
        return;
    }
    let root = TestRoot::new();
    let run = |args: &[&str]| {
        let out = common::output(root.cli().arg("run").args(args).args([
            "--",
            "/bin/sh",
            "-c",
            "echo $$ $PPID",
        ]));
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    assert_eq!(run(&["--ns", "pid", "--no-init"]), "1 0");
    assert_eq!(run(&["--ns", "pid"]), "2 1");
    // --init alone: the program is the init's child, in the host's pids.
    let mut task = start(&root, &sh("echo $$ $PPID; sleep 60", init_alone()));
    wait_for_line(&task, " ");
    let init = task.pid().unwrap();
    let line = stdout(&task);
    let (me, parent) = line.trim().split_once(' ').unwrap();
    assert_eq!(parent.parse::<i32>().unwrap(), init, "{line}");
    assert_ne!(me.parse::<i32>().unwrap(), init, "{line}");
    task.force_stop().unwrap();
    // --init and --no-init together are refused, naming the option.
    let out = common::output(
        root.cli()
            .args(["run", "--init", "--no-init", "--", "true"]),
    );
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--no-init"),
        "{out:?}"
    );
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn the_init_holds_no_view_of_the_host_and_runs_with_the_tasks_credentials() {
    if !root_or_skip("the_init_holds_no_view_of_the_host_and_runs_with_the_tasks_credentials") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let root = TestRoot::new();
    let task_dir = root.path().with_file_name("task-init");
    let mut spec = TaskSpec::new("/bin/sh");
    spec.args([
        "-c",
        "echo $$; ls /proc/1/root/ 2>&1 | head -1; echo ready; sleep 60",
    ])
    .user("nobody")
    .isolation(IsolationSpec {
        chroot: true,
        task_dir: Some(task_dir.clone()),
        pid: true,
        ..IsolationSpec::default()
    });
    let mut task = start(&root, &spec);
    wait_for_line(&task, "ready");
    let init = task.pid().unwrap();
    // Seen from the host: the init's root and cwd are the task dir (it
    // pivoted before forking the program), never the host's /. (readlink
    // shows "/" across mount namespaces: compare the inodes.)
    let id = |p: &str| fs::metadata(p).map(|m| (m.dev(), m.ino())).unwrap();
    let task_dir = task_dir.to_str().unwrap();
    for link in ["root", "cwd"] {
        let seen = id(&format!("/proc/{init}/{link}/"));
        assert_eq!(seen, id(task_dir), "/proc/{init}/{link}");
        assert_ne!(seen, id("/"), "/proc/{init}/{link} is the host's root");
    }
    // It runs with the task's credentials, and is not dumpable: its /proc
    // files belong to root, not to the uid it runs as (proc(5)).
    let status = fs::read_to_string(format!("/proc/{init}/status")).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("{k} in {status}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(field("Uid:"), ["65534"; 4], "{status}");
    assert_eq!(field("Gid:"), ["65534"; 4], "{status}");
    assert_eq!(field("CapEff:"), ["0000000000000000"], "{status}");
    assert_eq!(field("NoNewPrivs:"), ["1"], "{status}");
    let mem = fs::metadata(format!("/proc/{init}/mem")).unwrap();
    assert_eq!(mem.uid(), 0, "the init is dumpable");
    // Seen from the task: the program is not PID 1, and PID 1's root is
    // closed to it.
    let out = stdout(&task);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("2"), "{out}");
    let ls = lines.next().unwrap_or_default();
    assert!(ls.contains("Permission denied"), "ls /proc/1/root/: {ls}");
    task.force_stop().unwrap();
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.lines().any(|l| l.contains(task_dir)),
        "mounts left in the host's table"
    );
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn sigstop_and_sigcont_stop_and_resume_the_program_under_the_init() {
    if !root_or_skip("sigstop_and_sigcont_stop_and_resume_the_program_under_the_init") {
        return;
    }
    let root = TestRoot::new();
    let mut task = start(&root, &sh("echo ready; exec sleep 60", pid_ns()));
    wait_for_line(&task, "ready");
    let init = task.pid().unwrap();
    let program = children_of(init)[0].0;
    // SIGSTOP cannot be caught, so the init cannot forward it: it goes to
    // the process group, and both stop.
    task.signal(Signal::SIGSTOP).unwrap();
    assert!(
        common::eventually(Duration::from_secs(5), || {
            common::proc_state(program) == Some('T') && common::proc_state(init) == Some('T')
        }),
        "program {:?}, init {:?}",
        common::proc_state(program),
        common::proc_state(init)
    );
    // SIGCONT goes to the same process group: init and program resume.
    task.signal(Signal::SIGCONT).unwrap();
    assert!(
        common::eventually(Duration::from_secs(5), || {
            common::proc_state(program) == Some('S') && common::proc_state(init) == Some('S')
        }),
        "program {:?}, init {:?}",
        common::proc_state(program),
        common::proc_state(init)
    );
    let exit = task.stop(None, None).unwrap();
    assert_eq!(record(&exit).signal, Some(libc::SIGTERM), "{exit:?}");
}

/// Regression: SIGSTOP went to the process group but SIGCONT only to the
/// program (through the init), so a shell's children stayed stopped and
/// its loop never printed again.
#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn sigcont_resumes_the_children_of_the_program_under_the_init() {
    if !root_or_skip("sigcont_resumes_the_children_of_the_program_under_the_init") {
        return;
    }
    let root = TestRoot::new();
    for (name, iso) in [("--ns pid", pid_ns()), ("--init", init_alone())] {
        let mut task = start(
            &root,
            &sh("while :; do echo tick; sleep 0.1; done", iso.clone()),
        );
        let ticks = |task: &Task| stdout(task).lines().filter(|l| *l == "tick").count();
        assert!(
            common::eventually(Duration::from_secs(30), || ticks(&task) >= 2),
            "{name}: the loop never ticked: {:?}",
            stdout(&task)
        );
        let init = task.pid().unwrap();
        task.signal(Signal::SIGSTOP).unwrap();
        // Every process of the group stops: the init, the shell and (once
        // it runs) its sleep. A sleep that was exiting as the SIGSTOP came
        // is a zombie until the shell resumes and reaps it: dead, nothing
        // to stop. A shell caught in vfork(2) (dash forks its commands so)
        // waits in `D` for a child stopped before its exec, and cannot run
        // either (seen on a loaded machine).
        assert!(
            common::eventually(Duration::from_secs(5), || {
                common::proc_state(init) == Some('T')
                    && children_of(init).iter().all(|&(p, st)| {
                        let kids = children_of(p);
                        (st == 'T' || (st == 'D' && kids.iter().any(|&(_, s)| s == 'T')))
                            && kids.iter().all(|&(_, s)| s == 'T' || s == 'Z')
                    })
            }),
            "{name}: not stopped: init {:?}, children {:?}",
            common::proc_state(init),
            children_of(init)
        );
        let stopped_at = ticks(&task);
        task.signal(Signal::SIGCONT).unwrap();
        assert!(
            common::eventually(Duration::from_secs(10), || ticks(&task) >= stopped_at + 3),
            "{name}: the loop did not resume after SIGCONT ({stopped_at} ticks, then {}); \
             init {:?}, children {:?}",
            ticks(&task),
            common::proc_state(init),
            children_of(init)
                .iter()
                .map(|&(p, s)| (p, s, children_of(p)))
                .collect::<Vec<_>>()
        );
        let exit = task.stop(None, None).unwrap();
        assert!(record(&exit).signal.is_some(), "{name}: {exit:?}");
    }
}
