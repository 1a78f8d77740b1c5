//! The control socket and sync pipe messages: one definition for both ends.
//!
//! `control.sock` is a Unix stream socket in the task's state directory.
//! A client sends one request as one line of JSON and reads one line of
//! JSON back; then the connection closes. Operators can talk to it by hand:
//!
//! ```text
//! echo '{"op":"state"}' | socat - UNIX-CONNECT:/run/nomad-shim/web.1/control.sock
//! ```
//!
//! The sync pipe carries exactly one line from the supervisor to the process
//! that started it: [`StartReply`].
//!
//! # Versions
//!
//! Tasks outlive upgrades of the agent and of the binary, so a library may
//! talk to an older or a newer supervisor. The rules (docs/protocol.md):
//!
//! * A request carries `"version"`: [`PROTOCOL_VERSION`] of the client (none
//!   means 1, the protocol before it was versioned); a reply carries the
//!   supervisor's. The supervisor never refuses a request for its version.
//! * Unknown fields are ignored, both ways; fields are only ever added.
//! * An op the supervisor does not know is answered with the error code
//!   [`ErrorCode::Unsupported`] (by version 1: `bad request: unknown
//!   variant …`), never by closing the connection.
//! * A failed reply carries a `code` ([`ErrorCode`]) beside the `error`
//!   text; a version-1 reply has no code, and [`Reply::failure`] derives it
//!   from the text by that version's rules. An unknown code reads as
//!   [`ErrorCode::Unknown`].

use serde::{Deserialize, Serialize};

use crate::cgroup::Stats;
use crate::identity::Identity;
use crate::state::TaskState;
use crate::step::Step;

mod exec;
pub use exec::{ExecExitWire, ExecFailed, ExecRequest, ExecStarted, ExecUser};

/// Largest request or reply line accepted, in bytes.
pub const MAX_LINE: usize = 64 * 1024;

/// The descriptor on which the library passes the task's lock (held since
/// it made the task's directory) to the `__supervise` process it runs: the
/// supervisor keeps that open file, so the lock is never free while a start
/// is on its way. A supervisor that finds there something other than its
/// task's `lock` file takes the lock itself, as before.
pub const LOCK_FD: std::os::fd::RawFd = 3;

/// Set to `1` in the supervisor's environment, it asks the supervisor to
/// keep the sync pipe open after a `started` reply until the task's final
/// state is durable: the pipe's EOF is then the library's wake-up for
/// `wait`. A supervisor that does not know it closes the pipe after the
/// reply, and the library waits on its pidfd instead (docs/protocol.md).
pub const SYNC_UNTIL_EXIT_ENV: &str = "NOMAD_SHIM_SYNC_UNTIL_EXIT";

/// The control protocol's version this library and supervisor speak.
///
/// 1: the unversioned protocol (no `version`, no `code`). 2: `version` in
/// requests and replies, a `code` in failed replies, `unsupported` for an
/// unknown op. 3: the `exec` op (a process started inside the task; its
/// stdio passed with `SCM_RIGHTS`).
pub const PROTOCOL_VERSION: u32 = 3;

/// The ops of [`Request`], as on the wire (for messages and for telling an
/// unknown op from a malformed known one).
pub const OPS: [&str; 9] = [
    "state",
    "signal",
    "shutdown",
    "stats",
    "attach",
    "update",
    "attach_stdio",
    "resize",
    "exec",
];

