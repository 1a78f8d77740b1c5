//! `/proc` and `/sys` as runc's defaults make them: masked and read-only
//! paths in `/proc`, a read-only sysfs with the task's own cgroup at
//! `/sys/fs/cgroup` (runc `libcontainer/specconv` `Example()`, OCI
//! runtime-spec `maskedPaths`/`readonlyPaths`).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use super::{Builder, Kind, MountOp, Source, Step};
use crate::cgroup::CgroupPaths;
use crate::isolate::cstring;
use crate::isolate::error::IsolateError;
use crate::sys::{MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};

/// runc's masked paths: a file gets `/dev/null` bound over it, a directory
/// an empty read-only tmpfs. Whether each is a file or a directory is the
/// kernel's (proc(5), sysfs(5)), the same on every kernel that has it; a
/// path this kernel lacks (`/proc/kcore` without CONFIG_PROC_KCORE,
/// `/proc/sched_debug` since 5.13) is skipped by the child, which finds it
/// absent in its own mount (`MountOp::IfExists`): the supervisor looks at
/// none of them.
const MASKED: &[(&str, Kind)] = &[
    ("proc/kcore", Kind::File),
    ("proc/keys", Kind::File),
    ("proc/timer_list", Kind::File),
    ("proc/sched_debug", Kind::File),
    ("proc/scsi", Kind::Dir),
    ("proc/acpi", Kind::Dir),
    ("proc/latency_stats", Kind::File),
    ("sys/firmware", Kind::Dir),
];

/// runc's read-only paths: bound onto themselves, then remounted read-only.
/// A task holding CAP_SYS_ADMIN can still not write `/proc/sys/kernel/...`
/// (the host's values where the task shares a namespace with the host).
/// Kinds and absent paths as for [`MASKED`].
const READ_ONLY: &[(&str, Kind)] = &[
    ("proc/sys", Kind::Dir),
    ("proc/sysrq-trigger", Kind::File),
    ("proc/irq", Kind::Dir),
    ("proc/bus", Kind::Dir),
    ("proc/fs", Kind::Dir),
];

/// Flags of everything read-only here.
fn ro() -> MsFlags {
    MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC
}

