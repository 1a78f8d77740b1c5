//! One mount operation of the new root, precomputed in `prepare`, applied in
//! the child without allocating.
//!
//! Every target is opened with `openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)`
//! relative to the new root and mounted on through its `/proc/self/fd/N`
//! magic link (as runc does): whatever a previous task left in the task dir,
//! a mount can only land on the directory that was checked, never on a
//! symlink's target.

use std::ffi::CStr;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{mkdirat, mknodat, umask, Mode, SFlag};
use nix::unistd::symlinkat;

use super::taskdir::Kind;
use crate::step::{Step, StepError, SubjectId};

/// Where a bind mount comes from.
#[derive(Debug)]
pub(crate) enum Source {
    /// A host path (trusted: the agent's `chroot_env`, `alloc_dir`, `/dev`).
    Host(CString),
    /// The target itself: makes a directory of the root its own mount, so
    /// it keeps its own flags when the root becomes read-only.
    Itself,
}

/// One step of building the root, in order.
#[derive(Debug)]
pub(crate) enum MountOp {
    /// `mount(MS_BIND)` then `mount(MS_BIND|MS_REMOUNT|flags)`: a bind
    /// mount ignores every flag but `MS_REC` at creation; only the remount
    /// applies `MS_RDONLY`, `MS_NOSUID`... (mount(2) "Creating a bind
    /// mount", "Remounting an existing mount").
    Bind {
        /// Where from.
        src: Source,
        /// Relative to the new root.
        target: CString,
        /// Directory or file.
        kind: Kind,
        /// Per-mount flags of the remount.
        flags: MsFlags,
        /// For error messages.
        subject: SubjectId,
    },
    /// A fresh filesystem (tmpfs, devpts, proc).
    Fs {
        /// `tmpfs`, `devpts`, `proc`; also used as the source name.
        fstype: &'static CStr,
        /// The step to report on failure.
        step: Step,
        /// Relative to the new root.
        target: CString,
        /// Mount flags.
        flags: MsFlags,
        /// Filesystem options.
        data: Option<CString>,
        /// For error messages.
        subject: SubjectId,
    },
    /// `mkdirat(parent, name)`, inside a filesystem we just mounted.
    Mkdir {
        /// Relative to the new root.
        parent: CString,
        /// One component.
        name: CString,
        /// Mode (a mount point: hidden by what is mounted on it).
        mode: Mode,
        /// For error messages.
        subject: SubjectId,
    },
    /// An empty file as a mount point for a device node bind.
    Touch {
        /// Relative to the new root.
        parent: CString,
        /// One component.
        name: CString,
        /// For error messages.
        subject: SubjectId,
    },
    /// `mknodat(parent, name, S_IFCHR|0666, rdev)` of each node, with the
    /// umask cleared meanwhile: the default device nodes of the new `/dev`
    /// (as runc makes them where it may: one call each, no mount).
    Nodes {
        /// Relative to the new root.
        parent: CString,
        /// One component, the host node's device number, for errors.
        nodes: Vec<(CString, u64, SubjectId)>,
    },
    /// `symlinkat(to, parent, name)`.
    Symlink {
        /// Relative to the new root.
        parent: CString,
        /// One component.
        name: CString,
        /// The link's content.
        to: &'static CStr,
        /// For error messages.
        subject: SubjectId,
    },
    /// `mount(MS_BIND|MS_REMOUNT|flags)` of a mount made earlier (the v1
    /// `/sys/fs/cgroup` tmpfs, read-only once its binds are in), with
    /// `MS_NOEXEC` added when the mount is noexec (`fstatvfs`).
    RemountBind {
        /// Relative to the new root.
        target: CString,
        /// Directory or file.
        kind: Kind,
        /// Per-mount flags.
        flags: MsFlags,
        /// For error messages.
        subject: SubjectId,
    },
    /// `mount(MS_BIND)` only: the new mount keeps the source mount's flags
    /// (runc's `/dev/null` over a masked file), or gets its final ones
    /// from a [`MountOp::ReadOnlyTree`] that follows.
    BindOnly {
        /// Where from (a host path).
        src: CString,
        /// Relative to the new root.
        target: CString,
        /// Directory or file.
        kind: Kind,
        /// For error messages.
        subject: SubjectId,
    },
    /// `mount_setattr(AT_RECURSIVE)` of `flags` on the mount at `target`
    /// and every mount below it: one call instead of one remount each.
    /// On a kernel without it (before 5.12: `ENOSYS`), `fallback` (one
    /// [`MountOp::RemountBind`] per mount) is applied instead.
    ReadOnlyTree {
        /// Relative to the new root.
        target: CString,
        /// `MOUNT_ATTR_*` bits.
        attr: u64,
        /// The same, one remount per mount.
        fallback: Vec<MountOp>,
        /// For error messages.
        subject: SubjectId,
    },
    /// The inner operation, skipped when its target does not exist in the
    /// child (a masked `/proc` entry this kernel lacks: runc skips those
    /// too).
    IfExists(Box<MountOp>),
}

