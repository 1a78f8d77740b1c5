//! The operator's command line (docs/cli.md). Errors print as one line on
//! stderr, `nomad-shim: <what failed>`; exit codes follow runc and podman:
//! 125 for an error of nomad-shim itself, 126 when the program cannot be
//! executed, 127 when it is not found; `run` and `wait` exit with the task's
//! code, or 128+N when signal N ended it.

mod follow;
mod launch;
mod query;
mod task_opts;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use nomad_shim::{Error, Executor, TaskExit};

/// nomad-shim: run tasks as supervised, isolated processes that outlive the agent.
#[derive(Parser, Debug)]
#[command(name = "nomad-shim", version, about, max_term_width = 100)]
struct Cli {
    /// State directory [default: /run/nomad-shim as root, else $XDG_RUNTIME_DIR/nomad-shim]
    #[arg(long, global = true, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Parent cgroup of the tasks' cgroups (a task option; accepted anywhere) [default: nomad-shim]
    #[arg(long, global = true, value_name = "PATH")]
    cgroup_parent: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a task, wait for it, and exit with its code (128+N if signal N ended it).
    /// Its output is copied to this terminal; Ctrl-C is passed on to the task.
    Run {
        /// Remove the task's state once it has ended.
        #[arg(long)]
        rm: bool,
        #[command(flatten)]
        opts: task_opts::TaskOpts,
    },
    /// Start a task detached and print its id.
    Start(task_opts::TaskOpts),
    /// List tasks.
    Ps {
        /// An array of state.json documents.
        #[arg(long)]
        json: bool,
    },
    /// Show a task's state.
    Inspect {
        /// Task id.
        id: String,
        /// Print state.json as it is.
        #[arg(long)]
        json: bool,
    },
    /// Block until a task ends; exit like `run`.
    Wait {
        /// Task id.
        id: String,
    },
    /// Send a signal to a task's main process.
    Kill {
        /// Task id.
        id: String,
        /// Signal name or number.
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Stop a task gracefully: its kill signal, then SIGKILL to all of it after the timeout.
    Stop {
        /// Task id.
        id: String,
        /// First signal [default: the task's kill signal].
        #[arg(long)]
        signal: Option<String>,
        /// Grace period, e.g. 10s or 500ms [default: the task's kill timeout].
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
    },
    /// CPU, memory and pids of a task's cgroup.
    Stats {
        /// Task id.
        id: String,
        /// The stats as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a task's output.
    Logs {
        /// Task id.
        id: String,
        /// Standard error instead of standard output.
        #[arg(long)]
        stderr: bool,
        /// Keep printing until the task ends.
        #[arg(long, short)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
    },
    /// Remove an ended task's state.
    Rm {
        /// Task id.
        id: String,
        /// Kill the task first if it still runs; remove a broken task directory.
        #[arg(long, short)]
        force: bool,
    },
}

/// Exit code for an error of nomad-shim itself.
pub const EXIT_ERROR: i32 = 125;

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let mut executor = match &cli.root {
        Some(root) => Executor::with_root(root),
        None => match Executor::new() {
            Ok(e) => e,
            Err(e) => return fail(&e),
        },
    };
    if let Some(parent) = &cli.cgroup_parent {
        executor = executor.cgroup_parent(parent);
    }
    let result = match cli.command {
        Command::Run { rm, opts } => follow::run(&executor, opts, rm),
        Command::Start(opts) => task_opts::start(&executor, opts),
        Command::Ps { json } => query::ps(&executor, json),
        Command::Inspect { id, json } => query::inspect(&executor, &id, json),
        Command::Wait { id } => executor
            .open(&id)
            .and_then(|mut t| t.wait())
            .map(|exit| exit_code(&id, &exit)),
        Command::Kill { id, signal } => query::kill(&executor, &id, &signal),
        Command::Stop {
            id,
            signal,
            timeout,
        } => query::stop(&executor, &id, signal.as_deref(), timeout),
        Command::Stats { id, json } => query::stats(&executor, &id, json),
        Command::Logs {
            id,
            stderr,
            follow,
            tail,
        } => follow::logs(&executor, &id, stderr, follow, tail),
        Command::Rm { id, force } => executor.remove(&id, force).map(|()| 0),
    };
    result.unwrap_or_else(|e| fail(&e))
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

/// Prints the error and picks the exit code.
fn fail(e: &Error) -> i32 {
    eprintln!("nomad-shim: {e}");
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
        TaskExit::Exited(r) => r.shell_code().unwrap_or(EXIT_ERROR),
        TaskExit::Lost { reason } => {
            eprintln!("nomad-shim: task {id} lost: {reason}");
            EXIT_ERROR
        }
    }
}

/// A usage error found after parsing (a bad signal name, say).
fn usage(msg: String) -> Error {
    Error::Io {
        op: "parse",
        what: "arguments".into(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, msg),
    }
}
