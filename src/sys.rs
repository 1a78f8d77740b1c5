//! The library's only `unsafe`: raw system calls that neither `std` nor `nix`
//! wraps. Each wrapper turns the raw `-1`/errno convention into a
//! [`nix::Result`] once, through `check` (the `SyscallReturnCode` habit of
//! rust-vmm's `vmm-sys-util`).
#![allow(unsafe_code)]

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

/// Turns a raw syscall return value into `Ok(value)` or the thread's errno.
fn check(ret: libc::c_long) -> nix::Result<libc::c_long> {
    if ret == -1 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// `capset(2)` of the calling thread, `_LINUX_CAPABILITY_VERSION_3`: the
/// effective, permitted and inheritable sets (bit masks of capability
/// numbers) in one call, where the `caps` crate makes a capget and a capset
/// per set. The kernel checks the new triple against the old one as it
/// would each set alone (capabilities(7)).
pub(crate) fn capset(effective: u64, permitted: u64, inheritable: u64) -> nix::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let word = |mask: u64, i: u32| (mask >> (32 * i)) as u32;
    let data = [0, 1].map(|i| Data {
        effective: word(effective, i),
        permitted: word(permitted, i),
        inheritable: word(inheritable, i),
    });
    // SAFETY: the header and the two data words are live, properly laid out
    // (linux/capability.h) locals for the call's duration; version 3 reads
    // exactly two data structs.
    check(unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) }).map(drop)
}

/// `pidfd_open(2)`: a file descriptor that refers to process `pid` (Linux 5.3).
///
/// The descriptor is close-on-exec. It becomes readable when the process
/// exits, whether or not it is our child, and `pidfd_send_signal(2)` through
/// it can never reach a process that later reuses the pid.
pub fn pidfd_open(pid: libc::pid_t) -> nix::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and touches no memory of ours.
    let ret = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) })?;
    // SAFETY: on success the kernel returned a new descriptor that nothing
    // else owns; wrapping it transfers that ownership to the OwnedFd.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// `pidfd_send_signal(2)` with no `siginfo`: like `kill(2)`, but to the
/// process the pidfd refers to, never to a reuse of its pid.
pub(crate) fn pidfd_send_signal(pidfd: &OwnedFd, signal: libc::c_int) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a null siginfo pointer is explicitly allowed (the kernel then
    // fills in the siginfo as kill(2) would); the fd is valid for the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    })?;
    Ok(())
}

