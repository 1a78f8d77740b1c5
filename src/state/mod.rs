//! The on-disk contract (docs/state-format.md): the root directory, one directory per
//! task, `spec.json`, `state.json` and `lock`.
//!
//! `state.json` is a public format that operators read with `jq`; the field
//! names here are fixed (fields may be added, never renamed). See
//! `docs/state-format.md`.

pub mod events;
mod exec_session;
mod file;
mod id;
mod timestamp;

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, openat, OFlag};
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};

pub use events::Event;
pub use exec_session::ExecEntry;
pub use file::{read_json, read_limited, reserve, write_atomic, write_json, MAX_FILE_SIZE};
pub use id::{TaskId, MAX_LEN as MAX_ID_LEN};
pub use timestamp::Timestamp;

use crate::cgroup::CgroupPaths;
use crate::identity::Identity;

/// The `version` this library writes and the only one it reads.
pub const STATE_VERSION: u32 = 1;

/// Names of the files in a task directory.
pub mod names {
    /// What was asked.
    pub const SPEC: &str = "spec.json";
    /// What is.
    pub const STATE: &str = "state.json";
    /// Held (flock) by the live supervisor.
    pub const LOCK: &str = "lock";
    /// The supervisor's control socket.
    pub const CONTROL: &str = "control.sock";
    /// The task's standard output.
    pub const STDOUT: &str = "stdout.log";
    /// The task's standard error.
    pub const STDERR: &str = "stderr.log";
}

/// Errors of the on-disk state, each naming the file or id concerned.
///
/// # Examples
///
/// ```
/// use nomad_shim::{StateError, TaskId};
///
/// let err = TaskId::new("../etc").unwrap_err();
/// assert!(matches!(err, StateError::InvalidId { .. }));
/// assert!(err.to_string().starts_with("invalid task id"));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The id breaks the id rule.
    #[error("invalid task id {id:?}: {reason}")]
    InvalidId {
        /// The id as given.
        id: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A system call on a path failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The file does not exist.
    #[error("{path}: no such file")]
    Missing {
        /// The path.
        path: PathBuf,
    },
    /// A task directory with this id exists already.
    #[error("task {id} already exists ({path})")]
    Exists {
        /// The id.
        id: TaskId,
        /// Its directory.
        path: PathBuf,
    },
    /// No task directory with this id.
    #[error("no task {id} in {root}")]
    NoSuchTask {
        /// The id.
        id: TaskId,
        /// The root searched.
        root: PathBuf,
    },
    /// The file is a symlink, FIFO, directory, socket or device.
    #[error("{path}: refusing to read {kind}")]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// The file is larger than any valid state file.
    #[error("{path}: {size} bytes is over the {limit}-byte limit")]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Not valid JSON for this format (empty, truncated, garbage).
    #[error("{path}: malformed: {source}")]
    Parse {
        /// The path.
        path: PathBuf,
        /// The parser's error, with line and column.
        source: serde_json::Error,
    },
    /// Could not encode a value as JSON.
    #[error("{path}: cannot encode: {source}")]
    Encode {
        /// The path.
        path: PathBuf,
        /// The encoder's error.
        source: serde_json::Error,
    },
    /// A `version` this library does not know.
    #[error(
        "{path}: unknown state version {version} (this nomad-shim reads version {STATE_VERSION})"
    )]
    UnknownVersion {
        /// The path.
        path: PathBuf,
        /// The version found.
        version: u64,
    },
    /// Parsable, but its content cannot be true (pid 0 or 1, our own pid, an
    /// id that is not the directory's).
    #[error("{path}: invalid: {reason}")]
    Invalid {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl StateError {
    pub(crate) fn io(op: &'static str, path: PathBuf, source: io::Error) -> StateError {
        StateError::Io { op, path, source }
    }
}

/// The lifecycle of a task.
///
/// # Examples
///
/// ```
/// use nomad_shim::Status;
///
/// // As in state.json and in the CLI's output.
/// assert_eq!(Status::Lost.to_string(), "lost");
/// let ended = |s: Status| matches!(s, Status::Exited | Status::Lost);
/// assert!(ended(Status::Exited) && !ended(Status::Running));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Accepted; the supervisor has not yet reported the task running.
    Starting,
    /// The task runs under a live supervisor.
    Running,
    /// The task ended and its exit is recorded exactly.
    Exited,
    /// The supervisor died before it could record the exit: the exit is unknown.
    Lost,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Starting => "starting",
            Status::Running => "running",
            Status::Exited => "exited",
            Status::Lost => "lost",
        })
    }
}

