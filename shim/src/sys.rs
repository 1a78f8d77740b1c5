//! The binary's only `unsafe`: `fork(2)` and resetting signal dispositions
//! in the child.
#![allow(unsafe_code)]

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::ForkResult;

/// `fork(2)`.
///
/// Callers must be single-threaded: the supervisor is (no runtime, no
/// thread pools; DESIGN §2), so the child may do anything the parent could,
/// allocation included.
pub fn fork() -> nix::Result<ForkResult> {
    // SAFETY: the supervisor process never starts a second thread, so no
    // lock (malloc's, stdio's) can be held by a thread that does not exist
    // in the child.
    unsafe { nix::unistd::fork() }
}

/// Resets every catchable signal to its default disposition. A disposition
/// set to "ignore" survives `execve(2)` (signal(7)); Rust's runtime ignores
/// SIGPIPE, and a task must not inherit that.
pub fn reset_signal_dispositions() {
    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in Signal::iterator() {
        if sig == Signal::SIGKILL || sig == Signal::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL installs no handler code, so nothing
        // can run in signal context; errors (none expected) are harmless.
        let _ = unsafe { sigaction(sig, &dfl) };
    }
}

/// Returns freed heap memory to the kernel (`malloc_trim(3)`): the
/// supervisor's start-up parsing is done, and its resident size is what a
/// host with hundreds of tasks pays for each.
pub fn trim_heap() {
    // SAFETY: malloc_trim only walks glibc's own arenas under its own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `_exit(2)`: ends the process at once, without running atexit handlers or
/// flushing stdio buffers that belong to the parent's copy of the process
/// (after `fork`, those are the parent's).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit takes an integer and never returns; skipping Rust
    // destructors is the point (they would close or flush resources the
    // other process owns).
    unsafe { libc::_exit(code) }
}

/// `CLONE_INTO_CGROUP` (Linux 5.7): the child starts in the cgroup whose
/// directory fd is given, instead of its parent's.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The kernel's `struct clone_args` (clone3(2)), version 2 (with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `clone3(2)` used like `fork(2)`: no shared memory, the child continues
/// on a copy of the parent's stack, SIGCHLD on exit; plus the namespaces in
/// `flags` (`CLONE_NEWNS`, `CLONE_NEWPID`, ...) and, with `cgroup`, born in
/// that cgroup — so the task never runs a single instruction outside it.
pub fn clone3(
    flags: nix::sched::CloneFlags,
    cgroup: Option<std::os::fd::BorrowedFd<'_>>,
) -> nix::Result<ForkResult> {
    use std::os::fd::AsRawFd;
    let mut args = CloneArgs {
        flags: flags.bits() as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    // SAFETY: `args` is a live, initialised clone_args of the size passed.
    // Without CLONE_VM the child gets its own copy of the address space, so
    // a zero stack means "continue on the copy of this stack", exactly as
    // fork(2). The caller is single-threaded (see `fork` above), so no lock
    // can be held by a thread missing from the child. glibc's fork handlers
    // do not run; the child only makes system calls and execs.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        -1 => Err(nix::errno::Errno::last()),
        0 => Ok(ForkResult::Child),
        pid => Ok(ForkResult::Parent {
            child: nix::unistd::Pid::from_raw(pid as i32),
        }),
    }
}
