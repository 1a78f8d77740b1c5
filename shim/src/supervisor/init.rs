//! The task's init: a minimal PID 1 from the shim's own code.
//!
//! ```text
//! supervisor ──clone3(CLONE_NEWPID…)──▶ child = init (PID 1)  ──clone(VM|VFORK)──▶ program (PID 2) ──exec
//!    ◀── error pipe: the program's exec error, as without an init ─────────┘
//!    ◀── status pipe: the program's raw wait status, then the init exits
//! ```
//!
//! Without an init, the program is PID 1 of its pid namespace, and the
//! kernel drops every signal it has no handler for (pid_namespaces(7)):
//! `python3 -m http.server` ignores a stop's SIGTERM and dies only by the
//! SIGKILL after the kill timeout. Orphans in the namespace are re-parented
//! to it, and a program that does not `wait` for strangers leaves them
//! zombies. The init is what tini or catatonit are to a container, built
//! into the shim: no second binary, no extra exec.
//!
//! Why it is shaped this way:
//!
//! * **Isolation before the fork.** The clone3 child applies every step of
//!   docs/isolation.md (cgroup, rlimits, root and `pivot_root`, hostname,
//!   privileges, `no_new_privs`, cwd) and only then becomes the init and
//!   forks the program. So the init never holds a view of the host's
//!   filesystem (`/proc/1/root` of a task leads to the task's root) and runs
//!   with the task's credentials and capabilities. It is made not dumpable
//!   again after the credential switch (which may reset the flag,
//!   prctl(2) PR_SET_DUMPABLE), so the task cannot read its memory.
//! * **No allocation.** The init and the program are forks of the
//!   single-threaded supervisor, and only make system calls on what the
//!   supervisor prepared (`ChildPlan`).
//! * **Descriptors.** The init keeps only the status pipe. It closes its
//!   copy of the error pipe right after the fork, so the supervisor reads
//!   EOF when the program execs, or the program's own error record
//!   (`exec /usr/bin/nope: …`, 126/127) exactly as without an init. It
//!   closes everything else too, stdio and the supervisor's lock among them:
//!   an inherited lock would make a dead supervisor look alive.
//! * **Signals.** Every signal has been blocked since the child's first
//!   step, so nothing sent during set-up is lost or acted on. A blocked
//!   signal is queued, never ignored, even for PID 1 of a namespace
//!   (the kernel's `sig_ignored` checks the mask first), so the init needs
//!   no handlers: it takes them with `sigwaitinfo(2)`. SIGCHLD: reap every
//!   exited child (`waitpid(-1, WNOHANG)`), noting the program's status.
//!   Anything else: `kill(program, sig)`. The supervisor signals the task
//!   with `kill` of the init's pid, never `killpg`, so the program gets a
//!   stop signal exactly once; SIGSTOP, which the init cannot catch, goes to
//!   the process group (`event_loop.rs`), and so does SIGCONT, to resume
//!   every process that SIGSTOP stopped, the program's children included.
//!   The group's SIGCONT has reached the program already, so the init does
//!   not forward SIGCONT (the program would see it twice).
//! * **The exact status.** PID 1 of a namespace cannot kill itself with a
//!   signal it has no handler for, so it cannot mirror a death by signal
//!   by re-raising it. Instead it writes the program's raw wait status (4
//!   bytes, one atomic pipe write) to the status pipe just before `_exit`,
//!   and the supervisor records that. If the init dies without writing it
//!   (SIGKILLed by a stop's whole-cgroup kill), the supervisor records what
//!   it saw. Its own exit code is the program's code, or 128 + the signal.
//! * **The end.** The init ends as soon as the program has exited. With a
//!   pid namespace the kernel then SIGKILLs the rest of it and reaps them
//!   before the init's exit is reported; the supervisor's whole-cgroup
//!   kill does the rest, as without an init. Without a pid namespace
//!   (`--init` alone) the init is a subreaper, so orphans of the program
//!   come to it while the program lives, and to the supervisor afterwards.
//! * **rusage.** The supervisor's `wait4` of the init returns
//!   `getrusage(RUSAGE_BOTH)` of it: its own use plus that of every child
//!   it waited for (getrusage(2) RUSAGE_CHILDREN), so the program's CPU
//!   time and peak RSS are in the exit record as before.

use std::convert::Infallible;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};

use nomad_shim::step::{Step, StepError};

use super::child::{self, ChildPlan};

/// Size of the status record: the program's raw wait status, `i32`
/// little-endian.
pub const STATUS_SIZE: usize = 4;

/// What the init needs, prepared by the supervisor.
pub struct InitPlan {
    /// The write end of the status pipe (owned by the supervisor, which
    /// closes its copy after the clone).
    pub status_fd: RawFd,
    /// Become a subreaper: there is no pid namespace whose PID 1 we are.
    pub subreaper: bool,
}

