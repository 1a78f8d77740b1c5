//! The task's root: planned in `prepare` (mount list, mount points), built
//! and entered in the child (bind the task dir onto itself, mount into it,
//! `pivot_root(".", ".")`, detach the old root).

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::mount::{umount2, MntFlags, MsFlags};
use nix::sys::stat::{stat, Mode};
use nix::sys::statvfs::{statvfs, FsFlags};
use nix::unistd::{chdir, fchdir, pivot_root, Gid, Uid};

use super::error::IsolateError;
use super::mounts::{mount_at, open_beneath, FdPath, MountOp, Source};
use super::spec::{relative_dst, IsolationSpec};
use super::taskdir::{Kind, MountPoint};
use super::DeviceSpec;
use super::{cstring, Subjects};
use crate::cgroup::CgroupPaths;
use crate::step::{Step, StepError, SubjectId};
use crate::sys::{MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};

mod etc_files;
mod kernel_fs;
mod volumes;

pub(crate) use etc_files::write_resolv_conf;

/// Device nodes of the new `/dev`, made with mknod(2) (the child still
/// holds CAP_MKNOD, the new `/dev` is not nodev). Their numbers are the
/// kernel's, fixed for every Linux (Documentation/admin-guide/devices.txt),
/// and exactly those the device controller allows
/// (`cgroup::devices`, as runc's defaults), so nothing on the host is
/// looked at.
pub(crate) const DEVICES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Symlinks of a minimal `/dev` (as runc and bwrap make them).
const DEV_LINKS: &[(&std::ffi::CStr, &std::ffi::CStr)] = &[
    (c"ptmx", c"pts/ptmx"),
    (c"fd", c"/proc/self/fd"),
    (c"stdin", c"/proc/self/fd/0"),
    (c"stdout", c"/proc/self/fd/1"),
    (c"stderr", c"/proc/self/fd/2"),
];

/// Everything the child does to build and enter its root.
#[derive(Debug)]
pub(crate) struct RootPlan {
    /// Inode of the supervisor's mount namespace: the child refuses to do
    /// mount work if it is still in it.
    host_mntns: u64,
    /// The task dir, absolute.
    root: CString,
    /// For error messages about the root itself.
    subject: SubjectId,
    /// The mounts, in order.
    ops: Vec<MountOp>,
    /// `<task_dir>/secrets`, where the supervisor mounted the secrets tmpfs
    /// on the host.
    secrets: (CString, SubjectId),
}

/// Plans the root for `spec` (chroot is set, so is `task_dir`) and returns
/// the mount points [`super::taskdir::build`] must create.
pub(crate) fn plan(
    spec: &IsolationSpec,
    _owner: (Uid, Gid),
    host_mntns: u64,
    subjects: &mut Subjects,
    cgroup: Option<&CgroupPaths>,
    state_dir: &Path,
) -> Result<(RootPlan, Vec<MountPoint>), IsolateError> {
    let task_dir = spec
        .task_dir
        .as_deref()
        .ok_or(IsolateError::ChrootWithoutTaskDir)?;
    let mut b = Builder {
        task_dir,
        subjects,
        ops: Vec::new(),
        mountpoints: Vec::new(),
    };
    // The chroot environment: read-only, nosuid, nodev binds of host paths.
    let first = b.ops.len();
    let env = spec.effective_chroot_env();
    for bind in &env {
        let kind = source_kind(&bind.src).map_err(for_option("--chroot-env "))?;
        // Made read-only by the ReadOnlyTree below, which leaves a noexec
        // source noexec; its fallback's remount keeps it too.
        let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        b.bind(
            Source::Host(cstring(&bind.src)?),
            &relative_dst(&bind.dst),
            kind,
            flags,
            Some(&bind.src),
        )?;
    }
    // /etc/resolv.conf and /etc/hosts: the host's, or the task's resolv.conf.
    b.etc_files(spec, &env, state_dir)?;
    // Then the root and those binds become read-only in one call; what is
    // mounted from here on keeps its own flags.
    let subject = b.subjects.add(task_dir.display());
    b.read_only_root(first, subject);
    // The task's writable dirs: their own mounts, so that they stay
    // writable when the root is remounted read-only at the end.
    let rw = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    for dir in ["local", "tmp"] {
        b.bind(Source::Itself, Path::new(dir), Kind::Dir, rw, None)?;
    }
    match &spec.alloc_dir {
        Some(alloc) => {
            if source_kind(alloc)? != Kind::Dir {
                return Err(IsolateError::UnsupportedSource {
                    path: alloc.clone(),
                });
            }
            b.bind(
                Source::Host(cstring(alloc)?),
                Path::new("alloc"),
                Kind::Dir,
                rw,
                Some(alloc),
            )?
        }
        None => b.bind(Source::Itself, Path::new("alloc"), Kind::Dir, rw, None)?,
    }
    // Secrets: the supervisor mounted a small tmpfs on the host at
    // <task_dir>/secrets (see `secrets`); build_and_pivot binds it in.
    let noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let secrets_path = task_dir.join("secrets");
    let secrets = (
        cstring(&secrets_path)?,
        b.subjects.add(format!(
            "{} onto {}",
            secrets_path.display(),
            secrets_path.display()
        )),
    );
    // Host mounts, once the task dirs they may lie in are mounted.
    b.volumes(spec)?;
    b.dev(&spec.devices)?;
    // A fresh proc: of the task's pid namespace when it has one (proc(5):
    // a proc mount shows the pid namespace of the process that mounted it).
    b.mountpoint("proc", Kind::Dir);
    b.fs(c"proc", Step::MountProc, "proc", noexec, None)?;
    // runc's masked and read-only paths, then a read-only /sys.
    b.proc_paths()?;
    b.sys(cgroup)?;
    let (ops, mountpoints) = (b.ops, b.mountpoints);
    Ok((
        RootPlan {
            host_mntns,
            root: cstring(task_dir)?,
            subject,
            ops,
            secrets,
        },
        mountpoints,
    ))
}

