//! The operator's command line, as an operator uses it.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::{self, root_or_skip, TestRoot};
use crate::leftovers::cgroups_below;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn run_prints_the_output_and_exits_with_the_task_code() {
    if !root_or_skip("run_prints_the_output_and_exits_with_the_task_code") {
        return;
    }
    let root = TestRoot::new();
    let out = common::output(root.cli().args([
        "run",
        "--env",
        "WHO=world",
        "--",
        "sh",
        "-c",
        "echo hello $WHO; echo oops >&2; exit 3",
    ]));
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(text(&out.stdout), "hello world\n");
    assert_eq!(text(&out.stderr), "oops\n");
    let out = common::output(root.cli().args(["run", "--", "sh", "-c", "kill -TERM $$"]));
    assert_eq!(out.status.code(), Some(128 + 15), "{out:?}");
    let out = common::output(root.cli().args(["run", "--", "true"]));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout), "");
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn run_rm_leaves_nothing_even_when_the_cli_is_killed() {
    if !root_or_skip("run_rm_leaves_nothing_even_when_the_cli_is_killed") {
        return;
    }
    let root = TestRoot::new();
    // A whole run: output and exit as without --rm, and when it returns
    // the task is gone, directory and cgroup.
    let out = common::output(root.cli().args([
        "run",
        "--rm",
        "--id",
        "rm1",
        "--",
        "sh",
        "-c",
        "echo out; exit 7",
    ]));
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(text(&out.stdout), "out\n");
    assert!(!root.path().join("rm1").exists());
    assert_eq!(cgroups_below(&root.cgroup_parent), Vec::<PathBuf>::new());

    // The CLI killed while its task runs: the task goes on, and is removed
    // when it ends (the supervisor sees the CLI's end of a pipe close).
    let flag = root.path().with_file_name("rm2-go");
    let script = format!(
        "while [ ! -e {} ]; do sleep 0.02; done; exit 3",
        flag.display()
    );
    let cli = common::spawn(
        root.cli()
            .args(["run", "--rm", "--id", "rm2", "--", "sh", "-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let state = root.path().join("rm2/state.json");
    assert!(
        common::eventually(Duration::from_secs(10), || {
            std::fs::read_to_string(&state).is_ok_and(|s| s.contains("\"running\""))
        }),
        "rm2 never ran"
    );
    let supervisor = root.exec.open("rm2").unwrap().supervisor_pid().unwrap();
    let cli_pid = cli.id() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(cli_pid),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    let out = common::wait_output(cli);
    assert_eq!(out.status.code(), None, "{out:?}");
    // Still there while the task runs.
    std::thread::sleep(Duration::from_millis(100));
    assert!(root.path().join("rm2").exists());
    assert!(common::alive(supervisor));
    std::fs::write(&flag, b"").unwrap();
    assert!(
        common::eventually(Duration::from_secs(10), || {
            !root.path().join("rm2").exists() && !common::alive(supervisor)
        }),
        "rm2 left behind after its end: {:?}",
        std::fs::read_to_string(&state)
    );
    assert_eq!(cgroups_below(&root.cgroup_parent), Vec::<PathBuf>::new());
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn start_ps_inspect_kill_wait_rm() {
    if !root_or_skip("start_ps_inspect_kill_wait_rm") {
        return;
    }
    let root = TestRoot::new();
    let out = common::output(root.cli().args([
        "start",
        "--id",
        "web.1",
        "--",
        "sh",
        "-c",
        "trap 'exit 7' USR1; echo ready; while :; do sleep 0.05; done",
    ]));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "web.1\n");
    let log = root.path().join("web.1/stdout.log");
    assert!(common::eventually(
        Duration::from_secs(5),
        || std::fs::read_to_string(&log).unwrap_or_default() == "ready\n"
    ));

    let ps = text(&common::output(root.cli().arg("ps")).stdout);
    assert!(
        ps.lines()
            .any(|l| l.starts_with("web.1 ") && l.contains("running")),
        "{ps}"
    );
    let out = common::output(root.cli().args(["ps", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["id"], "web.1");
    assert_eq!(v[0]["status"], "running");

    let out = common::output(root.cli().args(["inspect", "web.1", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.path().join("web.1/state.json")).unwrap())
            .unwrap();
    assert_eq!(v, file);

    // A rm of a running task is refused.
    let out = common::output(root.cli().args(["rm", "web.1"]));
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("still running"), "{out:?}");

    assert!(common::output(root.cli().args(["kill", "web.1", "USR1"]))
        .status
        .success());
    let out = common::output(root.cli().args(["wait", "web.1"]));
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let out = common::output(root.cli().args(["inspect", "web.1"]));
    assert!(text(&out.stdout).contains("exit:        code 7"), "{out:?}");

    assert!(common::output(root.cli().args(["rm", "web.1"]))
        .status
        .success());
    assert!(!root.path().join("web.1").exists());
    let out = common::output(root.cli().args(["inspect", "web.1"]));
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        text(&out.stderr),
        format!("nomad-shim: no task web.1 in {}\n", root.path().display())
    );
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn stop_with_signal_and_timeout_and_rm_force() {
    if !root_or_skip("stop_with_signal_and_timeout_and_rm_force") {
        return;
    }
    let root = TestRoot::new();
    // The shell says when its trap is set: a stop that came before would
    // end it with the SIGTERM itself (seen on a loaded machine).
    let trapped = root.path().with_file_name("trapped");
    assert!(common::output(root.cli().args([
        "start",
        "--id",
        "s",
        "--kill-timeout",
        "30s",
        "--",
        "sh",
        "-c",
        &format!(
            "trap '' TERM; : > {}; while :; do sleep 0.05; done",
            trapped.display()
        )
    ]))
    .status
    .success());
    assert!(common::eventually(Duration::from_secs(10), || trapped.exists()));
    let t0 = std::time::Instant::now();
    let out = common::output(root.cli().args(["stop", "s", "--timeout", "200ms"]));
    assert!(out.status.success(), "{out:?}");
    assert!(t0.elapsed() < common::scaled(Duration::from_secs(5)));
    let v: serde_json::Value =
        serde_json::from_slice(&common::output(root.cli().args(["inspect", "s", "--json"])).stdout)
            .unwrap();
    assert_eq!(v["exit"]["signal"], 9);

    assert!(common::output(
        root.cli()
            .args(["start", "--id", "f", "--", "sleep", "1000"])
    )
    .status
    .success());
    let out = common::output(root.cli().args(["rm", "--force", "f"]));
    assert!(out.status.success(), "{out:?}");
    assert!(!root.path().join("f").exists());
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn logs_tail_and_follow() {
    if !root_or_skip("logs_tail_and_follow") {
        return;
    }
    let root = TestRoot::new();
    assert!(common::output(root.cli().args([
        "start",
        "--id",
        "l",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do echo line$i; done; echo err >&2; sleep 0.3; echo late"
    ]))
    .status
    .success());
    let out = common::output(root.cli().args(["logs", "l", "--follow"]));
    assert_eq!(
        text(&out.stdout),
        "line1\nline2\nline3\nline4\nline5\nlate\n"
    );
    let out = common::output(root.cli().args(["logs", "l", "--tail", "2"]));
    assert_eq!(text(&out.stdout), "line5\nlate\n");
    let out = common::output(root.cli().args(["logs", "l", "--stderr"]));
    assert_eq!(text(&out.stdout), "err\n");
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn errors_are_one_line_with_the_documented_exit_codes() {
    if !root_or_skip("errors_are_one_line_with_the_documented_exit_codes") {
        return;
    }
    let root = TestRoot::new();
    let out = common::output(root.cli().args(["wait", "nope"]));
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(text(&out.stderr).lines().count(), 1);
    let out = common::output(root.cli().args(["kill", "nope", "NOTASIGNAL"]));
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("not a signal"), "{out:?}");
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn usage_errors_are_one_line_and_exit_125() {
    if !root_or_skip("usage_errors_are_one_line_and_exit_125") {
        return;
    }
    let root = TestRoot::new();
    for args in [
        vec!["run", "--env", "NOEQ", "--", "true"],
        vec!["frob"],
        vec!["run", "--kill-timeout", "5", "--", "true"],
        vec!["run", "--ns", "net", "--", "true"],
    ] {
        let out = common::output(root.cli().args(&args));
        assert_eq!(out.status.code(), Some(125), "{args:?}: {out:?}");
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("nomad-shim: "), "{err}");
    }
    let out = common::output(root.cli().arg("--help"));
    assert_eq!(out.status.code(), Some(0));
}
