//! The operator's command line (docs/cli.md). Errors print as one line on
//! stderr, `nomad-shim: <what failed>`; exit codes follow runc and podman:
//! 125 for an error of nomad-shim itself, 126 when the program cannot be
//! executed, 127 when it is not found; `run` and `wait` exit with the task's
//! code, or 128+N when signal N ended it.

mod attach;
mod exec;
mod explain;
mod follow;
mod generate;
mod launch;
mod ps_format;
mod query;
mod task_opts;
mod term;
mod update;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use nomad_shim::{Error, Executor, TaskExit};

/// Run tasks as supervised, isolated Linux processes that outlive the agent
/// that started them: one supervisor per task keeps its exit, logs and
/// cgroup limits, and answers on a control socket.
#[derive(Parser, Debug)]
#[command(
    name = "nomad-shim",
    version = VERSION,
    about = "Run tasks as supervised, isolated Linux processes that outlive the agent that started them",
    long_about = None,
    max_term_width = 100,
    after_help = EXAMPLES_TOP
)]
pub(crate) struct Cli {
    /// State directory [default: /run/nomad-shim as root, else $XDG_RUNTIME_DIR/nomad-shim]
    #[arg(long, value_name = "DIR", help_heading = "Global options")]
    root: Option<PathBuf>,
    /// Accepted here, before the verb, as before; `run` and `start` take it as a task option
    #[arg(long, value_name = "PATH", hide = true)]
    cgroup_parent: Option<String>,
    #[command(subcommand)]
    command: Command,
}

// `--root` after a verb: the same option as before it (`Cli::root`), last
// among the verb's options as clap lists a `global` arg. (No doc comment:
// see `Command`.)
#[derive(clap::Args, Debug, Default)]
pub(crate) struct GlobalOpts {
    /// State directory [default: /run/nomad-shim as root, else $XDG_RUNTIME_DIR/nomad-shim]
    #[arg(long, value_name = "DIR", help_heading = "Global options")]
    pub root: Option<PathBuf>,
}

impl Cli {
    /// `--root`, before or after the verb; as with a clap `global` arg,
    /// the one after the verb wins.
    fn root(&self) -> Option<&PathBuf> {
        self.command.root().or(self.root.as_ref())
    }
}

impl Command {
    /// The verb's `--root`, if it was given after the verb.
    fn root(&self) -> Option<&PathBuf> {
        match self {
            Command::Run { opts, .. } | Command::Start(opts) => opts.global.root.as_ref(),
            Command::Exec(opts) => opts.global.root.as_ref(),
            Command::Update(opts) => opts.global.root.as_ref(),
            Command::Ps { global, .. }
            | Command::Inspect { global, .. }
            | Command::Wait { global, .. }
            | Command::Kill { global, .. }
            | Command::Stop { global, .. }
            | Command::Stats { global, .. }
            | Command::Logs { global, .. }
            | Command::Attach { global, .. }
            | Command::Rm { global, .. } => global.root.as_ref(),
            // Not read: their hidden `--root` only keeps it out of their help.
            Command::Completions { .. } | Command::Man { .. } => None,
        }
    }
}

/// `--version`: a test build with failpoints says so (scripts/test checks
/// that a release build does not; src/failpoint.rs).
const VERSION: &str = if cfg!(feature = "failpoints") {
    concat!(env!("CARGO_PKG_VERSION"), " (features: failpoints)")
} else {
    env!("CARGO_PKG_VERSION")
};

const EXAMPLES_TOP: &str = "\
Examples:
  nomad-shim run --memory 256M -- python3 -c 'print(1)'
  nomad-shim start --id web --cpus 0.5 -- python3 -m http.server 8080
  nomad-shim ps
  nomad-shim update web --memory 512M
  nomad-shim stop web --timeout 10s && nomad-shim rm web

Exit codes: 125 an error of nomad-shim itself (the message names the option);
126 the program cannot be executed; 127 it is not found; run and wait exit
with the task's code, or 128+N when signal N ended it.";

