//! What a task asks for (it goes into `spec.json`), and its validation.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::IsolateError;
use super::fsview_spec::{self, DnsSpec, MountSpec};
use super::{caps, rlimit};

/// Nomad's default `chroot_env`: each entry is bound read-only at the same
/// path inside the task's root, if it exists on the host.
pub const DEFAULT_CHROOT_ENV: &[&str] = &[
    "/bin",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/run/resolvconf",
    "/sbin",
    "/usr",
];

/// Names under the task root that the isolation itself owns; a `chroot_env`
/// destination may not use them.
pub(crate) const RESERVED: &[&str] = &["alloc", "local", "secrets", "tmp", "dev", "proc", "sys"];

/// The isolation a task asks for. Every field is optional; the default is no
/// isolation beyond the privilege steps (no capabilities for a non-root user,
/// `no_new_privs`, Nomad's bounding set).
///
/// # Examples
///
/// ```
/// use nomad_shim::{DnsSpec, IsolationSpec, MountSpec, RlimitSpec, TaskSpec};
///
/// let isolation = IsolationSpec {
///     chroot: true,
///     task_dir: Some("/var/lib/my-agent/alloc/1/web".into()),
///     pid: true, // a pid namespace; the task runs under an init
///     uts: true,
///     hostname: Some("web-1".into()),
///     rlimits: vec![RlimitSpec { resource: "nofile".into(), soft: 1024, hard: 4096 }],
///     mounts: vec![MountSpec { src: "/usr/share".into(), dst: "/data".into(), readonly: true }],
///     dns: Some(DnsSpec { servers: vec!["10.0.0.2".into()], ..DnsSpec::default() }),
///     ..IsolationSpec::default()
/// };
/// assert!(isolation.validate().is_ok());
/// let mut spec = TaskSpec::new("/bin/sh");
/// spec.isolation(isolation);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IsolationSpec {
    /// Pivot into `task_dir`, built from `chroot_env` plus the task dirs.
    #[serde(skip_serializing_if = "is_false")]
    pub chroot: bool,
    /// Host paths bound read-only into the root; empty means
    /// [`DEFAULT_CHROOT_ENV`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chroot_env: Vec<BindSpec>,
    /// The task's directory: `alloc/ local/ secrets/ tmp/` are created in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_dir: Option<PathBuf>,
    /// The allocation's shared directory, bound read-write at
    /// `<task_dir>/alloc`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alloc_dir: Option<PathBuf>,
    /// A new pid namespace (the task is its pid 1).
    #[serde(skip_serializing_if = "is_false")]
    pub pid: bool,
    /// A new IPC namespace.
    #[serde(skip_serializing_if = "is_false")]
    pub ipc: bool,
    /// A new UTS namespace (needed for `hostname`).
    #[serde(skip_serializing_if = "is_false")]
    pub uts: bool,
    /// A network namespace to join, e.g. `/var/run/netns/NAME`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<PathBuf>,
    /// The hostname inside the UTS namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The task's uid; `None` keeps the supervisor's (root).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The task's gid; required with `uid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Supplementary groups (replaces the supervisor's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<u32>,
    /// The user's name, for `USER` and `LOGNAME`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user_name: String,
    /// The user's home, for `HOME`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub home: String,
    /// Capabilities added to the bounding set (and, for a non-root user,
    /// granted): `NET_BIND_SERVICE`, `cap_net_bind_service` or `ALL`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Capabilities removed from the bounding set; `ALL` drops every one
    /// not in `cap_add`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// Resource limits.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rlimits: Vec<RlimitSpec>,
    /// Size of the `secrets/` tmpfs in bytes; `None` is
    /// [`super::DEFAULT_SECRETS_SIZE`] (1 MiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets_size: Option<u64>,
    /// The task's `oom_score_adj`, -1000..=1000; `None` is 0 (proc(5)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i32>,
    /// The operator's allow list (Nomad's `allow_caps`): the task keeps
    /// only these of its bounding set, and a `cap_add` outside it is an
    /// error. `None`: no restriction beyond `cap_add`/`cap_drop`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_caps: Option<Vec<String>>,
    /// A minimal init (the shim's own code) as the parent of the program:
    /// it forwards signals, reaps orphans and ends with the program's
    /// status. `None` (the default, and what an older `spec.json` loads
    /// as): on exactly when `pid` is set, since the program would otherwise
    /// be PID 1 of its namespace. See [`IsolationSpec::wants_init`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    /// A task-private `/etc/resolv.conf` (Nomad's `dns` block); `None`
    /// shows the host's. Needs `chroot`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsSpec>,
    /// Host paths mounted into the root (Nomad's volume mounts), in order.
    /// Needs `chroot`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountSpec>,
    /// Host device nodes passed through to the task (`devices.rs`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<super::DeviceSpec>,
}