/// How a task ended (`exit` in `state.json`).
///
/// For an exited task exactly one of `code` and `signal` is set. For a lost
/// task both are null and `error` says why the exit is unknown.
///
/// # Examples
///
/// ```
/// use nomad_shim::ExitRecord;
///
/// // The `exit` of a state.json: killed by SIGKILL, the OOM killer's doing.
/// let record: ExitRecord =
///     serde_json::from_str(r#"{"code":null,"signal":9,"oom_killed":true}"#).unwrap();
/// assert_eq!(record.shell_code(), Some(137));
/// assert_eq!(record.oom_killed, Some(true));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The exit code, when the task exited normally.
    pub code: Option<i32>,
    /// The signal number, when a signal ended the task.
    pub signal: Option<i32>,
    /// Whether the signal dumped core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core_dumped: Option<bool>,
    /// Whether the kernel's OOM killer killed a process of the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_killed: Option<bool>,
    /// User CPU time of the task and its reaped descendants (`wait4(2)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_cpu_ns: Option<u64>,
    /// System CPU time likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_cpu_ns: Option<u64>,
    /// Largest resident set size of the task's processes, KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rss_kib: Option<u64>,
    /// Why the exit is unknown (lost tasks only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ExitRecord {
    /// The record of a task whose exit is unknown.
    #[doc(hidden)]
    pub fn lost(error: impl Into<String>) -> ExitRecord {
        ExitRecord {
            code: None,
            signal: None,
            core_dumped: None,
            oom_killed: None,
            user_cpu_ns: None,
            system_cpu_ns: None,
            max_rss_kib: None,
            error: Some(error.into()),
        }
    }

    /// The shell's convention for a status: the code, or 128 + the signal.
    /// `None` when the exit is unknown.
    pub fn shell_code(&self) -> Option<i32> {
        match (self.code, self.signal) {
            (Some(c), _) => Some(c),
            // Saturating: a hand-edited state.json must not make this panic.
            (None, Some(s)) => Some(s.saturating_add(128)),
            (None, None) => None,
        }
    }
}