impl MountOp {
    /// Child: applies this operation under `root` (an `O_PATH` fd of the new
    /// root's mount).
    pub(crate) fn apply(&self, root: &OwnedFd) -> Result<(), StepError> {
        match self {
            MountOp::Bind {
                src,
                target,
                kind,
                flags,
                subject,
            } => {
                let at = StepError::with_on(Step::OpenMountPoint, *subject);
                let fd = open_beneath(root, target, *kind).map_err(&at)?;
                let path = FdPath::new(&fd);
                let src = match src {
                    Source::Host(host) => host.as_c_str(),
                    Source::Itself => path.as_cstr(),
                };
                mount_at(Some(src), path.as_cstr(), None, MsFlags::MS_BIND, None)
                    .map_err(StepError::with_on(Step::BindMount, *subject))?;
                // The fd still names the directory *under* the new mount:
                // reopen to reach the mount's root for the remount.
                drop(fd);
                let fd = open_beneath(root, target, *kind).map_err(&at)?;
                let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | *flags;
                mount_at(None, FdPath::new(&fd).as_cstr(), None, flags, None)
                    .map_err(StepError::with_on(Step::Remount, *subject))
            }
            MountOp::Fs {
                fstype,
                step,
                target,
                flags,
                data,
                subject,
            } => {
                let fd = open_beneath(root, target, Kind::Dir)
                    .map_err(StepError::with_on(Step::OpenMountPoint, *subject))?;
                let data = data.as_deref();
                mount_at(
                    Some(fstype),
                    FdPath::new(&fd).as_cstr(),
                    Some(fstype),
                    *flags,
                    data,
                )
                .map_err(StepError::with_on(*step, *subject))
            }
            MountOp::Mkdir {
                parent,
                name,
                mode,
                subject,
            } => {
                let dir = open_beneath(root, parent, Kind::Dir)
                    .map_err(StepError::with_on(Step::OpenMountPoint, *subject))?;
                mkdirat(&dir, name.as_c_str(), *mode)
                    .map_err(StepError::with_on(Step::Mkdir, *subject))
            }
            MountOp::Touch {
                parent,
                name,
                subject,
            } => {
                let dir = open_beneath(root, parent, Kind::Dir)
                    .map_err(StepError::with_on(Step::OpenMountPoint, *subject))?;
                let flags = OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC;
                openat(
                    &dir,
                    name.as_c_str(),
                    flags,
                    Mode::from_bits_truncate(0o666),
                )
                .map(drop)
                .map_err(StepError::with_on(Step::CreateFile, *subject))
            }
            MountOp::Nodes { parent, nodes } => {
                let Some((_, _, first)) = nodes.first() else {
                    return Ok(());
                };
                let dir = open_beneath(root, parent, Kind::Dir)
                    .map_err(StepError::with_on(Step::OpenMountPoint, *first))?;
                // 0666 exactly, as the host's nodes are: the umask (the
                // supervisor's 022) would take away the write bits.
                let old = umask(Mode::empty());
                let made = nodes.iter().try_for_each(|(name, rdev, subject)| {
                    let mode = Mode::from_bits_truncate(0o666);
                    mknodat(&dir, name.as_c_str(), SFlag::S_IFCHR, mode, *rdev)
                        .map_err(StepError::with_on(Step::MakeDevice, *subject))
                });
                umask(old);
                made
            }
            MountOp::Symlink {
                parent,
                name,
                to,
                subject,
            } => {
                let dir = open_beneath(root, parent, Kind::Dir)
                    .map_err(StepError::with_on(Step::OpenMountPoint, *subject))?;
                symlinkat(*to, &dir, name.as_c_str())
                    .map_err(StepError::with_on(Step::Symlink, *subject))
            }
            MountOp::RemountBind {
                target,
                kind,
                flags,
                subject,
            } => {
                let fd = open_beneath(root, target, *kind)
                    .map_err(StepError::with_on(Step::OpenMountPoint, *subject))?;
                // A remount sets the mount's flags: it must not make a
                // noexec source executable, so its noexec is kept (read
                // here, in the fallback only, not planned for every bind).
                // Unreadable flags fail the step rather than guess.
                let st = nix::sys::statvfs::fstatvfs(&fd)
                    .map_err(StepError::with_on(Step::Remount, *subject))?;
                let noexec = if st.flags().contains(nix::sys::statvfs::FsFlags::ST_NOEXEC) {
                    MsFlags::MS_NOEXEC
                } else {
                    MsFlags::empty()
                };
                let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | *flags | noexec;
                mount_at(None, FdPath::new(&fd).as_cstr(), None, flags, None)
                    .map_err(StepError::with_on(Step::Remount, *subject))
            }
            MountOp::BindOnly {
                src,
                target,
                kind,
                subject,
            } => {
                let fd = open_beneath(root, target, *kind)
                    .map_err(StepError::with_on(Step::OpenMountPoint, *subject))?;
                let path = FdPath::new(&fd);
                mount_at(Some(src), path.as_cstr(), None, MsFlags::MS_BIND, None)
                    .map_err(StepError::with_on(Step::BindMount, *subject))
            }
            MountOp::ReadOnlyTree {
                target,
                attr,
                fallback,
                subject,
            } => {
                let fd = open_beneath(root, target, Kind::Dir)
                    .map_err(StepError::with_on(Step::OpenMountPoint, *subject))?;
                match crate::sys::mount_setattr_recursive(&fd, *attr) {
                    Err(Errno::ENOSYS) => fallback.iter().try_for_each(|op| op.apply(root)),
                    other => other.map_err(StepError::with_on(Step::Remount, *subject)),
                }
            }
            MountOp::IfExists(op) => match op.apply(root) {
                Err(e) if e.step == Step::OpenMountPoint && e.errno == Errno::ENOENT => Ok(()),
                other => other,
            },
        }
    }
}

