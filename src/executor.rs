//! Starting tasks, reattaching to them, listing them.

use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::fcntl::OFlag;

use crate::error::{Error, Result};
use crate::protocol::{StartReply, MAX_LINE};
use crate::spec::TaskSpec;
use crate::state::{names, write_json, Root, StateError, TaskId, TaskState};
use crate::task::{reconcile, Task};

/// Name of the binary.
pub const SHIM_NAME: &str = "nomad-shim";

/// The hidden subcommand the library runs: `nomad-shim __supervise ROOT ID`.
pub const SUPERVISE_SUBCOMMAND: &str = "__supervise";

/// Starts and reattaches to tasks kept under one root directory.
///
/// Each task runs under its own `nomad-shim` supervisor, which is not a child
/// of the calling process: the agent may exit, crash or restart, and the
/// tasks (and the record of how they ended) stay.
///
/// # Examples
///
/// ```no_run
/// use nomad_shim::{Executor, TaskSpec};
///
/// # fn main() -> nomad_shim::Result<()> {
/// let executor = Executor::with_root("/run/my-agent/tasks")
///     .shim_path("/usr/libexec/nomad-shim")
///     .cgroup_parent("my-agent");
/// let mut task = executor.start(TaskSpec::new("/bin/true").id("job-1"))?;
/// task.wait()?;
/// // Every task under the root, also those of an earlier run of the agent.
/// for (id, state) in executor.list()? {
///     match state {
///         Ok(state) => println!("{id}: {}", state.status),
///         Err(e) => eprintln!("{id}: {e}"),
///     }
/// }
/// executor.remove("job-1", false)?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Executor {
    root: Root,
    shim: Option<PathBuf>,
    cgroup_parent: Option<String>,
}

impl Executor {
    /// An executor on the default root (`/run/nomad-shim` as root, else
    /// `$XDG_RUNTIME_DIR/nomad-shim`).
    pub fn new() -> Result<Executor> {
        Ok(Executor::with_root(Root::default_path()?))
    }

    /// An executor on `root`.
    pub fn with_root(root: impl Into<PathBuf>) -> Executor {
        Executor {
            root: Root::new(root),
            shim: None,
            cgroup_parent: None,
        }
    }

    /// Uses this `nomad-shim` binary. Without it the binary is looked for in
    /// `$NOMAD_SHIM`, next to the current executable, then in `$PATH`.
    pub fn shim_path(mut self, path: impl Into<PathBuf>) -> Executor {
        self.shim = Some(path.into());
        self
    }

