//! Helpers shared by the CLI integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// Runs the `nextstat` binary under test with `args`.
pub fn nextstat(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nextstat"))
        .args(args)
        .output()
        .unwrap()
}

/// Whether `nextstat devices` lists a wgpu adapter; without one the caller's test says so and
/// passes, unless NEXTSTAT_REQUIRE_WGPU=1 makes that a failure.
pub fn gpu_available() -> bool {
    let out = nextstat(&["devices", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let any = v["wgpu_adapters"].as_array().is_some_and(|a| !a.is_empty());
    if !any {
        let required = std::env::var("NEXTSTAT_REQUIRE_WGPU").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "NEXTSTAT_REQUIRE_WGPU=1 but no wgpu adapter is listed"
        );
        eprintln!("skipping: no wgpu adapter on this machine");
    }
    any
}

/// Path of one of the bundled example models.
pub fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/models")
        .join(name)
        .display()
        .to_string()
}

/// A path in a temporary folder of this test process.
pub fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nextstat-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}
