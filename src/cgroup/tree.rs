//! A task cgroup is a tree: the task may make sub-cgroups of its own
//! (`<task>/foo`, in every v1 hierarchy) and move processes there. Killing the
//! task and removing its cgroup cover that whole subtree:
//!
//! * the processes: the union of `cgroup.procs` of every directory of the subtree
//!   (`cgroup.procs` lists a cgroup's own members only, never its descendants';
//!   cgroups(7));
//! * the removal: `rmdir(2)` of every sub-cgroup deepest first (a cgroup with a
//!   child cgroup cannot be removed: `EBUSY`), then the task's own directory.
//!
//! The task may remove its own sub-cgroups while we walk them (and we remove
//! them ourselves), so every read of a directory or a file here takes `ENOENT`
//! (removed before the open) and `ENODEV` (removed while open: kernfs answers
//! a read of a deleted node so) as "gone, nothing in it".

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::detect::CgroupRoot;
use super::error::{Error, Result};
use super::files;

/// Whether an I/O error means the cgroup (or its file) no longer exists.
pub(crate) fn io_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV)
}

/// Whether a cgroup error is a read, write or open of something that no longer
/// exists (see [`io_gone`]).
pub(crate) fn gone(e: &Error) -> bool {
    match e {
        Error::Read { cause, .. } | Error::Write { cause, .. } | Error::Open { cause, .. } => {
            io_gone(cause)
        }
        _ => false,
    }
}

/// Every cgroup directory of the subtree rooted at `dir`, `dir` first, each
/// parent before its children (pre-order, children sorted by name). A missing
/// `dir` gives an empty list; a sub-cgroup removed during the walk is skipped.
/// Symlinks are not followed (cgroupfs has none; a fixture could).
pub(crate) fn subtree(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    match fs::symlink_metadata(dir) {
        // A directory's link count is 2 + its subdirectories on cgroupfs
        // (kernfs: `subdirs + 2`), tmpfs and ext4: exactly 2 means no
        // sub-cgroup, and the listing is skipped (open, getdents64 twice,
        // close per hierarchy on every kill and removal). A filesystem that
        // reports another count for directories (btrfs: 1) is listed.
        Ok(m) if m.is_dir() && m.nlink() == 2 => out.push(dir.to_path_buf()),
        Ok(m) if m.is_dir() => walk(dir, &mut out),
        _ => {}
    }
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    let Ok(entries) = fs::read_dir(dir) else {
        return; // gone meanwhile (ENOENT/ENODEV): nothing below it either
    };
    let mut children: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    children.sort();
    for c in children {
        walk(&c, out);
    }
}

/// The sub-cgroups of `dir` (not `dir` itself), deepest first: each child
/// before its parent, the order `rmdir(2)` needs.
pub(crate) fn descendants_deepest_first(dir: &Path) -> Vec<PathBuf> {
    let mut all = subtree(dir);
    if !all.is_empty() {
        all.remove(0);
    }
    all.reverse();
    all
}

/// `cgroup.procs` of every directory below (and including) the directory of
/// each file in `procs` (`<task>/cgroup.procs`).
pub(crate) fn expand_procs(procs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in procs {
        match p.parent() {
            Some(dir) if p.file_name().is_some_and(|n| n == "cgroup.procs") => {
                let below = subtree(dir);
                if below.is_empty() {
                    out.push(p.clone()); // missing: read as empty by the caller
                }
                out.extend(below.into_iter().map(|d| d.join("cgroup.procs")));
            }
            _ => out.push(p.clone()),
        }
    }
    out
}

/// `rmdir` every sub-cgroup of `dir`, deepest first, then `dir` itself.
/// Each already gone is fine. All are attempted; the first error is returned.
/// Returns whether `dir` itself was removed by this call.
pub(crate) fn remove_subtree(root: &CgroupRoot, dir: &Path) -> Result<bool> {
    let mut result = Ok(());
    for d in descendants_deepest_first(dir) {
        let r = files::rmdir(root, &d).map(drop);
        result = result.and(r);
    }
    let removed = files::rmdir(root, dir);
    result.and(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk(base: &Path, rels: &[&str]) {
        for r in rels {
            fs::create_dir_all(base.join(r)).unwrap();
            fs::write(base.join(r).join("cgroup.procs"), "").unwrap();
        }
    }

    #[test]
    fn subtree_is_preorder_and_removal_is_deepest_first() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join("task");
        mk(tmp.path(), &["task", "task/b", "task/a/x/y", "task/a/z"]);
        let rel = |v: Vec<PathBuf>| -> Vec<String> {
            v.iter()
                .map(|p| p.strip_prefix(tmp.path()).unwrap().display().to_string())
                .collect()
        };
        assert_eq!(
            rel(subtree(&t)),
            [
                "task",
                "task/a",
                "task/a/x",
                "task/a/x/y",
                "task/a/z",
                "task/b"
            ]
        );
        let order = rel(descendants_deepest_first(&t));
        assert_eq!(
            order,
            ["task/b", "task/a/z", "task/a/x/y", "task/a/x", "task/a"]
        );
        // Every directory comes after all of its descendants.
        for (i, d) in order.iter().enumerate() {
            for later in &order[i + 1..] {
                assert!(!later.starts_with(&format!("{d}/")), "{later} after {d}");
            }
        }
    }

    #[test]
    fn missing_dir_is_an_empty_tree_and_files_are_not_cgroups() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(subtree(&tmp.path().join("nope")).is_empty());
        assert!(descendants_deepest_first(&tmp.path().join("nope")).is_empty());
        mk(tmp.path(), &["t"]);
        fs::write(tmp.path().join("t/memory.max"), "max\n").unwrap();
        std::os::unix::fs::symlink(tmp.path(), tmp.path().join("t/link")).unwrap();
        assert_eq!(subtree(&tmp.path().join("t")), vec![tmp.path().join("t")]);
    }

    #[test]
    fn expand_procs_lists_every_subcgroup() {
        let tmp = tempfile::tempdir().unwrap();
        mk(tmp.path(), &["t", "t/foo/bar"]);
        let got = expand_procs(&[tmp.path().join("t/cgroup.procs")]);
        assert_eq!(
            got,
            vec![
                tmp.path().join("t/cgroup.procs"),
                tmp.path().join("t/foo/cgroup.procs"),
                tmp.path().join("t/foo/bar/cgroup.procs"),
            ]
        );
        // A gone cgroup stays listed once (its read then says "gone").
        let gone = tmp.path().join("gone/cgroup.procs");
        assert_eq!(expand_procs(std::slice::from_ref(&gone)), vec![gone]);
    }

    #[test]
    fn gone_means_enoent_or_enodev_only() {
        let e = |errno| Error::Read {
            path: "/x".into(),
            cause: io::Error::from_raw_os_error(errno),
        };
        assert!(gone(&e(libc::ENOENT)));
        assert!(gone(&e(libc::ENODEV)));
        assert!(!gone(&e(libc::EACCES)));
        assert!(!gone(&Error::Rmdir {
            path: "/x".into(),
            cause: io::Error::from_raw_os_error(libc::ENOENT)
        }));
    }
}