/// A request to the supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Reply with the current state.
    State,
    /// Send a signal to the task's main process.
    Signal {
        /// The signal number.
        signal: i32,
    },
    /// Graceful stop: send `signal` (default: the spec's kill signal), and
    /// SIGKILL everything left of the task after `timeout_ms` (default: the
    /// spec's kill timeout). Replies at once; the supervisor exits when the
    /// task has ended.
    Shutdown {
        /// The first signal.
        #[serde(default)]
        signal: Option<i32>,
        /// Milliseconds before SIGKILL.
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    /// Reply with CPU, memory and pids usage read from the task's cgroup.
    Stats,
    /// Keep this connection open and write one `\n` to it whenever new
    /// output of the task has been written to its log files; close it once
    /// the task has ended and its final state is durable. (A follower reads
    /// the files; the byte only says "look again".)
    Attach,
    /// Change the limits of the running task (memory, CPU, pids).
    Update {
        /// The new limits; fields left out are not changed, `"max"` removes
        /// one (the JSON of a plain [`Resources`](crate::cgroup::Resources) reads as the same update).
        resources: crate::cgroup::ResourceUpdate,
    },
    /// Attach to the task's own stdin and terminal (a task started with
    /// `stdin: piped` or `tty`). After the `ok` reply the connection carries
    /// raw bytes, no more JSON: from the client, the task's input (to its
    /// stdin pipe, or typed into its terminal); to the client, with a
    /// terminal, the terminal's output (what it wrote while nobody was
    /// attached, up to 64 KiB, first). Without a terminal nothing comes
    /// back: the output is in the log files (`attach` follows them). The
    /// client's end-of-file (`shutdown(SHUT_WR)`) closes the task's stdin
    /// pipe; with a terminal it only detaches. The supervisor closes the
    /// connection once the task has ended and its final state is durable.
    /// One client at a time: another gets [`ErrorCode::Busy`].
    AttachStdio,
    /// Set the size of the task's terminal (`TIOCSWINSZ`; the kernel sends
    /// `SIGWINCH` to its foreground process group).
    Resize {
        /// Lines.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// Start a process inside the running task (its cgroup, namespaces,
    /// root, user, capabilities, rlimits): the reply carries
    /// [`ExecStarted`], the connection stays open, and a final line carries
    /// its exit ([`ExecExitWire`]). Without a tty the request's `sendmsg`
    /// carries the process's stdin, stdout and stderr as `SCM_RIGHTS`.
    Exec {
        /// What to run.
        spec: ExecRequest,
    },
}

/// One request line: the client's protocol version and the request,
/// `{"version":2,"op":"signal","signal":15}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestLine {
    /// The client's [`PROTOCOL_VERSION`]; 1 when absent.
    #[serde(default = "version_1")]
    pub version: u32,
    /// The request.
    #[serde(flatten)]
    pub request: Request,
}

fn version_1() -> u32 {
    1
}

impl RequestLine {
    /// `request` at this library's [`PROTOCOL_VERSION`].
    pub fn new(request: Request) -> RequestLine {
        RequestLine {
            version: PROTOCOL_VERSION,
            request,
        }
    }
}

/// Parses one request line (without its `\n`), as the supervisor does: a
/// line that is not a JSON object, or a known op with bad fields, is a
/// [`ErrorCode::BadRequest`]; an op this version does not know is
/// [`ErrorCode::Unsupported`]. Unknown fields are ignored.
pub fn parse_request(line: &[u8]) -> Result<RequestLine, ReplyError> {
    #[derive(Deserialize)]
    struct Head {
        op: Option<serde_json::Value>,
        version: Option<u32>,
    }
    let bad =
        |e: serde_json::Error| ReplyError::new(ErrorCode::BadRequest, format!("bad request: {e}"));
    // serde reads a struct from an array too (`["state"]` as op "state"):
    // a request is an object, and an array is no request of any version.
    if line.trim_ascii_start().first() == Some(&b'[') {
        return Err(ReplyError::new(
            ErrorCode::BadRequest,
            "bad request: a JSON array; a request is a JSON object",
        ));
    }
    let head: Head = serde_json::from_slice(line).map_err(bad)?;
    match head.op {
        Some(serde_json::Value::String(op)) if !OPS.contains(&op.as_str()) => {
            return Err(ReplyError::new(
                ErrorCode::Unsupported,
                format!(
                    "unsupported op {op:?}: this supervisor speaks protocol version {PROTOCOL_VERSION} (ops: {})",
                    OPS.join(", ")
                ),
            ))
        }
        _ => {}
    }
    // The request alone (not through RequestLine's flatten): serde's
    // messages stay version 1's (`missing field `signal``).
    Ok(RequestLine {
        version: head.version.unwrap_or(1),
        request: serde_json::from_slice(line).map_err(bad)?,
    })
}

