//! Both backends against directories of fake cgroup files: what is written where,
//! conversions, unavailable controllers, stats parsing, paths. No root needed.
//!
//! A fixture root is a plain directory shaped like the kernel's. Its `mkdir`
//! copies the parent's files into the new directory, as cgroupfs populates a new
//! cgroup, so the root's files double as the templates of every task cgroup.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::*;

fn put(dir: &Path, files: &[(&str, &str)]) {
    fs::create_dir_all(dir).unwrap();
    for (name, content) in files {
        fs::write(dir.join(name), content).unwrap();
    }
}

fn get(path: impl AsRef<Path>) -> String {
    fs::read_to_string(path.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
}

fn all_limits() -> Resources {
    Resources {
        memory_max: Some(64 << 20),
        memory_reservation: Some(32 << 20),
        memory_swap: Some(16 << 20),
        cpu_shares: Some(1024),
        cpus: Some(1.5),
        cpuset_cpus: Some("1".into()),
        cpuset_mems: Some("0".into()),
        pids_max: Some(42),
        io_weight: Some(100),
    }
}

// ---------------------------------------------------------------- v2 fixture

const V2_CONTROLLERS: &str = "cpuset cpu io memory hugetlb pids rdma misc\n";

fn v2_fixture(controllers: &str) -> (TempDir, CgroupRoot) {
    let tmp = tempfile::tempdir().unwrap();
    put(
        tmp.path(),
        &[
            ("cgroup.controllers", controllers),
            ("cgroup.subtree_control", ""),
            ("cgroup.procs", ""),
            ("cgroup.kill", ""),
            ("cgroup.freeze", "0\n"),
            ("cgroup.events", "populated 0\nfrozen 0\n"),
            ("memory.max", "max\n"),
            ("memory.high", "max\n"),
            ("memory.swap.max", "max\n"),
            ("memory.oom.group", "0\n"),
            ("memory.current", "16384\n"),
            ("memory.peak", "1048576\n"),
            ("memory.swap.current", "0\n"),
            ("memory.stat", "anon 16384\nfile 32768\nkernel 4096\n"),
            (
                "memory.events",
                "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
            ),
            ("cpu.weight", "100\n"),
            ("cpu.max", "max 100000\n"),
            (
                "cpu.stat",
                "usage_usec 939536\nuser_usec 200086\nsystem_usec 739449\nnr_periods 12\n\
                 nr_throttled 3\nthrottled_usec 4500\nnr_bursts 0\nburst_usec 0\n",
            ),
            ("cpuset.cpus", "\n"),
            ("cpuset.mems", "\n"),
            ("pids.max", "max\n"),
            ("pids.current", "2\n"),
            ("io.weight", "default 100\n"),
        ],
    );
    let root = CgroupRoot::fixture(tmp.path(), Layout::V2);
    (tmp, root)
}

#[test]
fn v2_create_writes_limits_and_conversions() {
    let (tmp, root) = v2_fixture(V2_CONTROLLERS);
    let (cg, warnings) =
        TaskCgroup::create(&root, "nomad-shim", "web.1", &all_limits(), false).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let d = tmp.path().join("nomad-shim/web.1");
    assert_eq!(cg.dirs(), vec![d.clone()]);
    assert_eq!(get(d.join("memory.max")), (64u64 << 20).to_string());
    assert_eq!(get(d.join("memory.high")), (32u64 << 20).to_string());
    assert_eq!(get(d.join("memory.swap.max")), (16u64 << 20).to_string());
    assert_eq!(get(d.join("memory.oom.group")), "1");
    assert_eq!(get(d.join("cpu.weight")), "39"); // runc's conversion of 1024 shares
    assert_eq!(get(d.join("cpu.max")), "150000 100000");
    assert_eq!(get(d.join("cpuset.cpus")), "1");
    assert_eq!(get(d.join("cpuset.mems")), "0");
    assert_eq!(get(d.join("pids.max")), "42");
    assert_eq!(get(d.join("io.weight")), "default 100");
    // The created parent got the controllers enabled (one write each; the fake
    // file keeps the last); the task cgroup itself is a leaf: never written.
    assert!(get(tmp.path().join("nomad-shim/cgroup.subtree_control")).starts_with('+'));
    assert_eq!(cg.paths(), CgroupPaths::V2(d.clone()));
    assert!(cg.dir_fd().unwrap().is_some());
    assert_eq!(cg.open_procs_files().unwrap().len(), 1);
}

#[test]
fn v2_leaves_subtree_control_alone_when_already_enabled() {
    let (tmp, root) = v2_fixture(V2_CONTROLLERS);
    let enabled = "cpuset cpu io memory pids\n";
    fs::write(tmp.path().join("cgroup.subtree_control"), enabled).unwrap();
    fs::create_dir(tmp.path().join("elsewhere")).unwrap();
    TaskCgroup::create(&root, "nomad-shim", "t", &all_limits(), false).unwrap();
    assert_eq!(get(tmp.path().join("cgroup.subtree_control")), enabled);
}

#[test]
fn v2_missing_controller_is_an_error_unless_best_effort() {
    let (tmp, root) = v2_fixture("cpu memory pids\n");
    let res = Resources {
        memory_max: Some(1 << 30),
        io_weight: Some(500),
        ..Default::default()
    };
    let e = TaskCgroup::create(&root, "nomad-shim", "t", &res, false).unwrap_err();
    match &e {
        Error::ControllerUnavailable { controller, path } => {
            assert_eq!(controller, "io");
            assert_eq!(path, &tmp.path().join("cgroup.controllers"));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        e.to_string()
            .starts_with("cgroup controller io is not available at "),
        "{e}"
    );
    assert!(
        !tmp.path().join("nomad-shim").exists(),
        "nothing may be created on error"
    );

    let (cg, warnings) = TaskCgroup::create(&root, "nomad-shim", "t", &res, true).unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        matches!(&warnings[0], Error::ControllerUnavailable { controller, .. } if controller == "io")
    );
    let d = &cg.dirs()[0];
    assert_eq!(get(d.join("memory.max")), (1u64 << 30).to_string());
    assert_eq!(
        get(d.join("io.weight")),
        "default 100\n",
        "skipped limit must not be written"
    );
}

#[test]
fn v2_accounting_controller_missing_is_only_a_warning() {
    let (_tmp, root) = v2_fixture("memory cpu\n");
    let (_cg, warnings) =
        TaskCgroup::create(&root, "p", "t", &Resources::default(), false).unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].to_string().contains("controller pids"),
        "{}",
        warnings[0]
    );
}

