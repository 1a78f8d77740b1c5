//! TASK OPTIONS of `run` and `start`: each maps to one field of the
//! library's [`TaskSpec`].

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use nomad_shim::cgroup::Resources;
use nomad_shim::isolate::{self, IsolationSpec};
use nomad_shim::spec::parse_signal;
use nomad_shim::{Error, Executor, LogPolicy, TaskSpec};

// What to run and how. (Not a doc comment: see cli::Command.)
#[derive(Args, Debug)]
pub struct TaskOpts {
    /// Task id [default: generated]
    #[arg(long)]
    id: Option<String>,
    /// Keep the task's stdin open for this command (run) or a later `attach` (start) [stdin: piped]
    #[arg(long, short = 'i')]
    pub interactive: bool,
    /// Give the task a terminal (a pty) as stdin, stdout and stderr; its output is logged as stdout [tty]
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Parent cgroup of the task's cgroup, relative to each hierarchy's root [default: nomad-shim]
    #[arg(long, value_name = "PATH")]
    pub cgroup_parent: Option<String>,
    /// Environment variable of the task (repeatable); nothing else is inherited
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Working directory of the task [default: / with --chroot or without --task-dir, else the task dir]
    #[arg(long, value_name = "DIR")]
    cwd: Option<PathBuf>,
    /// Signal a graceful stop sends first [kill_signal]
    #[arg(long, value_name = "SIGNAL", default_value = "SIGTERM", value_parser = parse_signal_arg)]
    kill_signal: nix::sys::signal::Signal,
    /// Grace period before SIGKILL: 5s, 500ms, 1m [kill_timeout]
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    kill_timeout: Duration,
    /// Log files kept per stream
    #[arg(long, value_name = "N", default_value_t = LogPolicy::default().max_files)]
    log_max_files: u32,
    /// Size at which a log file is rotated: bytes, or K, M, G (powers of 1024)
    #[arg(long, value_name = "SIZE", default_value = "10M", allow_hyphen_values = true, value_parser = parse_size)]
    log_max_size: u64,
    /// Run as this user, by name or uid [user]
    #[arg(long, value_name = "NAME|UID")]
    user: Option<String>,
    /// Primary group, by name or gid [default: the user's]
    #[arg(long, value_name = "NAME|GID")]
    group: Option<String>,

