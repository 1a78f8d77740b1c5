//! The task's credentials: resolved by name on the library side (full NSS),
//! switched to by number in the child.
//!
//! A build linked statically (`crt-static`, the shipped `nomad-shim`)
//! resolves through [`super::passwd`] instead: glibc's NSS crashes a static
//! program (see there), and its functions are then not even linked in.

use nix::sys::prctl;
use nix::unistd::{getgid, getuid, setgroups, setresgid, setresuid, Gid, Uid};

#[cfg(target_feature = "crt-static")]
use files as db;
#[cfg(not(target_feature = "crt-static"))]
use nss as db;

use super::error::IsolateError;
use super::spec::IsolationSpec;
use crate::step::{Step, StepError};

/// A user resolved by name or number, for [`IsolationSpec::set_user`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// The uid.
    pub uid: u32,
    /// The primary gid, or the group asked for.
    pub gid: u32,
    /// Supplementary groups from the group database (getgrouplist(3)).
    pub groups: Vec<u32>,
    /// The user's name (empty for a uid without a passwd entry).
    pub name: String,
    /// The user's home (empty likewise).
    pub home: String,
}

/// Resolves `user` (a name or a numeric uid) and optionally `group` (a name
/// or a gid, replacing the primary group) through NSS — or, built static,
/// from `/etc/passwd` and `/etc/group`. Library side only: never call it in
/// the supervisor's child.
///
/// A numeric uid without a passwd entry is accepted as is, with its own
/// number as gid unless `group` says otherwise, and no supplementary groups.
pub fn resolve_user(user: &str, group: Option<&str>) -> Result<ResolvedUser, IsolateError> {
    let entry = match user.parse::<u32>() {
        // (uid_t)-1: "unchanged" to setresuid(2), never a user.
        Ok(u32::MAX) => return Err(IsolateError::InvalidId { id: u32::MAX }),
        Ok(uid) => db::user_by_uid(user, uid)?,
        Err(_) => Some(db::user_by_name(user)?),
    };
    let mut resolved = match &entry {
        Some(u) => u.clone(),
        None => {
            let uid: u32 = user.parse().unwrap_or_default();
            ResolvedUser {
                uid,
                gid: uid,
                groups: Vec::new(),
                name: String::new(),
                home: String::new(),
            }
        }
    };
    if let Some(group) = group {
        resolved.gid = resolve_group(group)?;
    }
    if let Some(u) = entry {
        resolved.groups = db::group_list(user, &u.name, resolved.gid)?;
    }
    Ok(resolved)
}

/// A group name or a numeric gid.
fn resolve_group(group: &str) -> Result<u32, IsolateError> {
    if let Ok(gid) = group.parse::<u32>() {
        if gid == u32::MAX {
            return Err(IsolateError::InvalidId { id: gid });
        }
        return Ok(gid);
    }
    db::gid_by_name(group)
}

/// Lookups through glibc's NSS (getpwnam(3), getgrouplist(3), ...): LDAP,
/// SSSD and systemd users work. Dynamically linked builds only.
#[cfg(not(target_feature = "crt-static"))]
mod nss {
    use std::ffi::CString;

    use nix::unistd::{Gid, Group, Uid, User};

    use super::{IsolateError, ResolvedUser};

    fn entry(u: User) -> ResolvedUser {
        ResolvedUser {
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            groups: Vec::new(),
            name: u.name.clone(),
            home: u.dir.display().to_string(),
        }
    }

    fn lookup(user: &str) -> impl FnOnce(nix::errno::Errno) -> IsolateError + '_ {
        move |source| IsolateError::LookupUser {
            user: user.to_string(),
            source,
        }
    }

    pub(super) fn user_by_uid(user: &str, uid: u32) -> Result<Option<ResolvedUser>, IsolateError> {
        Ok(User::from_uid(Uid::from_raw(uid))
            .map_err(lookup(user))?
            .map(entry))
    }

    pub(super) fn user_by_name(user: &str) -> Result<ResolvedUser, IsolateError> {
        User::from_name(user)
            .map_err(lookup(user))?
            .map(entry)
            .ok_or_else(|| IsolateError::UnknownUser {
                user: user.to_string(),
            })
    }

    pub(super) fn gid_by_name(group: &str) -> Result<u32, IsolateError> {
        Group::from_name(group)
            .map_err(lookup(group))?
            .map(|g| g.gid.as_raw())
            .ok_or_else(|| IsolateError::UnknownGroup {
                group: group.to_string(),
            })
    }

    pub(super) fn group_list(user: &str, name: &str, gid: u32) -> Result<Vec<u32>, IsolateError> {
        let cname = CString::new(name.as_bytes()).map_err(|_| IsolateError::NulInPath {
            path: name.to_string(),
        })?;
        let groups = nix::unistd::getgrouplist(&cname, Gid::from_raw(gid)).map_err(lookup(user))?;
        Ok(groups.into_iter().map(Gid::as_raw).collect())
    }
}