// `defer`: a verb's options are built only when that verb is parsed (or
// its help shown), not all fifteen verbs' on every start: `run`'s parse
// took about 45 µs and some 30 page faults less, and a whole `run --rm`
// 5% less time (examples in docs/performance.md, "Fifth pass"). Two
// rules keep the output what it was: no `--root` as a clap `global` arg
// (it would be pushed into a verb before the verb's own options, and be
// listed first in its help), but each verb's own `GlobalOpts`, last; and
// no doc comment on a verb's options struct (its `augment_args`, run
// after the verb's attributes, would make it the verb's description).
#[derive(Subcommand, Debug)]
#[command(defer = true)]
enum Command {
    /// Start a task, wait for it, and exit with its code (128+N if signal N ended it).
    /// Its output is copied to this terminal; Ctrl-C is passed on to the task.
    #[command(override_usage = "nomad-shim run [OPTIONS] -- PROGRAM [ARGS]...")]
    #[command(after_help = "Examples:
  nomad-shim run -- echo hello
  nomad-shim run --rm --memory 64M --pids-limit 32 -- sh -c 'echo $$'
  nomad-shim run --task-dir /srv/t1 --chroot --ns pid,uts --hostname t1 -- /bin/sh -c hostname")]
    Run {
        /// Remove the task once it has ended (also if this command is killed or detached first).
        #[arg(long)]
        rm: bool,
        #[command(flatten)]
        opts: task_opts::TaskOpts,
    },
    /// Start a task detached and print its id.
    #[command(override_usage = "nomad-shim start [OPTIONS] -- PROGRAM [ARGS]...")]
    #[command(after_help = "Examples:
  nomad-shim start -- sleep 60
  nomad-shim start --id web --memory 256M --cpus 1.5 --kill-timeout 10s -- python3 -m http.server 8080")]
    Start(task_opts::TaskOpts),
    /// Run a program inside a running task (its namespaces, root, cgroup, user); exit with its code.
    #[command(override_usage = "nomad-shim exec [OPTIONS] ID -- PROGRAM [ARGS]...")]
    #[command(after_help = "Examples:
  nomad-shim exec web -- cat /proc/1/cmdline
  printf 'a\\nb\\n' | nomad-shim exec -i web -- wc -l
  nomad-shim exec -it web -- /bin/sh
  nomad-shim exec --user nobody --env LC_ALL=C --cwd /tmp web -- id

Exit codes: the program's code, or 128+N when signal N ended it; 125 when the
task does not exist or has ended; 126/127 when the program cannot be executed
or is not found.")]
    Exec(exec::ExecOpts),
    /// Change the limits of a running task, live; `max` removes a limit.
    #[command(after_help = "Examples:
  nomad-shim update web --memory 512M --memory-swap 0
  nomad-shim update web --cpus max --pids-limit 200
  nomad-shim update web --memory max")]
    Update(update::UpdateOpts),
    /// List tasks.
    #[command(after_help = "Examples:
  nomad-shim ps
  nomad-shim ps --format '{{.ID}} {{.Status}} {{.ExitCode}}'
  nomad-shim ps --format id,status,pid
  nomad-shim ps --json

Fields of --format: ID, Status, PID, ExitCode, Created, Started, Finished,
Command, Supervisor (case does not matter).")]
    Ps {
        /// An array of state.json documents.
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// One line per task: a template like '{{.ID}} {{.Status}}' or a field list like id,status
        #[arg(long, value_name = "TEMPLATE|FIELDS")]
        format: Option<String>,
        #[command(flatten)]
        global: GlobalOpts,
    },
    /// Show a task's state.
    #[command(after_help = "Examples:
  nomad-shim inspect web
  nomad-shim inspect web --json")]
    Inspect {
        /// Task id.
        id: String,
        /// Print state.json as it is.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        global: GlobalOpts,
    },
    /// Block until a task ends; exit like `run`.
    #[command(after_help = "Examples:
  nomad-shim wait web; echo \"web exited with $?\"")]
    Wait {
        /// Task id.
        id: String,
        #[command(flatten)]
        global: GlobalOpts,
    },
    /// Send a signal to a task's main process.
    #[command(after_help = "Examples:
  nomad-shim kill web
  nomad-shim kill web HUP
  nomad-shim kill web 9")]
    Kill {
        /// Task id.
        id: String,
        /// Signal name (TERM, SIGTERM) or number; kill(1)'s -9 and -KILL forms too
        #[arg(
            default_value = "SIGTERM",
            allow_hyphen_values = true,
            value_parser = task_opts::parse_kill_signal_arg
        )]
        signal: nix::sys::signal::Signal,
        #[command(flatten)]
        global: GlobalOpts,
    },
    /// Stop a task gracefully: its kill signal, then SIGKILL to all of it after the timeout.
    #[command(after_help = "Examples:
  nomad-shim stop web
  nomad-shim stop web --signal INT --timeout 30s")]
    Stop {
        /// Task id.
        id: String,
        /// First signal [default: the task's kill signal]
        #[arg(long, value_parser = task_opts::parse_signal_arg)]
        signal: Option<nix::sys::signal::Signal>,
        /// Grace period: 10s, 500ms, 1m [default: the task's kill timeout]
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
        #[command(flatten)]
        global: GlobalOpts,
    },
    /// CPU, memory and pids of a task's cgroup.
    #[command(after_help = "Examples:
  nomad-shim stats web
  nomad-shim stats web --json")]
    Stats {
        /// Task id.
        id: String,
        /// The stats as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        global: GlobalOpts,
    },
    /// Print a task's output.
    #[command(after_help = "Examples:
  nomad-shim logs web
  nomad-shim logs web --stderr --tail 20 --follow")]
    Logs {
        /// Task id.
        id: String,
        /// Standard error instead of standard output.
        #[arg(long)]
        stderr: bool,
        /// Keep printing until the task ends.
        #[arg(long, short)]
        follow: bool,
        /// Only the last N lines (N >= 0) [default: all]
        #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = task_opts::parse_count)]
        tail: Option<usize>,
        #[command(flatten)]
        global: GlobalOpts,
    },
    /// Connect this terminal to a task's own terminal (or stdin) started with -t or -i.
    /// Ctrl-P Ctrl-Q detaches and leaves the task running; when the task ends, exit with its code.
    #[command(after_help = "Examples:
  nomad-shim start --id sh -it -- /bin/sh && nomad-shim attach sh
  printf 'a\\nb\\n' | nomad-shim attach wc   # a task started with -i (no -t)")]
    Attach {
        /// Task id.
        id: String,
        #[command(flatten)]
        global: GlobalOpts,
    },
    /// Remove an ended task's state.
    #[command(after_help = "Examples:
  nomad-shim rm web
  nomad-shim rm --force web   # kill it first, or remove a broken task directory")]
    Rm {
        /// Task id.
        id: String,
        /// Kill the task first if it still runs; remove a broken task directory.
        #[arg(long, short)]
        force: bool,
        #[command(flatten)]
        global: GlobalOpts,
    },
    /// Print a shell completion script for bash, zsh or fish.
    #[command(after_help = "Examples:
  nomad-shim completions bash > /etc/bash_completion.d/nomad-shim
  nomad-shim completions zsh > \"${fpath[1]}/_nomad-shim\"
  nomad-shim completions fish > ~/.config/fish/completions/nomad-shim.fish")]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: generate::Shell,
        /// Not read here: keeps the global --root out of this verb's help.
        #[arg(long, hide = true, value_name = "DIR")]
        root: Option<PathBuf>,
    },
    /// Print the manual page (roff) made from these same definitions.
    #[command(after_help = "Examples:
  nomad-shim man | man -l -
  nomad-shim man > /usr/local/share/man/man1/nomad-shim.1")]
    Man {
        /// Not read here: keeps the global --root out of this verb's help.
        #[arg(long, hide = true, value_name = "DIR")]
        root: Option<PathBuf>,
    },
}

