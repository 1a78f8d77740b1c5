//! The CLI's edge: errors in the words the operator typed.
//!
//! The library's errors stay typed and name its own fields (`memory_max`,
//! `task_dir`); here they are mapped to the options that set those fields
//! (`--memory`, `--task-dir`), and what can be checked before a task is
//! created (limits the host cannot have, a `--root` that is a file, an
//! environment too large to store) is checked here, so that the message
//! names the option rather than a cgroup file or `spec.json`.

use std::path::Path;

use nomad_shim::cgroup::Error as CgroupError;
use nomad_shim::isolate::IsolateError;
use nomad_shim::state::StateError;
use nomad_shim::Error;

/// The option that sets a library field, for the fields the CLI sets.
pub fn option_of(field: &str) -> Option<&'static str> {
    Some(match field {
        "memory_max" => "--memory",
        "memory_reservation" => "--memory-reservation",
        "memory_swap" => "--memory-swap",
        "cpu_shares" => "--cpu-shares",
        "cpus" => "--cpus",
        "cpuset_cpus" => "--cpuset-cpus",
        "cpuset_mems" => "--cpuset-mems",
        "pids_max" => "--pids-limit",
        "io_weight" => "--io-weight",
        "task_dir" => "--task-dir",
        "alloc_dir" => "--alloc-dir",
        "netns" => "--netns",
        "cwd" => "--cwd",
        "env" => "--env",
        "hostname" => "--hostname",
        "chroot_env" => "--chroot-env",
        "mounts" | "mount" => "--mount",
        "devices" | "device" => "--device",
        "secrets_size" => "--secrets-size",
        "oom_score_adj" => "--oom-score-adj",
        "cap_add" => "--cap-add",
        "cap_drop" => "--cap-drop",
        "allowed_caps" | "allow_caps" => "--allowed-caps",
        "rlimits" | "rlimit" => "--rlimit",
        "kill_timeout" => "--kill-timeout",
        "kill_signal" => "--kill-signal",
        "logs" => "--log-max-files/--log-max-size",
        "max_files" => "--log-max-files",
        "max_size" => "--log-max-size",
        "user" => "--user",
        "group" => "--group",
        "program" | "argv" => "PROGRAM",
        _ => return None,
    })
}

/// `text` with every library field name it mentions replaced by its option.
fn in_option_words(text: &str) -> String {
    const FIELDS: [&str; 11] = [
        "max_files",
        "max_size",
        "memory_reservation",
        "memory_swap",
        "memory_max",
        "cpu_shares",
        "cpuset_cpus",
        "cpuset_mems",
        "pids_max",
        "io_weight",
        "task_dir",
    ];
    FIELDS.iter().fold(text.to_string(), |t, f| {
        t.replace(f, option_of(f).unwrap_or(f))
    })
}

/// A library error as the CLI prints it (after `nomad-shim: `).
pub fn error(e: &Error) -> String {
    match e {
        Error::Cgroup(CgroupError::InvalidName { name, reason }) => {
            format!("--cgroup-parent {name}: {reason} (give a relative path like nomad-shim or agents/web)")
        }
        Error::Cgroup(CgroupError::InvalidResources {
            field,
            value,
            reason,
        }) => resources(field, value, reason),
        Error::Isolate(i) => isolate(i).unwrap_or_else(|| e.to_string()),
        Error::Spec(s) => match option_of(s.field) {
            Some(opt) => format!("{opt}: {}", in_option_words(&s.reason)),
            None => e.to_string(),
        },
        // The supervisor's reason is text: its field names become options.
        Error::Refused {
            id,
            request,
            reason,
            ..
        } => format!(
            "task {id}: the supervisor refused {request}: {}",
            in_option_words(reason)
        ),
        // A limit this host cannot enforce (the supervisor's cgroup step):
        // name the option, and the way to start without it.
        Error::Start { id, message, .. } if message.contains("is not supported by this kernel") => {
            format!(
                "start {id}: {} (drop the option, or pass --best-effort-limits to start without it and a warning)",
                in_option_words(message)
            )
        }
        // setrlimit(2) refuses a hard limit above the caller's without
        // CAP_SYS_RESOURCE, and RLIMIT_NOFILE above fs.nr_open always.
        Error::Start {
            id,
            step: nomad_shim::Step::SetRlimit,
            message,
            ..
        } => {
            let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "?".into());
            format!(
                "start {id}: --rlimit: {message} (a hard limit above nomad-shim's own needs CAP_SYS_RESOURCE; nofile can never exceed fs.nr_open, {nr_open} here)"
            )
        }
        Error::StillRunning { id, status } => format!(
            "task {id} is still {status}: stop it first (nomad-shim stop {id}), or remove it with rm --force, which kills it"
        ),
        _ => e.to_string(),
    }
}

/// A byte count as the operator would have typed it: `128M`, `1G`, `4K`,
/// else the plain number.
fn as_size(value: &str) -> String {
    let Ok(n) = value.parse::<u64>() else {
        return value.to_string();
    };
    for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
        if n != 0 && n % (1u64 << shift) == 0 {
            return format!("{}{unit}", n >> shift);
        }
    }
    value.to_string()
}

