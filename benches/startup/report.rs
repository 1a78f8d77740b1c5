//! The markdown report written between the markers of docs/performance.md.

use super::*;

// the report

pub(crate) fn render(
    cfg: &Config,
    env: &Environment,
    variants: &[Variant],
    exit: Option<&ExitLatency>,
    memory: Option<&[MemRow]>,
) -> String {
    let mut r = String::new();
    let shim = |s: &Option<(PathBuf, String)>| {
        s.as_ref()
            .map_or("none".into(), |(p, d)| format!("`{}` — {d}", shown(p)))
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
        "* Task roots: a temp dir on {} (`tmpfs` variants) and one on {} (`disk` variants); cgroup layout: {}",
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
        "* Start-to-exit: each round runs every variant once, round-robin, starting one variant later each round; warm-up rounds are discarded. Times in ms. `bare` (a fork+exec+wait loop of `/bin/true` in a separate C program) and `floor` (the same plus exactly the kernel work of a task: its cgroups made, joined and removed, and one exec of a static program as the supervisor) run in blocks (see Variants). \"× bare\" and \"× floor\" are ratios of the medians; \"per round\" is the median over rounds of (variant ÷ that round's `bare` or `floor`)."
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
            "\n### The library's calls, back to back\n\nMedians in ms. `start()` returns once the supervisor reports the program executed; `wait()` then sleeps on the start's sync pipe until the supervisor closes it, once the final state is durable (a base binary older than that closes it at the reply, and its `wait()` sleeps on the supervisor's pidfd, until the supervisor has also removed the cgroup and exited); the `wait()` column is the difference of the medians. `remove()` (after the task ended) is timed apart and not in the tables above.\n"
        );
        let _ = writeln!(
            r,
            "| variant | `start()` | `wait()` after it | start-to-exit | × bare | × floor | `remove()` |"
        );
        let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|---:|");
        let med0 = |key: &str| {
            variants
                .iter()
                .find(|v| v.key == key && !v.samples[0].is_empty())
                .map(|v| quantile(&v.samples[0], 0.5))
        };
        let ratio =
            |x: f64, base: Option<f64>| base.map_or("—".into(), |b| format!("{:.2}×", x / b));
        for v in lib {
            let (st, tot) = (quantile(&v.starts, 0.5), quantile(&v.samples[0], 0.5));
            let _ = writeln!(
                r,
                "| `{}` | {st:.3} | {:.3} | {tot:.3} | {} | {} | {:.3} |",
                v.key,
                tot - st,
                ratio(tot, med0("bare")),
                ratio(tot, med0("floor")),
                quantile(&v.removes, 0.5)
            );
        }
    }

    if let Some(x) = exit {
        let _ = writeln!(r, "\n### Exit detection latency\n");
        let _ = writeln!(
            r,
            "The task is this bench binary in its helper mode: it sleeps 20 ms (so the supervisor is idle in its poll loop), writes CLOCK_REALTIME in ns to its stdout and calls `_exit(0)`. {} samples per root, the roots alternating. Times in ms after that stamp. `finished_at` is taken by the supervisor when it has reaped the task, before it writes the state. The `state.json` mtime is set by the kernel from its coarse clock (resolution here: {}), which lags the real clock, so it reads milliseconds *before* the stamp (negative below) and cannot resolve sub-millisecond latencies; it is shown only because it is what an outside reader could use. `Task::wait()` returns once the supervisor has written the final state durably (fsync of the file and the directory) and closed the start's sync pipe: what the agent sees.\n",
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
                        "nomad-shim (static)" | MEM_CLI => {
                            format!("PSS ≤ 160 KiB: {}", verdict(m.pss <= 160.0))
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
    // A block under its own section (BENCH_MARKER other than `bench`: the
    // v2 VM's): its headings one level down.
    let nested = std::env::var("BENCH_MARKER").is_ok_and(|m| !m.is_empty() && m != "bench");
    if nested {
        r = r
            .lines()
            .map(|l| {
                if l.starts_with('#') {
                    format!("#{l}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
    }
    r
}

pub(crate) fn start_table(r: &mut String, variants: &[Variant], m: usize) {
    let _ = writeln!(
        r,
        "| variant | median | p10 | p90 | × bare | × floor | per round ÷ bare | per round ÷ floor | target |"
    );
    let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|---:|---:|---|");
    let med = |key: &str| {
        variants
            .iter()
            .find(|v| v.key == key && !v.samples[m].is_empty())
            .map(|v| quantile(&v.samples[m], 0.5))
    };
    let bare = med("bare");
    let floor = med("floor");
    let per_round = |xs: &[f64]| {
        if xs.is_empty() {
            "—".to_string()
        } else {
            format!("{:.2}×", quantile(xs, 0.5))
        }
    };
    for v in variants {
        let samples = &v.samples[m];
        match &v.state {
            State::Ready | State::Failed(_) if !samples.is_empty() => {
                let md = quantile(samples, 0.5);
                let x = bare.map_or("—".into(), |b| format!("{:.2}×", md / b));
                let xf = floor.map_or("—".into(), |f| format!("{:.2}×", md / f));
                let pr = per_round(&v.ratios[m]);
                let prf = per_round(&v.ratios_floor[m]);
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
                    "| `{}` | {md:.3} | {:.3} | {:.3} | {x} | {xf} | {pr} | {prf} | {}{failed} |",
                    v.key,
                    quantile(samples, 0.1),
                    quantile(samples, 0.9),
                    targets.join("; ")
                );
            }
            State::Failed(e) => {
                let _ = writeln!(r, "| `{}` | failed | | | | | | | {} |", v.key, one_line(e));
            }
            State::Skipped(why) => {
                let _ = writeln!(
                    r,
                    "| `{}` | skipped | | | | | | | {} |",
                    v.key,
                    one_line(why)
                );
            }
            State::Ready => {
                let _ = writeln!(r, "| `{}` | no samples | | | | | | | |", v.key);
            }
        }
    }
}

pub(crate) fn target_text(
    t: &Target,
    m: f64,
    bare: Option<f64>,
    med: &dyn Fn(&str) -> Option<f64>,
) -> String {
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

pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

/// Replaces the text between the markers (or appends it, or creates the file).
pub(crate) fn write_report(path: &Path, body: &str) -> Res<()> {
    let (begin_mark, end_mark) = report_markers();
    let block = format!("{begin_mark}\n{body}\n{end_mark}\n");
    let old = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "# Performance\n\nRun `scripts/bench` to regenerate the results below.\n\n".into()
        }
        Err(e) => return Err(format!("read {}: {e}", path.display())),
    };
    // The begin marker is found by its start, so that a change of its
    // comment text still replaces the old block.
    let begin = old.find(begin_mark.split(" —").next().unwrap_or(&begin_mark));
    let new = match (begin, old.find(&end_mark)) {
        (Some(b), Some(e)) if e > b => {
            let after = &old[e + end_mark.len()..];
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
