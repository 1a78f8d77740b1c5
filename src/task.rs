//! The handle on one task, and the reconciliation of a task's files with
//! the processes that are really there.

use std::fs::TryLockError;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::identity::{boot_id, Identity, Pidfd};
use crate::protocol::{ErrorCode, Reply, Request, RequestLine, MAX_LINE};
use crate::state::events::kind;
use crate::state::{names, ExitRecord, Status, TaskDir, TaskId, TaskState, Timestamp};

mod exec;
mod stdio;
mod wait_fd;

pub use exec::{ExecExit, ExecSession, ExecSpec, ExecStdio};

/// How long a control request may take before the supervisor is considered
/// wedged.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// How a task ended, as far as anyone can know.
///
/// # Examples
///
/// ```
/// use nomad_shim::TaskExit;
///
/// fn describe(exit: &TaskExit) -> String {
///     match exit {
///         TaskExit::Exited(r) if r.oom_killed == Some(true) => "killed by the OOM killer".into(),
///         TaskExit::Exited(r) => format!("exited with status {}", r.shell_code().unwrap_or(-1)),
///         TaskExit::Lost { reason } => format!("exit unknown: {reason}"),
///     }
/// }
///
/// let lost = TaskExit::Lost { reason: "the supervisor was killed".into() };
/// assert_eq!(lost.code(), None);
/// assert!(!lost.success());
/// assert_eq!(describe(&lost), "exit unknown: the supervisor was killed");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskExit {
    /// The supervisor recorded the exit exactly.
    Exited(ExitRecord),
    /// The supervisor died first: the exit is unknown, and the reason says
    /// why. Never reported as a made-up code.
    Lost {
        /// Why the exit is unknown.
        reason: String,
    },
}

impl TaskExit {
    /// The exit code, when the task exited normally.
    pub fn code(&self) -> Option<i32> {
        match self {
            TaskExit::Exited(r) => r.code,
            TaskExit::Lost { .. } => None,
        }
    }

    /// The signal that ended the task, if one did.
    pub fn signal(&self) -> Option<i32> {
        match self {
            TaskExit::Exited(r) => r.signal,
            TaskExit::Lost { .. } => None,
        }
    }

    /// Exited with code 0.
    pub fn success(&self) -> bool {
        self.code() == Some(0)
    }

    /// The exit record, when known.
    pub fn record(&self) -> Option<&ExitRecord> {
        match self {
            TaskExit::Exited(r) => Some(r),
            TaskExit::Lost { .. } => None,
        }
    }

    /// One line for a log: `code 0`, `signal 9 (OOM killed)`, `lost: ...`.
    fn summary(&self) -> String {
        match self {
            TaskExit::Exited(r) => {
                let how = match (r.code, r.signal) {
                    (Some(c), _) => format!("code {c}"),
                    (None, Some(s)) => format!("signal {s}"),
                    (None, None) => "unknown".into(),
                };
                if r.oom_killed == Some(true) {
                    format!("{how} (OOM killed)")
                } else {
                    how
                }
            }
            TaskExit::Lost { reason } => format!("lost: {reason}"),
        }
    }

    fn from_state(state: &TaskState) -> Option<TaskExit> {
        match (state.status, &state.exit) {
            (Status::Exited, Some(r)) => Some(TaskExit::Exited(r.clone())),
            (Status::Lost, r) => Some(TaskExit::Lost {
                reason: r
                    .as_ref()
                    .and_then(|r| r.error.clone())
                    .unwrap_or_else(|| "the exit is unknown".into()),
            }),
            _ => None,
        }
    }
}

