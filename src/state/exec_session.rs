//! A live exec session in `state.json` (`execs`): a process started inside
//! the running task with `nomad-shim exec` or `Task::exec`, listed while it
//! runs and removed when it ends.

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// One live exec session of a task (`state.json`'s `execs`).
///
/// ```
/// use nomad_shim::ExecEntry;
///
/// let e: ExecEntry = serde_json::from_str(
///     r#"{"pid":4242,"argv":["sh","-c","id"],"started_at":"2026-12-05T19:00:00.000000Z"}"#,
/// ).unwrap();
/// assert_eq!((e.pid, e.argv[0].as_str(), e.tty), (4242, "sh", false));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecEntry {
    /// The process's pid, as the host sees it.
    pub pid: i32,
    /// Its program and arguments.
    pub argv: Vec<String>,
    /// When its program was executed.
    pub started_at: Timestamp,
    /// Whether it runs on a pseudo-terminal.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
}