    /// Makes the cgroups of tasks whose spec names no parent under `parent`
    /// (default `nomad-shim`), relative to the root of each hierarchy.
    pub fn cgroup_parent(mut self, parent: impl Into<String>) -> Executor {
        self.cgroup_parent = Some(parent.into());
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The `nomad-shim` binary this executor runs.
    pub fn find_shim(&self) -> Result<PathBuf> {
        find_shim(self.shim.as_deref())
    }

    /// Starts a task and returns once its program has been executed (or with
    /// the error that prevented it: [`Error::Start`] names the step, e.g.
    /// `exec /usr/bin/nope: No such file or directory`).
    pub fn start(&self, spec: &TaskSpec) -> Result<Task> {
        let shim = self.find_shim()?;
        let mut pending = self.prepare_start(spec)?;
        // The supervisor reports over a pipe on its stdout. Our end is
        // close-on-exec, so a task started concurrently from another thread
        // can never inherit it (and hold it open: the read would then wait
        // for that task). The spawn dup2()s the write end onto the child's
        // fd 1 (and the lock onto its fd 3), which clears close-on-exec
        // there only.
        let write_end = match pending.take_write_end() {
            Ok(fd) => fd,
            Err(e) => {
                pending.abandon();
                return Err(e);
            }
        };
        let lock = match pending.take_lock() {
            Ok(fd) => fd,
            Err(e) => {
                pending.abandon();
                return Err(e);
            }
        };
        // `nomad-shim __supervise ROOT ID`, with exactly this environment:
        // the sync pipe's EOF then says "exit recorded" (Task::wait); a test
        // build passes its armed failpoints on (src/failpoint.rs). The lock
        // goes on as fd 3 (protocol::LOCK_FD), which the supervisor keeps:
        // held without a gap from the directory's creation to the
        // supervisor's exit. A binary older than that closes it at once (it
        // closes every fd from 3), and takes the lock anew.
        let c = |what: &std::ffi::OsStr| {
            std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(what)).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "a NUL byte in an argument",
                )
            })
        };
        // (Pushed to only by a failpoints build.)
        #[allow(unused_mut, clippy::useless_vec)]
        let mut env = vec![std::ffi::OsString::from(format!(
            "{}=1",
            crate::protocol::SYNC_UNTIL_EXIT_ENV
        ))];
        #[cfg(feature = "failpoints")]
        for (k, v) in crate::failpoint::armed() {
            let mut kv = std::ffi::OsString::from(format!("{k}="));
            kv.push(v);
            env.push(kv);
        }
        let spawned = (|| {
            let program = c(shim.as_os_str())?;
            let args = [
                program.clone(),
                c(SUPERVISE_SUBCOMMAND.as_ref())?,
                c(self.root.path().as_os_str())?,
                c(pending.id().as_str().as_ref())?,
            ];
            let env = env
                .iter()
                .map(|e| c(e.as_os_str()))
                .collect::<std::io::Result<Vec<_>>>()?;
            crate::sys::spawn(
                &program,
                &args.iter().map(|a| a.as_c_str()).collect::<Vec<_>>(),
                &env.iter().map(|e| e.as_c_str()).collect::<Vec<_>>(),
                write_end.as_fd(),
                lock.as_fd(),
                crate::protocol::LOCK_FD,
            )
        })();
        // Our copies of the write end (or EOF never comes) and of the lock
        // (the supervisor holds its own now) go.
        drop(write_end);
        drop(lock);
        let intermediate = match spawned {
            Ok(pid) => nix::unistd::Pid::from_raw(pid),
            Err(source) => {
                let id = pending.id().clone();
                pending.abandon();
                return Err(Error::Spawn { id, shim, source });
            }
        };
        // The intermediate process exits as soon as it has forked the
        // supervisor. ECHILD means a subreaper of the caller's reaped it first.
        self.finish_start(pending, move |_| loop {
            use nix::sys::wait::WaitStatus;
            match nix::sys::wait::waitpid(intermediate, None) {
                Ok(WaitStatus::Exited(_, code)) => {
                    break format!("intermediate process exit status: {code}")
                }
                Ok(WaitStatus::Signaled(_, signal, _)) => {
                    break format!("intermediate process killed by {signal}")
                }
                Ok(status) => break format!("intermediate process {status:?}"),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => break format!("intermediate process: {e}"),
            }
        })
    }

    /// The first half of [`Executor::start`], for a caller that launches the
    /// supervisor itself: validates the spec, resolves the user, creates the
    /// task directory and writes `spec.json`, and makes the sync pipe. The
    /// caller then runs `nomad-shim __supervise ROOT ID` (or, being that
    /// binary and single-threaded, forks into its entry point) with
    /// [`PendingStart::take_write_end`] as its stdout, and passes the
    /// result to [`Executor::finish_start`]. The `nomad-shim` CLI does so to
    /// spare one exec of itself; an agent simply calls [`Executor::start`].
    #[doc(hidden)]
    pub fn prepare_start(&self, spec: &TaskSpec) -> Result<PendingStart> {
        let began = Instant::now();
        spec.validate()?;
        // The isolation too, here in the agent: a bad mount or dns value is
        // a typed error before any process exists.
        spec.isolation.validate()?;
        // And the limits: spec.json cannot carry every f64 (NaN and the
        // infinities become null, which would read back as "no limit").
        spec.resources.validate()?;
        // The cgroup parent, named by the spec or the executor: a typed
        // error here rather than the supervisor's failed cgroup step.
        if let Some(parent) = spec.cgroup_parent.as_ref().or(self.cgroup_parent.as_ref()) {
            crate::cgroup::parent_name(parent)?;
        }
        // The directory appears with the task's lock held, and the lock
        // stays held until the supervisor exits: the launched supervisor
        // inherits this very open file (as its stdin) and keeps it. A
        // directory without a state is then `starting` while the lock is
        // held, and abandoned once it is free.
        let (dir, lock) = match &spec.id {
            Some(id) => self
                .root
                .create_locked_task_dir(&TaskId::new(id.as_str())?)?,
            None => self.create_generated()?,
        };
        let id = dir.id().clone();
        let mut stored = spec.clone();
        stored.id = Some(id.to_string());
        if stored.cgroup_parent.is_none() {
            stored.cgroup_parent.clone_from(&self.cgroup_parent);
        }
        // Names are resolved here, in the agent, with full NSS; the
        // supervisor only ever sees numbers.
        if spec.user.is_some() || spec.group.is_some() {
            let user = spec.user.as_deref().unwrap_or("root");
            match crate::isolate::resolve_user(user, spec.group.as_deref()) {
                Ok(resolved) => stored.isolation.set_user(&resolved),
                Err(e) => {
                    remove_or_warn(dir, "user resolution failed");
                    return Err(e.into());
                }
            }
        }
        // Not fsynced, as `running` is not: a crash of the machine that
        // loses it ends the task as well; the final state is durable.
        if let Err(e) = write_json(dir.fd(), dir.path(), names::SPEC, &stored, 0o600, false) {
            remove_or_warn(dir, "spec.json not written");
            return Err(e.into());
        }
        let (read_end, write_end) = match nix::unistd::pipe2(OFlag::O_CLOEXEC) {
            Ok(ends) => ends,
            Err(e) => {
                remove_or_warn(dir, "sync pipe not made");
                return Err(Error::Io {
                    op: "create sync pipe for",
                    what: id.to_string(),
                    source: e.into(),
                });
            }
        };
        log::debug!("task {id}: directory and spec.json made, launching its supervisor");
        Ok(PendingStart {
            dir,
            read_end,
            write_end: Some(write_end),
            lock: Some(lock),
            began,
        })
    }

    /// The second half of [`Executor::start`]: reads the supervisor's one
    /// reply line and returns the running task, or the start error.
    /// `intermediate` reaps the launched process (it exits at once) and says
    /// how it ended, for the error when the supervisor vanished; it is told
    /// whether the supervisor reported a started task (when the launched
    /// process is the supervisor itself, it is then still running).
    #[doc(hidden)]
    pub fn finish_start(
        &self,
        mut pending: PendingStart,
        intermediate: impl FnOnce(bool) -> String,
    ) -> Result<Task> {
        // Our copy of the write end must be gone, or EOF never comes; and of
        // the lock, which the supervisor holds from here (or, should it
        // vanish, no one: the check below).
        drop(pending.write_end.take());
        drop(pending.lock.take());
        crate::failpoint!("library-after-spawn");
        let PendingStart {
            dir,
            read_end,
            began,
            ..
        } = pending;
        let id = dir.id().clone();
        let reply = read_reply(&read_end);
        let intermediate_status =
            intermediate(matches!(reply, Ok(Some(StartReply::Started { .. }))));
        match reply {
            Ok(Some(StartReply::Started {
                supervisor,
                task,
                warnings,
                until_exit,
            })) => {
                log::info!(
                    "task {id} started: pid {}, supervisor pid {}, in {:?}",
                    task.pid,
                    supervisor.pid,
                    began.elapsed()
                );
                for w in &warnings {
                    log::warn!("task {id}: {w}");
                }
                // Kept when the supervisor holds its end until the exit is
                // durable: its EOF is then the task's wait fd.
                let exit_pipe = until_exit.then_some(read_end);
                Task::started(dir, supervisor, task, warnings, exit_pipe)
            }
            // The supervisor removed the task directory before replying.
            Ok(Some(StartReply::Failed {
                step,
                errno,
                message,
            })) => {
                log::info!(
                    "task {id} failed to start at step {step} after {:?}: {message}",
                    began.elapsed()
                );
                Err(Error::Start {
                    id,
                    step,
                    errno,
                    message,
                })
            }
            Ok(None) | Err(_) => {
                let detail = match reply {
                    Err(e) => format!("{e}; {intermediate_status}"),
                    _ => intermediate_status,
                };
                log::warn!("task {id}: its supervisor vanished during the start: {detail}");
                if lock_freed(&dir) {
                    // The supervisor may have died after the task was forked:
                    // reconcile kills whatever its state names (the cgroup)
                    // before the directory goes.
                    if let Err(e) = crate::task::reconcile(&dir) {
                        log::warn!("task {id}: clean-up after the vanished supervisor: {e}");
                    }
                    self.remove_stateless_cgroup(&dir);
                    remove_or_warn(dir, "its supervisor vanished");
                }
                Err(Error::SupervisorVanished { id, detail })
            }
        }
    }

    fn create_generated(&self) -> Result<(crate::state::TaskDir, std::fs::File)> {
        loop {
            match self.root.create_locked_task_dir(&TaskId::generate()) {
                Err(StateError::Exists { .. }) => continue,
                other => return Ok(other?),
            }
        }
    }

    /// Reattaches to task `id`: validates its state, and checks that the
    /// supervisor it names is alive (lock held, pidfd opened, start time and
    /// boot id equal) before trusting any pid. A task whose supervisor died
    /// before recording the exit is marked `lost`, and what is left of it is
    /// killed.
    pub fn open(&self, id: &str) -> Result<Task> {
        let id = TaskId::new(id)?;
        let dir = self.root.open_task_dir(&id)?;
        let state = reconcile(&dir)?;
        log::info!(
            "task {id} opened: {}{}",
            state.status,
            state
                .supervisor
                .map_or_else(String::new, |s| format!(", supervisor pid {}", s.pid))
        );
        Task::opened(dir, state)
    }

    /// The state of every task under the root, sorted by id. A task whose
    /// files are broken is an `Err` in its own entry; it never hides the
    /// others.
    pub fn list(&self) -> Result<Vec<(TaskId, Result<TaskState>)>> {
        let ids = self.root.task_ids()?;
        Ok(ids
            .into_iter()
            .filter_map(|id| {
                let state =
                    self.root.open_task_dir(&id).map_err(Error::from).and_then(
                        |dir| match reconcile(&dir) {
                            // No state yet: with the lock held (the start takes
                            // it with the directory), a start on its way, not a
                            // broken task. With the lock free, look once more:
                            // the whole start, run and end of a short task may
                            // have passed since the state was missing.
                            Err(Error::State(StateError::Missing { .. })) => {
                                if dir.lock_is_held().unwrap_or(false) {
                                    let boot_id =
                                        crate::identity::boot_id().map_err(|e| Error::Io {
                                            op: "read",
                                            what: "/proc/sys/kernel/random/boot_id".into(),
                                            source: e,
                                        })?;
                                    Ok(TaskState::starting(id.clone(), boot_id))
                                } else {
                                    reconcile(&dir)
                                }
                            }
                            other => other,
                        },
                    );
                match &state {
                    // Removed since the root was read, or being removed (its
                    // files going while they were read): gone, not broken.
                    Err(Error::State(StateError::NoSuchTask { .. })) => return None,
                    Err(_) if std::fs::symlink_metadata(self.root.task_path(&id)).is_err() => {
                        return None
                    }
                    Err(e) => log::warn!("list: task {id}: {e}"),
                    Ok(_) => {}
                }
                Some((id, state))
            })
            .collect())
    }

    /// Removes an ended task's directory. A task still running is refused
    /// unless `force`, which kills it first (kill signal skipped: SIGKILL).
    ///
    /// A task whose exit is recorded may still have its supervisor removing
    /// the cgroup ([`Task::wait`] returns as soon as the exit is durable):
    /// `remove` waits for that supervisor to exit, 15 s at most, then fails
    /// with [`Error::Io`] (`TimedOut`), or with `force` goes on.
    ///
    /// With `force`, an id without a task directory in this root still has
    /// its cgroup at exactly `<parent>/<id>` killed and removed if that
    /// cgroup is marked as made for this root (a task directory removed by
    /// hand, or a supervisor killed before its first state write): the
    /// command a refused start suggests must work then too.
    pub fn remove(&self, id: &str, force: bool) -> Result<()> {
        let id = TaskId::new(id)?;
        let dir = match self.root.open_task_dir(&id) {
            Ok(dir) => dir,
            Err(e @ crate::state::StateError::NoSuchTask { .. }) if force => {
                return self.remove_orphan_cgroup(&id, e);
            }
            Err(e) => return Err(e.into()),
        };
        match reconcile(&dir) {
            Ok(state)
                if state.status == crate::Status::Running
                    || state.status == crate::Status::Starting =>
            {
                if !force {
                    return Err(Error::StillRunning {
                        id,
                        status: state.status,
                    });
                }
                let mut task = Task::opened(self.root.open_task_dir(&id)?, state)?;
                task.force_stop()?;
            }
            // The supervisor removes the task's cgroup when the task ends, and
            // reconcile when it finds the supervisor dead; a removal that was
            // interrupted is finished here (removing a gone cgroup is a no-op).
            // With force, a cgroup that cannot be removed (a refused path, a
            // process that will not die) does not keep the directory.
            Ok(state) => match wait_supervisor_end(&dir, &state, force)
                .and_then(|()| crate::task::remove_cgroup(&dir, &state))
                .and_then(|()| crate::task::unmount_secrets(&dir).map(drop))
            {
                Ok(()) => {}
                Err(e) if force => {
                    log::warn!("rm --force {id}: clean-up failed, removing anyway: {e}")
                }
                Err(e) => {
                    log::warn!("rm {id}: clean-up failed: {e}");
                    return Err(e);
                }
            },
            // A broken task directory can only be removed on purpose.
            Err(e) if !force => return Err(e),
            Err(e) => {
                log::warn!("rm --force {id}: removing a broken task directory: {e}");
                if dir.lock_is_held()? {
                    return Err(Error::StillRunning {
                        id,
                        status: crate::Status::Running,
                    });
                }
                self.remove_stateless_cgroup(&dir);
            }
        }
        dir.remove().inspect_err(|e| log::warn!("rm {id}: {e}"))?;
        log::info!("task {id} removed");
        Ok(())
    }

    /// [`Executor::remove`] with `force` of an id without a task directory:
    /// this root's cgroup for it, if any; else `missing`.
    fn remove_orphan_cgroup(&self, id: &TaskId, missing: crate::state::StateError) -> Result<()> {
        use crate::cgroup::{CgroupRoot, Owner, TaskCgroup, DEFAULT_PARENT};
        let parent = self.cgroup_parent.as_deref().unwrap_or(DEFAULT_PARENT);
        let Ok(root) = CgroupRoot::detect() else {
            return Err(missing.into());
        };
        let owner = Owner::root(self.root.path());
        if TaskCgroup::remove_orphan(&root, parent, id.as_str(), &owner)? {
            log::warn!(
                "rm --force {id}: no task directory in {}; its cgroup {parent}/{id}, marked as made \
                 for this root, was killed and removed",
                self.root.path().display()
            );
            Ok(())
        } else {
            Err(missing.into())
        }
    }
}

