//! Capabilities: the final sets are computed in `prepare`; the child only
//! drops, sets and raises what was computed (capabilities(7)).

use caps::{CapSet, Capability, CapsHashSet};

use super::error::IsolateError;
use super::last_errno;
use super::spec::IsolationSpec;
use crate::step::{Step, StepError};

/// Nomad's default bounding set: Docker's defaults minus `NET_RAW`.
pub const DEFAULT_BOUNDING: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// One entry of a `cap_add`/`cap_drop` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CapName {
    /// `ALL`.
    All,
    /// One capability.
    One(Capability),
}

/// Parses `NET_BIND_SERVICE`, `cap_net_bind_service`, `ALL` (any case).
pub(crate) fn parse_list(names: &[String]) -> Result<Vec<CapName>, IsolateError> {
    names
        .iter()
        .map(|n| {
            if n.eq_ignore_ascii_case("all") {
                return Ok(CapName::All);
            }
            caps::to_canonical(n)
                .parse::<Capability>()
                .map(CapName::One)
                .map_err(|_| IsolateError::UnknownCapability { name: n.clone() })
        })
        .collect()
}

/// The sets the child ends with.
#[derive(Debug)]
pub(crate) struct CapPlan {
    /// Dropped from the bounding set (every known capability not kept).
    bounding_drop: Vec<Capability>,
    /// Effective and permitted after the uid switch.
    granted: CapsHashSet,
    /// Inheritable: the ambient caps (ambient needs them inheritable too).
    inheritable: CapsHashSet,
    /// Raised in the ambient set (non-root user with `cap_add` only).
    ambient: Vec<Capability>,
}

/// Docker's rules: start from the defaults (all with `cap_add: ALL`, none
/// with `cap_drop: ALL`), add `cap_add`, remove `cap_drop`.
pub(crate) fn bounding_set(spec: &IsolationSpec) -> Result<CapsHashSet, IsolateError> {
    let add = parse_list(&spec.cap_add)?;
    let drop = parse_list(&spec.cap_drop)?;
    let mut set: CapsHashSet = if drop.contains(&CapName::All) {
        CapsHashSet::new()
    } else if add.contains(&CapName::All) {
        caps::all()
    } else {
        DEFAULT_BOUNDING.iter().copied().collect()
    };
    for a in &add {
        match a {
            CapName::All => set.extend(caps::all()),
            CapName::One(c) => {
                set.insert(*c);
            }
        }
    }
    for d in &drop {
        if let CapName::One(c) = d {
            set.remove(c);
        }
    }
    // Nomad's `allow_caps`: the task keeps only what the operator allows
    // (its basis is the defaults ∩ allow_caps; a `cap_add` outside the list
    // was refused by `check_allowed`).
    if let Some(allowed) = allowed_set(spec)? {
        set.retain(|c| allowed.contains(c));
    }
    Ok(set)
}

/// The operator's allow list as a set (`ALL`: every capability), or `None`
/// when the spec has none.
fn allowed_set(spec: &IsolationSpec) -> Result<Option<CapsHashSet>, IsolateError> {
    let Some(names) = &spec.allowed_caps else {
        return Ok(None);
    };
    let mut set = CapsHashSet::new();
    for n in parse_list(names)? {
        match n {
            CapName::All => set.extend(caps::all()),
            CapName::One(c) => {
                set.insert(c);
            }
        }
    }
    Ok(Some(set))
}