/// One host path bound read-only into the task's root.
///
/// # Examples
///
/// ```
/// use nomad_shim::{BindSpec, IsolationSpec};
///
/// // Only /usr, /lib and /bin of the host in the task's root.
/// let isolation = IsolationSpec {
///     chroot: true,
///     task_dir: Some("/var/lib/my-agent/alloc/1/web".into()),
///     chroot_env: ["/usr", "/lib", "/bin"]
///         .map(|p| BindSpec { src: p.into(), dst: p.into() })
///         .to_vec(),
///     ..IsolationSpec::default()
/// };
/// assert!(isolation.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindSpec {
    /// Absolute host path.
    pub src: PathBuf,
    /// Absolute path inside the task's root (no `..`, not `/`).
    pub dst: PathBuf,
}

/// One resource limit (setrlimit(2)); `u64::MAX` is `RLIM_INFINITY`.
///
/// # Examples
///
/// ```
/// use nomad_shim::{IsolationSpec, RlimitSpec};
///
/// let isolation = IsolationSpec {
///     rlimits: vec![
///         RlimitSpec { resource: "nofile".into(), soft: 1024, hard: 4096 },
///         RlimitSpec { resource: "RLIMIT_CORE".into(), soft: 0, hard: 0 },
///     ],
///     ..IsolationSpec::default()
/// };
/// assert!(isolation.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RlimitSpec {
    /// `nofile`, `NOFILE` or `RLIMIT_NOFILE` (any case).
    pub resource: String,
    /// The soft limit.
    pub soft: u64,
    /// The hard limit (not below `soft`).
    pub hard: u64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl IsolationSpec {
    /// Checks the spec without touching the system: names, paths, and
    /// combinations that cannot work.
    pub fn validate(&self) -> Result<(), IsolateError> {
        for (field, path) in [
            ("task_dir", &self.task_dir),
            ("alloc_dir", &self.alloc_dir),
            ("netns", &self.netns),
        ] {
            if let Some(path) = path {
                check_path(field, path)?;
            }
        }
        if self.chroot && self.task_dir.is_none() {
            return Err(IsolateError::ChrootWithoutTaskDir);
        }
        if self.alloc_dir.is_some() && self.task_dir.is_none() {
            return Err(IsolateError::AllocWithoutTaskDir);
        }
        if let Some(name) = &self.hostname {
            if !self.uts {
                return Err(IsolateError::HostnameWithoutUts);
            }
            if name.is_empty() || name.len() > 64 || name.contains('\0') {
                return Err(IsolateError::InvalidHostname {
                    hostname: name.clone(),
                });
            }
        }
        if self.uid.is_some() && self.gid.is_none() {
            return Err(IsolateError::UidWithoutGid);
        }
        // (uid_t)-1 is not an id: setresuid(2)/setresgid(2) read it as
        // "leave unchanged", so the task would keep the supervisor's root.
        let no_id = self.uid == Some(u32::MAX)
            || self.gid == Some(u32::MAX)
            || self.groups.contains(&u32::MAX);
        if no_id {
            return Err(IsolateError::InvalidId { id: u32::MAX });
        }
        self.validate_chroot_env()?;
        fsview_spec::validate_dns(self.dns.as_ref(), self.chroot)?;
        fsview_spec::validate_mounts(&self.mounts, self.chroot, &self.chroot_env_dsts())?;
        caps::parse_list(&self.cap_add)?;
        caps::parse_list(&self.cap_drop)?;
        caps::check_allowed(self)?;
        if let Some(value) = self.oom_score_adj {
            if !(-1000..=1000).contains(&value) {
                return Err(IsolateError::OomScoreAdjOutOfRange { value });
            }
        }
        if self.secrets_size == Some(0) {
            return Err(IsolateError::SecretsSizeZero);
        }
        for r in &self.rlimits {
            rlimit::parse(r)?;
        }
        for d in &self.devices {
            d.validate(self.chroot)?;
        }
        Ok(())
    }

    /// Each destination absolute, free of `..`, not reserved, and not nested
    /// in another (the inner mount point would have to be created inside a
    /// read-only host bind).
    fn validate_chroot_env(&self) -> Result<(), IsolateError> {
        for b in &self.chroot_env {
            check_path("chroot_env src", &b.src)?;
            check_path("chroot_env dst", &b.dst)?;
            let rel = relative_dst(&b.dst);
            if rel.as_os_str().is_empty() {
                return Err(IsolateError::ReservedChrootDst { dst: b.dst.clone() });
            }
            let first = rel.components().next().map(|c| c.as_os_str().to_owned());
            if first.is_some_and(|f| RESERVED.iter().any(|r| f == *r)) {
                return Err(IsolateError::ReservedChrootDst { dst: b.dst.clone() });
            }
            for other in &self.chroot_env {
                let orel = relative_dst(&other.dst);
                if other.dst != b.dst && orel.starts_with(&rel) {
                    return Err(IsolateError::NestedChrootDst {
                        outer: b.dst.clone(),
                        inner: other.dst.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The `chroot_env` in effect: the spec's, or [`DEFAULT_CHROOT_ENV`]
    /// restricted to what exists on this host.
    #[doc(hidden)]
    pub fn effective_chroot_env(&self) -> Vec<BindSpec> {
        if !self.chroot_env.is_empty() {
            return self.chroot_env.clone();
        }
        existing_binds(DEFAULT_CHROOT_ENV.iter().map(Path::new))
    }

    /// The destinations of the `chroot_env`, without looking at the host:
    /// the spec's, or all of [`DEFAULT_CHROOT_ENV`].
    fn chroot_env_dsts(&self) -> Vec<PathBuf> {
        if self.chroot_env.is_empty() {
            DEFAULT_CHROOT_ENV.iter().map(PathBuf::from).collect()
        } else {
            self.chroot_env.iter().map(|b| b.dst.clone()).collect()
        }
    }

    /// Whether the task runs under the shim's init: as asked, else
    /// automatically with a pid namespace (PID 1 of a namespace gets only
    /// the signals it has handlers for, pid_namespaces(7), and must reap
    /// every orphan in it).
    pub fn wants_init(&self) -> bool {
        self.init.unwrap_or(self.pid)
    }

    /// `HOME`, `USER` and `LOGNAME` for the task user, when known.
    #[doc(hidden)]
    pub fn env_defaults(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if !self.home.is_empty() {
            env.push(("HOME".to_string(), self.home.clone()));
        }
        if !self.user_name.is_empty() {
            env.push(("USER".to_string(), self.user_name.clone()));
            env.push(("LOGNAME".to_string(), self.user_name.clone()));
        }
        env
    }

    /// Fills `uid`, `gid`, `groups`, `user_name` and `home` from a resolved
    /// user (see [`super::resolve_user`]).
    pub(crate) fn set_user(&mut self, user: &super::ResolvedUser) {
        self.uid = Some(user.uid);
        self.gid = Some(user.gid);
        self.groups = user.groups.clone();
        self.user_name = user.name.clone();
        self.home = user.home.clone();
    }
}

/// A same-path bind for each candidate that exists here as a directory or a
/// regular file, after symlinks: one default list serves Debian, Ubuntu and
/// Fedora, whose `/lib32`, `/lib64` and `/run/resolvconf` differ. A dangling
/// symlink (`/lib32 -> usr/lib32` without `/usr/lib32`) counts as missing.
pub(crate) fn existing_binds<'a>(candidates: impl Iterator<Item = &'a Path>) -> Vec<BindSpec> {
    candidates
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.is_dir() || m.is_file()))
        .map(|p| BindSpec {
            src: p.to_path_buf(),
            dst: p.to_path_buf(),
        })
        .collect()
}

/// Absolute, and no `..` component.
pub(crate) fn check_path(field: &'static str, path: &Path) -> Result<(), IsolateError> {
    if !path.is_absolute() {
        return Err(IsolateError::RelativePath {
            field,
            path: path.to_path_buf(),
        });
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(IsolateError::DotDotInPath {
            field,
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// A destination without its leading `/` (and without `.` components).
pub(crate) fn relative_dst(dst: &Path) -> PathBuf {
    dst.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chroot_spec() -> IsolationSpec {
        IsolationSpec {
            chroot: true,
            task_dir: Some("/srv/t1".into()),
            ..Default::default()
        }
    }

    fn bind(src: &str, dst: &str) -> BindSpec {
        BindSpec {
            src: src.into(),
            dst: dst.into(),
        }
    }

    #[test]
    fn default_serializes_to_empty_object_and_round_trips() {
        assert_eq!(
            serde_json::to_string(&IsolationSpec::default()).unwrap(),
            "{}"
        );
        let spec = IsolationSpec {
            chroot: true,
            task_dir: Some("/srv/t1".into()),
            uid: Some(65534),
            gid: Some(65534),
            cap_add: vec!["NET_BIND_SERVICE".into()],
            rlimits: vec![RlimitSpec {
                resource: "nofile".into(),
                soft: 1,
                hard: 2,
            }],
            ..Default::default()
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<IsolationSpec>(&json).unwrap(), spec);
    }

    #[test]
    fn validation_errors_are_typed() {
        type Case = (IsolationSpec, fn(&IsolateError) -> bool);
        let cases: Vec<Case> = vec![
            (
                IsolationSpec {
                    cap_add: vec!["FROB".into()],
                    ..Default::default()
                },
                |e| matches!(e, IsolateError::UnknownCapability { .. }),
            ),
            (
                IsolationSpec {
                    rlimits: vec![RlimitSpec {
                        resource: "bogus".into(),
                        soft: 1,
                        hard: 1,
                    }],
                    ..Default::default()
                },
                |e| matches!(e, IsolateError::UnknownRlimit { .. }),
            ),
            (
                IsolationSpec {
                    hostname: Some("h".into()),
                    ..Default::default()
                },
                |e| matches!(e, IsolateError::HostnameWithoutUts),
            ),
            (
                IsolationSpec {
                    task_dir: Some("srv/t1".into()),
                    ..Default::default()
                },
                |e| matches!(e, IsolateError::RelativePath { .. }),
            ),
            (
                IsolationSpec {
                    chroot_env: vec![bind("/usr", "/usr/../etc")],
                    ..chroot_spec()
                },
                |e| matches!(e, IsolateError::DotDotInPath { .. }),
            ),
            (
                IsolationSpec {
                    chroot_env: vec![bind("/usr", "usr")],
                    ..chroot_spec()
                },
                |e| matches!(e, IsolateError::RelativePath { .. }),
            ),
            (
                IsolationSpec {
                    chroot_env: vec![bind("/etc", "/local/etc")],
                    ..chroot_spec()
                },
                |e| matches!(e, IsolateError::ReservedChrootDst { .. }),
            ),
            (
                IsolationSpec {
                    chroot_env: vec![bind("/etc", "/")],
                    ..chroot_spec()
                },
                |e| matches!(e, IsolateError::ReservedChrootDst { .. }),
            ),
            (
                IsolationSpec {
                    chroot_env: vec![bind("/etc", "/etc"), bind("/etc/hosts", "/etc/hosts")],
                    ..chroot_spec()
                },
                |e| matches!(e, IsolateError::NestedChrootDst { .. }),
            ),
            (
                IsolationSpec {
                    chroot: true,
                    ..Default::default()
                },
                |e| matches!(e, IsolateError::ChrootWithoutTaskDir),
            ),
            (
                IsolationSpec {
                    uid: Some(1),
                    ..Default::default()
                },
                |e| matches!(e, IsolateError::UidWithoutGid),
            ),
        ];
        for (spec, is_expected) in cases {
            let err = spec.validate().unwrap_err();
            assert!(is_expected(&err), "{spec:?}: {err}");
        }
        let ok = IsolationSpec {
            uts: true,
            hostname: Some("task-1".into()),
            chroot_env: vec![bind("/usr", "/usr"), bind("/etc/hosts", "/etc/hosts")],
            cap_add: vec!["all".into()],
            cap_drop: vec!["cap_net_raw".into()],
            ..chroot_spec()
        };
        ok.validate().unwrap();
    }

    #[test]
    fn env_defaults_name_the_user() {
        let spec = IsolationSpec {
            user_name: "nobody".into(),
            home: "/nonexistent".into(),
            ..Default::default()
        };
        let env = spec.env_defaults();
        assert_eq!(
            env,
            [
                ("HOME", "/nonexistent"),
                ("USER", "nobody"),
                ("LOGNAME", "nobody")
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn default_chroot_env_keeps_only_existing_paths() {
        let env = IsolationSpec::default().effective_chroot_env();
        assert!(env.iter().all(|b| b.src.exists() && b.src == b.dst));
        assert!(env.iter().any(|b| b.src == Path::new("/usr")));
    }

    #[test]
    fn init_is_automatic_with_a_pid_namespace_and_old_specs_load() {
        // A spec.json written before the field existed.
        let old: IsolationSpec = serde_json::from_str(r#"{"pid":true}"#).unwrap();
        assert_eq!(old.init, None);
        assert!(old.wants_init());
        assert!(!IsolationSpec::default().wants_init());
        let no_init = IsolationSpec {
            pid: true,
            init: Some(false),
            ..IsolationSpec::default()
        };
        assert!(!no_init.wants_init());
        let init_alone = IsolationSpec {
            init: Some(true),
            ..IsolationSpec::default()
        };
        assert!(init_alone.wants_init());
        // None is not written: a spec without the choice reads as before.
        assert_eq!(serde_json::to_string(&old).unwrap(), r#"{"pid":true}"#);
        let json = serde_json::to_string(&init_alone).unwrap();
        assert_eq!(json, r#"{"init":true}"#);
    }
}