/// Runs in the clone3 child once every isolation step is done: forks the
/// program and supervises it until it exits. Returns only when the init
/// cannot start the program (its error goes to the error pipe like any
/// other step's).
pub fn run(
    plan: &ChildPlan,
    init: &InitPlan,
    error_pipe: &OwnedFd,
) -> Result<Infallible, StepError> {
    let fail = StepError::with(Step::Init);
    // Without a pid namespace, orphans would go to the supervisor (itself a
    // subreaper), or to the host's init: take them (prctl(2)
    // PR_SET_CHILD_SUBREAPER). With one, PID 1 gets them anyway.
    if init.subreaper {
        nix::sys::prctl::set_child_subreaper(true).map_err(&fail)?;
    }
    // The credential switch may have reset "dumpable" (to suid_dumpable):
    // keep the task out of the init's memory, /proc/1/mem and /proc/1/fd.
    // PR_SET_DUMPABLE with 0 cannot fail (prctl(2)).
    let _ = nix::sys::prctl::set_dumpable(false);
    // The program is made like posix_spawn(3) makes a process:
    // clone(CLONE_VM | CLONE_VFORK) on a stack of its own, the init
    // suspended until the program has exec'd (sys::spawn_vm). A fork would
    // copy the init's page tables and then fault on every page either side
    // writes, for a child that only execs: 0.17 ms of a start here. Sound
    // for the same reason as the supervisor's clone3 (one thread), and
    // because the program only makes system calls on the plan, which the
    // init does not touch while suspended, with default signal dispositions.
    let program =
        crate::sys::spawn_vm(&mut || -> Infallible { program(plan, error_pipe) }).map_err(&fail)?;
    // What the init needs from here on, copied onto the stack: the heap
    // goes below.
    let status_fd = init.status_fd;
    // Our copy of the error pipe goes first (the supervisor must see EOF at
    // the program's exec), then every other descriptor but the status pipe.
    crate::sys::close_raw(error_pipe.as_raw_fd());
    crate::sys::close_all_but(status_fd as libc::c_uint);
    // Memory: the init is a copy of the supervisor and shares its pages
    // until either writes one. Every heap page the supervisor writes or
    // frees from now on (its own malloc_trim after the start included)
    // would stay behind as a private page of the init, which never needs
    // the heap again: from here it only makes system calls on locals of
    // this stack (sigwaitinfo, waitpid, kill, write, _exit). So the whole
    // heap is dropped now (MADV_DONTNEED). Measured, static release build:
    // the init's private memory goes from 104 KiB to 32-36 KiB.
    crate::sys::release_heap();
    // Likewise the binary's code the start-up mapped (as an idle
    // supervisor drops it, `sys::release_text`): the loop below maps back
    // the few pages it runs.
    crate::sys::release_text();
    let status = supervise(program);
    report(status_fd, status)
}

/// The program, forked by the init: it only empties its signal mask (the
/// dispositions are the defaults since the child's first step), marks fds
/// close-on-exec and execs; an error goes to the error pipe as always.
fn program(plan: &ChildPlan, error_pipe: &OwnedFd) -> ! {
    let result = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(StepError::with(Step::Sigmask))
        .and_then(|()| child::exec(plan));
    match result {
        Ok(never) => match never {},
        Err(e) => child::report_and_exit(error_pipe, e),
    }
}

/// Forwards signals and reaps until the program has exited; returns its
/// raw wait status.
fn supervise(program: libc::pid_t) -> libc::c_int {
    loop {
        let sig = crate::sys::sigwait_all();
        if sig == libc::SIGCONT {
            // Sent to the whole process group by the supervisor
            // (`event_loop.rs`): the program has it already.
            continue;
        }
        if sig != libc::SIGCHLD {
            // ESRCH cannot happen: the program is reaped only below, and
            // then we return. Anything else (EPERM) has no one to tell.
            let _ = crate::sys::kill_raw(program, sig);
            continue;
        }
        // One SIGCHLD may stand for many exits (standard signals do not
        // queue): reap until none is left.
        let mut status = None;
        while let Some((pid, st)) = crate::sys::reap_any() {
            if pid == program {
                status = Some(st);
            }
        }
        if let Some(st) = status {
            return st;
        }
    }
}

/// Hands the program's wait status to the supervisor and exits with its
/// code, or 128 + its signal.
fn report(fd: RawFd, status: libc::c_int) -> ! {
    // A write of 4 bytes to a pipe is atomic (pipe(7), PIPE_BUF); EPIPE
    // (the supervisor is gone) leaves no one to tell.
    crate::sys::write_raw(fd, &status.to_le_bytes());
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    crate::sys::exit_now(code)
}
