//! Side-by-side benchmarks of nomad-shim: start-to-exit of `/bin/true`
//! through the library, the CLI, `bwrap` and `runc`; exit-detection latency;
//! idle supervisor memory. One module per concern: `runner` (a variant's
//! timed run, the rounds), `variants` (what each variant runs, its targets),
//! `latency`, `memory`, `report` (the markdown), `env` (machine facts,
//! helpers). Run it with `scripts/bench` (which builds the
//! static shim first); the results land in `docs/performance.md`.
//!
//! * Every start-to-exit variant runs once per round, round-robin (the first
//!   variant rotates each round), over many rounds; results are medians and
//!   ratios to the bare fork+exec measured in the same rounds. The machine is
//!   noisy: this is a report, never a pass/fail test.
//! * A variant the machine cannot run (a binary missing, a start that fails)
//!   is skipped or marked failed, with the reason printed once and put in the
//!   report; the others go on.
//! * The process is a subreaper (supervisors are re-parented to it) and reaps
//!   every supervisor before it exits; PID 1 here never reaps (docs/architecture.md, "Who reaps the supervisor").
//!
//! * Start-to-exit runs twice: back to back, and with an idle pause before
//!   each run. They differ: a start after a pause pays deferred kernel work
//!   (an RCU grace period for the first cgroup v1 migration) that back-to-back
//!   starts share.
//!
//! Knobs (environment): `BENCH_ROUNDS` (200) and `BENCH_WARMUP` (10) of the
//! back-to-back pass, `BENCH_PAUSED_ROUNDS` (40) and `BENCH_PAUSE_MS` (50) of
//! the paused one, `BENCH_EXIT_SAMPLES` (100), `BENCH_IDLE_TASKS` (100), `BENCH_ONLY`
//! (comma-separated variant keys; `bare` and `floor` always run), `BENCH_BASELINE` (a prebuilt baseline helper instead of compiling benches/startup/baseline.c), `BENCH_REPORT` (the
//! markdown file to update, `-` for none), `NOMAD_SHIM` (the static shim),
//! `NOMAD_SHIM_DYNAMIC` (the dynamic one), `BENCH_COMMAND`/`BENCH_RUSTC`
//! (recorded in the report).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nomad_shim::cgroup::{CgroupRoot, Resources, TaskCgroup};
use nomad_shim::isolate::IsolationSpec;
use nomad_shim::state::names;
use nomad_shim::{Executor, TaskExit, TaskSpec};
use serde_json::{json, Value};

mod env;
mod latency;
mod memory;
mod report;
mod runner;
mod variants;

use env::*;
use latency::*;
use memory::*;
use report::*;
use runner::*;
use variants::*;

/// argv[1] of the bench binary run as a task: sleep, stamp, `_exit`.
const HELPER_ARG: &str = "__exit-stamp";
/// The report's markers: `<!-- NAME:begin — ... -->` and `<!-- NAME:end -->`,
/// NAME from `BENCH_MARKER` (default `bench`; `bench-v2` for the run in the
/// cgroup v2 VM), so that several generated blocks live in one file.
fn report_markers() -> (String, String) {
    let name = std::env::var("BENCH_MARKER")
        .ok()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "bench".into());
    (
        format!("<!-- {name}:begin — written by benches/startup/ (scripts/bench); edit outside these markers -->"),
        format!("<!-- {name}:end -->"),
    )
}
/// `runc` resource limits of its bundle (and of the issue 3/4 hooks).
const MEMORY_LIMIT: u64 = 64 << 20;
const PIDS_LIMIT: u64 = 64;
/// The parent cgroup of every cgroup the bench makes (`scripts/bench` looks
/// for leftovers by it); removed at the end when empty.
const CGROUP_PARENT: &str = "nomad-shim-bench";
/// The CLI's full isolation of issue 11 (`cli-isolated`).
const CLI_ISOLATION: &[&str] = &[
    "--chroot",
    "--ns",
    "pid,ipc,uts",
    "--user",
    "nobody",
    "--memory",
    "256M",
    "--pids-limit",
    "128",
];
/// What bwrap and runc bind read-only (and what the chroot env holds).
const RO_BINDS: &[&str] = &["/usr", "/bin", "/lib", "/lib64", "/etc"];