/// `state.json`: what is.
///
/// # Examples
///
/// ```no_run
/// use nomad_shim::{Executor, Status};
///
/// # fn main() -> nomad_shim::Result<()> {
/// let state = Executor::new()?.open("web.1")?.state()?;
/// match state.status {
///     Status::Starting | Status::Running => {
///         println!("running as pid {:?} since {:?}", state.task.map(|t| t.pid), state.started_at)
///     }
///     Status::Exited | Status::Lost => println!("ended: {:?}", state.exit),
/// }
/// for warning in &state.warnings {
///     println!("warning: {warning}");
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskState {
    /// Format version (1).
    pub version: u32,
    /// The task id (equal to the directory's name).
    pub id: TaskId,
    /// Where in its life the task is.
    pub status: Status,
    /// The supervisor process, once it runs.
    pub supervisor: Option<Identity>,
    /// The task's main process, once it runs.
    pub task: Option<Identity>,
    /// The boot in which the pids above are meaningful.
    pub boot_id: String,
    /// The task's cgroup (v2: a path; v1: an object controller → path).
    pub cgroup: Option<CgroupPaths>,
    /// When the task was accepted (RFC 3339, UTC, microseconds).
    pub created_at: Timestamp,
    /// When the task's program was executed.
    pub started_at: Option<Timestamp>,
    /// When the exit was recorded (or found lost).
    pub finished_at: Option<Timestamp>,
    /// How it ended, once it has.
    pub exit: Option<ExitRecord>,
    /// What was asked but could not be done (limits skipped under
    /// `best_effort_limits`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Notable events of the task's life, oldest first, bounded (see
    /// [`events`]): OOM kills, clean-up failures, state writes retried,
    /// output dropped, a leftover cgroup killed, the task found lost.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
    /// The live exec sessions (processes started inside the task with
    /// `exec`), oldest first; absent when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub execs: Vec<ExecEntry>,
    /// The task's stdin is held by the supervisor for an attached client
    /// (`"piped"`); absent: `/dev/null`.
    #[serde(default, skip_serializing_if = "crate::Stdin::is_null")]
    pub stdin: crate::Stdin,
    /// The task's stdio is a pseudo-terminal; absent: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
    /// Bytes of the task's output (stdout and stderr together) that could
    /// not be written to the log files (a full disk) and were dropped, so
    /// that the task never blocks. Absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub log_bytes_dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Deserialize)]
struct VersionProbe {
    version: Option<serde_json::Value>,
}

impl TaskState {
    /// A new `starting` state.
    #[doc(hidden)]
    pub fn starting(id: TaskId, boot_id: &str) -> TaskState {
        TaskState {
            version: STATE_VERSION,
            id,
            status: Status::Starting,
            supervisor: None,
            task: None,
            boot_id: boot_id.to_owned(),
            cgroup: None,
            created_at: Timestamp::now(),
            started_at: None,
            finished_at: None,
            exit: None,
            warnings: Vec::new(),
            events: Vec::new(),
            stdin: crate::Stdin::Null,
            tty: false,
            log_bytes_dropped: 0,
            execs: Vec::new(),
        }
    }

    /// Records an event (bounded: the oldest goes beyond
    /// [`events::MAX_EVENTS`]).
    pub fn record_event(&mut self, kind: &str, message: impl Into<String>) {
        events::push(&mut self.events, Event::now(kind, message));
    }

    /// Parses and validates a state file's bytes. `expected_id` is the id of
    /// the directory the file was found in.
    #[doc(hidden)]
    pub fn parse(bytes: &[u8], path: &Path, expected_id: &TaskId) -> Result<TaskState, StateError> {
        // Check the version before the shape: a future version may change the
        // shape, and "unknown version" is the truthful error then.
        let probe: VersionProbe = serde_json::from_slice(bytes).map_err(|e| StateError::Parse {
            path: path.to_path_buf(),
            source: e,
        })?;
        match probe.version {
            Some(serde_json::Value::Number(n)) if n.as_u64() == Some(STATE_VERSION as u64) => {}
            Some(serde_json::Value::Number(n)) => {
                return Err(StateError::UnknownVersion {
                    path: path.to_path_buf(),
                    version: n.as_u64().unwrap_or(u64::MAX),
                })
            }
            _ => {
                return Err(StateError::Invalid {
                    path: path.to_path_buf(),
                    reason: "no numeric \"version\" field".into(),
                })
            }
        }
        let state: TaskState = serde_json::from_slice(bytes).map_err(|e| StateError::Parse {
            path: path.to_path_buf(),
            source: e,
        })?;
        let invalid = |reason: String| {
            Err(StateError::Invalid {
                path: path.to_path_buf(),
                reason,
            })
        };
        if &state.id != expected_id {
            return invalid(format!(
                "id {} does not match its directory {}",
                state.id, expected_id
            ));
        }
        let me = std::process::id() as i32;
        for (what, ident) in [("supervisor", state.supervisor), ("task", state.task)] {
            if let Some(Identity { pid, .. }) = ident {
                if pid <= 1 {
                    return invalid(format!("{what} pid {pid} is not a pid a task can have"));
                }
                if pid == me {
                    return invalid(format!("{what} pid {pid} is this process's own pid"));
                }
            }
        }
        match (state.status, &state.exit) {
            (Status::Exited | Status::Lost, None) => {
                return invalid(format!("status {} without an exit record", state.status))
            }
            (Status::Starting | Status::Running, Some(_)) => {
                return invalid(format!("status {} with an exit record", state.status))
            }
            (Status::Running, _) if state.supervisor.is_none() || state.task.is_none() => {
                return invalid("status running without supervisor and task pids".into())
            }
            _ => {}
        }
        Ok(state)
    }
}

/// Now, as RFC 3339 UTC with microseconds: `2026-11-27T21:00:00.123456Z`
/// (the text of [`Timestamp::now`]).
pub fn now_rfc3339() -> String {
    Timestamp::now().to_string()
}

/// The root directory that holds one directory per task.
#[derive(Debug, Clone)]
pub struct Root {
    path: PathBuf,
}

impl Root {
    /// The default root: `/run/nomad-shim` for root, else
    /// `$XDG_RUNTIME_DIR/nomad-shim`.
    pub fn default_path() -> Result<PathBuf, StateError> {
        if nix::unistd::geteuid().is_root() {
            return Ok(PathBuf::from("/run/nomad-shim"));
        }
        match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir).join("nomad-shim")),
            _ => Err(StateError::Io {
                op: "find the default root",
                path: PathBuf::from("$XDG_RUNTIME_DIR"),
                source: io::Error::new(
                    io::ErrorKind::NotFound,
                    "not running as root and XDG_RUNTIME_DIR is not set; pass a root directory",
                ),
            }),
        }
    }

    /// A root at `path` (not created until a task is). A relative path is
    /// made absolute against the current directory now: the supervisor runs
    /// from `/`, and a task's paths must not change with the agent's cwd.
    /// (An empty path stays empty and fails when a task is created.)
    pub fn new(path: impl Into<PathBuf>) -> Root {
        let path = path.into();
        let path = std::path::absolute(&path).unwrap_or(path);
        Root { path }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory of task `id` (which may not exist).
    pub fn task_path(&self, id: &TaskId) -> PathBuf {
        self.path.join(id.as_str())
    }

    /// Creates the root (0700) if missing, then task `id`'s directory (0700),
    /// exclusively: an existing id is [`StateError::Exists`].
    pub fn create_task_dir(&self, id: &TaskId) -> Result<TaskDir, StateError> {
        self.create_dir_named(id.as_str(), id)
    }

    /// Makes the directory `<root>/<name>` for task `id` (see
    /// [`create_task_dir`](Self::create_task_dir)).
    fn create_dir_named(&self, name: &str, id: &TaskId) -> Result<TaskDir, StateError> {
        self.not_empty("create root directory")?;
        if let Err(e) = fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)
        {
            return Err(StateError::io(
                "create root directory",
                self.path.clone(),
                e,
            ));
        }
        let path = self.path.join(name);
        match fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(StateError::Exists {
                    id: id.clone(),
                    path,
                })
            }
            Err(e) => return Err(StateError::io("create task directory", path, e)),
        }
        // The umask may have narrowed the mode; 0700 is the contract. A
        // failure leaves it narrower (never wider), so only a debug line.
        if let Err(e) = fs::set_permissions(&path, fs::Permissions::from_mode(0o700)) {
            log::debug!("chmod 0700 {}: {e}", path.display());
        }
        TaskDir::open_at(self, id, path)
    }

    /// [`create_task_dir`](Self::create_task_dir) with the task's lock
    /// taken before the directory can be seen: it is made under a name no
    /// task id can have (ids start with a letter or digit), its `lock` is
    /// created and flocked there, and it is renamed into place without
    /// replacing anything (`renameat2(2)` `RENAME_NOREPLACE`; an existing
    /// id is [`StateError::Exists`]). So a reader never finds the task's
    /// directory with its lock free before a supervisor has recorded
    /// anything: no state and the lock held is a start on its way, no
    /// state and the lock free a start that was abandoned. A file system
    /// without `RENAME_NOREPLACE` gets the directory made in place, then
    /// locked.
    pub fn create_locked_task_dir(&self, id: &TaskId) -> Result<(TaskDir, File), StateError> {
        let lock_of = |dir: &TaskDir| -> Result<File, StateError> {
            let lock = dir.open_lock()?;
            lock.try_lock()
                .map_err(|e| StateError::io("flock", dir.path.join(names::LOCK), e.into()))?;
            Ok(lock)
        };
        let hidden = hidden_name(".creating-", id.as_str().as_ref());
        let made = self.create_dir_named(&hidden.to_string_lossy(), id)?;
        let path = self.task_path(id);
        let renamed = lock_of(&made).and_then(|lock| {
            match nix::fcntl::renameat2(
                nix::fcntl::AT_FDCWD,
                &made.path,
                nix::fcntl::AT_FDCWD,
                &path,
                nix::fcntl::RenameFlags::RENAME_NOREPLACE,
            ) {
                Ok(()) => Ok(Some(lock)),
                Err(Errno::EEXIST) => Err(StateError::Exists {
                    id: id.clone(),
                    path: path.clone(),
                }),
                Err(Errno::EINVAL | Errno::ENOSYS) => Ok(None),
                Err(e) => Err(StateError::io(
                    "rename task directory",
                    path.clone(),
                    e.into(),
                )),
            }
        });
        match renamed {
            // The descriptor follows the directory through the rename.
            Ok(Some(lock)) => Ok((
                TaskDir {
                    id: id.clone(),
                    path,
                    fd: made.fd,
                },
                lock,
            )),
            Ok(None) => {
                let _ = fs::remove_dir_all(&made.path);
                let dir = self.create_task_dir(id)?;
                let lock = lock_of(&dir)?;
                Ok((dir, lock))
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&made.path);
                Err(e)
            }
        }
    }

    /// Opens task `id`'s existing directory.
    pub fn open_task_dir(&self, id: &TaskId) -> Result<TaskDir, StateError> {
        self.not_empty("open task directory")?;
        TaskDir::open(self, id)
    }

    /// An empty root would put task directories in the current directory.
    fn not_empty(&self, op: &'static str) -> Result<(), StateError> {
        if self.path.as_os_str().is_empty() {
            return Err(StateError::io(
                op,
                PathBuf::new(),
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the root directory is an empty path",
                ),
            ));
        }
        Ok(())
    }

    /// The ids of every entry in the root that looks like a task directory,
    /// sorted. Entries whose names are not valid ids are skipped; a missing
    /// root is an empty list.
    pub fn task_ids(&self) -> Result<Vec<TaskId>, StateError> {
        self.not_empty("list root directory")?;
        let entries = match fs::read_dir(&self.path) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StateError::io("list root directory", self.path.clone(), e)),
        };
        let mut ids: Vec<TaskId> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(|n| TaskId::new(n).ok()))
            .collect();
        ids.sort();
        Ok(ids)
    }
}