/// A started or reopened task.
///
/// Dropping a `Task` does nothing to the task: it keeps running under its
/// supervisor, and [`Executor::open`](crate::Executor::open) finds it again.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use nomad_shim::{Executor, Signal, TaskExit};
///
/// # fn main() -> nomad_shim::Result<()> {
/// let executor = Executor::new()?;
/// let mut task = executor.open("web.1")?;
/// println!("task {} runs as pid {:?}", task.id(), task.pid());
/// if let Some(exit) = task.try_wait()? {
///     println!("it has already ended: {exit:?}");
///     return Ok(());
/// }
/// task.signal(Signal::SIGHUP)?;
/// match task.stop(Some(Signal::SIGTERM), Some(Duration::from_secs(5)))? {
///     TaskExit::Exited(record) => println!("exited, status {:?}", record.shell_code()),
///     TaskExit::Lost { reason } => println!("exit unknown: {reason}"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Task {
    dir: TaskDir,
    supervisor: Option<Identity>,
    task: Option<Identity>,
    /// A pidfd on the supervisor, kept after it exits (it stays readable);
    /// `None` when the supervisor was gone before this handle was made.
    pidfd: Option<Pidfd>,
    /// Without a pidfd: an eventfd that is readable at once, the wait fd of
    /// `impl AsFd for Task` (task/wait_fd.rs).
    ended: Option<std::os::fd::OwnedFd>,
    /// What the start could not do (best-effort limits it skipped).
    warnings: Vec<String>,
    /// Started by this handle, from a supervisor that said `until_exit`:
    /// our end of the sync pipe, whose EOF comes as soon as the final state
    /// is durable (or the supervisor is gone), a little before the
    /// supervisor's own exit (docs/protocol.md). The wait fd then; no
    /// pidfd is opened unless the EOF finds no final state.
    exit_pipe: Option<std::os::fd::OwnedFd>,
}

impl Task {
    pub(crate) fn started(
        dir: TaskDir,
        supervisor: Identity,
        task: Identity,
        warnings: Vec<String>,
        exit_pipe: Option<std::os::fd::OwnedFd>,
    ) -> Result<Task> {
        // Without the pipe: the supervisor may already have exited (a task
        // that ends at once); then the state file is final and an
        // always-ready fd stands in.
        let (pidfd, ended) = match exit_pipe {
            Some(_) => (None, None),
            None => wait_fd::wait_fds(&dir, Some(supervisor), Status::Running)?,
        };
        Ok(Task {
            dir,
            supervisor: Some(supervisor),
            task: Some(task),
            pidfd,
            ended,
            warnings,
            exit_pipe,
        })
    }

    pub(crate) fn opened(dir: TaskDir, state: TaskState) -> Result<Task> {
        let (pidfd, ended) = wait_fd::wait_fds(&dir, state.supervisor, state.status)?;
        Ok(Task {
            dir,
            supervisor: state.supervisor,
            task: state.task,
            pidfd,
            ended,
            warnings: state.warnings,
            exit_pipe: None,
        })
    }

    /// The task's id: what [`Executor::open`](crate::Executor::open) takes.
    pub fn id(&self) -> &TaskId {
        self.dir.id()
    }

    /// The pid of the task's main process (valid while the task runs).
    pub fn pid(&self) -> Option<i32> {
        self.task.map(|t| t.pid)
    }

    /// What the start could not do: limits skipped under
    /// [`TaskSpec::best_effort_limits`](crate::TaskSpec::best_effort_limits).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The pid of the task's supervisor.
    pub fn supervisor_pid(&self) -> Option<i32> {
        self.supervisor.map(|s| s.pid)
    }

    /// The task's state directory.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The current state, reconciled with reality (a dead supervisor makes
    /// the task `lost`).
    pub fn state(&self) -> Result<TaskState> {
        reconcile(&self.dir)
    }

