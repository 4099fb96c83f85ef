//! The parenthesised regions README and the guide recommend, `io!(..)`, `io!({ .. })` and
//! `parallel!(a, b)`, are formatted by rustfmt, which leaves macros called with braces as
//! written: `rustfmt_regions.rs`, mis-indented on purpose, comes back formatted, and
//! `rustfmt --check` accepts the formatted file. Skipped, with a message, where rustfmt is not
//! installed.

mod rustfmt_regions;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The file as it is in the repository, formatted.
const FORMATTED: &str = include_str!("rustfmt_regions.rs");

#[tokio::test]
async fn the_recommended_forms_compile_and_run() {
    assert_eq!(rustfmt_regions::page(1, 2).await.unwrap(), (10, 11, 22));
}

#[test]
fn rustfmt_formats_regions_in_parentheses() {
    let Some(rustfmt) = rustfmt() else { return };
    let dir = tempfile::tempdir().unwrap();
    // An empty configuration beside the file: rustfmt's defaults, whatever the machine has.
    std::fs::write(dir.path().join("rustfmt.toml"), "").unwrap();
    let file = dir.path().join("regions.rs");

    let misformatted = misindent(FORMATTED);
    assert_ne!(misformatted, FORMATTED);
    std::fs::write(&file, &misformatted).unwrap();
    let formatted = run(&rustfmt, &file, false);
    assert!(
        formatted.status.success(),
        "rustfmt failed: {}",
        stderr(&formatted)
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        FORMATTED,
        "rustfmt did not restore the regions' layout from:\n{misformatted}"
    );

    let check = run(&rustfmt, &file, true);
    assert!(
        check.status.success(),
        "rustfmt --check rejects the formatted file: {}{}",
        String::from_utf8_lossy(&check.stdout),
        stderr(&check)
    );
}

/// Why the parentheses: the same region with braces is left as written.
#[test]
fn rustfmt_leaves_regions_in_braces_as_written() {
    let Some(rustfmt) = rustfmt() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rustfmt.toml"), "").unwrap();
    let file = dir.path().join("braces.rs");
    let braces = "async fn f() {\n    let x = io! {   fetch(1).await?   };\n}\n";
    std::fs::write(&file, braces).unwrap();
    let output = run(&rustfmt, &file, false);
    assert!(
        output.status.success(),
        "rustfmt failed: {}",
        stderr(&output)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), braces);
}

/// Every line's indentation changed (none, or too much), and spaces inside the regions'
/// parentheses.
fn misindent(text: &str) -> String {
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if !code.is_empty() {
            out.push_str(&" ".repeat(i % 3 * 5));
        }
        let code = code
            .replace("io!(", "io!(   ")
            .replace("parallel!(", "parallel!(  ")
            .replace(");", "  )  ;");
        out.push_str(&code);
        out.push('\n');
    }
    out
}

/// `rustfmt` (or `$RUSTFMT`), if it runs here.
fn rustfmt() -> Option<PathBuf> {
    let rustfmt = PathBuf::from(std::env::var_os("RUSTFMT").unwrap_or_else(|| "rustfmt".into()));
    match Command::new(&rustfmt).arg("--version").output() {
        Ok(output) if output.status.success() => Some(rustfmt),
        Ok(output) => {
            eprintln!(
                "SKIPPED: `{} --version` failed, rustfmt is not installed: {}",
                rustfmt.display(),
                stderr(&output)
            );
            None
        }
        Err(err) => {
            eprintln!(
                "SKIPPED: rustfmt is not installed ({}: {err})",
                rustfmt.display()
            );
            None
        }
    }
}

fn run(rustfmt: &Path, file: &Path, check: bool) -> Output {
    let mut command = Command::new(rustfmt);
    command.args(["--edition", "2024"]);
    if check {
        command.arg("--check");
    }
    command.arg(file).output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
