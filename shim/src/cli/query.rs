//! `ps`, `inspect`, `kill`, `stop`.

use std::time::Duration;

use nix::sys::signal::Signal;
use nomad_shim::state::{names, TaskState};
use nomad_shim::{Error, Executor, Status};

/// `ps`: one line per task; a task whose files are broken gets a line
/// saying so (and, with `--json`, a warning on stderr) — it never hides the
/// others.
pub fn ps(executor: &Executor, json: bool, format: Option<&str>) -> Result<i32, Error> {
    let list = executor.list()?;
    if let Some(format) = format {
        return super::ps_format::print(executor, &list, format);
    }
    if json {
        let states: Vec<&TaskState> = list.iter().filter_map(|(_, s)| s.as_ref().ok()).collect();
        for (id, s) in &list {
            if let Err(e) = s {
                eprintln!("nomad-shim: task {id}: {e}");
            }
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&states).unwrap_or_default()
        );
        return Ok(0);
    }
    let w = list
        .iter()
        .map(|(id, _)| id.as_str().len())
        .max()
        .unwrap_or(0)
        .max(2);
    println!(
        "{:<w$}  {:<8} {:>8} {:>6}  {:<27}  COMMAND",
        "ID", "STATUS", "PID", "EXIT", "CREATED"
    );
    for (id, state) in &list {
        match state {
            Ok(s) => {
                let pid = match s.status {
                    Status::Running => s.task.map_or("-".into(), |t| t.pid.to_string()),
                    _ => "-".into(),
                };
                let exit = s
                    .exit
                    .as_ref()
                    .and_then(|e| e.shell_code())
                    .map_or("-".into(), |c| c.to_string());
                let cmd = command_of(executor, id.as_str());
                println!(
                    "{id:<w$}  {:<8} {pid:>8} {exit:>6}  {:<27}  {cmd}",
                    s.status.to_string(),
                    s.created_at
                );
            }
            Err(e) => println!(
                "{id:<w$}  {:<8} {:>8} {:>6}  {:<27}  {e}",
                "broken", "-", "-", "-"
            ),
        }
    }
    Ok(0)
}

/// The task's command line from its spec, for `ps`.
/// Read like every task file: relative to the directory, no symlink, no
/// FIFO, bounded size.
pub(crate) fn command_of(executor: &Executor, id: &str) -> String {
    let root = nomad_shim::state::Root::new(executor.root());
    nomad_shim::TaskId::new(id)
        .ok()
        .and_then(|id| root.open_task_dir(&id).ok())
        .and_then(|dir| {
            nomad_shim::state::read_json::<nomad_shim::TaskSpec>(dir.fd(), dir.path(), names::SPEC)
                .ok()
        })
        .map(|s| printable(&s.argv().join(" ")))
        .unwrap_or_default()
        .chars()
        .take(60)
        .collect()
}

/// `s` on one line: control characters (a newline in an argument, an
/// escape sequence) are shown escaped, as `\n` or `\u{1b}`, so a task's
/// arguments can neither break `ps`'s table nor drive the terminal.
fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let escaped = c.is_control().then(|| c.escape_default());
            let plain = (!c.is_control()).then_some(c);
            escaped.into_iter().flatten().chain(plain)
        })
        .collect()
}

/// `inspect`: the state, reconciled (a dead supervisor shows as `lost`).
pub fn inspect(executor: &Executor, id: &str, json: bool) -> Result<i32, Error> {
    let task = executor.open(id)?;
    let state = task.state()?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&state).unwrap_or_default()
        );
        return Ok(0);
    }
    println!("id:          {}", state.id);
    println!("status:      {}", state.status);
    if let Some(s) = state.supervisor {
        println!("supervisor:  pid {} (start time {})", s.pid, s.start_time);
    }
    if let Some(t) = state.task {
        println!("task:        pid {} (start time {})", t.pid, t.start_time);
    }
    println!("created at:  {}", state.created_at);
    if let Some(t) = &state.started_at {
        println!("started at:  {t}");
    }
    if let Some(t) = &state.finished_at {
        println!("finished at: {t}");
    }
    if let Some(e) = &state.exit {
        match (e.code, e.signal, &e.error) {
            (Some(c), _, _) => println!("exit:        code {c}"),
            (None, Some(s), _) => println!(
                "exit:        signal {s}{}",
                if e.core_dumped == Some(true) {
                    " (core dumped)"
                } else {
                    ""
                }
            ),
            (_, _, Some(err)) => println!("exit:        unknown: {err}"),
            _ => println!("exit:        unknown"),
        }
        if e.oom_killed == Some(true) {
            println!("oom:         the kernel's OOM killer killed a process of the task");
        }
        if let (Some(u), Some(s), Some(rss)) = (e.user_cpu_ns, e.system_cpu_ns, e.max_rss_kib) {
            println!(
                "cpu:         {:.3}s user, {:.3}s system; max rss {rss} KiB",
                u as f64 / 1e9,
                s as f64 / 1e9
            );
        }
    }
    println!("directory:   {}", task.dir().display());
    // A task's own terminal or stdin (-t, -i), for `attach`.
    match (state.tty, state.stdin == nomad_shim::Stdin::Piped) {
        (true, true) => println!("stdio:       a terminal, with input (attach to it)"),
        (true, false) => println!("stdio:       a terminal, output only (attach to it)"),
        (false, true) => println!("stdio:       stdin piped (attach to it)"),
        (false, false) => {}
    }
    for e in &state.execs {
        println!(
            "exec:        pid {} since {}{}: {}",
            e.pid,
            e.started_at,
            if e.tty { " (tty)" } else { "" },
            e.argv.join(" ")
        );
    }
    print_events(&state);
    Ok(0)
}

