//! The supervisor: `nomad-shim __supervise ROOT ID`, run by the library.
//!
//! ```text
//! library ──spawn──▶ intermediate ──fork──▶ supervisor ──fork──▶ task child ──exec──▶ program
//!    ◀── sync pipe (our fd 1): one StartReply line ──┘
//! ```
//!
//! The intermediate exits at once, so the supervisor is re-parented away
//! from the agent (to init, or to the agent's subreaper) and outlives it.
//! The CLI forks the supervisor itself and is its intermediate
//! (`main_forked`, cli/launch.rs).
//! The supervisor is single-threaded (no runtime, no pools), which is what
//! makes forking the task child from it sound.

mod child;
mod cpu_rate;
mod event_loop;
mod events;
mod exec;
mod init;
mod logs;
mod lookup;
mod reap;
mod terminal;

use std::ffi::{CString, OsStr};
use std::fs::{File, TryLockError};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::stat::Mode;
use nix::unistd::{ForkResult, Pid};
use nomad_shim::cgroup::{self, CgroupRoot, TaskCgroup};
use nomad_shim::protocol::StartReply;
use nomad_shim::spec::DEFAULT_PATH;
use nomad_shim::state::{names, read_json, Root, TaskDir, TaskId, TaskState, Timestamp};
use nomad_shim::step::{Step, StepError};
use nomad_shim::{identity, isolate, Identity, Status, TaskSpec};

use child::{ChildPlan, ChildStdio};

/// How long the supervisor retries its lock while a reader (`ps`) holds a
/// shared lock for a moment.
const LOCK_RETRIES: u32 = 2000;

/// A start that failed: reported on the sync pipe, then the supervisor exits.
struct Failure {
    step: Step,
    errno: Option<Errno>,
    message: String,
}

impl Failure {
    fn new(step: Step, errno: Option<Errno>, message: impl Into<String>) -> Failure {
        Failure {
            step,
            errno,
            message: message.into(),
        }
    }

    fn errno(step: Step, what: impl std::fmt::Display, e: Errno) -> Failure {
        Failure::new(step, Some(e), format!("{step} {what}: {}", e.desc()))
    }
}

/// Entry point of `__supervise`. Never returns.
pub fn main(root: &OsStr, id: &OsStr) -> ! {
    // The task's lock, which the library passes as fd 3 (protocol::LOCK_FD)
    // when it is the `lock` file of this task: onto stdin, where the CLI's
    // fork puts it too and `supervise` takes it from.
    lock_fd_onto_stdin(Path::new(root).join(id).join(names::LOCK).as_path());
    // Before anything opens a descriptor of its own: close every fd the
    // agent let us inherit (only 0-2 are ours). close_range(2) fails only
    // on a kernel older than 5.9, where nothing can be done about it here
    // (and nothing could say so: no state, no reply channel beyond fd 1).
    let _ = nomad_shim::sys::close_range(3, 0);

    // Fork once more and let the intermediate exit: the supervisor is then
    // no child of the agent, and never its problem to reap.
    match crate::sys::fork() {
        Ok(ForkResult::Parent { .. }) => {
            nomad_shim::failpoint!("intermediate-after-fork");
            crate::sys::exit_now(0)
        }
        Ok(ForkResult::Child) => {}
        Err(e) => {
            report(&StartReply::Failed {
                step: Step::Fork,
                errno: Some(e as i32),
                message: format!("fork supervisor: {}", e.desc()),
            });
            std::process::exit(1);
        }
    }
    run(
        root,
        id,
        Caller {
            sync_until_exit: keep_sync_until_exit(),
            remove_if_abandoned: None,
        },
    )
}

