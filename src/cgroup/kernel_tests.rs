//! Against the real kernel, as root: limits land in the kernel's files, a process
//! joins with [`join_with_fds`], `kill_all` kills whole trees, OOM is detected,
//! stats move, and everything is removed. Skipped (with the reason printed) when
//! not root. Run on the host (v1 here) and in `scripts/vm-v2` (v2).
//!
//! Safety on a shared machine: each test creates cgroups only under a parent of
//! its own (`nomad-shim-test-<pid>-<nanos>-<n>`), and a [`Guard`] kills (by
//! cgroup, and its own children by pid), reaps and removes everything even when
//! the test fails. The test process is a child subreaper, and reaps exactly the
//! pids it saw in its cgroups: PID 1 on these machines never reaps orphans.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::*;

const JOIN_ENV: &str = "NOMAD_SHIM_TEST_CGROUP_JOIN";

/// The cgroup root, as root. These tests are `#[ignore]`d, so that a plain
/// `cargo test` says they did not run; `scripts/test` runs them explicitly,
/// as root, on the host and in the v2 VM. Run anyway without root or
/// without cgroups, they fail.
fn root_or_fail(test: &str) -> CgroupRoot {
    assert!(
        nix::unistd::geteuid().is_root(),
        "{test}: needs root (creates cgroups); scripts/test runs it"
    );
    let root = CgroupRoot::detect().unwrap_or_else(|e| panic!("{test}: no cgroup filesystem: {e}"));
    eprintln!("{test}: {} at {}", root.layout(), root.path().display());
    root
}

fn unique_parent() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let n = N.fetch_add(1, Ordering::Relaxed);
    // scripts/test names its run (NOMAD_SHIM_TEST_RUN) so that its check for
    // leftovers finds this run's cgroups and no one else's.
    let run = std::env::var("NOMAD_SHIM_TEST_RUN").map_or(String::new(), |r| format!("-{r}"));
    format!("nomad-shim-test-{}-{nanos}-{n}{run}/x", std::process::id())
}

/// A test's cgroup and processes; dropping it cleans up whatever happened.
struct Guard {
    cg: TaskCgroup,
    children: Vec<Child>,
    /// Every pid ever seen in the cgroup (to reap the orphans among them).
    seen: BTreeSet<i32>,
}

impl Guard {
    fn new(root: &CgroupRoot, res: &Resources) -> Guard {
        nix::sys::prctl::set_child_subreaper(true).unwrap();
        let (cg, warnings) =
            TaskCgroup::create(root, &unique_parent(), "task", res, false).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        Guard {
            cg,
            children: Vec::new(),
            seen: BTreeSet::new(),
        }
    }

    /// Spawn `sh -c script` with stdin piped; `script` should start with `read x`
    /// so that it runs only once released.
    fn spawn_held(&mut self, script: &str) -> usize {
        let child = Command::new("/bin/sh")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        self.children.push(child);
        self.children.len() - 1
    }

    fn release(&mut self, i: usize) {
        let stdin = self.children[i].stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
    }

    /// Wait until the cgroup lists exactly `n` processes; remember them.
    fn wait_for_pids(&mut self, n: usize) -> Vec<i32> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let pids = self.cg.pids().unwrap();
            self.seen.extend(&pids);
            if pids.len() == n {
                return pids;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} processes, have {pids:?}"
            );
            sleep(Duration::from_millis(20));
        }
    }

    /// Reap our children, then the orphans we adopted (as subreaper) among the
    /// pids seen in the cgroup. Only pids we know: other tests run in parallel.
    fn reap(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
        let deadline = Instant::now() + Duration::from_secs(5);
        for &pid in &self.seen {
            loop {
                match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                        sleep(Duration::from_millis(10))
                    }
                    _ => break, // reaped, not ours (ECHILD: its parent reaped it), or give up
                }
            }
        }
        self.seen.clear();
    }

    fn cleanup(&mut self) -> Result<()> {
        let killed = self.cg.kill_all();
        self.reap();
        killed?;
        self.cg.remove()?;
        self.cg.remove_parents_if_empty()
    }

    /// Clean up and check that nothing is left (the test's own parent included).
    fn finish(mut self) {
        self.cleanup().unwrap();
        for d in self.cg.dirs() {
            let top = d.parent().unwrap().parent().unwrap();
            assert!(!top.exists(), "{} left behind", top.display());
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Err(e) = self.cleanup() {
            eprintln!("cleanup of {:?}: {e}", self.cg.paths());
        }
    }
}

fn file(cg: &TaskCgroup, controller_v1: &str, name: &str) -> String {
    let dir = match cg.paths() {
        CgroupPaths::V2(p) => p,
        CgroupPaths::V1(map) => map[controller_v1].clone(),
    };
    std::fs::read_to_string(dir.join(name))
        .unwrap()
        .trim()
        .to_string()
}