/// Exit code for an error of nomad-shim itself.
pub const EXIT_ERROR: i32 = 125;

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    // In a region the supervisor forked by `run`/`start` drops
    // (scratch.rs): from here to that fork (cli/launch.rs), or to the end
    // of the parse for every other command. std's handle of this thread
    // first (a lazily made one would be in the region).
    let _ = std::thread::current();
    #[cfg(feature = "failpoints")]
    nomad_shim::failpoint::load();
    crate::scratch::begin();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            crate::scratch::end();
            return usage_error(e);
        }
    };
    if matches!(cli.command, Command::Run { .. } | Command::Start(_)) {
        // The process-wide cache the library fills on a start (this boot's
        // id), filled now outside the region: the forked supervisor reads
        // it, and a cached pointer into the region would read zeros there.
        crate::scratch::end();
        let _ = nomad_shim::identity::boot_id();
        crate::scratch::begin();
    } else {
        crate::scratch::end();
    }
    match &cli.command {
        Command::Completions { shell, .. } => return generate::completions(*shell),
        Command::Man { .. } => return generate::man(),
        _ => {}
    }
    let root = cli.root().cloned();
    if let Err(msg) = explain::check_root(root.as_deref()) {
        return usage_fail(&msg);
    }
    let mut executor = match &root {
        Some(root) => Executor::with_root(root),
        None => match Executor::new() {
            Ok(e) => e,
            Err(e) => return fail(&e),
        },
    };
    let parent = match &cli.command {
        Command::Run { opts, .. } | Command::Start(opts) => opts.cgroup_parent.as_ref(),
        _ => None,
    };
    if let Some(parent) = parent.or(cli.cgroup_parent.as_ref()) {
        executor = executor.cgroup_parent(parent);
    }
    if let Command::Run { opts, .. } | Command::Start(opts) = &cli.command {
        if let Err(msg) = opts.check() {
            return usage_fail(&msg);
        }
    }
    let result = match cli.command {
        Command::Run { rm, opts } => follow::run(&executor, opts, rm),
        Command::Start(opts) => task_opts::start(&executor, opts),
        Command::Update(opts) => update::update(&executor, &opts),
        Command::Exec(opts) => exec::exec(&executor, opts),
        Command::Ps { json, format, .. } => query::ps(&executor, json, format.as_deref()),
        Command::Inspect { id, json, .. } => query::inspect(&executor, &id, json),
        Command::Wait { id, .. } => executor.open(&id).and_then(|mut t| {
            print_warnings(&t);
            t.wait().map(|exit| exit_code(&id, &exit))
        }),
        Command::Kill { id, signal, .. } => query::kill(&executor, &id, signal),
        Command::Stop {
            id,
            signal,
            timeout,
            ..
        } => query::stop(&executor, &id, signal, timeout),
        Command::Stats { id, json, .. } => query::stats(&executor, &id, json),
        Command::Logs {
            id,
            stderr,
            follow,
            tail,
            ..
        } => follow::logs(&executor, &id, stderr, follow, tail),
        Command::Attach { id, .. } => attach::attach(&executor, &id),
        Command::Rm { id, force, .. } => {
            let removed = executor.remove(&id, force).map(|()| 0);
            if let (Err(e), false) = (&removed, force) {
                return usage_fail(&explain::rm_hint(e, &id));
            }
            removed
        }
        Command::Completions { .. } | Command::Man { .. } => Ok(0),
    };
    reap_exited_supervisor();
    result.unwrap_or_else(|e| fail(&e))
}

