//! The start-to-exit runner: a variant, its one timed run, and the round-robin rounds over all variants.

use super::*;

// start-to-exit variants

pub(crate) enum State {
    Ready,
    Skipped(String),
    Failed(String),
}

impl State {
    pub(crate) fn runs(&self) -> bool {
        matches!(self, State::Ready)
    }
}

/// A target from the issues, checked against the medians.
pub(crate) enum Target {
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
pub(crate) enum SpecSource {
    Fixed(Box<TaskSpec>),
    /// This spec with `isolation.task_dir` set to a fresh directory under
    /// `task_dirs` each round (made before and removed after the timed part).
    InTaskDir {
        spec: Box<TaskSpec>,
        task_dirs: PathBuf,
    },
}

/// Untimed runs at the start of each block of the baseline helper, so that a
/// block never starts right after another variant's clean-up; timed runs.
pub(crate) const BLOCK_WARMUP: usize = 3;
pub(crate) const BLOCK_RUNS: usize = 8;

pub(crate) enum Action {
    /// Nothing (the action of a skipped variant).
    Bare,
    /// `std::process::Command::status()` of `/bin/true` in this process: the
    /// old baseline, for information.
    Spawn,
    /// A block of runs in the separate `baseline` helper (benches/startup/
    /// baseline.c): `PROGRAM MODE WARMUP N PAUSE_US ARGS...`; it prints one
    /// time in ns per timed run.
    Block {
        program: PathBuf,
        mode: &'static str,
        args: Vec<OsString>,
    },
    Library {
        exec: Executor,
        spec: SpecSource,
    },
    /// `SHIM --root R --cgroup-parent P run --rm --id ID [--task-dir D] OPTIONS -- /bin/true`
    /// (with `task_dirs`: a fresh task dir under it each round, made and
    /// removed outside the timed part).
    Cli {
        shim: PathBuf,
        exec: Executor,
        prefix: String,
        options: Vec<String>,
        task_dirs: Option<PathBuf>,
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

pub(crate) struct Variant {
    pub(crate) key: &'static str,
    pub(crate) what: String,
    pub(crate) targets: Vec<Target>,
    pub(crate) action: Action,
    pub(crate) state: State,
    /// Per mode: start-to-exit in ms.
    pub(crate) samples: Vec<Vec<f64>>,
    /// Per round: this sample / that round's bare sample.
    pub(crate) ratios: Vec<Vec<f64>>,
    /// Per round: this sample / that round's floor sample.
    pub(crate) ratios_floor: Vec<Vec<f64>>,
    /// The timed runs of the last block (`Action::Block`), in ms.
    pub(crate) block: Vec<f64>,
    /// Idle time the helper sleeps before each run of a block.
    pub(crate) pause: Duration,
    /// `Executor::remove` after the task ended, timed apart (library only).
    pub(crate) removes: Vec<f64>,
    /// `Executor::start` alone, back to back (library only).
    pub(crate) starts: Vec<f64>,
    pub(crate) counter: u64,
}

impl Variant {
    pub(crate) fn new(key: &'static str, what: impl Into<String>, action: Action) -> Variant {
        Variant {
            key,
            what: what.into(),
            targets: Vec::new(),
            action,
            state: State::Ready,
            samples: Vec::new(),
            ratios: Vec::new(),
            ratios_floor: Vec::new(),
            block: Vec::new(),
            pause: Duration::ZERO,
            removes: Vec::new(),
            starts: Vec::new(),
            counter: 0,
        }
    }

    pub(crate) fn target(mut self, t: Target) -> Variant {
        self.targets.push(t);
        self
    }

    pub(crate) fn skip(mut self, why: impl Into<String>) -> Variant {
        self.state = State::Skipped(why.into());
        self
    }

    /// One timed run; returns (start-to-exit, time of the untimed removal).
    /// One timed run: start-to-exit, and for the library, (`start()` alone,
    /// the untimed `remove()`).
    pub(crate) fn run_once(&mut self) -> Res<(Duration, Option<(Duration, Duration)>)> {
        self.counter += 1;
        let n = self.counter;
        match &self.action {
            Action::Block {
                program,
                mode,
                args,
            } => {
                let out = Command::new(program)
                    .arg(mode)
                    .args([
                        BLOCK_WARMUP.to_string(),
                        BLOCK_RUNS.to_string(),
                        self.pause.as_micros().to_string(),
                    ])
                    .args(args)
                    .stdin(Stdio::null())
                    .output()
                    .map_err(|e| format!("spawn {}: {e}", program.display()))?;
                if !out.status.success() {
                    return Err(format!(
                        "{} {mode}: {}: {}",
                        program.display(),
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                self.block = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter_map(|l| l.trim().parse::<f64>().ok())
                    .map(|ns| ns / 1e6)
                    .collect();
                if self.block.is_empty() {
                    return Err(format!("{} {mode}: no times printed", program.display()));
                }
                let med = quantile(&self.block, 0.5);
                Ok((Duration::from_secs_f64(med / 1e3), None))
            }
            Action::Bare => Err("no action".into()),
            Action::Spawn => {
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
            Action::Cli {
                shim,
                exec,
                prefix,
                options,
                task_dirs,
            } => {
                let id = format!("{prefix}{n}");
                let task_dir = match task_dirs {
                    Some(d) => {
                        let dir = d.join(format!("t{n}"));
                        std::fs::create_dir_all(&dir)
                            .map_err(|e| format!("create {}: {e}", dir.display()))?;
                        Some(dir)
                    }
                    None => None,
                };
                let mut cmd = Command::new(shim);
                cmd.arg("--root")
                    .arg(exec.root())
                    .args(["--cgroup-parent", CGROUP_PARENT])
                    .args(["run", "--rm", "--id", &id]);
                if let Some(d) = &task_dir {
                    cmd.arg("--task-dir").arg(d);
                }
                cmd.args(options)
                    .args(["--", "/bin/true"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                let t0 = Instant::now();
                let st = cmd
                    .status()
                    .map_err(|e| format!("spawn {}: {e}", shim.display()))?;
                let dt = t0.elapsed();
                if let Some(dir) = task_dir {
                    std::fs::remove_dir_all(&dir)
                        .map_err(|e| format!("remove task dir {}: {e}", dir.display()))?;
                }
                if !st.success() {
                    // What `run --rm` may have left.
                    let _ = exec.remove(&id, true);
                    return Err(format!("nomad-shim run --rm: {st}"));
                }
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
    pub(crate) fn cleanup(&mut self) {
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

pub(crate) fn runc_delete(program: &Path, state_root: &Path, id: &str) {
    let _ = Command::new(program)
        .arg("--root")
        .arg(state_root)
        .args(["delete", "-f", id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

pub(crate) fn expect_success(exit: &TaskExit) -> Res<()> {
    if exit.success() {
        Ok(())
    } else {
        Err(format!("task ended with {exit:?}"))
    }
}

pub(crate) fn run_rounds(variants: &mut [Variant], m: usize, mode: &Mode) {
    let (warmup, rounds, pause) = (mode.warmup, mode.rounds, mode.pause);
    let n = variants.len();
    let bare = variants.iter().position(|v| v.key == "bare").unwrap_or(0);
    let floor = variants.iter().position(|v| v.key == "floor");
    for round in 0..warmup + rounds {
        let measured = round >= warmup;
        let mut this_round = vec![None; n];
        for k in 0..n {
            let i = (round + k) % n;
            let v = &mut variants[i];
            if !v.state.runs() {
                continue;
            }
            v.pause = pause;
            let is_block = matches!(v.action, Action::Block { .. });
            if pause > Duration::ZERO && !is_block {
                std::thread::sleep(pause);
            }
            match v.run_once() {
                Ok((dt, rm)) => {
                    this_round[i] = Some(ms(dt));
                    if measured && is_block {
                        v.samples[m].extend_from_slice(&v.block);
                    } else if measured {
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
            if let Some(f) = floor.and_then(|f| this_round[f]) {
                for (i, s) in this_round.iter().enumerate() {
                    if let Some(s) = s {
                        variants[i].ratios_floor[m].push(s / f);
                    }
                }
            }
        }
        if rounds >= 10 && measured && (round - warmup + 1).is_multiple_of((rounds / 5).max(1)) {
            eprintln!("  round {}/{rounds}", round - warmup + 1);
        }
    }
}
