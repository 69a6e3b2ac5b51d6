//! Helpers shared by the CLI integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

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