/// `run` and `start` fork the supervisor (launch.rs): one that has exited
/// by now (`run`'s, right after recording the exit) is reaped here, so it
/// is never left a zombie for whoever inherits it; one still running is
/// re-parented when we exit, as after an intermediate's exit.
fn reap_exited_supervisor() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

/// An error found by the CLI itself, already worded: one line, exit 125.
fn usage_fail(msg: &str) -> i32 {
    eprintln!("nomad-shim: {msg}");
    EXIT_ERROR
}

/// Help and version go to stdout (exit 0); a usage error is one line on
/// stderr and exit 125, like every other error of nomad-shim itself.
fn usage_error(e: clap::Error) -> i32 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            // Help on a closed stdout (`| head`): nothing to say it on.
            let _ = e.print();
            0
        }
        _ => {
            // clap's message up to its usage block, on one line: "the
            // following required arguments were not provided: --task-dir <DIR>".
            let text = e.render().to_string();
            let what: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty() && !l.starts_with("Usage:"))
                .map(str::trim)
                .collect();
            let what = what.join(" ");
            let what = what.strip_prefix("error: ").unwrap_or(&what);
            eprintln!("nomad-shim: {what} (see nomad-shim --help)");
            EXIT_ERROR
        }
    }
}

/// What the start could not do, one line each on stderr.
fn print_warnings(task: &nomad_shim::Task) {
    for w in task.warnings() {
        eprintln!("nomad-shim: warning: task {}: {w}", task.id());
    }
}