    /// Blocks until the task has ended and its exit is recorded, then
    /// returns it. A handle from [`Executor::start`](crate::Executor::start)
    /// wakes as soon as the final state is durable, on its end of the start's
    /// sync pipe, while the supervisor goes on to remove the task's cgroup
    /// and exit ([`Executor::remove`](crate::Executor::remove) waits for
    /// that); any other handle sleeps on a pidfd of the supervisor, which
    /// exits only once the final state is durable.
    pub fn wait(&mut self) -> Result<TaskExit> {
        // Started by this handle (the reply said `until_exit`): the sync
        // pipe ends when the exit is durable, before the supervisor has
        // removed the cgroup and exited (which `Executor::remove` waits
        // for). EOF with no final state: the supervisor died; the loop below
        // takes a pidfd on it, waits for its exit to complete, and reconciles.
        if let Some(pipe) = &self.exit_pipe {
            read_to_eof(pipe).map_err(|e| Error::Io {
                op: "wait on the sync pipe of",
                what: self.id().to_string(),
                source: e.into(),
            })?;
            if let Some(exit) = TaskExit::from_state(&self.dir.read_state()?) {
                return Ok(exit);
            }
        }
        loop {
            if let Some(pidfd) = &self.pidfd {
                pidfd.wait_exit(None).map_err(|e| Error::Io {
                    op: "wait for supervisor of",
                    what: self.id().to_string(),
                    source: e,
                })?;
            }
            let state = reconcile(&self.dir)?;
            if let Some(exit) = TaskExit::from_state(&state) {
                return Ok(exit);
            }
            // Still running under a live supervisor this handle had no pidfd
            // on (it was reopened while starting): take one now.
            match state.supervisor.map(|s| s.open()) {
                Some(Ok(Some(pidfd))) => self.pidfd = Some(pidfd),
                Some(Err(e)) => {
                    return Err(Error::Io {
                        op: "open pidfd of supervisor of",
                        what: self.id().to_string(),
                        source: e,
                    })
                }
                _ => std::thread::yield_now(),
            }
        }
    }

    /// The exit if the task has ended, `None` if it still runs. Never blocks.
    ///
    /// The task has ended once its final state is on disk, which the
    /// supervisor writes before it removes the cgroup and exits: a final
    /// state is returned at once, whether or not the supervisor is still
    /// finishing.
    pub fn try_wait(&mut self) -> Result<Option<TaskExit>> {
        if let Some(exit) = TaskExit::from_state(&self.dir.read_state()?) {
            return Ok(Some(exit));
        }
        // The sync pipe at EOF with no final state: the supervisor died, and
        // is at most finishing its exit (its files are closed before its
        // pidfd wakes). `wait` waits for that moment, then reconciles.
        if self.pidfd.is_none() {
            if let Some(pipe) = &self.exit_pipe {
                let ended =
                    crate::sys::poll_readable(std::os::fd::AsFd::as_fd(pipe), Some(Duration::ZERO))
                        .map_err(|e| Error::Io {
                            op: "poll the sync pipe of",
                            what: self.id().to_string(),
                            source: e.into(),
                        })?;
                return if ended {
                    self.wait().map(Some)
                } else {
                    Ok(None)
                };
            }
        }
        if let Some(pidfd) = &self.pidfd {
            let exited = pidfd
                .wait_exit(Some(Duration::ZERO))
                .map_err(|e| Error::Io {
                    op: "poll supervisor of",
                    what: self.id().to_string(),
                    source: e,
                })?;
            if !exited {
                return Ok(None);
            }
        }
        Ok(TaskExit::from_state(&reconcile(&self.dir)?))
    }

    /// Sends `signal` to the task's main process (through its supervisor,
    /// which holds the process unreaped, so the pid cannot have been reused).
    pub fn signal(&self, signal: Signal) -> Result<()> {
        self.request(
            &Request::Signal {
                signal: signal as i32,
            },
            "signal",
        )
        .map(drop)
    }

    /// Graceful stop with the spec's kill signal and timeout; returns the exit.
    pub fn shutdown(&mut self) -> Result<TaskExit> {
        self.stop(None, None)
    }

