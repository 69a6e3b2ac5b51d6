//! Fit, scan and ranking timings for BENCHMARKS.md (issue targets on one core / this machine:
//! tHu fit <= 10 ms, complex fit <= 0.1 ms, tHu 21-point scan <= 0.3 s, tHu ranking <= 10 s).
//!
//! `NEXTSTAT_WORKSPACES=../shared/workspaces cargo bench --bench fit`

use criterion::{criterion_group, criterion_main, Criterion};
use nextstat::infer::{profile_scan, ranking, Fitter};
use nextstat::Model;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

fn workspace(name: &str) -> Option<Model> {
    let dir = std::env::var_os("NEXTSTAT_WORKSPACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/workspaces"));
    match Model::from_path(dir.join(name)) {
        Ok(m) => Some(m),
        Err(e) => {
            eprintln!("skipping {name}: {e} (set NEXTSTAT_WORKSPACES)");
            None
        }
    }
}

fn fits(c: &mut Criterion) {
    let mut g = c.benchmark_group("fit");
    for name in [
        "workspace_tHu.json",
        "complex_workspace.json",
        "simple_workspace.json",
    ] {
        let Some(model) = workspace(name) else {
            continue;
        };
        let mut fitter = Fitter::new(&model);
        g.bench_function(format!("{name}/free_fit"), |b| {
            b.iter(|| black_box(fitter.fit_free(&model.observed)))
        });
    }
    g.finish();
}

fn scans(c: &mut Criterion) {
    let Some(model) = workspace("workspace_tHu.json") else {
        return;
    };
    let grid: Vec<f64> = (0..21).map(|i| 5.0 * i as f64 / 20.0).collect();
    let mut g = c.benchmark_group("scan");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.bench_function("workspace_tHu.json/21_points_0_to_5", |b| {
        b.iter(|| black_box(profile_scan(&model, &model.observed, &grid)))
    });
    g.finish();
    let mut g = c.benchmark_group("ranking");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("workspace_tHu.json/all_parameters", |b| {
        b.iter(|| black_box(ranking(&model, &model.observed).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, fits, scans);
criterion_main!(benches);
