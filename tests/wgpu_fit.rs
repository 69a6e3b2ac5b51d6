//! Fits on the WGSL engine (lockstep L-BFGS, f32) against the CPU engine's f64 fits: fitted POI
//! within 1e-3 and 2*NLL (re-evaluated in f64 at the fitted parameters) within 1e-3.
#![cfg(feature = "metal")]

mod common;
use common::*;
use nextstat::device::wgpu::WgpuEngine;
use nextstat::device::BatchSession;
use nextstat::device::GpuFitOptions;
use nextstat::infer::{FitOptions, Fitter};
use nextstat::Model;

fn engine() -> Option<WgpuEngine> {
    wgpu_engine("WGSL fit tests")
}

fn compare(engine: &WgpuEngine, model: &Model, label: &str) {
    let session = engine.session(model).unwrap();
    let mut fitter = Fitter::new(model);
    for fix_poi in [None, Some(1.5)] {
        let mut start = model.init();
        let mut fixed = model.fixed();
        let mut opts = FitOptions::default();
        if let Some(mu) = fix_poi {
            start[model.poi] = mu;
            fixed[model.poi] = true;
            opts.fixed = vec![(model.poi, mu)];
        }
        let cpu = fitter.fit(&model.observed, &opts);
        let h0 = fitter.inverse_fisher_diagonal(&start).unwrap();
        let gpu = session
            .fit_batch(
                &[&model.observed],
                &[&start],
                &fixed,
                &h0,
                &GpuFitOptions::f32(),
            )
            .unwrap()
            .remove(0);
        let nll = model.nll(&gpu.pars).unwrap();
        eprintln!(
            "{label} fix {fix_poi:?}: gpu {:?} after {} iterations, 2NLL {:.6} vs cpu {:.6}, POI {:.5} vs {:.5}",
            gpu.status,
            gpu.iterations,
            2.0 * nll,
            cpu.twice_nll(),
            gpu.pars[model.poi],
            cpu.pars[model.poi]
        );
        assert!(gpu.status.converged(), "{label}: {:?}", gpu.status);
        assert!(
            (2.0 * nll - cpu.twice_nll()).abs() <= 1e-3,
            "{label} {fix_poi:?}: 2NLL {} vs {}",
            2.0 * nll,
            cpu.twice_nll()
        );
        assert!(
            (gpu.pars[model.poi] - cpu.pars[model.poi]).abs() <= 1e-3,
            "{label} {fix_poi:?}: POI"
        );
    }
}

#[test]
fn fit_matches_cpu() {
    let Some(engine) = engine() else { return };
    for path in example_models() {
        compare(
            &engine,
            &load(&path, None, Default::default()),
            &path.display().to_string(),
        );
    }
    if let Some(dir) = workspaces_dir() {
        for name in [
            "simple_workspace.json",
            "complex_workspace.json",
            "workspace_tHu.json",
        ] {
            compare(
                &engine,
                &load(&dir.join(name), None, Default::default()),
                name,
            );
        }
    }
}

/// A scan and a ranking with their fits as one batch on the device agree with the CPU's.
#[test]
fn scan_and_ranking_match_cpu() {
    let Some(engine) = engine() else { return };
    let mut models = vec![load(
        &repo().join("examples/models/counting.json"),
        None,
        Default::default(),
    )];
    if let Some(dir) = workspaces_dir() {
        models.push(load(
            &dir.join("complex_workspace.json"),
            None,
            Default::default(),
        ));
    }
    for model in &models {
        let session = engine.session(model).unwrap();
        let grid: Vec<f64> = (0..9).map(|i| 0.25 * i as f64).collect();
        let (_, cpu) = nextstat::infer::profile_scan(model, &model.observed, &grid);
        let (_, gpu) =
            nextstat::infer::gpu::profile_scan_gpu(model, &model.observed, &grid, &session)
                .unwrap();
        for (c, g) in cpu.iter().zip(&gpu) {
            assert!(g.fit.converged);
            assert!(
                (c.twice_nll() - g.twice_nll()).abs() <= 1e-3,
                "mu {}: {} vs {}",
                c.poi,
                g.twice_nll(),
                c.twice_nll()
            );
        }
        let (_, cpu) = nextstat::infer::ranking(model, &model.observed).unwrap();
        let (_, gpu) = nextstat::infer::gpu::ranking_gpu(model, &model.observed, &session).unwrap();
        assert_eq!(cpu.len(), gpu.len());
        for c in &cpu {
            let g = gpu.iter().find(|g| g.index == c.index).unwrap();
            assert!(g.converged);
            for (x, y) in [
                (c.postfit_up, g.postfit_up),
                (c.postfit_down, g.postfit_down),
            ] {
                assert!((x - y).abs() <= 1e-3, "{}: impact {y} vs CPU {x}", c.name);
            }
            if let (Some(x), Some(y)) = (c.prefit_up, g.prefit_up) {
                assert!(
                    (x - y).abs() <= 1e-3,
                    "{}: prefit impact {y} vs CPU {x}",
                    c.name
                );
            }
        }
    }
}
