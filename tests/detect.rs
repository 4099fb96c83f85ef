//! The detectors: blocking code inside `io!` and long blocking stretches each warn once per
//! function and interval, with where and how long; well-behaved bodies stay silent; the
//! environment variable turns them on without code. (Own test binary: it installs the
//! process-wide subscriber and sets the detectors, which are process-wide.)

mod common;

use std::time::Duration;

use blocking_first::blocking_first;
use blocking_first::observe::detect::{self, Detectors};
use common::capture;
use common::*;

const MS: Duration = Duration::from_millis(1);

#[blocking_first]
async fn blocks_inside_io() {
    io! {
        suspend().await;
        std::thread::sleep(30 * MS); // on a runtime worker
    };
}

#[blocking_first]
async fn awaits_inside_io() {
    io! { tokio::time::sleep(30 * MS).await };
}

#[blocking_first]
async fn long_stretch() {
    std::thread::sleep(60 * MS);
}

#[blocking_first]
async fn short_stretches() {
    std::thread::sleep(5 * MS);
    io! { suspend().await };
    std::thread::sleep(5 * MS);
}

fn warnings(function: &str) -> Vec<capture::Captured> {
    capture::events("blocking_first::detect", function)
}

#[test]
fn each_detector_warns_once_per_interval_and_not_about_well_behaved_bodies() {
    capture::install();
    let rt = multi_thread();
    let before = blocking_first::stats().detector_warnings;
    // Off (this is a debug build, where they start on): nothing, however bad.
    detect::disable();
    rt.block_on(async {
        blocks_inside_io().await;
        long_stretch().await;
    });
    assert!(warnings("::blocks_inside_io").is_empty());
    assert!(warnings("::long_stretch").is_empty());

    detect::enable(
        Detectors::default()
            .io_poll(10 * MS)
            .stretch(40 * MS)
            .interval(Duration::from_secs(3600)),
    );
    rt.block_on(async {
        for _ in 0..3 {
            blocks_inside_io().await;
            long_stretch().await;
            awaits_inside_io().await;
            short_stretches().await;
        }
    });
    let io = warnings("::blocks_inside_io");
    assert_eq!(io.len(), 1, "once per interval: {io:?}");
    assert_eq!(io[0].level, tracing::Level::WARN);
    assert_eq!(io[0].get("detector"), "io_poll");
    assert!(io[0].get("file").ends_with("detect.rs"));
    assert!(io[0].num("took_us") >= 30_000, "{io:?}");
    assert!(
        io[0].get("message").contains("blocking code inside `io!`"),
        "{io:?}"
    );
    let stretch = warnings("::long_stretch");
    assert_eq!(stretch.len(), 1, "once per interval: {stretch:?}");
    assert_eq!(stretch[0].get("detector"), "stretch");
    assert!(stretch[0].num("took_us") >= 60_000, "{stretch:?}");
    assert!(
        stretch[0].get("message").contains("limit `global`"),
        "{stretch:?}"
    );
    assert!(warnings("::awaits_inside_io").is_empty());
    assert!(warnings("::short_stretches").is_empty());
    assert_eq!(blocking_first::stats().detector_warnings - before, 2);

    // A short interval: warned again.
    detect::enable(
        Detectors::default()
            .io_poll(10 * MS)
            .interval(Duration::ZERO),
    );
    rt.block_on(blocks_inside_io());
    assert_eq!(warnings("::blocks_inside_io").len(), 2);
    detect::disable();
    rt.block_on(blocks_inside_io());
    assert_eq!(warnings("::blocks_inside_io").len(), 2);
}

/// Run by the test below in a child process, with the variable set.
#[test]
#[ignore = "run by `the_environment_variable_turns_them_on`"]
fn child_with_the_variable_set() {
    if std::env::var_os(detect::ENV).is_none() {
        return; // run by hand: nothing to check
    }
    capture::install();
    multi_thread().block_on(async {
        blocks_inside_io().await;
        short_stretches().await;
    });
    assert_eq!(warnings("::blocks_inside_io").len(), 1);
    assert!(warnings("::short_stretches").is_empty());
}

#[test]
fn the_environment_variable_turns_them_on() {
    let run = |value: &str| {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "child_with_the_variable_set",
                "--nocapture",
            ])
            .env(detect::ENV, value)
            .output()
            .unwrap()
    };
    let on = run("io_poll=10ms,stretch=1s");
    assert!(
        on.status.success(),
        "{}",
        String::from_utf8_lossy(&on.stdout)
    );
    // Off: the child's assertion that a warning came fails.
    let off = run("off");
    assert!(!off.status.success());
    // Not understood: it says so, and stays off.
    let wrong = run("io_poll=soon");
    assert!(!wrong.status.success());
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        said.contains("BLOCKING_FIRST_DETECT=\"io_poll=soon\" is not understood"),
        "{said}"
    );
}

/// Run by the test below in a child process, without the variable.
#[test]
#[ignore = "run by `debug_builds_turn_them_on_without_the_variable`"]
fn child_without_the_variable() {
    if std::env::var_os("BLOCKING_FIRST_DETECT_CHILD").is_none() {
        return; // run by hand: nothing to check
    }
    capture::install();
    multi_thread().block_on(async {
        blocks_inside_io().await;
        short_stretches().await;
    });
    // On in a debug build, with the default thresholds; off in a release build.
    let expected = usize::from(cfg!(debug_assertions));
    assert_eq!(warnings("::blocks_inside_io").len(), expected);
    assert!(warnings("::short_stretches").is_empty());
}

#[test]
fn debug_builds_turn_them_on_without_the_variable() {
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_without_the_variable",
            "--nocapture",
        ])
        .env_remove(detect::ENV)
        .env("BLOCKING_FIRST_DETECT_CHILD", "1")
        .output()
        .unwrap();
    assert!(
        child.status.success(),
        "{}{}",
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
}
