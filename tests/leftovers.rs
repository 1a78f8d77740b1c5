//! What a test leaves behind, scoped by its own names: mounts below its
//! directory, cgroups below its cgroup parent (every hierarchy), processes in
//! those cgroups or whose command line names its directory, and files. Only
//! listed, never killed or removed here (the tests' guards clean up; these
//! checks say whether the code under test did).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common;

/// Every cgroup root this machine has: `/sys/fs/cgroup` (v2) and, on v1,
/// each hierarchy mounted below it.
fn cgroup_roots() -> Vec<PathBuf> {
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        roots.extend(
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.join("cgroup.procs").exists()),
        );
    }
    roots
}

/// The cgroup directories below `parent` (not `parent` itself), in every
/// hierarchy.
pub fn cgroups_below(parent: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for root in cgroup_roots() {
        let p = root.join(parent);
        if let Ok(entries) = std::fs::read_dir(&p) {
            out.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    out
}

/// Live processes (pid, comm) that are in a cgroup below `parent` or whose
/// command line contains `needle` (a test's own directory).
pub fn processes(parent: &str, needle: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let in_parent = format!("/{parent}/");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me || !common::alive(pid) {
            continue;
        }
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cgroup.contains(&in_parent) || cmdline.contains(needle) {
            out.push((pid, cmdline));
        }
    }
    out
}

/// Mount points strictly below `dir`, from this process's mount table.
pub fn mounts_below(dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&prefix)))
        .map(str::to_owned)
        .collect()
}

/// Every path below `dir` (not following symlinks).
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        out.push(e.path());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(files_below(&e.path()));
        }
    }
    out
}

/// Asserts that, once the processes have had `settle` to go, nothing of a
/// run is left: no process, cgroup or mount of its, and no file in its
/// state `root`.
pub fn assert_none(parent: &str, dir: &Path, root: &Path, settle: Duration) {
    let needle = dir.to_string_lossy().into_owned();
    common::eventually(settle, || processes(parent, &needle).is_empty());
    let procs = processes(parent, &needle);
    let cgroups = cgroups_below(parent);
    let mounts = mounts_below(dir);
    let files = files_below(root);
    assert!(
        procs.is_empty() && cgroups.is_empty() && mounts.is_empty() && files.is_empty(),
        "left behind: processes {procs:?}, cgroups {cgroups:?}, mounts {mounts:?}, files {files:?}"
    );
}

/// A tmpfs mounted on a fresh temporary directory, unmounted (with whatever
/// is mounted below it) and removed on drop, also when the test fails.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn new(prefix: &str, size: &str) -> Tmpfs {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        let opts = format!("size={size},mode=0755");
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        )
        .unwrap_or_else(|e| panic!("mount a tmpfs on {}: {e}", dir.path().display()));
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A cgroup parent named after this directory: unique per test and run.
    pub fn cgroup_parent(&self) -> String {
        let name = self.path().file_name().unwrap().to_string_lossy();
        format!("{}{}", name.replace('.', "-"), common::run_tag())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // MNT_DETACH takes the mounts below it (a task's secrets/) too.
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Removes a cgroup parent of a test's own on drop (each hierarchy, only
/// if empty: what a failed test left is reported, not hidden).
pub struct CgroupParent(pub String);

impl Drop for CgroupParent {
    fn drop(&mut self) {
        common::remove_cgroup_parent(&self.0);
    }
}