    /// Graceful stop: `signal`, then after `timeout` SIGKILL to everything
    /// left of the task. `None` takes the spec's kill signal or timeout.
    /// Stopping a task that has already ended returns its exit.
    pub fn stop(&mut self, signal: Option<Signal>, timeout: Option<Duration>) -> Result<TaskExit> {
        let req = Request::Shutdown {
            signal: signal.map(|s| s as i32),
            timeout_ms: timeout.map(|t| t.as_millis().min(u64::MAX as u128) as u64),
        };
        log::debug!(
            "task {}: stop requested (signal {signal:?}, timeout {timeout:?})",
            self.id()
        );
        let exit = match self.request(&req, "shutdown") {
            Ok(_) | Err(Error::NotRunning { .. }) => self.wait(),
            Err(e) => Err(e),
        };
        match &exit {
            Ok(e) => log::info!("task {} stopped: {}", self.id(), e.summary()),
            Err(e) => log::warn!("task {}: stop failed: {e}", self.id()),
        }
        exit
    }

    /// CPU, memory and pids usage of the task, read by its supervisor from
    /// the task's cgroup (no walk over processes).
    pub fn stats(&self) -> Result<crate::cgroup::Stats> {
        let reply = self.request(&Request::Stats, "stats")?;
        reply.stats.ok_or_else(|| Error::Refused {
            id: self.id().clone(),
            request: "stats",
            code: ErrorCode::Unknown,
            reason: "no stats in the reply".into(),
        })
    }

    /// [`stats`](Self::stats) and the task's CPU rate (percent of one CPU)
    /// over the span returned, which the supervisor measures between its
    /// previous sample (taken by an earlier request, or at the start) and
    /// this one: nobody has to wait between two samples. The rate is `None`
    /// from a supervisor older than this library, or without CPU accounting.
    ///
    /// ```no_run
    /// use nomad_shim::Executor;
    ///
    /// # fn main() -> nomad_shim::Result<()> {
    /// let (stats, rate) = Executor::new()?.open("web.1")?.stats_with_rate()?;
    /// if let Some((percent, over)) = rate {
    ///     println!("{percent:.1}% CPU over the last {over:?}");
    /// }
    /// println!("{:?}", stats.memory.map(|m| m.current));
    /// # Ok(())
    /// # }
    /// ```
    pub fn stats_with_rate(&self) -> Result<(crate::cgroup::Stats, Option<(f64, Duration)>)> {
        let reply = self.request(&Request::Stats, "stats")?;
        let rate = reply
            .cpu_percent
            .zip(reply.cpu_window_ms)
            .map(|(p, ms)| (p, Duration::from_millis(ms)));
        let stats = reply.stats.ok_or_else(|| Error::Refused {
            id: self.id().clone(),
            request: "stats",
            code: ErrorCode::Unknown,
            reason: "no stats in the reply".into(),
        })?;
        Ok((stats, rate))
    }

    /// Changes the limits of the running task: memory, CPU, cpuset, pids and
    /// IO limits take effect at once. Takes a
    /// [`ResourceUpdate`](crate::cgroup::ResourceUpdate), where each limit is
    /// kept, set, or removed (`Limit::Remove`, the kernel's "max"), or a
    /// [`Resources`](crate::cgroup::Resources), whose `None` fields are kept.
    /// The task's device rules are never rewritten by an update.
    pub fn update_resources(&self, update: impl Into<crate::cgroup::ResourceUpdate>) -> Result<()> {
        let resources = update.into();
        resources.validate().map_err(Error::Cgroup)?;
        self.request(&Request::Update { resources }, "update")
            .map(drop)
    }

    /// Kills the task at once (SIGKILL to all of it, no grace period) and
    /// returns the exit.
    pub fn force_stop(&mut self) -> Result<TaskExit> {
        self.stop(Some(Signal::SIGKILL), Some(Duration::ZERO))
    }

    /// Sends one request to the supervisor's control socket.
    fn request(&self, req: &Request, what: &'static str) -> Result<Reply> {
        self.exchange(req, what).map(|(reply, _)| reply)
    }