/// Prints the error (in the options' words where it names a library
/// field) and picks the exit code.
fn fail(e: &Error) -> i32 {
    eprintln!("nomad-shim: {}", explain::error(e));
    if e.is_not_found() {
        127
    } else if e.is_not_executable() {
        126
    } else {
        EXIT_ERROR
    }
}

/// The process exit code for a task's exit, as a shell reports it.
fn exit_code(id: &str, exit: &TaskExit) -> i32 {
    match exit {
        TaskExit::Exited(r) => {
            if r.oom_killed == Some(true) {
                eprintln!(
                    "nomad-shim: task {id}: the kernel's OOM killer killed a process of the task (its memory limit, --memory, was reached)"
                );
            }
            r.shell_code().unwrap_or(EXIT_ERROR)
        }
        TaskExit::Lost { reason } => {
            eprintln!("nomad-shim: task {id} lost: {reason}");
            EXIT_ERROR
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Cli, Command};

    #[test]
    fn the_definitions_pass_claps_own_checks_for_every_verb() {
        // Every verb built (`defer` builds only the one parsed), so a
        // clash in any verb's options fails here, not in an operator's run.
        Cli::command().debug_assert();
    }

    #[test]
    fn root_is_taken_before_and_after_the_verb_and_the_later_one_wins() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).expect("parses").root().cloned();
        assert_eq!(
            parse(&["nomad-shim", "--root", "/a", "ps"]),
            Some("/a".into())
        );
        assert_eq!(
            parse(&["nomad-shim", "ps", "--root", "/b"]),
            Some("/b".into())
        );
        assert_eq!(
            parse(&["nomad-shim", "--root", "/a", "rm", "x", "--root", "/b"]),
            Some("/b".into())
        );
        assert_eq!(
            parse(&["nomad-shim", "run", "--rm", "--root", "/b", "--", "true"]),
            Some("/b".into())
        );
        assert_eq!(parse(&["nomad-shim", "ps"]), None);
        let cli = Cli::try_parse_from(["nomad-shim", "completions", "bash"]).expect("parses");
        assert!(matches!(cli.command, Command::Completions { .. }));
    }

    #[test]
    fn a_verbs_help_has_its_own_description_and_lists_root_last() {
        // The descriptions before the verbs' options are built (`defer`)
        // are the verbs' own; building must not replace them.
        let unbuilt = Cli::command();
        let mut cmd = Cli::command();
        cmd.build();
        for verb in unbuilt.get_subcommands() {
            let name = verb.get_name();
            let about = |c: &clap::Command| c.get_about().map(|a| a.to_string());
            let built = cmd.find_subcommand_mut(name).expect("the same verbs");
            assert_eq!(about(built), about(verb), "{name}'s description");
            let help = built.render_long_help().to_string();
            let Some(global) = help.find("Global options:") else {
                continue;
            };
            for heading in ["Options:", "Limits:", "Isolation:"] {
                if let Some(at) = help.find(heading) {
                    assert!(
                        at < global,
                        "{name}: {heading} after Global options:\n{help}"
                    );
                }
            }
        }
    }
}