/// Not a test on its own: the child process of `kernel_join_limits_kill_tree`.
/// Reopens the cgroup from its paths, joins with `join_with_fds`, execs `sleep`.
#[test]
#[ignore = "helper: runs only as a child of kernel_join_limits_kill_tree"]
fn join_helper() {
    let Ok(json) = std::env::var(JOIN_ENV) else {
        return;
    };
    let paths: CgroupPaths = serde_json::from_str(&json).unwrap();
    let cg = TaskCgroup::from_paths(&CgroupRoot::detect().unwrap(), &paths).unwrap();
    let fds = cg.open_procs_files().unwrap();
    join_with_fds(&fds).unwrap();
    drop(fds);
    let e = Command::new("sleep").arg("1000").exec();
    panic!("exec sleep: {e}");
}

#[test]
#[ignore = "needs root (creates cgroups): scripts/test runs it"]
fn kernel_join_limits_kill_tree() {
    let root = root_or_fail("kernel_join_limits_kill_tree");
    let res = Resources {
        memory_max: Some(64 << 20),
        memory_reservation: Some(32 << 20),
        memory_swap: Some(0),
        cpu_shares: Some(512),
        cpus: Some(0.5),
        pids_max: Some(50),
        ..Default::default()
    };
    let mut g = Guard::new(&root, &res);
    let cg = g.cg.clone();

    // Limits, in the kernel's own words.
    match cg.layout() {
        Layout::V2 => {
            assert_eq!(file(&cg, "", "memory.max"), "67108864");
            assert_eq!(file(&cg, "", "memory.high"), "33554432");
            assert_eq!(file(&cg, "", "memory.swap.max"), "0");
            assert_eq!(file(&cg, "", "memory.oom.group"), "1");
            assert_eq!(file(&cg, "", "cpu.weight"), "20");
            assert_eq!(file(&cg, "", "cpu.max"), "50000 100000");
        }
        _ => {
            assert_eq!(file(&cg, "memory", "memory.limit_in_bytes"), "67108864");
            assert_eq!(
                file(&cg, "memory", "memory.memsw.limit_in_bytes"),
                "67108864"
            );
            assert_eq!(
                file(&cg, "memory", "memory.soft_limit_in_bytes"),
                "33554432"
            );
            assert_eq!(file(&cg, "cpu", "cpu.shares"), "512");
            assert_eq!(file(&cg, "cpu", "cpu.cfs_quota_us"), "50000");
        }
    }
    assert_eq!(file(&cg, "pids", "pids.max"), "50");
    assert!(cg.is_empty().unwrap());

    // A child joins by itself, without the parent's help: join_with_fds.
    let test_name = concat!(module_path!(), "::join_helper");
    let test_name = test_name.split_once("::").unwrap().1; // without the crate
    let helper = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            test_name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(JOIN_ENV, serde_json::to_string(&cg.paths()).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let helper_pid = helper.id() as i32;
    g.children.push(helper);
    assert_eq!(g.wait_for_pids(1), vec![helper_pid]);

    // A tree with a process in another session, added by the parent (add_pid).
    let i = g.spawn_held("read x; setsid sleep 1000 & exec sleep 1000");
    cg.add_pid(g.children[i].id() as i32).unwrap();
    g.release(i);
    let pids = g.wait_for_pids(3);
    assert!(pids.contains(&(g.children[i].id() as i32)));

    let s = cg.stats().unwrap();
    assert_eq!(s.pids.unwrap().current, 3);
    assert!(s.memory.unwrap().current > 0, "{s:?}");
    assert!(s.cpu.unwrap().usage_ns > 0, "{s:?}");

    cg.kill_all().unwrap();
    assert!(cg.is_empty().unwrap());
    for c in &mut g.children {
        assert_eq!(c.wait().unwrap().signal(), Some(9));
    }
    assert!(!cg.oom_killed());
    g.finish();
}

#[test]
#[ignore = "needs root (creates cgroups): scripts/test runs it"]
fn kernel_oom_is_detected() {
    let root = root_or_fail("kernel_oom_is_detected");
    let res = Resources {
        memory_max: Some(32 << 20),
        memory_swap: Some(0),
        ..Default::default()
    };
    // One process that touches 200 MB (a shell pipeline would leave orphans
    // behind when its shell is the one killed).
    let python = "/usr/bin/python3";
    assert!(
        std::path::Path::new(python).exists(),
        "kernel_oom_is_detected: needs {python} (scripts/install-deps installs it)"
    );
    let mut g = Guard::new(&root, &res);
    let cg = g.cg.clone();
    let i = g.spawn_held(&format!(
        "read x; exec {python} -c 'b = b\"a\" * (200 << 20); print(len(b))'"
    ));
    let pid = g.children[i].id() as i32;
    cg.add_pid(pid).unwrap();
    g.seen.insert(pid);
    g.release(i);
    let status = g.children[i].wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status:?}");
    assert!(cg.oom_killed(), "oom_kills = {:?}", cg.oom_kills());
    let m = cg.stats().unwrap().memory.unwrap();
    assert!(m.peak.unwrap() >= 30 << 20, "{m:?}");
    g.finish();
}

