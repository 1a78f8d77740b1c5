//! Device passthrough: a host device node given to the task (a GPU's
//! `/dev/nvidiactl`, `/dev/nvidia0`, ...).
//!
//! A [`DeviceSpec`] does two things:
//!
//! * with a chroot, the host node is bound into the task's `/dev` at its task
//!   path (like the default nodes, in `rootfs.rs`); without one the task
//!   sees the host's `/dev`, so the task path must be the host path;
//! * the device controller allows exactly its type and `major:minor`, with
//!   the access asked for ([`device_rules`]: runc's defaults plus one allow
//!   rule per device).
//!
//! The host path is resolved and `stat`ed before anything of the task
//! exists, before its task path is looked at: it must be a char or block
//! device ([`IsolateError::NotADevice`]). Its symlinks are resolved here
//! (`/dev/dri/by-path/...` lead to `/dev/dri/card0`), and the node they
//! lead to is what is bound; a link through `/proc` (`/dev/stdin` is
//! `/proc/self/fd/0`: a descriptor of whoever opens it, not a node) is
//! refused ([`IsolateError::DeviceThroughProc`]).

use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::IsolateError;
use super::spec::IsolationSpec;
use crate::cgroup::{default_rules, Access, DeviceKind, DeviceRule};

/// Names the task's `/dev` already has (`rootfs.rs`): a passed device may
/// not take their place.
const DEV_RESERVED: &[&str] = &[
    "null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx", "fd", "stdin",
    "stdout", "stderr",
];

/// A host device node passed through to the task
/// (`--device HOST_PATH[:TASK_PATH][:rwm]`).
///
/// # Examples
///
/// ```
/// use nomad_shim::{DeviceSpec, IsolationSpec};
///
/// # fn main() -> Result<(), nomad_shim::IsolateError> {
/// // As the CLI's --device takes it: HOST_PATH[:TASK_PATH][:rwm].
/// let fuse = DeviceSpec::parse("/dev/fuse:rw")?;
/// assert_eq!(fuse.task_path(), std::path::Path::new("/dev/fuse"));
/// let isolation = IsolationSpec { devices: vec![fuse], ..IsolationSpec::default() };
/// # let _ = isolation;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSpec {
    /// The host's node, e.g. `/dev/nvidia0`: a char or block device.
    pub host_path: PathBuf,
    /// Where the task sees it (under `/dev`); `None` is `host_path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_path: Option<PathBuf>,
    /// Any of `r`, `w`, `m` (read, write, mknod); default `rwm`.
    #[serde(default = "rwm")]
    pub access: String,
}

fn rwm() -> String {
    "rwm".to_string()
}

impl DeviceSpec {
    /// `HOST_PATH[:TASK_PATH][:rwm]`: `/dev/kmsg`, `/dev/kmsg:r`,
    /// `/dev/zero:/dev/zero2`, `/dev/fuse:/dev/fuse:rw`. A second part
    /// without a `/` is the access.
    pub fn parse(s: &str) -> Result<DeviceSpec, IsolateError> {
        let bad = || IsolateError::InvalidDevice {
            device: s.to_string(),
            reason: "is not HOST_PATH[:TASK_PATH][:rwm]",
        };
        let parts: Vec<&str> = s.split(':').collect();
        // A second part with a `/` is a task path (a relative one, `dev/x`,
        // is refused as that by `validate`); else it is the access.
        let (host, task, access) = match parts[..] {
            [host] => (host, None, None),
            [host, second] if second.contains('/') => (host, Some(second), None),
            [host, access] => (host, None, Some(access)),
            [host, task, access] => (host, Some(task), Some(access)),
            _ => return Err(bad()),
        };
        if host.is_empty() || task.is_some_and(str::is_empty) {
            return Err(bad());
        }
        let spec = DeviceSpec {
            host_path: host.into(),
            task_path: task.map(PathBuf::from),
            access: access.map_or_else(rwm, str::to_string),
        };
        spec.access()?;
        Ok(spec)
    }

    /// Where the task sees the node.
    pub fn task_path(&self) -> &Path {
        self.task_path.as_deref().unwrap_or(&self.host_path)
    }

    /// The access bits.
    #[doc(hidden)]
    pub fn access(&self) -> Result<Access, IsolateError> {
        Access::parse(&self.access).ok_or_else(|| IsolateError::InvalidDevice {
            device: self.host_path.display().to_string(),
            reason: "access must be one or more of r, w, m",
        })
    }

