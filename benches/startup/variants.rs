//! The start-to-exit variants: what each one runs and which target of the issues it is checked against.

use super::*;

pub(crate) fn build_variants(
    cfg: &Config,
    env: &Environment,
    tmpfs: &Path,
    disk: &Path,
) -> Vec<Variant> {
    let mut v = Vec::new();
    let blocks = format!(
        "in blocks of {BLOCK_WARMUP} untimed + {BLOCK_RUNS} timed runs per round (the block's median is the round's value), so that no timed run follows another variant's clean-up"
    );
    let baseline_how = env
        .baseline
        .as_ref()
        .map_or_else(|e| e.clone(), |(_, how)| how.clone());
    let bare_what = format!(
        "fork + execve(`/bin/true`) + waitpid in a loop, in a separate small C program (benches/startup/baseline.c, {baseline_how}), stdio on /dev/null, {blocks} — the baseline"
    );
    v.push(match &env.baseline {
        Ok((p, _)) => Variant::new(
            "bare",
            bare_what,
            Action::Block {
                program: p.clone(),
                mode: "bare",
                args: vec!["/bin/true".into()],
            },
        ),
        Err(e) => Variant::new("bare", bare_what, Action::Bare).skip(e.clone()),
    });
    let floor_what = format!(
        "the kernel work a task needs and nothing else, in the same C program: fork + execve of that static program as the supervisor, which makes the task's cgroup in each of {}, forks the child, which joins them (one `cgroup.procs` write each) and execs `/bin/true`, waits for it and removes the cgroups; {blocks}",
        match &env.floor_dirs {
            Ok(d) => format!("the {} directories a library task's cgroup has", d.len()),
            Err(_) => "the task cgroup's directories".into(),
        }
    );
    v.push(match (&env.baseline, &env.floor_dirs) {
        (Ok((p, _)), Ok(dirs)) => Variant::new(
            "floor",
            floor_what,
            Action::Block {
                program: p.clone(),
                mode: "floor",
                args: std::iter::once(OsString::from("/bin/true"))
                    .chain(std::iter::once(OsString::from("floor")))
                    .chain(dirs.iter().map(|d| d.clone().into_os_string()))
                    .collect(),
            },
        ),
        (Err(e), _) | (_, Err(e)) => {
            Variant::new("floor", floor_what, Action::Bare).skip(e.clone())
        }
    });
    v.push(Variant::new(
        "bare-spawn",
        "`std::process::Command::status()` of `/bin/true` inside the bench process (posix_spawn: clone(CLONE_VM|CLONE_VFORK) + exec + wait4), stdio on /dev/null — the old baseline, for information",
        Action::Spawn,
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
                if fs == "tmpfs" { "a tmpfs" } else { "a disk dir" },
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
                var = var.target(Target::TimesBare(3.5));
            }
            v.push(var);

            let ckey: &'static str = match key {
                "lib" => "cli",
                "lib-disk" => "cli-disk",
                _ => "cli-dyn",
            };
            let croot = base.join(format!("root-{ckey}"));
            let what = format!("`nomad-shim --root R run --rm --id ID -- /bin/true`, {link} shim, root on {fs}: start to exit of the CLI, the task removed by then");
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
                        options: Vec::new(),
                        task_dirs: None,
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

    // Issue 11: full isolation through the CLI, with the options of the issue.
    {
        let options: Vec<String> = CLI_ISOLATION.iter().map(|s| s.to_string()).collect();
        let what = format!(
            "issue 11: `nomad-shim --root R run --rm --id ID --task-dir D {} -- /bin/true`, static shim, root on tmpfs, a task dir made each round (untimed)",
            options.join(" ")
        );
        let root = tmpfs.join("root-cli-isolated");
        v.push(match &env.shim_static {
            None => Variant::new("cli-isolated", what, Action::Bare).skip(no_shim()),
            Some((path, _)) => Variant::new(
                "cli-isolated",
                what,
                Action::Cli {
                    shim: path.clone(),
                    exec: Executor::with_root(&root)
                        .shim_path(path)
                        .cgroup_parent(CGROUP_PARENT),
                    prefix: "cli-isolated-".into(),
                    options,
                    task_dirs: Some(tmpfs.join("taskdirs-cli")),
                },
            )
            .target(Target::TimesOf("bwrap-user", 1.0))
            .target(Target::TimesOf("runc", 0.20)),
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
    // What it takes bwrap to change the user, as `--user nobody` does.
    let bwrap_user: Vec<OsString> = ["--unshare-user", "--uid", "65534", "--gid", "65534"]
        .iter()
        .map(OsString::from)
        .chain(bwrap_full.iter().cloned())
        .collect();
    for (key, args, what) in [
        (
            "bwrap-user",
            bwrap_user,
            "as `bwrap-dev-proc`, plus `--unshare-user --uid 65534 --gid 65534` (bwrap changes the user only in a user namespace): the reference of issue 11 for `cli-isolated`".to_string(),
        ),
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
pub(crate) fn runc_bundle(runc: &Path, dir: &Path) -> Res<(PathBuf, PathBuf)> {
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
