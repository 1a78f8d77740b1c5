//! Issue 7 follow-ups: CLI errors that name the option and the real cause
//! (exit 125), found by an independent verification. One regression test
//! per message; each also checks that the old, misleading text is gone.

use std::path::PathBuf;
use std::process::Output;

use crate::common::{self, root_or_skip, TestRoot};

/// `nomad-shim run --rm --chroot --task-dir DIR OPTS -- true`.
fn run(root: &TestRoot, opts: &[&str]) -> Output {
    let task_dir = root.path().with_file_name("task-cli-errors7");
    std::fs::create_dir_all(&task_dir).unwrap();
    common::output(
        root.cli()
            .args(["run", "--rm", "--chroot", "--task-dir"])
            .arg(&task_dir)
            .args(opts)
            .args(["--", "/bin/true"]),
    )
}

/// The stderr of a start refused with 125.
fn refused(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_device_that_is_a_file_is_named_not_a_device_whatever_its_task_path() {
    if !root_or_skip("a_device_that_is_a_file_is_named_not_a_device_whatever_its_task_path") {
        return;
    }
    let root = TestRoot::new();
    let err = refused(&run(&root, &["--device", "/etc/hostname"]));
    assert!(
        err.contains("device /etc/hostname: not a character or block device"),
        "{err}"
    );
    assert!(!err.contains("must be under /dev"), "{err}");
    // A missing node: named, without Rust's "(os error 2)".
    let err = refused(&run(&root, &["--device", "/dev/nomad-shim-nope"]));
    assert!(
        err.contains("stat device /dev/nomad-shim-nope: No such file or directory on the host"),
        "{err}"
    );
    // With a task path outside /dev, the host node is still named first.
    let err = refused(&run(&root, &["--device", "/etc/hostname:/etc/x"]));
    assert!(
        err.contains("device /etc/hostname: not a character or block device"),
        "{err}"
    );
    assert!(!err.contains("must be under /dev"), "{err}");
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_device_with_a_relative_task_path_says_so_not_bad_access() {
    if !root_or_skip("a_device_with_a_relative_task_path_says_so_not_bad_access") {
        return;
    }
    let root = TestRoot::new();
    for arg in ["/dev/null:dev/x", "/dev/null:dev/x:rw"] {
        let err = refused(&run(&root, &["--device", arg]));
        assert!(
            err.contains("device /dev/null: the task path must be absolute"),
            "{arg}: {err}"
        );
        assert!(!err.contains("access must be"), "{arg}: {err}");
    }
    // An access string is still an access string.
    let err = refused(&run(&root, &["--device", "/dev/null:rx"]));
    assert!(
        err.contains("access must be one or more of r, w, m"),
        "{err}"
    );
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_device_that_is_a_descriptor_link_is_refused_before_any_bind() {
    if !root_or_skip("a_device_that_is_a_descriptor_link_is_refused_before_any_bind") {
        return;
    }
    let root = TestRoot::new();
    // A link of our own (the VM's devtmpfs has no /dev/stdin), and the
    // system's where they exist.
    let link = root.path().with_file_name("stdin-link");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("/proc/self/fd/0", &link).unwrap();
    let mut hosts = vec![link.display().to_string()];
    for system in ["/dev/stdin", "/dev/fd/0"] {
        if std::fs::symlink_metadata(system).is_ok() {
            hosts.push(system.to_string());
        }
    }
    for host in &hosts {
        let err = refused(&run(&root, &["--device", &format!("{host}:/dev/si")]));
        assert!(
            err.contains(&format!("device {host}: leads to /proc/")),
            "{err}"
        );
        assert!(err.contains("not a device node"), "{err}");
        assert!(!err.contains("bind mount"), "{err}");
    }
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_device_symlink_is_bound_as_the_node_it_leads_to() {
    if !root_or_skip("a_device_symlink_is_bound_as_the_node_it_leads_to") {
        return;
    }
    let root = TestRoot::new();
    let link = root.path().with_file_name("null-link");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("/dev/null", &link).unwrap();
    let task_dir = root.path().with_file_name("task-cli-errors7-link");
    std::fs::create_dir_all(&task_dir).unwrap();
    let out = common::output(
        root.cli()
            .args(["run", "--rm", "--chroot", "--task-dir"])
            .arg(&task_dir)
            .arg("--device")
            .arg(format!("{}:/dev/nn:rw", link.display()))
            .args([
                "--",
                "/bin/sh",
                "-c",
                "echo x > /dev/nn && test -c /dev/nn && echo ok",
            ]),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

/// CAP_SYS_RESOURCE in our effective set (capabilities(7): bit 24).
fn have_cap_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    eff & (1 << 24) != 0
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_refused_lower_oom_score_adj_names_the_option_and_cap_sys_resource() {
    if !root_or_skip("a_refused_lower_oom_score_adj_names_the_option_and_cap_sys_resource") {
        return;
    }
    let root = TestRoot::new();
    let out =
        common::output(
            root.cli()
                .args(["run", "--rm", "--oom-score-adj", "-500", "--", "true"]),
        );
    if have_cap_sys_resource() {
        // Permitted here: the task starts.
        assert!(out.status.success(), "{out:?}");
        return;
    }
    let err = refused(&out);
    assert!(err.contains("--oom-score-adj -500"), "{err}");
    assert!(
        err.contains("lowering it needs CAP_SYS_RESOURCE, which nomad-shim does not have here"),
        "{err}"
    );
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn a_missing_chroot_env_or_mount_source_names_the_option() {
    if !root_or_skip("a_missing_chroot_env_or_mount_source_names_the_option") {
        return;
    }
    let root = TestRoot::new();
    let missing = PathBuf::from("/nonexistent/nomad-shim-cli-errors7");
    let err = refused(&run(&root, &["--chroot-env", missing.to_str().unwrap()]));
    assert!(
        err.contains(&format!(
            "--chroot-env {}: No such file or directory on the host",
            missing.display()
        )),
        "{err}"
    );
    assert!(!err.contains("os error"), "{err}");
    let mount = format!("src={},dst=/data", missing.display());
    let err = refused(&run(&root, &["--mount", &mount]));
    assert!(
        err.contains(&format!(
            "--mount src={}: No such file or directory on the host",
            missing.display()
        )),
        "{err}"
    );
    assert!(!err.contains("os error"), "{err}");
}
