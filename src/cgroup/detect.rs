//! Which cgroup layout a machine has, found with `statfs(2)` (docs/cgroups.md).

use std::fmt;
use std::path::{Path, PathBuf};

use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, TMPFS_MAGIC};
use serde::{Deserialize, Serialize};

use super::error::{Error, Result};

/// Where the cgroup filesystems are mounted on a normal Linux system.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

/// How the cgroup hierarchies are arranged under the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// The root is a cgroup2 mount: one unified hierarchy with every controller.
    V2,
    /// The root is a tmpfs holding one cgroup v1 mount per controller (or per
    /// co-mounted group, like `cpu,cpuacct`).
    V1,
    /// Like [`Layout::V1`], plus a cgroup2 mount at `<root>/unified` (systemd's
    /// "hybrid" mode). Controllers are still v1's: the v2 mount usually has none,
    /// so the v1 backend is used and `unified` is left alone.
    Hybrid,
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::V2 => "cgroup v2",
            Layout::V1 => "cgroup v1",
            Layout::Hybrid => "cgroup v1 (hybrid)",
        })
    }
}

/// The cgroup root: a directory and its layout. Every operation of this module
/// takes one, so that tests can point it at a directory of fake files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupRoot {
    pub(crate) path: PathBuf,
    pub(crate) layout: Layout,
    /// Test fixtures only: a plain directory stands in for cgroupfs, so `mkdir`
    /// copies the parent's files into the new directory (as the kernel populates a
    /// new cgroup with its control files) and `rmdir` first deletes them.
    pub(crate) fixture: bool,
}

impl CgroupRoot {
    /// Detect the layout at [`DEFAULT_ROOT`].
    pub fn detect() -> Result<Self> {
        Self::detect_at(DEFAULT_ROOT)
    }

    /// Detect the layout of the cgroup root at `path`: cgroup2 there → [`Layout::V2`];
    /// a tmpfs → [`Layout::V1`], or [`Layout::Hybrid`] when `<path>/unified` is
    /// cgroup2; anything else is [`Error::UnknownLayout`].
    pub fn detect_at(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let fs = |p: &Path| {
            statfs(p)
                .map(|s| s.filesystem_type())
                .map_err(|e| Error::Statfs {
                    path: p.to_path_buf(),
                    cause: e.into(),
                })
        };
        let ty = fs(path)?;
        let layout = if ty == CGROUP2_SUPER_MAGIC {
            Layout::V2
        } else if ty == TMPFS_MAGIC {
            let unified = path.join("unified");
            // No `unified` directory (or not a mount of cgroup2 there) is plain v1.
            match statfs(&unified) {
                Ok(s) if s.filesystem_type() == CGROUP2_SUPER_MAGIC => Layout::Hybrid,
                _ => Layout::V1,
            }
        } else {
            return Err(Error::UnknownLayout {
                path: path.to_path_buf(),
            });
        };
        Ok(Self::new(path, layout))
    }

    /// A root at `path` with the given layout, without looking (tests, or callers
    /// that detected the layout themselves). `path` should be absolute.
    pub fn new(path: impl Into<PathBuf>, layout: Layout) -> Self {
        CgroupRoot {
            path: path.into(),
            layout,
            fixture: false,
        }
    }

    /// A root over a plain directory of fake cgroup files (see the `fixture` field).
    #[cfg(test)]
    pub(crate) fn fixture(path: impl Into<PathBuf>, layout: Layout) -> Self {
        CgroupRoot {
            fixture: true,
            ..Self::new(path, layout)
        }
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmpdir_is_not_a_cgroup_root() {
        // /tmp may be a tmpfs (→ V1) or a disk filesystem (→ UnknownLayout):
        // either way it must never be taken for cgroup2.
        let dir = tempfile::tempdir().unwrap();
        match CgroupRoot::detect_at(dir.path()) {
            Ok(root) => assert_ne!(root.layout(), Layout::V2),
            Err(e) => assert!(matches!(e, Error::UnknownLayout { .. }), "{e}"),
        }
    }

    #[test]
    fn missing_root_is_a_statfs_error() {
        let e = CgroupRoot::detect_at("/nonexistent-cgroup-root").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("statfs /nonexistent-cgroup-root: No such file"),
            "{e}"
        );
    }

    #[test]
    fn detects_this_machine() {
        // Whatever the machine is, the real root must be recognised.
        if Path::new(DEFAULT_ROOT).exists() {
            let root = CgroupRoot::detect().unwrap();
            eprintln!("{DEFAULT_ROOT}: {}", root.layout());
        }
    }
}