/// An invalid limit, worded for the option.
pub fn resources(field: &str, value: &str, reason: &str) -> String {
    let value = if field.starts_with("memory") {
        as_size(value)
    } else {
        value.to_string()
    };
    match option_of(field) {
        Some(opt) => format!("{opt} {value}: {}", in_option_words(reason)),
        None => format!("{field} = {value}: {reason}"),
    }
}

/// The isolation errors that name a field or an option's relation.
fn isolate(e: &IsolateError) -> Option<String> {
    Some(match e {
        IsolateError::HostnameWithoutUts => {
            "--hostname needs the task's own UTS namespace: add --ns uts".into()
        }
        IsolateError::RelativePath { field, path } => format!(
            "{} {}: not an absolute path (start it with /)",
            option_of(field)?,
            path.display()
        ),
        IsolateError::DotDotInPath { field, path } => format!(
            "{} {}: a '..' component is not allowed",
            option_of(field)?,
            path.display()
        ),
        IsolateError::ChrootWithoutTaskDir => "--chroot needs --task-dir".into(),
        IsolateError::DnsWithoutChroot => {
            "--dns-server, --dns-search and --dns-option need --chroot (they replace /etc/resolv.conf inside the task's root)".into()
        }
        IsolateError::MountWithoutChroot => {
            "--mount needs --chroot (its destination is a path inside the task's root)".into()
        }
        IsolateError::AllocWithoutTaskDir => "--alloc-dir needs --task-dir".into(),
        IsolateError::NotInUserFiles { what, name, file } => format!(
            "--{what} {name}: not in {}; this nomad-shim is linked statically and resolves names from /etc/passwd and /etc/group only, never through NSS (systemd, sss, ldap): pass numeric ids (--user UID --group GID)",
            file.display()
        ),
        IsolateError::OpenNetns { path, source } => format!(
            "--netns {}: {} (give a network namespace file such as /run/netns/NAME)",
            path.display(),
            source.desc()
        ),
        _ => return None,
    })
}

/// `rm` without `--force` failed: say when `--force` would do it.
pub fn rm_hint(e: &Error, id: &str) -> String {
    match e {
        Error::State(StateError::NoSuchTask { .. } | StateError::InvalidId { .. }) => error(e),
        Error::State(_) => format!(
            "{}; the task's files are broken: `nomad-shim rm --force {id}` removes its directory",
            error(e)
        ),
        _ => error(e),
    }
}

/// `--root`: if it exists it must be a directory (else the first mkdir
/// says `File exists`, naming no option).
pub fn check_root(root: Option<&Path>) -> Result<(), String> {
    let Some(root) = root else { return Ok(()) };
    match std::fs::metadata(root) {
        Ok(m) if !m.is_dir() => Err(format!(
            "--root {}: exists and is not a directory; give a directory (it is created if missing)",
            root.display()
        )),
        _ => Ok(()),
    }
}

/// A kernel list like `0-2,5` as numbers (None if it is not one).
fn parse_list(list: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if b < a || b - a > 65_536 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.trim().parse().ok()?),
        }
    }
    Some(out)
}

/// `--cpuset-cpus`/`--cpuset-mems`: every CPU (node) listed must be online,
/// else the kernel refuses the write with ERANGE and a cgroupfs path.
pub fn check_cpuset(option: &str, list: &str) -> Result<(), String> {
    let online_file = match option {
        "--cpuset-cpus" => "/sys/devices/system/cpu/online",
        _ => "/sys/devices/system/node/online",
    };
    let Some(wanted) = parse_list(list) else {
        return Err(format!("{option} {list}: not a list like 0-2,5"));
    };
    // A host without the file (no NUMA sysfs) is left to the kernel.
    let Ok(online) = std::fs::read_to_string(online_file) else {
        return Ok(());
    };
    let Some(have) = parse_list(&online) else {
        return Ok(());
    };
    match wanted.iter().find(|c| !have.contains(c)) {
        Some(c) => {
            Err(format!(
            "{option} {list}: {what} {c} is not online on this host; online are {} ({online_file})",
            online.trim(),
            what = if option == "--cpuset-cpus" { "CPU" } else { "memory node" },
        ))
        }
        None => Ok(()),
    }
}

/// `--netns PATH` must name an existing file.
pub fn check_netns(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "--netns {}: {} (give a network namespace file such as /run/netns/NAME)",
            path.display(),
            nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)).desc()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists() {
        assert_eq!(parse_list("0-2,5"), Some(vec![0, 1, 2, 5]));
        assert_eq!(parse_list("0\n"), Some(vec![0]));
        assert_eq!(parse_list("2-1"), None);
        assert_eq!(parse_list("x"), None);
    }

    #[test]
    fn fields_become_options() {
        assert_eq!(
            resources("memory_reservation", "9", "must not exceed memory_max"),
            "--memory-reservation 9: must not exceed --memory"
        );
    }
}