    /// Checks: the host path absolute, without `..`, and a device node (so
    /// that a wrong host path is named as that, whatever the task path);
    /// the task path absolute, without `..`; with a chroot, strictly under
    /// `/dev` and not replacing a node the task's `/dev` already has;
    /// without one, the host path.
    pub(crate) fn validate(&self, chroot: bool) -> Result<(), IsolateError> {
        self.access()?;
        let bad = |reason| IsolateError::InvalidDevice {
            device: self.host_path.display().to_string(),
            reason,
        };
        let clean =
            |p: &Path| p.is_absolute() && !p.components().any(|c| c == Component::ParentDir);
        if !clean(&self.host_path) {
            return Err(bad("the host path must be absolute, without '..'"));
        }
        self.host_node()?;
        if !clean(self.task_path()) {
            return Err(bad(
                "the task path must be absolute, under /dev (e.g. /dev/x), without '..'",
            ));
        }
        if !chroot {
            if self.task_path() != self.host_path {
                return Err(bad(
                    "a task path needs --chroot (without it the task sees the host's /dev)",
                ));
            }
            return Ok(());
        }
        let rel = self
            .dev_relative()
            .ok_or_else(|| bad("the task path must be under /dev"))?;
        let first = rel.components().next().map(|c| c.as_os_str().to_owned());
        if first.is_some_and(|f| DEV_RESERVED.iter().any(|r| f == *r)) {
            return Err(bad("the task's /dev already has this path"));
        }
        Ok(())
    }

    /// The task path below `/dev` (`nvidia0`, `dri/card0`), if it is there.
    pub(crate) fn dev_relative(&self) -> Option<PathBuf> {
        let rel: PathBuf = self
            .task_path()
            .strip_prefix("/dev")
            .ok()?
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        (!rel.as_os_str().is_empty()).then_some(rel)
    }

    /// The host node: the host path with its symlinks resolved (as
    /// `/dev/dri/by-path/...` are), refusing a way through `/proc`, and its
    /// kind. What is bound into the task's `/dev`.
    pub(crate) fn host_node(&self) -> Result<(PathBuf, DeviceKind, u64), IsolateError> {
        let stat_err = |source| IsolateError::StatDevice {
            path: self.host_path.clone(),
            source,
        };
        let not_a_device = || IsolateError::NotADevice {
            path: self.host_path.clone(),
        };
        let mut p = self.host_path.clone();
        // As path_resolution(7): at most 40 links.
        for _ in 0..40 {
            // The directory part with its links resolved (`/dev/fd/0`: the
            // link is `/dev/fd`), then the last component, link by link.
            let (Some(dir), Some(name)) = (p.parent(), p.file_name()) else {
                return Err(not_a_device());
            };
            p = std::fs::canonicalize(dir).map_err(stat_err)?.join(name);
            if p.starts_with("/proc") {
                return Err(IsolateError::DeviceThroughProc {
                    path: self.host_path.clone(),
                    via: p,
                });
            }
            match std::fs::read_link(&p) {
                // `join` keeps an absolute target as it is.
                Ok(target) => p = p.parent().unwrap_or(Path::new("/")).join(target),
                Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                    let md = std::fs::symlink_metadata(&p).map_err(stat_err)?;
                    let kind = if md.file_type().is_char_device() {
                        DeviceKind::Char
                    } else if md.file_type().is_block_device() {
                        DeviceKind::Block
                    } else {
                        return Err(not_a_device());
                    };
                    return Ok((p, kind, md.rdev()));
                }
                Err(e) => return Err(stat_err(e)),
            }
        }
        Err(stat_err(std::io::Error::from_raw_os_error(libc::ELOOP)))
    }

    /// `stat` the host node ([`DeviceSpec::host_node`]) and return the rule
    /// that allows exactly it.
    #[doc(hidden)]
    pub fn resolve(&self) -> Result<DeviceRule, IsolateError> {
        let (_, kind, rdev) = self.host_node()?;
        Ok(DeviceRule {
            kind,
            major: Some(nix::sys::stat::major(rdev) as u32),
            minor: Some(nix::sys::stat::minor(rdev) as u32),
            access: self.access()?,
            allow: true,
        })
    }
}