/// Refuses a `cap_add` the operator's `allowed_caps` does not list (Nomad:
/// "driver does not allow the following capabilities"), naming each one.
pub(crate) fn check_allowed(spec: &IsolationSpec) -> Result<(), IsolateError> {
    let Some(allowed) = allowed_set(spec)? else {
        return Ok(());
    };
    let mut missing: Vec<Capability> = Vec::new();
    for a in parse_list(&spec.cap_add)? {
        let wanted: Vec<Capability> = match a {
            CapName::All => caps::all().into_iter().collect(),
            CapName::One(c) => vec![c],
        };
        for c in wanted {
            if !allowed.contains(&c) && !missing.contains(&c) {
                missing.push(c);
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    missing.sort_by_key(|c| c.index());
    let mut allowed: Vec<Capability> = allowed.into_iter().collect();
    allowed.sort_by_key(|c| c.index());
    let join = |v: &[Capability]| {
        v.iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let allowed = if allowed.is_empty() {
        "none".to_string()
    } else {
        join(&allowed)
    };
    Err(IsolateError::CapabilityNotAllowed {
        name: join(&missing),
        allowed,
    })
}

/// The sets for a root task (everything in the bounding set, as execve(2)
/// gives root anyway) or a non-root one (only `cap_add`, through ambient).
pub(crate) fn plan(spec: &IsolationSpec, is_root: bool) -> Result<CapPlan, IsolateError> {
    check_kernel_caps()?;
    let bounding = bounding_set(spec)?;
    let mut bounding_drop: Vec<Capability> = caps::all()
        .into_iter()
        .filter(|c| !bounding.contains(c))
        .collect();
    bounding_drop.sort_by_key(|c| c.index());
    // capset(2) can only keep what we hold: grant nothing the supervisor
    // (whose capabilities the child inherits) does not have itself.
    let held = caps::read(None, CapSet::Permitted).unwrap_or_default();
    if is_root {
        return Ok(CapPlan {
            bounding_drop,
            granted: bounding.intersection(&held).copied().collect(),
            inheritable: CapsHashSet::new(),
            ambient: Vec::new(),
        });
    }
    let mut added: CapsHashSet = CapsHashSet::new();
    for a in parse_list(&spec.cap_add)? {
        match a {
            CapName::All => added.extend(caps::all()),
            CapName::One(c) => {
                added.insert(c);
            }
        }
    }
    added.retain(|c| bounding.contains(c) && held.contains(c));
    let mut ambient: Vec<Capability> = added.iter().copied().collect();
    ambient.sort_by_key(|c| c.index());
    Ok(CapPlan {
        bounding_drop,
        granted: added.clone(),
        inheritable: added,
        ambient,
    })
}

/// Refuses to run on a kernel with capabilities `caps` cannot name: they
/// could not be dropped from the bounding set, and a root task would get
/// them at execve.
fn check_kernel_caps() -> Result<(), IsolateError> {
    let text = crate::sys::read_small_string("/proc/sys/kernel/cap_last_cap".as_ref())
        .map_err(IsolateError::ReadCapLastCap)?;
    let last_cap: u8 = text.trim().parse().map_err(|_| {
        IsolateError::ReadCapLastCap(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unparsable {text:?}"),
        ))
    })?;
    let known = caps::all().iter().map(|c| c.index()).max().unwrap_or(0);
    if last_cap > known {
        return Err(IsolateError::UnknownKernelCapabilities { last_cap, known });
    }
    Ok(())
}

impl CapPlan {
    /// Child, first privilege step: `PR_CAPBSET_DROP` each capability not
    /// kept. Needs CAP_SETPCAP, so it runs before the uid switch.
    pub(crate) fn drop_bounding(&self) -> Result<(), StepError> {
        for c in &self.bounding_drop {
            caps::drop(None, CapSet::Bounding, *c)
                .map_err(|_| StepError::new(Step::DropBounding, last_errno()))?;
        }
        Ok(())
    }

    /// Child, after setresuid: effective, permitted and inheritable in one
    /// capset(2). The new triple keeps effective ⊆ permitted ⊆ the old
    /// permitted and inheritable ⊆ permitted ∪ bounding, so it needs no
    /// CAP_SETPCAP (capabilities(7)); a failure is reported as the
    /// effective set's step.
    pub(crate) fn set_final(&self) -> Result<(), StepError> {
        let mask = |set: &CapsHashSet| set.iter().fold(0u64, |m, c| m | c.bitmask());
        let granted = mask(&self.granted);
        crate::sys::capset(granted, granted, mask(&self.inheritable))
            .map_err(|e| StepError::new(Step::SetEffective, e))
    }

    /// Child: `PR_CAP_AMBIENT_RAISE` each ambient cap (it must already be
    /// permitted and inheritable, prctl(2)). Ambient caps survive the execve
    /// of an unprivileged program, so a non-root task keeps exactly these.
    pub(crate) fn raise_ambient(&self) -> Result<(), StepError> {
        for c in &self.ambient {
            caps::raise(None, CapSet::Ambient, *c)
                .map_err(|_| StepError::new(Step::RaiseAmbient, last_errno()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(add: &[&str], drop: &[&str]) -> IsolationSpec {
        IsolationSpec {
            cap_add: add.iter().map(|s| s.to_string()).collect(),
            cap_drop: drop.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn names_parse_in_any_form() {
        let names = [
            "NET_BIND_SERVICE",
            "cap_net_bind_service",
            "Cap_Net_Bind_Service",
        ];
        for n in names {
            assert_eq!(
                parse_list(&[n.to_string()]).unwrap(),
                vec![CapName::One(Capability::CAP_NET_BIND_SERVICE)]
            );
        }
        assert_eq!(
            parse_list(&["all".to_string()]).unwrap(),
            vec![CapName::All]
        );
        assert!(matches!(
            parse_list(&["NET_FROB".to_string()]),
            Err(IsolateError::UnknownCapability { .. })
        ));
    }

    #[test]
    fn bounding_set_follows_docker_rules() {
        let default: CapsHashSet = DEFAULT_BOUNDING.iter().copied().collect();
        assert_eq!(bounding_set(&spec(&[], &[])).unwrap(), default);
        assert!(!default.contains(&Capability::CAP_NET_RAW));
        let s = bounding_set(&spec(&["NET_RAW"], &["chown"])).unwrap();
        assert!(s.contains(&Capability::CAP_NET_RAW) && !s.contains(&Capability::CAP_CHOWN));
        let s = bounding_set(&spec(&["NET_BIND_SERVICE"], &["ALL"])).unwrap();
        assert_eq!(s, [Capability::CAP_NET_BIND_SERVICE].into_iter().collect());
        assert_eq!(bounding_set(&spec(&["ALL"], &[])).unwrap(), caps::all());
    }

    #[test]
    fn non_root_gets_only_cap_add() {
        let p = plan(&spec(&[], &[]), false).unwrap();
        assert!(p.granted.is_empty() && p.inheritable.is_empty() && p.ambient.is_empty());
        let p = plan(&spec(&["NET_BIND_SERVICE"], &[]), false).unwrap();
        assert_eq!(p.ambient, vec![Capability::CAP_NET_BIND_SERVICE]);
        assert_eq!(p.granted, p.inheritable);
        let p = plan(&spec(&["NET_BIND_SERVICE"], &["NET_BIND_SERVICE"]), false).unwrap();
        assert!(p.ambient.is_empty(), "drop wins over add");
    }

    #[test]
    fn allowed_caps_limit_the_set_and_refuse_cap_add_outside_it() {
        let mut s = spec(&["NET_RAW"], &[]);
        s.allowed_caps = Some(vec!["chown".into(), "KILL".into()]);
        match check_allowed(&s) {
            Err(IsolateError::CapabilityNotAllowed { name, allowed }) => {
                assert_eq!(name, "CAP_NET_RAW");
                assert_eq!(allowed, "CAP_CHOWN,CAP_KILL");
            }
            other => panic!("{other:?}"),
        }
        s.cap_add = vec!["kill".into()];
        check_allowed(&s).unwrap();
        let want: CapsHashSet = [Capability::CAP_CHOWN, Capability::CAP_KILL]
            .into_iter()
            .collect();
        assert_eq!(bounding_set(&s).unwrap(), want, "defaults ∩ allowed");
        // ALL asks for every capability: refused unless all are allowed.
        s.cap_add = vec!["ALL".into()];
        assert!(matches!(
            check_allowed(&s),
            Err(IsolateError::CapabilityNotAllowed { .. })
        ));
        s.allowed_caps = Some(vec!["all".into()]);
        check_allowed(&s).unwrap();
        // No list: no restriction (the pre-allowed_caps behaviour).
        check_allowed(&spec(&["SYS_ADMIN"], &[])).unwrap();
    }

    #[test]
    fn root_gets_the_bounding_set_and_no_inheritable() {
        let p = plan(&spec(&[], &[]), true).unwrap();
        let held = caps::read(None, CapSet::Permitted).unwrap();
        let want: CapsHashSet = DEFAULT_BOUNDING
            .iter()
            .filter(|c| held.contains(c))
            .copied()
            .collect();
        assert_eq!(p.granted, want);
        assert!(p.inheritable.is_empty() && p.ambient.is_empty());
        assert_eq!(
            p.bounding_drop.len(),
            caps::all().len() - DEFAULT_BOUNDING.len()
        );
    }
}