#[test]
#[ignore = "needs root (creates cgroups): scripts/test runs it"]
fn kernel_stats_throttling_and_update() {
    let root = root_or_fail("kernel_stats_throttling_and_update");
    let res = Resources {
        cpus: Some(0.2),
        memory_max: Some(64 << 20),
        memory_swap: Some(0),
        pids_max: Some(10),
        ..Default::default()
    };
    let mut g = Guard::new(&root, &res);
    let cg = g.cg.clone();
    let i = g.spawn_held("read x; while :; do :; done");
    cg.add_pid(g.children[i].id() as i32).unwrap();
    g.release(i);
    g.wait_for_pids(1);

    sleep(Duration::from_millis(300));
    let (a, t0) = (cg.stats().unwrap(), Instant::now());
    sleep(Duration::from_millis(1000));
    let (b, t1) = (cg.stats().unwrap(), Instant::now());
    let pct = cpu_percent(&a, &b, t1 - t0).unwrap();
    eprintln!("cpu {pct:.1}% with a 20% quota; {:?}", b.cpu);
    assert!(pct > 1.0 && pct < 40.0, "{pct}");
    let cpu = b.cpu.unwrap();
    assert!(cpu.nr_throttled > 0 && cpu.throttled_ns > 0, "{cpu:?}");
    assert!(cpu.user_ns + cpu.system_ns > 0, "{cpu:?}");

    // v1: raising memory above the current memory+swap limit needs memsw first,
    // lowering needs memory first; update orders them. v2 has no such coupling.
    let steps = [(128u64 << 20, 0u64), (48 << 20, 16 << 20), (256 << 20, 0)];
    for (max, swap) in steps {
        cg.update(&Resources {
            memory_max: Some(max),
            memory_swap: Some(swap),
            ..Default::default()
        })
        .unwrap();
        match cg.layout() {
            Layout::V2 => {
                assert_eq!(file(&cg, "", "memory.max"), max.to_string());
                assert_eq!(file(&cg, "", "memory.swap.max"), swap.to_string());
            }
            _ => {
                assert_eq!(
                    file(&cg, "memory", "memory.limit_in_bytes"),
                    max.to_string()
                );
                assert_eq!(
                    file(&cg, "memory", "memory.memsw.limit_in_bytes"),
                    (max + swap).to_string()
                );
            }
        }
    }
    cg.update(&Resources {
        cpus: Some(1.0),
        pids_max: Some(20),
        cpu_shares: Some(2048),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(file(&cg, "pids", "pids.max"), "20");
    g.finish();
}

#[test]
#[ignore = "needs root (creates cgroups): scripts/test runs it"]
fn kernel_v2_freeze_kill_fallback_and_dir_fd() {
    let root = root_or_fail("kernel_v2_freeze_kill_fallback_and_dir_fd");
    assert_eq!(
        root.layout(),
        Layout::V2,
        "needs cgroup v2: scripts/env-skips leaves it out on a v1 host"
    );
    let mut g = Guard::new(&root, &Resources::default());
    let cg = g.cg.clone();
    let fd = cg.dir_fd().unwrap().expect("v2 has a directory fd");
    let st = nix::sys::stat::fstat(&fd).unwrap();
    assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFDIR);
    let i = g.spawn_held("read x; setsid sleep 1000 & exec sleep 1000");
    cg.add_pid(g.children[i].id() as i32).unwrap();
    g.release(i);
    g.wait_for_pids(2);
    let Backend::V2(v2) = &cg.backend else {
        unreachable!()
    };
    v2.kill_by_freezing(Duration::from_secs(10)).unwrap();
    assert!(cg.is_empty().unwrap());
    assert_eq!(file(&cg, "", "cgroup.freeze"), "0", "thawed again");
    assert_eq!(g.children[i].wait().unwrap().signal(), Some(9));
    g.finish();
}

#[test]
#[ignore = "needs root (creates cgroups): scripts/test runs it"]
fn kernel_remove_is_idempotent_and_reopens() {
    let root = root_or_fail("kernel_remove_is_idempotent_and_reopens");
    let g = Guard::new(&root, &Resources::default());
    let cg = g.cg.clone();
    let again = TaskCgroup::from_paths(&root, &cg.paths()).unwrap();
    assert_eq!(again, cg);
    cg.remove().unwrap();
    for d in cg.dirs() {
        assert!(!d.exists(), "{}", d.display());
    }
    again.remove().unwrap();
    again.kill_all().unwrap();
    assert!(again.is_empty().unwrap());
    let dirs: Vec<PathBuf> = cg.dirs();
    g.finish();
    for d in dirs {
        assert!(!d.parent().unwrap().exists());
    }
}
