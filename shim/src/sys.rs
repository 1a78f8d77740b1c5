//! The binary's only `unsafe`: its start-up (`runtime_init`), `fork(2)`,
//! the init's `clone(2)` of the program (`spawn_vm`), resetting signal
//! dispositions
//! in the child, and the few raw calls of the task's init
//! (`supervisor/init.rs`), which must not allocate.
#![allow(unsafe_code)]

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::ForkResult;

/// What std's runtime set-up did that this binary relies on (main.rs
/// skips it), first thing in the process:
///
/// * descriptors 0-2 are open: one that is closed gets `/dev/null`, as std
///   does, or the next file we open would become our stdin or stdout (a
///   log file written by `println!`);
/// * SIGPIPE is ignored, as std leaves it: a write to a client or pipe that
///   went away is `EPIPE`, never the end of a supervisor. (The task child
///   resets every disposition before its exec.)
#[cfg_attr(test, allow(dead_code))]
pub fn runtime_init() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    let polled = loop {
        // SAFETY: a valid array of 3 pollfds; a zero timeout never blocks.
        let ret = unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) };
        match ret {
            -1 if nix::errno::Errno::last() == nix::errno::Errno::EINTR => continue,
            -1 => break false,
            _ => break true,
        }
    };
    for pfd in &fds {
        // Without poll (ENOMEM), each is asked with fcntl instead.
        let closed = if polled {
            pfd.revents & libc::POLLNVAL != 0
        } else {
            // SAFETY: F_GETFD on any number is harmless.
            let flags = unsafe { libc::fcntl(pfd.fd, libc::F_GETFD) };
            flags == -1 && nix::errno::Errno::last() == nix::errno::Errno::EBADF
        };
        // open(2) returns the lowest free descriptor: this one. Should it
        // fail, there is nothing to write an error to.
        // SAFETY: a constant NUL-terminated path.
        if closed && unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) } == -1 {
            std::process::abort();
        }
    }
    // SAFETY: SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// `fork(2)`.
///
/// Callers must be single-threaded: the supervisor is (no runtime, no
/// thread pools; docs/architecture.md, "Process model"), so the child may do anything the parent could,
/// allocation included.
pub fn fork() -> nix::Result<ForkResult> {
    // SAFETY: the supervisor process never starts a second thread, so no
    // lock (malloc's, stdio's) can be held by a thread that does not exist
    // in the child.
    unsafe { nix::unistd::fork() }
}

/// The stack of a [`spawn_vm`] child, above one guard page: the child only
/// empties its signal mask, marks descriptors close-on-exec and execs (or
/// writes an error record and exits). Untouched pages cost nothing.
const SPAWN_STACK: usize = 256 * 1024;
const PAGE: usize = 4096;

/// `clone(2)` with `CLONE_VM | CLONE_VFORK`, as glibc's posix_spawn(3) does:
/// the child runs `child` on a stack of its own in the caller's memory, and
/// the caller is suspended until the child has exec'd or exited (clone(2):
/// "the execution of the calling process is suspended until the child
/// releases its virtual memory resources via a call to execve(2) or
/// _exit(2)"). No copy of the page tables and no copy-on-write faults on
/// either side afterwards: a fork of the init costs about 0.17 ms here
/// (`perf trace`), most of it copying the supervisor's mappings.
///
/// Requirements on `child`, all met by the init's program (`init.rs`): it
/// never returns (its `Infallible` says so) (it execs, or `_exit`s after writing to a pipe); it only
/// makes system calls and reads memory the caller does not change while it
/// is suspended; it installs no signal handler (every disposition is the
/// default, so no handler can run on the shared memory). Its descriptor
/// table is its own copy (no `CLONE_FILES`), as after fork.
pub fn spawn_vm<F: FnMut() -> std::convert::Infallible>(child: &mut F) -> nix::Result<libc::pid_t> {
    // `f()` is uninhabited: the lint sees the match on it as unreachable.
    #[allow(unreachable_code)]
    extern "C" fn trampoline<F: FnMut() -> std::convert::Infallible>(
        arg: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `arg` is the `&mut F` given to clone below, alive for as
        // long as the child can run: the caller's frame is suspended in
        // clone (CLONE_VFORK) until the child has exec'd or exited.
        let f = unsafe { &mut *arg.cast::<F>() };
        match f() {}
    }
    let size = SPAWN_STACK + PAGE;
    // SAFETY: a fresh anonymous mapping, no address hint; checked below.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(nix::errno::Errno::last());
    }
    // The lowest page stays PROT_NONE: an overflow faults instead of
    // writing into whatever mapping lies below.
    // SAFETY: the range lies inside the mapping made above.
    let stack = unsafe { base.cast::<u8>().add(PAGE) }.cast::<libc::c_void>();
    // SAFETY: as above; only protection bits change.
    let ret =
        if unsafe { libc::mprotect(stack, SPAWN_STACK, libc::PROT_READ | libc::PROT_WRITE) } == 0 {
            // The stack grows down from the top of the mapping (page-aligned,
            // so 16-byte aligned as the ABI wants).
            // SAFETY: see above; the top is one past the mapping's end.
            let top = unsafe { stack.cast::<u8>().add(SPAWN_STACK) }.cast::<libc::c_void>();
            // SAFETY: `trampoline::<F>` matches the callback type; `top` is the
            // top of a writable stack no one else uses; `child` outlives the
            // child's use of it (see trampoline). The caller is single-threaded
            // (see `fork`), so no lock can be held by a thread that is missing.
            unsafe {
                libc::clone(
                    trampoline::<F>,
                    top,
                    libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                    (child as *mut F).cast::<libc::c_void>(),
                )
            }
        } else {
            -1
        };
    let err = nix::errno::Errno::last();
    // The child has exec'd (its own memory now) or exited: the stack is
    // ours to drop.
    // SAFETY: the mapping made above, unused from here on.
    unsafe { libc::munmap(base, size) };
    match ret {
        -1 => Err(err),
        pid => Ok(pid),
    }
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

