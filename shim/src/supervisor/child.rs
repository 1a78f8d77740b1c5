//! The task child: from `fork(2)` to `execve(2)`.
//!
//! Steps run in the order of docs/isolation.md ("The child, in order"). A
//! failing step writes a [`StepError`] (the library's one encoding: 8 bytes,
//! step, subject, errno) to the close-on-exec error pipe and exits 127; a
//! successful `execve` closes the pipe, so the supervisor reads EOF. The
//! supervisor turns the record into a message naming what failed.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
use nomad_shim::step::{Step, StepError};

/// Everything the child needs, prepared by the supervisor before `fork`.
pub struct ChildPlan {
    /// Paths to try in order, like execvp(3): for a bare name the task
    /// dir's `local/` and the task dir, then each `PATH` entry (Nomad's
    /// lookup, see `exec_candidates`).
    pub candidates: Vec<CString>,
    /// argv, `argv[0]` as the spec gave it.
    pub argv: Vec<CString>,
    /// The environment, `KEY=VALUE`.
    pub envp: Vec<CString>,
    /// The isolation steps (rlimits to working directory).
    pub isolation: nomad_shim::isolate::Plan,
    /// `cgroup.procs` of each v1 hierarchy to join; empty on v2, where the
    /// child is born in its cgroup (clone3 with CLONE_INTO_CGROUP).
    pub cgroup_procs: Vec<OwnedFd>,
    /// Run the shim's init as the parent of the program (`init.rs`).
    pub init: Option<super::init::InitPlan>,
    /// fds 0-2 are a terminal, to become the controlling terminal.
    pub tty: bool,
}

/// The fds the child takes as its stdio.
pub struct ChildStdio<'a> {
    /// fd 0.
    pub stdin: BorrowedFd<'a>,
    /// fd 1.
    pub stdout: BorrowedFd<'a>,
    /// fd 2.
    pub stderr: BorrowedFd<'a>,
}

/// Runs in the child after `fork`; never returns.
pub fn run(plan: &ChildPlan, stdio: ChildStdio<'_>, error_pipe: &OwnedFd) -> ! {
    let result = steps(plan, stdio).and_then(|()| match &plan.init {
        // Every isolation step is done: the init forks the program and
        // stays its parent (it returns only if it could not fork).
        Some(init) => super::init::run(plan, init, error_pipe),
        None => exec(plan),
    });
    match result {
        Ok(never) => match never {},
        Err(e) => report_and_exit(error_pipe, e),
    }
}

/// Writes a failed step's record to the error pipe and exits 127.
pub(super) fn report_and_exit(error_pipe: &OwnedFd, failed: StepError) -> ! {
    // Nothing is left to report a failed report to: the supervisor then
    // sees the pipe close as at an exec, and records the exit 127 instead.
    let _ = nix::unistd::write(error_pipe, &failed.encode());
    // _exit: no atexit handlers or buffered stdio of the supervisor's.
    crate::sys::exit_now(127)
}

