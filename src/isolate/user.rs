//! The task's credentials: resolved by name on the library side (full NSS),
//! switched to by number in the child.

use std::ffi::CString;

use nix::sys::prctl;
use nix::unistd::{getgid, getuid, setgroups, setresgid, setresuid, Gid, Group, Uid, User};

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
/// or a gid, replacing the primary group) through NSS. Library side only:
/// never call it in the supervisor's child.
///
/// A numeric uid without a passwd entry is accepted as is, with its own
/// number as gid unless `group` says otherwise, and no supplementary groups.
pub fn resolve_user(user: &str, group: Option<&str>) -> Result<ResolvedUser, IsolateError> {
    let lookup = |source| IsolateError::LookupUser {
        user: user.to_string(),
        source,
    };
    let entry = match user.parse::<u32>() {
        // (uid_t)-1: "unchanged" to setresuid(2), never a user.
        Ok(u32::MAX) => return Err(IsolateError::InvalidId { id: u32::MAX }),
        Ok(uid) => User::from_uid(Uid::from_raw(uid)).map_err(lookup)?,
        Err(_) => Some(User::from_name(user).map_err(lookup)?.ok_or_else(|| {
            IsolateError::UnknownUser {
                user: user.to_string(),
            }
        })?),
    };
    let mut resolved = match &entry {
        Some(u) => ResolvedUser {
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            groups: Vec::new(),
            name: u.name.clone(),
            home: u.dir.display().to_string(),
        },
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
        let name = CString::new(u.name.as_bytes()).map_err(|_| IsolateError::NulInPath {
            path: u.name.clone(),
        })?;
        let groups =
            nix::unistd::getgrouplist(&name, Gid::from_raw(resolved.gid)).map_err(lookup)?;
        resolved.groups = groups.into_iter().map(Gid::as_raw).collect();
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
    Group::from_name(group)
        .map_err(|source| IsolateError::LookupUser {
            user: group.to_string(),
            source,
        })?
        .map(|g| g.gid.as_raw())
        .ok_or_else(|| IsolateError::UnknownGroup {
            group: group.to_string(),
        })
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
            Err(IsolateError::UnknownUser { .. })
        ));
        let bare = resolve_user("48213", None).unwrap();
        assert_eq!((bare.uid, bare.gid), (48213, 48213));
        assert!(bare.name.is_empty());
    }
}