/// `close_range(2)` flag: mark the descriptors close-on-exec instead of
/// closing them (Linux 5.11).
pub const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// Sleeps in `poll(2)` until `fd` is readable (`POLLIN`, or `POLLHUP` at a
/// pipe's EOF or a reaped pidfd) or `timeout` passes (`None`: no limit;
/// `Some(ZERO)`: a look only). Returns whether it is readable; EINTR is
/// retried.
pub(crate) fn poll_readable(
    fd: std::os::fd::BorrowedFd<'_>,
    timeout: Option<std::time::Duration>,
) -> nix::Result<bool> {
    use nix::poll::{PollFd, PollFlags, PollTimeout};
    let timeout = match timeout {
        None => PollTimeout::NONE,
        Some(d) => PollTimeout::try_from(d.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX),
    };
    loop {
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, timeout) {
            Ok(n) => return Ok(n > 0),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// `posix_spawn(3)` of `program` with `argv` and exactly `envp`: stdin and
/// stderr on /dev/null, `stdout` as fd 1 and `extra` as fd `extra_at`
/// (above stdio), every other descriptor as the caller's close-on-exec
/// flags leave it; an empty signal mask and SIGPIPE at its default, as
/// std's `Command` gives a child. What std's `Command` cannot do without
/// falling back from glibc's `clone(CLONE_VM|CLONE_VFORK)` to a `fork(2)`,
/// which copies the caller's page tables (a `pre_exec` closure): map a
/// descriptor above 2. Returns the child's pid; an exec that fails is the
/// error (glibc reports it).
pub(crate) fn spawn(
    program: &std::ffi::CStr,
    argv: &[&std::ffi::CStr],
    envp: &[&std::ffi::CStr],
    stdout: std::os::fd::BorrowedFd<'_>,
    extra: std::os::fd::BorrowedFd<'_>,
    extra_at: RawFd,
) -> std::io::Result<libc::pid_t> {
    use std::os::fd::AsRawFd;
    let io = |r: libc::c_int| match r {
        0 => Ok(()),
        e => Err(std::io::Error::from_raw_os_error(e)),
    };
    // A descriptor the file actions could overwrite before they read it, or
    // dup2 onto itself (which need not clear close-on-exec), sits at or
    // below `extra_at` (a caller with its stdio closed): a copy above it is
    // used instead.
    let above = |fd: std::os::fd::BorrowedFd<'_>| -> std::io::Result<Option<OwnedFd>> {
        if fd.as_raw_fd() > extra_at {
            return Ok(None);
        }
        let copy = check(unsafe {
            // SAFETY: fcntl on a borrowed, open descriptor; the result is a
            // new descriptor that nothing else owns.
            libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, extra_at + 1).into()
        })?;
        // SAFETY: `copy` was just returned by F_DUPFD_CLOEXEC (above).
        Ok(Some(unsafe { OwnedFd::from_raw_fd(copy as RawFd) }))
    };
    let (stdout_copy, extra_copy) = (above(stdout)?, above(extra)?);
    let stdout = stdout_copy
        .as_ref()
        .map_or(stdout.as_raw_fd(), |f| f.as_raw_fd());
    let extra = extra_copy
        .as_ref()
        .map_or(extra.as_raw_fd(), |f| f.as_raw_fd());
    let mut argv: Vec<*mut libc::c_char> = argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv.push(std::ptr::null_mut());
    let mut envp: Vec<*mut libc::c_char> = envp.iter().map(|e| e.as_ptr().cast_mut()).collect();
    envp.push(std::ptr::null_mut());
    // SAFETY: the file actions and attributes are initialised before use
    // and destroyed on every path; every pointer handed to libc (program,
    // the NULL-terminated argv and envp arrays, the /dev/null path) lives
    // until posix_spawn has returned; the descriptors are open (borrowed
    // or owned here) for the whole call.
    unsafe {
        let mut actions = std::mem::MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit();
        io(libc::posix_spawn_file_actions_init(actions.as_mut_ptr()))?;
        let mut actions = actions.assume_init();
        let mut attr = std::mem::MaybeUninit::<libc::posix_spawnattr_t>::uninit();
        if let Err(e) = io(libc::posix_spawnattr_init(attr.as_mut_ptr())) {
            libc::posix_spawn_file_actions_destroy(&mut actions);
            return Err(e);
        }
        let mut attr = attr.assume_init();
        let mut empty: libc::sigset_t = std::mem::zeroed();
        let mut pipe: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigemptyset(&mut pipe);
        libc::sigaddset(&mut pipe, libc::SIGPIPE);
        let null = c"/dev/null".as_ptr();
        let set_up = io(libc::posix_spawn_file_actions_adddup2(
            &mut actions,
            stdout,
            1,
        ))
        .and_then(|()| {
            io(libc::posix_spawn_file_actions_addopen(
                &mut actions,
                0,
                null,
                libc::O_RDONLY,
                0,
            ))
        })
        .and_then(|()| {
            io(libc::posix_spawn_file_actions_addopen(
                &mut actions,
                2,
                null,
                libc::O_WRONLY,
                0,
            ))
        })
        .and_then(|()| {
            io(libc::posix_spawn_file_actions_adddup2(
                &mut actions,
                extra,
                extra_at,
            ))
        })
        .and_then(|()| io(libc::posix_spawnattr_setsigmask(&mut attr, &empty)))
        .and_then(|()| io(libc::posix_spawnattr_setsigdefault(&mut attr, &pipe)))
        .and_then(|()| {
            io(libc::posix_spawnattr_setflags(
                &mut attr,
                (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short,
            ))
        });
        let mut pid: libc::pid_t = 0;
        let spawned = set_up.and_then(|()| {
            io(libc::posix_spawn(
                &mut pid,
                program.as_ptr(),
                &actions,
                &attr,
                argv.as_ptr(),
                envp.as_ptr(),
            ))
        });
        libc::posix_spawnattr_destroy(&mut attr);
        libc::posix_spawn_file_actions_destroy(&mut actions);
        spawned.map(|()| pid)
    }
}

/// `close_range(first, ~0, flags)` (Linux 5.9): closes (or, with
/// [`CLOSE_RANGE_CLOEXEC`], marks close-on-exec) every descriptor from
/// `first` up, whatever opened it — inherited fds a caller forgot to mark
/// close-on-exec included.
pub fn close_range(first: libc::c_uint, flags: libc::c_uint) -> nix::Result<()> {
    // SAFETY: close_range takes integers only. Descriptors owned by Rust
    // values (OwnedFd, File) above `first` become dangling when closed;
    // callers close only where no such value exists yet (the first thing the
    // supervisor does) or mark them close-on-exec (right before execve).
    check(unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, flags) })?;
    Ok(())
}

