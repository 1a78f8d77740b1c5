//! The task spec: what to run and how, built like [`std::process::Command`]
//! and stored as the task's `spec.json`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::cgroup::Resources;
use crate::isolate::IsolationSpec;
use crate::stdio::{Stdin, WindowSize};

/// Nomad's default: 10 files of 10 MB per stream.
const DEFAULT_LOG_MAX_FILES: u32 = 10;
/// Most log files kept per stream (each rotation renames every older one).
pub const MAX_LOG_FILES: u32 = 1000;
const DEFAULT_LOG_MAX_SIZE: u64 = 10 * 1024 * 1024;
const DEFAULT_KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// `PATH` of a task whose environment does not set one (Debian's default for
/// root, as runc and Docker use).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How the supervisor keeps a task's output: `stdout.log` and `stderr.log` in
/// the task's state directory, rotated to `.1` … `.N-1` at `max_size` bytes.
///
/// # Examples
///
/// ```
/// use nomad_shim::{LogPolicy, TaskSpec};
///
/// let mut spec = TaskSpec::new("/usr/bin/env");
/// // stdout.log, stdout.log.1, stdout.log.2 (the same for stderr), 10 MiB each.
/// spec.logs(LogPolicy { max_files: 3, max_size: 10 << 20 });
/// assert!(spec.validate().is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPolicy {
    /// How many files per stream, the live one included (at least 1).
    pub max_files: u32,
    /// Size at which a file is rotated, in bytes (at least 1).
    pub max_size: u64,
}

impl Default for LogPolicy {
    fn default() -> LogPolicy {
        LogPolicy {
            max_files: DEFAULT_LOG_MAX_FILES,
            max_size: DEFAULT_LOG_MAX_SIZE,
        }
    }
}

/// A task to start: program, arguments, environment, working directory,
/// and how to stop it. Serialized as `spec.json`.
///
/// The program is executed directly with `execve(2)`, never through a shell:
/// arguments arrive exactly as given. A program name without `/` is looked up
/// as Nomad does: in the task dir's `local/`, the task dir, then the task's
/// `PATH` (its environment's, else [`DEFAULT_PATH`]); see docs/cli.md.
///
/// ```
/// use std::time::Duration;
/// let mut spec = nomad_shim::TaskSpec::new("/bin/sh");
/// spec.args(["-c", "echo $GREETING"]).env("GREETING", "hello").kill_timeout(Duration::from_secs(2));
/// assert_eq!(spec.argv(), ["/bin/sh", "-c", "echo $GREETING"]);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// The id to give the task; `None` generates one.
    #[serde(default)]
    pub id: Option<String>,
    /// The program (a path, or a name looked up in `PATH`).
    pub program: String,
    /// Arguments after the program name.
    #[serde(default)]
    pub args: Vec<String>,
    /// The task's whole environment: nothing is inherited from the agent.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory; `None` is `/`.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// The signal that asks the task to stop (Nomad's `kill_signal`).
    #[serde(default = "default_kill_signal", with = "signal_name")]
    pub kill_signal: Signal,
    /// How long a stop waits after the kill signal before SIGKILL (Nomad's
    /// `kill_timeout`), in milliseconds.
    #[serde(default = "default_kill_timeout_ms")]
    pub kill_timeout_ms: u64,
    /// What happens to the task's output.
    #[serde(default)]
    pub logs: LogPolicy,
    /// The user to run as, by name or number (Nomad's `user`). Resolved in
    /// the agent with full NSS when the task starts; the supervisor gets
    /// numbers (in `isolation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The group, by name or number; default: the user's primary group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Resource limits, enforced by the task's cgroup (Nomad's `resources`).
    #[serde(default)]
    pub resources: Resources,
    /// Apply the limits the host can enforce and skip the others (with a
    /// warning) instead of failing the start.
    #[serde(default)]
    pub best_effort_limits: bool,
    /// The cgroup under which the task's cgroup is made (relative to each
    /// hierarchy's root); default [`crate::cgroup::DEFAULT_PARENT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_parent: Option<String>,
    /// Filesystem isolation, namespaces, capabilities, rlimits.
    #[serde(default)]
    pub isolation: IsolationSpec,
    /// The task's standard input: `/dev/null` (default) or held by the
    /// supervisor for an attached client ([`Stdin`]).
    #[serde(default, skip_serializing_if = "Stdin::is_null")]
    pub stdin: Stdin,
    /// A pseudo-terminal as the task's stdin, stdout and stderr, its
    /// controlling terminal; its output is logged as stdout.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
    /// The terminal's size when it is made (with [`TaskSpec::tty`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty_size: Option<WindowSize>,
}

