//! Resource limits: parsed in `prepare`, applied first in the child.

use nix::sys::resource::{setrlimit, Resource};

use super::error::IsolateError;
use super::spec::RlimitSpec;
use super::Subjects;
use crate::step::{Step, StepError, SubjectId};

/// One limit, ready for setrlimit(2).
#[derive(Debug)]
pub(crate) struct RlimitPlan {
    resource: Resource,
    soft: u64,
    hard: u64,
    subject: SubjectId,
}

/// Resource names (without the `RLIMIT_` prefix, lower case) → resources.
const NAMES: &[(&str, Resource)] = &[
    ("as", Resource::RLIMIT_AS),
    ("core", Resource::RLIMIT_CORE),
    ("cpu", Resource::RLIMIT_CPU),
    ("data", Resource::RLIMIT_DATA),
    ("fsize", Resource::RLIMIT_FSIZE),
    ("locks", Resource::RLIMIT_LOCKS),
    ("memlock", Resource::RLIMIT_MEMLOCK),
    ("msgqueue", Resource::RLIMIT_MSGQUEUE),
    ("nice", Resource::RLIMIT_NICE),
    ("nofile", Resource::RLIMIT_NOFILE),
    ("nproc", Resource::RLIMIT_NPROC),
    ("rss", Resource::RLIMIT_RSS),
    ("rtprio", Resource::RLIMIT_RTPRIO),
    ("rttime", Resource::RLIMIT_RTTIME),
    ("sigpending", Resource::RLIMIT_SIGPENDING),
    ("stack", Resource::RLIMIT_STACK),
];

/// `nofile`, `NOFILE`, `RLIMIT_NOFILE` → `RLIMIT_NOFILE`; checks soft ≤ hard.
pub(crate) fn parse(spec: &RlimitSpec) -> Result<Resource, IsolateError> {
    let lower = spec.resource.to_ascii_lowercase();
    let short = lower.strip_prefix("rlimit_").unwrap_or(&lower);
    let resource = NAMES
        .iter()
        .find(|(n, _)| *n == short)
        .map(|(_, r)| *r)
        .ok_or_else(|| IsolateError::UnknownRlimit {
            name: spec.resource.clone(),
        })?;
    if spec.soft > spec.hard {
        return Err(IsolateError::RlimitSoftAboveHard {
            name: spec.resource.clone(),
            soft: spec.soft,
            hard: spec.hard,
        });
    }
    Ok(resource)
}

/// Parses every limit and registers its name for error messages.
pub(crate) fn plan(
    specs: &[RlimitSpec],
    subjects: &mut Subjects,
) -> Result<Vec<RlimitPlan>, IsolateError> {
    specs
        .iter()
        .map(|s| {
            Ok(RlimitPlan {
                resource: parse(s)?,
                soft: s.soft,
                hard: s.hard,
                subject: subjects.add(format!("{:?} {}:{}", parse(s)?, s.soft, s.hard)),
            })
        })
        .collect()
}

/// Child: setrlimit(2) each limit, before any privilege is dropped (raising
/// a hard limit needs CAP_SYS_RESOURCE).
pub(crate) fn apply(limits: &[RlimitPlan]) -> Result<(), StepError> {
    for l in limits {
        setrlimit(l.resource, l.soft, l.hard)
            .map_err(StepError::with_on(Step::SetRlimit, l.subject))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, soft: u64, hard: u64) -> RlimitSpec {
        RlimitSpec {
            resource: name.into(),
            soft,
            hard,
        }
    }

    #[test]
    fn names_in_any_form() {
        for n in ["nofile", "NOFILE", "RLIMIT_NOFILE", "rlimit_nofile"] {
            assert_eq!(parse(&spec(n, 1, 2)).unwrap(), Resource::RLIMIT_NOFILE);
        }
    }

    #[test]
    fn unknown_and_inverted_are_errors() {
        assert!(matches!(
            parse(&spec("files", 1, 1)),
            Err(IsolateError::UnknownRlimit { .. })
        ));
        assert!(matches!(
            parse(&spec("nofile", 3, 2)),
            Err(IsolateError::RlimitSoftAboveHard { .. })
        ));
    }
}
