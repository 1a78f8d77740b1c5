//! The spec's view of the chroot beyond the chroot env: Nomad's `dns` block
//! ([`DnsSpec`]) and volume mounts ([`MountSpec`]), with their validation.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::IsolateError;
use super::spec::{check_path, relative_dst, BindSpec};

/// Nomad's `dns` block: a task-private `/etc/resolv.conf` (resolv.conf(5)).
/// Without it, a chroot task sees the host's `/etc/resolv.conf`.
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

    /// The file, as resolv.conf(5) reads it.
    pub fn render(&self) -> String {
        let mut out = String::from("# written by nomad-shim for this task\n");
        for s in &self.servers {
            out.push_str("nameserver ");
            out.push_str(s);
            out.push('\n');
        }
        for (key, values) in [("search", &self.searches), ("options", &self.options)] {
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
/// not in the isolation's own filesystems, and not inside (or over) a
/// `chroot_env` destination: those are read-only host directories, where no
/// mount point can be made.
pub(crate) fn validate_mounts(
    mounts: &[MountSpec],
    chroot: bool,
    chroot_env: &[BindSpec],
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
        if let Some(env) = chroot_env
            .iter()
            .find(|b| rel.starts_with(relative_dst(&b.dst)))
        {
            return Err(IsolateError::MountDstInChrootEnv {
                dst: m.dst.clone(),
                chroot_env: env.dst.clone(),
            });
        }
        for other in mounts {
            let orel = relative_dst(&other.dst);
            if !std::ptr::eq(other, m) && orel == rel {
                return Err(IsolateError::DuplicateMountDst { dst: m.dst.clone() });
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
