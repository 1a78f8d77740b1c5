//! The control protocol across versions (docs/protocol.md): tasks outlive
//! upgrades of the agent and of the binary, so
//!
//! (a) today's (version-1) request lines, sent to the new supervisor over
//!     its real `control.sock`, get replies that a copy of version 1's
//!     `Reply` parses, with version 1's texts; an unknown op gets a reply,
//!     not a broken connection;
//! (b) the new library, talking to a version-1 supervisor, sends lines
//!     version 1's parser takes and understands that supervisor's replies
//!     (no `code`: derived from the text). The old supervisor is a fake
//!     socket swapped in for the real one, answering exactly the lines the
//!     binary of commit 2377948 (protocol unchanged since 56adf33) was
//!     recorded answering.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::Signal;
use nomad_shim::protocol::ErrorCode;
use nomad_shim::{Error, Identity, TaskSpec};
use serde::Deserialize;

use crate::common::{root_or_skip, scaled, TestRoot};

/// A copy of version 1's `Reply`, field types as they were (the state's
/// cgroup untyped, its timestamps strings): what an older library parses.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct V1Reply {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    state: Option<V1State>,
    #[serde(default)]
    stats: Option<nomad_shim::cgroup::Stats>,
}

/// A copy of version 1's `TaskState`.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct V1State {
    version: u32,
    id: String,
    status: String,
    supervisor: Option<Identity>,
    task: Option<Identity>,
    boot_id: String,
    cgroup: Option<serde_json::Value>,
    created_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    exit: Option<serde_json::Value>,
    #[serde(default)]
    warnings: Vec<String>,
}

/// A copy of version 1's `Request`: what an older supervisor parses.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[allow(dead_code)]
enum V1Request {
    State,
    Signal {
        signal: i32,
    },
    Shutdown {
        #[serde(default)]
        signal: Option<i32>,
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    Stats,
    Attach,
    Update {
        resources: serde_json::Value,
    },
}

/// Version 1's messages, recorded from its binary.
const V1_NOT_JSON: &str = "bad request: expected ident at line 1 column 2";
const V1_MISSING_FIELD: &str = "bad request: missing field `signal`";
/// A stats reply of version 1, recorded.
const V1_STATS: &str = r#"{"ok":true,"stats":{"cpu":{"usage_ns":442833,"user_ns":0,"system_ns":0,"nr_periods":0,"nr_throttled":0,"throttled_ns":0},"memory":{"current":245760,"peak":262144,"rss":98304,"cache":0,"swap":0},"pids":{"current":1}}}"#;

/// One exchange over a control socket: a line out, a line back.
fn exchange(sock: &Path, line: &str) -> String {
    let mut s = UnixStream::connect(sock).unwrap_or_else(|e| panic!("{}: {e}", sock.display()));
    s.set_read_timeout(Some(scaled(Duration::from_secs(5))))
        .unwrap();
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).unwrap();
    assert!(
        reply.ends_with('\n'),
        "{line}: the connection ended without a reply line: {reply:?}"
    );
    reply.trim_end().to_owned()
}

fn sleeper(root: &TestRoot) -> nomad_shim::Task {
    let mut spec = TaskSpec::new("/bin/sleep");
    spec.args(["1000"]);
    root.exec.start(&spec).unwrap()
}

