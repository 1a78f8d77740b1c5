//! `update ID [--memory SIZE|max] ...`: change a running task's limits,
//! live. Every limit `run` takes can be changed; `max` removes one.

use clap::Args;
use nomad_shim::cgroup::{Limit, ResourceUpdate};
use nomad_shim::{Error, Executor};

use super::task_opts::parse_size;

// The limits to change; an option left out keeps its limit. (Not a doc comment: see cli::Command.)
#[derive(Args, Debug)]
pub struct UpdateOpts {
    /// Task id.
    id: String,
    /// Memory hard limit: a size (bytes, or K, M, G: 512M), or max to remove it
    #[arg(long, value_name = "SIZE|max", allow_hyphen_values = true, value_parser = size_or_max)]
    memory: Option<Limit<u64>>,
    /// Memory soft limit: a size, or max to remove it
    #[arg(long, value_name = "SIZE|max", allow_hyphen_values = true, value_parser = size_or_max)]
    memory_reservation: Option<Limit<u64>>,
    /// Swap beyond --memory: a size (0 = none), or max to remove the limit; may be given alone
    #[arg(long, value_name = "SIZE|max", allow_hyphen_values = true, value_parser = size_or_max)]
    memory_swap: Option<Limit<u64>>,
    /// Relative CPU weight (Nomad's MHz; 1024 = one normal task), or max for the default
    #[arg(long, value_name = "N|max", allow_hyphen_values = true, value_parser = count_or_max)]
    cpu_shares: Option<Limit<u64>>,
    /// CPU quota in CPUs (1.5), or max to remove it
    #[arg(long, value_name = "CPUS|max", allow_hyphen_values = true, value_parser = cpus_or_max)]
    cpus: Option<Limit<f64>>,
    /// CPUs the task may run on (0-1), or max for all of its parent's
    #[arg(long, value_name = "LIST|max", value_parser = list_or_max)]
    cpuset_cpus: Option<Limit<String>>,
    /// Memory nodes the task may use (0), or max for all of its parent's
    #[arg(long, value_name = "LIST|max", value_parser = list_or_max)]
    cpuset_mems: Option<Limit<String>>,
    /// Most processes and threads, or max to remove the limit
    #[arg(long, value_name = "N|max", allow_hyphen_values = true, value_parser = count_or_max)]
    pids_limit: Option<Limit<u64>>,
    /// IO weight 1-10000, or max for the default (100)
    #[arg(long, value_name = "N|max", allow_hyphen_values = true, value_parser = weight_or_max)]
    io_weight: Option<Limit<u16>>,
    /// `--root` after the verb.
    #[command(flatten)]
    pub global: super::GlobalOpts,
}

fn or_max<T>(s: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<Limit<T>, String> {
    if s.eq_ignore_ascii_case("max") {
        Ok(Limit::Remove)
    } else {
        parse(s).map(Limit::Set)
    }
}

fn size_or_max(s: &str) -> Result<Limit<u64>, String> {
    or_max(s, parse_size)
}

fn count_or_max(s: &str) -> Result<Limit<u64>, String> {
    or_max(s, |s| super::task_opts::parse_count(s).map(|n| n as u64))
}

fn weight_or_max(s: &str) -> Result<Limit<u16>, String> {
    or_max(s, |s| {
        s.parse::<u16>()
            .map_err(|_| "not a number within 1-10000".to_string())
    })
}

fn cpus_or_max(s: &str) -> Result<Limit<f64>, String> {
    or_max(s, |s| {
        s.parse::<f64>()
            .map_err(|_| "not a number of CPUs like 1.5".to_string())
    })
}

fn list_or_max(s: &str) -> Result<Limit<String>, String> {
    or_max(s, |s| Ok(s.to_string()))
}

impl UpdateOpts {
    /// The library's update.
    fn update(&self) -> ResourceUpdate {
        let l = |o: &Option<Limit<u64>>| o.clone().unwrap_or_default();
        ResourceUpdate {
            memory_max: l(&self.memory),
            memory_reservation: l(&self.memory_reservation),
            memory_swap: l(&self.memory_swap),
            cpu_shares: l(&self.cpu_shares),
            cpus: self.cpus.clone().unwrap_or_default(),
            cpuset_cpus: self.cpuset_cpus.clone().unwrap_or_default(),
            cpuset_mems: self.cpuset_mems.clone().unwrap_or_default(),
            pids_max: l(&self.pids_limit),
            io_weight: self.io_weight.clone().unwrap_or_default(),
        }
    }
}

/// `update`: validates in the options' words, then asks the supervisor.
pub fn update(executor: &Executor, opts: &UpdateOpts) -> Result<i32, Error> {
    let upd = opts.update();
    if upd.is_empty() {
        eprintln!("nomad-shim: update {}: no limit given; name one, e.g. --memory 512M or --pids-limit max (see nomad-shim update --help)", opts.id);
        return Ok(super::EXIT_ERROR);
    }
    let checked = match upd.validate() {
        Err(nomad_shim::cgroup::Error::InvalidResources {
            field,
            value,
            reason,
        }) => Err(super::explain::resources(field, &value, reason)),
        Err(e) => Err(e.to_string()),
        Ok(()) => [
            ("--cpuset-cpus", upd.cpuset_cpus.set()),
            ("--cpuset-mems", upd.cpuset_mems.set()),
        ]
        .into_iter()
        .try_for_each(|(opt, list)| match list {
            Some(list) => super::explain::check_cpuset(opt, list),
            None => Ok(()),
        }),
    };
    if let Err(msg) = checked {
        eprintln!("nomad-shim: {msg}");
        return Ok(super::EXIT_ERROR);
    }
    let task = executor.open(&opts.id)?;
    if let Err(msg) = check_v1_hierarchies(&task, &upd) {
        eprintln!("nomad-shim: {msg}");
        return Ok(super::EXIT_ERROR);
    }
    task.update_resources(upd)?;
    Ok(0)
}

/// On cgroup v1 a task is in the cpuset and blkio hierarchies only when it
/// was started with a limit of theirs (docs/cgroups.md), so those limits
/// can be changed later only then: say so in the options' words.
fn check_v1_hierarchies(task: &nomad_shim::Task, upd: &ResourceUpdate) -> Result<(), String> {
    let Ok(state) = task.state() else {
        return Ok(());
    };
    let Some(nomad_shim::cgroup::CgroupPaths::V1(dirs)) = state.cgroup.clone() else {
        return Ok(());
    };
    let wanted = [
        (
            "cpuset",
            !(upd.cpuset_cpus.is_keep() && upd.cpuset_mems.is_keep()),
            "--cpuset-cpus/--cpuset-mems",
        ),
        ("blkio", !upd.io_weight.is_keep(), "--io-weight"),
    ];
    for (controller, asked, options) in wanted {
        if asked && !dirs.contains_key(controller) {
            return Err(format!(
                "{options}: task {} was started without one, and on cgroup v1 a task joins the {controller} hierarchy only at its start; start it with {options} to change it later",
                task.id()
            ));
        }
    }
    Ok(())
}
