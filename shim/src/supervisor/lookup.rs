//! Where the task's program is looked for: Nomad's exec driver order.
//!
//! * A bare name (no `/`): the task dir's `local/`, then the task dir, then
//!   each `PATH` entry, in that order like execvp(3). In a chroot the task
//!   dir is `/`, so `/local/NAME`, `/NAME`, then `PATH` inside the root.
//! * Without a chroot, an absolute path that does not exist on the host but
//!   does under the task dir runs from there (`<task_dir>/<path>`), as
//!   Nomad's `lookupTaskBin` does for binaries fetched as artifacts.
//! * Anything else is executed as given.
//!
//! The child tries the candidates in order (`child::steps`): a missing one
//! moves on, a permission error is remembered.

use std::path::{Path, PathBuf};

use nomad_shim::isolate::IsolationSpec;

/// The paths to `execve`, in order, for `program` with the task's `PATH`.
pub fn exec_candidates(program: &str, path_var: &str, iso: &IsolationSpec) -> Vec<PathBuf> {
    if program.contains('/') {
        if let (false, Some(dir), Ok(rel)) = (
            iso.chroot,
            iso.task_dir.as_deref(),
            Path::new(program).strip_prefix("/"),
        ) {
            // symlink_metadata: a dangling link on the host still "exists".
            let under = dir.join(rel);
            if std::fs::symlink_metadata(program).is_err() && under.exists() {
                return vec![under];
            }
        }
        return vec![PathBuf::from(program)];
    }
    let task_root = if iso.chroot {
        Some(Path::new("/"))
    } else {
        iso.task_dir.as_deref()
    };
    let mut c = Vec::new();
    if let Some(root) = task_root {
        c.push(root.join("local").join(program));
        c.push(root.join(program));
    }
    for d in path_var.split(':').filter(|d| !d.is_empty()) {
        c.push(Path::new(d).join(program));
    }
    if c.is_empty() {
        c.push(PathBuf::from(program));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso(chroot: bool, task_dir: Option<&Path>) -> IsolationSpec {
        IsolationSpec {
            chroot,
            task_dir: task_dir.map(Path::to_path_buf),
            ..IsolationSpec::default()
        }
    }

    fn strs(v: Vec<PathBuf>) -> Vec<String> {
        v.into_iter().map(|p| p.display().to_string()).collect()
    }

    #[test]
    fn bare_names_look_in_local_then_the_task_dir_then_path() {
        let td = Path::new("/srv/t1");
        assert_eq!(
            strs(exec_candidates(
                "hello",
                "/usr/bin:/bin",
                &iso(false, Some(td))
            )),
            [
                "/srv/t1/local/hello",
                "/srv/t1/hello",
                "/usr/bin/hello",
                "/bin/hello"
            ]
        );
        assert_eq!(
            strs(exec_candidates("hello", "/usr/bin", &iso(true, Some(td)))),
            ["/local/hello", "/hello", "/usr/bin/hello"]
        );
        assert_eq!(
            strs(exec_candidates("hello", "/usr/bin::", &iso(false, None))),
            ["/usr/bin/hello"]
        );
        assert_eq!(
            strs(exec_candidates("hello", "", &iso(false, None))),
            ["hello"]
        );
    }

    #[test]
    fn a_missing_absolute_path_runs_from_the_task_dir_without_chroot() {
        let tmp = tempfile::tempdir().unwrap();
        let td = tmp.path();
        std::fs::create_dir_all(td.join("opt/app")).unwrap();
        std::fs::write(td.join("opt/app/run"), b"").unwrap();
        let want = td.join("opt/app/run").display().to_string();
        assert_eq!(
            strs(exec_candidates("/opt/app/run", "", &iso(false, Some(td)))),
            [want]
        );
        // Present on the host: the host's. In a chroot: as given.
        assert_eq!(
            strs(exec_candidates("/bin/sh", "", &iso(false, Some(td)))),
            ["/bin/sh"]
        );
        assert_eq!(
            strs(exec_candidates("/opt/app/run", "", &iso(true, Some(td)))),
            ["/opt/app/run"]
        );
        // Missing everywhere: as given (the exec error names it).
        assert_eq!(
            strs(exec_candidates("/opt/none", "", &iso(false, Some(td)))),
            ["/opt/none"]
        );
    }
}