type Res<T> = Result<T, String>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(HELPER_ARG) {
        exit_stamp_helper(args.get(2).map(String::as_str));
    }
    // `cargo bench` passes `--bench`; `cargo test --benches`/`--all-targets`
    // runs this binary without it, and must not start a 3-minute benchmark.
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("startup bench: not run without --bench (use scripts/bench or cargo bench)");
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("startup bench: SKIPPED: needs root (supervisors, bwrap, runc, /proc of other processes)");
        return;
    }
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        eprintln!("startup bench: PR_SET_CHILD_SUBREAPER: {e}");
        std::process::exit(1);
    }
    let cfg = Config::from_env();
    let code = match bench(&cfg) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("startup bench: FAILED: {e}");
            1
        }
    };
    let left = reap_all(Duration::from_secs(15));
    if !left.is_empty() {
        eprintln!("startup bench: WARNING: children still alive after 15 s: {left:?}");
    }
    std::process::exit(code);
}

// ---------------------------------------------------------------------------
// configuration

struct Config {
    exit_samples: usize,
    idle_tasks: usize,
    modes: Vec<Mode>,
    only: Option<Vec<String>>,
    report: Option<PathBuf>,
    command: String,
    shim_static: Option<PathBuf>,
    shim_dynamic: Option<PathBuf>,
    /// A static shim built from an earlier commit (`BENCH_BASE_REF`), for
    /// side-by-side "the same start without the new steps" variants.
    shim_base: Option<PathBuf>,
    /// What `shim_base` was built from, for the report.
    base_ref: String,
}

impl Config {
    fn from_env() -> Config {
        fn num(name: &str, default: usize) -> usize {
            match std::env::var(name) {
                Ok(v) => v.trim().parse().unwrap_or_else(|_| {
                    eprintln!("startup bench: ignoring {name}={v:?} (not a number)");
                    default
                }),
                Err(_) => default,
            }
        }
        let path = |name: &str| {
            std::env::var_os(name)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
        };
        let report = match std::env::var("BENCH_REPORT") {
            Ok(p) if p == "-" => None,
            Ok(p) if !p.is_empty() => Some(PathBuf::from(p)),
            _ => Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/performance.md")),
        };
        Config {
            exit_samples: num("BENCH_EXIT_SAMPLES", 100),
            idle_tasks: num("BENCH_IDLE_TASKS", 100),
            modes: vec![
                Mode {
                    name: "back to back",
                    rounds: num("BENCH_ROUNDS", 200).max(1),
                    warmup: num("BENCH_WARMUP", 10),
                    pause: Duration::ZERO,
                },
                Mode {
                    name: "after an idle pause",
                    rounds: num("BENCH_PAUSED_ROUNDS", 40),
                    warmup: 2,
                    pause: Duration::from_millis(num("BENCH_PAUSE_MS", 50) as u64),
                },
            ],
            only: std::env::var("BENCH_ONLY")
                .ok()
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.split(',').map(|k| k.trim().to_owned()).collect()),
            report,
            command: std::env::var("BENCH_COMMAND")
                .unwrap_or_else(|_| "cargo bench -p nomad-shim --bench startup".into()),
            shim_static: path("NOMAD_SHIM"),
            shim_dynamic: path("NOMAD_SHIM_DYNAMIC"),
            shim_base: path("NOMAD_SHIM_BASE"),
            base_ref: std::env::var("BENCH_BASE_REF").unwrap_or_else(|_| "?".into()),
        }
    }

    fn wants(&self, key: &str) -> bool {
        key == "bare"
            || key == "floor"
            || self
                .only
                .as_ref()
                .is_none_or(|o| o.iter().any(|k| k == key))
    }
}