/// `getrandom(2)`: fills `buf` from the kernel's CSPRNG.
pub(crate) fn getrandom(buf: &mut [u8]) -> nix::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: the pointer and length describe `rest`, a live mutable
        // slice the kernel may write into entirely.
        let n = check(
            unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) } as libc::c_long,
        );
        match n {
            Ok(n) => filled += n as usize,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What `wait4(2)` reports about one reaped child.
#[derive(Debug, Clone, Copy)]
pub struct Reaped {
    /// The reaped pid.
    pub pid: libc::pid_t,
    /// The raw wait status (`WIFEXITED` & co. decode it).
    pub status: libc::c_int,
    /// User CPU time of the child and its reaped descendants, in nanoseconds.
    pub user_cpu_ns: u64,
    /// System CPU time likewise, in nanoseconds.
    pub system_cpu_ns: u64,
    /// Maximum resident set size, in KiB.
    pub max_rss_kib: u64,
}

/// `wait4(pid, WNOHANG)`: reaps one exited child with its resource usage.
/// `Ok(None)` when no matching child has exited yet.
pub fn wait4_nohang(pid: libc::pid_t) -> nix::Result<Option<Reaped>> {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers point at live locals of the right type for the
    // duration of the call.
    let ret =
        check(unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) } as libc::c_long)?;
    if ret == 0 {
        return Ok(None);
    }
    let ns = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1_000;
    Ok(Some(Reaped {
        pid: ret as libc::pid_t,
        status,
        user_cpu_ns: ns(usage.ru_utime),
        system_cpu_ns: ns(usage.ru_stime),
        max_rss_kib: usage.ru_maxrss as u64,
    }))
}

/// The raw `getcwd` system call (not glibc's wrapper): when the working
/// directory is outside the process's root, the kernel answers with a path
/// starting `(unreachable)`, which the CVE-2024-21626 check looks for; glibc
/// turns that into ENOENT and hides it.
pub(crate) fn getcwd(buf: &mut [u8]) -> nix::Result<&std::ffi::CStr> {
    // SAFETY: the pointer and length describe `buf`, a live mutable slice
    // the kernel may write into entirely.
    let ret = check(unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) })?;
    std::ffi::CStr::from_bytes_until_nul(&buf[..ret as usize]).map_err(|_| Errno::EINVAL)
}

/// `lsetxattr(2)`: set extended attribute `name` of `path` (not following a
/// final symlink) to `value`, creating or replacing it.
pub fn lsetxattr(path: &std::ffi::CStr, name: &std::ffi::CStr, value: &[u8]) -> nix::Result<()> {
    // SAFETY: `path` and `name` are NUL-terminated C strings alive for the
    // call; the pointer and length describe `value`, which the kernel only
    // reads.
    check(unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    } as libc::c_long)?;
    Ok(())
}