impl Executor {
    /// A supervisor killed after it made the task's cgroup but before its
    /// first state write (the crash matrix, tests/crash.rs) leaves a cgroup
    /// that no `state.json` names: with no state in `dir` (and its lock
    /// free), the cgroup at `<parent>/<id>` marked as made for this root (or
    /// unmarked and empty: killed between its `mkdir`s and the marks) is
    /// killed and removed. Only logged on failure: the caller's own error
    /// (the start's, or `rm --force`'s success) is what matters.
    fn remove_stateless_cgroup(&self, dir: &crate::state::TaskDir) {
        use crate::cgroup::{CgroupRoot, Owner, TaskCgroup, DEFAULT_PARENT};
        if dir.path().join(names::STATE).exists() {
            return;
        }
        let id = dir.id();
        let spec: Option<TaskSpec> =
            crate::state::read_json(dir.fd(), dir.path(), names::SPEC).ok();
        let parent = spec
            .and_then(|s| s.cgroup_parent)
            .or_else(|| self.cgroup_parent.clone())
            .unwrap_or_else(|| DEFAULT_PARENT.to_owned());
        let Ok(root) = CgroupRoot::detect() else {
            return;
        };
        match TaskCgroup::remove_unrecorded(&root, &parent, id.as_str(), &Owner::root(self.root.path())) {
            Ok(true) => log::warn!(
                "task {id}: no state.json, but its cgroup {parent}/{id} (made for this root) was                  left: killed and removed"
            ),
            Ok(false) => {}
            Err(e) => log::warn!("task {id}: its cgroup {parent}/{id} not removed: {e}"),
        }
    }
}

