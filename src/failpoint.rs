//! Failpoints: named places in the supervisor's and the library's lifecycle
//! where a test build can make the process die on purpose (issue 9), so
//! that every crash the design claims to survive is tried, not assumed.
//!
//! Compiled in only with the crate feature `failpoints` (off by default;
//! the `nomad-shim` binary forwards its own feature of the same name).
//! Without it, [`failpoint!`](crate::failpoint!) expands to nothing: the
//! release binary holds neither the names nor the code
//! (`nomad-shim --version` says `failpoints` when it has them, and
//! `scripts/test` checks that a release build does not).
//!
//! With it, `NOMAD_SHIM_FAILPOINTS` arms points, comma-separated:
//!
//! ```text
//! NOMAD_SHIM_FAILPOINTS=supervisor-after-fork=kill,state-before-rename=abort@2
//! ```
//!
//! * `kill`: `SIGKILL` to the process itself (what an OOM kill or `kill -9`
//!   does: no clean-up of any kind);
//! * `abort`: `abort(3)` (`SIGABRT`, with core dumps off);
//! * `exit`: `_exit(2)` with status 86 (no destructors, no atexit handlers).
//!
//! `@N` fires at the N-th time the point is reached in the process (1 is
//! the first, and the default). A `supervisor:` or `agent:` prefix arms a
//! point in that process only (the library's points, such as the state
//! write's, run in both): the supervisor is a process run as `nomad-shim
//! __supervise` (with its intermediate, and its task child until exec);
//! every other process is the agent. The library passes the variable on to the
//! supervisor it spawns (which otherwise gets an empty environment). The
//! names are listed in [`NAMES`] and in docs/reliability.md.

/// The environment variable that arms failpoints.
pub const ENV: &str = "NOMAD_SHIM_FAILPOINTS";

/// A file that each point that fires appends a line `NAME PID` to, before
/// it acts (so a test knows that its crash happened where it meant).
pub const LOG_ENV: &str = "NOMAD_SHIM_FAILPOINTS_LOG";

/// Every failpoint, in lifecycle order. A name not in this list is refused
/// (the process exits 86 with a message), so that a typo in a test cannot
/// silently test nothing.
pub const NAMES: &[&str] = &[
    // The library (agent), between spawning the supervisor and its reply.
    "library-after-spawn",
    // The intermediate process, after it forked the supervisor.
    "intermediate-after-fork",
    // The supervisor, just forked.
    "supervisor-after-fork",
    // The task's cgroup made (every directory, with its limits), not yet
    // marked as this root's.
    "cgroup-before-mark",
    // Around the first state write (`starting`).
    "supervisor-before-state-starting",
    "supervisor-after-state-starting",
    // The task child, just cloned (before any isolation step).
    "child-after-fork",
    // The supervisor, just after it cloned the task child.
    "supervisor-after-clone",
    // Around the `running` state write, and after the reply.
    "supervisor-before-state-running",
    "supervisor-after-state-running",
    "supervisor-after-reply",
    // Between reaping the task's main process and recording its exit.
    "supervisor-after-reap",
    // In the whole-cgroup kill: the cgroup frozen (v1) or killed (v2),
    // before it is thawed / waited for.
    "cgroup-kill-frozen",
    // A graceful stop: the kill signal sent, the grace timer not armed.
    "supervisor-shutdown-signalled",
    // Around the final (`exited`) state write.
    "supervisor-before-state-exited",
    "supervisor-after-state-exited",
    // Shutdown: the exit durable, the cgroup not yet removed.
    "supervisor-before-cgroup-remove",
    // Inside every atomic state write: the temporary file written and
    // synced, not yet renamed into place; and renamed, the directory not
    // yet synced.
    "state-before-rename",
    "state-after-rename",
];

/// Stops the process if the failpoint `name` is armed (see the module
/// docs). A call is one line: `nomad_shim::failpoint!("name");`, which
/// compiles to nothing without the `failpoints` feature.
#[cfg(feature = "failpoints")]
#[macro_export]
#[doc(hidden)]
macro_rules! failpoint {
    ($name:expr) => {
        $crate::failpoint::hit($name)
    };
}

/// Stops the process if the failpoint `name` is armed; compiled out here
/// (the `failpoints` feature is off).
#[cfg(not(feature = "failpoints"))]
#[macro_export]
#[doc(hidden)]
macro_rules! failpoint {
    ($name:expr) => {};
}

#[cfg(feature = "failpoints")]
pub use imp::{armed, become_supervisor, hit, load};