/// Lookups in `/etc/passwd` and `/etc/group` only, as NSS `files` does:
/// what a statically linked build can do safely.
#[cfg_attr(not(target_feature = "crt-static"), allow(dead_code))]
mod files {
    use super::super::passwd::{PwEntry, UserDb};
    use super::{IsolateError, ResolvedUser};

    fn entry(u: PwEntry) -> ResolvedUser {
        ResolvedUser {
            uid: u.uid,
            gid: u.gid,
            groups: Vec::new(),
            name: u.name,
            home: u.home,
        }
    }

    pub(super) fn user_by_uid(_user: &str, uid: u32) -> Result<Option<ResolvedUser>, IsolateError> {
        Ok(UserDb::host().user_by_uid(uid)?.map(entry))
    }

    pub(super) fn user_by_name(user: &str) -> Result<ResolvedUser, IsolateError> {
        let db = UserDb::host();
        db.user_by_name(user)?
            .map(entry)
            .ok_or_else(|| db.unknown("user", user))
    }

    pub(super) fn gid_by_name(group: &str) -> Result<u32, IsolateError> {
        let db = UserDb::host();
        db.gid_by_name(group)?
            .ok_or_else(|| db.unknown("group", group))
    }

    pub(super) fn group_list(_user: &str, name: &str, gid: u32) -> Result<Vec<u32>, IsolateError> {
        UserDb::host().group_list(name, gid)
    }
}

/// The credentials the child switches to.
#[derive(Debug)]
pub(crate) struct CredPlan {
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
}

/// The spec's user, or the supervisor's own (root) when none is given.
pub(crate) fn plan(spec: &IsolationSpec) -> Result<CredPlan, IsolateError> {
    Ok(CredPlan {
        uid: spec.uid.map_or_else(getuid, Uid::from_raw),
        gid: spec.gid.map_or_else(getgid, Gid::from_raw),
        groups: spec.groups.iter().copied().map(Gid::from_raw).collect(),
    })
}

impl CredPlan {
    /// Whether the task runs as root (it then keeps its bounding set).
    pub(crate) fn is_root(&self) -> bool {
        self.uid.is_root()
    }

    /// Who owns the task's writable directories.
    pub(crate) fn owner(&self) -> (Uid, Gid) {
        (self.uid, self.gid)
    }

    /// Child: keep-caps → setgroups → setresgid → setresuid.
    ///
    /// Groups and gid go first: once the uid is not 0, CAP_SETGID is no
    /// longer effective (setresuid(2), capabilities(7) "Effect of user ID
    /// changes on capabilities").
    pub(crate) fn switch(&self) -> Result<(), StepError> {
        // Keep the permitted set across the uid change, so the capabilities
        // granted to a non-root task can be made effective and ambient
        // afterwards (prctl(2) PR_SET_KEEPCAPS; cleared again by execve).
        prctl::set_keepcaps(true).map_err(StepError::with(Step::KeepCaps))?;
        // Replace the supervisor's supplementary groups.
        setgroups(&self.groups).map_err(StepError::with(Step::SetGroups))?;
        // Real, effective and saved gid: nothing left to switch back to.
        setresgid(self.gid, self.gid, self.gid).map_err(StepError::with(Step::SetGid))?;
        // Real, effective and saved uid; with keep-caps only the effective
        // set is cleared.
        setresuid(self.uid, self.uid, self.uid).map_err(StepError::with(Step::SetUid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_root_by_name_and_number() {
        let by_name = resolve_user("root", None).unwrap();
        assert_eq!(
            (by_name.uid, by_name.gid, by_name.home.as_str()),
            (0, 0, "/root")
        );
        assert!(by_name.groups.contains(&0));
        assert_eq!(resolve_user("0", None).unwrap(), by_name);
        assert_eq!(resolve_user("root", Some("4242")).unwrap().gid, 4242);
    }

    #[test]
    fn unknown_names_are_errors_but_bare_uids_are_fine() {
        assert!(matches!(
            resolve_user("no-such-user-xyz", None),
            Err(IsolateError::UnknownUser { .. } | IsolateError::NotInUserFiles { .. })
        ));
        let bare = resolve_user("48213", None).unwrap();
        assert_eq!((bare.uid, bare.gid), (48213, 48213));
        assert!(bare.name.is_empty());
    }
}