/// One pass of round-robin rounds over all variants.
struct Mode {
    name: &'static str,
    rounds: usize,
    warmup: usize,
    /// Idle time before each run (untimed): lets the kernel's deferred work
    /// (RCU grace periods) settle, as between the starts of a quiet agent.
    pause: Duration,
}

// ---------------------------------------------------------------------------
// the whole run

fn bench(cfg: &Config) -> Res<()> {
    // The task roots: a tmpfs (/dev/shm, else /tmp) and a disk (/var/tmp);
    // BENCH_TMPFS_DIR and BENCH_DISK_DIR choose others (the v2 VM has no
    // /dev/shm and only tmpfs).
    let temp_in = |var: &str, dirs: &[&str]| {
        let dirs: Vec<String> = match std::env::var(var) {
            Ok(d) if !d.is_empty() => vec![d],
            _ => dirs.iter().map(|d| d.to_string()).collect(),
        };
        let mut errors = Vec::new();
        for d in &dirs {
            match tempfile::Builder::new()
                .prefix("nomad-shim-bench.")
                .tempdir_in(d)
            {
                Ok(t) => return Ok(t),
                Err(e) => errors.push(format!("create temp dir in {d}: {e}")),
            }
        }
        Err(errors.join("; "))
    };
    let tmpfs = temp_in("BENCH_TMPFS_DIR", &["/dev/shm", "/tmp"])?;
    let disk = temp_in("BENCH_DISK_DIR", &["/var/tmp"])?;
    let env = Environment::probe(cfg, tmpfs.path(), disk.path());
    eprintln!("{}", env.summary());

    let mut variants = build_variants(cfg, &env, tmpfs.path(), disk.path());
    for v in &variants {
        if let State::Skipped(why) = &v.state {
            eprintln!("skip {:<14} {why}", v.key);
        }
    }
    for v in &mut variants {
        v.samples = vec![Vec::new(); cfg.modes.len()];
        v.ratios = vec![Vec::new(); cfg.modes.len()];
        v.ratios_floor = vec![Vec::new(); cfg.modes.len()];
    }
    for (m, mode) in cfg.modes.iter().enumerate().filter(|(_, m)| m.rounds > 0) {
        eprintln!(
            "start-to-exit, {}: {} warm-up + {} rounds over {} variants, {} ms pause before each run",
            mode.name,
            mode.warmup,
            mode.rounds,
            variants.iter().filter(|v| v.state.runs()).count(),
            mode.pause.as_millis()
        );
        let t0 = Instant::now();
        run_rounds(&mut variants, m, mode);
        eprintln!("  done in {:.1} s", t0.elapsed().as_secs_f64());
    }

    let exit = if cfg.exit_samples > 0 && cfg.wants("exit-latency") {
        eprintln!("exit latency: {} samples per root", cfg.exit_samples);
        Some(exit_latency(
            &env,
            tmpfs.path(),
            disk.path(),
            cfg.exit_samples,
        ))
    } else {
        None
    };

    let memory = if cfg.idle_tasks > 0 && cfg.wants("idle-memory") {
        eprintln!(
            "idle memory: {} sleeping tasks per supervisor kind",
            cfg.idle_tasks
        );
        Some(idle_memory(&env, tmpfs.path(), cfg.idle_tasks))
    } else {
        None
    };

    let report = render(cfg, &env, &variants, exit.as_ref(), memory.as_deref());
    println!("{report}");
    if let Some(path) = &cfg.report {
        write_report(path, &report)?;
        eprintln!("wrote {}", path.display());
    }
    for v in &mut variants {
        v.cleanup();
    }
    reap_zombies();
    remove_cgroup_parent();
    drop(tmpfs);
    drop(disk);
    Ok(())
}