    /// Follows the task's output: the returned stream becomes readable (one
    /// `\n` per nudge; read and discard) whenever new output has been
    /// written to `stdout.log`/`stderr.log`, and reaches EOF once the task
    /// has ended and its final state is durable. Read the files themselves
    /// for the bytes. [`Error::NotRunning`] when the task has already ended.
    pub fn attach(&self) -> Result<UnixStream> {
        let (_, stream) = self.exchange(&Request::Attach, "attach")?;
        stream.set_read_timeout(None).map_err(|e| Error::Io {
            op: "attach to",
            what: self.id().to_string(),
            source: e,
        })?;
        Ok(stream)
    }

    /// Sends one request; returns the reply and the connection.
    fn exchange(&self, req: &Request, what: &'static str) -> Result<(Reply, UnixStream)> {
        let id = self.id().clone();
        let ctl_err = |source: std::io::Error| self.control_error(source);
        let mut stream = self.connect_control()?;
        let line = request_line(req.clone()).map_err(ctl_err)?;
        // A supervisor that is finishing closes its socket with this
        // connection still in the backlog: reset, like a refusal, means it
        // is no longer running.
        let gone = |e: &std::io::Error| {
            matches!(e.raw_os_error(), Some(libc::ECONNRESET) | Some(libc::EPIPE))
        };
        if let Err(e) = stream.write_all(&line) {
            if gone(&e) {
                return Err(self.not_running()?);
            }
            return Err(ctl_err(e));
        }
        // Up to the newline, and not a byte further: nothing after the reply
        // line (an attach's nudges) may be swallowed by a buffer. So each
        // round peeks at what has arrived (recv(2) MSG_PEEK) and consumes
        // exactly up to the newline, or all of it if there is none yet: two
        // calls for a reply instead of one per byte.
        let mut raw = Vec::with_capacity(128);
        let mut buf = [0u8; 4096];
        loop {
            let peeked = match nix::sys::socket::recv(
                stream.as_raw_fd(),
                &mut buf,
                nix::sys::socket::MsgFlags::MSG_PEEK,
            ) {
                Ok(n) => n,
                Err(e) if gone(&std::io::Error::from(e)) => 0,
                Err(e) => return Err(ctl_err(e.into())),
            };
            if peeked == 0 {
                break;
            }
            let newline = buf[..peeked].iter().position(|&b| b == b'\n');
            let take = newline.map_or(peeked, |i| i + 1);
            match std::io::Read::read_exact(&mut &stream, &mut buf[..take]) {
                Ok(()) => {}
                Err(e) if gone(&e) => break,
                Err(e) => return Err(ctl_err(e)),
            }
            raw.extend_from_slice(&buf[..newline.unwrap_or(take)]);
            if newline.is_some() {
                break;
            }
            if raw.len() >= MAX_LINE {
                return Err(ctl_err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "reply too long",
                )));
            }
        }
        let reply = String::from_utf8_lossy(&raw).into_owned();
        let n = raw.len();
        if n == 0 {
            // The supervisor closed without replying: it is exiting.
            return Err(self.not_running()?);
        }
        let reply: Reply = serde_json::from_str(&reply).map_err(|e| ctl_err(e.into()))?;
        // The code decides (a version-1 reply's is derived from its text).
        if let Some(failure) = reply.failure() {
            if failure.code == ErrorCode::NotRunning {
                return Err(self.not_running()?);
            }
            return Err(Error::Refused {
                id,
                request: what,
                code: failure.code,
                reason: failure.message,
            });
        }
        Ok((reply, stream))
    }

    /// Connects to the supervisor's control socket, with the control
    /// timeouts both ways; no supervisor listening (`ENOENT`,
    /// `ECONNREFUSED`) is [`Error::NotRunning`]. Through /proc/self/fd: a
    /// sun_path holds only 108 bytes, and a root plus a 128-byte id may be
    /// longer.
    pub(crate) fn connect_control(&self) -> Result<UnixStream> {
        let short = format!(
            "/proc/self/fd/{}/{}",
            self.dir.fd().as_raw_fd(),
            names::CONTROL
        );
        let stream = match UnixStream::connect(&short) {
            Ok(s) => s,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ECONNREFUSED)) => {
                return Err(self.not_running()?)
            }
            Err(e) => return Err(self.control_error(e)),
        };
        stream
            .set_read_timeout(Some(CONTROL_TIMEOUT))
            .map_err(|e| self.control_error(e))?;
        stream
            .set_write_timeout(Some(CONTROL_TIMEOUT))
            .map_err(|e| self.control_error(e))?;
        Ok(stream)
    }

    /// An error of the control connection, naming the task and its socket.
    pub(crate) fn control_error(&self, source: std::io::Error) -> Error {
        Error::Control {
            id: self.id().clone(),
            path: self.dir.path().join(names::CONTROL),
            source,
        }
    }

    /// [`Error::NotRunning`] with the status the reconcile finds: the
    /// supervisor has ended, or is ending.
    pub(crate) fn not_running(&self) -> Result<Error> {
        let state = reconcile(&self.dir)?;
        Ok(Error::NotRunning {
            id: self.id().clone(),
            status: state.status,
        })
    }
}

