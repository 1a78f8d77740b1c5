//! The spec's view of the chroot beyond the chroot env: Nomad's `dns` block
//! ([`DnsSpec`]) and volume mounts ([`MountSpec`]), with their validation.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::IsolateError;
use super::spec::{check_path, relative_dst};

/// Nomad's `dns` block: a task-private `/etc/resolv.conf` (resolv.conf(5)).
/// Without it, a chroot task sees the host's `/etc/resolv.conf`.
///
/// # Examples
///
/// ```
/// use nomad_shim::DnsSpec;
///
/// let dns = DnsSpec {
///     servers: vec!["10.0.0.2".into(), "fd00::53".into()],
///     searches: vec!["service.consul".into()],
///     options: vec!["ndots:2".into()],
/// };
/// assert!(dns.validate().is_ok());
/// assert!(DnsSpec { servers: vec!["dns.example".into()], ..dns }.validate().is_err());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DnsSpec {
    /// `nameserver` lines: IPv4 or IPv6 addresses.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    /// The `search` line: domains.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub searches: Vec<String>,
    /// The `options` line, e.g. `ndots:2`, `edns0`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// A host path mounted into the task's root (Nomad's volume mounts).
///
/// # Examples
///
/// ```
/// use nomad_shim::{IsolationSpec, MountSpec};
///
/// let isolation = IsolationSpec {
///     chroot: true,
///     task_dir: Some("/var/lib/my-agent/alloc/1/web".into()),
///     mounts: vec![MountSpec { src: "/usr/share".into(), dst: "/srv/share".into(), readonly: true }],
///     ..IsolationSpec::default()
/// };
/// assert!(isolation.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// Absolute host path: a directory or a regular file.
    pub src: PathBuf,
    /// Absolute path inside the task's root (no `..`).
    pub dst: PathBuf,
    /// Read-only; read-write by default.
    #[serde(default, skip_serializing_if = "is_false")]
    pub readonly: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Where a mount may not go: the isolation's own filesystems (`/dev`,
/// `/proc`, `/sys`, and the `secrets/` tmpfs, mounted after the task dir's
/// mount points are made).
const MOUNT_RESERVED: &[&str] = &["dev", "proc", "sys", "secrets"];

