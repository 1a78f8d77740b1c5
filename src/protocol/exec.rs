//! The `exec` op's wire types (protocol version 3): a request to start a
//! process inside a running task, the reply once it runs, and the final
//! line with its exit.
//!
//! ```text
//! client ── {"version":3,"op":"exec","spec":{…}} + SCM_RIGHTS [stdin, stdout, stderr] ──▶ supervisor
//!        ◀── {"version":3,"ok":true,"exec":{"pid":4242}}  (+ SCM_RIGHTS [pty master] with a tty)
//!        ◀── {"version":3,"ok":true,"exit":{"code":3,"signal":null,"core_dumped":false}}
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::step::Step;

/// What to run in the task (the `spec` of an `exec` request).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExecRequest {
    /// The program and its arguments (`argv[0]` is looked up like the
    /// task's own program: `PATH` inside the task's root).
    pub argv: Vec<String>,
    /// Added to (and overriding) the task's environment.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The working directory inside the task; the task's own when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    /// Another user than the task's (resolved by the client).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<ExecUser>,
    /// A pseudo-terminal of the task's own devpts (the process opens it in
    /// the task's root); its master comes back with the reply; the client
    /// sends no fds.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
    /// The terminal's size at start (with `tty`): rows, columns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub winsize: Option<(u16, u16)>,
}

/// A user given by number (the client resolves names with NSS).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExecUser {
    /// The uid.
    pub uid: u32,
    /// The gid.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// The user's name (`USER`, `LOGNAME`), empty if unknown.
    pub name: String,
    /// The user's home (`HOME`), empty if unknown.
    pub home: String,
}

/// The reply to `exec` once the process runs (its program was executed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecStarted {
    /// The process's pid, as the host sees it.
    pub pid: i32,
}

/// Why an exec'd process did not start: the step of the child that failed
/// (`exec` for a program not found, 127, or not executable, 126).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecFailed {
    /// The failed step.
    pub step: Step,
    /// Its errno.
    pub errno: Option<i32>,
}

/// The exact end of an exec'd process (the final line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecExitWire {
    /// The exit code, when it exited.
    pub code: Option<i32>,
    /// The signal that ended it.
    pub signal: Option<i32>,
    /// Whether it dumped core.
    #[serde(default)]
    pub core_dumped: bool,
}

impl ExecExitWire {
    /// From a raw wait status.
    pub fn from_wait_status(status: libc::c_int) -> ExecExitWire {
        if libc::WIFEXITED(status) {
            ExecExitWire {
                code: Some(libc::WEXITSTATUS(status)),
                signal: None,
                core_dumped: false,
            }
        } else {
            ExecExitWire {
                code: None,
                signal: Some(libc::WTERMSIG(status)),
                core_dumped: libc::WCOREDUMP(status),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_statuses_become_exact_exits() {
        let exited = ExecExitWire::from_wait_status(3 << 8);
        assert_eq!(
            (exited.code, exited.signal, exited.core_dumped),
            (Some(3), None, false)
        );
        let killed = ExecExitWire::from_wait_status(libc::SIGKILL);
        assert_eq!((killed.code, killed.signal), (None, Some(9)));
        let core = ExecExitWire::from_wait_status(libc::SIGSEGV | 0x80);
        assert_eq!((core.signal, core.core_dumped), (Some(11), true));
    }

    #[test]
    fn an_exec_request_round_trips_and_stays_small() {
        let spec = ExecRequest {
            argv: vec!["id".into(), "-u".into()],
            ..ExecRequest::default()
        };
        let line = serde_json::to_string(&crate::protocol::RequestLine::new(
            crate::protocol::Request::Exec { spec: spec.clone() },
        ))
        .unwrap();
        assert_eq!(
            line,
            r#"{"version":3,"op":"exec","spec":{"argv":["id","-u"]}}"#
        );
        let back = crate::protocol::parse_request(line.as_bytes()).unwrap();
        assert_eq!(back.request, crate::protocol::Request::Exec { spec });
        // A reply of an older supervisor without the new fields still reads.
        let r: crate::protocol::Reply = serde_json::from_str(r#"{"ok":true}"#).unwrap();
        assert_eq!((r.exec, r.exit), (None, None));
    }
}