/// One request as the line the control protocol sends.
pub(crate) fn request_line(req: Request) -> std::io::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(&RequestLine::new(req))?;
    line.push(b'\n');
    Ok(line)
}

/// Reads until EOF, discarding what comes (nothing, from a supervisor).
fn read_to_eof(fd: &std::os::fd::OwnedFd) -> nix::Result<()> {
    let mut buf = [0u8; 64];
    loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads a task's state and makes it true: a `starting` or `running` state
/// whose supervisor is dead (its lock free) becomes `lost`, durably, after
/// whatever is left of the task has been killed. A pid from the file is
/// acted on only through a pidfd whose start time matched.
pub(crate) fn reconcile(dir: &TaskDir) -> Result<TaskState> {
    let state = dir.read_state()?;
    let id = dir.id();
    if matches!(state.status, Status::Exited | Status::Lost) {
        log::debug!("reconcile {id}: {}, final", state.status);
        return Ok(state);
    }
    let this_boot = boot_id().map_err(|e| Error::Io {
        op: "read",
        what: "/proc/sys/kernel/random/boot_id".into(),
        source: e,
    })?;
    let rebooted = state.boot_id != this_boot;
    if !rebooted && dir.lock_is_held()? {
        match state.supervisor {
            // The supervisor has not recorded its pid yet, but holds the lock.
            None => {
                log::debug!("reconcile {id}: {}, supervisor starting", state.status);
                return Ok(state);
            }
            Some(sup) => {
                if sup
                    .open()
                    .map_err(|e| Error::Io {
                        op: "check supervisor",
                        what: sup.pid.to_string(),
                        source: e,
                    })?
                    .is_some()
                {
                    log::debug!(
                        "reconcile {id}: {}, supervisor pid {} alive",
                        state.status,
                        sup.pid
                    );
                    return Ok(state);
                }
                // Another reader may be marking it lost right now.
                let again = dir.read_state()?;
                if !matches!(again.status, Status::Starting | Status::Running) {
                    return Ok(again);
                }
                log::warn!(
                    "reconcile {id}: the lock is held, but not by its supervisor pid {} (gone)",
                    sup.pid
                );
                return Err(Error::LockHeldByOther {
                    id: dir.id().clone(),
                    path: dir.path().join(names::LOCK),
                    supervisor_pid: sup.pid,
                });
            }
        }
    }
    // The supervisor is gone. Take its lock so that only one reader records
    // the loss, then look again.
    let lock = dir.open_lock()?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let again = dir.read_state()?;
            return match again.status {
                Status::Exited | Status::Lost => Ok(again),
                _ => Err(Error::LockHeldByOther {
                    id: dir.id().clone(),
                    path: dir.path().join(names::LOCK),
                    supervisor_pid: again.supervisor.map_or(0, |s| s.pid),
                }),
            };
        }
        Err(TryLockError::Error(e)) => {
            return Err(Error::Io {
                op: "flock",
                what: dir.path().join(names::LOCK).display().to_string(),
                source: e,
            })
        }
    }
    let mut state = dir.read_state()?;
    if matches!(state.status, Status::Exited | Status::Lost) {
        log::debug!("reconcile {id}: {} (recorded meanwhile)", state.status);
        return Ok(state);
    }
    log::info!(
        "reconcile {id}: {} but its supervisor is gone{}; cleaning up",
        state.status,
        if rebooted { " (rebooted)" } else { "" }
    );
    let reason = if rebooted {
        "the machine rebooted while the task ran; its exit is unknown".to_owned()
    } else {
        let killed = kill_leftovers(dir, &mut state);
        let killed = match unmount_secrets(dir) {
            Ok(true) => format!("{killed}; its secrets/ tmpfs was unmounted"),
            Ok(false) => killed,
            Err(e) => {
                log::warn!("reconcile {id}: secrets/ not unmounted: {e}");
                state.record_event(kind::SECRETS_UNMOUNT_FAILED, e.to_string());
                format!("{killed}; {e}")
            }
        };
        let sup = state
            .supervisor
            .map_or_else(|| "during start".to_owned(), |s| format!("(pid {})", s.pid));
        format!("the supervisor {sup} died before recording the task's exit; {killed}")
    };
    // Nobody listens on it any more. Left behind, it only refuses
    // connections (which readers take as "not running").
    match nix::unistd::unlinkat(
        dir.fd(),
        names::CONTROL,
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    ) {
        Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => log::debug!("reconcile {id}: unlink {}: {}", names::CONTROL, e.desc()),
    }
    log::warn!("task {id} lost: {reason}");
    state.status = Status::Lost;
    state.finished_at = Some(Timestamp::now());
    state.record_event(kind::LOST, reason.clone());
    state.exit = Some(ExitRecord::lost(reason));
    // Its exec'd processes were in the cgroup killed above.
    state.execs.clear();
    dir.write_state(&state, true)
        .inspect_err(|e| log::warn!("reconcile {id}: the lost state was not written: {e}"))?;
    Ok(state)
}