fn default_kill_signal() -> Signal {
    Signal::SIGTERM
}

fn default_kill_timeout_ms() -> u64 {
    DEFAULT_KILL_TIMEOUT.as_millis() as u64
}

impl TaskSpec {
    /// A spec that runs `program` with no arguments and an empty environment.
    pub fn new(program: impl Into<String>) -> TaskSpec {
        TaskSpec {
            id: None,
            program: program.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            cwd: None,
            kill_signal: default_kill_signal(),
            kill_timeout_ms: default_kill_timeout_ms(),
            logs: LogPolicy::default(),
            user: None,
            group: None,
            resources: Resources::default(),
            best_effort_limits: false,
            cgroup_parent: None,
            isolation: IsolationSpec::default(),
            stdin: Stdin::Null,
            tty: false,
            tty_size: None,
        }
    }

    /// Sets the task id (validated when the task starts).
    pub fn id(&mut self, id: impl Into<String>) -> &mut TaskSpec {
        self.id = Some(id.into());
        self
    }

    /// Appends one argument.
    pub fn arg(&mut self, arg: impl Into<String>) -> &mut TaskSpec {
        self.args.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut TaskSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets one environment variable.
    pub fn env(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut TaskSpec {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Sets environment variables.
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut TaskSpec
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Sets the working directory.
    pub fn cwd(&mut self, dir: impl Into<PathBuf>) -> &mut TaskSpec {
        self.cwd = Some(dir.into());
        self
    }

    /// Sets the signal a graceful stop sends first.
    pub fn kill_signal(&mut self, signal: Signal) -> &mut TaskSpec {
        self.kill_signal = signal;
        self
    }

    /// Sets how long a graceful stop waits before SIGKILL.
    pub fn kill_timeout(&mut self, timeout: Duration) -> &mut TaskSpec {
        self.kill_timeout_ms = timeout.as_millis().min(u64::MAX as u128) as u64;
        self
    }

    /// Sets the log rotation policy.
    pub fn logs(&mut self, policy: LogPolicy) -> &mut TaskSpec {
        self.logs = policy;
        self
    }

    /// Runs the task as `user` (a name or a uid), resolved when it starts.
    pub fn user(&mut self, user: impl Into<String>) -> &mut TaskSpec {
        self.user = Some(user.into());
        self
    }

    /// Runs the task with primary group `group` (a name or a gid).
    pub fn group(&mut self, group: impl Into<String>) -> &mut TaskSpec {
        self.group = Some(group.into());
        self
    }

    /// Sets the resource limits.
    pub fn resources(&mut self, resources: Resources) -> &mut TaskSpec {
        self.resources = resources;
        self
    }

    /// Sets the isolation (chroot, namespaces, capabilities, rlimits).
    pub fn isolation(&mut self, isolation: IsolationSpec) -> &mut TaskSpec {
        self.isolation = isolation;
        self
    }

    /// Sets what the task reads on its stdin ([`Stdin`]).
    pub fn stdin(&mut self, stdin: Stdin) -> &mut TaskSpec {
        self.stdin = stdin;
        self
    }

    /// Gives the task a pseudo-terminal as stdin, stdout and stderr (its
    /// controlling terminal, `docker run -t`). Its output is logged as
    /// stdout, with the terminal's `\r\n` line ends. With
    /// [`Stdin::Piped`] an attached client types into it.
    ///
    /// ```
    /// use nomad_shim::{Stdin, TaskSpec};
    ///
    /// let mut spec = TaskSpec::new("/bin/sh");
    /// spec.tty(true).stdin(Stdin::Piped); // docker run -it
    /// assert!(spec.tty);
    /// ```
    pub fn tty(&mut self, tty: bool) -> &mut TaskSpec {
        self.tty = tty;
        self
    }

    /// The terminal's size when it is made (only with [`TaskSpec::tty`]).
    pub fn tty_size(&mut self, size: WindowSize) -> &mut TaskSpec {
        self.tty_size = Some(size);
        self
    }

    /// Sets the parent cgroup of the task's cgroup.
    pub fn cgroup_parent(&mut self, parent: impl Into<String>) -> &mut TaskSpec {
        self.cgroup_parent = Some(parent.into());
        self
    }

    /// The full argument vector: program, then arguments.
    pub fn argv(&self) -> Vec<&str> {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect()
    }

    /// The kill timeout as a [`Duration`].
    pub fn kill_timeout_duration(&self) -> Duration {
        Duration::from_millis(self.kill_timeout_ms)
    }

    /// Checks what can be checked before anything is created: a non-empty
    /// program, no NUL bytes (they cannot cross `execve(2)`), `=` not in an
    /// environment key, a sane log policy.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.program.is_empty() {
            return Err(SpecError::new("program", "is empty"));
        }
        let has_nul = |s: &str| s.as_bytes().contains(&0);
        if has_nul(&self.program) || self.args.iter().any(|a| has_nul(a)) {
            return Err(SpecError::new("argv", "contains a NUL byte"));
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || has_nul(k) || has_nul(v) {
                return Err(SpecError::new(
                    "env",
                    format!("bad variable {k:?}: keys are non-empty, without '=' or NUL"),
                ));
            }
        }
        if let Some(cwd) = &self.cwd {
            if !cwd.is_absolute() {
                return Err(SpecError::new(
                    "cwd",
                    format!("{} is not absolute", cwd.display()),
                ));
            }
        }
        // Each rotation renames every older file: a bound keeps it short
        // (and the supervisor's loop responsive).
        if self.logs.max_files > MAX_LOG_FILES {
            return Err(SpecError::new(
                "logs",
                format!("max_files must be at most {MAX_LOG_FILES}"),
            ));
        }
        if self.logs.max_files == 0 || self.logs.max_size == 0 {
            return Err(SpecError::new(
                "logs",
                "max_files and max_size must be at least 1",
            ));
        }
        Ok(())
    }
}

/// A spec that cannot be run, and why.
///
/// # Examples
///
/// ```
/// use nomad_shim::TaskSpec;
///
/// let err = TaskSpec::new("").validate().unwrap_err();
/// assert_eq!(err.field, "program");
/// assert_eq!(err.to_string(), "invalid task spec: program is empty");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid task spec: {field} {reason}")]
pub struct SpecError {
    /// The field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl SpecError {
    fn new(field: &'static str, reason: impl Into<String>) -> SpecError {
        SpecError {
            field,
            reason: reason.into(),
        }
    }
}

/// Parses a signal given as `SIGTERM`, `TERM`, `term` or `15`.
pub fn parse_signal(s: &str) -> Option<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse().ok()
}