    /// Memory hard limit: bytes, or K, M, G (powers of 1024), e.g. 256M [default: none]
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true, value_parser = parse_size, help_heading = "Resources")]
    memory: Option<u64>,
    /// Memory soft limit, a size like 128M (v2 memory.high, v1 soft_limit_in_bytes) [default: none]
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true, value_parser = parse_size, help_heading = "Resources")]
    memory_reservation: Option<u64>,
    /// Swap allowed beyond --memory, a size like 64M; 0 = no swap [default: the kernel's]
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true, value_parser = parse_size, help_heading = "Resources")]
    memory_swap: Option<u64>,
    /// Relative CPU weight, Nomad's cpu (MHz), 1024 = one normal task [v1 cpu.shares; v2 cpu.weight, converted]
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = parse_count_u64, help_heading = "Resources")]
    cpu_shares: Option<u64>,
    /// CPU quota in CPUs, e.g. 1.5 (at least 0.01) [default: none]
    #[arg(
        long,
        value_name = "CPUS",
        allow_hyphen_values = true,
        help_heading = "Resources"
    )]
    cpus: Option<f64>,
    /// CPUs the task may run on, e.g. 0-1
    #[arg(long, value_name = "LIST", help_heading = "Resources")]
    cpuset_cpus: Option<String>,
    /// Memory nodes the task may use, e.g. 0
    #[arg(long, value_name = "LIST", help_heading = "Resources")]
    cpuset_mems: Option<String>,
    /// Most processes and threads at once (at least 1) [default: none]
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = parse_count_u64, help_heading = "Resources")]
    pids_limit: Option<u64>,
    /// IO weight, 1-10000 (v1 blkio weight, scaled) [default: the kernel's, 100]
    #[arg(
        long,
        value_name = "N",
        allow_hyphen_values = true,
        help_heading = "Resources"
    )]
    io_weight: Option<u16>,
    /// Skip limits the host cannot enforce (with a warning) instead of failing
    #[arg(long, help_heading = "Resources")]
    best_effort_limits: bool,

    /// The task's directory; alloc/ local/ secrets/ tmp/ are made in it
    #[arg(long, value_name = "DIR", help_heading = "Isolation")]
    task_dir: Option<PathBuf>,
    /// The allocation's shared directory, mounted at alloc/ in the task dir
    #[arg(long, value_name = "DIR", help_heading = "Isolation")]
    alloc_dir: Option<PathBuf>,
    /// Isolate the filesystem: pivot_root into --task-dir built from the chroot env
    #[arg(long, requires = "task_dir", help_heading = "Isolation")]
    chroot: bool,
    /// Host path bound read-only into the chroot (repeatable) [chroot_env; default: Nomad's list]
    #[arg(long, value_name = "SRC[:DST]", value_parser = parse_bind, help_heading = "Isolation")]
    chroot_env: Vec<isolate::BindSpec>,
    /// Extra namespaces: any of pid,ipc,uts
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = ["pid", "ipc", "uts"], help_heading = "Isolation")]
    ns: Vec<String>,
    /// Join this network namespace (e.g. /run/netns/NAME)
    #[arg(long, value_name = "PATH", help_heading = "Isolation")]
    netns: Option<PathBuf>,
    /// Hostname in the task's UTS namespace (needs --ns uts)
    #[arg(long, value_name = "NAME", help_heading = "Isolation")]
    hostname: Option<String>,
    /// Add a capability (repeatable) [cap_add]
    #[arg(long, value_name = "CAP", help_heading = "Isolation")]
    cap_add: Vec<String>,
    /// Drop a capability (repeatable) [cap_drop]
    #[arg(long, value_name = "CAP", help_heading = "Isolation")]
    cap_drop: Vec<String>,
    /// A resource limit, e.g. nofile=1024:4096 (repeatable)
    #[arg(long, value_name = "NAME=SOFT[:HARD]", value_parser = parse_rlimit, help_heading = "Isolation")]
    rlimit: Vec<isolate::RlimitSpec>,
    /// The operator's capability allow list, e.g. CHOWN,KILL or ALL; a --cap-add outside it fails [allow_caps]
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        help_heading = "Isolation"
    )]
    allowed_caps: Option<Vec<String>>,
    /// The task's oom_score_adj, -1000..=1000 [oom_score_adj; default 0]
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(-1000..=1000), help_heading = "Isolation")]
    oom_score_adj: Option<i32>,
    /// Size of the secrets/ tmpfs: bytes, or K, M, G, e.g. 4M [default: 1M]
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true, value_parser = parse_size, help_heading = "Isolation")]
    secrets_size: Option<u64>,
    /// Run the program under a minimal init that forwards signals and reaps orphans [default: with --ns pid]
    #[arg(long, conflicts_with = "no_init", help_heading = "Isolation")]
    init: bool,
    /// With --ns pid, run the program itself as PID 1 (no init)
    #[arg(long, help_heading = "Isolation")]
    no_init: bool,
    /// A nameserver of the task's private /etc/resolv.conf (repeatable; needs --chroot) [dns.servers]
    #[arg(long, value_name = "IP", help_heading = "Isolation")]
    dns_server: Vec<String>,
    /// A search domain of the task's private /etc/resolv.conf (repeatable; needs --chroot) [dns.searches]
    #[arg(long, value_name = "DOMAIN", help_heading = "Isolation")]
    dns_search: Vec<String>,
    /// A resolver option of the task's private /etc/resolv.conf, e.g. ndots:2 (repeatable; needs --chroot) [dns.options]
    #[arg(long, value_name = "OPT", help_heading = "Isolation")]
    dns_option: Vec<String>,
    /// Mount a host path into the chroot, read-write unless ro (repeatable; needs --chroot) [volume mounts]
    #[arg(long = "mount", value_name = "src=HOST,dst=TASK[,ro]", value_parser = parse_mount, help_heading = "Isolation")]
    mounts: Vec<isolate::MountSpec>,

    /// Pass a host device node to the task, e.g. /dev/nvidia0 (repeatable)
    #[arg(long, value_name = "HOST_PATH[:TASK_PATH][:rwm]", value_parser = parse_device, help_heading = "Isolation")]
    device: Vec<isolate::DeviceSpec>,

    /// The program and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "PROGRAM", num_args = 1..)]
    command: Vec<String>,
    /// `--root` after the verb.
    #[command(flatten)]
    pub global: super::GlobalOpts,
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
        if let Some(user) = &self.user {
            spec.user(user);
        }
        if let Some(group) = &self.group {
            spec.group(group);
        }
        spec.resources(Resources {
            memory_max: self.memory,
            memory_reservation: self.memory_reservation,
            memory_swap: self.memory_swap,
            cpu_shares: self.cpu_shares,
            cpus: self.cpus,
            cpuset_cpus: self.cpuset_cpus.clone(),
            cpuset_mems: self.cpuset_mems.clone(),
            pids_max: self.pids_limit,
            io_weight: self.io_weight,
        });
        spec.best_effort_limits = self.best_effort_limits;
        if self.interactive {
            spec.stdin(nomad_shim::Stdin::Piped);
        }
        if self.tty {
            spec.tty(true);
            // The caller's terminal's size, where it has one: what the
            // program sees from its first instruction on.
            if let Some(size) = super::term::our_window_size() {
                spec.tty_size(size);
            }
        }
        spec.isolation(IsolationSpec {
            chroot: self.chroot,
            chroot_env: self.chroot_env.clone(),
            task_dir: self.task_dir.clone(),
            alloc_dir: self.alloc_dir.clone(),
            pid: self.ns.iter().any(|n| n == "pid"),
            ipc: self.ns.iter().any(|n| n == "ipc"),
            uts: self.ns.iter().any(|n| n == "uts"),
            netns: self.netns.clone(),
            hostname: self.hostname.clone(),
            cap_add: self.cap_add.clone(),
            cap_drop: self.cap_drop.clone(),
            rlimits: self.rlimit.clone(),
            allowed_caps: self.allowed_caps.clone(),
            oom_score_adj: self.oom_score_adj,
            secrets_size: self.secrets_size,
            init: match (self.init, self.no_init) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
            dns: self.dns(),
            mounts: self.mounts.clone(),
            devices: self.device.clone(),
            ..IsolationSpec::default()
        });
        spec
    }
}

