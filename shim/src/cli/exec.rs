//! `nomad-shim exec ID [-i] [-t] [--user U] [--env K=V] [--cwd DIR] -- PROGRAM [ARGS...]`:
//! a program run inside a running task ([`nomad_shim::Task::exec`]); the
//! CLI exits with its code, or 128+N when signal N ended it.
//!
//! Without `-t` the program gets this process's stdout and stderr, and its
//! stdin with `-i` (else `/dev/null`): the descriptors themselves, passed
//! to the supervisor, so EOF on stdin is the program's EOF. With `-t` it
//! runs on a pseudo-terminal; this terminal is raw while attached
//! (`term.rs`).

use std::os::fd::AsFd;
use std::path::PathBuf;

use clap::Args;
use nomad_shim::{Error, ExecSpec, ExecStdio, Executor};

use super::term::{self, RawMode, RelayEnd};
use super::EXIT_ERROR;

// Options of `exec`. (Not a doc comment: see cli::Command.)
#[derive(Args, Debug)]
pub struct ExecOpts {
    /// Task id.
    pub id: String,
    /// Keep stdin open: stream it to the program (EOF closes it); without -i it reads /dev/null.
    #[arg(long, short)]
    pub interactive: bool,
    /// Run the program on a pseudo-terminal (this terminal in raw mode while attached).
    #[arg(long, short)]
    pub tty: bool,
    /// Run as this user instead of the task's: NAME, UID, NAME:GROUP or UID:GID.
    #[arg(long, short, value_name = "USER")]
    pub user: Option<String>,
    /// Set an environment variable over the task's (repeatable).
    #[arg(long, short, value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Working directory inside the task [default: the task's].
    #[arg(long, short = 'w', value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// The program and its arguments.
    #[arg(required = true, last = true, value_name = "PROGRAM")]
    pub command: Vec<String>,
    /// `--root` after the verb.
    #[command(flatten)]
    pub global: super::GlobalOpts,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// Runs `exec`; returns the exit code.
pub fn exec(executor: &Executor, opts: ExecOpts) -> Result<i32, Error> {
    if let Some(cwd) = opts.cwd.as_deref().filter(|c| !c.is_absolute()) {
        eprintln!(
            "nomad-shim: --cwd {}: must be an absolute path inside the task",
            cwd.display()
        );
        return Ok(EXIT_ERROR);
    }
    let (user, cwd) = (opts.user.clone(), opts.cwd.clone());
    match run(executor, opts) {
        Err(e) => match in_option_words(&e, user.as_deref(), cwd.as_deref()) {
            Some(message) => {
                eprintln!("nomad-shim: {message}");
                Ok(EXIT_ERROR)
            }
            None => Err(e),
        },
        ok => ok,
    }
}

/// An error of exec's own options in their words: the user of `--user`
/// (exec has no `--group`), the directory of `--cwd`.
fn in_option_words(e: &Error, user: Option<&str>, cwd: Option<&std::path::Path>) -> Option<String> {
    match (e, user, cwd) {
        (
            Error::Isolate(nomad_shim::IsolateError::NotInUserFiles { name, file, .. }),
            Some(user),
            _,
        ) => Some(format!(
            "--user {user}: {name} is not in {}; this nomad-shim is linked statically and resolves names from /etc/passwd and /etc/group only, never through NSS (systemd, sss, ldap): pass numeric ids (--user UID:GID)",
            file.display()
        )),
        (
            Error::ExecFailed {
                step: nomad_shim::Step::Chdir,
                errno: Some(errno),
                ..
            },
            _,
            Some(cwd),
        ) => Some(format!(
            "--cwd {}: {} (inside the task's root)",
            cwd.display(),
            nix::errno::Errno::from_raw(*errno).desc()
        )),
        _ => None,
    }
}

fn run(executor: &Executor, opts: ExecOpts) -> Result<i32, Error> {
    let task = executor.open(&opts.id)?;
    let mut spec = ExecSpec::new(opts.command[0].clone());
    spec.args(opts.command[1..].iter().cloned());
    for (k, v) in opts.env {
        spec.env(k, v);
    }
    if let Some(cwd) = opts.cwd {
        spec.cwd(cwd);
    }
    if let Some(user) = opts.user {
        spec.user(user);
    }
    if !opts.tty {
        spec.stdin(if opts.interactive {
            ExecStdio::Inherit
        } else {
            ExecStdio::Null
        });
        let mut session = task.exec(&spec)?;
        return Ok(session.wait()?.shell_code());
    }

    spec.tty(true);
    if let Some(size) = term::our_window_size() {
        spec.winsize(size.rows, size.cols);
    }
    // The signals first: one that comes while the terminal is raw must end
    // the relay (and restore the terminal), never the process.
    let signals = term::relay_signals().map_err(|e| io("block signals for", &opts.id, e))?;
    let mut session = task.exec(&spec)?;
    let Some(master) = session.pty() else {
        return Err(io(
            "get the terminal of",
            &opts.id,
            nix::errno::Errno::ENOTTY,
        ));
    };
    let master = master.try_clone_to_owned().map_err(|e| {
        let errno = nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
        io("get the terminal of", &opts.id, errno)
    })?;
    let end = {
        let _raw =
            RawMode::enable().map_err(|e| io("put the terminal in raw mode for", &opts.id, e))?;
        // Without -i nothing typed reaches the program (docker's -t alone).
        term::relay(
            master.as_fd(),
            &signals,
            session.wait_fd(),
            opts.interactive,
            None,
        )
        // _raw drops here: the terminal is restored before anything is
        // printed below.
    };
    match end {
        RelayEnd::Signal(n) => {
            // The session's master is closed when we exit: the kernel hangs
            // the terminal up, and the program (its session leader) gets
            // SIGHUP, as after a closed ssh session.
            eprintln!("nomad-shim: exec in {}: interrupted by signal {n}; the program's terminal is hung up (it gets SIGHUP)", opts.id);
            Ok(128 + n)
        }
        RelayEnd::Detached | RelayEnd::Ended => match session.wait() {
            Ok(exit) => Ok(exit.shell_code()),
            Err(e @ Error::ExecLost { .. }) => {
                eprintln!("nomad-shim: {e}");
                Ok(EXIT_ERROR)
            }
            Err(e) => Err(e),
        },
    }
}

fn io(op: &'static str, id: &str, e: nix::errno::Errno) -> Error {
    Error::Io {
        op,
        what: format!("exec in {id}"),
        source: e.into(),
    }
}