/// `lgetxattr(2)`: read extended attribute `name` of `path` (not following a
/// final symlink) into `buf`; returns the value's length. `ENODATA`: no such
/// attribute; `ERANGE`: `buf` is too small.
pub fn lgetxattr(
    path: &std::ffi::CStr,
    name: &std::ffi::CStr,
    buf: &mut [u8],
) -> nix::Result<usize> {
    // SAFETY: `path` and `name` are NUL-terminated C strings alive for the
    // call; the pointer and length describe `buf`, a live mutable slice the
    // kernel may write into entirely.
    let n = check(unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    } as libc::c_long)?;
    Ok(n as usize)
}

/// `mount_setattr(2)` attributes (linux/mount.h).
pub(crate) const MOUNT_ATTR_RDONLY: u64 = 0x1;
/// No setuid/setgid (`MS_NOSUID`).
pub(crate) const MOUNT_ATTR_NOSUID: u64 = 0x2;
/// No device files (`MS_NODEV`).
pub(crate) const MOUNT_ATTR_NODEV: u64 = 0x4;
/// No execution (`MS_NOEXEC`).
pub(crate) const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// `struct mount_attr` of linux/mount.h (`MOUNT_ATTR_SIZE_VER0`, 32 bytes).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH|AT_RECURSIVE, {attr_set})` (Linux
/// 5.12): sets `attr_set` on the mount `fd` refers to and on every mount
/// below it, in one call; one `MS_BIND|MS_REMOUNT` per mount otherwise.
/// `ENOSYS` on older kernels.
pub(crate) fn mount_setattr_recursive(fd: &OwnedFd, attr_set: u64) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    /// fcntl.h: "apply to the entire subtree".
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    let attr = MountAttr {
        attr_set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE;
    // SAFETY: the path is a NUL-terminated static string, `attr` a live
    // local of the size passed; the kernel only reads both. The fd is valid
    // for the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })?;
    Ok(())
}

/// Whether `path` (not followed if it is a symlink) is the root of a mount:
/// `statx(2)`'s `STATX_ATTR_MOUNT_ROOT` (Linux 5.8), which, unlike a
/// comparison of `st_dev`, also sees a bind mount from the same filesystem.
/// `None` where the kernel does not report the attribute.
pub(crate) fn is_mount_root(path: &std::ffi::CStr) -> Option<bool> {
    // SAFETY: statx is plain old data; all-zero is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the path is NUL-terminated and `stx` a live local the kernel
    // fills; both outlive the call.
    let ret = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            0,
            &mut stx,
        )
    };
    let bit = libc::STATX_ATTR_MOUNT_ROOT as u64;
    (ret == 0 && stx.stx_attributes_mask & bit != 0).then_some(stx.stx_attributes & bit != 0)
}

/// The id of the mount `fd` lies on, as `/proc/self/mountinfo`'s first field
/// and fdinfo's `mnt_id` give it: `statx(2)` with `STATX_MNT_ID` (Linux 5.8),
/// one call instead of an open, a read and a close of
/// `/proc/self/fdinfo/<fd>`. `None` where the kernel does not report it.
pub(crate) fn mount_id(fd: std::os::fd::BorrowedFd<'_>) -> Option<u64> {
    use std::os::fd::AsRawFd;
    // SAFETY: statx is plain old data; all-zero is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the empty path is NUL-terminated, `fd` is open for the call's
    // duration (borrowed), and `stx` is a live local the kernel fills.
    let ret = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_MNT_ID,
            &mut stx,
        )
    };
    (ret == 0 && stx.stx_mask & libc::STATX_MNT_ID != 0).then_some(stx.stx_mnt_id)
}