impl TaskOpts {
    /// What the CLI checks before creating anything, so that the message
    /// names the option: the limits (with the library's own validation),
    /// CPUs and memory nodes the host has, the network namespace file, the
    /// isolation's relations, and the size of the environment.
    pub fn check(&self) -> Result<(), String> {
        let spec = self.spec();
        if let Err(e) = spec.resources.validate() {
            return Err(match e {
                nomad_shim::cgroup::Error::InvalidResources {
                    field,
                    value,
                    reason,
                } => super::explain::resources(field, &value, reason),
                e => e.to_string(),
            });
        }
        if let Some(list) = &self.cpuset_cpus {
            super::explain::check_cpuset("--cpuset-cpus", list)?;
        }
        if let Some(list) = &self.cpuset_mems {
            super::explain::check_cpuset("--cpuset-mems", list)?;
        }
        if let Some(netns) = &self.netns {
            super::explain::check_netns(netns)?;
        }
        if let Err(e) = spec.isolation.validate() {
            return Err(super::explain::error(&Error::Isolate(e)));
        }
        check_env(&spec)
    }

    /// The `dns` block, if any `--dns-*` option is given.
    fn dns(&self) -> Option<isolate::DnsSpec> {
        let dns = isolate::DnsSpec {
            servers: self.dns_server.clone(),
            searches: self.dns_search.clone(),
            options: self.dns_option.clone(),
        };
        (dns != isolate::DnsSpec::default()).then_some(dns)
    }
}

/// `start`: prints the id and exits 0.
pub fn start(executor: &Executor, opts: TaskOpts) -> Result<i32, Error> {
    let (task, _) = super::launch::start(executor, &opts.spec(), false)?;
    super::print_warnings(&task);
    println!("{}", task.id());
    Ok(0)
}

/// The environment and arguments must fit the task's `spec.json` (read
/// back with a size bound) and `execve(2)`'s limit on one string.
fn check_env(spec: &TaskSpec) -> Result<(), String> {
    // MAX_ARG_STRLEN: 32 pages (include/uapi/linux/binfmts.h).
    const MAX_ARG_STRLEN: usize = 32 * 4096;
    let limit = nomad_shim::state::MAX_FILE_SIZE;
    if let Some((k, v)) = spec
        .env
        .iter()
        .find(|(k, v)| k.len() + v.len() + 1 >= MAX_ARG_STRLEN)
    {
        return Err(format!(
            "--env {k}=...: {} bytes, over the kernel's {} KiB limit for one variable (MAX_ARG_STRLEN)",
            k.len() + v.len() + 1,
            MAX_ARG_STRLEN / 1024
        ));
    }
    let size = serde_json::to_vec(spec).map_or(0, |v| v.len()) as u64;
    if size > limit {
        let env_bytes: usize = spec.env.iter().map(|(k, v)| k.len() + v.len() + 1).sum();
        return Err(format!(
            "--env: {} variables ({env_bytes} bytes) and the program's arguments make a task spec of {size} bytes, over the {} KiB a task may have; pass fewer or smaller variables (a large value can go in a file the program reads)",
            spec.env.len(),
            limit / 1024
        ));
    }
    Ok(())
}

