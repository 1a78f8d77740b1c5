//! Task ids: the name of a task's directory, so also a path component.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::StateError;

/// Longest id accepted, in bytes.
pub const MAX_LEN: usize = 128;

/// A validated task id: `[A-Za-z0-9][A-Za-z0-9._-]{0,127}` and no `..`.
///
/// The rule keeps an id a single, harmless path component (no `/`, no NUL,
/// no leading `-` that a tool could take for an option, no newline that
/// would break line-oriented output).
///
/// # Examples
///
/// ```
/// use nomad_shim::TaskId;
///
/// # fn main() -> Result<(), nomad_shim::StateError> {
/// let id = TaskId::new("web.1")?;
/// assert_eq!(id.as_str(), "web.1");
/// assert!(TaskId::new("-rf").is_err() && TaskId::new("a/b").is_err());
/// assert_eq!(TaskId::generate().as_str().len(), 12);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TaskId(String);

impl TaskId {
    /// Validates `id`.
    pub fn new(id: impl Into<String>) -> Result<TaskId, StateError> {
        let id = id.into();
        match check(&id) {
            None => Ok(TaskId(id)),
            Some(reason) => Err(StateError::InvalidId { id, reason }),
        }
    }

    /// A fresh random id (12 hex digits).
    pub fn generate() -> TaskId {
        let mut bytes = [0u8; 6];
        if crate::sys::getrandom(&mut bytes).is_err() {
            // Only on kernels without getrandom(2): fall back to time and pid;
            // the exclusive mkdir of the task directory still catches a clash.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let x = t.as_nanos() as u64 ^ ((std::process::id() as u64) << 32);
            bytes.copy_from_slice(&x.to_le_bytes()[..6]);
        }
        TaskId(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check(id: &str) -> Option<&'static str> {
    let b = id.as_bytes();
    if b.is_empty() {
        return Some("is empty");
    }
    if b.len() > MAX_LEN {
        return Some("is longer than 128 bytes");
    }
    if !b[0].is_ascii_alphanumeric() {
        return Some("must start with a letter or digit");
    }
    if !b
        .iter()
        .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
    {
        return Some("may contain only letters, digits, '.', '_' and '-'");
    }
    if id.contains("..") {
        return Some("must not contain '..'");
    }
    None
}

impl TryFrom<String> for TaskId {
    type Error = StateError;
    fn try_from(s: String) -> Result<TaskId, StateError> {
        TaskId::new(s)
    }
}

impl From<TaskId> for String {
    fn from(id: TaskId) -> String {
        id.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // pad, not write_str: honours width and alignment (`ps` columns).
        f.pad(&self.0)
    }
}

impl std::str::FromStr for TaskId {
    type Err = StateError;
    fn from_str(s: &str) -> Result<TaskId, StateError> {
        TaskId::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in ["a", "web.1", "A-b_c.9", "0", &"x".repeat(128)] {
            TaskId::new(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
    }

    #[test]
    fn rejects_bad_ids_with_a_reason() {
        for bad in [
            "",
            "..",
            "a..b",
            "a/b",
            "a\0b",
            "-rf",
            ".hidden",
            "a\nb",
            "a b",
            "é",
            &"x".repeat(129),
            &"x".repeat(200),
        ] {
            let err = TaskId::new(bad).unwrap_err();
            assert!(matches!(err, StateError::InvalidId { .. }), "{bad:?}");
            assert!(err.to_string().starts_with("invalid task id"), "{err}");
        }
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = TaskId::generate();
        let b = TaskId::generate();
        assert_ne!(a, b);
        TaskId::new(a.as_str()).unwrap();
    }
}
