//! Issue 8: `exec` into a running task (library and CLI), `-i` and `-t`,
//! with real programs, the real kernel and a real terminal (tmux).

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use nomad_shim::isolate::IsolationSpec;
use nomad_shim::{Error, ExecSpec, ExecStdio, RlimitSpec, Status, Task, TaskSpec};

use crate::common::{self, eventually, root_or_skip, scaled, TestRoot};

/// A task directory beside the test's root, with a guard that checks no
/// mount under it is left in the host's mount namespace.
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
        common::assert_no_mounts_under(&self.path);
    }
}

/// `sleep 1000` as nobody in a chroot with pid, ipc and uts namespaces, a
/// hostname and an rlimit: the task of the issue's list.
fn isolated_sleeper(root: &TestRoot, dir: &Path, id: &str, pid_ns: bool) -> Task {
    let mut spec = TaskSpec::new("/bin/sleep");
    spec.arg("1000")
        .id(id)
        .user("nobody")
        .isolation(IsolationSpec {
            chroot: true,
            task_dir: Some(dir.to_path_buf()),
            pid: pid_ns,
            ipc: true,
            uts: true,
            hostname: Some("exec-host".into()),
            rlimits: vec![RlimitSpec {
                resource: "nofile".into(),
                soft: 321,
                hard: 654,
            }],
            ..IsolationSpec::default()
        });
    root.exec
        .start(&spec)
        .unwrap_or_else(|e| panic!("start: {e}"))
}

