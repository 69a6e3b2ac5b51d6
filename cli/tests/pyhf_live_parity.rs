//! Live parity with pyhf: `tests/pyhf/live_parity.py` generates random workspaces (random
//! channels, bins, samples, modifiers and interpolation codes), evaluates them with pyhf and
//! with this binary, and fails on any difference beyond 1e-10 relative.
//!
//! Needs python3 with pyhf 0.7.6. Where they are missing the test says so and passes, unless
//! `NEXTSTAT_REQUIRE_PYHF=1` (set by `.ci/run`), where a missing pyhf is a failure.

use std::path::PathBuf;
use std::process::Command;

fn pyhf_available() -> bool {
    Command::new("python3")
        .args(["-c", "import pyhf, scipy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn random_workspaces_match_pyhf() {
    let required = std::env::var("NEXTSTAT_REQUIRE_PYHF").is_ok_and(|v| v == "1");
    if !pyhf_available() {
        assert!(
            !required,
            "NEXTSTAT_REQUIRE_PYHF=1 but `python3 -c 'import pyhf, scipy'` fails"
        );
        eprintln!("skipping live pyhf parity: python3 with pyhf and scipy not found (pip install pyhf==0.7.6)");
        return;
    }
    let models = std::env::var("NEXTSTAT_PARITY_MODELS").unwrap_or_else(|_| "200".into());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/pyhf/live_parity.py");
    let out = Command::new("python3")
        .arg(&script)
        .args([
            "--nextstat",
            env!("CARGO_BIN_EXE_nextstat"),
            "--models",
            &models,
            "--seed",
            "20261201",
        ])
        .output()
        .expect("run live_parity.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(
        out.status.success(),
        "live pyhf parity failed:\n{stdout}\n{stderr}"
    );
}