#[cfg(feature = "failpoints")]
mod imp {
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// What an armed point does.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Action {
        Kill,
        Abort,
        Exit,
    }

    /// Per point: the action, the hit that fires it, the hits so far.
    type Table = HashMap<String, (Action, u32, u32)>;

    /// `supervisor` or `agent` (see the module docs): by the command line,
    /// unless [`become_supervisor`] said otherwise.
    fn role() -> &'static str {
        if FORKED_SUPERVISOR.load(std::sync::atomic::Ordering::Relaxed) {
            return "supervisor";
        }
        match std::env::args_os().nth(1) {
            Some(a) if a == crate::executor::SUPERVISE_SUBCOMMAND => "supervisor",
            _ => "agent",
        }
    }

    /// Set in a supervisor forked (not exec'd) from the CLI.
    static FORKED_SUPERVISOR: std::sync::atomic::AtomicBool =
        std::sync::atomic::AtomicBool::new(false);

    /// Reads the armed points now (they are read at the first hit
    /// otherwise). The CLI calls it before its scratch region (the binary's
    /// scratch.rs): a table first made inside it would be in pages the
    /// supervisor it forks drops.
    pub fn load() {
        let mut table = TABLE.lock().unwrap_or_else(|p| p.into_inner());
        table.get_or_insert_with(parse_env);
    }

    /// This process is now a supervisor forked from the CLI (`run`,
    /// `start`): its points are those of the `supervisor` role, read anew.
    pub fn become_supervisor() {
        FORKED_SUPERVISOR.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut table = TABLE.lock().unwrap_or_else(|p| p.into_inner());
        *table = Some(parse_env());
    }

    fn parse_env() -> Table {
        match parse(&std::env::var(super::ENV).unwrap_or_default(), role()) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("nomad-shim: {}: {e}", super::ENV);
                crate::sys::exit_now(86)
            }
        }
    }

    static TABLE: Mutex<Option<Table>> = Mutex::new(None);

    fn parse(spec: &str, role: &str) -> Result<Table, String> {
        let mut t = Table::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (only, point) = match item.split_once(':') {
                Some((r @ ("supervisor" | "agent"), point)) => (Some(r), point),
                Some((r, _)) => return Err(format!("{item:?}: unknown role {r:?}")),
                None => (None, item),
            };
            let (name, action) = point
                .split_once('=')
                .ok_or_else(|| format!("{item:?}: expected NAME=ACTION"))?;
            if !super::NAMES.contains(&name) {
                return Err(format!("{name:?}: no such failpoint"));
            }
            let (action, nth) = match action.split_once('@') {
                Some((a, n)) => (
                    a,
                    n.parse::<u32>()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| format!("{item:?}: @N needs N >= 1"))?,
                ),
                None => (action, 1),
            };
            let action = match action {
                "kill" => Action::Kill,
                "abort" => Action::Abort,
                "exit" => Action::Exit,
                other => return Err(format!("{item:?}: unknown action {other:?}")),
            };
            if only.is_none_or(|r| r == role) {
                t.insert(name.to_owned(), (action, nth, 0));
            }
        }
        Ok(t)
    }

    /// The variables set here, to pass on to a spawned supervisor.
    pub fn armed() -> Vec<(&'static str, std::ffi::OsString)> {
        [super::ENV, super::LOG_ENV]
            .into_iter()
            .filter_map(|k| std::env::var_os(k).map(|v| (k, v)))
            .collect()
    }

    fn log_fired(name: &str) {
        use std::io::Write;
        if let Some(path) = std::env::var_os(super::LOG_ENV) {
            let line = format!("{name} {}\n", std::process::id());
            let _ = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(path)
                .and_then(|mut f| f.write_all(line.as_bytes()));
        }
    }

    /// Stops the process if `name` is armed and this is its hit.
    pub fn hit(name: &str) {
        let action = {
            // A poisoned lock: a thread panicked inside `hit`, which only
            // happens on a bad spec (reported there); carry on.
            let mut table = TABLE.lock().unwrap_or_else(|p| p.into_inner());
            let table = table.get_or_insert_with(parse_env);
            match table.get_mut(name) {
                Some((action, nth, hits)) => {
                    *hits += 1;
                    (*hits == *nth).then_some(*action)
                }
                None => None,
            }
        };
        if action.is_some() {
            log_fired(name);
        }
        match action {
            None => {}
            Some(Action::Kill) => {
                let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
                // SIGKILL to ourselves is delivered before raise returns.
                crate::sys::exit_now(86)
            }
            Some(Action::Abort) => {
                // No core file of a test crash anywhere (core(5)).
                let _ =
                    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
                std::process::abort()
            }
            Some(Action::Exit) => crate::sys::exit_now(86),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parses_names_actions_and_counts() {
            let t = parse(
                "supervisor-after-fork=kill, supervisor:state-before-rename=abort@3,\
                 agent:cgroup-kill-frozen=exit",
                "supervisor",
            )
            .unwrap();
            assert_eq!(t["supervisor-after-fork"], (Action::Kill, 1, 0));
            assert_eq!(t["state-before-rename"], (Action::Abort, 3, 0));
            assert!(!t.contains_key("cgroup-kill-frozen"));
            let e = parse("nope=kill", "agent").unwrap_err();
            assert!(e.contains("no such failpoint"), "{e}");
            let e = parse("supervisor-after-fork=explode", "agent").unwrap_err();
            assert!(e.contains("unknown action"), "{e}");
            assert!(parse("supervisor-after-fork=kill@0", "agent").is_err());
            assert!(parse("supervisor-after-fork", "agent").is_err());
            assert!(parse("daemon:supervisor-after-fork=kill", "agent").is_err());
        }
    }
}
