//! The task child: from `fork(2)` to `execve(2)`.
//!
//! Steps run in the order of docs/isolation.md ("The child, in order"). A failing step writes an [`ExecError`]
//! (8 bytes: step, errno) to the close-on-exec error pipe and exits 127; a
//! successful `execve` closes the pipe, so the supervisor reads EOF. The
//! supervisor turns the record into a message naming what failed.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};

/// A step of the child, as reported over the error pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    /// `setsid(2)`.
    Setsid = 1,
    /// Unblocking signals.
    Sigmask = 2,
    /// Writing the task's `oom_score_adj` (the supervisor lowered its own).
    OomScore = 3,
    /// Joining the task's cgroup (v1: writing `cgroup.procs`).
    Cgroup = 8,
    /// Setting up fds 0, 1 and 2.
    Stdio = 4,
    /// Marking inherited fds close-on-exec.
    CloseFds = 6,
    /// `execve(2)`.
    Exec = 7,
    /// `sched_setaffinity(2)`: every CPU of the task's cpuset.
    Affinity = 9,
    /// The init's own steps: becoming a subreaper, forking the program.
    Init = 10,
}

impl Step {
    fn from_u32(n: u32) -> Option<Step> {
        [
            Step::Setsid,
            Step::Sigmask,
            Step::OomScore,
            Step::Cgroup,
            Step::Stdio,
            Step::CloseFds,
            Step::Exec,
            Step::Affinity,
            Step::Init,
        ]
        .into_iter()
        .find(|s| *s as u32 == n)
    }

    /// The step's name in messages and in the start reply.
    pub fn name(self) -> &'static str {
        match self {
            Step::Setsid => "setsid",
            Step::Sigmask => "sigmask",
            Step::OomScore => "oom_score_adj",
            Step::Cgroup => "join cgroup",
            Step::Stdio => "stdio",
            Step::CloseFds => "close_range",
            Step::Exec => "exec",
            Step::Affinity => "sched_setaffinity",
            Step::Init => "init",
        }
    }
}

/// What the child reports when a step fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecError {
    /// The step.
    pub step: Step,
    /// Its errno.
    pub errno: Errno,
}

impl ExecError {
    /// Size of the encoding.
    pub const SIZE: usize = 8;

    fn encode(self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[..4].copy_from_slice(&(self.step as u32).to_le_bytes());
        b[4..].copy_from_slice(&(self.errno as i32).to_le_bytes());
        b
    }

    /// Decodes what the child wrote.
    pub fn decode(b: &[u8]) -> Option<ExecError> {
        let step = Step::from_u32(u32::from_le_bytes(b.get(..4)?.try_into().ok()?))?;
        let errno = Errno::from_raw(i32::from_le_bytes(b.get(4..8)?.try_into().ok()?));
        Some(ExecError { step, errno })
    }
}

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
pub(super) fn report_and_exit(error_pipe: &OwnedFd, failed: Failed) -> ! {
    let record = match failed {
        Failed::Shim(e) => e.encode(),
        Failed::Isolate(e) => e.encode(),
    };
    // Nothing is left to report a failed report to: the supervisor then
    // sees the pipe close as at an exec, and records the exit 127 instead.
    let _ = nix::unistd::write(error_pipe, &record);
    // _exit: no atexit handlers or buffered stdio of the supervisor's.
    crate::sys::exit_now(127)
}

/// A failed step: one of ours, or one of the isolation plan's. Both
/// encode to 8 bytes; an isolation record starts with
/// `nomad_shim::isolate::StepError`'s magic byte, ours with a small step
/// number, so the supervisor tells them apart.
pub(super) enum Failed {
    Shim(ExecError),
    Isolate(nomad_shim::isolate::StepError),
}

impl From<ExecError> for Failed {
    fn from(e: ExecError) -> Failed {
        Failed::Shim(e)
    }
}

/// Everything up to the exec: session, signals, cgroup, stdio, isolation.
fn steps(plan: &ChildPlan, stdio: ChildStdio<'_>) -> Result<(), Failed> {
    let fail = |step| move |errno| ExecError { step, errno };

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
    reset_oom_score(plan.isolation.oom_score_adj()).map_err(fail(Step::OomScore))?;

    // 2. Into the task's cgroup before anything else runs (v1; on v2 the
    //    clone already placed us there).
    nomad_shim::cgroup::join_with_fds(&plan.cgroup_procs).map_err(fail(Step::Cgroup))?;

    // Every CPU of our cpuset, not the caller's affinity: an agent pinned to
    // one CPU must not pin its tasks (runc resets it too). The mask asks for
    // every CPU; the kernel keeps the part inside the cpuset of our cgroup
    // (sched_setaffinity(2): "the affinity mask is further restricted to the
    // CPUs in the cpuset"), and from Linux 6.2 keeps the request across later
    // cpuset changes. Once in the cgroup: on v1 the join above moved us into
    // the cpuset. The mask lives on the stack: no allocation after fork.
    reset_affinity().map_err(fail(Step::Affinity))?;

    // fds 0-2: /dev/null and the log pipes.
    // (All three are fds above 2: 0-2 were open when the supervisor made
    // them, so dup2 gives new, inheritable copies.)
    nix::unistd::dup2_stdin(stdio.stdin).map_err(fail(Step::Stdio))?;
    nix::unistd::dup2_stdout(stdio.stdout).map_err(fail(Step::Stdio))?;
    nix::unistd::dup2_stderr(stdio.stderr).map_err(fail(Step::Stdio))?;

    // 3-7. rlimits, network namespace, the root (bind mounts, /dev, /proc,
    //    pivot_root), hostname, privileges, working directory.
    plan.isolation.apply_in_child().map_err(Failed::Isolate)?;
    Ok(())
}

/// The last two steps: close-on-exec above fd 2, then `execve`. Run by the
/// child itself, or by the program the init forked.
pub(super) fn exec(plan: &ChildPlan) -> Result<std::convert::Infallible, Failed> {
    let fail = |step| move |errno| ExecError { step, errno };
    // Only fds 0-2 reach the task: everything above is marked close-on-exec
    // (close_range(2), CLOSE_RANGE_CLOEXEC) rather than closed, so that the
    // error pipe still works if execve fails.
    close_range_cloexec().map_err(fail(Step::CloseFds))?;

    // execve each candidate like execvp(3): a missing file or directory
    // moves on to the next PATH entry; a permission error is remembered.
    let mut last = Errno::ENOENT;
    let mut seen_eacces = false;
    for path in &plan.candidates {
        let Err(e) = nix::unistd::execve(path.as_c_str(), &plan.argv, &plan.envp);
        match e {
            Errno::ENOENT | Errno::ENOTDIR | Errno::ESTALE | Errno::ELOOP | Errno::ENAMETOOLONG
                if plan.candidates.len() > 1 => {}
            Errno::EACCES if plan.candidates.len() > 1 => seen_eacces = true,
            e => return Err(fail(Step::Exec)(e).into()),
        }
        last = e;
    }
    Err(fail(Step::Exec)(if seen_eacces { Errno::EACCES } else { last }).into())
}

fn reset_oom_score(value: &[u8]) -> nix::Result<()> {
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
