//! NLL + gradient latency and model compile time (issue targets: tHu NLL + gradient at most
//! 10 us on one core; tHu JSON -> model under 50 ms).
//!
//! `NEXTSTAT_WORKSPACES=../shared/workspaces cargo bench --bench nll`

use criterion::{criterion_group, criterion_main, Criterion};
use nextstat::{CompileOptions, Evaluator, Model, Workspace};
use std::hint::black_box;
use std::path::PathBuf;

fn workspaces() -> PathBuf {
    std::env::var_os("NEXTSTAT_WORKSPACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/workspaces"))
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("nll");
    for name in ["workspace_tHu.json", "complex_workspace.json"] {
        let path = workspaces().join(name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            eprintln!(
                "skipping {name}: {} not found (set NEXTSTAT_WORKSPACES)",
                path.display()
            );
            continue;
        };
        let model = Model::from_path(&path).unwrap();
        let pars = model.init();
        let mut ev = Evaluator::new(&model);
        let mut grad = vec![0.0; pars.len()];
        group.bench_function(format!("{name}/nll_grad"), |b| {
            b.iter(|| {
                black_box(ev.nll_grad_unchecked(black_box(&pars), &model.observed, Some(&mut grad)))
            })
        });
        group.bench_function(format!("{name}/nll"), |b| {
            b.iter(|| black_box(ev.nll_grad_unchecked(black_box(&pars), &model.observed, None)))
        });
        group.bench_function(format!("{name}/compile_from_json"), |b| {
            b.iter(|| {
                let ws = Workspace::from_str_named(black_box(&text), name).unwrap();
                black_box(Model::from_workspace(&ws, &CompileOptions::default()).unwrap())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
