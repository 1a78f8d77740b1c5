//! Side-by-side benchmarks of nomad-shim: start-to-exit of `/bin/true`
//! through the library, the CLI, `bwrap` and `runc`; exit-detection latency;
//! idle supervisor memory. Run it with `scripts/bench` (which builds the
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
//! (comma-separated variant keys; `bare` always runs), `BENCH_REPORT` (the
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

/// argv[1] of the bench binary run as a task: sleep, stamp, `_exit`.
const HELPER_ARG: &str = "__exit-stamp";
const REPORT_BEGIN: &str =
    "<!-- bench:begin — written by benches/startup.rs (scripts/bench); edit outside these markers -->";
const REPORT_END: &str = "<!-- bench:end -->";
/// `runc` resource limits of its bundle (and of the issue 3/4 hooks).
const MEMORY_LIMIT: u64 = 64 << 20;
const PIDS_LIMIT: u64 = 64;
/// The parent cgroup of every cgroup the bench makes (`scripts/bench` looks
/// for leftovers by it); removed at the end when empty.
const CGROUP_PARENT: &str = "nomad-shim-bench";
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
    let tmpfs = tempfile::Builder::new()
        .prefix("nomad-shim-bench.")
        .tempdir_in("/dev/shm")
        .map_err(|e| format!("create temp dir in /dev/shm: {e}"))?;
    let disk = tempfile::Builder::new()
        .prefix("nomad-shim-bench.")
        .tempdir_in("/var/tmp")
        .map_err(|e| format!("create temp dir in /var/tmp: {e}"))?;
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

/// Removes the bench's parent cgroup in every hierarchy, if it is empty.
fn remove_cgroup_parent() {
    let Ok(root) = CgroupRoot::detect() else {
        return;
    };
    // One more cgroup under it, to remove the parent with it.
    if let Ok((cg, _)) = TaskCgroup::create(
        &root,
        CGROUP_PARENT,
        "bench-cleanup",
        &Resources::default(),
        false,
    ) {
        let _ = cg.remove();
        if let Err(e) = cg.remove_parents_if_empty() {
            eprintln!("startup bench: remove cgroup parent {CGROUP_PARENT}: {e}");
        }
    }
}

/// Facts about the machine and the binaries, for the report.
struct Environment {
    kernel: String,
    cpu: String,
    date: String,
    rustc: String,
    shim_static: Option<(PathBuf, String)>,
    shim_dynamic: Option<(PathBuf, String)>,
    tmpfs_type: String,
    disk_type: String,
    coarse_res_ns: Option<i64>,
    bwrap: Option<PathBuf>,
    runc: Option<PathBuf>,
    tini: Vec<PathBuf>,
    cgroups: String,
    load_start: String,
}

impl Environment {
    fn probe(cfg: &Config, tmpfs: &Path, disk: &Path) -> Environment {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, m)| m.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let ncpu = std::thread::available_parallelism().map_or(0, |n| n.get());
        let describe = |p: &PathBuf| -> Option<(PathBuf, String)> {
            match elf_is_static(p) {
                Ok(is_static) => Some((
                    p.clone(),
                    format!(
                        "{} ({} bytes)",
                        if is_static { "static" } else { "dynamic" },
                        std::fs::metadata(p).map_or(0, |m| m.len())
                    ),
                )),
                Err(e) => {
                    eprintln!("startup bench: {}: {e}", p.display());
                    None
                }
            }
        };
        let shim_static = cfg
            .shim_static
            .clone()
            .or_else(|| nomad_shim::find_shim(None).ok())
            .and_then(|p| describe(&p));
        Environment {
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "?".into(), |s| s.trim().to_owned()),
            cpu: format!("{cpu} × {ncpu}"),
            date: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            rustc: std::env::var("BENCH_RUSTC").unwrap_or_else(|_| "?".into()),
            shim_static,
            shim_dynamic: cfg.shim_dynamic.as_ref().and_then(describe),
            tmpfs_type: fs_type(tmpfs),
            disk_type: fs_type(disk),
            coarse_res_ns: nix::time::clock_getres(nix::time::ClockId::CLOCK_REALTIME_COARSE)
                .ok()
                .map(|t| t.tv_sec() * 1_000_000_000 + t.tv_nsec()),
            bwrap: which("bwrap"),
            runc: which("runc"),
            cgroups: CgroupRoot::detect()
                .map_or_else(|e| format!("none ({e})"), |r| format!("{:?}", r.layout())),
            load_start: load_average(),
            tini: ["tini", "tini-static"]
                .iter()
                .filter_map(|n| which(n))
                .collect(),
        }
    }

    fn summary(&self) -> String {
        let shim = |s: &Option<(PathBuf, String)>| {
            s.as_ref()
                .map_or("none".into(), |(p, d)| format!("{} — {d}", p.display()))
        };
        format!(
            "kernel {}; {}; shim {}; dynamic shim {}; tmpfs root on {}, disk root on {}",
            self.kernel,
            self.cpu,
            shim(&self.shim_static),
            shim(&self.shim_dynamic),
            self.tmpfs_type,
            self.disk_type
        )
    }
}

// ---------------------------------------------------------------------------
// start-to-exit variants

enum State {
    Ready,
    Skipped(String),
    Failed(String),
}

impl State {
    fn runs(&self) -> bool {
        matches!(self, State::Ready)
    }
}