/// Removes the directory of a start that failed; a failure is only logged
/// (the start's own error is what the caller gets).
/// Whether the task's lock is free, or becomes so within a second. The
/// supervisor holds the lock through the open file the start took it on
/// (its stdin); a process that dies closes its descriptors in an order of
/// the kernel's (the sync pipe's EOF can come first), and the lock is
/// free a moment later. Held past that: someone else holds it.
fn lock_freed(dir: &crate::state::TaskDir) -> bool {
    let deadline = Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match dir.lock_is_held() {
            Ok(false) => return true,
            Ok(true) if Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(1))
            }
            _ => return false,
        }
    }
}

fn remove_or_warn(dir: crate::state::TaskDir, why: &str) {
    let id = dir.id().clone();
    if let Err(e) = dir.remove() {
        log::warn!("task {id}: {why}, and its directory could not be removed: {e}");
    }
}

/// How long `remove` waits for a supervisor that has recorded its task's
/// exit to finish (remove the cgroup, exit): the cgroup's removal may have
/// to kill a process that joined it late, which takes at most the kill's
/// deadline.
const FINISH_TIMEOUT: std::time::Duration =
    crate::cgroup::DEFAULT_KILL_TIMEOUT.saturating_add(std::time::Duration::from_secs(5));

/// A final state is on disk, but its supervisor may still be finishing
/// (`Task::wait` returns before it has removed the cgroup and exited):
/// wait for its exit, so that nothing removes what it is still removing.
/// Gone already (the usual case) costs one `pidfd_open`.
fn wait_supervisor_end(dir: &crate::state::TaskDir, state: &TaskState, force: bool) -> Result<()> {
    let Some(sup) = state.supervisor else {
        return Ok(());
    };
    let io = |op: &'static str| {
        let what = format!("{} (supervisor pid {})", dir.id(), sup.pid);
        move |source: std::io::Error| Error::Io { op, what, source }
    };
    let Some(pidfd) = sup.open().map_err(io("check the supervisor of"))? else {
        return Ok(());
    };
    if pidfd
        .wait_exit(Some(FINISH_TIMEOUT))
        .map_err(io("wait for the supervisor of"))?
        || force
    {
        return Ok(());
    }
    Err(io(
        "wait for the supervisor to finish (remove the cgroup) of",
    )(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "still running {}s after the exit was recorded; rm --force removes the task anyway",
            FINISH_TIMEOUT.as_secs()
        ),
    )))
}