/// Everything up to the exec: session, signals, cgroup, stdio, isolation.
fn steps(plan: &ChildPlan, stdio: ChildStdio<'_>) -> Result<(), StepError> {
    let fail = StepError::with;

    // 1. A session and process group of its own, so that the whole task can
    //    be signalled as a group and no terminal signal of the agent's
    //    reaches it (setsid(2)).
    nix::unistd::setsid().map_err(fail(Step::Setsid))?;

    // Default dispositions and an empty mask: both survive execve(2), and
    // the supervisor blocks the signals its signalfd reads. An init blocks
    // every signal instead, from here on: a stop signal sent while it sets
    // up is then queued for it to forward, not acted on (init.rs); the
    // program empties its mask after the init's fork.
    crate::sys::reset_signal_dispositions();
    let mask = if plan.init.is_some() {
        SigSet::all()
    } else {
        SigSet::empty()
    };
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&mask), None).map_err(fail(Step::Sigmask))?;

    // Not dumpable until exec (exec restores it for ordinary binaries): no
    // ptrace or /proc/<pid>/mem of the half-set-up child by others.
    // PR_SET_DUMPABLE with 0 cannot fail (prctl(2)).
    let _ = nix::sys::prctl::set_dumpable(false);

    // The supervisor lowered its own oom_score_adj; the child inherited it.
    // Write the task's (default 0): raising needs no privilege, lowering
    // needs CAP_SYS_RESOURCE, which the child still holds here (proc(5)).
    reset_oom_score(plan.isolation.oom_score_adj()).map_err(fail(Step::OomScoreAdj))?;

    // 2. Into the task's cgroup before anything else runs (v1; on v2 the
    //    clone already placed us there).
    nomad_shim::cgroup::join_with_fds(&plan.cgroup_procs).map_err(fail(Step::JoinCgroup))?;

    // Every CPU of our cpuset, not the caller's affinity: an agent pinned to
    // one CPU must not pin its tasks (runc resets it too). The mask asks for
    // every CPU; the kernel keeps the part inside the cpuset of our cgroup
    // (sched_setaffinity(2): "the affinity mask is further restricted to the
    // CPUs in the cpuset"), and from Linux 6.2 keeps the request across later
    // cpuset changes. Once in the cgroup: on v1 the join above moved us into
    // the cpuset. The mask lives on the stack: no allocation after fork.
    reset_affinity().map_err(fail(Step::SchedSetaffinity))?;

    // fds 0-2: /dev/null and the log pipes.
    // (All three are fds above 2: 0-2 were open when the supervisor made
    // them, so dup2 gives new, inheritable copies.)
    nix::unistd::dup2_stdin(stdio.stdin).map_err(fail(Step::Stdio))?;
    nix::unistd::dup2_stdout(stdio.stdout).map_err(fail(Step::Stdio))?;
    nix::unistd::dup2_stderr(stdio.stderr).map_err(fail(Step::Stdio))?;

    // With a terminal: it becomes the controlling terminal of the session
    // made above (tty_ioctl(4) TIOCSCTTY: the caller is a session leader
    // without one), so that ^C and ^Z typed into it signal the foreground
    // process group, and the task's /dev/tty is it. Through the descriptor,
    // before the root changes: the terminal is the host's devpts's, and
    // need not be reachable by name from the task's root.
    if plan.tty {
        nomad_shim::sys::set_controlling_terminal(stdio.stdin)
            .map_err(fail(Step::ControllingTerminal))?;
    }

    // 3-7. rlimits, network namespace, the root (bind mounts, /dev, /proc,
    //    pivot_root), hostname, privileges, working directory.
    plan.isolation.apply_in_child()
}

/// The last two steps: close-on-exec above fd 2, then `execve`. Run by the
/// child itself, or by the program the init forked.
pub(super) fn exec(plan: &ChildPlan) -> Result<std::convert::Infallible, StepError> {
    let fail = StepError::with;
    // Only fds 0-2 reach the task: everything above is marked close-on-exec
    // (close_range(2), CLOSE_RANGE_CLOEXEC) rather than closed, so that the
    // error pipe still works if execve fails.
    close_range_cloexec().map_err(fail(Step::CloseRange))?;
    execve_first(&plan.candidates, &plan.argv, &plan.envp)
}

/// execve(2) each candidate in turn (see `exec`); returns only the error.
/// The caller has marked every fd above 2 close-on-exec.
pub(super) fn execve_first(
    candidates: &[CString],
    argv: &[CString],
    envp: &[CString],
) -> Result<std::convert::Infallible, StepError> {
    let fail = StepError::with;
    // execve each candidate like execvp(3): a missing file or directory
    // moves on to the next PATH entry; a permission error is remembered.
    let mut last = Errno::ENOENT;
    let mut seen_eacces = false;
    for path in candidates {
        let Err(e) = nix::unistd::execve(path.as_c_str(), argv, envp);
        match e {
            Errno::ENOENT | Errno::ENOTDIR | Errno::ESTALE | Errno::ELOOP | Errno::ENAMETOOLONG
                if candidates.len() > 1 => {}
            Errno::EACCES if candidates.len() > 1 => seen_eacces = true,
            e => return Err(fail(Step::Exec)(e)),
        }
        last = e;
    }
    Err(fail(Step::Exec)(if seen_eacces {
        Errno::EACCES
    } else {
        last
    }))
}

pub(super) fn reset_oom_score(value: &[u8]) -> nix::Result<()> {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    let fd = match open(
        c"/proc/self/oom_score_adj",
        OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        // No /proc: nothing was lowered through it either.
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    nix::unistd::write(fd.as_fd(), value).map(drop)
}

fn close_range_cloexec() -> nix::Result<()> {
    nomad_shim::sys::close_range(3, nomad_shim::sys::CLOSE_RANGE_CLOEXEC)
}

/// `sched_setaffinity(0, every CPU)`; the kernel intersects the mask with the
/// cpuset and the online CPUs.
pub(crate) fn reset_affinity() -> Result<(), Errno> {
    let mut all = nix::sched::CpuSet::new();
    for cpu in 0..nix::sched::CpuSet::count() {
        all.set(cpu)?;
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &all)
}