// bpf(2) commands, program and attach types, and flags (linux/bpf.h).
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 1 << 1;

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, up to
/// `expected_attach_type` (the kernel takes a shorter attr and treats the
/// fields it does not get as zero).
#[repr(C)]
#[derive(Default)]
struct BpfProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BpfProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// `bpf(BPF_PROG_LOAD)` of a `BPF_PROG_TYPE_CGROUP_DEVICE` program: `insns`
/// is the instructions, 8 bytes each (`struct bpf_insn`). With `log`, the
/// verifier writes its log there (level 1). Returns the program's
/// descriptor (close-on-exec: the kernel always sets it for bpf fds).
pub(crate) fn bpf_prog_load_cgroup_device(
    insns: &[u8],
    log: Option<&mut [u8]>,
) -> nix::Result<OwnedFd> {
    if !insns.len().is_multiple_of(8) {
        return Err(Errno::EINVAL);
    }
    static LICENSE: &[u8] = b"MPL-2.0\0";
    let mut attr = BpfProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: u32::try_from(insns.len() / 8).map_err(|_| Errno::E2BIG)?,
        insns: insns.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        expected_attach_type: BPF_CGROUP_DEVICE,
        ..BpfProgLoadAttr::default()
    };
    attr.prog_name[..10].copy_from_slice(b"nomad_devs");
    if let Some(log) = log {
        attr.log_level = 1;
        attr.log_size = u32::try_from(log.len()).map_err(|_| Errno::E2BIG)?;
        attr.log_buf = log.as_mut_ptr() as u64;
    }
    // SAFETY: `attr` is a live, fully initialized struct whose layout is the
    // kernel's union bpf_attr prefix (repr(C), size passed); the pointers in
    // it (instructions, NUL-terminated license, optional log buffer with its
    // length) point at memory that outlives the call; the kernel reads the
    // instructions and license and writes at most `log_size` bytes of log.
    let ret = check(unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const BpfProgLoadAttr,
            std::mem::size_of::<BpfProgLoadAttr>() as libc::c_uint,
        )
    })?;
    // SAFETY: on success the kernel returned a new descriptor that nothing
    // else owns; wrapping it transfers that ownership to the OwnedFd.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// `bpf(BPF_PROG_ATTACH)` of a device program to a cgroup directory (an
/// `O_PATH` or ordinary directory descriptor), as `BPF_CGROUP_DEVICE` with
/// `BPF_F_ALLOW_MULTI`: programs of ancestors keep applying, and every one
/// must allow an access.
pub(crate) fn bpf_prog_attach_cgroup_device(
    cgroup: &impl std::os::fd::AsRawFd,
    prog: &impl std::os::fd::AsRawFd,
) -> nix::Result<()> {
    let attr = BpfProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    // SAFETY: `attr` is a live, initialized repr(C) struct laid out as the
    // kernel's BPF_PROG_ATTACH attr, its size passed; it holds integers only
    // and the kernel only reads it.
    check(unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attr as *const BpfProgAttachAttr,
            std::mem::size_of::<BpfProgAttachAttr>() as libc::c_uint,
        )
    })?;
    Ok(())
}

/// Registers a borrowed descriptor with tokio's reactor for readability
/// (feature `tokio`; `Task::wait_async`). Tokio 1.54 made registration
/// `unsafe` (its PR 8587): the descriptor must stay open, and the same, for
/// as long as the `AsyncFd` lives. Must be called inside a runtime with IO
/// enabled.
#[cfg(feature = "tokio")]
pub(crate) fn register_readable(
    fd: std::os::fd::BorrowedFd<'_>,
) -> std::io::Result<tokio::io::unix::AsyncFd<std::os::fd::BorrowedFd<'_>>> {
    use tokio::io::{unix::AsyncFd, Interest};
    // SAFETY: the AsyncFd holds the BorrowedFd itself, whose lifetime the
    // borrow checker ties to the owner of the descriptor: the descriptor
    // stays open for as long as the AsyncFd lives (or until the AsyncFd is
    // forgotten, which the contract allows), and a BorrowedFd always
    // returns the same number from as_raw_fd.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(|e| e.into())
}

/// `_exit(2)`: ends the process at once, without destructors or atexit
/// handlers (a failpoint's `exit`, which must look like a crash).
#[cfg(feature = "failpoints")]
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit takes an integer and never returns; skipping Rust
    // destructors and atexit handlers is the point.
    unsafe { libc::_exit(code) }
}