fn read_reply(read_end: &OwnedFd) -> std::io::Result<Option<StartReply>> {
    // Up to the line's end, not to EOF: a supervisor asked to keep the pipe
    // open (protocol::SYNC_UNTIL_EXIT_ENV) closes it only at the task's
    // exit. It writes nothing after the line, so nothing is read past it.
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    while !buf.ends_with(b"\n") && buf.len() < MAX_LINE {
        match nix::unistd::read(read_end, &mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let line = buf.trim_ascii_end();
    if line.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(line).map(Some).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad reply {:?}: {e}", String::from_utf8_lossy(&buf)),
        )
    })
}

/// A start between [`Executor::prepare_start`] and
/// [`Executor::finish_start`]: the task directory and spec exist, the
/// supervisor is to be launched.
#[derive(Debug)]
pub struct PendingStart {
    dir: crate::state::TaskDir,
    read_end: OwnedFd,
    write_end: Option<OwnedFd>,
    /// The task's lock, taken with the directory; passed to the supervisor.
    lock: Option<std::fs::File>,
    /// When the start began, for the duration logged.
    began: Instant,
}

impl PendingStart {
    /// The task's id.
    pub fn id(&self) -> &TaskId {
        self.dir.id()
    }

    /// The sync pipe's write end, to become the supervisor's stdout
    /// (close-on-exec; `dup2` it onto fd 1 in the launched process).
    /// There is one: a second call is [`Error::Io`] (`EBADF`), never a
    /// panic.
    pub fn take_write_end(&mut self) -> Result<OwnedFd> {
        self.write_end.take().ok_or_else(|| Error::Io {
            op: "take the sync pipe's write end (taken already) of",
            what: self.dir.id().to_string(),
            source: std::io::Error::from_raw_os_error(libc::EBADF),
        })
    }