/// Why a request failed, by kind: the `code` of a failed [`Reply`].
///
/// Stable `snake_case` names on the wire; a code this library does not know
/// (a newer supervisor's) reads as [`ErrorCode::Unknown`].
///
/// ```
/// use nomad_shim::ErrorCode;
///
/// let code: ErrorCode = serde_json::from_str(r#""not_running""#).unwrap();
/// assert_eq!(code, ErrorCode::NotRunning);
/// // A code of a newer supervisor is not an error to read:
/// let newer: ErrorCode = serde_json::from_str(r#""rate_limited""#).unwrap();
/// assert_eq!(newer, ErrorCode::Unknown);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The task has ended (its exit is being recorded, or is recorded).
    NotRunning,
    /// The request is malformed: not JSON, too long, a missing or invalid
    /// field (an unknown signal number).
    BadRequest,
    /// The op is unknown to this supervisor (an older one).
    Unsupported,
    /// The supervisor is at a limit (too many followers); try later.
    Busy,
    /// The request was valid, and carrying it out failed (`kill(2)`, a
    /// cgroup write or read).
    Failed,
    /// A code this library does not know.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The code's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotRunning => "not_running",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::Busy => "busy",
            ErrorCode::Failed => "failed",
            ErrorCode::Unknown => "unknown",
        }
    }

    /// The code a version-1 supervisor meant, from its message: the only
    /// rule that version had was "starts with `not running`"; the rest
    /// follows its fixed messages (`bad request: unknown variant` is how it
    /// answered an unknown op).
    fn from_v1_message(message: &str) -> ErrorCode {
        if message.starts_with("not running") {
            ErrorCode::NotRunning
        } else if message.starts_with("bad request: unknown variant") {
            ErrorCode::Unsupported
        } else if message.starts_with("bad request")
            || message == "request too long"
            || message.starts_with("unknown signal")
        {
            ErrorCode::BadRequest
        } else if message == "too many followers" {
            ErrorCode::Busy
        } else {
            ErrorCode::Failed
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed reply, typed: its code and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// What failed, for people (`unknown signal 99`).
    pub message: String,
}

impl ReplyError {
    /// A failure of kind `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ReplyError {
        ReplyError {
            code,
            message: message.into(),
        }
    }
}

/// The supervisor's reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The supervisor's [`PROTOCOL_VERSION`]; absent from version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Whether the request was carried out.
    pub ok: bool,
    /// What kind of failure, when not (absent from version 1: see
    /// [`Reply::failure`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    /// Why not, when not. A plain string, as in version 1, so that an older
    /// library still reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The state, for [`Request::State`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<TaskState>,
    /// The usage, for [`Request::Stats`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Stats>,
    /// For [`Request::Stats`]: the task's CPU use, in percent of one CPU,
    /// between the supervisor's previous sample and this one (absent from
    /// older supervisors, and without the cpu/cpuacct controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    /// The span of [`cpu_percent`](Self::cpu_percent), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_window_ms: Option<u64>,
    /// For [`Request::Exec`]: the process runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecStarted>,
    /// For [`Request::Exec`], failed: the child's step that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_failed: Option<ExecFailed>,
    /// For [`Request::Exec`], the final line: how the process ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExecExitWire>,
}

impl Reply {
    /// A plain success.
    pub fn ok() -> Reply {
        Reply {
            version: Some(PROTOCOL_VERSION),
            ok: true,
            code: None,
            error: None,
            state: None,
            stats: None,
            cpu_percent: None,
            cpu_window_ms: None,
            exec: None,
            exec_failed: None,
            exit: None,
        }
    }

    /// A failure of kind `code`.
    pub fn fail(code: ErrorCode, msg: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            code: Some(code),
            error: Some(msg.into()),
            ..Reply::ok()
        }
    }

    /// A failure of an operation that was tried ([`ErrorCode::Failed`]).
    pub fn error(msg: impl Into<String>) -> Reply {
        Reply::fail(ErrorCode::Failed, msg)
    }

    /// The failure, typed; `None` for a success. A reply without a code (a
    /// version-1 supervisor's) gets one derived from its message.
    pub fn failure(&self) -> Option<ReplyError> {
        if self.ok {
            return None;
        }
        let message = self.error.clone().unwrap_or_default();
        let code = self
            .code
            .unwrap_or_else(|| ErrorCode::from_v1_message(&message));
        Some(ReplyError { code, message })
    }
}

