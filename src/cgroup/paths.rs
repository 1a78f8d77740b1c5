//! Cgroup names (checked before any `mkdir`) and [`CgroupPaths`], the form a task's
//! cgroup takes in `state.json` (docs/state-format.md).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{Error, Result};

/// Where a task's cgroup is, as recorded in `state.json` so that a restarted
/// supervisor can find it again ([`TaskCgroup::from_paths`]).
///
/// Serializes as a plain string for v2 (`"/sys/fs/cgroup/nomad-shim/web.1"`) and as
/// an object controller → path for v1
/// (`{"freezer": "/sys/fs/cgroup/freezer/nomad-shim/web.1", "memory": …}`; with
/// co-mounted controllers, each name maps to the shared directory).
///
/// [`TaskCgroup::from_paths`]: super::TaskCgroup::from_paths
///
/// ```
/// use nomad_shim::CgroupPaths;
///
/// let v2: CgroupPaths = serde_json::from_str(r#""/sys/fs/cgroup/nomad-shim/web.1""#).unwrap();
/// assert_eq!(v2, CgroupPaths::V2("/sys/fs/cgroup/nomad-shim/web.1".into()));
/// let v1: CgroupPaths =
///     serde_json::from_str(r#"{"memory": "/sys/fs/cgroup/memory/nomad-shim/web.1"}"#).unwrap();
/// assert!(matches!(v1, CgroupPaths::V1(ref map) if map.contains_key("memory")));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CgroupPaths {
    /// The task's directory in the unified hierarchy.
    V2(PathBuf),
    /// The task's directory in each v1 hierarchy, by controller name.
    V1(BTreeMap<String, PathBuf>),
}

/// Check a parent cgroup name: a relative path of one or more components
/// (`"nomad-shim"`, `"nomad-shim-test-123/x"`), no `.`/`..`, no empty component.
pub(crate) fn parent_name(name: &str) -> Result<PathBuf> {
    let bad = |reason| Error::InvalidName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.starts_with('/') {
        return Err(bad("must be relative to the cgroup root"));
    }
    for c in name.split('/') {
        component(c).map_err(bad)?;
    }
    Ok(PathBuf::from(name))
}

/// Check a task cgroup name: exactly one path component.
pub(crate) fn task_name(id: &str) -> Result<PathBuf> {
    if id.contains('/') {
        return Err(Error::InvalidName {
            name: id.to_string(),
            reason: "must be a single path component",
        });
    }
    component(id).map_err(|reason| Error::InvalidName {
        name: id.to_string(),
        reason,
    })?;
    Ok(PathBuf::from(id))
}

fn component(c: &str) -> std::result::Result<(), &'static str> {
    match c {
        "" => Err("empty path component"),
        "." | ".." => Err("'.' and '..' are not allowed"),
        _ if c.len() > 255 => Err("path component longer than 255 bytes"),
        _ if c.chars().any(char::is_control) => Err("control characters are not allowed"),
        _ => Ok(()),
    }
}

/// The part of the absolute `path` below `base`, refusing anything that is not a
/// plain, normalized path strictly inside `base` (no `.`, `..`, `//`, symlink games
/// are the kernel's: cgroupfs has no symlinks).
pub(crate) fn relative_to(path: &Path, base: &Path) -> Result<PathBuf> {
    let outside = || Error::OutsideRoot {
        path: path.to_path_buf(),
        root: base.to_path_buf(),
    };
    let s = path.to_str().ok_or_else(outside)?;
    // Path::components() silently drops "." and repeated "/": check the text itself.
    let normal = s.starts_with('/') && s[1..].split('/').all(|c| component(c).is_ok());
    if !normal {
        return Err(outside());
    }
    let rel = path.strip_prefix(base).map_err(|_| outside())?;
    if rel.as_os_str().is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(outside());
    }
    Ok(rel.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(parent_name("nomad-shim").is_ok());
        assert!(parent_name("nomad-shim-test-1/x").is_ok());
        for bad in ["", "/abs", "a/../b", "..", "a//b", "a/", "./a", "a\nb"] {
            assert!(parent_name(bad).is_err(), "{bad:?}");
        }
        assert!(task_name("web.1").is_ok());
        for bad in ["", "a/b", "..", ".", "x\0"] {
            assert!(task_name(bad).is_err(), "{bad:?}");
        }
        let e = parent_name("a/../b").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid cgroup name \"a/../b\": '.' and '..' are not allowed"
        );
    }

    #[test]
    fn relative_to_refuses_escapes() {
        let base = Path::new("/sys/fs/cgroup");
        assert_eq!(
            relative_to(Path::new("/sys/fs/cgroup/nomad-shim/t1"), base).unwrap(),
            PathBuf::from("nomad-shim/t1")
        );
        for bad in [
            "/sys/fs/cgroup",
            "/sys/fs/cgroup/",
            "/sys/fs/cgroup/../../etc",
            "/sys/fs/cgroup/a/../../etc",
            "/sys/fs/cgroup/./a",
            "/sys/fs/cgroup//a",
            "/sys/fs/cgroupX/a",
            "/etc/passwd",
            "sys/fs/cgroup/a",
        ] {
            let e = relative_to(Path::new(bad), base).unwrap_err();
            assert!(matches!(e, Error::OutsideRoot { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn paths_serialize_as_string_or_object() {
        let v2 = CgroupPaths::V2("/sys/fs/cgroup/nomad-shim/web.1".into());
        let s = serde_json::to_string(&v2).unwrap();
        assert_eq!(s, r#""/sys/fs/cgroup/nomad-shim/web.1""#);
        assert_eq!(serde_json::from_str::<CgroupPaths>(&s).unwrap(), v2);

        let v1 = CgroupPaths::V1(BTreeMap::from([
            ("freezer".to_string(), "/sys/fs/cgroup/freezer/n/t".into()),
            ("memory".to_string(), "/sys/fs/cgroup/memory/n/t".into()),
        ]));
        let s = serde_json::to_string(&v1).unwrap();
        assert_eq!(
            s,
            r#"{"freezer":"/sys/fs/cgroup/freezer/n/t","memory":"/sys/fs/cgroup/memory/n/t"}"#
        );
        assert_eq!(serde_json::from_str::<CgroupPaths>(&s).unwrap(), v1);
    }
}