fn control_sock(root: &TestRoot, task: &nomad_shim::Task) -> PathBuf {
    let p = root.path().join(task.id().as_str()).join("control.sock");
    assert!(p.as_os_str().len() < 108, "{}", p.display());
    p
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn version_1_request_lines_get_replies_a_version_1_library_reads() {
    if !root_or_skip("version_1_request_lines_get_replies_a_version_1_library_reads") {
        return;
    }
    let root = TestRoot::new();
    let mut task = sleeper(&root);
    let sock = control_sock(&root, &task);
    let ask = |line: &str| {
        let raw = exchange(&sock, line);
        let reply: V1Reply =
            serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{line} -> {raw}: {e}"));
        let code = serde_json::from_str::<serde_json::Value>(&raw).unwrap()["code"].clone();
        (reply, code, raw)
    };

    // Version 1's lines, as its library and operators sent them.
    let (r, _, raw) = ask(r#"{"op":"state"}"#);
    let state = r.state.unwrap_or_else(|| panic!("{raw}"));
    assert!(r.ok && r.error.is_none(), "{raw}");
    assert_eq!(
        (state.version, state.id.as_str(), state.status.as_str()),
        (1, task.id().as_str(), "running")
    );
    assert!(
        state.cgroup.is_some() && state.finished_at.is_none(),
        "{raw}"
    );
    humantime::parse_rfc3339(&state.created_at).unwrap();
    assert_eq!(state.created_at.len(), "2026-12-05T17:27:43.076131Z".len());

    let (r, _, raw) = ask(r#"{"op":"stats"}"#);
    assert!(r.ok && r.stats.is_some(), "{raw}");
    let (r, _, raw) = ask(r#"{"op":"update","resources":{"memory_max":134217728}}"#);
    assert!(r.ok, "{raw}");

    // Refusals: version 1's texts, and now a code beside them.
    for (line, text, code) in [
        (
            r#"{"op":"signal","signal":999}"#,
            "unknown signal 999",
            "bad_request",
        ),
        ("not json", V1_NOT_JSON, "bad_request"),
        (r#"{"op":"signal"}"#, V1_MISSING_FIELD, "bad_request"),
        (
            r#"{"op":"update","resources":{"memory_max":0}}"#,
            "invalid resources: memory_max = 0: must be at least 1 byte",
            "bad_request",
        ),
    ] {
        let (r, c, raw) = ask(line);
        assert!(!r.ok, "{raw}");
        assert_eq!(r.error.as_deref(), Some(text), "{line}");
        assert_eq!(c, code, "{line} -> {raw}");
    }
    // An op this supervisor does not know: a typed refusal on a reply line.
    let (r, c, raw) = ask(r#"{"op":"reboot"}"#);
    assert!(!r.ok, "{raw}");
    assert_eq!(c, "unsupported", "{raw}");
    assert!(
        r.error
            .as_deref()
            .unwrap()
            .starts_with("unsupported op \"reboot\""),
        "{raw}"
    );
    // A newer library's line: a higher version, fields nobody knows yet.
    let (r, _, raw) = ask(r#"{"version":99,"op":"stats","since":{"seq":3}}"#);
    assert!(r.ok && r.stats.is_some(), "{raw}");
    let raw = exchange(&sock, r#"{"version":99,"op":"checkpoint","to":"/x"}"#);
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        (v["ok"].clone(), v["code"].clone()),
        (false.into(), "unsupported".into())
    );
    assert_eq!(v["version"], nomad_shim::protocol::PROTOCOL_VERSION);

    // Version 1's stop, and the library sees the task end.
    let (r, _, raw) = ask(r#"{"op":"shutdown","signal":15,"timeout_ms":1000}"#);
    assert!(r.ok, "{raw}");
    assert_eq!(task.wait().unwrap().signal(), Some(libc::SIGTERM));
}

/// Puts a fake version-1 supervisor on a running task's `control.sock`
/// (the real one moved aside), answering each connection with the next of
/// `replies`; hands back every line it was sent. Restores the real socket
/// when dropped.
struct FakeV1 {
    sock: PathBuf,
    aside: PathBuf,
    lines: mpsc::Receiver<String>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeV1 {
    fn new(sock: PathBuf, replies: Vec<&'static str>) -> FakeV1 {
        let aside = sock.with_extension("real");
        std::fs::rename(&sock, &aside).unwrap();
        let listener = UnixListener::bind(&sock).unwrap();
        let (tx, lines) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            for reply in replies {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                let mut line = String::new();
                let mut reader = BufReader::new(&stream);
                // An empty line: the test is over (see Drop).
                if reader.read_line(&mut line).is_err() || line.is_empty() {
                    return;
                }
                let _ = tx.send(line.trim_end().to_owned());
                let _ = (&stream).write_all(format!("{reply}\n").as_bytes());
            }
        });
        FakeV1 {
            sock,
            aside,
            lines,
            thread: Some(thread),
        }
    }

    /// The line the library sent, parsed as version 1's supervisor did.
    fn sent(&self) -> V1Request {
        let line = self
            .lines
            .recv_timeout(scaled(Duration::from_secs(5)))
            .expect("the library sent nothing");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("version 1 cannot parse {line}: {e}"))
    }
}

impl Drop for FakeV1 {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            // Ends a thread still waiting in accept (a test that failed
            // early): an empty connection.
            if !t.is_finished() {
                drop(UnixStream::connect(&self.sock));
            }
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.sock);
        let _ = std::fs::rename(&self.aside, &self.sock);
    }
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn the_new_library_understands_a_version_1_supervisor() {
    if !root_or_skip("the_new_library_understands_a_version_1_supervisor") {
        return;
    }
    let root = TestRoot::new();
    let mut task = sleeper(&root);
    let fake = FakeV1::new(
        control_sock(&root, &task),
        vec![
            V1_STATS,
            r#"{"ok":true}"#,
            r#"{"ok":false,"error":"not running: the task has exited"}"#,
            r#"{"ok":false,"error":"unknown signal 64"}"#,
            // An even older supervisor, without `update`.
            r#"{"ok":false,"error":"bad request: unknown variant `update`, expected one of `state`, `signal`, `shutdown`, `stats`, `attach` at line 1 column 35"}"#,
            r#"{"ok":false,"error":"kill 4101 SIGHUP: Operation not permitted"}"#,
        ],
    );

    let stats = task.stats().unwrap();
    assert_eq!(fake.sent(), V1Request::Stats);
    assert_eq!(stats.memory.map(|m| m.current), Some(245760));

    task.signal(Signal::SIGUSR1).unwrap();
    assert_eq!(fake.sent(), V1Request::Signal { signal: 10 });

    // "not running" without a code: version 1's rule, NotRunning.
    let e = task.signal(Signal::SIGTERM).unwrap_err();
    assert_eq!(fake.sent(), V1Request::Signal { signal: 15 });
    assert!(matches!(e, Error::NotRunning { .. }), "{e}");

    let e = task.signal(Signal::SIGUSR2).unwrap_err();
    assert_eq!(fake.sent(), V1Request::Signal { signal: 12 });
    assert!(
        matches!(&e, Error::Refused { code: ErrorCode::BadRequest, reason, .. } if reason == "unknown signal 64"),
        "{e}"
    );

    let limits = nomad_shim::cgroup::Resources {
        memory_max: Some(128 << 20),
        ..Default::default()
    };
    let e = task.update_resources(&limits).unwrap_err();
    let V1Request::Update { resources } = fake.sent() else {
        panic!("not an update")
    };
    assert_eq!(resources["memory_max"], 128 << 20);
    assert!(
        matches!(
            &e,
            Error::Refused {
                code: ErrorCode::Unsupported,
                request: "update",
                ..
            }
        ),
        "{e}"
    );

    let e = task.signal(Signal::SIGHUP).unwrap_err();
    assert_eq!(fake.sent(), V1Request::Signal { signal: 1 });
    assert!(
        matches!(
            &e,
            Error::Refused {
                code: ErrorCode::Failed,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "task {}: the supervisor refused signal: kill 4101 SIGHUP: Operation not permitted",
            task.id()
        )
    );

    // The real supervisor back; it still serves, and stops the task.
    drop(fake);
    let exit = task.stop(None, None).unwrap();
    assert_eq!(exit.signal(), Some(libc::SIGTERM));
}

/// Runs `nomad-shim __supervise` by hand, as a library of either version
/// would: task directory and `spec.json` made, stdout on a pipe, the
/// environment empty or with `NOMAD_SHIM_SYNC_UNTIL_EXIT=1`. Returns the
/// pipe's read end once the reply line is read, and the task's directory.
fn supervise_by_hand(
    root: &TestRoot,
    id: &str,
    ask: bool,
) -> (std::fs::File, PathBuf, nomad_shim::protocol::StartReply) {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let state_root = nomad_shim::state::Root::new(root.path());
    let dir = state_root
        .create_task_dir(&nomad_shim::state::TaskId::new(id).unwrap())
        .unwrap();
    let mut spec = TaskSpec::new("/bin/sleep");
    spec.args(["2"])
        .id(id)
        .cgroup_parent(root.cgroup_parent.clone());
    nomad_shim::state::write_json(dir.fd(), dir.path(), "spec.json", &spec, 0o600, false).unwrap();
    let (r, w) = std::io::pipe().unwrap();
    let mut cmd = Command::new(crate::common::shim());
    cmd.arg("__supervise")
        .arg(root.path())
        .arg(id)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(w)
        .stderr(Stdio::null());
    if ask {
        cmd.env(nomad_shim::protocol::SYNC_UNTIL_EXIT_ENV, "1");
    }
    // The intermediate: it exits as soon as it has forked the supervisor.
    let out = crate::common::wait_output(crate::common::spawn(&mut cmd));
    assert!(out.status.success(), "{out:?}");
    drop(cmd);
    let mut r = std::fs::File::from(std::os::fd::OwnedFd::from(r));
    let mut line = Vec::new();
    let mut byte = [0u8];
    while !line.ends_with(b"\n") {
        assert_eq!(r.read(&mut byte).unwrap(), 1, "EOF before the reply line");
        line.push(byte[0]);
    }
    let reply = serde_json::from_slice(&line).unwrap();
    (r, dir.path().to_owned(), reply)
}

/// Whether the pipe reaches EOF within `timeout`; panics on data.
fn eof_within(r: &mut std::fs::File, timeout: Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::io::Read;
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(r.as_fd(), PollFlags::POLLIN)];
    let ms = PollTimeout::try_from(timeout.as_millis() as i32).unwrap();
    if poll(&mut fds, ms).unwrap() == 0 {
        return false;
    }
    let mut buf = [0u8; 16];
    assert_eq!(r.read(&mut buf).unwrap(), 0, "nothing follows the reply");
    true
}

/// The sync pipe across versions (docs/protocol.md, "The sync pipe"): a
/// library that does not ask (an older one) gets EOF right after the reply,
/// while the task still runs; one that asks gets EOF only once the final
/// state is durable, and then reads `exited` with the exact code.
#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn the_sync_pipe_ends_at_the_reply_unless_the_library_asks_for_the_exit() {
    if !root_or_skip("the_sync_pipe_ends_at_the_reply_unless_the_library_asks_for_the_exit") {
        return;
    }
    use nomad_shim::protocol::StartReply;
    let root = TestRoot::new();
    let read_state = |dir: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap()
    };

    let (mut r, dir, reply) = supervise_by_hand(&root, "old", false);
    assert!(
        matches!(
            reply,
            StartReply::Started {
                until_exit: false,
                ..
            }
        ),
        "{reply:?}"
    );
    assert!(
        eof_within(&mut r, scaled(Duration::from_millis(300))),
        "not asked: EOF follows the reply"
    );
    assert_eq!(
        read_state(&dir)["status"],
        "running",
        "EOF came at the reply"
    );

    let (mut r, dir, reply) = supervise_by_hand(&root, "new", true);
    assert!(
        matches!(
            reply,
            StartReply::Started {
                until_exit: true,
                ..
            }
        ),
        "{reply:?}"
    );
    assert!(
        !eof_within(&mut r, Duration::from_millis(200)),
        "asked: no EOF while the task (sleep 2) runs"
    );
    assert!(eof_within(&mut r, scaled(Duration::from_secs(10))));
    let state = read_state(&dir);
    assert_eq!(
        state["status"], "exited",
        "EOF before the final state: {state}"
    );
    assert_eq!(state["exit"]["code"], 0, "{state}");
    // Both supervisors finish as before: their tasks are removable.
    for id in ["old", "new"] {
        let mut task = root.exec.open(id).unwrap();
        assert!(task.wait().unwrap().success());
        root.exec.remove(id, false).unwrap();
    }
}