/// An open task directory: every file operation is relative to its fd, so a
/// rename of the path cannot redirect them.
#[derive(Debug)]
pub struct TaskDir {
    id: TaskId,
    path: PathBuf,
    fd: OwnedFd,
}

impl TaskDir {
    fn open(root: &Root, id: &TaskId) -> Result<TaskDir, StateError> {
        TaskDir::open_at(root, id, root.task_path(id))
    }

    /// Opens `path` as task `id`'s directory.
    fn open_at(root: &Root, id: &TaskId, path: PathBuf) -> Result<TaskDir, StateError> {
        let fd = match open(
            &path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                return Err(StateError::NoSuchTask {
                    id: id.clone(),
                    root: root.path.clone(),
                })
            }
            Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
                return Err(StateError::NotRegular {
                    path,
                    kind: "something other than a directory (a symbolic link?)",
                })
            }
            Err(e) => return Err(StateError::io("open task directory", path, e.into())),
        };
        Ok(TaskDir {
            id: id.clone(),
            path,
            fd,
        })
    }

    /// The task id.
    pub fn id(&self) -> &TaskId {
        &self.id
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory's fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Reads and validates `state.json`.
    pub fn read_state(&self) -> Result<TaskState, StateError> {
        let path = self.path.join(names::STATE);
        let bytes = read_limited(self.fd(), &path, names::STATE)?;
        TaskState::parse(&bytes, &path, &self.id)
    }

    /// Replaces `state.json` (durably unless `durable` is false).
    pub fn write_state(&self, state: &TaskState, durable: bool) -> Result<(), StateError> {
        write_json(self.fd(), &self.path, names::STATE, state, 0o644, durable)
    }

    /// Reserves disk space for the next `state.json` write (see
    /// [`reserve`]): 64 KiB, far more than any state file.
    pub fn reserve_state_write(&self) -> Result<(), StateError> {
        reserve(self.fd(), &self.path, names::STATE, 64 * 1024, 0o644)
    }

    /// Opens (creating if needed, mode 0600) the `lock` file, close-on-exec,
    /// never through a symlink.
    pub fn open_lock(&self) -> Result<File, StateError> {
        let fd = openat(
            self.fd(),
            names::LOCK,
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| StateError::io("open", self.path.join(names::LOCK), e.into()))?;
        Ok(File::from(fd))
    }

    /// Whether a live process holds the lock (a supervisor, normally).
    /// Takes and drops a shared lock; never blocks.
    pub fn lock_is_held(&self) -> Result<bool, StateError> {
        let lock = match openat(
            self.fd(),
            names::LOCK,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => File::from(fd),
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => {
                return Err(StateError::io(
                    "open",
                    self.path.join(names::LOCK),
                    e.into(),
                ))
            }
        };
        match lock.try_lock_shared() {
            Ok(()) => Ok(false),
            Err(fs::TryLockError::WouldBlock) => Ok(true),
            Err(fs::TryLockError::Error(e)) => {
                Err(StateError::io("flock", self.path.join(names::LOCK), e))
            }
        }
    }

    /// Removes the directory and everything in it. The directory holds only
    /// files this project wrote, so removal does not recurse into anything a
    /// task could have planted (a task's own files live in its task dir,
    /// elsewhere). See [`remove_task_path`].
    pub fn remove(self) -> Result<(), StateError> {
        remove_task_path(&self.path)
            .map_err(|e| StateError::io("remove task directory", self.path.clone(), e))
    }
}