/// Unmounts the secrets tmpfs of a task whose supervisor is gone (only if
/// the mount at `<task_dir>/secrets` is this task's, see
/// [`crate::isolate::unmount_secrets`]).
pub(crate) fn unmount_secrets(dir: &TaskDir) -> Result<bool> {
    let spec: crate::TaskSpec = crate::state::read_json(dir.fd(), dir.path(), names::SPEC)?;
    match &spec.isolation.task_dir {
        Some(task_dir) => Ok(crate::isolate::unmount_secrets(
            task_dir,
            dir.id().as_str(),
        )?),
        None => Ok(false),
    }
}

/// Kills what is left of a task whose supervisor died: every process of
/// its cgroup (which only the task's processes can be in), then removes the
/// cgroup. Without a recorded cgroup, the task's process group, killed only
/// while its leader is verifiably the task (so the group id cannot have
/// been reused).
fn kill_leftovers(dir: &TaskDir, state: &mut TaskState) -> String {
    if state.cgroup.is_some() {
        match remove_cgroup(dir, state) {
            Ok(()) => return "what was left of the task was killed and its cgroup removed".into(),
            Err(e) => {
                log::warn!("reconcile {}: cgroup not cleaned up: {e}", dir.id());
                state.record_event(kind::CGROUP_CLEANUP_FAILED, e.to_string());
                return format!("its cgroup could not be cleaned up: {e}");
            }
        }
    }
    let Some(task) = state.task else {
        return "no task process was recorded".into();
    };
    match task.open() {
        Ok(Some(pidfd)) => {
            // Either may find nothing (ESRCH): the group or the process is
            // already gone, which is what is wanted.
            if let Err(e) = killpg(Pid::from_raw(task.pid), Signal::SIGKILL) {
                log::debug!("reconcile {}: killpg {}: {}", dir.id(), task.pid, e.desc());
            }
            if let Err(e) = pidfd.signal(Signal::SIGKILL as i32) {
                log::debug!("reconcile {}: pidfd kill {}: {e}", dir.id(), task.pid);
            }
            format!(
                "what was left of the task (process group {}) was killed",
                task.pid
            )
        }
        Ok(None) => "the task's main process had already ended".into(),
        Err(e) => format!(
            "the task's main process {} could not be checked: {e}",
            task.pid
        ),
    }
}