#[test]
fn v2_update_checks_the_cgroups_own_controllers() {
    let (tmp, root) = v2_fixture(V2_CONTROLLERS);
    let (cg, _) = TaskCgroup::create(&root, "p", "t", &Resources::default(), false).unwrap();
    let d = tmp.path().join("p/t");
    cg.update(&Resources {
        memory_max: Some(1 << 20),
        cpus: Some(0.25),
        pids_max: Some(7),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(get(d.join("memory.max")), "1048576");
    assert_eq!(get(d.join("cpu.max")), "25000 100000");
    assert_eq!(get(d.join("pids.max")), "7");
    fs::write(d.join("cgroup.controllers"), "memory\n").unwrap();
    let e = cg
        .update(&Resources {
            pids_max: Some(1),
            ..Default::default()
        })
        .unwrap_err();
    assert!(
        matches!(e, Error::ControllerUnavailable { ref controller, .. } if controller == "pids"),
        "{e}"
    );
    let e = cg
        .update(&Resources {
            pids_max: Some(0),
            ..Default::default()
        })
        .unwrap_err();
    assert!(matches!(e, Error::InvalidResources { .. }), "{e}");
}

#[test]
fn v2_stats_oom_and_kill_on_fixture() {
    let (_tmp, root) = v2_fixture(V2_CONTROLLERS);
    let (cg, _) = TaskCgroup::create(&root, "p", "t", &Resources::default(), false).unwrap();
    let s = cg.stats().unwrap();
    assert_eq!(s.cpu.unwrap().usage_ns, 939_536_000);
    assert_eq!(s.cpu.unwrap().throttled_ns, 4_500_000);
    let m = s.memory.unwrap();
    assert_eq!(
        (m.current, m.peak, m.rss, m.cache, m.swap),
        (16384, Some(1 << 20), 16384, 32768, Some(0))
    );
    assert_eq!(s.pids.unwrap().current, 2);
    assert_eq!(cg.oom_kills().unwrap(), 1);
    assert!(cg.oom_killed());
    assert!(cg.is_empty().unwrap());
    cg.kill_all().unwrap();
}

#[test]
fn v2_nested_parent_and_removal() {
    let (tmp, root) = v2_fixture(V2_CONTROLLERS);
    let (a, _) = TaskCgroup::create(&root, "test-1/x", "a", &Resources::default(), false).unwrap();
    let (b, _) = TaskCgroup::create(&root, "test-1/x", "b", &Resources::default(), false).unwrap();
    assert!(tmp.path().join("test-1/x/a").is_dir());
    // Existing task cgroup: refused, the first one untouched.
    let e = TaskCgroup::create(&root, "test-1/x", "a", &Resources::default(), false).unwrap_err();
    assert!(e.to_string().contains("File exists"), "{e}");
    assert!(tmp.path().join("test-1/x/a").is_dir());

    a.remove().unwrap();
    a.remove().unwrap(); // idempotent
    a.remove_parents_if_empty().unwrap(); // b is still there
    assert!(tmp.path().join("test-1/x/b").is_dir());
    b.remove().unwrap();
    b.remove_parents_if_empty().unwrap();
    assert!(!tmp.path().join("test-1").exists());
    assert!(tmp.path().join("cgroup.procs").exists(), "the root stays");
}

#[test]
fn create_refuses_bad_names_and_limits_before_touching_anything() {
    let (tmp, root) = v2_fixture(V2_CONTROLLERS);
    for (parent, id) in [
        ("/abs", "t"),
        ("../up", "t"),
        ("a/../b", "t"),
        ("p", "a/b"),
        ("p", ".."),
        ("", "t"),
    ] {
        let e = TaskCgroup::create(&root, parent, id, &Resources::default(), false).unwrap_err();
        assert!(
            matches!(e, Error::InvalidName { .. }),
            "{parent:?}/{id:?}: {e}"
        );
    }
    let bad = Resources {
        memory_max: Some(0),
        ..Default::default()
    };
    let e = TaskCgroup::create(&root, "p", "t", &bad, true).unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidResources {
                field: "memory_max",
                ..
            }
        ),
        "{e}"
    );
    let dirs = fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .count();
    assert_eq!(dirs, 0);
}

