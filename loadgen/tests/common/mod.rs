//! What the loadgen's integration tests share: running the loadgen binary
//! and reading its JSON report.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs the loadgen with `args` plus `--json`, fails the test if it fails,
/// and returns the report.
pub fn loadgen(args: &[String], json: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_heartline-loadgen"))
        .args(args)
        .arg("--json")
        .arg(json)
        .output()
        .expect("runs the loadgen");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "loadgen failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    eprintln!("{stderr}\n{stdout}");
    serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap()
}

/// [`loadgen`] off the async runtime, so a daemon in this process keeps serving.
pub async fn loadgen_async(args: Vec<String>, json: PathBuf) -> serde_json::Value {
    tokio::task::spawn_blocking(move || loadgen(&args, &json)).await.unwrap()
}