/// `inspect`'s warnings and events: one line each, oldest first.
fn print_events(state: &TaskState) {
    for w in &state.warnings {
        println!("warning:     {w}");
    }
    if !state.events.is_empty() {
        println!("events:");
        for e in &state.events {
            println!("  {}  {:<24} {}", e.time, e.kind, e.message);
        }
    }
}

/// `kill ID [SIGNAL]` (clap parsed the signal, so a bad name is a usage
/// error worded like any other).
pub fn kill(executor: &Executor, id: &str, signal: Signal) -> Result<i32, Error> {
    executor.open(id)?.signal(signal)?;
    Ok(0)
}

/// `stop ID [--signal SIG] [--timeout DUR]`: returns once the task has ended.
pub fn stop(
    executor: &Executor,
    id: &str,
    signal: Option<Signal>,
    timeout: Option<Duration>,
) -> Result<i32, Error> {
    executor.open(id)?.stop(signal, timeout)?;
    Ok(0)
}

/// `stats ID [--json]`: the supervisor gives the CPU rate since its previous
/// sample (`cpu_rate.rs`); only a supervisor older than that (it outlives an
/// upgrade of the binary) needs two samples 100 ms apart.
pub fn stats(executor: &Executor, id: &str, json: bool) -> Result<i32, Error> {
    let task = executor.open(id)?;
    let (mut second, rate) = task.stats_with_rate()?;
    let (cpu_percent, window) = match rate {
        Some((p, w)) => (Some(p), w),
        None if second.cpu.is_none() => (None, Duration::ZERO),
        None => {
            let first = second;
            let t0 = std::time::Instant::now();
            std::thread::sleep(Duration::from_millis(100));
            second = task.stats()?;
            let w = t0.elapsed();
            (nomad_shim::cgroup::cpu_percent(&first, &second, w), w)
        }
    };
    if json {
        let mut v = serde_json::to_value(&second).unwrap_or_default();
        v["cpu_percent"] = serde_json::json!(cpu_percent);
        v["cpu_window_ms"] = serde_json::json!(window.as_millis() as u64);
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(0);
    }
    if let Some(cpu) = &second.cpu {
        // usage_ns is exact (ns); user and system come from tick counters on
        // v1 (10 ms each), so a short task shows 0 there: print all three.
        println!(
            "cpu:       {:.1}% over {}; {} in all ({} user, {} system)",
            cpu_percent.unwrap_or(0.0),
            duration_ns(window.as_nanos() as u64),
            duration_ns(cpu.usage_ns),
            duration_ns(cpu.user_ns),
            duration_ns(cpu.system_ns)
        );
        if cpu.nr_periods > 0 {
            println!(
                "throttled: {} of {} periods, {:.3}s",
                cpu.nr_throttled,
                cpu.nr_periods,
                cpu.throttled_ns as f64 / 1e9
            );
        }
    }
    if let Some(m) = &second.memory {
        println!(
            "memory:    {} now, {} peak ({} rss, {} cache)",
            kib(m.current),
            kib(m.peak.unwrap_or(0)),
            kib(m.rss),
            kib(m.cache)
        );
    }
    if let Some(p) = &second.pids {
        println!("pids:      {}", p.current);
    }
    Ok(0)
}

/// A CPU time with a unit that keeps its digits: `2.314ms`, `1.250s`.
pub(crate) fn duration_ns(ns: u64) -> String {
    if ns < 1_000_000 {
        format!("{:.3}µs", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.3}ms", ns as f64 / 1e6)
    } else {
        format!("{:.3}s", ns as f64 / 1e9)
    }
}

fn kib(bytes: u64) -> String {
    format!("{} KiB", bytes / 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn commands_print_on_one_line() {
        assert_eq!(super::printable("sh -c 'a\nb'"), "sh -c 'a\\nb'");
        assert_eq!(super::printable("a\tb\u{1b}[2J é"), "a\\tb\\u{1b}[2J é");
    }
}