/// Accumulates mount operations and the mount points they need.
struct Builder<'a> {
    task_dir: &'a Path,
    subjects: &'a mut Subjects,
    ops: Vec<MountOp>,
    mountpoints: Vec<MountPoint>,
}

impl<'a> Builder<'a> {
    /// An empty builder for `/srv/t1`, for unit tests.
    #[cfg(test)]
    fn for_test(subjects: &'a mut Subjects) -> Builder<'a> {
        Builder {
            task_dir: Path::new("/srv/t1"),
            subjects,
            ops: Vec::new(),
            mountpoints: Vec::new(),
        }
    }

    fn mountpoint(&mut self, rel: &str, kind: Kind) {
        self.mountpoints.push(MountPoint {
            rel: PathBuf::from(rel),
            kind,
        });
    }

    fn bind(
        &mut self,
        src: Source,
        rel: &Path,
        kind: Kind,
        flags: MsFlags,
        host: Option<&Path>,
    ) -> Result<(), IsolateError> {
        let target = self.task_dir.join(rel);
        let subject = match host {
            Some(h) => self
                .subjects
                .add(format!("{} onto {}", h.display(), target.display())),
            None => self.subjects.add(target.display()),
        };
        // Mount points inside a filesystem the child mounts (dev/...) are
        // created by the child; the others by taskdir::build.
        if !rel.starts_with("dev") {
            self.mountpoints.push(MountPoint {
                rel: rel.to_path_buf(),
                kind,
            });
        }
        self.ops.push(MountOp::Bind {
            src,
            target: cstring(rel)?,
            kind,
            flags,
            subject,
        });
        Ok(())
    }

    fn fs(
        &mut self,
        fstype: &'static std::ffi::CStr,
        step: Step,
        rel: &str,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), IsolateError> {
        let subject = self.subjects.add(self.task_dir.join(rel).display());
        let data = data.map(cstring).transpose()?;
        self.ops.push(MountOp::Fs {
            fstype,
            step,
            target: cstring(rel)?,
            flags,
            data,
            subject,
        });
        Ok(())
    }

    /// A minimal `/dev`: tmpfs, device binds, a new devpts instance, shm,
    /// and the usual symlinks.
    fn dev(&mut self, passed: &[DeviceSpec]) -> Result<(), IsolateError> {
        self.mountpoint("dev", Kind::Dir);
        let devfs = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
        self.fs(
            c"tmpfs",
            Step::MountTmpfs,
            "dev",
            devfs,
            Some("mode=0755,size=64k"),
        )?;
        let mut nodes = Vec::with_capacity(DEVICES.len());
        for &(name, major, minor) in DEVICES {
            let subject = self
                .subjects
                .add(self.task_dir.join("dev").join(name).display());
            nodes.push((cstring(name)?, libc::makedev(major, minor), subject));
        }
        self.ops.push(MountOp::Nodes {
            parent: cstring("dev")?,
            nodes,
        });
        self.passed_devices(passed, devfs)?;
        // A new devpts instance: the task's ptys are its own, invisible to
        // the host's (devpts "newinstance", Documentation/filesystems/devpts).
        self.mkdir("pts", 0o755)?;
        let pts = "newinstance,ptmxmode=0666,mode=0620,gid=5";
        self.fs(c"devpts", Step::MountDevpts, "dev/pts", devfs, Some(pts))?;
        self.mkdir("shm", 0o1777)?;
        let shm = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        self.fs(
            c"tmpfs",
            Step::MountTmpfs,
            "dev/shm",
            shm,
            Some("mode=1777,size=65536k"),
        )?;
        for (name, to) in DEV_LINKS {
            let subject = self.subjects.add(format!(
                "{} -> {}",
                self.task_dir
                    .join("dev")
                    .join(name.to_string_lossy().as_ref())
                    .display(),
                to.to_string_lossy()
            ));
            let name = CString::from(*name);
            self.ops.push(MountOp::Symlink {
                parent: cstring("dev")?,
                name,
                to,
                subject,
            });
        }
        Ok(())
    }

    /// Devices passed through: each host node bound onto an empty file at
    /// its task path, directories on the way made in the new `/dev` (once).
    fn passed_devices(
        &mut self,
        passed: &[DeviceSpec],
        flags: MsFlags,
    ) -> Result<(), IsolateError> {
        let mut made: Vec<PathBuf> = Vec::new();
        for d in passed {
            let rel = d
                .dev_relative()
                .ok_or_else(|| IsolateError::InvalidDevice {
                    device: d.host_path.display().to_string(),
                    reason: "the task path must be under /dev",
                })?;
            let dir = Path::new("dev").join(rel.parent().unwrap_or(Path::new("")));
            let mut at = PathBuf::from("dev");
            for c in dir.components().skip(1) {
                let next = at.join(c);
                if !made.contains(&next) {
                    let subject = self.subjects.add(self.task_dir.join(&next).display());
                    self.ops.push(MountOp::Mkdir {
                        parent: cstring(&at)?,
                        name: cstring(c)?,
                        mode: Mode::from_bits_truncate(0o755),
                        subject,
                    });
                    made.push(next.clone());
                }
                at = next;
            }
            let name = rel.file_name().unwrap_or_default();
            let subject = self
                .subjects
                .add(self.task_dir.join(&dir).join(name).display());
            self.ops.push(MountOp::Touch {
                parent: cstring(&dir)?,
                name: cstring(name)?,
                subject,
            });
            // The node itself, its links resolved: a link (`/dev/stdin`,
            // `by-path/...`) is not followed the same way in the child.
            let (node, _, _) = d.host_node()?;
            self.bind(
                Source::Host(cstring(&node)?),
                &dir.join(name),
                Kind::File,
                flags,
                Some(&d.host_path),
            )?;
        }
        Ok(())
    }

    /// The binds from `ops[first..]` (the chroot env's and `/etc`'s, all
    /// read-only) are made without their remount, and one
    /// `mount_setattr(AT_RECURSIVE)` of the root makes the root and all of
    /// them read-only, nosuid, nodev (a mount keeps its source's other
    /// flags, `noexec` included). The fallback, for a kernel without
    /// mount_setattr, is the remount of each and of the root.
    fn read_only_root(&mut self, first: usize, subject: SubjectId) {
        let ro = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        let mut fallback = Vec::new();
        for op in &mut self.ops[first..] {
            let MountOp::Bind {
                src: Source::Host(src),
                target,
                kind,
                flags,
                subject,
            } = op
            else {
                continue;
            };
            fallback.push(MountOp::RemountBind {
                target: target.clone(),
                kind: *kind,
                flags: *flags,
                subject: *subject,
            });
            *op = MountOp::BindOnly {
                src: std::mem::take(src),
                target: std::mem::take(target),
                kind: *kind,
                subject: *subject,
            };
        }
        fallback.push(MountOp::RemountBind {
            target: CString::from(c"."),
            kind: Kind::Dir,
            flags: ro,
            subject,
        });
        self.ops.push(MountOp::ReadOnlyTree {
            target: CString::from(c"."),
            attr: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
            fallback,
            subject,
        });
    }

    fn mkdir(&mut self, name: &str, mode: u32) -> Result<(), IsolateError> {
        let subject = self
            .subjects
            .add(self.task_dir.join("dev").join(name).display());
        self.ops.push(MountOp::Mkdir {
            parent: cstring("dev")?,
            name: cstring(name)?,
            mode: Mode::from_bits_truncate(mode),
            subject,
        });
        Ok(())
    }
}

/// A bind source must be a directory or a regular file (after symlinks:
/// the host's `/bin -> usr/bin` binds `/usr/bin`).
fn source_kind(src: &Path) -> Result<Kind, IsolateError> {
    let md = std::fs::metadata(src).map_err(|source| IsolateError::StatSource {
        path: src.to_path_buf(),
        source,
    })?;
    if md.is_dir() {
        Ok(Kind::Dir)
    } else if md.is_file() {
        Ok(Kind::File)
    } else {
        Err(IsolateError::UnsupportedSource {
            path: src.to_path_buf(),
        })
    }
}

/// Names the option a [`source_kind`] error came from.
fn for_option(option: &'static str) -> impl Fn(IsolateError) -> IsolateError {
    move |e| match e {
        IsolateError::StatSource { path, source } => IsolateError::OptionSource {
            option,
            path,
            source,
        },
        other => other,
    }
}

/// `MS_NOEXEC` if the source's mount has it: the remount sets the flags of
/// the new mount, and must not make a noexec host filesystem executable.
fn keep_noexec(src: &Path) -> MsFlags {
    match statvfs(src) {
        Ok(st) if st.flags().contains(FsFlags::ST_NOEXEC) => MsFlags::MS_NOEXEC,
        _ => MsFlags::empty(),
    }
}

impl RootPlan {
    /// Child: builds the root in the task dir and pivots into it; on return
    /// the cwd and root are the task dir, and the host's tree is detached.
    pub(crate) fn build_and_pivot(&self) -> Result<(), StepError> {
        let on_root = |step| StepError::with_on(step, self.subject);
        // Refuse to touch the supervisor's mount table: all mount work below
        // must happen in the mount namespace the clone created.
        let ns = stat(c"/proc/self/ns/mnt").map_err(StepError::with(Step::CheckMountNamespace))?;
        if ns.st_ino == self.host_mntns {
            return Err(StepError::new(
                Step::CheckMountNamespace,
                nix::errno::Errno::EINVAL,
            ));
        }
        // Stop propagation both ways: the new namespace's mounts are peers of
        // the host's until made private (mount_namespaces(7)), and
        // pivot_root(2) refuses a shared parent mount.
        mount_at(
            None,
            c"/",
            None,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None,
        )
        .map_err(StepError::with(Step::MakePrivate))?;
        // The secrets tmpfs (our namespace's copy of the supervisor's host
        // mount), opened now: the bind below hides it from every path.
        let (secrets_path, secrets_subject) = &self.secrets;
        let secrets = open_root(secrets_path)
            .map_err(StepError::with_on(Step::OpenMountPoint, *secrets_subject))?;
        // pivot_root(2): "new_root must be a path to a mount point": bind
        // the task dir onto itself (not MS_REC: no host submounts come along).
        let dir = open_root(&self.root).map_err(on_root(Step::OpenRoot))?;
        let dir_path = FdPath::new(&dir);
        mount_at(
            Some(dir_path.as_cstr()),
            dir_path.as_cstr(),
            None,
            MsFlags::MS_BIND,
            None,
        )
        .map_err(on_root(Step::BindRoot))?;
        drop(dir);
        // Reopen: the old fd names the directory under the new mount.
        let root = open_root(&self.root).map_err(on_root(Step::OpenRoot))?;
        for op in &self.ops {
            op.apply(&root)?;
        }
        bind_secrets(&root, &secrets, *secrets_subject)?;
        drop(secrets);
        // The root itself became read-only with the chroot env's binds
        // (see `read_only_root`): what is not mounted over is read-only.
        fchdir(&root).map_err(on_root(Step::ChdirNewRoot))?;
        // pivot_root(2) NOTES: "new_root and put_old may be the same
        // directory": the old root is stacked on top of the new one at "/",
        // and the umount2 of "." that follows detaches exactly it. No
        // temporary directory, nothing of the host left reachable.
        pivot_root(c".", c".").map_err(on_root(Step::PivotRoot))?;
        // MNT_DETACH: host mounts still busy (our own open fds) go lazily;
        // propagation is private, so the host's mount table is untouched.
        umount2(c".", MntFlags::MNT_DETACH).map_err(StepError::with(Step::DetachOldRoot))?;
        chdir(c"/").map_err(StepError::with(Step::ChdirRoot))
    }
}

/// Binds the secrets tmpfs (`src`, opened before the root's bind) onto
/// `secrets` of the new root. No remount: a bind copies its source mount's
/// per-mount flags, and the supervisor mounted the tmpfs `nosuid,nodev,
/// noexec` (`secrets::mount_secrets`).
fn bind_secrets(root: &OwnedFd, src: &OwnedFd, subject: SubjectId) -> Result<(), StepError> {
    let target = open_beneath(root, c"secrets", Kind::Dir)
        .map_err(StepError::with_on(Step::OpenMountPoint, subject))?;
    let src = FdPath::new(src);
    mount_at(
        Some(src.as_cstr()),
        FdPath::new(&target).as_cstr(),
        None,
        MsFlags::MS_BIND,
        None,
    )
    .map_err(StepError::with_on(Step::BindMount, subject))
}

/// `open(O_PATH|O_DIRECTORY|O_NOFOLLOW)` of the task dir.
fn open_root(root: &CString) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    open(root.as_c_str(), flags, Mode::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers the new `/dev` is made with are this host's (its nodes
    /// are the kernel's standard ones), and each is allowed by the device
    /// controller's default rules.
    #[test]
    fn the_dev_nodes_have_the_kernels_numbers_and_are_allowed() {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let rules = crate::cgroup::default_rules();
        for &(name, major, minor) in DEVICES {
            let host = Path::new("/dev").join(name);
            if let Ok(md) = std::fs::metadata(&host) {
                if md.file_type().is_char_device() {
                    assert_eq!(
                        (libc::major(md.rdev()), libc::minor(md.rdev())),
                        (major, minor),
                        "{}",
                        host.display()
                    );
                }
            }
            let rw = crate::cgroup::Access::ALL;
            assert!(
                rules.contains(&crate::cgroup::DeviceRule::allow_char(
                    Some(major),
                    Some(minor),
                    rw
                )),
                "c {major}:{minor} ({name}) is not allowed by the default rules"
            );
        }
    }

    /// The chroot env's binds lose their own remount; one recursive
    /// mount_setattr of the root follows them, and its fallback (before
    /// Linux 5.12) remounts each bind with its own flags, then the root.
    #[test]
    fn the_env_binds_become_read_only_with_the_root_in_one_step() {
        let mut subjects = Subjects::default();
        let mut b = Builder::for_test(&mut subjects);
        // Something before the env (not converted), then two env binds.
        b.bind(
            Source::Itself,
            Path::new("early"),
            Kind::Dir,
            MsFlags::empty(),
            None,
        )
        .unwrap();
        let first = b.ops.len();
        let ro = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        let src = |p: &str| Source::Host(CString::new(p).unwrap());
        b.bind(
            src("/usr"),
            Path::new("usr"),
            Kind::Dir,
            ro,
            Some(Path::new("/usr")),
        )
        .unwrap();
        let noexec = ro | MsFlags::MS_NOEXEC;
        let etc = Path::new("/etc/hosts");
        b.bind(
            src("/etc/hosts"),
            Path::new("etc/hosts"),
            Kind::File,
            noexec,
            Some(etc),
        )
        .unwrap();
        let root = b.subjects.add("/srv/t1");
        b.read_only_root(first, root);
        assert!(matches!(&b.ops[0], MountOp::Bind { .. }), "before the env");
        match (&b.ops[1], &b.ops[2]) {
            (
                MountOp::BindOnly {
                    src: a,
                    target: ta,
                    kind: Kind::Dir,
                    ..
                },
                MountOp::BindOnly {
                    src: c,
                    target: tc,
                    kind: Kind::File,
                    ..
                },
            ) => {
                assert_eq!((a.as_c_str(), ta.as_c_str()), (c"/usr", c"usr"));
                assert_eq!((c.as_c_str(), tc.as_c_str()), (c"/etc/hosts", c"etc/hosts"));
            }
            other => panic!("not two binds without remount: {other:?}"),
        }
        let Some(MountOp::ReadOnlyTree {
            target,
            attr,
            fallback,
            ..
        }) = b.ops.get(3)
        else {
            panic!("no read-only tree after the binds: {:?}", b.ops);
        };
        assert_eq!(target.as_c_str(), c".");
        assert_eq!(
            *attr,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
        );
        let remounts: Vec<_> = fallback
            .iter()
            .map(|op| match op {
                MountOp::RemountBind {
                    target,
                    kind,
                    flags,
                    ..
                } => (target.to_str().unwrap().to_string(), *kind, *flags),
                other => panic!("fallback is not a remount: {other:?}"),
            })
            .collect();
        assert_eq!(
            remounts,
            [
                ("usr".to_string(), Kind::Dir, ro),
                ("etc/hosts".to_string(), Kind::File, noexec),
                (".".to_string(), Kind::Dir, ro),
            ]
        );
        assert_eq!(b.ops.len(), 4);
    }
}