/// Unmaps this process's copy of the binary's read-only and executable
/// pages (`MADV_DONTNEED` from the ELF header up to `etext`, the end of the
/// code). They are the file's own pages, never written (relocations apply
/// to the writable segments only), so the page cache keeps them and a
/// later access maps them back from it; nothing is lost. Why: start-up
/// (argument and spec parsing, serde, the clone) maps most of the 3 MiB of
/// code, with fault-around, and an idle supervisor would keep all of it
/// mapped: 2.7 MiB of RSS each, which PSS divides only among the
/// supervisors alive on the host (540 KiB each with five tasks). The loop
/// needs a few pages of it.
pub fn release_text() {
    extern "C" {
        // Defined by the linker (GNU ld and lld alike): the ELF header at
        // the start of the first (read-only) segment, and the end of the
        // executable one.
        static __ehdr_start: u8;
        static etext: u8;
    }
    // Only the addresses of the two linker symbols are taken.
    let (start, end) = (
        std::ptr::addr_of!(__ehdr_start) as usize,
        std::ptr::addr_of!(etext) as usize,
    );
    let (start, end) = (start.next_multiple_of(PAGE), end / PAGE * PAGE);
    if end > start {
        // SAFETY: [start, end) lies in the binary's read-only and
        // executable file mappings, which no one writes: dropping their
        // page-table entries loses nothing (madvise(2): a private file
        // mapping's pages are re-read from the file), and a gap between the
        // two segments is skipped by the kernel (ENOMEM, ignored).
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

/// Drops the pages of the main thread's stack below the caller's frame
/// (less a margin) with `MADV_DONTNEED` (madvise(2): private anonymous
/// pages read back as zeros). Below the stack pointer nothing is live; the
/// pages there were dirtied by deeper calls earlier (the CLI's argument
/// parsing, when the CLI forked the supervisor; the supervisor's own
/// start), and an idle supervisor would keep them for the task's lifetime.
/// Pages a later call needs again fault in as zeros. The stack's lowest
/// address is its mapping's start in /proc/self/maps (`[stack]`); nothing
/// is dropped if it is not found.
pub fn release_stack_below_here() {
    let Ok(maps) = nomad_shim::sys::read_small_string("/proc/self/maps".as_ref()) else {
        return;
    };
    let Some(start) = maps
        .lines()
        .find(|l| l.ends_with("[stack]"))
        .and_then(|l| l.split('-').next())
        .and_then(|a| usize::from_str_radix(a, 16).ok())
    else {
        return;
    };
    drop(maps);
    drop_stack_pages_from(start);
}

/// The `madvise` of [`release_stack_below_here`], in a frame of its own
/// that holds nothing but a marker: the page of the marker and the one
/// below it (for this frame's own calls: the `madvise` wrapper and the
/// return addresses it pushes) are kept, everything from `start` up to
/// them goes.
#[inline(never)]
fn drop_stack_pages_from(start: usize) {
    let marker = 0u8;
    let here = std::hint::black_box(std::ptr::addr_of!(marker)) as usize;
    let end = (here / PAGE * PAGE).saturating_sub(PAGE);
    if end > start {
        // SAFETY: [start, end) lies in this thread's stack mapping more
        // than a page below this frame, whose callers are all above it:
        // no live data is there (the stack grows down; only frames that
        // have returned used it), no other thread exists, and a signal
        // handler would write its frame below the stack pointer afresh.
        // The pages read back as zeros.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
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

/// Waits for any signal but SIGKILL and SIGSTOP with `sigwaitinfo(2)` and
/// returns its number (real-time signals included, which `nix`'s `Signal`
/// cannot name). The caller has blocked them all: a blocked signal is
/// queued, never ignored, even for PID 1 of a pid namespace, which would
/// otherwise drop every signal it has no handler for (pid_namespaces(7)).
/// Allocates nothing: for the init (`supervisor/init.rs`).
pub fn sigwait_all() -> libc::c_int {
    // SAFETY: sigset_t is plain old data; all-zero is a valid (empty) set,
    // and sigfillset only writes into it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live local sigset_t.
    unsafe { libc::sigfillset(&mut set) };
    loop {
        // SAFETY: `set` is initialised; a null siginfo pointer is allowed
        // (sigwaitinfo(2): "If info is not NULL...").
        let sig = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
        if sig > 0 {
            return sig;
        }
        // EINTR (a stop/continue of the init): wait again.
    }
}

/// `kill(2)` with a raw signal number (real-time signals included).
pub fn kill_raw(pid: libc::pid_t, sig: libc::c_int) -> nix::Result<()> {
    // SAFETY: kill takes two integers and touches no memory of ours.
    match unsafe { libc::kill(pid, sig) } {
        0 => Ok(()),
        _ => Err(nix::errno::Errno::last()),
    }
}

/// `waitpid(-1, &status, WNOHANG)`: one exited child and its raw wait
/// status, `None` when none has exited (or there is no child at all).
pub fn reap_any() -> Option<(libc::pid_t, libc::c_int)> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a live local the kernel writes into.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        match pid {
            0 => return None,
            -1 if nix::errno::Errno::last() == nix::errno::Errno::EINTR => {}
            -1 => return None,
            pid => return Some((pid, status)),
        }
    }
}

/// Closes every descriptor but `keep` (two `close_range(2)` calls, Linux
/// 5.9), stdio included: for the init, which keeps only its status pipe.
pub fn close_all_but(keep: libc::c_uint) {
    close_from_but(0, keep);
}

/// Closes every descriptor from `first` up but `keep` (two
/// `close_range(2)` calls, Linux 5.9). For a process that owns none of
/// the others as Rust values any more, or never drops them: the init, and
/// a supervisor the CLI forked (its copies of the CLI's descriptors).
pub fn close_from_but(first: libc::c_uint, keep: libc::c_uint) {
    let close = |from: libc::c_uint, to: libc::c_uint| {
        // SAFETY: close_range takes integers only. The callers never use or
        // drop the Rust values that own some of these numbers (see above).
        unsafe { libc::syscall(libc::SYS_close_range, from, to, 0 as libc::c_uint) };
    };
    if keep < first {
        close(first, libc::c_uint::MAX);
        return;
    }
    if keep > first {
        close(first, keep - 1);
    }
    close(keep + 1, libc::c_uint::MAX);
}

/// One `write(2)` of `buf` to a raw descriptor, retried on EINTR; errors
/// are ignored (for the init's status record: no one is left to tell).
pub fn write_raw(fd: libc::c_int, buf: &[u8]) {
    loop {
        // SAFETY: the pointer and length describe `buf`, a live slice.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n >= 0 || nix::errno::Errno::last() != nix::errno::Errno::EINTR {
            return;
        }
    }
}

/// `close(2)` of a raw descriptor number, for the init (which never
/// returns, so no Rust owner of the number will ever close it again).
pub fn close_raw(fd: libc::c_int) {
    // SAFETY: closing an integer; see above for why no owner is left.
    unsafe {
        libc::close(fd);
    }
}

/// Drops every page of malloc's main heap from this process with
/// `MADV_DONTNEED` (madvise(2): private anonymous pages read back as
/// zeros): for the init, which is a copy of the supervisor and never
/// touches the heap again (see `init.rs`). The heap is the main arena,
/// contiguous up to the program break: `[sbrk(0) - arena, sbrk(0))`
/// (mallinfo(3)). The thread's TLS and TCB lie below it (a static binary
/// takes them with sbrk before malloc's first sbrk; a dynamic one from
/// ld.so), stacks and static data are other mappings, so only malloc's
/// chunks go.
pub fn release_heap() {
    // SAFETY: mallinfo2 only reads malloc's state under its lock, which is
    // free (the caller is single-threaded and not inside malloc); sbrk(0)
    // only reads the break.
    let (arena, end) = unsafe { (libc::mallinfo2().arena, libc::sbrk(0) as usize) };
    const PAGE: usize = 4096;
    if end == usize::MAX || arena == 0 || arena > end {
        return;
    }
    let start = (end - arena).next_multiple_of(PAGE);
    let end = end / PAGE * PAGE;
    // Belt and braces: `arena` counts every arena, and with more than the
    // main one (never, in the single-threaded supervisor) the range would
    // reach below the heap. Never drop the page of this thread's TLS.
    // SAFETY: __errno_location only returns the address of errno.
    let tls = unsafe { libc::__errno_location() } as usize;
    if (start..end).contains(&tls) {
        return;
    }
    if end > start {
        // SAFETY: the range lies inside malloc's heap (see above); the
        // caller reads and writes none of it afterwards, and no other
        // thread exists to do so. Pages read back as zeros, never fault.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}
