//! TASK OPTIONS of `run` and `start`: each maps to one field of the
//! library's [`TaskSpec`].

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use nomad_shim::spec::parse_signal;
use nomad_shim::{Error, Executor, LogPolicy, TaskSpec};

/// What to run and how.
#[derive(Args, Debug)]
pub struct TaskOpts {
    /// Task id [default: generated]
    #[arg(long)]
    id: Option<String>,
    /// Environment variable of the task (repeatable); nothing else is inherited
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Working directory of the task [default: /]
    #[arg(long, value_name = "DIR")]
    cwd: Option<PathBuf>,
    /// Signal a graceful stop sends first [kill_signal]
    #[arg(long, default_value = "SIGTERM", value_parser = parse_signal_arg)]
    kill_signal: nix::sys::signal::Signal,
    /// Grace period before SIGKILL [kill_timeout]
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    kill_timeout: Duration,
    /// Log files kept per stream
    #[arg(long, default_value_t = LogPolicy::default().max_files)]
    log_max_files: u32,
    /// Size at which a log file is rotated, e.g. 10M
    #[arg(long, default_value = "10M", value_parser = parse_size)]
    log_max_size: u64,
    /// The program and its arguments
    #[arg(last = true, required = true, value_name = "PROGRAM [ARGS]...")]
    command: Vec<String>,
}

impl TaskOpts {
    /// The library spec these options describe.
    pub fn spec(&self) -> TaskSpec {
        let mut spec = TaskSpec::new(&self.command[0]);
        spec.args(&self.command[1..])
            .envs(self.env.iter().cloned())
            .kill_signal(self.kill_signal)
            .kill_timeout(self.kill_timeout);
        spec.logs(LogPolicy {
            max_files: self.log_max_files,
            max_size: self.log_max_size,
        });
        if let Some(id) = &self.id {
            spec.id(id);
        }
        if let Some(cwd) = &self.cwd {
            spec.cwd(cwd);
        }
        spec
    }
}

/// `start`: prints the id and exits 0.
pub fn start(executor: &Executor, opts: TaskOpts) -> Result<i32, Error> {
    let task = executor.start(&opts.spec())?;
    println!("{}", task.id());
    Ok(0)
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn parse_signal_arg(s: &str) -> Result<nix::sys::signal::Signal, String> {
    parse_signal(s).ok_or_else(|| format!("unknown signal {s:?}"))
}

/// Parses a size: bytes, or a number with K, M, G or T (powers of 1024),
/// optionally followed by `B` or `iB`: `256M`, `1GiB`, `4096`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        Some('T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size (like 256M)"))?;
    if !(n.is_finite() && n >= 0.0) {
        return Err(format!("{s:?} is not a size"));
    }
    let bytes = n * mult as f64;
    if bytes > u64::MAX as f64 {
        return Err(format!("{s:?} is too large"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-1M").is_err());
    }
}
