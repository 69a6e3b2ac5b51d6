//! Toy ensembles on the CPU engine (issue targets on this 2-core machine: 20 tHu toys with 2
//! threads in at most 60% of the 1-thread time; per-toy cost flat with ensemble size).
//!
//! `NEXTSTAT_WORKSPACES=../shared/workspaces cargo bench --bench toys`

use criterion::{criterion_group, criterion_main, Criterion};
use nextstat::infer::TestStat;
use nextstat::toys::{self, ToyOptions};
use nextstat::Model;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

fn workspace(name: &str) -> Option<Model> {
    let dir = std::env::var_os("NEXTSTAT_WORKSPACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/workspaces"));
    Model::from_path(dir.join(name)).ok()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("toys");
    g.sample_size(10).measurement_time(Duration::from_secs(6));
    if let Some(model) = workspace("workspace_tHu.json") {
        let base = toys::baseline(&model, &model.observed, 1.0, TestStat::QTilde);
        let opts = ToyOptions {
            seed: 1,
            first_toy: 0,
            n_toys: 20,
            test_stat: TestStat::QTilde,
        };
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            g.bench_function(
                format!("workspace_tHu.json/20_toys_per_hypothesis/{threads}_threads"),
                |b| {
                    b.iter(|| {
                        pool.install(|| {
                            black_box(
                                toys::run_ensembles(&model, &base, 1.0, &opts, &|| {}).unwrap(),
                            )
                        })
                    })
                },
            );
        }
    } else {
        eprintln!("skipping tHu toys: workspace not found (set NEXTSTAT_WORKSPACES)");
    }
    if let Some(model) = workspace("complex_workspace.json") {
        let base = toys::baseline(&model, &model.observed, 1.0, TestStat::QTilde);
        for n in [100u64, 1000, 10000] {
            let opts = ToyOptions {
                seed: 1,
                first_toy: 0,
                n_toys: n,
                test_stat: TestStat::QTilde,
            };
            g.bench_function(
                format!("complex_workspace.json/{n}_toys_per_hypothesis"),
                |b| {
                    b.iter(|| {
                        black_box(toys::run_ensembles(&model, &base, 1.0, &opts, &|| {}).unwrap())
                    })
                },
            );
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
