//! Stand-in for corral's integration-test binary, to prove `run-suite` end to end
//! until the real suite exists. Not a cargo target (cargo only picks up
//! `tests/*.rs`); build it by hand, see tests/vm/README.md:
//!     rustc --edition 2021 --test tests/vm/standin-test.rs -o $T/standin-test
//! It checks what run-suite promises the real suite: the env, an unprivileged user
//! inside a logind session scope, a user manager on the session bus, runnable bins.
use std::{env, fs, path::Path, process::Command};

fn var(name: &str) -> String {
    env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

fn uid() -> String {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn env_is_what_run_suite_promises() {
    assert_eq!(var("CORRAL_TEST_MODE"), "session");
    let uid = uid();
    assert_ne!(uid, "0", "must not run as root");
    assert_eq!(var("XDG_RUNTIME_DIR"), format!("/run/user/{uid}"));
    assert_eq!(
        var("DBUS_SESSION_BUS_ADDRESS"),
        format!("unix:path=/run/user/{uid}/bus")
    );
}

#[test]
fn runs_inside_a_login_session_scope() {
    let cg = fs::read_to_string("/proc/self/cgroup").unwrap();
    assert!(
        cg.starts_with("0::/user.slice/") && cg.contains("/session-"),
        "cgroup: {cg}"
    );
}

#[test]
fn staged_binaries_run() {
    let dir = var("CORRAL_BIN_DIR");
    for b in ["corrald", "corralctl", "corral-shim"] {
        let st = Command::new(Path::new(&dir).join(b)).status().expect(b);
        assert!(st.success(), "{b}: {st}");
    }
}

#[test]
fn user_manager_answers_on_the_session_bus() {
    let st = Command::new("busctl")
        .args(["--user", "status", "org.freedesktop.systemd1"])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn transient_user_scope_gets_its_memory_limit() {
    let out = Command::new("systemd-run")
        .args(["--user", "--scope", "-p", "MemoryMax=50M", "--", "sh", "-c"])
        .arg("cat /sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/memory.max")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "52428800");
}

/// Run with `--include-ignored` to check that a failure reaches run-suite's exit code.
#[test]
#[ignore]
fn deliberately_failing() {
    panic!("deliberate failure");
}
