//! The agent dies, the supervisor dies, pids are reused: what survives and
//! what is reported.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use nomad_shim::{Error, Status, TaskExit};

use crate::common::{self, alive, root_or_skip, TestRoot};

/// Starts `sh -c SCRIPT` from a separate agent process (examples/agent.rs)
/// and returns (agent child, id, supervisor pid, task pid).
fn start_from_agent(root: &TestRoot, script: &str) -> (std::process::Child, String, i32, i32) {
    let mut agent = common::spawn(
        root.agent()
            .arg("start")
            .arg(script)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(agent.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f.len(), 3, "agent said {line:?}");
    (
        agent,
        f[0].to_owned(),
        f[1].parse().unwrap(),
        f[2].parse().unwrap(),
    )
}

fn kill_agent(mut agent: std::process::Child) {
    let pid = agent.id() as i32;
    agent.kill().unwrap();
    agent.wait().unwrap();
    common::disown(pid);
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn task_survives_the_agent_and_open_wait_returns_the_exact_code() {
    if !root_or_skip("task_survives_the_agent_and_open_wait_returns_the_exact_code") {
        return;
    }
    let root = TestRoot::new();
    let marker = root.path().with_file_name("go");
    let script = format!(
        "while [ ! -e {} ]; do sleep 0.02; done; exit 42",
        marker.display()
    );
    let (agent, id, sup, task_pid) = start_from_agent(&root, &script);
    kill_agent(agent);
    // The agent is gone; the task and its supervisor are not.
    std::thread::sleep(Duration::from_millis(100));
    assert!(alive(sup) && alive(task_pid));
    let mut task = root.exec.open(&id).unwrap();
    assert_eq!(task.state().unwrap().status, Status::Running);
    assert_eq!(task.pid(), Some(task_pid));
    std::fs::write(&marker, b"").unwrap();
    assert_eq!(
        task.wait().unwrap(),
        TaskExit::Exited(task.state().unwrap().exit.unwrap())
    );
    assert_eq!(task.state().unwrap().exit.unwrap().code, Some(42));
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn an_exit_while_no_agent_lives_is_known_later_at_once() {
    if !root_or_skip("an_exit_while_no_agent_lives_is_known_later_at_once") {
        return;
    }
    let root = TestRoot::new();
    let (agent, id, sup, _) = start_from_agent(&root, "sleep 0.2; exit 9");
    kill_agent(agent);
    assert!(common::eventually(Duration::from_secs(5), || !alive(sup)));
    // A new agent process reattaches and learns the exact exit at once.
    let out = common::output(root.agent().arg("wait").arg(&id));
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["code"], 9, "{v}");
    assert!(
        v["wait_ms"].as_f64().unwrap() < 100.0 * common::time_scale(),
        "{v}"
    );
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_killed_supervisor_takes_the_task_with_it_and_the_exit_is_lost() {
    if !root_or_skip("a_killed_supervisor_takes_the_task_with_it_and_the_exit_is_lost") {
        return;
    }
    let root = TestRoot::new();
    let task = root.sh("sleep 1000 & sleep 1000 & echo ready; wait");
    let log = task.dir().join("stdout.log");
    assert!(common::eventually(
        Duration::from_secs(5),
        || std::fs::read_to_string(&log).unwrap_or_default() == "ready\n"
    ));
    let (sup, sid) = (task.supervisor_pid().unwrap(), task.pid().unwrap());
    let members = common::session_members(sid);
    assert_eq!(members.len(), 3, "{members:?}");
    kill(Pid::from_raw(sup), Signal::SIGKILL).unwrap();
    assert!(common::eventually(Duration::from_secs(5), || !alive(sup)));
    // Reattach: the lock is free while the state says running.
    let mut task = root.exec.open(task.id().as_str()).unwrap();
    let state = task.state().unwrap();
    assert_eq!(state.status, Status::Lost);
    let exit = state.exit.clone().unwrap();
    assert_eq!((exit.code, exit.signal), (None, None));
    assert!(exit.error.as_deref().unwrap().contains("died"), "{exit:?}");
    match task.wait().unwrap() {
        TaskExit::Lost { reason } => assert!(reason.contains(&sup.to_string()), "{reason}"),
        other => panic!("expected lost, got {other:?}"),
    }
    assert!(
        common::eventually(Duration::from_secs(2), || members
            .iter()
            .all(|&p| !alive(p))),
        "task processes survived: {members:?}"
    );
    // The CLI says so too, and exits 125, never 0 or 137.
    let out = common::output(root.cli().arg("wait").arg(task.id().as_str()));
    assert_eq!(out.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lost"),
        "{out:?}"
    );
}

/// A stranger placed at a recycled pid; killed (by its own pid) on drop,
/// also when the test fails.
struct Impostor(std::process::Child);

impl Drop for Impostor {
    fn drop(&mut self) {
        let pid = self.0.id() as i32;
        let _ = self.0.kill();
        let _ = self.0.wait();
        common::disown(pid);
    }
}

/// Places a new process at exactly `pid` through ns_last_pid, retrying
/// while other processes of the machine race for pids (a busy machine
/// forks between our write and our spawn: 200 tries were seen to fail
/// while other test runs forked thousands of processes).
fn impostor_at(pid: i32) -> Option<Impostor> {
    for _ in 0..2000 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).ok()?;
        let child = Impostor(common::spawn(
            Command::new("/bin/sleep")
                .arg("1000")
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        ));
        if child.0.id() as i32 == pid {
            return Some(child);
        }
    }
    None
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_reused_pid_is_never_signalled() {
    if !root_or_skip("a_reused_pid_is_never_signalled") {
        return;
    }
    let root = TestRoot::new();
    let task = root.sh("exec sleep 1000");
    let id = task.id().to_string();
    let (sup, task_pid) = (task.supervisor_pid().unwrap(), task.pid().unwrap());
    // Both die without a word (as in an OOM kill of the whole slice).
    kill(Pid::from_raw(sup), Signal::SIGKILL).unwrap();
    kill(Pid::from_raw(task_pid), Signal::SIGKILL).unwrap();
    assert!(common::eventually(Duration::from_secs(5), || !alive(sup) && !alive(task_pid)));
    // Let the reaper free both pids, then put strangers at them.
    assert!(common::eventually(
        Duration::from_secs(5),
        || !std::path::Path::new(&format!("/proc/{sup}")).exists()
            && !std::path::Path::new(&format!("/proc/{task_pid}")).exists()
    ));
    let Some(_fake_sup) = impostor_at(sup) else {
        panic!("could not place a process at pid {sup}")
    };
    let Some(_fake_task) = impostor_at(task_pid) else {
        panic!("could not place a process at pid {task_pid}")
    };

    // The library sees through them: the start times differ.
    let mut t = root.exec.open(&id).unwrap();
    assert_eq!(t.state().unwrap().status, Status::Lost);
    assert!(matches!(t.wait().unwrap(), TaskExit::Lost { .. }));
    assert!(matches!(
        t.signal(Signal::SIGKILL),
        Err(Error::NotRunning { .. })
    ));
    // `kill` refuses (the task is not running); `stop` has nothing to do
    // (the task has ended) and says so with success. Neither signals.
    let out = common::output(root.cli().args(["kill", id.as_str(), "KILL"]));
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not running (status lost)"),
        "{out:?}"
    );
    let out = common::output(root.cli().args(["stop", id.as_str(), "--timeout", "0s"]));
    assert!(out.status.success(), "{out:?}");
    std::thread::sleep(Duration::from_millis(100));
    assert!(alive(sup) && alive(task_pid), "an impostor was signalled");
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn two_hundred_tasks_from_eight_threads() {
    if !root_or_skip("two_hundred_tasks_from_eight_threads") {
        return;
    }
    let root = TestRoot::new();
    let t0 = Instant::now();
    let out = common::output(root.agent().args(["concurrent", "200", "8"]));
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(v["wrong"], serde_json::json!([]), "{v}");
    assert_eq!(v["zombies"], serde_json::json!([]), "{v}");
    assert_eq!(v["children"], serde_json::json!([]), "{v}");
    assert_eq!(v["fds_before"], v["fds_after"], "{v}");
    eprintln!("200 tasks from 8 threads in {:?}", t0.elapsed());
}
