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

use serde::{Deserialize, Serialize};

use crate::cgroup::Stats;
use crate::identity::Identity;
use crate::state::TaskState;

/// Largest request or reply line accepted, in bytes.
pub const MAX_LINE: usize = 64 * 1024;

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
}

/// The supervisor's reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// Whether the request was carried out.
    pub ok: bool,
    /// Why not, when not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The state, for [`Request::State`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<TaskState>,
    /// The usage, for [`Request::Stats`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Stats>,
}

impl Reply {
    /// A plain success.
    pub fn ok() -> Reply {
        Reply {
            ok: true,
            error: None,
            state: None,
            stats: None,
        }
    }

    /// A failure with its reason.
    pub fn error(msg: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            error: Some(msg.into()),
            state: None,
            stats: None,
        }
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
    },
    /// It was not; nothing of the task is left running.
    Failed {
        /// The step that failed (`"exec"`, `"chdir"`, `"lock"`, …).
        step: String,
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
        };
        let fail = StartReply::Failed {
            step: "exec".into(),
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
}
