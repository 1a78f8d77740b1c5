//! The device controller: which device nodes a task may create (`mknod`) and
//! use (`open` for read or write), one rule list for both cgroup versions.
//!
//! * **v1**: the task's directory in the `devices` hierarchy; `devices.deny`
//!   `a` empties its allow list, then each allow rule is one write to
//!   `devices.allow` (Documentation/admin-guide/cgroup-v1/devices.rst).
//! * **v2**: there is no device controller file; a
//!   `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to the task's cgroup
//!   decides every access (Documentation/admin-guide/cgroup-v2.rst, "Device
//!   controller"). The program is built here from the same rules ([`super::bpf`]).
//!
//! Both are set up by [`TaskCgroup::restrict_devices`] before the task's first
//! process joins the cgroup, so no process of the task ever runs without them.
//!
//! **Semantics** (the same on both versions, as long as the list starts with
//! "deny all", which [`TaskCgroup::restrict_devices`] requires): an access is
//! allowed if an allow rule covers the device and *every* bit asked for (an
//! `open(O_RDWR)` asks for `rw`); a later deny rule that matches the device
//! and *any* bit asked for takes it away again. Whatever no rule allows is
//! refused with `EPERM`.
//!
//! The default list is runc's (libcontainer/specconv `AllowedDevices`):
//! `mknod` of every char and block device, read-write use of `null`, `zero`,
//! `full`, `random`, `urandom`, `tty`, `ptmx` and the ptys `pts/*` — nothing
//! else. A node the task makes with `mknod` (CAP_MKNOD is in Nomad's default
//! set) therefore exists, but cannot be opened.

use std::fmt;
use std::path::Path;

use super::error::{Error, Result};
use super::files::write_each;
use super::{Backend, TaskCgroup};

/// Which device nodes a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// Every device, char and block (v1 `a`).
    All,
    /// Character devices (v1 `c`).
    Char,
    /// Block devices (v1 `b`).
    Block,
}

impl DeviceKind {
    fn letter(self) -> char {
        match self {
            DeviceKind::All => 'a',
            DeviceKind::Char => 'c',
            DeviceKind::Block => 'b',
        }
    }
}

/// A set of access bits: read, write, mknod. The bit values are the
/// kernel's `BPF_DEVCG_ACC_*` (linux/bpf.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Access(u8);

impl Access {
    /// `mknod(2)` of the node.
    pub const MKNOD: Access = Access(1);
    /// `open(2)` for reading.
    pub const READ: Access = Access(2);
    /// `open(2)` for writing.
    pub const WRITE: Access = Access(4);
    /// `rwm`: everything.
    pub const ALL: Access = Access(7);

    /// Parses a v1-style access string: any of `r`, `w`, `m`, each at most
    /// once, not empty (`"rwm"`, `"rw"`, `"m"`).
    pub fn parse(s: &str) -> Option<Access> {
        let mut bits = 0u8;
        for c in s.chars() {
            let bit = match c {
                'r' => Access::READ.0,
                'w' => Access::WRITE.0,
                'm' => Access::MKNOD.0,
                _ => return None,
            };
            if bits & bit != 0 {
                return None;
            }
            bits |= bit;
        }
        (bits != 0).then_some(Access(bits))
    }

    /// The bits, as `BPF_DEVCG_ACC_*`.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Whether every bit of `other` is in `self`.
    pub fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Access {
    type Output = Access;
    fn bitor(self, rhs: Access) -> Access {
        Access(self.0 | rhs.0)
    }
}

impl fmt::Display for Access {
    /// `rwm` order, as the kernel prints `devices.list`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (bit, c) in [
            (Access::READ, 'r'),
            (Access::WRITE, 'w'),
            (Access::MKNOD, 'm'),
        ] {
            if self.contains(bit) {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// One rule of a device list: devices of `kind`, `major:minor` (`None` is
/// `*`, any), the `access` it is about, and whether it allows or denies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    /// Char, block, or both.
    pub kind: DeviceKind,
    /// The major number; `None` matches any.
    pub major: Option<u32>,
    /// The minor number; `None` matches any.
    pub minor: Option<u32>,
    /// Which accesses the rule is about.
    pub access: Access,
    /// Allow (`true`) or deny.
    pub allow: bool,
}

impl DeviceRule {
    /// Deny everything: the first rule of every list.
    pub const DENY_ALL: DeviceRule = DeviceRule {
        kind: DeviceKind::All,
        major: None,
        minor: None,
        access: Access::ALL,
        allow: false,
    };

    /// Allow `access` to the char device `major:minor` (`None`: any).
    pub const fn allow_char(major: Option<u32>, minor: Option<u32>, access: Access) -> Self {
        DeviceRule {
            kind: DeviceKind::Char,
            major,
            minor,
            access,
            allow: true,
        }
    }

    /// Whether the rule matches every device and every access (v1 `a`).
    pub fn is_everything(&self) -> bool {
        self.kind == DeviceKind::All
            && self.major.is_none()
            && self.minor.is_none()
            && self.access == Access::ALL
    }

    /// The v1 control file this rule is written to, and the line:
    /// (`devices.allow`, `c 1:3 rwm`); "everything" is `a`.
    pub fn v1_line(&self) -> (&'static str, String) {
        let file = if self.allow {
            "devices.allow"
        } else {
            "devices.deny"
        };
        if self.is_everything() {
            return (file, "a".to_string());
        }
        let num = |n: Option<u32>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
        let line = format!(
            "{} {}:{} {}",
            self.kind.letter(),
            num(self.major),
            num(self.minor),
            self.access
        );
        (file, line)
    }
}

impl fmt::Display for DeviceRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (file, line) = self.v1_line();
        let verb = if file == "devices.allow" {
            "allow"
        } else {
            "deny"
        };
        write!(f, "{verb} {line}")
    }
}