/// `dup2(LOCK_FD, 0)` if `LOCK_FD` is the file at `lock` (same device and
/// inode); otherwise nothing (an older library passes no lock, and fd 3
/// may be anything an agent leaked).
fn lock_fd_onto_stdin(lock: &Path) {
    use nix::sys::stat::{fstat, stat};
    use std::os::fd::BorrowedFd;
    let raw = nomad_shim::protocol::LOCK_FD;
    // SAFETY: fcntl(F_GETFD) on an integer: whether fd 3 is open at all.
    #[allow(unsafe_code)]
    let open = unsafe { libc::fcntl(raw, libc::F_GETFD) } >= 0;
    let Ok(file) = stat(lock) else { return };
    if !open {
        return;
    }
    // SAFETY: fd 3 is open (above) and stays so for this borrow, used by the
    // fstat and dup2 below only: nothing in this process owns or closes it
    // before the close_range that follows our return.
    #[allow(unsafe_code)]
    let fd = unsafe { BorrowedFd::borrow_raw(raw) };
    match fstat(fd) {
        Ok(st) if (st.st_dev, st.st_ino) == (file.st_dev, file.st_ino) => {
            let _ = nix::unistd::dup2_stdin(fd);
        }
        _ => {}
    }
}

/// What the process that started us asked of the task's end.
struct Caller {
    /// The library's: keep the sync pipe until the final state is durable
    /// (its `wait` wakes on the close).
    sync_until_exit: bool,
    /// `run --rm`'s: the read end of a pipe whose write end the CLI holds
    /// (cli/launch.rs). Should the CLI go before it has read the task's
    /// exit (the pipe ends without its one byte), the task's directory is
    /// removed at the task's end.
    remove_if_abandoned: Option<OwnedFd>,
}

/// Whether the library that ran us asked for the sync pipe to stay open
/// until the task's final state is durable (docs/protocol.md, "The sync
/// pipe"): its EOF is then the library's wake-up for `wait`. An older
/// library does not ask, and reads the pipe to EOF at the start.
fn keep_sync_until_exit() -> bool {
    std::env::var_os(nomad_shim::protocol::SYNC_UNTIL_EXIT_ENV).is_some_and(|v| v == "1")
}

/// Entry point of a supervisor the CLI forked (cli/launch.rs): the CLI is
/// the intermediate itself. It exits as soon as the start is reported
/// (`start`), or once the task has ended (`run`, which reaps us if we are
/// gone by then); either way we are then re-parented, as after the
/// intermediate's exit, and the fork an intermediate would cost is spared.
/// `remove_if_abandoned`: `run --rm`'s pipe (see [`Caller`]).
/// Never returns.
pub fn main_forked(root: &OsStr, id: &OsStr, remove_if_abandoned: Option<OwnedFd>) -> ! {
    // Only 0-2 are ours (see `main`), and the pipe `run --rm` gave us.
    match &remove_if_abandoned {
        Some(fd) => crate::sys::close_from_but(3, fd.as_raw_fd() as libc::c_uint),
        None => {
            let _ = nomad_shim::sys::close_range(3, 0);
        }
    }
    // The CLI follows the task's streams, which end when the exit is
    // durable; it asks for no exit notice on the sync pipe.
    run(
        root,
        id,
        Caller {
            sync_until_exit: false,
            remove_if_abandoned,
        },
    )
}

/// The supervisor proper, in the process that stays: start the task,
/// report, supervise it until its exit is recorded, then exit.
fn run(root: &OsStr, id: &OsStr, caller: Caller) -> ! {
    nomad_shim::failpoint!("supervisor-after-fork");
    let code = match supervise(Path::new(root), id, caller) {
        Ok(()) => 0,
        Err(f) => {
            report(&StartReply::Failed {
                step: f.step,
                errno: f.errno.map(|e| e as i32),
                message: f.message,
            });
            1
        }
    };
    std::process::exit(code)
}