/// `openat2(root, rel, O_PATH)` that refuses to leave `root` or follow any
/// symlink (openat2(2) `RESOLVE_BENEATH`, `RESOLVE_NO_SYMLINKS`; a trailing
/// symlink fails with `ELOOP` because `O_NOFOLLOW` is not given).
pub(crate) fn open_beneath(root: &OwnedFd, rel: &CStr, kind: Kind) -> nix::Result<OwnedFd> {
    let mut flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
    if kind == Kind::Dir {
        flags |= OFlag::O_DIRECTORY;
    }
    let how = OpenHow::new()
        .flags(flags)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    openat2(root, rel, how)
}

/// mount(2) with C strings only (no conversion, no allocation).
pub(crate) fn mount_at(
    src: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: MsFlags,
    data: Option<&CStr>,
) -> nix::Result<()> {
    mount(src, target, fstype, flags, data)
}

/// `/proc/self/fd/N` of an fd, formatted on the stack.
pub(crate) struct FdPath {
    buf: [u8; 32],
}

impl FdPath {
    /// Formats the magic link of `fd`.
    pub(crate) fn new(fd: &OwnedFd) -> FdPath {
        const PREFIX: &[u8] = b"/proc/self/fd/";
        let mut buf = [0u8; 32];
        buf[..PREFIX.len()].copy_from_slice(PREFIX);
        let mut n = fd.as_raw_fd().unsigned_abs();
        let mut digits = [0u8; 10];
        let mut len = 0;
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for (i, d) in digits[..len].iter().rev().enumerate() {
            buf[PREFIX.len() + i] = *d;
        }
        FdPath { buf }
    }

    /// The path, NUL-terminated (the buffer always holds a NUL).
    pub(crate) fn as_cstr(&self) -> &CStr {
        CStr::from_bytes_until_nul(&self.buf).unwrap_or(c"/proc/self/fd/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_path_formats_digits() {
        let fd = nix::fcntl::open(c"/", OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).unwrap();
        let want = format!("/proc/self/fd/{}", fd.as_raw_fd());
        assert_eq!(FdPath::new(&fd).as_cstr().to_str().unwrap(), want);
    }

    /// The remount of the fallback (kernels without mount_setattr) keeps a
    /// noexec source noexec: a plain `MS_BIND|MS_REMOUNT|MS_RDONLY` would
    /// clear it. In a thread with a mount namespace of its own (only that
    /// thread moves), on a noexec tmpfs of its own.
    #[test]
    #[ignore = "needs root (a mount namespace): scripts/test runs it"]
    fn the_fallback_remount_keeps_a_noexec_source_noexec() {
        use nix::mount::{mount, MsFlags};
        use nix::sys::statvfs::{statvfs, FsFlags};
        assert!(nix::unistd::geteuid().is_root(), "needs root");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .unwrap();
            let (src, root) = (path.join("src"), path.join("root"));
            std::fs::create_dir(&src).unwrap();
            std::fs::create_dir_all(root.join("dst")).unwrap();
            let noexec = MsFlags::MS_NOEXEC | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
            mount(Some("tmpfs"), &src, Some("tmpfs"), noexec, Some("size=16k")).unwrap();
            let root_fd = nix::fcntl::open(
                &root,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .unwrap();
            let mut subjects = super::super::Subjects::default();
            let subject = subjects.add("dst");
            let src_c = std::ffi::CString::new(src.as_os_str().as_encoded_bytes()).unwrap();
            MountOp::BindOnly {
                src: src_c,
                target: std::ffi::CString::from(c"dst"),
                kind: Kind::Dir,
                subject,
            }
            .apply(&root_fd)
            .unwrap();
            MountOp::RemountBind {
                target: std::ffi::CString::from(c"dst"),
                kind: Kind::Dir,
                flags: MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                subject,
            }
            .apply(&root_fd)
            .unwrap();
            let flags = statvfs(&root.join("dst")).unwrap().flags();
            assert!(flags.contains(FsFlags::ST_RDONLY), "{flags:?}");
            assert!(flags.contains(FsFlags::ST_NOEXEC), "noexec lost: {flags:?}");
            // The thread's namespace, and its mounts, go with the thread.
        })
        .join()
        .unwrap();
    }
}