/// runc's default list: deny all; `mknod` of any char or block device;
/// `rwm` of null (1:3), zero (1:5), full (1:7), random (1:8), urandom (1:9),
/// tty (5:0), ptmx (5:2) and the ptys of every devpts (136:*).
pub fn default_rules() -> Vec<DeviceRule> {
    let rwm = Access::ALL;
    let mut rules = vec![
        DeviceRule::DENY_ALL,
        DeviceRule::allow_char(None, None, Access::MKNOD),
        DeviceRule {
            kind: DeviceKind::Block,
            ..DeviceRule::allow_char(None, None, Access::MKNOD)
        },
    ];
    for (major, minor) in [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2)] {
        rules.push(DeviceRule::allow_char(Some(major), Some(minor), rwm));
    }
    rules.push(DeviceRule::allow_char(Some(136), None, rwm));
    rules
}

/// The v1 writes for `rules`, in order: (control file, line).
pub fn v1_writes(rules: &[DeviceRule]) -> Vec<(&'static str, String)> {
    rules.iter().map(DeviceRule::v1_line).collect()
}

/// Refuse a list that does not start with "deny all": without it the two
/// versions would disagree (v1 keeps what the parent allows, the v2 program
/// denies what it does not allow).
fn check(rules: &[DeviceRule]) -> Result<()> {
    match rules.first() {
        Some(r) if r.is_everything() && !r.allow => Ok(()),
        _ => Err(Error::InvalidDeviceRules {
            reason: "the list must start with \"deny all\" (a *:* rwm)",
        }),
    }
}

impl TaskCgroup {
    /// Set the task's device rules (module docs), before any process of the
    /// task joins the cgroup. v1: `devices.deny` `a`, then one write per rule
    /// in the task's `devices` directory. v2: build, load and attach the
    /// `BPF_PROG_TYPE_CGROUP_DEVICE` program (with `BPF_F_ALLOW_MULTI`: a
    /// program an ancestor has, such as systemd's, still applies too).
    ///
    /// The list must start with [`DeviceRule::DENY_ALL`]
    /// ([`Error::InvalidDeviceRules`] otherwise).
    pub fn restrict_devices(&self, rules: &[DeviceRule]) -> Result<()> {
        check(rules)?;
        match &self.backend {
            Backend::V1(c) => apply_v1(&c.devices_dir()?, rules),
            Backend::V2(c) => {
                let dir = c.dir();
                let program = super::bpf::device_program(rules)?;
                super::bpf::attach_device_program(&dir, &program)
            }
        }
    }
}

/// Write `rules` into the v1 `devices` directory `dir`, one line per write
/// (the kernel parses each write as one rule: `devcgroup_access_write`).
/// Consecutive rules for the same file share one open descriptor: the
/// default list is one `devices.deny` and nine `devices.allow` lines, so a
/// start opens two files instead of ten (on the start's path, before the
/// fork).
pub(crate) fn apply_v1(dir: &Path, rules: &[DeviceRule]) -> Result<()> {
    let writes = v1_writes(rules);
    let mut i = 0;
    while i < writes.len() {
        let file = writes[i].0;
        let n = writes[i..].iter().take_while(|(f, _)| *f == file).count();
        let lines: Vec<&str> = writes[i..i + n].iter().map(|(_, l)| l.as_str()).collect();
        write_each(&dir.join(file), &lines)?;
        i += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_parses_and_prints_in_rwm_order() {
        assert_eq!(Access::parse("rwm"), Some(Access::ALL));
        assert_eq!(Access::parse("mr").unwrap().to_string(), "rm");
        assert_eq!(Access::parse("w"), Some(Access::WRITE));
        for bad in ["", "rr", "x", "rwmx", "R"] {
            assert_eq!(Access::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn default_rules_render_as_runc_v1_lines() {
        let lines: Vec<String> = v1_writes(&default_rules())
            .into_iter()
            .map(|(f, l)| format!("{f}: {l}"))
            .collect();
        assert_eq!(
            lines,
            [
                "devices.deny: a",
                "devices.allow: c *:* m",
                "devices.allow: b *:* m",
                "devices.allow: c 1:3 rwm",
                "devices.allow: c 1:5 rwm",
                "devices.allow: c 1:7 rwm",
                "devices.allow: c 1:8 rwm",
                "devices.allow: c 1:9 rwm",
                "devices.allow: c 5:0 rwm",
                "devices.allow: c 5:2 rwm",
                "devices.allow: c 136:* rwm",
            ]
        );
    }

    #[test]
    fn rules_display_and_block_deny() {
        let r = DeviceRule {
            kind: DeviceKind::Block,
            major: Some(7),
            minor: None,
            access: Access::READ,
            allow: false,
        };
        assert_eq!(r.to_string(), "deny b 7:* r");
        assert_eq!(DeviceRule::DENY_ALL.to_string(), "deny a");
    }

    #[test]
    fn a_list_must_start_with_deny_all() {
        assert!(check(&default_rules()).is_ok());
        assert!(check(&[]).is_err());
        let e = check(&default_rules()[1..]).unwrap_err();
        assert!(e.to_string().contains("deny all"), "{e}");
    }
}