/// Writes the one reply line to the sync pipe (fd 1).
/// With `write(2)` on fd 1, not through std's buffered stdout: when the CLI
/// forks into the supervisor, whatever its stdout buffer held must not
/// precede the reply.
fn report(reply: &StartReply) {
    let mut line = serde_json::to_vec(reply).unwrap_or_default();
    line.push(b'\n');
    let stdout = std::io::stdout();
    let mut rest = line.as_slice();
    while !rest.is_empty() {
        match nix::unistd::write(&stdout, rest) {
            Ok(n) => rest = &rest[n..],
            Err(Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

fn supervise(root: &Path, id: &OsStr, caller: Caller) -> Result<(), Failure> {
    // A session of our own: no terminal, no signals aimed at the agent's
    // process group.
    nix::unistd::setsid().map_err(|e| Failure::errno(Step::Setsid, "supervisor", e))?;
    // Subreaper: orphans of the task (a daemon that double-forked) are
    // re-parented to us, so we reap them and they never reach init.
    // Not dumpable: no ptrace, and /proc/<pid>/exe, mem, fds of the
    // supervisor are root's and need CAP_SYS_PTRACE — which no task holds —
    // so a task cannot reach the shim binary through us (runc's
    // CVE-2019-5736). The child is not dumpable either, until its exec.
    // PR_SET_DUMPABLE with 0 cannot fail (prctl(2): EINVAL is for values
    // other than 0 and 1).
    let _ = nix::sys::prctl::set_dumpable(false);
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| Failure::errno(Step::Prctl, "PR_SET_CHILD_SUBREAPER", e))?;
    // Lower our own OOM score where permitted: killing the supervisor would
    // lose the task's exit. The child puts its own back to 0. Refused
    // without CAP_SYS_RESOURCE, which is expected and not worth an event.
    let _ = std::fs::write("/proc/self/oom_score_adj", b"-999");
    // The caller's CPU affinity is not ours either: an agent pinned to one
    // CPU would pin every supervisor to it. Every CPU of our cpuset instead
    // (the task child resets its own again, inside its cgroup). A failure
    // only leaves the caller's affinity, which is harmless.
    let _ = child::reset_affinity();
    // From here the library's warnings in this process become events.
    events::install();
    // The conventional umask, which the task inherits. Every file of the
    // supervisor's own gets an explicit mode (state 0644, spec 0600, logs
    // 0640, control socket 0600, all in a 0700 directory).
    nix::sys::stat::umask(Mode::from_bits_truncate(0o022));

    let id = id
        .to_str()
        .and_then(|s| TaskId::new(s).ok())
        .ok_or_else(|| Failure::new(Step::Spec, None, format!("invalid task id {id:?}")))?;
    let root = Root::new(root);
    let dir = root
        .open_task_dir(&id)
        .map_err(|e| Failure::new(Step::Open, None, e.to_string()))?;
    let lock = match inherited_lock(&dir) {
        Some(lock) => lock,
        None => take_lock(&dir)?,
    };

    // From here the directory is ours: a failed start removes it, so that
    // nothing half-made is left for `ps` (the error goes back to the caller).
    match prepare_and_start(&dir, lock, caller) {
        Ok(()) => Ok(()),
        Err(mut f) => {
            // The caller gets the start's error; a directory left behind is
            // said in it (ps would show it broken).
            if let Err(e) = nomad_shim::state::remove_task_path(dir.path()) {
                f.message.push_str(&format!(
                    "; and {} was not removed: {e}",
                    dir.path().display()
                ));
            }
            Err(f)
        }
    }
}

/// The lock the launcher took when it made the task's directory
/// (`PendingStart::take_lock`), on our stdin: the CLI's fork puts it there,
/// and `main` moves the library's fd 3 there. The same open file, so the
/// lock has been held without a gap since the directory exists, and a
/// reader that finds no state yet sees a start on its way. Moved off fd 0,
/// which becomes /dev/null as before. `None` when fd 0 is not this
/// directory's lock file (an older launcher): [`take_lock`] then.
fn inherited_lock(dir: &TaskDir) -> Option<File> {
    use nix::sys::stat::{fstat, fstatat};
    let stdin = std::io::stdin();
    let ours = fstat(stdin.as_fd()).ok()?;
    let file = fstatat(
        dir.fd(),
        names::LOCK,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .ok()?;
    if (ours.st_dev, ours.st_ino) != (file.st_dev, file.st_ino) {
        return None;
    }
    // F_DUPFD_CLOEXEC from 3 up: off stdio, and never into the task.
    let lock = File::from(stdin.as_fd().try_clone_to_owned().ok()?);
    // The launcher's lock on this open file is ours: taking it again is a
    // no-op that succeeds (flock(2) converts a lock held through the same
    // open file). Anything else means it is not the launcher's lock.
    lock.try_lock().ok()?;
    if let Ok(null) = nix::fcntl::open(
        c"/dev/null",
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        let _ = nix::unistd::dup2_stdin(null.as_fd());
    }
    Some(lock)
}

/// Takes the exclusive lock that means "supervisor alive". A reader may
/// hold a shared lock for a moment (`lock_is_held`), so retry briefly.
fn take_lock(dir: &TaskDir) -> Result<File, Failure> {
    let lock = dir
        .open_lock()
        .map_err(|e| Failure::new(Step::Lock, None, e.to_string()))?;
    for _ in 0..LOCK_RETRIES {
        match lock.try_lock() {
            Ok(()) => return Ok(lock),
            Err(TryLockError::WouldBlock) => std::thread::sleep(Duration::from_micros(500)),
            Err(TryLockError::Error(e)) => {
                return Err(Failure::new(
                    Step::Lock,
                    Errno::from_raw(e.raw_os_error().unwrap_or(0)).into(),
                    format!("flock {}: {e}", dir.path().join(names::LOCK).display()),
                ))
            }
        }
    }
    Err(Failure::new(
        Step::Lock,
        Some(Errno::EWOULDBLOCK),
        format!(
            "{} is held by another process",
            dir.path().join(names::LOCK).display()
        ),
    ))
}

fn prepare_and_start(dir: &TaskDir, lock: File, caller: Caller) -> Result<(), Failure> {
    let spec: TaskSpec = read_json(dir.fd(), dir.path(), names::SPEC)
        .map_err(|e| Failure::new(Step::Spec, None, e.to_string()))?;
    let boot_id = identity::boot_id().map_err(|e| {
        Failure::new(
            Step::BootId,
            None,
            format!("read /proc/sys/kernel/random/boot_id: {e}"),
        )
    })?;
    let me = Identity::of(std::process::id() as i32)
        .map_err(|e| Failure::new(Step::Identity, None, format!("read /proc/self/stat: {e}")))?;
    let mut state = TaskState::starting(dir.id().clone(), boot_id);
    state.supervisor = Some(me);

    // The task's cgroup, with its limits, before anything of the task exists
    // (docs/isolation.md). The supervisor itself stays outside it: its memory does
    // not count against the task, and it survives the task's OOM.
    // The device rules first: a passed-through device that is not one fails
    // the start before anything is created.
    let device_rules = isolate::device_rules(&spec.isolation)
        .map_err(|e| Failure::new(Step::Devices, None, e.to_string()))?;
    let cg_root =
        CgroupRoot::detect().map_err(|e| Failure::new(Step::Cgroup, None, e.to_string()))?;
    let parent = spec
        .cgroup_parent
        .as_deref()
        .unwrap_or(cgroup::DEFAULT_PARENT);
    // Marked with our state root; a leftover of this root at the same path
    // is killed and made anew, another root's is refused (docs/cgroups.md).
    let owner = cgroup::Owner::root(dir.path().parent().unwrap_or(dir.path()));
    let (cgroup, skipped) = TaskCgroup::create_owned(
        &cg_root,
        parent,
        dir.id().as_str(),
        &spec.resources,
        spec.best_effort_limits,
        &owner,
    )
    .map_err(|e| Failure::new(Step::Cgroup, None, e.to_string()))?;
    state.cgroup = Some(cgroup.paths());
    state.warnings = skipped
        .iter()
        .map(|e| format!("limit skipped (best effort): {e}"))
        .collect();
    // A leftover cgroup killed, say (logged by the library, kept here).
    events::flush_into(&mut state);
    let task_dir = spec.isolation.task_dir.clone();
    // The device rules, before any process of the task is in the cgroup
    // (v1 devices.deny/allow; v2 the BPF device program).
    let restricted = cgroup
        .restrict_devices(&device_rules)
        .map_err(|e| Failure::new(Step::Devices, None, e.to_string()));
    match restricted.and_then(|()| start_in_cgroup(dir, lock, spec, state, me, &cgroup, caller)) {
        Ok(()) => Ok(()),
        Err(mut f) => {
            // The directory goes with the failed start, so a clean-up that
            // fails is said in the start's error.
            if let Err(e) = cgroup.remove() {
                f.message
                    .push_str(&format!("; and the task's cgroup was not removed: {e}"));
            }
            // The child is dead (reaped): nothing holds secrets/ any more.
            if let Some(task_dir) = &task_dir {
                if let Err(e) = isolate::unmount_secrets(task_dir, dir.id().as_str()) {
                    f.message
                        .push_str(&format!("; and secrets/ was not unmounted: {e}"));
                }
            }
            Err(f)
        }
    }
}

fn start_in_cgroup(
    dir: &TaskDir,
    lock: File,
    mut spec: TaskSpec,
    mut state: TaskState,
    me: Identity,
    cgroup: &TaskCgroup,
    caller: Caller,
) -> Result<(), Failure> {
    // Not fsynced: a crash now loses a task that never ran.
    nomad_shim::failpoint!("supervisor-before-state-starting");
    dir.write_state(&state, false)
        .map_err(|e| Failure::new(Step::State, None, e.to_string()))?;
    nomad_shim::failpoint!("supervisor-after-state-starting");

    // Block the signals the loop reads from a signalfd *before* the fork, so
    // that no exit of the child can be missed (signalfd(2)).
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        mask.add(s);
    }
    mask.thread_block()
        .map_err(|e| Failure::errno(Step::Sigprocmask, "supervisor", e))?;

    // The task's stdio: /dev/null in, pipes out. Our read ends are
    // non-blocking (the loop drains them); the task's write ends block, as
    // a program expects. The log files, the signalfd, the timer and the
    // control socket are made after the fork (`loop_fds`), while the child
    // sets itself up: the pipes hold the task's first output until then.
    let devnull = open(
        c"/dev/null",
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Failure::errno(Step::Open, "/dev/null", e))?;
    let (out_r, out_w) = log_pipe()?;
    let (err_r, err_w) = log_pipe()?;
    let (error_r, error_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| Failure::errno(Step::Pipe, "error pipe", e))?;
    // The task's own terminal or stdin pipe (`terminal.rs`), if it has one.
    // With a terminal the log pipes above reach EOF at once (the child
    // takes none of them); its output is logged as stdout by the loop.
    let (task_stdio, child_ends) = match terminal::TaskStdio::open(&spec)
        .map_err(|e| Failure::errno(Step::OpenPty, "of the task", e))?
    {
        Some((s, ends)) => (Some(s), Some(ends)),
        None => (None, None),
    };
    state.stdin = spec.stdin;
    state.tty = spec.tty;
    if let Some(ends) = &child_ends {
        terminal::console_for_chroot(&mut spec, ends)
            .map_err(|e| Failure::errno(Step::OpenPty, "of the task", e))?;
    }

    // Everything the child needs, made now: the isolation plan (task dir
    // layout, mount list, credentials, capability sets), argv, envp, and
    // the fds of the cgroup to join.
    let isolation = isolate::prepare(
        &spec.isolation,
        spec.cwd.as_deref(),
        Some(&cgroup.paths()),
        dir.path(),
    )
    .map_err(|e| Failure::new(Step::Isolate, None, e.to_string()))?;
    let (cgroup_procs, cgroup_dir) = match cgroup.dir_fd() {
        Ok(Some(dir)) => (Vec::new(), Some(dir)),
        Ok(None) => (
            cgroup
                .open_procs_files()
                .map_err(|e| Failure::new(Step::Cgroup, None, e.to_string()))?,
            None,
        ),
        Err(e) => return Err(Failure::new(Step::Cgroup, None, e.to_string())),
    };
    let mut plan = child_plan(&spec, isolation, cgroup_procs)?;
    // secrets/: a tmpfs on the host, mounted last before the fork (the
    // task dir exists now); a failed start unmounts it (prepare_and_start).
    let secrets = isolate::mount_secrets(&spec.isolation, dir.id().as_str())
        .map_err(|e| Failure::new(Step::Secrets, None, e.to_string()))?;
    // With an init (init.rs), the pipe on which it hands over the program's
    // exact wait status. Our read end is non-blocking: it is read once,
    // after the init has exited, and holds the record or nothing.
    let init_pipe = if spec.isolation.wants_init() {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(|e| Failure::errno(Step::Pipe, "init status pipe", e))?;
        plan.init = Some(init::InitPlan {
            status_fd: w.as_raw_fd(),
            subreaper: !spec.isolation.pid,
        });
        Some((r, w))
    } else {
        None
    };

    // clone3 rather than fork: the namespaces are made at birth (a pid
    // namespace can only be entered by a new process), and on cgroup v2 the
    // child is born in its cgroup (CLONE_INTO_CGROUP).
    let flags = plan.isolation.clone_flags();
    let cloned = match crate::sys::clone3(flags, cgroup_dir.as_ref().map(|d| d.as_fd())) {
        // A v2 kernel older than 5.7 has no CLONE_INTO_CGROUP (E2BIG: our
        // clone_args is larger than it knows; EINVAL: the flag): the child
        // joins by writing cgroup.procs instead, before it execs.
        Err(Errno::E2BIG | Errno::EINVAL) if cgroup_dir.is_some() => {
            plan.cgroup_procs = cgroup
                .open_procs_files()
                .map_err(|e| Failure::new(Step::Cgroup, None, e.to_string()))?;
            crate::sys::clone3(flags, None)
        }
        other => other,
    };
    let task_pid = match cloned.map_err(|e| Failure::errno(Step::Clone3, "task", e))? {
        ForkResult::Child => {
            // The lock's copy goes first: held by a child whose supervisor
            // died, it would make the dead supervisor look alive to the
            // library until the exec (close-on-exec), and the start's
            // clean-up would leave the task running (found by the crash
            // matrix, tests/crash.rs). It goes before the child's stdio is
            // replaced, so the agent's EOF on the reply pipe comes after it.
            // The File is never dropped here (child::run does not return).
            let _ = nix::unistd::close(lock.as_raw_fd());
            nomad_shim::failpoint!("child-after-fork");
            child::run(
                &plan,
                match &child_ends {
                    Some(t) if t.tty => ChildStdio {
                        stdin: t.fd.as_fd(),
                        stdout: t.fd.as_fd(),
                        stderr: t.fd.as_fd(),
                    },
                    Some(pipe) => ChildStdio {
                        stdin: pipe.fd.as_fd(),
                        stdout: out_w.as_fd(),
                        stderr: err_w.as_fd(),
                    },
                    None => ChildStdio {
                        stdin: devnull.as_fd(),
                        stdout: out_w.as_fd(),
                        stderr: err_w.as_fd(),
                    },
                },
                &error_w,
            )
        }
        ForkResult::Parent { child } => {
            nomad_shim::failpoint!("supervisor-after-clone");
            child
        }
    };
    // Our copies of the child's ends: the pipes must see EOF when the task
    // (and whatever inherited them) is gone.
    drop((error_w, out_w, err_w, cgroup_dir, child_ends));
    let init_status = init_pipe.map(|(r, _w)| r);

    // The loop's descriptors, made while the child runs its steps. Should
    // one fail, the child is killed (and reaped) before the error returns:
    // once its own error record or exec is in, so that it holds nothing.
    let fds = loop_fds(dir, &mask, &spec, out_r, err_r);
    if let Some(f) = read_child_error(&error_r, &spec, &plan) {
        // Reaps the child, which exits right after its error record; it is
        // ours, so waitpid cannot fail (no ECHILD), and its status adds
        // nothing to the record.
        let _ = nix::sys::wait::waitpid(task_pid, None);
        return Err(f);
    }
    let io = match fds {
        Ok(io) => io,
        Err(mut f) => {
            if let Err(e) = cgroup.kill_all() {
                f.message
                    .push_str(&format!("; and the task was not killed: {e}"));
            }
            // Our child, killed above: reaped here (see the waitpid above).
            let _ = nix::sys::wait::waitpid(task_pid, None);
            return Err(f);
        }
    };
    drop((error_r, plan));

    let task = Identity::of(task_pid.as_raw()).map_err(|e| {
        Failure::new(
            Step::Identity,
            None,
            format!("read /proc/{task_pid}/stat: {e}"),
        )
    })?;
    state.status = Status::Running;
    state.task = Some(task);
    state.started_at = Some(Timestamp::now());
    nomad_shim::failpoint!("supervisor-before-state-running");
    // Not fsynced: only a crash of the machine can lose it, and that ends
    // the task too (the state's boot id then says so). The exit is durable.
    if let Err(e) = dir.write_state(&state, false) {
        let mut f = Failure::new(Step::State, None, e.to_string());
        if let Err(e) = cgroup.kill_all() {
            f.message
                .push_str(&format!("; and the task was not killed: {e}"));
        }
        // Our child, killed above: reaped here (see the waitpid above).
        let _ = nix::sys::wait::waitpid(task_pid, None);
        return Err(f);
    }
    nomad_shim::failpoint!("supervisor-after-state-running");
    // Asked to (a library's start): a close-on-exec copy of the sync pipe
    // is kept until the final state is durable, and its close is the
    // caller's "exit recorded"; the reply says whether there is one. Made
    // after the task child exists, which therefore never held it.
    let exit_notice = if caller.sync_until_exit {
        // F_DUPFD_CLOEXEC, from 3 up.
        std::io::stdout().as_fd().try_clone_to_owned().ok()
    } else {
        None
    };
    report(&StartReply::Started {
        supervisor: me,
        task,
        warnings: state.warnings.clone(),
        until_exit: exit_notice.is_some(),
    });
    nomad_shim::failpoint!("supervisor-after-reply");
    // The reply is sent: fd 1 becomes /dev/null, so the caller's read ends
    // (or, with an exit notice, reaches the one copy left).
    // dup2 onto an open fd from a valid one cannot fail but for EINTR/EBUSY,
    // and then the caller's read ends when we exit instead.
    let _ = nix::unistd::dup2_stdout(devnull.as_fd());
    drop(devnull);
    // The space the final state needs, taken now (after the reply: off the
    // start's latency): a task that fills the disk with output must not
    // cost us its exit record. Without it, the final write may need retries.
    if let Err(e) = dir.reserve_state_write() {
        state.record_event(
            nomad_shim::state::events::kind::WARNING,
            format!("space for the final state.json not reserved: {e}"),
        );
    }
    crate::sys::trim_heap();
    crate::sys::release_stack_below_here();

    let mut sup =
        event_loop::Supervisor::new(dir, lock, spec, state, Pid::from_raw(task.pid), cgroup, io);
    if let Some(fd) = init_status {
        sup.set_init_status(fd);
    }
    if let Some(stdio) = task_stdio {
        sup.set_stdio(stdio);
    }
    if let Some(mount) = secrets {
        sup.set_secrets(mount);
    }
    if let Some(fd) = exit_notice {
        sup.set_exit_notice(fd);
    }
    sup.run();
    if let Some(hold) = caller.remove_if_abandoned {
        sup.remove_if_abandoned(hold);
    }
    Ok(())
}

/// The event loop's descriptors: the signalfd of the signals blocked
/// before the fork, the timer, the control socket, and the log files the
/// pipes' read ends drain into.
fn loop_fds(
    dir: &TaskDir,
    mask: &SigSet,
    spec: &TaskSpec,
    out_r: OwnedFd,
    err_r: OwnedFd,
) -> Result<event_loop::LoopFds, Failure> {
    let signals = SignalFd::with_flags(mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| Failure::errno(Step::Signalfd, "supervisor", e))?;
    let timer =
        event_loop::timer().map_err(|e| Failure::errno(Step::TimerfdCreate, "supervisor", e))?;
    let control = event_loop::bind_control(dir)
        .map_err(|e| Failure::errno(Step::Listen, dir.path().join(names::CONTROL).display(), e))?;
    let stdout = logs::LogSink::new(dir.fd(), names::STDOUT, out_r, spec.logs)
        .map_err(|e| Failure::errno(Step::Create, dir.path().join(names::STDOUT).display(), e))?;
    let stderr = logs::LogSink::new(dir.fd(), names::STDERR, err_r, spec.logs)
        .map_err(|e| Failure::errno(Step::Create, dir.path().join(names::STDERR).display(), e))?;
    Ok(event_loop::LoopFds {
        signals,
        timer,
        control,
        logs: [stdout, stderr],
    })
}

fn log_pipe() -> Result<(OwnedFd, OwnedFd), Failure> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| Failure::errno(Step::Pipe, "log pipe", e))?;
    fcntl(r.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
        .map_err(|e| Failure::errno(Step::Fcntl, "log pipe", e))?;
    Ok((r, w))
}

/// Reads the child's error record: `None` when the pipe closed at exec.
fn read_child_error(fd: &OwnedFd, spec: &TaskSpec, plan: &ChildPlan) -> Option<Failure> {
    // One reader for every record a child writes (src/step.rs).
    let e = StepError::read_record(fd.as_fd())?;
    if e.step.is_isolation() {
        return Some(Failure::new(
            e.step,
            Some(e.errno),
            plan.isolation.describe(&e),
        ));
    }
    let what = match e.step {
        Step::Exec => spec.program.clone(),
        _ => "task".into(),
    };
    if e.step == Step::OomScoreAdj && matches!(e.errno, Errno::EACCES | Errno::EPERM) {
        return Some(oom_score_refused(spec, e.errno));
    }
    Some(Failure::errno(e.step, what, e.errno))
}

/// The kernel refuses to lower `oom_score_adj` below the lowest value the
/// process had since its last privileged write without CAP_SYS_RESOURCE
/// (proc(5) /proc/pid/oom_score_adj). Root in a container often lacks it.
fn oom_score_refused(spec: &TaskSpec, errno: Errno) -> Failure {
    let value = spec.isolation.oom_score_adj.unwrap_or(0);
    // CAP_SYS_RESOURCE is bit 24 of CapEff (capabilities(7)).
    const CAP_SYS_RESOURCE: u32 = 24;
    let has_cap = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .map(|eff| eff & (1 << CAP_SYS_RESOURCE) != 0);
    let why = match has_cap {
        Some(false) => "lowering it needs CAP_SYS_RESOURCE, which nomad-shim does not have here",
        _ => "lowering it needs CAP_SYS_RESOURCE",
    };
    Failure::new(
        Step::OomScoreAdj,
        Some(errno),
        format!(
            "--oom-score-adj {value}: write /proc/self/oom_score_adj of the task: {}: {why} \
             (run nomad-shim with it, or give a value no lower than its own)",
            errno.desc()
        ),
    )
}

/// Everything the child needs, built before fork.
fn child_plan(
    spec: &TaskSpec,
    isolation: isolate::Plan,
    cgroup_procs: Vec<OwnedFd>,
) -> Result<ChildPlan, Failure> {
    let cstr = |s: &[u8]| {
        CString::new(s).map_err(|_| {
            Failure::new(
                Step::Spec,
                None,
                "a NUL byte in the program, arguments or environment",
            )
        })
    };
    let path_var = spec.env.get("PATH").map_or(DEFAULT_PATH, String::as_str);
    let candidates = lookup::exec_candidates(&spec.program, path_var, &spec.isolation)
        .iter()
        .map(|p| cstr(p.as_os_str().as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let argv = spec
        .argv()
        .into_iter()
        .map(|a| cstr(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    // The spec's environment, plus PATH and the task user's HOME, USER and
    // LOGNAME where the spec does not set them.
    let mut env = spec.env.clone();
    env.entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.into());
    for (k, v) in isolation.env_defaults() {
        env.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let envp = env
        .iter()
        .map(|(k, v)| cstr(format!("{k}={v}").as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ChildPlan {
        candidates,
        argv,
        envp,
        isolation,
        cgroup_procs,
        init: None,
        tty: spec.tty,
    })
}