/// The task's device rules: runc's defaults ([`default_rules`]), then one
/// allow rule per passed device (each `stat`ed now). Duplicate task paths
/// are refused.
pub fn device_rules(spec: &IsolationSpec) -> Result<Vec<DeviceRule>, IsolateError> {
    let mut rules = default_rules();
    for (i, d) in spec.devices.iter().enumerate() {
        d.validate(spec.chroot)?;
        if spec.devices[..i]
            .iter()
            .any(|o| o.task_path() == d.task_path())
        {
            return Err(IsolateError::InvalidDevice {
                device: d.host_path.display().to_string(),
                reason: "another device has the same task path",
            });
        }
        rules.push(d.resolve()?);
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(host: &str, task: Option<&str>, access: &str) -> DeviceSpec {
        DeviceSpec {
            host_path: host.into(),
            task_path: task.map(PathBuf::from),
            access: access.into(),
        }
    }

    #[test]
    fn parses_the_cli_forms() {
        assert_eq!(
            DeviceSpec::parse("/dev/kmsg").unwrap(),
            dev("/dev/kmsg", None, "rwm")
        );
        assert_eq!(
            DeviceSpec::parse("/dev/kmsg:r").unwrap(),
            dev("/dev/kmsg", None, "r")
        );
        assert_eq!(
            DeviceSpec::parse("/dev/zero:/dev/zero2").unwrap(),
            dev("/dev/zero", Some("/dev/zero2"), "rwm")
        );
        assert_eq!(
            DeviceSpec::parse("/dev/fuse:/dev/fuse:rw").unwrap(),
            dev("/dev/fuse", Some("/dev/fuse"), "rw")
        );
        for bad in [
            "",
            ":r",
            "/dev/a:/dev/b:rw:x",
            "/dev/a:rx",
            "/dev/a::r",
            "/dev/a:rr",
        ] {
            assert!(DeviceSpec::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn old_spec_files_load_and_defaults_fill_in() {
        let old: IsolationSpec = serde_json::from_str(r#"{"chroot":true}"#).unwrap();
        assert!(old.devices.is_empty());
        let d: DeviceSpec = serde_json::from_str(r#"{"host_path":"/dev/kmsg"}"#).unwrap();
        assert_eq!(d, dev("/dev/kmsg", None, "rwm"));
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"host_path":"/dev/kmsg","access":"rwm"}"#
        );
    }

    #[test]
    fn validates_task_paths() {
        assert!(dev("/dev/kmsg", None, "r").validate(true).is_ok());
        assert!(dev("/dev/zero", Some("/dev/dri/card9"), "r")
            .validate(true)
            .is_ok());
        for (d, chroot) in [
            (dev("dev/kmsg", None, "r"), true),
            (dev("/dev/kmsg", Some("/etc/kmsg"), "r"), true),
            (dev("/dev/kmsg", Some("/dev"), "r"), true),
            (dev("/dev/kmsg", Some("/dev/../etc/x"), "r"), true),
            (dev("/dev/kmsg", Some("/dev/null"), "r"), true),
            (dev("/dev/kmsg", Some("/dev/pts/9"), "r"), true),
            (dev("/dev/kmsg", Some("/dev/kmsg2"), "r"), false),
            (dev("/dev/kmsg", None, ""), false),
        ] {
            let e = d.validate(chroot).unwrap_err();
            assert!(e.to_string().starts_with("device "), "{d:?}: {e}");
        }
    }

    #[test]
    fn resolves_a_char_device_and_refuses_a_file() {
        let rule = dev("/dev/null", None, "rw").resolve().unwrap();
        assert_eq!(
            rule,
            DeviceRule::allow_char(Some(1), Some(3), Access::READ | Access::WRITE)
        );
        let e = dev("/etc/hostname", None, "rw").resolve().unwrap_err();
        assert_eq!(
            e.to_string(),
            "device /etc/hostname: not a character or block device"
        );
        let e = dev("/nonexistent-dev", None, "rw").resolve().unwrap_err();
        assert!(
            e.to_string().starts_with("stat device /nonexistent-dev: "),
            "{e}"
        );
        let spec = IsolationSpec {
            devices: vec![
                dev("/dev/null", None, "r"),
                dev("/dev/zero", Some("/dev/null"), "r"),
            ],
            ..IsolationSpec::default()
        };
        // Without chroot, a task path of its own is refused first.
        assert!(device_rules(&spec).is_err());
        let spec = IsolationSpec {
            devices: vec![dev("/dev/null", None, "r")],
            ..IsolationSpec::default()
        };
        assert_eq!(
            device_rules(&spec).unwrap().len(),
            default_rules().len() + 1
        );
    }
}