/// `<prefix><name>-<pid>-<ns>`: a name in a root that no task id can have
/// (it starts with `.`), for a directory on its way in or out.
fn hidden_name(prefix: &str, name: &std::ffi::OsStr) -> std::ffi::OsString {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut hidden = std::ffi::OsString::from(prefix);
    hidden.push(name);
    hidden.push(format!("-{}-{nanos}", std::process::id()));
    hidden
}

/// Removes a task directory so that no reader (`list`, `ps`) ever sees it
/// half removed, its `state.json` gone and the rest still there (`broken`):
/// it is first renamed, in its root, to a name no task id can have (ids
/// start with a letter or digit), then removed. A directory that cannot be
/// renamed is removed where it is. A reader that had opened the directory
/// before may put its `lock` back meanwhile (a reconcile creates a missing
/// one): the removal then finds it not empty, and goes again.
#[doc(hidden)]
pub fn remove_task_path(path: &Path) -> io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return fs::remove_dir_all(path);
    };
    let hidden = parent.join(hidden_name(".removing-", name));
    let remove = |dir: &Path| {
        let mut tries = 0;
        loop {
            match fs::remove_dir_all(dir) {
                Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty && tries < 10 => tries += 1,
                done => return done,
            }
        }
    };
    match fs::rename(path, &hidden) {
        Ok(()) => remove(&hidden),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(e),
        Err(_) => remove(path),
    }
}

#[cfg(test)]
mod tests;
