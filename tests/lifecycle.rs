//! Start, exit codes, signals, stop: the task's life through the library.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nomad_shim::{Status, TaskExit, TaskSpec};

use crate::common::{self, root_or_skip, TestRoot};

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn exit_codes_are_reported_exactly() {
    if !root_or_skip("exit_codes_are_reported_exactly") {
        return;
    }
    let root = TestRoot::new();
    for code in [0, 1, 7, 255] {
        let mut task = root.sh(&format!("exit {code}"));
        let exit = task.wait().unwrap();
        assert_eq!(exit.code(), Some(code), "{exit:?}");
        assert_eq!(exit.signal(), None);
        let state = root.exec.open(task.id().as_str()).unwrap().state().unwrap();
        assert_eq!(state.status, Status::Exited);
        assert_eq!(state.exit.unwrap().code, Some(code));
    }
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn death_by_signal_is_reported_exactly() {
    if !root_or_skip("death_by_signal_is_reported_exactly") {
        return;
    }
    let root = TestRoot::new();
    for sig in [Signal::SIGTERM, Signal::SIGKILL, Signal::SIGSEGV] {
        // The shell kills itself: no outside help, so nothing but the
        // signal can explain the exit.
        let mut task = root.sh(&format!(
            "kill -{} $$",
            sig.as_str().trim_start_matches("SIG")
        ));
        let exit = task.wait().unwrap();
        assert_eq!(exit.signal(), Some(sig as i32), "{sig}: {exit:?}");
        assert_eq!(exit.code(), None, "{sig}: {exit:?}");
        let rec = exit.record().unwrap();
        assert_eq!(rec.shell_code(), Some(128 + sig as i32));
    }
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn exit_record_has_rusage_and_timestamps() {
    if !root_or_skip("exit_record_has_rusage_and_timestamps") {
        return;
    }
    let root = TestRoot::new();
    // Burn a little CPU and memory so that the numbers cannot be zero.
    let mut task = root.sh("i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; x=$(head -c 3000000 /dev/zero | tr '\\0' a); exit 3");
    let TaskExit::Exited(rec) = task.wait().unwrap() else {
        panic!("lost")
    };
    assert_eq!(rec.code, Some(3));
    assert!(
        rec.user_cpu_ns.unwrap() + rec.system_cpu_ns.unwrap() > 0,
        "{rec:?}"
    );
    assert!(rec.max_rss_kib.unwrap() > 500, "{rec:?}");
    assert_eq!(rec.core_dumped, Some(false));
    let state = task.state().unwrap();
    let (created, started, finished) = (
        state.created_at,
        state.started_at.unwrap(),
        state.finished_at.unwrap(),
    );
    assert!(
        created <= started && started <= finished,
        "{created} {started} {finished}"
    );
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn output_goes_to_the_log_files() {
    if !root_or_skip("output_goes_to_the_log_files") {
        return;
    }
    let root = TestRoot::new();
    let mut task = root.sh("echo to-out; echo to-err >&2");
    task.wait().unwrap();
    assert_eq!(
        std::fs::read_to_string(task.dir().join("stdout.log")).unwrap(),
        "to-out\n"
    );
    assert_eq!(
        std::fs::read_to_string(task.dir().join("stderr.log")).unwrap(),
        "to-err\n"
    );
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn logs_rotate_at_the_size_limit() {
    if !root_or_skip("logs_rotate_at_the_size_limit") {
        return;
    }
    let root = TestRoot::new();
    let mut spec = TaskSpec::new("/bin/sh");
    spec.args(["-c", "head -c 10000 /dev/zero"])
        .logs(nomad_shim::LogPolicy {
            max_files: 3,
            max_size: 4096,
        });
    let mut task = root.exec.start(&spec).unwrap();
    task.wait().unwrap();
    let size = |n: &str| std::fs::metadata(task.dir().join(n)).map(|m| m.len()).ok();
    assert_eq!(size("stdout.log.2"), Some(4096));
    assert_eq!(size("stdout.log.1"), Some(4096));
    assert_eq!(size("stdout.log"), Some(10000 - 8192));
    assert_eq!(size("stdout.log.3"), None);
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn shutdown_escalates_to_sigkill_after_the_timeout() {
    if !root_or_skip("shutdown_escalates_to_sigkill_after_the_timeout") {
        return;
    }
    let root = TestRoot::new();
    let mut spec = TaskSpec::new("/bin/sh");
    // Ignores SIGTERM, and says so once the trap is set.
    spec.args(["-c", "trap '' TERM; echo ready; while :; do sleep 1; done"])
        .kill_timeout(Duration::from_millis(700));
    let mut task = root.exec.start(&spec).unwrap();
    let log = task.dir().join("stdout.log");
    assert!(common::eventually(
        Duration::from_secs(5),
        || std::fs::read_to_string(&log).unwrap_or_default() == "ready\n"
    ));
    let t0 = Instant::now();
    let exit = task.shutdown().unwrap();
    let took = t0.elapsed();
    assert_eq!(exit.signal(), Some(libc::SIGKILL), "{exit:?}");
    assert!(
        took >= Duration::from_millis(700),
        "escalated after {took:?}, before the timeout"
    );
    assert!(
        took < common::scaled(Duration::from_secs(5)),
        "escalation took {took:?}"
    );
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn graceful_stop_with_the_kill_signal() {
    if !root_or_skip("graceful_stop_with_the_kill_signal") {
        return;
    }
    let root = TestRoot::new();
    let mut spec = TaskSpec::new("/bin/sh");
    spec.args([
        "-c",
        "trap 'exit 42' INT; echo ready; while :; do sleep 0.05; done",
    ])
    .kill_signal(Signal::SIGINT);
    let mut task = root.exec.start(&spec).unwrap();
    let log = task.dir().join("stdout.log");
    assert!(common::eventually(
        Duration::from_secs(5),
        || std::fs::read_to_string(&log).unwrap_or_default() == "ready\n"
    ));
    assert_eq!(task.shutdown().unwrap().code(), Some(42));
    // Stopping an ended task returns its exit again.
    assert_eq!(task.shutdown().unwrap().code(), Some(42));
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn signal_reaches_the_task_and_try_wait_does_not_block() {
    if !root_or_skip("signal_reaches_the_task_and_try_wait_does_not_block") {
        return;
    }
    let root = TestRoot::new();
    let mut task = root.sh("trap 'exit 5' USR1; echo ready; while :; do sleep 0.05; done");
    let log = task.dir().join("stdout.log");
    assert!(common::eventually(
        Duration::from_secs(5),
        || std::fs::read_to_string(&log).unwrap_or_default() == "ready\n"
    ));
    let t0 = Instant::now();
    assert_eq!(task.try_wait().unwrap(), None);
    assert!(t0.elapsed() < common::scaled(Duration::from_millis(100)));
    task.signal(Signal::SIGUSR1).unwrap();
    assert_eq!(task.wait().unwrap().code(), Some(5));
    assert!(matches!(
        task.signal(Signal::SIGUSR1),
        Err(nomad_shim::Error::NotRunning {
            status: Status::Exited,
            ..
        })
    ));
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn force_stop_kills_the_whole_process_group() {
    if !root_or_skip("force_stop_kills_the_whole_process_group") {
        return;
    }
    let root = TestRoot::new();
    let mut task = root.sh("sleep 1000 & sleep 1000 & echo ready; wait");
    let log = task.dir().join("stdout.log");
    assert!(common::eventually(
        Duration::from_secs(5),
        || std::fs::read_to_string(&log).unwrap_or_default() == "ready\n"
    ));
    let sid = task.pid().unwrap();
    assert_eq!(common::session_members(sid).len(), 3);
    assert_eq!(task.force_stop().unwrap().signal(), Some(libc::SIGKILL));
    assert!(common::eventually(Duration::from_secs(2), || {
        common::session_members(sid).is_empty()
    }));
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn the_main_process_exit_ends_its_group_and_the_supervisor() {
    if !root_or_skip("the_main_process_exit_ends_its_group_and_the_supervisor") {
        return;
    }
    let root = TestRoot::new();
    // The background sleep keeps the log pipe open; the supervisor must not
    // wait for it: the group is killed when the main process exits.
    let mut task = root.sh("sleep 1000 & exit 4");
    let sid = task.pid().unwrap();
    let t0 = Instant::now();
    assert_eq!(task.wait().unwrap().code(), Some(4));
    assert!(
        t0.elapsed() < common::scaled(Duration::from_secs(2)),
        "{:?}",
        t0.elapsed()
    );
    assert!(common::eventually(Duration::from_secs(2), || {
        common::session_members(sid).is_empty()
    }));
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn argv_and_env_arrive_verbatim() {
    if !root_or_skip("argv_and_env_arrive_verbatim") {
        return;
    }
    let root = TestRoot::new();
    let nasty = [
        "a b",
        "'q'",
        "\"dq\"",
        "$(touch /tmp/pwned)",
        "x; rm -rf /",
        "new\nline",
        "",
        "*",
    ];
    let mut spec = TaskSpec::new("/usr/bin/env");
    spec.env("NASTY", "v a l; $(echo no)\n'\"")
        .env("PLAIN", "1");
    let mut task = root.exec.start(&spec).unwrap();
    task.wait().unwrap();
    let env = std::fs::read_to_string(task.dir().join("stdout.log")).unwrap();
    assert!(env.contains("NASTY=v a l; $(echo no)\n'\"\n"), "{env:?}");
    // Nothing of the agent's environment leaks in; PATH gets a default.
    assert!(!env.contains("HOME="), "{env:?}");
    assert!(env.contains("PATH=/usr/local/sbin:"), "{env:?}");

    let mut spec = TaskSpec::new("/usr/bin/printf");
    spec.arg("[%s]").args(nasty);
    let mut task = root.exec.start(&spec).unwrap();
    task.wait().unwrap();
    let out = std::fs::read_to_string(task.dir().join("stdout.log")).unwrap();
    let expected: String = nasty.iter().map(|a| format!("[{a}]")).collect();
    assert_eq!(out, expected);
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_bare_program_name_is_found_in_path() {
    if !root_or_skip("a_bare_program_name_is_found_in_path") {
        return;
    }
    let root = TestRoot::new();
    let mut spec = TaskSpec::new("true");
    let mut task = root.exec.start(&spec).unwrap();
    assert!(task.wait().unwrap().success());
    spec = TaskSpec::new("sh");
    spec.args(["-c", "pwd; exit 2"]).cwd("/usr");
    let mut task = root.exec.start(&spec).unwrap();
    assert_eq!(task.wait().unwrap().code(), Some(2));
    assert_eq!(
        std::fs::read_to_string(task.dir().join("stdout.log")).unwrap(),
        "/usr\n"
    );
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn agent_fds_without_cloexec_do_not_reach_the_task() {
    if !root_or_skip("agent_fds_without_cloexec_do_not_reach_the_task") {
        return;
    }
    use nix::fcntl::{open, OFlag};
    let root = TestRoot::new();
    // Fds the agent opened without O_CLOEXEC: inherited by anything it spawns.
    let leaky: Vec<_> = (0..3)
        .map(|_| {
            open(
                "/etc/hostname",
                OFlag::O_RDONLY,
                nix::sys::stat::Mode::empty(),
            )
            .unwrap()
        })
        .collect();
    let mut task = root
        .exec
        .start(TaskSpec::new("/bin/ls").args(["-l", "/proc/self/fd/"]))
        .unwrap();
    task.wait().unwrap();
    let fds = std::fs::read_to_string(task.dir().join("stdout.log")).unwrap();
    assert!(!fds.contains("/etc/hostname"), "{fds}");
    // 0, 1, 2, and the directory ls opened itself.
    assert_eq!(
        fds.lines().filter(|l| l.contains(" -> ")).count(),
        4,
        "{fds}"
    );
    drop(leaky);
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn attach_nudges_on_output_and_closes_once_the_exit_is_durable() {
    if !root_or_skip("attach_nudges_on_output_and_closes_once_the_exit_is_durable") {
        return;
    }
    use std::io::Read;
    let root = TestRoot::new();
    let marker = root.path().with_file_name("go");
    let script = format!(
        "while [ ! -e {} ]; do sleep 0.02; done; echo one; sleep 0.1; echo two; exit 6",
        marker.display()
    );
    let mut task = root.sh(&script);
    let mut follower = task.attach().unwrap();
    std::fs::write(&marker, b"").unwrap();
    let mut nudges = 0;
    let mut buf = [0u8; 64];
    loop {
        match follower.read(&mut buf).unwrap() {
            0 => break,
            n => {
                assert!(buf[..n].iter().all(|&b| b == b'\n'));
                nudges += n;
            }
        }
    }
    assert!(nudges >= 2, "{nudges} nudges for two writes");
    // EOF comes after the final state is durable: it is there already.
    let state = task.state().unwrap();
    assert_eq!(state.status, Status::Exited);
    assert_eq!(state.exit.unwrap().code, Some(6));
    assert_eq!(
        std::fs::read_to_string(task.dir().join("stdout.log")).unwrap(),
        "one\ntwo\n"
    );
    assert!(matches!(
        task.attach(),
        Err(nomad_shim::Error::NotRunning { .. })
    ));
    task.wait().unwrap();
}
