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