impl DnsSpec {
    /// Every value checked: servers are IP addresses, and no value can add
    /// a line or a word to the file (no whitespace, no `#`).
    pub fn validate(&self) -> Result<(), IsolateError> {
        for s in &self.servers {
            if s.parse::<IpAddr>().is_err() {
                return Err(IsolateError::InvalidDnsServer { value: s.clone() });
            }
        }
        for (option, values) in [
            ("dns-search", &self.searches),
            ("dns-option", &self.options),
        ] {
            for v in values {
                let bad = v.is_empty()
                    || v.len() > 253
                    || v.chars()
                        .any(|c| c.is_whitespace() || c.is_control() || c == '#');
                if bad {
                    return Err(IsolateError::InvalidDnsValue {
                        option,
                        value: v.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The file, as resolv.conf(5) reads it. As Nomad's
    /// `GenerateDNSMount`: each of the three parts not given (no server, no
    /// search domain, no option) is taken from `host`, the host's
    /// resolv.conf, so that `--dns-search` alone keeps the host's servers.
    #[doc(hidden)]
    pub fn render(&self, host: &str) -> String {
        // resolv.conf(5): `nameserver` and `options` lines add up; `search`
        // and `domain` replace each other, the last one wins.
        let host_words = |keys: &[&str], last_wins: bool| -> Vec<String> {
            let mut words = Vec::new();
            for line in host.lines() {
                let mut it = line.split_whitespace();
                if it.next().is_some_and(|k| keys.contains(&k)) {
                    if last_wins {
                        words.clear();
                    }
                    words.extend(it.map(str::to_owned));
                }
            }
            words
        };
        let pick = |mine: &Vec<String>, keys: &[&str], last_wins: bool| {
            if mine.is_empty() {
                host_words(keys, last_wins)
            } else {
                mine.clone()
            }
        };
        let servers = pick(&self.servers, &["nameserver"], false);
        let searches = pick(&self.searches, &["search", "domain"], true);
        let options = pick(&self.options, &["options"], false);
        let mut out = String::from("# written by nomad-shim for this task\n");
        for s in &servers {
            out.push_str("nameserver ");
            out.push_str(s);
            out.push('\n');
        }
        for (key, values) in [("search", &searches), ("options", &options)] {
            if !values.is_empty() {
                out.push_str(key);
                for v in values {
                    out.push(' ');
                    out.push_str(v);
                }
                out.push('\n');
            }
        }
        out
    }
}

/// Mounts need a chroot; each destination absolute, free of `..`, not `/`,
/// not in the isolation's own filesystems, not inside (or over) a
/// `chroot_env` destination or another mount: those are host directories,
/// where no mount point can be made.
pub(crate) fn validate_mounts(
    mounts: &[MountSpec],
    chroot: bool,
    chroot_env: &[PathBuf],
) -> Result<(), IsolateError> {
    if mounts.is_empty() {
        return Ok(());
    }
    if !chroot {
        return Err(IsolateError::MountWithoutChroot);
    }
    for m in mounts {
        check_path("mount src", &m.src)?;
        check_path("mount dst", &m.dst)?;
        let rel = relative_dst(&m.dst);
        let first = rel.components().next().map(|c| c.as_os_str().to_owned());
        let reserved = first.is_none_or(|f| MOUNT_RESERVED.iter().any(|r| f == *r));
        if reserved {
            return Err(IsolateError::ReservedMountDst { dst: m.dst.clone() });
        }
        if let Some(env) = chroot_env.iter().find(|d| rel.starts_with(relative_dst(d))) {
            return Err(IsolateError::MountDstInChrootEnv {
                dst: m.dst.clone(),
                chroot_env: env.clone(),
            });
        }
        for other in mounts.iter().filter(|o| !std::ptr::eq(*o, m)) {
            let orel = relative_dst(&other.dst);
            if orel == rel {
                return Err(IsolateError::DuplicateMountDst { dst: m.dst.clone() });
            }
            // The inner mount point would have to exist in the outer
            // mount's host directory.
            if orel.starts_with(&rel) {
                return Err(IsolateError::NestedMountDst {
                    outer: m.dst.clone(),
                    inner: other.dst.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Dns needs a chroot (it is a file of the task's root).
pub(crate) fn validate_dns(dns: Option<&DnsSpec>, chroot: bool) -> Result<(), IsolateError> {
    match dns {
        None => Ok(()),
        Some(_) if !chroot => Err(IsolateError::DnsWithoutChroot),
        Some(d) => d.validate(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isolate::spec::{existing_binds, IsolationSpec};
    use std::path::Path;

    fn mount(src: &str, dst: &str) -> MountSpec {
        MountSpec {
            src: src.into(),
            dst: dst.into(),
            readonly: false,
        }
    }

    fn chroot_with(mounts: Vec<MountSpec>, dns: Option<DnsSpec>) -> IsolationSpec {
        IsolationSpec {
            chroot: true,
            task_dir: Some("/srv/t1".into()),
            mounts,
            dns,
            ..Default::default()
        }
    }

    #[test]
    fn dns_renders_resolv_conf_and_rejects_what_would_add_lines() {
        let dns = DnsSpec {
            servers: vec!["192.0.2.53".into(), "2001:db8::1".into()],
            searches: vec!["a.example".into(), "b.example".into()],
            options: vec!["ndots:2".into(), "edns0".into()],
        };
        dns.validate().unwrap();
        assert_eq!(
            dns.render("nameserver 10.0.0.1\nsearch host.example\n"),
            "# written by nomad-shim for this task\n\
             nameserver 192.0.2.53\nnameserver 2001:db8::1\n\
             search a.example b.example\noptions ndots:2 edns0\n"
        );
        // What is not given comes from the host's file (Nomad's rule).
        let host = "# comment\nnameserver 10.0.0.1\nnameserver 10.0.0.2\n\
                    domain old.example\nsearch host.example lan\noptions rotate\noptions timeout:1\n";
        let only_search = DnsSpec {
            searches: vec!["svc.example".into()],
            ..Default::default()
        };
        assert_eq!(
            only_search.render(host),
            "# written by nomad-shim for this task\n\
             nameserver 10.0.0.1\nnameserver 10.0.0.2\n\
             search svc.example\noptions rotate timeout:1\n"
        );
        let only_server = DnsSpec {
            servers: vec!["192.0.2.1".into()],
            ..Default::default()
        };
        assert_eq!(
            only_server.render(host),
            "# written by nomad-shim for this task\nnameserver 192.0.2.1\n\
             search host.example lan\noptions rotate timeout:1\n"
        );
        assert_eq!(
            only_server.render(""),
            "# written by nomad-shim for this task\nnameserver 192.0.2.1\n"
        );
        let bad_server = DnsSpec {
            servers: vec!["1.1.1".into()],
            ..Default::default()
        };
        assert!(matches!(
            bad_server.validate(),
            Err(IsolateError::InvalidDnsServer { value }) if value == "1.1.1"
        ));
        for bad in ["a.example\nnameserver 6.6.6.6", "a b", "", "#x"] {
            let dns = DnsSpec {
                searches: vec![bad.into()],
                ..Default::default()
            };
            assert!(
                matches!(
                    dns.validate(),
                    Err(IsolateError::InvalidDnsValue {
                        option: "dns-search",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
        let spec = IsolationSpec {
            dns: Some(dns),
            ..Default::default()
        };
        assert!(matches!(
            spec.validate(),
            Err(IsolateError::DnsWithoutChroot)
        ));
    }

    #[test]
    fn mount_destinations_are_checked() {
        type Case = (Vec<MountSpec>, fn(&IsolateError) -> bool);
        let cases: Vec<Case> = vec![
            (vec![mount("/srv", "/data/../etc")], |e| {
                matches!(
                    e,
                    IsolateError::DotDotInPath {
                        field: "mount dst",
                        ..
                    }
                )
            }),
            (vec![mount("/srv", "data")], |e| {
                matches!(e, IsolateError::RelativePath { .. })
            }),
            (vec![mount("srv", "/data")], |e| {
                matches!(e, IsolateError::RelativePath { .. })
            }),
            (vec![mount("/srv", "/")], |e| {
                matches!(e, IsolateError::ReservedMountDst { .. })
            }),
            (vec![mount("/srv", "/proc/x")], |e| {
                matches!(e, IsolateError::ReservedMountDst { .. })
            }),
            (vec![mount("/srv", "/sys")], |e| {
                matches!(e, IsolateError::ReservedMountDst { .. })
            }),
            (
                vec![mount("/srv", "/usr/share/x")],
                |e| matches!(e, IsolateError::MountDstInChrootEnv { chroot_env, .. } if chroot_env == Path::new("/usr")),
            ),
            (vec![mount("/srv", "/etc")], |e| {
                matches!(e, IsolateError::MountDstInChrootEnv { .. })
            }),
            (vec![mount("/a", "/data"), mount("/b", "/data/")], |e| {
                matches!(e, IsolateError::DuplicateMountDst { .. })
            }),
            (vec![mount("/a", "/data/sub"), mount("/b", "/data")], |e| {
                matches!(e, IsolateError::NestedMountDst { .. })
            }),
        ];
        for (mounts, is_expected) in cases {
            let spec = chroot_with(mounts, None);
            let err = spec.validate().unwrap_err();
            assert!(is_expected(&err), "{:?}: {err}", spec.mounts);
        }
        let no_chroot = IsolationSpec {
            mounts: vec![mount("/srv", "/data")],
            ..Default::default()
        };
        assert!(matches!(
            no_chroot.validate(),
            Err(IsolateError::MountWithoutChroot)
        ));
        chroot_with(
            vec![mount("/srv", "/data"), mount("/srv/f", "/local/f")],
            None,
        )
        .validate()
        .unwrap();
    }

    #[test]
    fn spec_round_trips_with_dns_and_mounts_and_old_specs_still_parse() {
        let spec = chroot_with(
            vec![MountSpec {
                readonly: true,
                ..mount("/srv", "/data")
            }],
            Some(DnsSpec {
                servers: vec!["192.0.2.1".into()],
                ..Default::default()
            }),
        );
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<IsolationSpec>(&json).unwrap(), spec);
        let old: IsolationSpec = serde_json::from_str(r#"{"chroot":true}"#).unwrap();
        assert!(old.dns.is_none() && old.mounts.is_empty());
    }

    /// Item 13: the default list skips what this distribution lacks,
    /// dangling symlinks (`/lib32 -> usr/lib32`) and non-files included.
    #[test]
    fn default_chroot_env_skips_missing_and_dangling_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let p = |n: &str| tmp.path().join(n);
        std::fs::create_dir_all(p("usr/lib")).unwrap();
        std::fs::write(p("file"), b"x").unwrap();
        std::os::unix::fs::symlink("usr/lib", p("lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib32", p("lib32")).unwrap();
        nix::unistd::mkfifo(&p("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let candidates = ["usr", "lib", "lib32", "lib64", "file", "fifo"].map(p);
        let kept: Vec<PathBuf> = existing_binds(candidates.iter().map(PathBuf::as_path))
            .into_iter()
            .map(|b| {
                assert_eq!(b.src, b.dst);
                b.src
            })
            .collect();
        assert_eq!(kept, ["usr", "lib", "file"].map(p));
    }
}