/// Serializes a signal as its name (`"SIGTERM"`), accepting a name or number.
mod signal_name {
    use nix::sys::signal::Signal;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(sig: &Signal, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(sig.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Signal, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum NameOrNumber {
            Name(String),
            Number(i32),
        }
        match NameOrNumber::deserialize(d)? {
            NameOrNumber::Name(n) => super::parse_signal(&n)
                .ok_or_else(|| D::Error::custom(format!("unknown signal {n:?}"))),
            NameOrNumber::Number(n) => {
                Signal::try_from(n).map_err(|_| D::Error::custom(format!("unknown signal {n}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips_through_json() {
        let mut spec = TaskSpec::new("sleep");
        spec.id("t1")
            .args(["1", "a b"])
            .env("K", "v=1")
            .cwd("/tmp")
            .kill_signal(Signal::SIGINT)
            .kill_timeout(Duration::from_millis(1500));
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.contains("\"kill_signal\":\"SIGINT\""), "{json}");
        assert_eq!(serde_json::from_str::<TaskSpec>(&json).unwrap(), spec);
        let minimal: TaskSpec =
            serde_json::from_str(r#"{"program":"true","kill_signal":9}"#).unwrap();
        assert_eq!(minimal.kill_signal, Signal::SIGKILL);
        assert_eq!(minimal.kill_timeout_ms, 5000);
    }

    #[test]
    fn validation_names_the_field() {
        assert_eq!(TaskSpec::new("").validate().unwrap_err().field, "program");
        assert_eq!(TaskSpec::new("a\0b").validate().unwrap_err().field, "argv");
        assert_eq!(
            TaskSpec::new("x")
                .env("A=B", "1")
                .validate()
                .unwrap_err()
                .field,
            "env"
        );
        assert_eq!(
            TaskSpec::new("x").cwd("rel").validate().unwrap_err().field,
            "cwd"
        );
        TaskSpec::new("x")
            .env("A", "b=c; $(rm -rf /)\n")
            .validate()
            .unwrap();
    }

    #[test]
    fn signals_parse_by_name_or_number() {
        assert_eq!(parse_signal("TERM"), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("sigkill"), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("2"), Some(Signal::SIGINT));
        assert_eq!(parse_signal("NOPE"), None);
        assert_eq!(parse_signal("999"), None);
    }
}