/// `recvmsg(2)` of up to `buf.len()` bytes and the descriptors that came
/// with them (`SCM_RIGHTS`, received close-on-exec: `MSG_CMSG_CLOEXEC`).
/// Returns the byte count (0 at EOF) and the descriptors, owned.
pub fn recv_with_fds(
    fd: std::os::fd::BorrowedFd<'_>,
    buf: &mut [u8],
) -> nix::Result<(usize, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut space = nix::cmsg_space!([RawFd; 8]);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        fd.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            for r in raw {
                // SAFETY: the kernel installed each of these descriptors in
                // our table for this message; nothing else owns them yet.
                fds.push(unsafe { OwnedFd::from_raw_fd(r) });
            }
        }
    }
    Ok((msg.bytes, fds))
}

/// `sendmsg(2)` of all of `buf` (retried on a short write; the descriptors
/// go with the first byte, as `SCM_RIGHTS`).
pub fn send_with_fds(
    fd: std::os::fd::BorrowedFd<'_>,
    buf: &[u8],
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> nix::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use std::os::fd::AsRawFd;
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let mut sent = 0;
    while sent < buf.len() {
        let iov = [std::io::IoSlice::new(&buf[sent..])];
        let rights = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage<'_>] = if sent == 0 && !raw.is_empty() {
            &rights
        } else {
            &[]
        };
        match sendmsg::<()>(fd.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) => sent += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `ioctl(TIOCGWINSZ)`: a terminal's rows and columns.
pub fn get_winsize(fd: std::os::fd::BorrowedFd<'_>) -> nix::Result<(u16, u16)> {
    use std::os::fd::AsRawFd;
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` to the pointer, which
    // points at a live local of that type (tty_ioctl(4)).
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } as libc::c_long)?;
    Ok((ws.ws_row, ws.ws_col))
}

/// `ioctl(TIOCSWINSZ)`: sets a terminal's rows and columns (the kernel
/// sends SIGWINCH to its foreground process group, tty_ioctl(4)).
pub fn set_winsize(fd: std::os::fd::BorrowedFd<'_>, rows: u16, cols: u16) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `struct winsize` from the pointer, a
    // live local of that type (tty_ioctl(4)).
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } as libc::c_long)?;
    Ok(())
}

/// `ioctl(TIOCSCTTY, 0)`: makes the terminal `fd` the controlling terminal
/// of the caller, which must be a session leader without one (tty_ioctl(4)).
/// Async-signal-safe: the task's child calls it after its `setsid`.
pub fn set_controlling_terminal(fd: std::os::fd::BorrowedFd<'_>) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal the
    // terminal from another session) and touches no memory of ours.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0 as libc::c_int) };
    check(ret as libc::c_long)?;
    Ok(())
}

/// `ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC)` (Linux
/// 4.13): opens the slave of a pty master through the master's own devpts
/// mount, with no path lookup (ioctl_tty(2)).
pub fn open_pty_peer(master: std::os::fd::BorrowedFd<'_>) -> nix::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes the open flags as an integer argument and
    // touches no memory of ours.
    let ret = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    let fd = check(ret as libc::c_long)?;
    // SAFETY: on success the kernel returned a new descriptor that nothing
    // else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Reads a small file whole (a `/proc` or cgroup file): plain reads into a
/// 4 KiB buffer until end of file. std's `fs::read` first asks for the size
/// (a `statx`, plus an `lseek` for `read_to_string`), which such files
/// report as 0, and then probes with reads of 32 bytes and up: eight system
/// calls for a `/proc/<pid>/stat`, against three here. On every task's
/// start and exit path.
#[doc(hidden)]
pub fn read_small(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// [`read_small`] of a text file.
#[doc(hidden)]
pub fn read_small_string(path: &std::path::Path) -> std::io::Result<String> {
    String::from_utf8(read_small(path)?).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        )
    })
}