impl Builder<'_> {
    /// After the proc mount: the read-only and masked paths of `/proc`
    /// (each skipped by the child if absent in its proc mount).
    pub(super) fn proc_paths(&mut self) -> Result<(), IsolateError> {
        for &(rel, kind) in READ_ONLY {
            self.optional(|b| b.bind_op(Source::Itself, rel, kind, ro()))?;
        }
        for &(rel, kind) in MASKED.iter().filter(|(r, _)| r.starts_with("proc/")) {
            self.mask(rel, kind)?;
        }
        Ok(())
    }

    /// A read-only sysfs at `/sys` (after the netns join, so it shows the
    /// task's network devices), `/sys/firmware` masked, and the task's own
    /// cgroup, read-only, at `/sys/fs/cgroup`.
    pub(super) fn sys(&mut self, cgroup: Option<&CgroupPaths>) -> Result<(), IsolateError> {
        self.mountpoint("sys", Kind::Dir);
        self.fs(c"sysfs", Step::MountSysfs, "sys", ro(), None)?;
        for &(rel, kind) in MASKED.iter().filter(|(r, _)| r.starts_with("sys/")) {
            self.mask(rel, kind)?;
        }
        match cgroup {
            None => Ok(()),
            // v2: the task's cgroup directory is the whole view.
            Some(CgroupPaths::V2(dir)) => self.bind_op(
                Source::Host(cstring(dir)?),
                "sys/fs/cgroup",
                Kind::Dir,
                ro(),
            ),
            Some(CgroupPaths::V1(map)) => self.cgroup_v1(map),
        }
    }

    /// v1: a small tmpfs at `/sys/fs/cgroup`, in it one directory per
    /// hierarchy (co-mounted controllers share one, `cpu,cpuacct`, with a
    /// symlink per controller, as systemd lays them out) with the task's
    /// directory of that hierarchy bound read-only on it; then the tmpfs
    /// itself becomes read-only.
    fn cgroup_v1(&mut self, map: &BTreeMap<String, PathBuf>) -> Result<(), IsolateError> {
        let base = "sys/fs/cgroup";
        let mut hierarchies: BTreeMap<&Path, Vec<&str>> = BTreeMap::new();
        for (controller, dir) in map {
            hierarchies.entry(dir).or_default().push(controller);
        }
        let fs_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        self.fs(
            c"tmpfs",
            Step::MountTmpfs,
            base,
            fs_flags,
            Some("mode=0755,size=16k"),
        )?;
        // The binds keep the host's (read-write) flags until the one
        // recursive mount_setattr at the end makes the whole tree read-only.
        let mut fallback = Vec::new();
        for (dir, controllers) in &hierarchies {
            let name = controllers.join(",");
            self.mkdir_in(base, &name, 0o755)?;
            let rel = format!("{base}/{name}");
            let subject = self.subjects.add(format!(
                "{} onto {}",
                dir.display(),
                self.task_dir.join(&rel).display()
            ));
            self.ops.push(MountOp::BindOnly {
                src: cstring(dir)?,
                target: cstring(&rel)?,
                kind: Kind::Dir,
                subject,
            });
            fallback.push(MountOp::RemountBind {
                target: cstring(&rel)?,
                kind: Kind::Dir,
                flags: ro(),
                subject,
            });
            if controllers.len() > 1 {
                // The plan outlives every use of the link text; leaking a
                // few bytes once per supervisor keeps MountOp::Symlink's
                // `&'static CStr` (the child must not allocate).
                let to: &'static std::ffi::CStr = Box::leak(cstring(&name)?.into_boxed_c_str());
                for c in controllers {
                    let subject = self.subjects.add(format!(
                        "{} -> {name}",
                        self.task_dir.join(base).join(c).display()
                    ));
                    self.ops.push(MountOp::Symlink {
                        parent: cstring(base)?,
                        name: cstring(c)?,
                        to,
                        subject,
                    });
                }
            }
        }
        let subject = self.subjects.add(self.task_dir.join(base).display());
        fallback.push(MountOp::RemountBind {
            target: cstring(base)?,
            kind: Kind::Dir,
            flags: ro(),
            subject,
        });
        self.ops.push(MountOp::ReadOnlyTree {
            target: cstring(base)?,
            attr: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
            fallback,
            subject,
        });
        Ok(())
    }

    /// `/dev/null` over a file, an empty read-only tmpfs over a directory.
    fn mask(&mut self, rel: &str, kind: Kind) -> Result<(), IsolateError> {
        match kind {
            // A bind only, as runc's: the node keeps the host /dev mount's
            // flags (not nodev: reads must reach /dev/null and return
            // nothing; a write is swallowed by it).
            Kind::File => self.optional(|b| {
                let subject = b
                    .subjects
                    .add(format!("/dev/null onto {}", b.task_dir.join(rel).display()));
                b.ops.push(MountOp::BindOnly {
                    src: CString::from(c"/dev/null"),
                    target: cstring(rel)?,
                    kind: Kind::File,
                    subject,
                });
                Ok(())
            }),
            Kind::Dir => self.optional(|b| b.fs(c"tmpfs", Step::MountTmpfs, rel, ro(), None)),
        }
    }

    /// A bind inside a filesystem the child mounts (no task dir mount
    /// point), described by its target.
    fn bind_op(
        &mut self,
        src: Source,
        rel: &str,
        kind: Kind,
        flags: MsFlags,
    ) -> Result<(), IsolateError> {
        let subject = match &src {
            Source::Host(h) => self.subjects.add(format!(
                "{} onto {}",
                h.to_string_lossy(),
                self.task_dir.join(rel).display()
            )),
            Source::Itself => self.subjects.add(self.task_dir.join(rel).display()),
        };
        self.ops.push(MountOp::Bind {
            src,
            target: cstring(rel)?,
            kind,
            flags,
            subject,
        });
        Ok(())
    }

    /// `mkdirat(parent, name)` inside a filesystem the child mounted.
    fn mkdir_in(&mut self, parent: &str, name: &str, mode: u32) -> Result<(), IsolateError> {
        let subject = self
            .subjects
            .add(self.task_dir.join(parent).join(name).display());
        self.ops.push(MountOp::Mkdir {
            parent: cstring(parent)?,
            name: cstring(name)?,
            mode: nix::sys::stat::Mode::from_bits_truncate(mode),
            subject,
        });
        Ok(())
    }

    /// Runs `add`, then wraps the operation it pushed in
    /// [`MountOp::IfExists`].
    fn optional(
        &mut self,
        add: impl FnOnce(&mut Self) -> Result<(), IsolateError>,
    ) -> Result<(), IsolateError> {
        let n = self.ops.len();
        add(self)?;
        if let (Some(op), true) = (self.ops.pop(), self.ops.len() == n) {
            self.ops.push(MountOp::IfExists(Box::new(op)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isolate::Subjects;

    /// The kinds written down for runc's paths are this kernel's, for each
    /// path it has (a wrong one would fail the child's mount).
    #[test]
    fn the_masked_and_read_only_paths_have_the_kernels_kinds() {
        for &(rel, kind) in MASKED.iter().chain(READ_ONLY) {
            let Ok(md) = std::fs::symlink_metadata(Path::new("/").join(rel)) else {
                continue;
            };
            let host = if md.is_dir() { Kind::Dir } else { Kind::File };
            assert_eq!(host, kind, "/{rel}");
        }
    }

    /// Every one of them is planned whether or not the host has it, each
    /// as an `IfExists` (the child skips what its own mount lacks).
    #[test]
    fn every_runc_path_is_planned_and_skipped_only_by_the_child() {
        let mut subjects = Subjects::default();
        let mut b = Builder::for_test(&mut subjects);
        b.proc_paths().unwrap();
        let proc_paths = MASKED
            .iter()
            .chain(READ_ONLY)
            .filter(|(r, _)| r.starts_with("proc/"));
        assert_eq!(b.ops.len(), proc_paths.count());
        assert!(
            b.ops.iter().all(|op| matches!(op, MountOp::IfExists(_))),
            "{:?}",
            b.ops
        );
    }

    /// v1 with `cpu,cpuacct` co-mounted (one directory for both, as
    /// systemd mounts them): one directory named after both, a symlink per
    /// controller, one bind per hierarchy, and one read-only tree at the end.
    #[test]
    fn v1_view_has_one_bind_per_hierarchy_and_links_for_co_mounts() {
        let mut subjects = Subjects::default();
        let mut b = Builder::for_test(&mut subjects);
        let cpu = PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/p/t1");
        let map = BTreeMap::from([
            ("cpu".to_string(), cpu.clone()),
            ("cpuacct".to_string(), cpu),
            ("memory".to_string(), "/sys/fs/cgroup/memory/p/t1".into()),
        ]);
        b.sys(Some(&CgroupPaths::V1(map))).unwrap();
        assert_eq!(b.mountpoints.len(), 1, "only sys/ in the task dir");
        let mut dirs = Vec::new();
        let mut binds = Vec::new();
        let mut links = Vec::new();
        let mut tree = None;
        for op in &b.ops {
            match op {
                MountOp::Mkdir { parent, name, .. } => {
                    assert_eq!(parent.as_c_str(), c"sys/fs/cgroup");
                    dirs.push(name.to_str().unwrap().to_owned());
                }
                MountOp::BindOnly { src, target, .. } => binds.push((
                    src.to_str().unwrap().to_owned(),
                    target.to_str().unwrap().to_owned(),
                )),
                MountOp::Symlink { name, to, .. } => links.push((
                    name.to_str().unwrap().to_owned(),
                    to.to_str().unwrap().to_owned(),
                )),
                MountOp::ReadOnlyTree {
                    target, fallback, ..
                } => tree = Some((target.clone(), fallback.len())),
                _ => {}
            }
        }
        assert_eq!(dirs, ["cpu,cpuacct", "memory"]);
        assert_eq!(
            binds,
            [
                (
                    "/sys/fs/cgroup/cpu,cpuacct/p/t1".into(),
                    "sys/fs/cgroup/cpu,cpuacct".into()
                ),
                (
                    "/sys/fs/cgroup/memory/p/t1".to_string(),
                    "sys/fs/cgroup/memory".to_string()
                ),
            ]
        );
        assert_eq!(
            links,
            [
                ("cpu".to_string(), "cpu,cpuacct".to_string()),
                ("cpuacct".to_string(), "cpu,cpuacct".to_string())
            ]
        );
        // One mount_setattr for the tree; its fallback remounts the two
        // binds and the tmpfs.
        assert_eq!(tree, Some((CString::from(c"sys/fs/cgroup"), 3)));
        assert!(
            matches!(b.ops.last(), Some(MountOp::ReadOnlyTree { .. })),
            "read-only last"
        );
    }
}