    /// The task's lock, held since the directory was made (close-on-exec).
    /// A launcher that runs `nomad-shim __supervise` passes it as fd 3
    /// ([`protocol::LOCK_FD`](crate::protocol::LOCK_FD)); one that forks into
    /// the supervisor's entry point, as its stdin. The supervisor keeps that
    /// open file, so the lock is never free while the start is on its way.
    /// Once, like [`take_write_end`](Self::take_write_end).
    pub fn take_lock(&mut self) -> Result<OwnedFd> {
        self.lock
            .take()
            .map(OwnedFd::from)
            .ok_or_else(|| Error::Io {
                op: "take the lock (taken already) of",
                what: self.dir.id().to_string(),
                source: std::io::Error::from_raw_os_error(libc::EBADF),
            })
    }

    /// Gives up before a supervisor ran: removes the task directory.
    pub fn abandon(self) {
        remove_or_warn(self.dir, "the start was abandoned");
    }
}

/// Finds the binary: `explicit`, then `$NOMAD_SHIM`, then next to the current
/// executable (and, for test binaries and examples under `target/<profile>/deps`
/// or `examples`, one level up), then `$PATH`.
///
/// # Examples
///
/// ```
/// // What `Executor::new()` would run, or where it looked.
/// match nomad_shim::find_shim(None) {
///     Ok(path) => println!("supervisor binary: {}", path.display()),
///     Err(e) => println!("{e}"),
/// }
/// ```
pub fn find_shim(explicit: Option<&Path>) -> Result<PathBuf> {
    let mut tried = Vec::new();
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = explicit {
        candidates.push(p.to_path_buf());
    } else {
        if let Some(p) = std::env::var_os("NOMAD_SHIM").filter(|p| !p.is_empty()) {
            candidates.push(PathBuf::from(p));
        }
        if let Ok(exe) = std::env::current_exe() {
            if let Some(dir) = exe.parent() {
                candidates.push(dir.join(SHIM_NAME));
                if dir
                    .file_name()
                    .is_some_and(|n| n == "deps" || n == "examples")
                {
                    if let Some(up) = dir.parent() {
                        candidates.push(up.join(SHIM_NAME));
                    }
                }
            }
        }
        if let Some(path) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&path).map(|d| d.join(SHIM_NAME)));
        }
    }
    for c in candidates {
        if is_executable(&c) {
            return Ok(c);
        }
        tried.push(c.display().to_string());
    }
    Err(Error::ShimNotFound {
        tried: tried.join(", "),
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue 10): a second `take_write_end` panicked.
    #[test]
    fn take_write_end_twice_is_an_error_not_a_panic() {
        let tmp = tempfile::tempdir().unwrap();
        let executor = Executor::with_root(tmp.path().join("root"));
        let mut pending = executor.prepare_start(&TaskSpec::new("true")).unwrap();
        let id = pending.id().clone();
        assert!(pending.take_write_end().is_ok());
        match pending.take_write_end() {
            Err(Error::Io { what, source, .. }) => {
                assert_eq!(what, id.as_str());
                assert_eq!(source.raw_os_error(), Some(libc::EBADF));
            }
            other => panic!("expected Error::Io, got {other:?}"),
        }
        pending.abandon();
        assert!(!tmp.path().join("root").join(id.as_str()).exists());
    }
}