/// Kills everything in a task's cgroup (as recorded in its state) and
/// removes it. A cgroup that is already gone is fine.
///
/// The state file could have been edited, so the recorded path is trusted
/// only if it is `<parent>/<id>` under a cgroup root, where `<parent>` is the
/// parent the task's spec asked for: never a parent, a system slice, or
/// another task's cgroup.
pub(crate) fn remove_cgroup(dir: &TaskDir, state: &TaskState) -> Result<()> {
    use crate::cgroup::{CgroupPaths, CgroupRoot, TaskCgroup, DEFAULT_PARENT};
    let Some(paths) = &state.cgroup else {
        return Ok(());
    };
    let bad = |why: String| Error::Io {
        op: "refuse cgroup",
        what: serde_json::to_string(paths).unwrap_or_default(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, why),
    };
    let dirs: Vec<&std::path::Path> = match paths {
        CgroupPaths::V2(p) => vec![p.as_path()],
        CgroupPaths::V1(m) => m.values().map(|p| p.as_path()).collect(),
    };
    // The usual case: the supervisor removed it when the task ended. No
    // directory it names exists, so there is nothing to check or remove
    // (a look, never an action, at whatever the state names).
    let gone = |d: &&std::path::Path| match std::fs::symlink_metadata(d) {
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        Ok(_) => false,
    };
    if !dirs.is_empty() && dirs.iter().all(gone) {
        return Ok(());
    }
    let spec: crate::TaskSpec = crate::state::read_json(dir.fd(), dir.path(), names::SPEC)?;
    let parent = spec.cgroup_parent.as_deref().unwrap_or(DEFAULT_PARENT);
    let expected = std::path::Path::new(parent).join(state.id.as_str());
    let root = CgroupRoot::detect()?;
    // Exactly <hierarchy>/<parent>/<id>: the hierarchy is the cgroup root
    // itself (v2), or a controller's mount right under it (v1) — never, on
    // v2, a cgroup right under the root.
    let v2 = matches!(paths, CgroupPaths::V2(_));
    let is_hierarchy = |base: &std::path::Path| {
        if v2 {
            base == root.path()
        } else {
            base.parent() == Some(root.path())
        }
    };
    let exact = |d: &std::path::Path| {
        let mut base = d.to_path_buf();
        for _ in expected.components() {
            base.pop();
        }
        d.ends_with(&expected) && is_hierarchy(&base)
    };
    if dirs.is_empty() || !dirs.iter().all(|d| exact(d)) {
        return Err(bad(format!(
            "a task's cgroup must be {} under a cgroup root",
            expected.display()
        )));
    }
    let cg = TaskCgroup::from_paths(&root, paths)?;
    // The path may have been taken over by a task of another root since
    // (this one's cgroup went, and a start there made it anew): its owner
    // mark says so, and then it is not ours to kill. Nothing there at all
    // (the supervisor removed it): nothing to do.
    let owner = crate::cgroup::Owner::root(dir.path().parent().unwrap_or(dir.path()));
    if !cg.ours_to_remove(&owner)? {
        return Ok(());
    }
    cg.remove()?;
    Ok(())
}