fn parse_bind(s: &str) -> Result<isolate::BindSpec, String> {
    let (src, dst) = s.split_once(':').unwrap_or((s, s));
    Ok(isolate::BindSpec {
        src: src.into(),
        dst: dst.into(),
    })
}

/// `src=HOST,dst=TASK[,ro|rw]`, keys in any order.
fn parse_mount(s: &str) -> Result<isolate::MountSpec, String> {
    let (mut src, mut dst, mut readonly) = (None, None, false);
    for part in s.split(',') {
        match part.split_once('=') {
            Some(("src" | "source", v)) if !v.is_empty() => src = Some(v),
            Some(("dst" | "destination" | "target", v)) if !v.is_empty() => dst = Some(v),
            None if part == "ro" || part == "readonly" => readonly = true,
            None if part == "rw" => readonly = false,
            _ => {
                return Err(format!(
                    "{part:?} in {s:?} is not src=HOST, dst=TASK, ro or rw"
                ))
            }
        }
    }
    match (src, dst) {
        (Some(src), Some(dst)) => Ok(isolate::MountSpec {
            src: src.into(),
            dst: dst.into(),
            readonly,
        }),
        _ => Err(format!("{s:?} needs both src=HOST and dst=TASK")),
    }
}

fn parse_device(s: &str) -> Result<isolate::DeviceSpec, String> {
    isolate::DeviceSpec::parse(s).map_err(|e| e.to_string())
}

fn parse_rlimit(s: &str) -> Result<isolate::RlimitSpec, String> {
    let (name, limits) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=SOFT[:HARD]"))?;
    let num = |v: &str| -> Result<u64, String> {
        match v {
            "unlimited" | "infinity" => Ok(u64::MAX),
            v => v
                .parse()
                .map_err(|_| format!("{v:?} is not a number (or unlimited)")),
        }
    };
    let (soft, hard) = match limits.split_once(':') {
        Some((soft, hard)) => (num(soft)?, num(hard)?),
        None => (num(limits)?, num(limits)?),
    };
    Ok(isolate::RlimitSpec {
        resource: name.to_owned(),
        soft,
        hard,
    })
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// A signal by name (`TERM`, `SIGTERM`) or number, for clap.
pub fn parse_signal_arg(s: &str) -> Result<nix::sys::signal::Signal, String> {
    parse_signal(s).ok_or_else(|| {
        "not a signal; give a name like TERM, SIGHUP, KILL or a number like 9".to_string()
    })
}

/// `kill ID SIGNAL`: also kill(1)'s `-9` and `-KILL` (an operator's habit).
pub fn parse_kill_signal_arg(s: &str) -> Result<nix::sys::signal::Signal, String> {
    parse_signal_arg(s.strip_prefix('-').unwrap_or(s))
}

/// A count (0 or more), refusing `-1` in words rather than as a flag.
pub fn parse_count(s: &str) -> Result<usize, String> {
    if s.trim_start().starts_with('-') {
        return Err("must be 0 or more".into());
    }
    s.parse().map_err(|_| "not a whole number".to_string())
}

fn parse_count_u64(s: &str) -> Result<u64, String> {
    parse_count(s).map(|n| n as u64)
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
    // A whole number is exact (an f64 rounds past 2^53 bytes: 9007199254740993
    // became ...992); only a fraction (1.5G) goes through floating point.
    if let Ok(n) = num.trim().parse::<u64>() {
        return n
            .checked_mul(mult)
            .ok_or_else(|| format!("{s:?} is too large"));
    }
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size (bytes, or K, M, G, T: 256M, 1.5G)"))?;
    if n.is_finite() && n < 0.0 {
        return Err(format!("{s:?}: a size cannot be negative"));
    }
    if !n.is_finite() {
        return Err(format!("{s:?} is not a size"));
    }
    let bytes = n * mult as f64;
    // u64::MAX as f64 is 2^64, itself too large (`as` would saturate it).
    if bytes >= u64::MAX as f64 {
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

    #[test]
    fn mounts() {
        let m = parse_mount("src=/srv/data,dst=/data,ro").unwrap();
        assert_eq!(
            (m.src.to_str(), m.dst.to_str(), m.readonly),
            (Some("/srv/data"), Some("/data"), true)
        );
        let m = parse_mount("dst=/d,src=/s").unwrap();
        assert!(!m.readonly);
        assert!(parse_mount("src=/s").is_err());
        assert!(parse_mount("src=/s,dst=/d,bogus").is_err());
        assert!(parse_mount("/s:/d").is_err());
    }
}

#[cfg(test)]
#[path = "task_opts_props.rs"]
mod props;