/// `nomad-shim exec ID -- ARGS`: (code, stdout, stderr).
fn cli_exec(root: &TestRoot, args: &[&str]) -> (i32, String, String) {
    let out = common::output(root.cli().arg("exec").args(args).stdin(Stdio::null()));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn status_line(status: &str, key: &str) -> String {
    status
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in {status}"))
        .to_string()
}

fn ns_links(pid: &str) -> Vec<String> {
    ["mnt", "pid", "ipc", "uts", "net", "cgroup"]
        .iter()
        .map(|ns| {
            fs::read_link(format!("/proc/{pid}/ns/{ns}"))
                .unwrap()
                .display()
                .to_string()
        })
        .collect()
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn exec_gets_exactly_what_the_task_got() {
    if !root_or_skip("exec_gets_exactly_what_the_task_got") {
        return;
    }
    let root = TestRoot::new();
    let dir = TaskDir::new(&root, "exec-ident");
    let task = isolated_sleeper(&root, &dir.path, "ident", true);
    let task_pid = task.pid().unwrap().to_string();
    let run = |args: &[&str]| {
        let mut all = vec!["ident", "--"];
        all.extend_from_slice(args);
        let (code, out, err) = cli_exec(&root, &all);
        assert_eq!(code, 0, "exec {args:?}: {err}");
        out
    };

    // The task's user.
    assert_eq!(run(&["id", "-u"]).trim(), "65534");
    assert_eq!(run(&["id", "-g"]).trim(), "65534");
    // Its capability sets, bounding set and no_new_privs: the task's own
    // (the init runs with the task's credentials and capabilities).
    let theirs = fs::read_to_string(format!("/proc/{task_pid}/status")).unwrap();
    let ours = run(&["cat", "/proc/self/status"]);
    for key in [
        "CapInh:",
        "CapPrm:",
        "CapEff:",
        "CapBnd:",
        "CapAmb:",
        "NoNewPrivs:",
        "Uid:",
        "Gid:",
        "Groups:",
    ] {
        assert_eq!(status_line(&ours, key), status_line(&theirs, key), "{key}");
    }
    assert_eq!(status_line(&ours, "NoNewPrivs:"), "NoNewPrivs:\t1");
    // Its root, not the host's.
    let ls = run(&["ls", "-a", "/"]);
    let mut task_root: Vec<String> = fs::read_dir(format!("/proc/{task_pid}/root"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    task_root.extend([".".into(), "..".into()]);
    task_root.sort();
    let mut listed: Vec<String> = ls.lines().map(str::to_string).collect();
    listed.sort();
    assert_eq!(listed, task_root);
    assert!(
        listed.contains(&"secrets".to_string()) && !listed.contains(&"root".to_string()),
        "{ls}"
    );
    // Its PID 1 (the task's init), in its pid namespace.
    let cmdline = fs::read(format!("/proc/{task_pid}/cmdline")).unwrap();
    assert_eq!(run(&["cat", "/proc/1/cmdline"]).as_bytes(), &cmdline[..]);
    // Its cgroup, every hierarchy.
    let cgroup = fs::read_to_string(format!("/proc/{task_pid}/cgroup")).unwrap();
    assert_eq!(run(&["cat", "/proc/self/cgroup"]), cgroup);
    // Its namespaces, every one (read from the host through /proc).
    let ns = run(&[
        "sh",
        "-c",
        "for n in mnt pid ipc uts net cgroup; do readlink /proc/self/ns/$n; done",
    ]);
    assert_eq!(ns.lines().collect::<Vec<_>>(), ns_links(&task_pid));
    assert_ne!(
        ns_links("self"),
        ns_links(&task_pid),
        "the task has namespaces of its own"
    );
    // Its hostname and rlimits.
    assert_eq!(
        run(&["cat", "/proc/sys/kernel/hostname"]).trim(),
        "exec-host"
    );
    let limits = run(&["cat", "/proc/self/limits"]);
    let nofile = status_line(&limits, "Max open files");
    assert_eq!(
        nofile.split_whitespace().collect::<Vec<_>>()[3..5],
        ["321", "654"],
        "{nofile}"
    );
    // Its environment's user (HOME, USER) and the task's cwd (/).
    assert_eq!(run(&["sh", "-c", "echo $USER:$PWD"]).trim(), "nobody:/");
    // Ended before the task dir's guard checks its mounts.
    let mut task = task;
    task.force_stop().unwrap();
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn exec_options_user_env_cwd_and_exit_codes() {
    if !root_or_skip("exec_options_user_env_cwd_and_exit_codes") {
        return;
    }
    let root = TestRoot::new();
    let dir = TaskDir::new(&root, "exec-opts");
    let mut task = isolated_sleeper(&root, &dir.path, "opts", true);
    let (code, out, err) = cli_exec(
        &root,
        &[
            "--user",
            "root",
            "--env",
            "FOO=bar baz",
            "--cwd",
            "/tmp",
            "opts",
            "--",
            "sh",
            "-c",
            "id -u; echo $FOO; pwd",
        ],
    );
    assert_eq!((code, out.as_str()), (0, "0\nbar baz\n/tmp\n"), "{err}");
    // The program's code, and 128+N for a signal.
    assert_eq!(cli_exec(&root, &["opts", "--", "sh", "-c", "exit 3"]).0, 3);
    assert_eq!(
        cli_exec(&root, &["opts", "--", "sh", "-c", "kill -9 $$"]).0,
        137
    );
    // Not found (127) and not executable (126), named.
    let (code, _, err) = cli_exec(&root, &["opts", "--", "no-such-program"]);
    assert_eq!(code, 127, "{err}");
    assert!(
        err.contains("no-such-program") && err.contains("No such file"),
        "{err}"
    );
    let (code, _, err) = cli_exec(&root, &["opts", "--", "/etc/passwd"]);
    assert_eq!(code, 126, "{err}");
    // A bad option value names the option.
    let (code, _, err) = cli_exec(&root, &["--env", "NOEQUALS", "opts", "--", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("--env"), "{err}");
    let (code, _, err) = cli_exec(&root, &["--user", "no-such-user-xyz", "opts", "--", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("no-such-user-xyz"), "{err}");
    let (code, _, err) = cli_exec(&root, &["--cwd", "/no/such/dir", "opts", "--", "true"]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("/no/such/dir"), "{err}");
    task.force_stop().unwrap();
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn exec_i_streams_stdin_and_without_it_stdin_is_dev_null() {
    if !root_or_skip("exec_i_streams_stdin_and_without_it_stdin_is_dev_null") {
        return;
    }
    let root = TestRoot::new();
    let _task = root.sh("exec sleep 1000");
    let id = root.exec.list().unwrap()[0].0.to_string();
    let mut child = common::spawn(
        root.cli()
            .args(["exec", "-i", &id, "--", "wc", "-l"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    child.stdin.take().unwrap().write_all(b"a\nb\n").unwrap();
    // EOF (the pipe closed above) ends wc.
    let out = common::wait_output(child);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
    // Without -i: /dev/null, whatever our stdin holds.
    let mut child = common::spawn(
        root.cli()
            .args([
                "exec",
                &id,
                "--",
                "sh",
                "-c",
                "wc -c; readlink /proc/self/fd/0",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    let mut stdin = child.stdin.take().unwrap();
    // The CLI may have exited already (EPIPE): what matters is that the
    // program never read it.
    let _ = stdin.write_all(b"never read\n");
    let out = common::wait_output(child);
    drop(stdin);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n/dev/null\n");
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn exec_option_errors_name_execs_own_options() {
    if !root_or_skip("exec_option_errors_name_execs_own_options") {
        return;
    }
    let root = TestRoot::new();
    let _task = root.sh("exec sleep 1000");
    let id = root.exec.list().unwrap()[0].0.to_string();
    for (args, want) in [
        (
            vec!["-u", "nobody:nosuchgroup-x"],
            "--user nobody:nosuchgroup-x: nosuchgroup-x is not in /etc/group",
        ),
        (
            vec!["-u", "nosuchuser-x"],
            "--user nosuchuser-x: nosuchuser-x is not in /etc/passwd",
        ),
        (vec!["-w", "rel"], "--cwd rel: must be an absolute path"),
        (
            vec!["-w", "/no/such/dir"],
            "--cwd /no/such/dir: No such file or directory",
        ),
    ] {
        let out =
            common::output(
                root.cli()
                    .arg("exec")
                    .args(&args)
                    .args([id.as_str(), "--", "true"]),
            );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("--group"), "{args:?}: {err}");
    }
}

/// CPU time (user + system, clock ticks) of `pid` so far.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 1..];
    let f: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime); after the comm, field 3 is index 0.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn exec_t_from_a_pipe_ends_its_input_and_never_spins() {
    if !root_or_skip("exec_t_from_a_pipe_ends_its_input_and_never_spins") {
        return;
    }
    let root = TestRoot::new();
    let _task = root.sh("exec sleep 1000");
    let id = root.exec.list().unwrap()[0].0.to_string();
    // -it from a pipe: the pipe's end is the terminal's ^D, so wc ends.
    let mut child = common::spawn(
        root.cli()
            .args(["exec", "-it", &id, "--", "wc", "-l"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    child.stdin.take().unwrap().write_all(b"x\ny\n").unwrap();
    let pid = child.id();
    if !eventually(Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{pid}/stat")).exists()
            || fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z"))
    }) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        panic!("exec -it with stdin at its end never ended (wc got no end of input)");
    }
    let out = common::wait_output(child);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().last().map(str::trim), Some("2"), "{text:?}");
    // -t (no -i) with a pipe already at its end: the CLI sleeps in poll
    // while the program runs (poll reports the pipe's POLLHUP even when
    // asked for nothing: it spun at 100% CPU).
    let task = root.exec.open(&id).unwrap();
    let mut child = common::spawn(
        root.cli()
            .args(["exec", "-t", &id, "--", "sleep", "1000"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    drop(child.stdin.take());
    let pid = child.id();
    // Once the session runs, the CLI relays: its CPU over the next second
    // (not its start, which an emulated CPU makes slow) is what it spins.
    assert!(eventually(Duration::from_secs(10), || task
        .state()
        .is_ok_and(|s| !s.execs.is_empty())));
    std::thread::sleep(Duration::from_millis(200));
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let ticks = cpu_ticks(pid) - before;
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    let _ = common::wait_output(child);
    // A second of spinning is up to 100 ticks; an idle relay takes 0-2.
    assert!(
        ticks < 30,
        "the exec -t CLI used {ticks} ticks of CPU in 1 s"
    );
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn exec_into_an_ended_or_unknown_task_exits_125() {
    if !root_or_skip("exec_into_an_ended_or_unknown_task_exits_125") {
        return;
    }
    let root = TestRoot::new();
    let mut task = root.sh("exit 0");
    task.wait().unwrap();
    let id = task.id().to_string();
    let (code, out, err) = cli_exec(&root, &[&id, "--", "true"]);
    assert_eq!((code, out.as_str()), (125, ""), "{err}");
    assert!(err.contains(&format!("task {id} is not running")), "{err}");
    match task.exec(&ExecSpec::new("true")) {
        Err(Error::NotRunning { status, .. }) => assert_eq!(status, Status::Exited),
        other => panic!("{other:?}"),
    }
    let (code, _, err) = cli_exec(&root, &["no-such-task", "--", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("no-such-task"), "{err}");
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn library_exec_pipes_exact_exit_and_sessions_in_state() {
    if !root_or_skip("library_exec_pipes_exact_exit_and_sessions_in_state") {
        return;
    }
    let root = TestRoot::new();
    let task = root.sh("exec sleep 1000");
    // Piped stdin and stdout.
    let mut spec = ExecSpec::new("tr");
    spec.args(["a-z", "A-Z"])
        .stdin(ExecStdio::Piped)
        .stdout(ExecStdio::Piped);
    let mut s = task.exec(&spec).unwrap();
    s.take_stdin().unwrap().write_all(b"hello\n").unwrap();
    let mut out = String::new();
    s.take_stdout().unwrap().read_to_string(&mut out).unwrap();
    assert_eq!(out, "HELLO\n");
    assert!(s.wait().unwrap().success());
    // The exact end: a signal and a core flag, not just 128+N.
    let mut spec = ExecSpec::new("sh");
    spec.args(["-c", "kill -TERM $$"]);
    let exit = task.exec(&spec).unwrap().wait().unwrap();
    assert_eq!(
        (exit.code, exit.signal, exit.shell_code()),
        (None, Some(15), 143)
    );
    // A live session is in state.json, and gone once it ends.
    let mut spec = ExecSpec::new("sleep");
    spec.arg("1000");
    let mut s = task.exec(&spec).unwrap();
    let state = task.state().unwrap();
    assert_eq!(state.execs.len(), 1, "{state:?}");
    assert_eq!(
        (state.execs[0].pid, state.execs[0].argv.clone()),
        (s.pid(), vec!["sleep".to_string(), "1000".into()])
    );
    let json = fs::read_to_string(task.dir().join("state.json")).unwrap();
    assert!(json.contains("\"execs\""), "{json}");
    let inspect = common::output(root.cli().args(["inspect", task.id().as_str()]));
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        text.contains(&format!("exec:        pid {}", s.pid())) && text.contains("sleep 1000"),
        "{text}"
    );
    kill(Pid::from_raw(s.pid()), Signal::SIGKILL).unwrap();
    assert_eq!(s.wait().unwrap().signal, Some(9));
    assert!(eventually(Duration::from_secs(5), || task
        .state()
        .unwrap()
        .execs
        .is_empty()));
    let json = fs::read_to_string(task.dir().join("state.json")).unwrap();
    assert!(!json.contains("\"execs\""), "absent when empty: {json}");
}

/// Starts `sleep 1000` in the task through the library; returns its session.
fn exec_sleeper(task: &Task) -> nomad_shim::ExecSession {
    let mut spec = ExecSpec::new("sleep");
    spec.arg("1000");
    let s = task.exec(&spec).unwrap();
    assert!(common::alive(s.pid()));
    s
}

fn gone(pid: i32) -> bool {
    !common::alive(pid) || common::is_zombie(pid)
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn an_execd_process_ends_with_stop() {
    if !root_or_skip("an_execd_process_ends_with_stop") {
        return;
    }
    let root = TestRoot::new();
    for pid_ns in [true, false] {
        let dir = TaskDir::new(&root, &format!("exec-stop-{pid_ns}"));
        let mut task = isolated_sleeper(&root, &dir.path, &format!("stop-{pid_ns}"), pid_ns);
        let mut s = exec_sleeper(&task);
        task.stop(None, Some(Duration::from_secs(5))).unwrap();
        assert!(
            gone(s.pid()),
            "exec'd sleep {} left after stop (pid ns {pid_ns})",
            s.pid()
        );
        // Its caller got its exit before the task's state said exited.
        assert_eq!(s.wait().unwrap().signal, Some(9));
        assert!(task.state().unwrap().execs.is_empty());
    }
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn an_execd_process_ends_with_a_killed_supervisor_and_a_reconcile() {
    if !root_or_skip("an_execd_process_ends_with_a_killed_supervisor_and_a_reconcile") {
        return;
    }
    let root = TestRoot::new();
    for pid_ns in [true, false] {
        let dir = TaskDir::new(&root, &format!("exec-lost-{pid_ns}"));
        let id = format!("lost-{pid_ns}");
        let task = isolated_sleeper(&root, &dir.path, &id, pid_ns);
        let mut s = exec_sleeper(&task);
        let sup = task.supervisor_pid().unwrap();
        kill(Pid::from_raw(sup), Signal::SIGKILL).unwrap();
        assert!(eventually(Duration::from_secs(5), || gone(sup)));
        // The exit of the exec'd process is unknown to its caller: said so.
        assert!(matches!(s.wait(), Err(Error::ExecLost { .. })));
        // The supervisor is gone, not the process (nothing killed it yet).
        assert!(common::alive(s.pid()) && !common::is_zombie(s.pid()));
        // The reconcile kills the task's cgroup: the exec'd process with it.
        let reopened = root.exec.open(&id).unwrap();
        let state = reopened.state().unwrap();
        assert_eq!(state.status, Status::Lost);
        assert!(
            state.execs.is_empty(),
            "a lost task lists no exec: {state:?}"
        );
        assert!(
            eventually(Duration::from_secs(5), || gone(s.pid())),
            "exec'd sleep {} left after reconcile (pid ns {pid_ns})",
            s.pid()
        );
    }
}

/// A tmux server on a private socket, killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(cols: u16, rows: u16, command: &str) -> Tmux {
        let socket = format!("nomad-shim-exec-{}-{}", std::process::id(), rand_suffix());
        let t = Tmux { socket };
        let out = common::output(t.cmd().args([
            "new-session",
            "-d",
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
            command,
        ]));
        assert!(out.status.success(), "tmux new-session: {out:?}");
        t
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket, "-f", "/dev/null"]);
        c
    }

    fn keys(&self, keys: &[&str]) {
        let out = common::output(self.cmd().arg("send-keys").args(keys));
        assert!(out.status.success(), "tmux send-keys: {out:?}");
    }

    fn capture(&self) -> String {
        let out = common::output(self.cmd().args(["capture-pane", "-p", "-J"]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls the pane until `want` returns true.
    fn wait_for(&self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let ok = eventually(Duration::from_secs(10), || {
            last = self.capture();
            want(&last)
        });
        assert!(ok, "waiting for {what}; pane:\n{last}");
        last
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        common::output(self.cmd().arg("kill-server"));
    }
}

/// A line of the pane is `want`, possibly after a shell prompt (typed-ahead
/// input is echoed before the prompt that reads it).
fn has_line(pane: &str, want: &str) -> bool {
    pane.lines()
        .any(|l| l.trim_start_matches("# ").trim_start_matches("$ ") == want)
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn exec_it_in_a_real_terminal() {
    if !root_or_skip("exec_it_in_a_real_terminal") {
        return;
    }
    let root = TestRoot::new();
    let dir = TaskDir::new(&root, "exec-tty");
    let mut task = isolated_sleeper(&root, &dir.path, "tty", true);
    let files = tempfile::tempdir().unwrap();
    let before = files.path().join("before");
    let after = files.path().join("after");
    let cli = format!(
        "{} --root {} exec -it tty -- /bin/sh",
        common::shim().display(),
        root.path().display()
    );
    // A shell in the pane: it records the terminal's settings, runs the
    // exec, prints its exit code and records the settings again.
    let tmux = Tmux::new(100, 30, "/bin/sh");
    tmux.keys(&[
        &format!(
            "stty -g > {}; {cli}; echo EXIT=$?; stty -g > {}",
            before.display(),
            after.display()
        ),
        "Enter",
    ]);
    tmux.keys(&["echo $((6*7))", "Enter"]);
    tmux.wait_for("42", |p| has_line(p, "42"));
    tmux.keys(&["stty size", "Enter"]);
    tmux.wait_for("the pane's size", |p| has_line(p, "30 100"));
    // The terminal is one of the task's own devpts (its first), owned by
    // the task's user.
    tmux.keys(&["echo tty=$(tty) owner=$(stat -c %U $(tty))", "Enter"]);
    tmux.wait_for("the terminal's name", |p| {
        has_line(p, "tty=/dev/pts/0 owner=nobody")
    });
    let out = common::output(tmux.cmd().args(["resize-window", "-x", "120", "-y", "40"]));
    assert!(out.status.success(), "{out:?}");
    // SIGWINCH reached the CLI, which passed the new size on.
    let mut pane = String::new();
    let followed = eventually(Duration::from_secs(10), || {
        tmux.keys(&["stty size", "Enter"]);
        std::thread::sleep(Duration::from_millis(50));
        pane = tmux.capture();
        has_line(&pane, "40 120")
    });
    assert!(followed, "stty size after resize-window:\n{pane}");
    // Ctrl-C interrupts the shell's sleep, not the session.
    tmux.keys(&["sleep 100", "Enter"]);
    std::thread::sleep(scaled(Duration::from_millis(300)));
    tmux.keys(&["C-c"]);
    tmux.keys(&["echo still-$((1+1))", "Enter"]);
    tmux.wait_for("the shell after Ctrl-C", |p| has_line(p, "still-2"));
    // Ctrl-Z stops the shell's foreground job (job control in the task's
    // terminal), and the shell carries on.
    tmux.keys(&["sleep 100", "Enter"]);
    std::thread::sleep(scaled(Duration::from_millis(300)));
    tmux.keys(&["C-z"]);
    tmux.wait_for("the job stopped by Ctrl-Z", |p| p.contains("Stopped"));
    tmux.keys(&["kill -9 %1; wait; echo killed-$((3+4))", "Enter"]);
    tmux.wait_for("the shell after Ctrl-Z", |p| has_line(p, "killed-7"));
    // The shell reports the job gone (else its exit says "You have stopped
    // jobs" first).
    tmux.keys(&["jobs", "Enter"]);
    tmux.wait_for("the killed job reported", |p| p.contains("Killed"));
    tmux.keys(&["exit 3", "Enter"]);
    tmux.wait_for("the CLI's exit code", |p| has_line(p, "EXIT=3"));
    assert!(eventually(Duration::from_secs(5), || after.exists()
        && fs::read_to_string(&after).is_ok_and(|s| !s.is_empty())));
    assert_eq!(
        fs::read_to_string(&before).unwrap(),
        fs::read_to_string(&after).unwrap(),
        "the terminal's settings were not restored"
    );
    task.force_stop().unwrap();
}

/// Pids whose command line contains every one of `words`.
fn pids_with(words: &[&str]) -> Vec<i32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmd) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if words.iter().all(|w| cmd.contains(w)) {
            out.push(pid);
        }
    }
    out
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn exec_t_restores_the_terminal_on_every_way_out() {
    if !root_or_skip("exec_t_restores_the_terminal_on_every_way_out") {
        return;
    }
    // How the session ends, and the CLI's exit code then.
    for (how, code) in [
        ("task killed", 137),
        ("supervisor killed", 125),
        ("CLI SIGTERM", 143),
    ] {
        let root = TestRoot::new();
        let mut task = root.sh("exec sleep 1000");
        let id = task.id().to_string();
        let files = tempfile::tempdir().unwrap();
        let before = files.path().join("before");
        let after = files.path().join("after");
        let cli = format!(
            "{} --root {} exec -it {id} -- /bin/sh",
            common::shim().display(),
            root.path().display()
        );
        let tmux = Tmux::new(80, 24, "/bin/sh");
        tmux.keys(&[
            &format!(
                "stty -g > {}; {cli}; echo EXIT=$?; stty -g > {}",
                before.display(),
                after.display()
            ),
            "Enter",
        ]);
        tmux.keys(&["echo ready-$((2+3))", "Enter"]);
        tmux.wait_for("the exec'd shell", |p| has_line(p, "ready-5"));
        match how {
            "task killed" => {
                task.force_stop().unwrap();
            }
            "supervisor killed" => {
                let sup = task.supervisor_pid().unwrap();
                kill(Pid::from_raw(sup), Signal::SIGKILL).unwrap();
            }
            _ => {
                let clis = pids_with(&[root.path().to_str().unwrap(), "exec", "-it"]);
                assert_eq!(clis.len(), 1, "{clis:?}");
                kill(Pid::from_raw(clis[0]), Signal::SIGTERM).unwrap();
            }
        }
        let want = format!("EXIT={code}");
        tmux.wait_for(&format!("the CLI's exit code ({how})"), |p| {
            has_line(p, &want)
        });
        assert!(eventually(Duration::from_secs(5), || fs::read_to_string(
            &after
        )
        .is_ok_and(|s| !s.is_empty())));
        assert_eq!(
            fs::read_to_string(&before).unwrap(),
            fs::read_to_string(&after).unwrap(),
            "terminal settings after: {how}"
        );
    }
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn library_exec_with_a_tty_resizes_and_keeps_the_exit() {
    if !root_or_skip("library_exec_with_a_tty_resizes_and_keeps_the_exit") {
        return;
    }
    let root = TestRoot::new();
    let task = root.sh("exec sleep 1000");
    let mut spec = ExecSpec::new("/bin/sh");
    spec.tty(true).winsize(24, 80);
    let mut s = task.exec(&spec).unwrap();
    let pty = s.pty().unwrap().try_clone_to_owned().unwrap();
    let mut pty = fs::File::from(pty);
    // What the terminal shows, accumulated: a wanted string may come in
    // the same read as the one before it.
    let mut seen = String::new();
    let mut read_until = |pty: &mut fs::File, want: &str| {
        let mut buf = [0u8; 1024];
        while !seen.contains(want) {
            // Never a test that hangs: 10 s (scaled) for each piece.
            let ms = u16::try_from(scaled(Duration::from_secs(10)).as_millis()).unwrap_or(u16::MAX);
            let mut p = [nix::poll::PollFd::new(
                std::os::fd::AsFd::as_fd(&*pty),
                nix::poll::PollFlags::POLLIN,
            )];
            let ready = nix::poll::poll(&mut p, nix::poll::PollTimeout::from(ms)).unwrap();
            assert!(ready > 0, "no {want:?} from the terminal: {seen:?}");
            let n = pty.read(&mut buf).unwrap();
            assert!(n > 0, "EOF before {want:?}: {seen:?}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        seen = seen.split_off(seen.find(want).unwrap() + want.len());
    };
    pty.write_all(b"stty size; echo size-done\n").unwrap();
    read_until(&mut pty, "24 80");
    read_until(&mut pty, "size-done");
    s.resize(33, 77).unwrap();
    pty.write_all(b"stty size; exit 5\n").unwrap();
    read_until(&mut pty, "33 77");
    assert_eq!(s.wait().unwrap().code, Some(5));
    // Without a tty, resize is an error naming the process.
    let mut s = task.exec(&ExecSpec::new("true")).unwrap();
    let e = s.resize(1, 1).unwrap_err().to_string();
    assert!(e.contains(&format!("exec'd process {}", s.pid())), "{e}");
    assert!(s.wait().unwrap().success());
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn an_exec_request_without_its_descriptors_or_program_is_a_bad_request() {
    if !root_or_skip("an_exec_request_without_its_descriptors_or_program_is_a_bad_request") {
        return;
    }
    use std::io::BufRead;
    let root = TestRoot::new();
    let mut task = root.sh("exec sleep 1000");
    let socket = task.dir().join("control.sock");
    for (line, want) in [
        (
            r#"{"version":3,"op":"exec","spec":{"argv":["true"]}}"#,
            "three descriptors",
        ),
        (
            r#"{"version":3,"op":"exec","spec":{"argv":[]}}"#,
            "no program",
        ),
        (
            r#"{"version":3,"op":"exec","spec":{"argv":["true"],"tty":true,"cwd":"relative"}}"#,
            "relative",
        ),
    ] {
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        s.write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut reply = String::new();
        std::io::BufReader::new(&s).read_line(&mut reply).unwrap();
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(v["code"], "bad_request", "{line}: {reply}");
        assert!(
            v["error"].as_str().unwrap().contains(want),
            "{line}: {reply}"
        );
    }
    // Nothing was started; the task runs on.
    assert!(task.state().unwrap().execs.is_empty());
    task.force_stop().unwrap();
}