/// A target from the issues, checked against the medians.
enum Target {
    /// At most this many times bare.
    TimesBare(f64),
    /// At most this many ms more than the variant with this key.
    PlusMs(&'static str, f64),
    /// At most this many times the variant with this key.
    TimesOf(&'static str, f64),
    /// At most this many ms.
    AbsMs(f64),
}

/// How a library variant gets its spec each round.
enum SpecSource {
    Fixed(Box<TaskSpec>),
    /// This spec with `isolation.task_dir` set to a fresh directory under
    /// `task_dirs` each round (made before and removed after the timed part).
    InTaskDir {
        spec: Box<TaskSpec>,
        task_dirs: PathBuf,
    },
}

enum Action {
    Bare,
    Library {
        exec: Executor,
        spec: SpecSource,
    },
    Cli {
        shim: PathBuf,
        exec: Executor,
        prefix: String,
    },
    External {
        program: PathBuf,
        args: Vec<OsString>,
        stderr: PathBuf,
    },
    Cgroup {
        root: CgroupRoot,
        res: Resources,
    },
    Runc {
        program: PathBuf,
        state_root: PathBuf,
        bundle: PathBuf,
        stderr: PathBuf,
    },
}

struct Variant {
    key: &'static str,
    what: String,
    targets: Vec<Target>,
    action: Action,
    state: State,
    /// Per mode: start-to-exit in ms.
    samples: Vec<Vec<f64>>,
    /// Per round: this sample / that round's bare sample.
    ratios: Vec<Vec<f64>>,
    /// `Executor::remove` after the task ended, timed apart (library only).
    removes: Vec<f64>,
    /// `Executor::start` alone, back to back (library only).
    starts: Vec<f64>,
    counter: u64,
}

impl Variant {
    fn new(key: &'static str, what: impl Into<String>, action: Action) -> Variant {
        Variant {
            key,
            what: what.into(),
            targets: Vec::new(),
            action,
            state: State::Ready,
            samples: Vec::new(),
            ratios: Vec::new(),
            removes: Vec::new(),
            starts: Vec::new(),
            counter: 0,
        }
    }

    fn target(mut self, t: Target) -> Variant {
        self.targets.push(t);
        self
    }

    fn skip(mut self, why: impl Into<String>) -> Variant {
        self.state = State::Skipped(why.into());
        self
    }

    /// One timed run; returns (start-to-exit, time of the untimed removal).
    /// One timed run: start-to-exit, and for the library, (`start()` alone,
    /// the untimed `remove()`).
    fn run_once(&mut self) -> Res<(Duration, Option<(Duration, Duration)>)> {
        self.counter += 1;
        let n = self.counter;
        match &self.action {
            Action::Bare => {
                let t0 = Instant::now();
                let st = Command::new("/bin/true")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .map_err(|e| format!("spawn /bin/true: {e}"))?;
                let dt = t0.elapsed();
                if !st.success() {
                    return Err(format!("/bin/true: {st}"));
                }
                Ok((dt, None))
            }
            Action::Library { exec, spec } => {
                let (spec, task_dir) = match spec {
                    SpecSource::Fixed(s) => ((**s).clone(), None),
                    SpecSource::InTaskDir { spec, task_dirs } => {
                        let dir = task_dirs.join(format!("t{n}"));
                        std::fs::create_dir_all(&dir)
                            .map_err(|e| format!("create {}: {e}", dir.display()))?;
                        let mut spec = (**spec).clone();
                        spec.isolation.task_dir = Some(dir.clone());
                        (spec, Some(dir))
                    }
                };
                let t0 = Instant::now();
                let mut task = exec.start(&spec).map_err(|e| format!("start: {e}"))?;
                let started = t0.elapsed();
                let exit = task.wait().map_err(|e| format!("wait: {e}"))?;
                let dt = t0.elapsed();
                let id = task.id().to_string();
                drop(task);
                let t1 = Instant::now();
                let removed = exec.remove(&id, false);
                let rm = t1.elapsed();
                if let Some(dir) = task_dir {
                    std::fs::remove_dir_all(&dir)
                        .map_err(|e| format!("remove task dir {}: {e}", dir.display()))?;
                }
                removed.map_err(|e| format!("remove {id}: {e}"))?;
                expect_success(&exit)?;
                Ok((dt, Some((started, rm))))
            }
            Action::Cli { shim, exec, prefix } => {
                let id = format!("{prefix}{n}");
                let t0 = Instant::now();
                let st = Command::new(shim)
                    .arg("--root")
                    .arg(exec.root())
                    .args(["--cgroup-parent", CGROUP_PARENT])
                    .args(["run", "--id", &id, "--", "/bin/true"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .map_err(|e| format!("spawn {}: {e}", shim.display()))?;
                let dt = t0.elapsed();
                let removed = exec.remove(&id, false);
                if !st.success() {
                    return Err(format!("nomad-shim run: {st}"));
                }
                removed.map_err(|e| format!("remove {id}: {e}"))?;
                Ok((dt, None))
            }
            Action::External {
                program,
                args,
                stderr,
            } => {
                let err = File::create(stderr).map_err(|e| format!("{}: {e}", stderr.display()))?;
                let t0 = Instant::now();
                let st = Command::new(program)
                    .args(args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(err)
                    .status()
                    .map_err(|e| format!("spawn {}: {e}", program.display()))?;
                let dt = t0.elapsed();
                if !st.success() {
                    return Err(format!("{st}: {}", read_tail(stderr)));
                }
                Ok((dt, None))
            }
            Action::Cgroup { root, res } => {
                let id = format!("bench-{}-{n}", std::process::id());
                let t0 = Instant::now();
                let (cg, _) = TaskCgroup::create(root, CGROUP_PARENT, &id, res, false)
                    .map_err(|e| format!("create cgroup {id}: {e}"))?;
                cg.remove()
                    .map_err(|e| format!("remove cgroup {id}: {e}"))?;
                let dt = t0.elapsed();
                Ok((dt, None))
            }
            Action::Runc {
                program,
                state_root,
                bundle,
                stderr,
            } => {
                let id = format!("nomad-shim-bench-{}-{n}", std::process::id());
                let err = File::create(stderr).map_err(|e| format!("{}: {e}", stderr.display()))?;
                let t0 = Instant::now();
                let st = Command::new(program)
                    .arg("--root")
                    .arg(state_root)
                    .args(["run", "--bundle"])
                    .arg(bundle)
                    .arg(&id)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(err)
                    .status()
                    .map_err(|e| format!("spawn {}: {e}", program.display()))?;
                let dt = t0.elapsed();
                if !st.success() {
                    let msg = read_tail(stderr);
                    runc_delete(program, state_root, &id);
                    return Err(format!("runc run: {st}: {msg}"));
                }
                Ok((dt, None))
            }
        }
    }

    /// Removes whatever a variant may have left (runc containers).
    fn cleanup(&mut self) {
        if let Action::Runc {
            program,
            state_root,
            ..
        } = &self.action
        {
            if let Ok(entries) = std::fs::read_dir(state_root) {
                for e in entries.flatten() {
                    runc_delete(program, state_root, &e.file_name().to_string_lossy());
                }
            }
        }
    }
}

fn runc_delete(program: &Path, state_root: &Path, id: &str) {
    let _ = Command::new(program)
        .arg("--root")
        .arg(state_root)
        .args(["delete", "-f", id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn expect_success(exit: &TaskExit) -> Res<()> {
    if exit.success() {
        Ok(())
    } else {
        Err(format!("task ended with {exit:?}"))
    }
}

fn build_variants(cfg: &Config, env: &Environment, tmpfs: &Path, disk: &Path) -> Vec<Variant> {
    let mut v = Vec::new();
    v.push(Variant::new(
        "bare",
        "`std::process::Command::status()` of `/bin/true` (posix_spawn: clone(CLONE_VM|CLONE_VFORK) + exec + wait4), stdio on /dev/null — the baseline",
        Action::Bare,
    ));
    let true_spec = TaskSpec::new("/bin/true");
    let no_shim = || "no static shim binary (set NOMAD_SHIM; scripts/bench does)".to_string();

    // The library and the CLI, static shim, roots on tmpfs and on disk; and
    // the dynamic shim on tmpfs to show what static linking buys.
    let shims: [(&str, &Option<(PathBuf, String)>); 2] =
        [("static", &env.shim_static), ("dynamic", &env.shim_dynamic)];
    for (link, shim) in shims {
        let roots: &[(&str, &Path)] = if link == "static" {
            &[("tmpfs", tmpfs), ("disk", disk)]
        } else {
            &[("tmpfs", tmpfs)]
        };
        for &(fs, base) in roots {
            let key: &'static str = match (link, fs) {
                ("static", "tmpfs") => "lib",
                ("static", _) => "lib-disk",
                _ => "lib-dyn",
            };
            let root = base.join(format!("root-{key}"));
            let what = format!(
                "`Executor::start(&TaskSpec::new(\"/bin/true\"))` + `Task::wait()`, {link} shim, root in {} ({}); `Executor::remove` is timed apart",
                if fs == "tmpfs" { "/dev/shm" } else { "/var/tmp" },
                if fs == "tmpfs" { &env.tmpfs_type } else { &env.disk_type }
            );
            let mut var = match shim {
                Some((path, _)) => Variant::new(
                    key,
                    what,
                    Action::Library {
                        exec: Executor::with_root(&root)
                            .shim_path(path)
                            .cgroup_parent(CGROUP_PARENT),
                        spec: SpecSource::Fixed(Box::new(true_spec.clone())),
                    },
                ),
                None => Variant::new(key, what, Action::Bare).skip(if link == "static" {
                    no_shim()
                } else {
                    "no dynamic shim binary (set NOMAD_SHIM_DYNAMIC; scripts/bench does)".into()
                }),
            };
            if key == "lib" {
                var = var.target(Target::TimesBare(3.0));
            }
            v.push(var);

            let ckey: &'static str = match key {
                "lib" => "cli",
                "lib-disk" => "cli-disk",
                _ => "cli-dyn",
            };
            let croot = base.join(format!("root-{ckey}"));
            let what = format!("`nomad-shim --root R run --id ID -- /bin/true`, {link} shim, root on {fs}; the task's removal is untimed");
            let mut cli = match shim {
                Some((path, _)) => Variant::new(
                    ckey,
                    what,
                    Action::Cli {
                        shim: path.clone(),
                        exec: Executor::with_root(&croot)
                            .shim_path(path)
                            .cgroup_parent(CGROUP_PARENT),
                        prefix: format!("{ckey}-"),
                    },
                ),
                None => Variant::new(ckey, what, Action::Bare).skip("no shim binary for it"),
            };
            if ckey == "cli" {
                cli = cli.target(Target::TimesBare(4.0));
            }
            v.push(cli);
        }
    }

    // Issue 3: the cost of the task's cgroup. Every library task above has
    // one (the library always makes it); `cgroup`/`cgroup-limits` time the
    // library's own create + remove of a cgroup with no process in it, and
    // `lib-limits` adds the limits to a real start.
    let limits = Resources {
        memory_max: Some(MEMORY_LIMIT),
        pids_max: Some(PIDS_LIMIT),
        ..Resources::default()
    };
    for (key, res, what, targets) in [
        (
            "cgroup",
            Resources::default(),
            "issue 3: `TaskCgroup::create` (no limits) + `remove()` of an empty cgroup, under parent `nomad-shim-bench`, without any process: what every library task above pays for its cgroup".to_string(),
            vec![],
        ),
        (
            "cgroup-limits",
            limits.clone(),
            format!("issue 3: as `cgroup`, with memory limit {} MiB and pids limit {PIDS_LIMIT}", MEMORY_LIMIT >> 20),
            vec![Target::AbsMs(1.0)],
        ),
    ] {
        let var = match CgroupRoot::detect() {
            Ok(root) => Variant::new(key, what, Action::Cgroup { root, res }),
            Err(e) => Variant::new(key, what, Action::Bare).skip(format!("no cgroup root: {e}")),
        };
        v.push(targets.into_iter().fold(var, Variant::target));
    }

    // Issues 3 and 4 through the library: limits, then full isolation.
    let mut limited = TaskSpec::new("/bin/true");
    limited.resources(limits);
    let mut isolated = limited.clone();
    isolated.user("nobody").isolation(IsolationSpec {
        chroot: true,
        pid: true,
        ipc: true,
        uts: true,
        ..IsolationSpec::default()
    });
    let isolated_base = isolated.clone();
    for (key, spec, what, targets) in [
        (
            "lib-limits",
            SpecSource::Fixed(Box::new(limited)),
            format!("issue 3: as `lib`, with memory limit {} MiB and pids limit {PIDS_LIMIT}", MEMORY_LIMIT >> 20),
            vec![Target::PlusMs("lib", 1.0)],
        ),
        (
            "lib-isolated",
            SpecSource::InTaskDir {
                spec: Box::new(isolated),
                task_dirs: tmpfs.join("taskdirs"),
            },
            "issue 4: as `lib-limits`, plus `user(\"nobody\")` and `IsolationSpec { chroot, pid, ipc, uts }`: a task dir made each round (untimed), chroot from the default chroot env (read-only bind mounts), /dev and /proc, pid+ipc+uts namespaces, default capabilities, no_new_privs".into(),
            vec![
                Target::TimesOf("bwrap-dev-proc", 1.0),
                Target::TimesOf("runc", 0.25),
                Target::PlusMs("lib-isolated-base", 0.3),
            ],
        ),
    ] {
        let root = tmpfs.join(format!("root-{key}"));
        let var = match &env.shim_static {
            None => Variant::new(key, what, Action::Bare).skip(no_shim()),
            Some((path, _)) => Variant::new(
                key,
                what,
                Action::Library {
                    exec: Executor::with_root(&root).shim_path(path).cgroup_parent(CGROUP_PARENT),
                    spec,
                },
            ),
        };
        v.push(targets.into_iter().fold(var, Variant::target));
    }

    // Issue 7: the same isolated start with the shim of an earlier commit
    // (`BENCH_BASE_REF`, built by `scripts/bench`): what the newer isolation
    // steps (device rules, /sys and /proc masks, secrets tmpfs, the pid
    // namespace's init...) cost, side by side in the same rounds.
    {
        let what = format!(
            "issue 7: as `lib-isolated`, with the static shim built from `{}` (before the issue-7 steps): the same start without them",
            cfg.base_ref
        );
        let root = tmpfs.join("root-lib-isolated-base");
        v.push(match &cfg.shim_base {
            None => Variant::new("lib-isolated-base", what, Action::Bare)
                .skip("no base shim (set BENCH_BASE_REF for scripts/bench)"),
            Some(path) => Variant::new(
                "lib-isolated-base",
                what,
                Action::Library {
                    exec: Executor::with_root(&root)
                        .shim_path(path)
                        .cgroup_parent(CGROUP_PARENT),
                    spec: SpecSource::InTaskDir {
                        spec: Box::new(isolated_base),
                        task_dirs: tmpfs.join("taskdirs-base"),
                    },
                },
            ),
        });
    }

    // Reference points from Debian's packages.
    let mut binds: Vec<OsString> = Vec::new();
    for d in RO_BINDS {
        if Path::new(d).exists() {
            binds.extend(["--ro-bind".into(), OsString::from(d), OsString::from(d)]);
        }
    }
    let ns: Vec<OsString> = ["--unshare-pid", "--unshare-ipc", "--unshare-uts"]
        .iter()
        .map(OsString::from)
        .collect();
    let bwrap_plain: Vec<OsString> = binds
        .iter()
        .chain(&ns)
        .cloned()
        .chain([OsString::from("/bin/true")])
        .collect();
    let bwrap_full: Vec<OsString> = binds
        .iter()
        .cloned()
        .chain(
            ["--dev", "/dev", "--proc", "/proc"]
                .iter()
                .map(OsString::from),
        )
        .chain(ns.iter().cloned())
        .chain([OsString::from("/bin/true")])
        .collect();
    for (key, args, what) in [
        (
            "bwrap",
            bwrap_plain,
            format!(
                "`bwrap` {} --unshare-pid --unshare-ipc --unshare-uts /bin/true",
                RO_BINDS
                    .iter()
                    .map(|d| format!("--ro-bind {d} {d}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        ),
        (
            "bwrap-dev-proc",
            bwrap_full,
            "as `bwrap`, plus `--dev /dev --proc /proc` (what issue 4's chroot also mounts)".into(),
        ),
    ] {
        v.push(match &env.bwrap {
            Some(p) => Variant::new(
                key,
                what,
                Action::External {
                    program: p.clone(),
                    args,
                    stderr: tmpfs.join(format!("{key}.stderr")),
                },
            ),
            None => Variant::new(key, what, Action::Bare)
                .skip("bwrap not installed (Debian: bubblewrap)"),
        });
    }
    let runc_what = format!(
        "`runc --root <tmpfs> run --bundle B ID` of `runc spec`'s bundle edited: args /bin/true, no terminal, read-only empty rootfs with read-only binds of {}, memory limit {} MiB, pids limit {PIDS_LIMIT}, namespaces pid+ipc+uts+mount (network and cgroup removed); runc deletes the container on exit",
        RO_BINDS.join(" "),
        MEMORY_LIMIT >> 20
    );
    v.push(match &env.runc {
        None => {
            Variant::new("runc", runc_what, Action::Bare).skip("runc not installed (Debian: runc)")
        }
        Some(p) => match runc_bundle(p, &tmpfs.join("runc")) {
            Ok((state_root, bundle)) => Variant::new(
                "runc",
                runc_what,
                Action::Runc {
                    program: p.clone(),
                    state_root,
                    bundle,
                    stderr: tmpfs.join("runc.stderr"),
                },
            ),
            Err(e) => {
                eprintln!("runc: cannot make a bundle: {e}");
                Variant::new("runc", runc_what, Action::Bare).skip(format!("bundle: {e}"))
            }
        },
    });

    for var in &mut v {
        if !cfg.wants(var.key) && var.state.runs() {
            var.state = State::Skipped("not in BENCH_ONLY".into());
        }
    }
    v
}

/// A bundle from `runc spec`, edited: returns (state root, bundle dir).
fn runc_bundle(runc: &Path, dir: &Path) -> Res<(PathBuf, PathBuf)> {
    let bundle = dir.join("bundle");
    let rootfs = bundle.join("rootfs");
    let state_root = dir.join("state");
    for d in [&rootfs, &state_root] {
        std::fs::create_dir_all(d).map_err(|e| format!("create {}: {e}", d.display()))?;
    }
    let out = Command::new(runc)
        .arg("spec")
        .arg("--bundle")
        .arg(&bundle)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("runc spec: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "runc spec: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let path = bundle.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut spec: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    spec["process"]["terminal"] = json!(false);
    spec["process"]["args"] = json!(["/bin/true"]);
    spec["root"] = json!({ "path": "rootfs", "readonly": true });
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        for d in RO_BINDS {
            // /bin, /lib, /lib64 are symlinks into /usr on merged-/usr Debian:
            // bind what they point at, at the same place.
            if let Ok(src) = std::fs::canonicalize(d) {
                mounts.push(json!({
                    "destination": d, "type": "bind", "source": src,
                    "options": ["rbind", "ro", "nosuid", "nodev"]
                }));
            }
        }
    }
    if let Some(nss) = spec["linux"]["namespaces"].as_array_mut() {
        nss.retain(|n| !matches!(n["type"].as_str(), Some("network" | "cgroup")));
    }
    spec["linux"]["resources"]["memory"] = json!({ "limit": MEMORY_LIMIT });
    spec["linux"]["resources"]["pids"] = json!({ "limit": PIDS_LIMIT });
    let text = serde_json::to_string_pretty(&spec).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((state_root, bundle))
}

fn run_rounds(variants: &mut [Variant], m: usize, mode: &Mode) {
    let (warmup, rounds, pause) = (mode.warmup, mode.rounds, mode.pause);
    let n = variants.len();
    let bare = variants.iter().position(|v| v.key == "bare").unwrap_or(0);
    for round in 0..warmup + rounds {
        let measured = round >= warmup;
        let mut this_round = vec![None; n];
        for k in 0..n {
            let i = (round + k) % n;
            let v = &mut variants[i];
            if !v.state.runs() {
                continue;
            }
            if pause > Duration::ZERO {
                std::thread::sleep(pause);
            }
            match v.run_once() {
                Ok((dt, rm)) => {
                    this_round[i] = Some(ms(dt));
                    if measured {
                        v.samples[m].push(ms(dt));
                        if let (0, Some((st, rm))) = (m, rm) {
                            v.starts.push(ms(st));
                            v.removes.push(ms(rm));
                        }
                    }
                }
                Err(e) => {
                    eprintln!(
                        "FAILED {} (round {round}; no further runs of it): {e}",
                        v.key
                    );
                    v.state = State::Failed(e);
                    v.cleanup();
                }
            }
            // Outside the timed part: reap supervisors that have exited
            // (this process is their subreaper). No child of ours is being
            // waited for here, so nothing is stolen from anyone.
            reap_zombies();
        }
        if measured {
            if let Some(b) = this_round[bare] {
                for (i, s) in this_round.iter().enumerate() {
                    if let Some(s) = s {
                        variants[i].ratios[m].push(s / b);
                    }
                }
            }
        }
        if rounds >= 10 && measured && (round - warmup + 1).is_multiple_of((rounds / 5).max(1)) {
            eprintln!("  round {}/{rounds}", round - warmup + 1);
        }
    }
}

// ---------------------------------------------------------------------------
// exit detection latency

/// The task: sleep (so the supervisor is in its poll loop), then print
/// CLOCK_REALTIME in ns and `_exit(0)` at once.
fn exit_stamp_helper(sleep_ms: Option<&str>) -> ! {
    let ms = sleep_ms.and_then(|s| s.parse().ok()).unwrap_or(20);
    std::thread::sleep(Duration::from_millis(ms));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let _ = std::io::stdout().write_all(format!("{now}\n").as_bytes());
    let _ = std::io::stdout().flush();
    exit_now(0)
}

#[allow(unsafe_code)]
fn exit_now(code: i32) -> ! {
    // SAFETY: _exit(2) has no preconditions; it ends the process at once,
    // without atexit handlers or destructors, which is what is measured.
    unsafe { libc::_exit(code) }
}

struct ExitLatency {
    /// Per root ("tmpfs"/"disk"): measure name → latencies in ms.
    series: BTreeMap<&'static str, BTreeMap<&'static str, Vec<f64>>>,
    errors: Vec<String>,
    samples: usize,
}

const M_FINISHED: &str = "`finished_at` − exit (µs clock)";
const M_MTIME: &str = "`state.json` mtime − exit";
const M_WAIT: &str = "`Task::wait()` returns − exit";

fn exit_latency(env: &Environment, tmpfs: &Path, disk: &Path, samples: usize) -> ExitLatency {
    let mut out = ExitLatency {
        series: BTreeMap::new(),
        errors: Vec::new(),
        samples,
    };
    let Some((shim, _)) = &env.shim_static else {
        out.errors.push("no static shim".into());
        return out;
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            out.errors.push(format!("current_exe: {e}"));
            return out;
        }
    };
    let roots = [
        (
            "tmpfs",
            Executor::with_root(tmpfs.join("root-exit"))
                .shim_path(shim)
                .cgroup_parent(CGROUP_PARENT),
        ),
        (
            "disk",
            Executor::with_root(disk.join("root-exit"))
                .shim_path(shim)
                .cgroup_parent(CGROUP_PARENT),
        ),
    ];
    let mut spec = TaskSpec::new(exe.to_string_lossy());
    spec.args([HELPER_ARG, "20"]);
    for i in 0..samples {
        // Alternate which root goes first.
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for (fs, exec) in order.map(|k| &roots[k]) {
            match one_exit_sample(exec, &spec) {
                Ok(m) => {
                    let per = out.series.entry(fs).or_default();
                    for (name, val) in m {
                        per.entry(name).or_default().push(val);
                    }
                }
                Err(e) => {
                    if out.errors.len() < 3 {
                        eprintln!("exit latency ({fs}): {e}");
                    }
                    out.errors.push(e);
                }
            }
            reap_zombies();
        }
        if out.errors.len() > samples / 2 {
            break;
        }
    }
    out
}

fn one_exit_sample(exec: &Executor, spec: &TaskSpec) -> Res<Vec<(&'static str, f64)>> {
    let mut task = exec.start(spec).map_err(|e| format!("start: {e}"))?;
    let exit = task.wait().map_err(|e| format!("wait: {e}"));
    let waited = unix_ns(SystemTime::now());
    let dir = task.dir().to_path_buf();
    let id = task.id().to_string();
    drop(task);
    let result = (|| -> Res<Vec<(&'static str, f64)>> {
        expect_success(&exit?)?;
        let stdout = std::fs::read_to_string(dir.join(names::STDOUT))
            .map_err(|e| format!("read {}: {e}", names::STDOUT))?;
        let stamp: i128 = stdout
            .trim()
            .parse()
            .map_err(|_| format!("bad stamp {stdout:?}"))?;
        let state_path = dir.join(names::STATE);
        let meta = std::fs::metadata(&state_path).map_err(|e| format!("stat state.json: {e}"))?;
        let mtime = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
        let state: Value = serde_json::from_slice(
            &std::fs::read(&state_path).map_err(|e| format!("read state.json: {e}"))?,
        )
        .map_err(|e| format!("parse state.json: {e}"))?;
        let finished = state["finished_at"].as_str().ok_or("no finished_at")?;
        let finished = unix_ns(
            humantime::parse_rfc3339(finished)
                .map_err(|e| format!("finished_at {finished:?}: {e}"))?,
        );
        let d = |t: i128| (t - stamp) as f64 / 1e6;
        Ok(vec![
            (M_FINISHED, d(finished)),
            (M_MTIME, d(mtime)),
            (M_WAIT, d(waited)),
        ])
    })();
    let removed = exec
        .remove(&id, false)
        .map_err(|e| format!("remove {id}: {e}"));
    let m = result?;
    removed?;
    Ok(m)
}

// ---------------------------------------------------------------------------
// idle memory

#[derive(Default, Clone)]
struct Mem {
    n: usize,
    pss: f64,
    pss_anon: f64,
    pss_file: f64,
    rss: f64,
    private_dirty: f64,
}

struct MemRow {
    key: String,
    what: String,
    result: Res<Mem>,
}

fn idle_memory(env: &Environment, tmpfs: &Path, n: usize) -> Vec<MemRow> {
    let mut rows = Vec::new();
    for (key, shim) in [
        ("nomad-shim (static)", &env.shim_static),
        ("nomad-shim (dynamic)", &env.shim_dynamic),
    ] {
        let Some((path, _)) = shim else { continue };
        let exec = Executor::with_root(tmpfs.join(format!("root-mem-{}", rows.len())))
            .shim_path(path)
            .cgroup_parent(CGROUP_PARENT);
        rows.push(MemRow {
            key: key.into(),
            what: format!(
                "supervisor of a library task `/bin/sleep 1000` ({})",
                path.display()
            ),
            result: shim_memory(&exec, n),
        });
        reap_zombies();
    }
    // Issue 7: what the pid namespace's init (a fork of the supervisor that
    // forwards signals and reaps) adds per task: the whole tree of a task
    // (supervisor + init + program) against the same task with
    // `init: Some(false)` (supervisor + program), N of each alive at once.
    // The init's own PSS is shown too, for information.
    if let Some((path, _)) = &env.shim_static {
        let exec = Executor::with_root(tmpfs.join("root-mem-init"))
            .shim_path(path)
            .cgroup_parent(CGROUP_PARENT);
        rows.extend(init_memory(&exec, n));
        reap_zombies();
    }
    for tini in &env.tini {
        rows.push(MemRow {
            key: tini
                .file_name()
                .map_or("tini".into(), |f| f.to_string_lossy().into_owned()),
            what: format!(
                "`{} -s -- /bin/sleep 1000`, a child of the bench",
                tini.display()
            ),
            result: tini_memory(tini, n),
        });
    }
    if env.tini.is_empty() {
        rows.push(MemRow {
            key: "tini".into(),
            what: "not installed (Debian: tini)".into(),
            result: Err("skipped".into()),
        });
    }
    rows
}

fn shim_memory(exec: &Executor, n: usize) -> Res<Mem> {
    let mut ids = Vec::new();
    let result = (|| {
        let mut pids = Vec::new();
        let mut spec = TaskSpec::new("/bin/sleep");
        spec.arg("1000");
        for _ in 0..n {
            let task = exec.start(&spec).map_err(|e| format!("start sleep: {e}"))?;
            ids.push(task.id().to_string());
            pids.push(task.supervisor_pid().ok_or("no supervisor pid")?);
        }
        // Let every supervisor settle into its poll loop.
        std::thread::sleep(Duration::from_millis(300));
        average_rollup(&pids)
    })();
    for id in &ids {
        if let Err(e) = exec.remove(id, true) {
            eprintln!("idle memory: remove {id}: {e}");
        }
    }
    result
}

/// Row keys of the init's memory (see `init_memory`).
const MEM_INIT_OWN: &str = "init (pid namespace)";
const MEM_TREE_INIT: &str = "task tree, with init";
const MEM_TREE_NO_INIT: &str = "task tree, `--no-init`";
const MEM_INIT_ADDS: &str = "init adds, per task";

/// N library tasks `/bin/sleep 1000` with `IsolationSpec { pid: true }` and
/// the init, and N with `init: Some(false)`, alive together (so the shared
/// pages of the binaries are split the same way for both). Rows: the init's
/// own PSS; the average PSS of a task's whole tree (supervisor + init +
/// program, and supervisor + program); their difference, which is what the
/// init adds per task (issue 7's target).
fn init_memory(exec: &Executor, n: usize) -> Vec<MemRow> {
    let mut ids = Vec::new();
    let result = (|| -> Res<[Mem; 4]> {
        // [with init, without]: the tree's pids; and the inits' pids.
        let mut trees: [Vec<i32>; 2] = [Vec::new(), Vec::new()];
        let mut inits = Vec::new();
        for i in 0..2 * n {
            // Alternate, so that neither set starts later on average.
            let with_init = i % 2 == 0;
            let mut spec = TaskSpec::new("/bin/sleep");
            spec.arg("1000").isolation(IsolationSpec {
                pid: true,
                init: Some(with_init),
                ..IsolationSpec::default()
            });
            let task = exec.start(&spec).map_err(|e| format!("start sleep: {e}"))?;
            ids.push(task.id().to_string());
            let pid = task.pid().ok_or("no task pid")?;
            let sup = task.supervisor_pid().ok_or("no supervisor pid")?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let tree = &mut trees[usize::from(!with_init)];
            tree.push(sup);
            tree.push(pid);
            if with_init {
                if comm.trim() == "sleep" {
                    return Err(
                        "no init: the task's pid is the program itself (a shim without an init)"
                            .into(),
                    );
                }
                inits.push(pid);
                // The program: the init's only child (proc(5),
                // /proc/PID/task/TID/children).
                let kids = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                    .map_err(|e| format!("/proc/{pid}/task/{pid}/children: {e}"))?;
                let kids: Vec<i32> = kids
                    .split_whitespace()
                    .filter_map(|k| k.parse().ok())
                    .collect();
                if kids.len() != 1 {
                    return Err(format!("the init {pid} has {} children, not 1", kids.len()));
                }
                tree.extend(kids);
            } else if comm.trim() != "sleep" {
                return Err(format!(
                    "--no-init: the task's pid {pid} is `{}`, not sleep",
                    comm.trim()
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        // Averages per process, scaled to per task (n tasks per set).
        let per_task = |pids: &[i32]| -> Res<Mem> {
            let mut m = average_rollup(pids)?;
            let k = m.n as f64 / n as f64;
            m.pss *= k;
            m.pss_anon *= k;
            m.pss_file *= k;
            m.rss *= k;
            m.private_dirty *= k;
            m.n = n;
            Ok(m)
        };
        let own = average_rollup(&inits)?;
        let with = per_task(&trees[0])?;
        let without = per_task(&trees[1])?;
        let adds = Mem {
            n,
            pss: with.pss - without.pss,
            pss_anon: with.pss_anon - without.pss_anon,
            pss_file: with.pss_file - without.pss_file,
            rss: with.rss - without.rss,
            private_dirty: with.private_dirty - without.private_dirty,
        };
        Ok([own, with, without, adds])
    })();
    for id in &ids {
        if let Err(e) = exec.remove(id, true) {
            eprintln!("idle memory: remove {id}: {e}");
        }
    }
    let what = [
        "the init alone (the task's recorded pid under `IsolationSpec { pid: true }`): information",
        "supervisor + init + program (`/bin/sleep 1000`, `IsolationSpec { pid: true }`), summed per task",
        "supervisor + program, the same task with `init: Some(false)` (`--no-init`), summed per task; alive together with the tasks above",
        "the difference of the two rows above: what the init adds to a task",
    ];
    let keys = [MEM_INIT_OWN, MEM_TREE_INIT, MEM_TREE_NO_INIT, MEM_INIT_ADDS];
    match result {
        Ok(mems) => keys
            .iter()
            .zip(what)
            .zip(mems)
            .map(|((key, what), m)| MemRow {
                key: (*key).into(),
                what: what.into(),
                result: Ok(m),
            })
            .collect(),
        Err(e) => vec![MemRow {
            key: MEM_INIT_ADDS.into(),
            what: what[3].into(),
            result: Err(e),
        }],
    }
}

fn tini_memory(tini: &Path, n: usize) -> Res<Mem> {
    let mut kids: Vec<Child> = Vec::new();
    let result = (|| {
        for _ in 0..n {
            kids.push(
                Command::new(tini)
                    .args(["-s", "--", "/bin/sleep", "1000"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| format!("spawn {}: {e}", tini.display()))?,
            );
        }
        std::thread::sleep(Duration::from_millis(300));
        let pids: Vec<i32> = kids.iter().map(|c| c.id() as i32).collect();
        average_rollup(&pids)
    })();
    // tini passes SIGTERM on to sleep and exits when it has reaped it.
    for c in &kids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    for mut c in kids {
        let _ = c.wait();
    }
    result
}

fn average_rollup(pids: &[i32]) -> Res<Mem> {
    let mut sum = Mem::default();
    for &pid in pids {
        let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .map_err(|e| format!("/proc/{pid}/smaps_rollup: {e}"))?;
        let field = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        };
        sum.pss += field("Pss");
        sum.pss_anon += field("Pss_Anon");
        sum.pss_file += field("Pss_File");
        sum.rss += field("Rss");
        sum.private_dirty += field("Private_Dirty");
        sum.n += 1;
    }
    let k = sum.n.max(1) as f64;
    Ok(Mem {
        n: sum.n,
        pss: sum.pss / k,
        pss_anon: sum.pss_anon / k,
        pss_file: sum.pss_file / k,
        rss: sum.rss / k,
        private_dirty: sum.private_dirty / k,
    })
}

// ---------------------------------------------------------------------------
// the report

fn render(
    cfg: &Config,
    env: &Environment,
    variants: &[Variant],
    exit: Option<&ExitLatency>,
    memory: Option<&[MemRow]>,
) -> String {
    let mut r = String::new();
    let shim = |s: &Option<(PathBuf, String)>| {
        s.as_ref()
            .map_or("none".into(), |(p, d)| format!("`{}` — {d}", p.display()))
    };
    let _ = writeln!(r, "## Results of the last run\n");
    let _ = writeln!(r, "* Command: `{}`", cfg.command);
    let _ = writeln!(
        r,
        "* Date: {}; kernel {}; {}; {}",
        env.date, env.kernel, env.cpu, env.rustc
    );
    let _ = writeln!(
        r,
        "* Shim binaries (release profile): {}; {}",
        shim(&env.shim_static),
        shim(&env.shim_dynamic)
    );
    let _ = writeln!(
        r,
        "* Task roots: a temp dir in /dev/shm ({}) and in /var/tmp ({}); cgroup layout: {}",
        env.tmpfs_type, env.disk_type, env.cgroups
    );
    let _ = writeln!(
        r,
        "* Load average (1, 5, 15 min) at the start: {}; at the end: {}",
        env.load_start,
        load_average()
    );
    let _ = writeln!(
        r,
        "* Start-to-exit: each round runs every variant once, round-robin, starting one variant later each round; warm-up rounds are discarded. Times in ms. \"× bare\" is the ratio of the medians; \"per round\" is the median over rounds of (variant ÷ that round's `bare`)."
    );
    for (m, mode) in cfg.modes.iter().enumerate().filter(|(_, m)| m.rounds > 0) {
        let _ = writeln!(
            r,
            "\n### Start to exit of `/bin/true`, {}\n\n{} rounds after {} warm-up rounds, {} ms of idle sleep (untimed) before each run.\n",
            mode.name,
            mode.rounds,
            mode.warmup,
            mode.pause.as_millis()
        );
        start_table(&mut r, variants, m);
    }
    let lib: Vec<&Variant> = variants.iter().filter(|v| !v.removes.is_empty()).collect();
    if !lib.is_empty() {
        let _ = writeln!(
            r,
            "\n### The library's calls, back to back\n\nMedians in ms. `start()` returns once the supervisor reports the program executed; `wait()` then sleeps on the supervisor's pidfd until the final state is durable; the `wait()` column is the difference of the medians. `remove()` (after the task ended) is timed apart and not in the tables above.\n"
        );
        let _ = writeln!(
            r,
            "| variant | `start()` | `wait()` after it | start-to-exit | `remove()` |"
        );
        let _ = writeln!(r, "|---|---:|---:|---:|---:|");
        for v in lib {
            let (st, tot) = (quantile(&v.starts, 0.5), quantile(&v.samples[0], 0.5));
            let _ = writeln!(
                r,
                "| `{}` | {st:.3} | {:.3} | {tot:.3} | {:.3} |",
                v.key,
                tot - st,
                quantile(&v.removes, 0.5)
            );
        }
    }

    if let Some(x) = exit {
        let _ = writeln!(r, "\n### Exit detection latency\n");
        let _ = writeln!(
            r,
            "The task is this bench binary in its helper mode: it sleeps 20 ms (so the supervisor is idle in its poll loop), writes CLOCK_REALTIME in ns to its stdout and calls `_exit(0)`. {} samples per root, the roots alternating. Times in ms after that stamp. `finished_at` is taken by the supervisor when it has reaped the task, before it writes the state. The `state.json` mtime is set by the kernel from its coarse clock (resolution here: {}), which lags the real clock, so it reads milliseconds *before* the stamp (negative below) and cannot resolve sub-millisecond latencies; it is shown only because it is what an outside reader could use. `Task::wait()` returns once the supervisor has written the final state durably (fsync of the file and the directory) and exited: what the agent sees.\n",
            x.samples,
            env.coarse_res_ns.map_or("unknown".into(), |ns| format!("{:.3} ms", ns as f64 / 1e6))
        );
        let _ = writeln!(r, "| root | measure | median | p90 | n | target |");
        let _ = writeln!(r, "|---|---|---:|---:|---:|---|");
        for (fs, per) in &x.series {
            for name in [M_FINISHED, M_MTIME, M_WAIT] {
                let Some(s) = per.get(name) else { continue };
                let m = quantile(s, 0.5);
                let target = match name {
                    M_FINISHED => format!("median ≤ 1 ms: {}", verdict(m <= 1.0)),
                    M_MTIME => "not comparable: coarse timestamps (see above)".into(),
                    _ => String::new(),
                };
                let _ = writeln!(
                    r,
                    "| {fs} | {name} | {m:.3} | {:.3} | {} | {target} |",
                    quantile(s, 0.9),
                    s.len()
                );
            }
        }
        if !x.errors.is_empty() {
            let _ = writeln!(
                r,
                "\n{} samples failed; first: {}",
                x.errors.len(),
                one_line(&x.errors[0])
            );
        }
    }

    if let Some(rows) = memory {
        let _ = writeln!(r, "\n### Idle supervisor memory\n");
        let _ = writeln!(
            r,
            "Averages over N live supervisors, each with a task `/bin/sleep 1000`, from `/proc/<supervisor pid>/smaps_rollup`, in KiB; each kind measured alone (its N supervisors and N sleeps), then stopped. The init rows (issue 7) sum `smaps_rollup` over a task's processes instead: N tasks under a pid namespace with the init and N with `--no-init`, alive together; the init's own row is information, the target is on the difference.\n"
        );
        let _ = writeln!(
            r,
            "| supervisor | N | PSS | Pss_Anon | Pss_File | RSS | Private_Dirty | target |"
        );
        let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|---:|---|");
        for row in rows {
            match &row.result {
                Ok(m) => {
                    let target = match row.key.as_str() {
                        "nomad-shim (static)" => {
                            format!("PSS ≤ 200 KiB: {}", verdict(m.pss <= 200.0))
                        }
                        MEM_INIT_ADDS => {
                            format!("PSS ≤ 64 KiB: {}", verdict(m.pss <= 64.0))
                        }
                        _ => String::new(),
                    };
                    let _ = writeln!(
                        r,
                        "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {target} |",
                        row.key, m.n, m.pss, m.pss_anon, m.pss_file, m.rss, m.private_dirty
                    );
                }
                Err(e) => {
                    let _ = writeln!(
                        r,
                        "| {} | | | | | | | {}: {} |",
                        row.key,
                        one_line(&row.what),
                        one_line(e)
                    );
                }
            }
        }
        for row in rows.iter().filter(|r| r.result.is_ok()) {
            let _ = writeln!(r, "\n* {}: {}", row.key, row.what);
        }
    }

    let _ = writeln!(r, "\n### Variants\n");
    for v in variants {
        let _ = writeln!(r, "* `{}`: {}", v.key, v.what);
    }
    r
}

fn start_table(r: &mut String, variants: &[Variant], m: usize) {
    let _ = writeln!(
        r,
        "| variant | median | p10 | p90 | × bare | per round | target |"
    );
    let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|---|");
    let med = |key: &str| {
        variants
            .iter()
            .find(|v| v.key == key && !v.samples[m].is_empty())
            .map(|v| quantile(&v.samples[m], 0.5))
    };
    let bare = med("bare");
    for v in variants {
        let samples = &v.samples[m];
        match &v.state {
            State::Ready | State::Failed(_) if !samples.is_empty() => {
                let md = quantile(samples, 0.5);
                let x = bare.map_or("—".into(), |b| format!("{:.2}×", md / b));
                let pr = if v.ratios[m].is_empty() {
                    "—".into()
                } else {
                    format!("{:.2}×", quantile(&v.ratios[m], 0.5))
                };
                let targets: Vec<String> = v
                    .targets
                    .iter()
                    .map(|t| target_text(t, md, bare, &med))
                    .collect();
                let failed = if let State::Failed(e) = &v.state {
                    format!(" (failed later: {})", one_line(e))
                } else {
                    String::new()
                };
                let _ = writeln!(
                    r,
                    "| `{}` | {md:.3} | {:.3} | {:.3} | {x} | {pr} | {}{failed} |",
                    v.key,
                    quantile(samples, 0.1),
                    quantile(samples, 0.9),
                    targets.join("; ")
                );
            }
            State::Failed(e) => {
                let _ = writeln!(r, "| `{}` | failed | | | | | {} |", v.key, one_line(e));
            }
            State::Skipped(why) => {
                let _ = writeln!(r, "| `{}` | skipped | | | | | {} |", v.key, one_line(why));
            }
            State::Ready => {
                let _ = writeln!(r, "| `{}` | no samples | | | | | |", v.key);
            }
        }
    }
}

fn target_text(t: &Target, m: f64, bare: Option<f64>, med: &dyn Fn(&str) -> Option<f64>) -> String {
    match *t {
        Target::TimesBare(x) => match bare {
            Some(b) => format!("≤ {x:.1}× bare: {}", verdict(m / b <= x)),
            None => format!("≤ {x:.1}× bare: no baseline"),
        },
        Target::PlusMs(key, d) => match med(key) {
            Some(o) => format!(
                "≤ `{key}` + {d} ms (+{:.3} ms): {}",
                m - o,
                verdict(m - o <= d)
            ),
            None => format!("≤ `{key}` + {d} ms: `{key}` not measured"),
        },
        Target::AbsMs(x) => format!("≤ {x} ms: {}", verdict(m <= x)),
        Target::TimesOf(key, x) => match med(key) {
            Some(o) => format!("≤ {x}× `{key}` ({:.2}×): {}", m / o, verdict(m / o <= x)),
            None => format!("≤ {x}× `{key}`: `{key}` not measured"),
        },
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

/// Replaces the text between the markers (or appends it, or creates the file).
fn write_report(path: &Path, body: &str) -> Res<()> {
    let block = format!("{REPORT_BEGIN}\n{body}\n{REPORT_END}\n");
    let old = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "# Performance\n\nRun `scripts/bench` to regenerate the results below.\n\n".into()
        }
        Err(e) => return Err(format!("read {}: {e}", path.display())),
    };
    let new = match (old.find(REPORT_BEGIN), old.find(REPORT_END)) {
        (Some(b), Some(e)) if e > b => {
            let after = &old[e + REPORT_END.len()..];
            format!(
                "{}{block}{}",
                &old[..b],
                after.strip_prefix('\n').unwrap_or(after)
            )
        }
        _ => format!("{old}\n{block}"),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    std::fs::write(path, new).map_err(|e| format!("write {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// helpers

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "?".into(),
        |s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn unix_ns(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// Linear-interpolated quantile.
fn quantile(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut s = xs.to_vec();
    s.sort_by(f64::total_cmp);
    let pos = q * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

fn one_line(s: &str) -> String {
    let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let s = s.replace('|', "\\|");
    if s.chars().count() > 300 {
        format!("{}…", s.chars().take(300).collect::<String>())
    } else {
        s
    }
}

fn read_tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let s = s.trim();
    let start = s.len().saturating_sub(600);
    let start = (start..=s.len())
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(s.len());
    s[start..].to_owned()
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0))
}

fn fs_type(path: &Path) -> String {
    use nix::sys::statfs::{statfs, EXT4_SUPER_MAGIC, TMPFS_MAGIC};
    match statfs(path) {
        Ok(s) if s.filesystem_type() == TMPFS_MAGIC => "tmpfs".into(),
        Ok(s) if s.filesystem_type() == EXT4_SUPER_MAGIC => "ext4".into(),
        Ok(s) => format!("{:?}", s.filesystem_type()),
        Err(e) => format!("statfs: {e}"),
    }
}

/// Whether an ELF file has no `PT_INTERP` (static or static-pie).
fn elf_is_static(path: &Path) -> std::io::Result<bool> {
    let b = std::fs::read(path)?;
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a 64-bit little-endian ELF file",
        )
    };
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        return Err(bad());
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(b[32..40].try_into().map_err(|_| bad())?) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        let p_type = b
            .get(o..o + 4)
            .ok_or_else(bad)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))?;
        if p_type == 3 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Reaps the children that are zombies (exited supervisors re-parented to
/// us), by pid: never a `waitpid(-1)` that could take a child someone waits for.
fn reap_zombies() {
    for pid in nomad_shim::identity::children() {
        if nomad_shim::identity::state(pid) == Some('Z') {
            let _ = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
        }
    }
}

/// Reaps until no child is left or `timeout`; returns what is left.
fn reap_all(timeout: Duration) -> Vec<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        reap_zombies();
        let left = nomad_shim::identity::children();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
