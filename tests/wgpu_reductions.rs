//! The WGSL engine's two ways of reducing over a workgroup: subgroup operations (where the
//! adapter has them and the engine's probe accepts their layout) and a tree in workgroup
//! memory (everywhere). Each gives the CPU f64 engine's NLL, gradient and fits within the
//! tolerances of wgpu_parity.rs and wgpu_fit.rs.
//!
//! Runs wherever wgpu finds an adapter (Mesa's lavapipe in CI, which has subgroups, a real GPU
//! elsewhere); without one it says so and passes, unless NEXTSTAT_REQUIRE_WGPU=1.
#![cfg(feature = "metal")]

mod common;
use common::*;
use nextstat::device::wgpu::{Reductions, WgpuEngine};
use nextstat::device::{BatchSession, GpuFitOptions};
use nextstat::infer::{FitOptions, Fitter};
use nextstat::{Evaluator, Model};

/// The engines to compare, each with its reductions in words; none without an adapter.
fn engines() -> Vec<(String, WgpuEngine)> {
    // the default engine (the tree) tells whether an adapter exists
    let Some(tree) = wgpu_engine("WGSL reduction tests") else {
        return Vec::new();
    };
    assert_eq!(
        tree.subgroup_size, None,
        "the default engine used subgroups"
    );
    let auto = WgpuEngine::with_reductions(Reductions::Auto).unwrap();
    let mut v = vec![("workgroup tree".to_string(), tree)];
    match auto.subgroup_size {
        Some(n) => v.push((format!("subgroups of {n}"), auto)),
        None => eprintln!("this adapter cannot reduce through subgroups: only the tree is tested"),
    }
    v
}

/// The example models (one interpolation setting) and the small public workspace.
fn models() -> Vec<(String, Model)> {
    let mut v: Vec<(String, Model)> = example_models()
        .into_iter()
        .map(|p| (p.display().to_string(), load(&p, None, Default::default())))
        .collect();
    if let Some(dir) = workspaces_dir() {
        let p = dir.join("complex_workspace.json");
        v.push((
            "complex_workspace.json".into(),
            load(&p, None, Default::default()),
        ));
    }
    v
}

#[test]
fn both_reductions_give_the_cpus_nll_gradient_and_fits() {
    let engines = engines();
    for (label, model) in models() {
        let pts: Vec<Vec<f64>> = random_points(&model, 8, 11)
            .into_iter()
            .filter(|p| model.nll(p).is_ok())
            .collect();
        let refs: Vec<&[f64]> = pts.iter().map(|p| p.as_slice()).collect();
        let data = vec![&model.observed; pts.len()];
        let mut ev = Evaluator::new(&model);
        let cpu_fit = Fitter::new(&model).fit(&model.observed, &FitOptions::default());
        let init = model.init();
        let h0 = Fitter::new(&model).inverse_fisher_diagonal(&init).unwrap();
        for (how, engine) in &engines {
            let session = engine.session(&model).unwrap();
            for (p, (nll, grad)) in pts
                .iter()
                .zip(session.nll_grad_batch(&refs, &data).unwrap())
            {
                let mut cg = vec![0.0; p.len()];
                let cv = ev.nll_grad(p, &model.observed, &mut cg).unwrap();
                assert!(
                    (nll - cv).abs() <= 2e-6 * cv.abs().max(1.0),
                    "{label}, {how}: NLL {nll} vs CPU {cv}"
                );
                let scale = cg.iter().fold(1.0f64, |a, x| a.max(x.abs()));
                for (i, (a, b)) in grad.iter().zip(&cg).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * b.abs().max(scale),
                        "{label}, {how}: grad[{i}] {a} vs CPU {b}"
                    );
                }
            }
            let fits = session
                .fit_batch(
                    &[&model.observed],
                    &[init.as_slice()],
                    &model.fixed(),
                    &h0,
                    &GpuFitOptions::f32(),
                )
                .unwrap();
            let t = 2.0 * model.nll(&fits[0].pars).unwrap();
            eprintln!(
                "{label}, {how}: fit {:?} in {} iterations, 2NLL {t:.6} vs CPU {:.6}",
                fits[0].status,
                fits[0].iterations,
                cpu_fit.twice_nll()
            );
            assert!(
                fits[0].status.converged(),
                "{label}, {how}: {:?}",
                fits[0].status
            );
            assert!(
                (t - cpu_fit.twice_nll()).abs() <= 1e-3,
                "{label}, {how}: 2NLL {t} vs CPU {}",
                cpu_fit.twice_nll()
            );
            assert!(
                (fits[0].pars[model.poi] - cpu_fit.pars[model.poi]).abs() <= 1e-3,
                "{label}, {how}: POI {} vs CPU {}",
                fits[0].pars[model.poi],
                cpu_fit.pars[model.poi]
            );
        }
    }
}
