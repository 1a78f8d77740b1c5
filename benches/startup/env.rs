//! Facts about the machine and the binaries (for the report), and small helpers: quantiles, reaping, ELF and file-system probes.

use super::*;

/// Removes the bench's parent cgroup in every hierarchy, if it is empty.
pub(crate) fn remove_cgroup_parent() {
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
pub(crate) struct Environment {
    pub(crate) kernel: String,
    pub(crate) cpu: String,
    pub(crate) date: String,
    pub(crate) rustc: String,
    pub(crate) shim_static: Option<(PathBuf, String)>,
    pub(crate) shim_dynamic: Option<(PathBuf, String)>,
    pub(crate) tmpfs_type: String,
    pub(crate) disk_type: String,
    pub(crate) coarse_res_ns: Option<i64>,
    pub(crate) bwrap: Option<PathBuf>,
    pub(crate) runc: Option<PathBuf>,
    pub(crate) tini: Vec<PathBuf>,
    /// The baseline helper (benches/startup/baseline.c), compiled by the
    /// bench with the system compiler, or `BENCH_BASELINE`; with how it was
    /// built, for the report.
    pub(crate) baseline: Result<(PathBuf, String), String>,
    /// Where the floor makes its cgroups: the bench's parent cgroup in every
    /// hierarchy a task's cgroup has (v1), or the one v2 directory.
    pub(crate) floor_dirs: Result<Vec<PathBuf>, String>,
    pub(crate) cgroups: String,
    pub(crate) load_start: String,
}

impl Environment {
    pub(crate) fn probe(cfg: &Config, tmpfs: &Path, disk: &Path) -> Environment {
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
            baseline: build_baseline(tmpfs),
            floor_dirs: floor_dirs(),
            tini: ["tini", "tini-static"]
                .iter()
                .filter_map(|n| which(n))
                .collect(),
        }
    }

    pub(crate) fn summary(&self) -> String {
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
// helpers

pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "?".into(),
        |s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    )
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub(crate) fn unix_ns(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// Linear-interpolated quantile.
pub(crate) fn quantile(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut s = xs.to_vec();
    s.sort_by(f64::total_cmp);
    let pos = q * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

pub(crate) fn one_line(s: &str) -> String {
    let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let s = s.replace('|', "\\|");
    if s.chars().count() > 300 {
        format!("{}…", s.chars().take(300).collect::<String>())
    } else {
        s
    }
}

pub(crate) fn read_tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let s = s.trim();
    let start = s.len().saturating_sub(600);
    let start = (start..=s.len())
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(s.len());
    s[start..].to_owned()
}

pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0))
}

pub(crate) fn fs_type(path: &Path) -> String {
    use nix::sys::statfs::{statfs, EXT4_SUPER_MAGIC, TMPFS_MAGIC};
    match statfs(path) {
        Ok(s) if s.filesystem_type() == TMPFS_MAGIC => "tmpfs".into(),
        Ok(s) if s.filesystem_type() == EXT4_SUPER_MAGIC => "ext4".into(),
        Ok(s) => format!("{:?}", s.filesystem_type()),
        Err(e) => format!("statfs: {e}"),
    }
}

/// Whether an ELF file has no `PT_INTERP` (static or static-pie).
pub(crate) fn elf_is_static(path: &Path) -> std::io::Result<bool> {
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
pub(crate) fn reap_zombies() {
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
pub(crate) fn reap_all(timeout: Duration) -> Vec<i32> {
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

/// Compiles benches/startup/baseline.c into `dir` with the system compiler
/// (`cc -O2 -static`, else dynamic), unless `BENCH_BASELINE` names a
/// prebuilt one (a host without a compiler).
pub(crate) fn build_baseline(dir: &Path) -> Result<(PathBuf, String), String> {
    if let Some(p) = std::env::var_os("BENCH_BASELINE").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        let link = match elf_is_static(&p) {
            Ok(true) => "static",
            Ok(false) => "dynamic",
            Err(e) => return Err(format!("BENCH_BASELINE={}: {e}", p.display())),
        };
        return Ok((p, format!("prebuilt (`BENCH_BASELINE`), {link}")));
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/startup/baseline.c");
    let out = dir.join("baseline");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let mut errors = Vec::new();
    for (flags, link) in [
        (&["-O2", "-static"][..], "static"),
        (&["-O2"][..], "dynamic"),
    ] {
        match Command::new(&cc)
            .args(flags)
            .arg("-o")
            .arg(&out)
            .arg(&src)
            .stdin(Stdio::null())
            .output()
        {
            Ok(o) if o.status.success() => {
                return Ok((out, format!("`{cc} {}`, {link}", flags.join(" "))))
            }
            Ok(o) => errors.push(format!(
                "{cc} {}: {}",
                flags.join(" "),
                one_line(&String::from_utf8_lossy(&o.stderr))
            )),
            Err(e) => {
                errors.push(format!("{cc}: {e}"));
                break;
            }
        }
    }
    Err(format!(
        "cannot build the baseline helper (set BENCH_BASELINE to a prebuilt one): {}",
        errors.join("; ")
    ))
}

/// The parent directories of a probe task cgroup made by the library: the
/// hierarchies (v1) or the directory (v2) a task's cgroup is made in.
pub(crate) fn floor_dirs() -> Result<Vec<PathBuf>, String> {
    let root = CgroupRoot::detect().map_err(|e| format!("no cgroup root: {e}"))?;
    let id = format!("floor-probe-{}", std::process::id());
    let (cg, _) = TaskCgroup::create(&root, CGROUP_PARENT, &id, &Resources::default(), false)
        .map_err(|e| format!("create probe cgroup {id}: {e}"))?;
    let dirs = cg
        .dirs()
        .iter()
        .filter_map(|d| d.parent().map(Path::to_path_buf))
        .collect();
    cg.remove()
        .map_err(|e| format!("remove probe cgroup {id}: {e}"))?;
    Ok(dirs)
}

/// A path for the report: relative to the project when inside it, so that
/// the report names no directory of the machine it ran on.
pub(crate) fn shown(p: &Path) -> String {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    match p.strip_prefix(here) {
        Ok(rel) => rel.display().to_string(),
        Err(_) => p.display().to_string(),
    }
}