impl From<ReplyError> for Reply {
    fn from(e: ReplyError) -> Reply {
        Reply::fail(e.code, e.message)
    }
}

/// The one line the supervisor writes on the sync pipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StartReply {
    /// The task's program was executed.
    Started {
        /// The supervisor.
        supervisor: Identity,
        /// The task's main process.
        task: Identity,
        /// Limits skipped under best effort, and the like.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        warnings: Vec<String>,
        /// The supervisor keeps the pipe open until the task's final state
        /// is durable ([`SYNC_UNTIL_EXIT_ENV`] asked for it): its EOF is
        /// then "exit recorded, or supervisor gone". Absent (an older
        /// supervisor, or not asked): EOF follows the reply.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        until_exit: bool,
    },
    /// It was not; nothing of the task is left running.
    Failed {
        /// The step that failed, by its stable name (`"exec"`, `"chdir"`,
        /// `"lock"`, …; [`Step::Unknown`] for a name this library does not
        /// know).
        step: Step,
        /// The errno, when a system call failed.
        errno: Option<i32>,
        /// A message naming what failed: `exec /x: No such file or directory`.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_by_op() {
        let r: Request = serde_json::from_str(r#"{"op":"shutdown","signal":15}"#).unwrap();
        assert_eq!(
            r,
            Request::Shutdown {
                signal: Some(15),
                timeout_ms: None
            }
        );
        assert_eq!(
            serde_json::to_string(&Request::State).unwrap(),
            r#"{"op":"state"}"#
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"reboot"}"#).is_err());
    }

    #[test]
    fn start_replies_round_trip() {
        let ok = StartReply::Started {
            supervisor: Identity {
                pid: 10,
                start_time: 1,
            },
            task: Identity {
                pid: 11,
                start_time: 2,
            },
            warnings: vec!["skipped io_weight".into()],
            until_exit: true,
        };
        let fail = StartReply::Failed {
            step: Step::Exec,
            errno: Some(2),
            message: "exec /x: No such file or directory".into(),
        };
        for r in [ok, fail] {
            assert_eq!(
                serde_json::from_str::<StartReply>(&serde_json::to_string(&r).unwrap()).unwrap(),
                r
            );
        }
    }

    #[test]
    fn a_started_line_of_an_older_supervisor_says_no_exit_notice() {
        // The line of a supervisor before `until_exit` (docs/protocol.md):
        // EOF follows it, so the library must not take EOF for the exit.
        let old = r#"{"supervisor":{"pid":25012,"start_time":161995},"task":{"pid":25013,"start_time":161995}}"#;
        assert!(matches!(
            serde_json::from_str::<StartReply>(old).unwrap(),
            StartReply::Started {
                until_exit: false,
                ..
            }
        ));
        // And `until_exit: false` is not written: an older library reads
        // the same line as before.
        let line =
            serde_json::to_string(&serde_json::from_str::<StartReply>(old).unwrap()).unwrap();
        assert!(!line.contains("until_exit"), "{line}");
    }

    #[test]
    fn a_request_line_carries_the_version_and_today_lines_still_parse() {
        assert_eq!(
            serde_json::to_string(&RequestLine::new(Request::Signal { signal: 15 })).unwrap(),
            r#"{"version":3,"op":"signal","signal":15}"#
        );
        // Version-1 lines (no version) are version 1.
        let line = parse_request(br#"{"op":"signal","signal":15}"#).unwrap();
        assert_eq!(
            (line.version, line.request),
            (1, Request::Signal { signal: 15 })
        );
        // Unknown fields are ignored, on a unit op and on one with fields.
        let line = parse_request(br#"{"version":9,"op":"state","since":"x"}"#).unwrap();
        assert_eq!((line.version, line.request), (9, Request::State));
        let line = parse_request(br#"{"op":"shutdown","grace":{"a":1},"signal":2}"#).unwrap();
        assert_eq!(
            line.request,
            Request::Shutdown {
                signal: Some(2),
                timeout_ms: None
            }
        );
    }

    #[test]
    fn an_unknown_op_is_unsupported_and_a_bad_line_a_bad_request() {
        let e = parse_request(br#"{"version":4,"op":"checkpoint","to":"/x"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::Unsupported);
        assert_eq!(
            e.message,
            "unsupported op \"checkpoint\": this supervisor speaks protocol version 3 \
             (ops: state, signal, shutdown, stats, attach, update, attach_stdio, resize, exec)"
        );
        // The messages of version 1, kept.
        for (line, message) in [
            (
                &b"not json"[..],
                "bad request: expected ident at line 1 column 2",
            ),
            (br#"{"op":"signal"}"#, "bad request: missing field `signal`"),
        ] {
            let e = parse_request(line).unwrap_err();
            assert_eq!(
                (e.code, e.message.as_str()),
                (ErrorCode::BadRequest, message)
            );
        }
        for line in [&br#"{"op":7}"#[..], br#"{"nop":"state"}"#, b"[]", b"{}"] {
            let e = parse_request(line).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest, "{e:?}");
        }
    }

    #[test]
    fn replies_carry_a_code_beside_a_plain_error_string() {
        let r = Reply::fail(ErrorCode::NotRunning, "not running: the task has exited");
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"version":3,"ok":false,"code":"not_running","error":"not running: the task has exited"}"#
        );
        assert_eq!(
            serde_json::to_string(&Reply::ok()).unwrap(),
            r#"{"version":3,"ok":true}"#
        );
        assert_eq!(Reply::ok().failure(), None);
        // A code from a newer supervisor.
        let r: Reply =
            serde_json::from_str(r#"{"version":7,"ok":false,"code":"quota","error":"q"}"#).unwrap();
        assert_eq!(r.failure(), Some(ReplyError::new(ErrorCode::Unknown, "q")));
    }

    /// Failed replies of the version-1 supervisor, recorded from the binary
    /// of commit 2377948: the code derived from the text when there is none.
    #[test]
    fn version_1_replies_get_their_code_from_the_text() {
        for (line, code) in [
            (
                r#"{"ok":false,"error":"not running: the task has exited"}"#,
                ErrorCode::NotRunning,
            ),
            (
                r#"{"ok":false,"error":"unknown signal 999"}"#,
                ErrorCode::BadRequest,
            ),
            (
                r#"{"ok":false,"error":"bad request: unknown variant `reboot`, expected one of `state`, `signal`, `shutdown`, `stats`, `attach`, `update` at line 1 column 14"}"#,
                ErrorCode::Unsupported,
            ),
            (
                r#"{"ok":false,"error":"bad request: expected ident at line 1 column 2"}"#,
                ErrorCode::BadRequest,
            ),
            (
                r#"{"ok":false,"error":"request too long"}"#,
                ErrorCode::BadRequest,
            ),
            (
                r#"{"ok":false,"error":"too many followers"}"#,
                ErrorCode::Busy,
            ),
            (
                r#"{"ok":false,"error":"kill 42 SIGTERM: Operation not permitted"}"#,
                ErrorCode::Failed,
            ),
        ] {
            let r: Reply = serde_json::from_str(line).unwrap();
            assert_eq!(r.version, None);
            assert_eq!(r.failure().unwrap().code, code, "{line}");
        }
        // The rule applies only without a code: a code always wins.
        let r: Reply =
            serde_json::from_str(r#"{"ok":false,"code":"failed","error":"not running yet"}"#)
                .unwrap();
        assert_eq!(r.failure().unwrap().code, ErrorCode::Failed);
        let ok: Reply = serde_json::from_str(r#"{"ok":true}"#).unwrap();
        assert_eq!(ok.failure(), None);
    }

    /// Start replies of the binary before the steps were typed: "exec" is
    /// still `Step::Exec` (so 126/127 still follow), an isolation step's
    /// old phrase reads as `Step::Unknown`, the message is kept.
    #[test]
    fn version_1_start_replies_still_read() {
        let r: StartReply = serde_json::from_str(
            r#"{"step":"exec","errno":2,"message":"exec /x: No such file or directory"}"#,
        )
        .unwrap();
        assert!(matches!(
            r,
            StartReply::Failed {
                step: Step::Exec,
                errno: Some(2),
                ..
            }
        ));
        let r: StartReply = serde_json::from_str(
            r#"{"step":"set rlimit","errno":1,"message":"set rlimit NOFILE: Operation not permitted"}"#,
        )
        .unwrap();
        let StartReply::Failed { step, message, .. } = r else {
            panic!("{r:?}")
        };
        assert_eq!(step, Step::Unknown);
        assert_eq!(message, "set rlimit NOFILE: Operation not permitted");
        let r = StartReply::Failed {
            step: Step::JoinCgroup,
            errno: Some(13),
            message: "join cgroup task: Permission denied".into(),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"step":"join_cgroup","errno":13,"message":"join cgroup task: Permission denied"}"#
        );
    }

    /// Successful replies of the version-1 supervisor, recorded: the new
    /// `Reply` reads them, typed state included.
    #[test]
    fn version_1_success_replies_read_typed() {
        let state = r#"{"ok":true,"state":{"version":1,"id":"rec","status":"running","supervisor":{"pid":27738,"start_time":257470},"task":{"pid":27739,"start_time":257470},"boot_id":"807876b2-216e-4833-b118-4d91338302da","cgroup":{"cpu":"/sys/fs/cgroup/cpu/contracts-rec-2305/rec","cpuacct":"/sys/fs/cgroup/cpuacct/contracts-rec-2305/rec","devices":"/sys/fs/cgroup/devices/contracts-rec-2305/rec","freezer":"/sys/fs/cgroup/freezer/contracts-rec-2305/rec","memory":"/sys/fs/cgroup/memory/contracts-rec-2305/rec","pids":"/sys/fs/cgroup/pids/contracts-rec-2305/rec"},"created_at":"2026-12-05T17:27:39.609826Z","started_at":"2026-12-05T17:27:39.617435Z","finished_at":null,"exit":null}}"#;
        let r: Reply = serde_json::from_str(state).unwrap();
        assert_eq!((r.version, r.failure()), (None, None));
        let s = r.state.unwrap();
        assert!(matches!(s.cgroup, Some(crate::cgroup::CgroupPaths::V1(ref m)) if m.len() == 6));
        assert_eq!(
            s.started_at.unwrap().to_string(),
            "2026-12-05T17:27:39.617435Z"
        );
        let stats = r#"{"ok":true,"stats":{"cpu":{"usage_ns":442833,"user_ns":0,"system_ns":0,"nr_periods":0,"nr_throttled":0,"throttled_ns":0},"memory":{"current":245760,"peak":262144,"rss":98304,"cache":0,"swap":0},"pids":{"current":1}}}"#;
        let r: Reply = serde_json::from_str(stats).unwrap();
        assert_eq!(r.stats.unwrap().memory.unwrap().current, 245760);
    }

    /// `OPS` is what `parse_request` calls known: every op of `Request`.
    #[test]
    fn ops_lists_every_request() {
        let all = [
            Request::State,
            Request::Signal { signal: 1 },
            Request::Shutdown {
                signal: None,
                timeout_ms: None,
            },
            Request::Stats,
            Request::Attach,
            Request::Update {
                resources: crate::cgroup::ResourceUpdate::default(),
            },
            Request::AttachStdio,
            Request::Resize {
                rows: 30,
                cols: 100,
            },
            Request::Exec {
                spec: ExecRequest {
                    argv: vec!["id".into()],
                    ..ExecRequest::default()
                },
            },
        ];
        // Exhaustive: a new op fails to compile here until it is listed.
        let op = |r: &Request| match r {
            Request::State => "state",
            Request::Signal { .. } => "signal",
            Request::Shutdown { .. } => "shutdown",
            Request::Stats => "stats",
            Request::Attach => "attach",
            Request::Update { .. } => "update",
            Request::AttachStdio => "attach_stdio",
            Request::Resize { .. } => "resize",
            Request::Exec { .. } => "exec",
        };
        assert_eq!(all.len(), OPS.len());
        for r in all {
            assert!(OPS.contains(&op(&r)));
            let v = serde_json::to_value(&r).unwrap();
            assert!(OPS.contains(&v["op"].as_str().unwrap()), "{v}");
            let line = serde_json::to_vec(&RequestLine::new(r.clone())).unwrap();
            assert_eq!(parse_request(&line).unwrap().request, r);
        }
    }
}
