//! Helpers shared by the integration tests.
#![allow(dead_code)]

use nextstat::{CompileOptions, InterpCodes, Model, Workspace};
use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The public pyhf workspaces: `$NEXTSTAT_WORKSPACES`, else `../shared/workspaces` beside the
/// checkout. `None` (with a printed reason) when neither exists, so a bare clone still runs
/// everything else.
pub fn workspaces_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("NEXTSTAT_WORKSPACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/workspaces"));
    if dir.join("complex_workspace.json").exists() {
        Some(dir)
    } else {
        eprintln!(
            "skipping shared-workspace checks: {} not found (set NEXTSTAT_WORKSPACES)",
            dir.display()
        );
        None
    }
}

/// Our own example models (always present).
pub fn example_models() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("examples/models"))
        .expect("examples/models exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    v.sort();
    v
}

/// Every model file the tests can see: examples plus the shared workspaces when present.
pub fn all_models() -> Vec<PathBuf> {
    let mut v = example_models();
    if let Some(d) = workspaces_dir() {
        let mut shared: Vec<PathBuf> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        shared.sort();
        v.extend(shared);
    }
    v
}

pub fn load(path: &Path, measurement: Option<&str>, interp: InterpCodes) -> Model {
    let ws = Workspace::from_path(path).unwrap();
    Model::from_workspace(
        &ws,
        &CompileOptions {
            measurement: measurement.map(str::to_string),
            interp,
        },
    )
    .unwrap()
}

/// A small deterministic generator for test points (splitmix64).
pub struct Rng(pub u64);
impl Rng {
    pub fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }
}

/// Random in-bounds points (systematics in [-2, 2], factors in [0.7, 1.4]); the first is the
/// inits.
pub fn random_points(model: &Model, n: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|k| {
            model
                .parameters
                .iter()
                .map(|p| {
                    if p.fixed || k == 0 {
                        p.init
                    } else if p.kind == nextstat::model::ParamKind::Systematic {
                        rng.uniform(-2.0, 2.0)
                    } else {
                        rng.uniform(p.bounds.0.max(0.7), p.bounds.1.min(1.4))
                    }
                })
                .collect()
        })
        .collect()
}

pub const ALL_CODES: [&str; 6] = [
    "normsys=code1,histosys=code0",
    "normsys=code1,histosys=code2",
    "normsys=code1,histosys=code4p",
    "normsys=code4,histosys=code0",
    "normsys=code4,histosys=code2",
    "normsys=code4,histosys=code4p",
];

/// The WGSL engine on the best adapter (named on stderr), or `None` with the reason where wgpu
/// finds no adapter; with NEXTSTAT_REQUIRE_WGPU=1 (set by .ci/run) that is a failure instead.
/// `what` names the tests that skip.
#[cfg(feature = "metal")]
pub fn wgpu_engine(what: &str) -> Option<nextstat::device::wgpu::WgpuEngine> {
    match nextstat::device::wgpu::WgpuEngine::new() {
        Ok(e) => {
            eprintln!(
                "wgpu adapter: {} ({}, {})",
                e.adapter.name, e.adapter.backend, e.adapter.device_type
            );
            Some(e)
        }
        Err(err) => {
            let required = std::env::var("NEXTSTAT_REQUIRE_WGPU").is_ok_and(|v| v == "1");
            assert!(!required, "NEXTSTAT_REQUIRE_WGPU=1 but: {err}");
            eprintln!("skipping {what}: {err}");
            None
        }
    }
}
