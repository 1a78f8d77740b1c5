//! Idle memory: PSS of idle supervisors (and of the pid namespace's init, tini) from `smaps_rollup`.

use super::*;

// idle memory

#[derive(Default, Clone)]
pub(crate) struct Mem {
    pub(crate) n: usize,
    pub(crate) pss: f64,
    pub(crate) pss_anon: f64,
    pub(crate) pss_file: f64,
    pub(crate) rss: f64,
    pub(crate) private_dirty: f64,
}

pub(crate) struct MemRow {
    pub(crate) key: String,
    pub(crate) what: String,
    pub(crate) result: Res<Mem>,
}

pub(crate) fn idle_memory(env: &Environment, tmpfs: &Path, n: usize) -> Vec<MemRow> {
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
                shown(path)
            ),
            result: shim_memory(&exec, n),
        });
        reap_zombies();
    }
    // Issue 11: the same supervisors started by the CLI (`nomad-shim start`,
    // which forks the supervisor from its own process instead of exec'ing).
    if let Some((path, _)) = &env.shim_static {
        let exec = Executor::with_root(tmpfs.join("root-mem-cli"))
            .shim_path(path)
            .cgroup_parent(CGROUP_PARENT);
        rows.push(MemRow {
            key: MEM_CLI.into(),
            what: format!(
                "supervisor of `nomad-shim start -- /bin/sleep 1000` ({}), started by the CLI",
                shown(path)
            ),
            result: cli_memory(path, &exec, n),
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

pub(crate) fn shim_memory(exec: &Executor, n: usize) -> Res<Mem> {
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

/// The row of supervisors started by the CLI.
pub(crate) const MEM_CLI: &str = "nomad-shim (static), by the CLI";

/// N supervisors started by `SHIM start`, each with a task `/bin/sleep 1000`.
pub(crate) fn cli_memory(shim: &Path, exec: &Executor, n: usize) -> Res<Mem> {
    let mut ids = Vec::new();
    let result = (|| {
        let mut pids = Vec::new();
        for i in 0..n {
            let id = format!("mem-cli-{i}");
            let st = Command::new(shim)
                .arg("--root")
                .arg(exec.root())
                .args(["--cgroup-parent", CGROUP_PARENT])
                .args(["start", "--id", &id, "--", "/bin/sleep", "1000"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status()
                .map_err(|e| format!("spawn {}: {e}", shim.display()))?;
            if !st.success() {
                return Err(format!("nomad-shim start: {st}"));
            }
            ids.push(id.clone());
            let task = exec.open(&id).map_err(|e| format!("open {id}: {e}"))?;
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
pub(crate) const MEM_INIT_OWN: &str = "init (pid namespace)";
pub(crate) const MEM_TREE_INIT: &str = "task tree, with init";
pub(crate) const MEM_TREE_NO_INIT: &str = "task tree, `--no-init`";
pub(crate) const MEM_INIT_ADDS: &str = "init adds, per task";

/// N library tasks `/bin/sleep 1000` with `IsolationSpec { pid: true }` and
/// the init, and N with `init: Some(false)`, alive together (so the shared
/// pages of the binaries are split the same way for both). Rows: the init's
/// own PSS; the average PSS of a task's whole tree (supervisor + init +
/// program, and supervisor + program); their difference, which is what the
/// init adds per task (issue 7's target).
pub(crate) fn init_memory(exec: &Executor, n: usize) -> Vec<MemRow> {
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

pub(crate) fn tini_memory(tini: &Path, n: usize) -> Res<Mem> {
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

pub(crate) fn average_rollup(pids: &[i32]) -> Res<Mem> {
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