#[test]
fn v2_from_paths_round_trips_and_refuses_escapes() {
    let (tmp, root) = v2_fixture(V2_CONTROLLERS);
    let (cg, _) =
        TaskCgroup::create(&root, "nomad-shim", "t", &Resources::default(), false).unwrap();
    let json = serde_json::to_string(&cg.paths()).unwrap();
    assert_eq!(json, format!("\"{}/nomad-shim/t\"", tmp.path().display()));
    let back: CgroupPaths = serde_json::from_str(&json).unwrap();
    assert_eq!(TaskCgroup::from_paths(&root, &back).unwrap(), cg);

    let base = tmp.path().display();
    for bad in [
        format!("{base}/nomad-shim/../../etc"),
        format!("{base}/../x"),
        format!("{base}"),
        "/etc".to_string(),
        "relative/t".to_string(),
    ] {
        let e = TaskCgroup::from_paths(&root, &CgroupPaths::V2(bad.clone().into())).unwrap_err();
        assert!(matches!(e, Error::OutsideRoot { .. }), "{bad}: {e}");
    }
    let v1 = CgroupPaths::V1(BTreeMap::from([(
        "freezer".to_string(),
        tmp.path().join("x"),
    )]));
    let e = TaskCgroup::from_paths(&root, &v1).unwrap_err();
    assert!(matches!(e, Error::LayoutMismatch { .. }), "{e}");
}

// ---------------------------------------------------------------- v1 fixture

