//! The library's top-level error: what the agent sees.

use std::io;
use std::path::PathBuf;

use crate::protocol::ErrorCode;
use crate::spec::SpecError;
use crate::state::{StateError, TaskId};
use crate::step::Step;

/// Everything that can go wrong in [`Executor`](crate::Executor) and
/// [`Task`](crate::Task), each variant naming the task, path or pid.
///
/// # Examples
///
/// ```
/// use nomad_shim::{Error, Executor, TaskSpec};
///
/// fn start(executor: &Executor, spec: &TaskSpec) -> Result<(), String> {
///     match executor.start(spec) {
///         Ok(task) => Ok(println!("started {}", task.id())),
///         // The CLI's exit codes 127 and 126.
///         Err(e) if e.is_not_found() => Err(format!("no such program: {e}")),
///         Err(e) if e.is_not_executable() => Err(format!("cannot execute: {e}")),
///         Err(Error::Spec(e)) => Err(format!("fix the spec's {}: {}", e.field, e.reason)),
///         Err(e) => Err(e.to_string()),
///     }
/// }
///
/// let executor = Executor::with_root(std::env::temp_dir().join("nomad-shim-doc")).shim_path("/bin/true");
/// // Refused before anything is created or run.
/// assert_eq!(start(&executor, &TaskSpec::new("")).unwrap_err(), "fix the spec's program: is empty");
/// ```
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec cannot be run.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Reading or writing the task's state failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The user or group cannot be resolved, or the isolation is invalid.
    #[error(transparent)]
    Isolate(#[from] crate::isolate::IsolateError),
    /// A cgroup operation failed (in the library: cleaning up after a lost
    /// supervisor).
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::Error),
    /// The `nomad-shim` binary was not found.
    #[error("cannot find the nomad-shim binary (tried {tried})")]
    ShimNotFound {
        /// The places tried, in order.
        tried: String,
    },
    /// The `nomad-shim` binary could not be executed.
    #[error("start {id}: run {shim}: {source}")]
    Spawn {
        /// The task.
        id: TaskId,
        /// The binary.
        shim: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The task's program could not be started. Nothing of it runs and its
    /// directory is removed.
    #[error("start {id}: {message}")]
    Start {
        /// The task.
        id: TaskId,
        /// The failed step ([`Step::Exec`], [`Step::Chdir`], …).
        step: Step,
        /// The errno of the failed system call, when there was one.
        errno: Option<i32>,
        /// What failed, e.g. `exec /usr/bin/nope: No such file or directory`.
        message: String,
    },
    /// The supervisor ended without saying whether the task started.
    #[error("start {id}: the supervisor exited without reporting ({detail})")]
    SupervisorVanished {
        /// The task.
        id: TaskId,
        /// What is known of its end.
        detail: String,
    },
    /// The request needs a running task.
    #[error("task {id} is not running (status {status})")]
    NotRunning {
        /// The task.
        id: TaskId,
        /// Its status.
        status: crate::Status,
    },
    /// Someone other than the task's supervisor holds its lock.
    #[error("task {id}: {path} is locked, but not by the task's supervisor (pid {supervisor_pid}, which is gone)")]
    LockHeldByOther {
        /// The task.
        id: TaskId,
        /// The lock file.
        path: PathBuf,
        /// The supervisor pid the state names.
        supervisor_pid: i32,
    },
    /// The task still runs (for `remove` without force).
    #[error("task {id} is still {status}; stop it first or remove it with force")]
    StillRunning {
        /// The task.
        id: TaskId,
        /// Its status.
        status: crate::Status,
    },
    /// Talking to the supervisor's control socket failed.
    #[error("task {id}: control socket {path}: {source}")]
    Control {
        /// The task.
        id: TaskId,
        /// The socket.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// The supervisor refused a request.
    #[error("task {id}: the supervisor refused {request}: {reason}")]
    Refused {
        /// The task.
        id: TaskId,
        /// The request.
        request: &'static str,
        /// What kind of refusal ([`ErrorCode::Unsupported`] from a
        /// supervisor older than the request).
        code: ErrorCode,
        /// Its reason.
        reason: String,
    },
    /// An exec'd process could not start ([`crate::Task::exec`]): the step
    /// of its start that failed (`exec` for a program that is not found or
    /// cannot be executed).
    #[error("task {id}: {message}")]
    ExecFailed {
        /// The task.
        id: TaskId,
        /// The program asked for.
        program: String,
        /// The failed step.
        step: Step,
        /// Its errno.
        errno: Option<i32>,
        /// What failed, for people.
        message: String,
    },
    /// The supervisor went away before it could report the exit of an
    /// exec'd process (it was killed; the task and the process with it).
    #[error("exec'd process {pid} in {id}: its exit is unknown (the task's supervisor went away)")]
    ExecLost {
        /// The task.
        id: TaskId,
        /// The process.
        pid: i32,
    },
    /// Another system call failed.
    #[error("{op} {what}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// To what (a path, pid or task).
        what: String,
        /// The error.
        source: io::Error,
    },
}

impl Error {
    /// For a start error: true when the program was not found (the CLI's
    /// exit code 127).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Start { step: Step::Exec, errno: Some(e), .. }
            | Error::ExecFailed { step: Step::Exec, errno: Some(e), .. } if *e == libc::ENOENT)
    }

    /// For a start error: true when the program exists but cannot be
    /// executed (the CLI's exit code 126).
    pub fn is_not_executable(&self) -> bool {
        matches!(self, Error::Start { step: Step::Exec, errno: Some(e), .. }
            | Error::ExecFailed { step: Step::Exec, errno: Some(e), .. } if [libc::EACCES, libc::ENOEXEC, libc::EPERM, libc::EISDIR, libc::ETXTBSY].contains(e))
    }
}

/// The library's result type.
///
/// # Examples
///
/// ```no_run
/// use nomad_shim::{Executor, Result, TaskExit};
///
/// fn exit_of(id: &str) -> Result<TaskExit> {
///     Executor::new()?.open(id)?.wait()
/// }
/// # let _ = exit_of("web.1");
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;
