//! The WGSL engine (f32, through wgpu) against the CPU f64 engine: batch NLL within 2e-6
//! relative; each gradient component within 1e-4 of max(|its value|, the gradient's largest
//! component) (a component that is a near-cancelling sum, like a lumi parameter's, is held to
//! the gradient's scale, which is what f32 sums can promise); on our example models with every
//! interpolation code and on the public workspaces.
//!
//! Runs wherever wgpu finds an adapter (Mesa's lavapipe in CI, a real GPU elsewhere); without
//! one it says so and passes, unless NEXTSTAT_REQUIRE_WGPU=1 (set by .ci/run).
#![cfg(feature = "metal")]

mod common;
use common::*;
use nextstat::device::wgpu::WgpuEngine;
use nextstat::device::BatchSession;
use nextstat::{Evaluator, Model};

fn engine() -> Option<WgpuEngine> {
    wgpu_engine("WGSL engine tests")
}

fn compare(engine: &WgpuEngine, model: &Model, n_points: usize, label: &str) -> usize {
    let session = engine.session(model).unwrap();
    let pts: Vec<Vec<f64>> = random_points(model, n_points, 17)
        .into_iter()
        .filter(|p| model.nll(p).is_ok())
        .collect();
    let refs: Vec<&[f64]> = pts.iter().map(|p| p.as_slice()).collect();
    let data: Vec<_> = pts.iter().map(|_| &model.observed).collect();
    let gpu = session.nll_grad_batch(&refs, &data).unwrap();
    let mut ev = Evaluator::new(model);
    let mut g = vec![0.0; model.n_params()];
    for (k, (p, (nll, grad))) in pts.iter().zip(&gpu).enumerate() {
        let cpu = ev.nll_grad(p, &model.observed, &mut g).unwrap();
        let rel = (nll - cpu).abs() / cpu.abs().max(1.0);
        assert!(
            rel <= 2e-6,
            "{label} point {k}: NLL {nll} vs CPU {cpu} (rel {rel:e})"
        );
        let scale = g.iter().fold(1.0f64, |a, x| a.max(x.abs()));
        for (i, (a, b)) in grad.iter().zip(&g).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs().max(scale),
                "{label} point {k}: dNLL/d{} {a} vs CPU {b}",
                model.parameters[i].name
            );
        }
    }
    pts.len()
}

#[test]
fn nll_and_grad_at_multiple_points_match_cpu() {
    let Some(engine) = engine() else { return };
    let mut n = 0;
    for path in example_models() {
        for code in ALL_CODES {
            let model = load(&path, None, code.parse().unwrap());
            n += compare(&engine, &model, 12, &format!("{} {code}", path.display()));
        }
    }
    assert!(n > 100);
}

#[test]
fn complex_workspace_and_thu_match_cpu() {
    let Some(engine) = engine() else { return };
    let Some(dir) = workspaces_dir() else { return };
    for name in [
        "simple_workspace.json",
        "complex_workspace.json",
        "two_channel_workspace.json",
        "workspace_tHu.json",
    ] {
        let model = load(&dir.join(name), None, Default::default());
        compare(&engine, &model, 8, name);
    }
}

/// One upload serves many batches with identical results.
#[test]
fn session_reuse_gives_identical_results() {
    let Some(engine) = engine() else { return };
    let model = load(
        &repo().join("examples/models/counting.json"),
        None,
        Default::default(),
    );
    let session = engine.session(&model).unwrap();
    let pts = random_points(&model, 5, 3);
    let refs: Vec<&[f64]> = pts.iter().map(|p| p.as_slice()).collect();
    let data: Vec<_> = pts.iter().map(|_| &model.observed).collect();
    let a = session.nll_grad_batch(&refs, &data).unwrap();
    let _ = session.nll_grad_batch(&refs[..2], &data[..2]).unwrap();
    let b = session.nll_grad_batch(&refs, &data).unwrap();
    assert_eq!(a, b);
}