/// A hybrid-like v1 root as on this project's machines (cpu and cpuacct separate).
fn v1_fixture(comount: Comount, memsw: bool) -> (TempDir, CgroupRoot) {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    let procs = ("cgroup.procs", "");
    put(&r.join("freezer"), &[procs, ("freezer.state", "THAWED\n")]);
    let mut memory = vec![
        procs,
        ("memory.limit_in_bytes", "9223372036854771712\n"),
        ("memory.soft_limit_in_bytes", "9223372036854771712\n"),
        ("memory.usage_in_bytes", "4448256\n"),
        ("memory.max_usage_in_bytes", "8388608\n"),
        (
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        ),
        (
            "memory.stat",
            "cache 0\nrss 0\nswap 0\ntotal_cache 748163072\ntotal_rss 4448256\ntotal_swap 0\n",
        ),
    ];
    if memsw {
        memory.push(("memory.memsw.limit_in_bytes", "9223372036854771712\n"));
    }
    put(&r.join("memory"), &memory);
    let cpu = [
        procs,
        ("cpu.shares", "1024\n"),
        ("cpu.cfs_period_us", "100000\n"),
        ("cpu.cfs_quota_us", "-1\n"),
        (
            "cpu.stat",
            "nr_periods 7\nnr_throttled 2\nthrottled_time 123456\n",
        ),
    ];
    let cpuacct = [
        ("cpuacct.usage", "174670000000\n"),
        ("cpuacct.stat", "user 11997\nsystem 5477\n"),
    ];
    match comount {
        Comount::Separate => {
            put(&r.join("cpu"), &cpu);
            put(&r.join("cpuacct"), &[&cpuacct[..], &[procs]].concat());
        }
        Comount::Symlinked | Comount::NameOnly => {
            put(&r.join("cpu,cpuacct"), &[&cpu[..], &cpuacct[..]].concat());
            if comount == Comount::Symlinked {
                symlink("cpu,cpuacct", r.join("cpu")).unwrap();
                symlink("cpu,cpuacct", r.join("cpuacct")).unwrap();
            }
        }
    }
    put(
        &r.join("pids"),
        &[procs, ("pids.max", "max\n"), ("pids.current", "3\n")],
    );
    put(
        &r.join("cpuset"),
        &[procs, ("cpuset.cpus", "0-1\n"), ("cpuset.mems", "0\n")],
    );
    put(
        &r.join("blkio"),
        &[procs, ("blkio.bfq.weight", "default 100\n")],
    );
    put(
        &r.join("devices"),
        &[procs, ("devices.allow", ""), ("devices.deny", "")],
    );
    put(&r.join("unified"), &[procs]);
    let root = CgroupRoot::fixture(r, Layout::Hybrid);
    (tmp, root)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Comount {
    Separate,
    Symlinked,
    NameOnly,
}

#[test]
fn v1_create_writes_limits_in_each_hierarchy() {
    let (tmp, root) = v1_fixture(Comount::Separate, true);
    let (cg, warnings) =
        TaskCgroup::create(&root, "nomad-shim", "t1", &all_limits(), false).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let d = |c: &str| tmp.path().join(c).join("nomad-shim/t1");
    assert_eq!(
        get(d("memory").join("memory.limit_in_bytes")),
        (64u64 << 20).to_string()
    );
    // memsw = memory + swap
    assert_eq!(
        get(d("memory").join("memory.memsw.limit_in_bytes")),
        (80u64 << 20).to_string()
    );
    assert_eq!(
        get(d("memory").join("memory.soft_limit_in_bytes")),
        (32u64 << 20).to_string()
    );
    assert_eq!(get(d("cpu").join("cpu.shares")), "1024");
    assert_eq!(get(d("cpu").join("cpu.cfs_period_us")), "100000");
    assert_eq!(get(d("cpu").join("cpu.cfs_quota_us")), "150000");
    assert_eq!(get(d("cpuset").join("cpuset.cpus")), "1");
    assert_eq!(get(d("pids").join("pids.max")), "42");
    assert_eq!(get(d("blkio").join("blkio.bfq.weight")), "19");
    assert!(d("cpuacct").is_dir() && d("freezer").is_dir());
    assert!(
        !tmp.path().join("unified/nomad-shim").exists(),
        "the v2 mount of a hybrid is left alone"
    );

    let dirs = cg.dirs();
    assert_eq!(dirs[0], d("freezer"), "freezer first");
    assert_eq!(dirs.len(), 8, "+ devices");
    assert_eq!(cg.open_procs_files().unwrap().len(), 8);
    assert!(cg.dir_fd().unwrap().is_none());
    cg.add_pid(0).unwrap();
    assert_eq!(get(d("pids").join("cgroup.procs")), "0");
}

#[test]
fn v1_cpuset_is_copied_from_the_parent_chain() {
    let (tmp, root) = v1_fixture(Comount::Separate, true);
    let res = Resources {
        cpuset_mems: Some("0".into()),
        ..Default::default()
    };
    TaskCgroup::create(&root, "a/b", "t", &res, false).unwrap();
    for dir in ["a", "a/b", "a/b/t"] {
        assert_eq!(
            get(tmp.path().join("cpuset").join(dir).join("cpuset.cpus")),
            "0-1",
            "{dir}"
        );
    }
}

#[test]
fn v1_without_cpuset_or_io_limits_joins_only_the_base_hierarchies() {
    let (tmp, root) = v1_fixture(Comount::Separate, true);
    let (cg, _) = TaskCgroup::create(&root, "p", "t", &Resources::default(), false).unwrap();
    assert_eq!(
        cg.dirs().len(),
        6,
        "freezer devices memory cpu cpuacct pids"
    );
    assert!(!tmp.path().join("cpuset/p").exists() && !tmp.path().join("blkio/p").exists());
}

#[test]
fn v1_missing_memsw_is_an_error_naming_the_file_unless_best_effort() {
    let (tmp, root) = v1_fixture(Comount::Separate, false);
    let res = Resources {
        memory_max: Some(1 << 26),
        memory_swap: Some(0),
        ..Default::default()
    };
    let e = TaskCgroup::create(&root, "p", "t", &res, false).unwrap_err();
    let file = tmp.path().join("memory/memory.memsw.limit_in_bytes");
    assert_eq!(
        e.to_string(),
        format!(
            "memory_swap is not supported by this kernel: {} does not exist",
            file.display()
        )
    );
    assert!(!tmp.path().join("freezer/p").exists());
    let (cg, warnings) = TaskCgroup::create(&root, "p", "t", &res, true).unwrap();
    assert_eq!(warnings.len(), 1);
    assert_eq!(
        get(tmp.path().join("memory/p/t/memory.limit_in_bytes")),
        "67108864"
    );
    let e = cg.update(&res).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Unsupported {
                feature: "memory_swap",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn v1_missing_controllers() {
    let (tmp, root) = v1_fixture(Comount::Separate, true);
    fs::remove_dir_all(tmp.path().join("pids")).unwrap();
    let res = Resources {
        pids_max: Some(5),
        ..Default::default()
    };
    let e = TaskCgroup::create(&root, "p", "t", &res, false).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "cgroup controller pids is not available at {}",
            tmp.path().join("pids").display()
        )
    );
    let (_, warnings) = TaskCgroup::create(&root, "p", "t", &res, true).unwrap();
    assert_eq!(warnings.len(), 1);

    // The freezer is required even with best_effort: kill depends on it.
    fs::remove_dir_all(tmp.path().join("freezer")).unwrap();
    let e = TaskCgroup::create(&root, "p", "t2", &Resources::default(), true).unwrap_err();
    assert!(
        matches!(e, Error::ControllerUnavailable { ref controller, .. } if controller == "freezer")
    );
}

#[test]
fn v1_comounted_cpu_cpuacct_share_one_directory() {
    for comount in [Comount::Symlinked, Comount::NameOnly] {
        let (tmp, root) = v1_fixture(comount, true);
        let res = Resources {
            cpu_shares: Some(512),
            ..Default::default()
        };
        let (cg, _) = TaskCgroup::create(&root, "p", "t", &res, false).unwrap();
        let shared = tmp.path().join("cpu,cpuacct/p/t");
        assert_eq!(get(shared.join("cpu.shares")), "512");
        let CgroupPaths::V1(map) = cg.paths() else {
            panic!("v1 paths")
        };
        assert_eq!(map["cpu"], shared);
        assert_eq!(map["cpuacct"], shared);
        assert_eq!(
            cg.dirs().len(),
            5,
            "freezer, devices, memory, cpu+cpuacct, pids"
        );
        let s = cg.stats().unwrap();
        assert_eq!(s.cpu.unwrap().usage_ns, 174_670_000_000);
        assert_eq!(
            TaskCgroup::from_paths(&root, &cg.paths())
                .unwrap()
                .dirs()
                .len(),
            5
        );
    }
}

#[test]
fn v1_update_memory_and_cpu() {
    let (tmp, root) = v1_fixture(Comount::Separate, true);
    let (cg, _) = TaskCgroup::create(&root, "p", "t", &Resources::default(), false).unwrap();
    let mem = tmp.path().join("memory/p/t");
    for (max, swap) in [(64u64 << 20, 0u64), (32 << 20, 8 << 20), (128 << 20, 0)] {
        cg.update(&Resources {
            memory_max: Some(max),
            memory_swap: Some(swap),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(get(mem.join("memory.limit_in_bytes")), max.to_string());
        assert_eq!(
            get(mem.join("memory.memsw.limit_in_bytes")),
            (max + swap).to_string()
        );
    }
    cg.update(&Resources {
        cpus: Some(2.0),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(get(tmp.path().join("cpu/p/t/cpu.cfs_quota_us")), "200000");
    let e = cg
        .update(&Resources {
            cpuset_cpus: Some("0".into()),
            ..Default::default()
        })
        .unwrap_err();
    assert!(
        matches!(e, Error::ControllerUnavailable { ref controller, .. } if controller == "cpuset"),
        "{e}"
    );
}

#[test]
fn v1_stats_oom_kill_remove_on_fixture() {
    let (tmp, root) = v1_fixture(Comount::Separate, true);
    let (cg, _) = TaskCgroup::create(&root, "n-test/x", "t", &Resources::default(), false).unwrap();
    let s = cg.stats().unwrap();
    let cpu = s.cpu.unwrap();
    assert_eq!(cpu.usage_ns, 174_670_000_000);
    let tick = 1_000_000_000 / stats::clock_ticks();
    assert_eq!((cpu.user_ns, cpu.system_ns), (11997 * tick, 5477 * tick));
    assert_eq!(
        (cpu.nr_periods, cpu.nr_throttled, cpu.throttled_ns),
        (7, 2, 123_456)
    );
    let m = s.memory.unwrap();
    assert_eq!(
        (m.current, m.peak, m.rss, m.cache),
        (4_448_256, Some(8_388_608), 4_448_256, 748_163_072)
    );
    assert_eq!(s.pids.unwrap().current, 3);
    assert_eq!(cg.oom_kills().unwrap(), 2);

    cg.kill_all().unwrap();
    cg.remove().unwrap();
    cg.remove_parents_if_empty().unwrap();
    for c in ["freezer", "memory", "cpu", "cpuacct", "pids"] {
        assert!(!tmp.path().join(c).join("n-test").exists(), "{c}");
        assert!(tmp.path().join(c).join("cgroup.procs").exists(), "{c}");
    }
    cg.remove().unwrap();
}

#[test]
fn v1_from_paths_round_trips_and_refuses_escapes() {
    let (tmp, root) = v1_fixture(Comount::Separate, true);
    let (cg, _) =
        TaskCgroup::create(&root, "nomad-shim", "t", &Resources::default(), false).unwrap();
    let json = serde_json::to_string(&cg.paths()).unwrap();
    assert!(
        json.starts_with(&format!(
            "{{\"cpu\":\"{}/cpu/nomad-shim/t\"",
            tmp.path().display()
        )),
        "{json}"
    );
    let back: CgroupPaths = serde_json::from_str(&json).unwrap();
    let again = TaskCgroup::from_paths(&root, &back).unwrap();
    assert_eq!(again.paths(), cg.paths());
    assert_eq!(again.dirs()[0], tmp.path().join("freezer/nomad-shim/t"));

    let with = |ctl: &str, p: PathBuf| {
        let CgroupPaths::V1(mut map) = cg.paths() else {
            unreachable!()
        };
        map.insert(ctl.to_string(), p);
        CgroupPaths::V1(map)
    };
    let escapes = [
        with("memory", tmp.path().join("memory/nomad-shim/../../../etc")),
        with("memory", tmp.path().join("cpu/nomad-shim/t")), // another controller's mount
        with("memory", PathBuf::from("/etc/passwd")),
        with("memory", tmp.path().join("memory")),
    ];
    for paths in escapes {
        let e = TaskCgroup::from_paths(&root, &paths).unwrap_err();
        assert!(matches!(e, Error::OutsideRoot { .. }), "{paths:?}: {e}");
    }
    let CgroupPaths::V1(mut map) = cg.paths() else {
        unreachable!()
    };
    map.remove("freezer");
    let e = TaskCgroup::from_paths(&root, &CgroupPaths::V1(map)).unwrap_err();
    assert!(
        matches!(e, Error::ControllerUnavailable { ref controller, .. } if controller == "freezer")
    );
    let e =
        TaskCgroup::from_paths(&root, &CgroupPaths::V2(tmp.path().join("freezer/x"))).unwrap_err();
    assert!(matches!(e, Error::LayoutMismatch { .. }), "{e}");
}

// ------------------------------------------ sub-cgroups and owner marks

/// Sub-cgroups the task made, as cgroupfs would show them.
fn sub_cgroups(root: &CgroupRoot, task_dir: &Path, rels: &[&str]) -> Vec<PathBuf> {
    rels.iter()
        .map(|r| {
            let mut d = task_dir.to_path_buf();
            for c in Path::new(r).components() {
                d.push(c);
                if !d.exists() {
                    files::mkdir(root, &d).unwrap();
                }
            }
            d
        })
        .collect()
}

#[test]
fn v2_pids_and_removal_cover_the_subtree_deepest_first() {
    let (tmp, root) = v2_fixture(V2_CONTROLLERS);
    let (cg, _) = TaskCgroup::create(&root, "p", "t", &Resources::default(), false).unwrap();
    let t = tmp.path().join("p/t");
    let subs = sub_cgroups(&root, &t, &["foo/bar", "baz"]);
    // Members of sub-cgroups count (fake pids: never killed here).
    fs::write(t.join("foo/bar/cgroup.procs"), "999999991\n").unwrap();
    fs::write(t.join("baz/cgroup.procs"), "999999992\n").unwrap();
    assert_eq!(cg.pids().unwrap(), vec![999_999_991, 999_999_992]);
    assert!(!cg.is_empty().unwrap());
    for s in &subs {
        fs::write(s.join("cgroup.procs"), "").unwrap();
    }
    assert!(cg.is_empty().unwrap());
    cg.remove().unwrap();
    assert!(!t.exists(), "the task cgroup and its sub-cgroups are gone");
    assert!(tmp.path().join("p").is_dir(), "the parent stays");
    cg.remove().unwrap(); // idempotent
}

#[test]
fn v1_removal_covers_sub_cgroups_of_every_hierarchy() {
    let (tmp, root) = v1_fixture(Comount::Separate, true);
    let (cg, _) = TaskCgroup::create(&root, "n", "t", &Resources::default(), false).unwrap();
    let dirs = cg.dirs();
    for d in &dirs {
        sub_cgroups(&root, d, &["foo/deeper"]);
    }
    fs::write(dirs[1].join("foo/deeper/cgroup.procs"), "999999993\n").unwrap();
    assert_eq!(cg.pids().unwrap(), vec![999_999_993]);
    fs::write(dirs[1].join("foo/deeper/cgroup.procs"), "").unwrap();
    cg.remove().unwrap();
    for c in ["freezer", "memory", "cpu", "cpuacct", "pids"] {
        assert!(!tmp.path().join(c).join("n/t").exists(), "{c}");
    }
}

/// Whether this file system keeps `user.*` attributes (tmpfs since Linux 6.6).
fn user_xattrs(dir: &Path) -> bool {
    let p = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    crate::sys::lsetxattr(&p, c"user.nomad-shim.probe", b"1").is_ok()
}

/// Ignored: it needs `user.*` extended attributes on the temp dir's file
/// system (tmpfs has them from Linux 6.6), and fails without them.
/// `scripts/test` runs it where the probe of `scripts/env-skips` finds them.
#[test]
#[ignore = "needs user xattrs on $TMPDIR: scripts/test runs it where they work"]
fn owner_marks_decide_what_a_leftover_is() {
    let (tmp, root) = v2_fixture(V2_CONTROLLERS);
    assert!(
        user_xattrs(tmp.path()),
        "no user xattrs on {} (scripts/env-skips leaves this test out there)",
        tmp.path().display()
    );
    let me = Owner::root(Path::new("/run/root-a"));
    let other = Owner::root(Path::new("/run/root-b"));
    let t = tmp.path().join("p/t");

    // Made and marked; made again by the same root: taken, made anew.
    let (cg, _) =
        TaskCgroup::create_owned(&root, "p", "t", &Resources::default(), false, &me).unwrap();
    sub_cgroups(&root, &t, &["foo"]);
    let (again, _) =
        TaskCgroup::create_owned(&root, "p", "t", &Resources::default(), false, &me).unwrap();
    assert_eq!(again, cg);
    assert!(!t.join("foo").exists(), "the leftover's sub-cgroup went");
    assert_eq!(cg.marked_by_other(&me).unwrap(), None);
    assert_eq!(
        cg.marked_by_other(&other).unwrap(),
        Some(PathBuf::from("/run/root-a"))
    );

    // Another root's: refused by name, untouched.
    sub_cgroups(&root, &t, &["keep"]);
    let e = TaskCgroup::create_owned(&root, "p", "t", &Resources::default(), false, &other)
        .unwrap_err();
    assert!(
        matches!(&e, Error::ForeignCgroup { path, owner, id, parent }
        if *path == t && parent == "p" && owner == "/run/root-a" && id == "t"),
        "{e:?}"
    );
    assert!(e.to_string().contains("another root (/run/root-a)"), "{e}");
    assert!(t.join("keep").is_dir());

    // Unmarked: refused when it holds anything, taken when empty.
    cg.remove().unwrap();
    files::mkdir(&root, &t).unwrap();
    sub_cgroups(&root, &t, &["x"]);
    let e =
        TaskCgroup::create_owned(&root, "p", "t", &Resources::default(), false, &me).unwrap_err();
    assert!(
        matches!(&e, Error::UnmarkedCgroup { path, .. } if *path == t),
        "{e:?}"
    );
    assert!(t.join("x").is_dir());
    files::rmdir(&root, &t.join("x")).unwrap();
    fs::write(t.join("cgroup.procs"), "999999994\n").unwrap();
    assert!(matches!(
        TaskCgroup::create_owned(&root, "p", "t", &Resources::default(), false, &me),
        Err(Error::UnmarkedCgroup { .. })
    ));
    fs::write(t.join("cgroup.procs"), "").unwrap();
    TaskCgroup::create_owned(&root, "p", "t", &Resources::default(), false, &me).unwrap();
    assert_eq!(
        cg.marked_by_other(&other).unwrap(),
        Some("/run/root-a".into())
    );
}
// ------------------------------------------------------------ device rules

#[test]
fn v1_devices_hierarchy_is_required_and_gets_the_rules() {
    let (tmp, root) = v1_fixture(Comount::Separate, true);
    let (cg, _) = TaskCgroup::create(&root, "p", "t", &Resources::default(), false).unwrap();
    let dir = tmp.path().join("devices/p/t");
    let CgroupPaths::V1(map) = cg.paths() else {
        panic!("v1 paths")
    };
    assert_eq!(map["devices"], dir, "state.json lists the devices path");
    cg.restrict_devices(&default_rules()).unwrap();
    // One descriptor per file, one write per rule: a fixture file holds
    // every write in order ("a" denied, then the allow list, pts last).
    assert_eq!(get(dir.join("devices.deny")), "a");
    let allowed: String = v1_writes(&default_rules())
        .into_iter()
        .filter(|(f, _)| *f == "devices.allow")
        .map(|(_, l)| l)
        .collect();
    assert!(allowed.ends_with("c 136:* rwm"), "{allowed}");
    assert_eq!(get(dir.join("devices.allow")), allowed);
    // A list without "deny all" first is refused before anything is written.
    let e = cg.restrict_devices(&default_rules()[1..]).unwrap_err();
    assert!(matches!(e, Error::InvalidDeviceRules { .. }), "{e}");
    cg.remove().unwrap();
    assert!(!dir.exists());

    // Without the devices hierarchy, no task starts: not even best effort.
    fs::remove_dir_all(tmp.path().join("devices")).unwrap();
    for best_effort in [false, true] {
        let e =
            TaskCgroup::create(&root, "p", "t2", &Resources::default(), best_effort).unwrap_err();
        assert!(
            matches!(e, Error::ControllerUnavailable { ref controller, .. } if controller == "devices"),
            "{e}"
        );
    }
}

/// Regression (issue 10): `start + timeout` panicked for a timeout past
/// `Instant`'s range (`kill_all_timeout(Duration::MAX)`).
#[test]
fn kill_loop_takes_a_timeout_past_instants_range() {
    let tmp = tempfile::tempdir().unwrap();
    let procs = tmp.path().join("cgroup.procs");
    fs::write(&procs, "999999\n").unwrap();
    let mut rounds = 0;
    kill_loop(
        std::slice::from_ref(&procs),
        tmp.path(),
        std::time::Duration::MAX,
        || {
            rounds += 1;
            fs::write(&procs, "").map_err(|e| Error::Write {
                path: procs.clone(),
                value: String::new(),
                cause: e,
            })
        },
    )
    .unwrap();
    assert_eq!(rounds, 1);
}

/// Regression: a parent left by a task without cpuset does not offer cpuset;
/// the controller must be enabled in the root and then in that parent,
/// not looked for in the parent alone.
#[test]
fn v2_enables_a_controller_down_the_chain_of_parents() {
    let (tmp, root) = v2_fixture(V2_CONTROLLERS);
    fs::write(
        tmp.path().join("cgroup.subtree_control"),
        "cpu memory pids\n",
    )
    .unwrap();
    let parent = tmp.path().join("p");
    fs::create_dir(&parent).unwrap();
    for f in fs::read_dir(tmp.path()).unwrap() {
        let f = f.unwrap();
        if f.file_type().unwrap().is_file() {
            fs::copy(f.path(), parent.join(f.file_name())).unwrap();
        }
    }
    put(
        &parent,
        &[
            ("cgroup.controllers", "cpu memory pids\n"),
            ("cgroup.subtree_control", "cpu memory pids\n"),
            ("cgroup.procs", ""),
        ],
    );
    let res = Resources {
        cpuset_cpus: Some("0-1".into()),
        ..Default::default()
    };
    let (cg, warnings) = TaskCgroup::create(&root, "p", "t", &res, false).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    // The root offers it and hands it down, then the parent: one write each.
    assert_eq!(get(tmp.path().join("cgroup.subtree_control")), "+cpuset");
    assert_eq!(get(parent.join("cgroup.subtree_control")), "+cpuset");
    assert_eq!(get(cg.dirs()[0].join("cpuset.cpus")), "0-1");

    // Offered nowhere: the error names the root's list.
    let res = Resources {
        io_weight: Some(100),
        ..Default::default()
    };
    fs::write(tmp.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
    match TaskCgroup::create(&root, "p", "u", &res, false).unwrap_err() {
        Error::ControllerUnavailable { controller, path } => {
            assert_eq!(controller, "io");
            assert_eq!(path, tmp.path().join("cgroup.controllers"));
        }
        other => panic!("{other:?}"),
    }
}
