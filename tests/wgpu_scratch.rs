//! The WGSL engine's scratch modes (all in workgroup memory, normsys log-derivatives in global
//! memory, all in global memory): every mode that fits the adapter gives the same batch NLL,
//! gradient and fits as the others and as the CPU f64 engine, within the tolerances of
//! wgpu_parity.rs and wgpu_fit.rs; a mode that does not fit is refused with an error.
//!
//! Runs wherever wgpu finds an adapter (Mesa's lavapipe in CI, a real GPU elsewhere); without
//! one it says so and passes, unless NEXTSTAT_REQUIRE_WGPU=1.
#![cfg(feature = "metal")]

mod common;
use common::*;
use nextstat::device::wgpu::{ScratchMode, WgpuEngine};
use nextstat::device::BatchSession;
use nextstat::device::GpuFitOptions;
use nextstat::infer::{FitOptions, Fitter};
use nextstat::{Evaluator, Model};

fn engine() -> Option<WgpuEngine> {
    wgpu_engine("WGSL scratch-mode tests")
}

/// A workspace built so that its normsys log-derivatives (`n_channels` channels of one bin,
/// two samples each, every sample with `n_normsys` normsys modifiers) dominate its scratch.
fn dlog_heavy(n_channels: usize, n_normsys: usize) -> Model {
    let normsys: Vec<serde_json::Value> = (0..n_normsys)
        .map(|k| {
            serde_json::json!({"name": format!("ns{k}"), "type": "normsys",
                "data": {"hi": 1.0 + 0.001 * (k % 7 + 1) as f64, "lo": 1.0 - 0.001 * (k % 5 + 1) as f64}})
        })
        .collect();
    let channels: Vec<serde_json::Value> = (0..n_channels)
        .map(|c| {
            let mut sig = normsys.clone();
            sig.push(serde_json::json!({"name": "mu", "type": "normfactor", "data": null}));
            serde_json::json!({"name": format!("ch{c}"), "samples": [
                {"name": "signal", "data": [2.0 + (c % 3) as f64], "modifiers": sig},
                {"name": "background", "data": [20.0 + (c % 11) as f64], "modifiers": normsys},
            ]})
        })
        .collect();
    let observations: Vec<serde_json::Value> = (0..n_channels)
        .map(|c| serde_json::json!({"name": format!("ch{c}"), "data": [23.0 + (c % 13) as f64]}))
        .collect();
    let ws = serde_json::json!({
        "version": "1.0.0",
        "channels": channels,
        "observations": observations,
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
    });
    let ws = nextstat::Workspace::from_json_str(&ws.to_string()).unwrap();
    Model::from_workspace(&ws, &Default::default()).unwrap()
}

/// Example models with both normsys codes (code4's polynomial has its own log-derivative
/// path), and the public workspaces when present.
fn models() -> Vec<(String, Model)> {
    let mut v = Vec::new();
    for path in example_models() {
        for code in [
            "normsys=code1,histosys=code0",
            "normsys=code4,histosys=code4p",
        ] {
            v.push((
                format!("{} {code}", path.display()),
                load(&path, None, code.parse().unwrap()),
            ));
        }
    }
    if let Some(dir) = workspaces_dir() {
        for name in ["complex_workspace.json", "workspace_tHu.json"] {
            v.push((name.into(), load(&dir.join(name), None, Default::default())));
        }
    }
    v
}

/// The modes a session of `model` fits in, after checking that the others are refused.
fn fitting_modes(engine: &WgpuEngine, model: &Model, label: &str) -> Vec<ScratchMode> {
    let mut fit = Vec::new();
    for mode in ScratchMode::ALL {
        if engine.scratch_fits(model, mode) {
            fit.push(mode);
        } else {
            let err = match engine.session_with_scratch(model, Some(mode)) {
                Ok(_) => panic!("{label}: mode {mode} does not fit but a session was made"),
                Err(e) => e.to_string(),
            };
            assert!(
                err.contains("max_compute_workgroup_storage_size") && err.contains(mode.name()),
                "{label}: mode {mode}: {err}"
            );
        }
    }
    let bytes: Vec<usize> = ScratchMode::ALL
        .iter()
        .map(|&m| WgpuEngine::scratch_workgroup_bytes(model, m))
        .collect();
    eprintln!(
        "{label}: {} parameters, workgroup bytes by mode {bytes:?}; modes that fit {} bytes: {fit:?}; the default: {}",
        model.n_params(),
        engine.adapter.max_compute_workgroup_storage_size,
        engine.session_with_scratch(model, None).unwrap().scratch_mode()
    );
    assert!(
        fit.contains(&ScratchMode::Global),
        "{label}: even global scratch does not fit"
    );
    fit
}

/// One item's NLL and gradient.
type NllGrad = (f64, Vec<f64>);

/// Batch NLL and gradient at random points in every mode that fits, against the CPU and the
/// first mode; returns how many modes ran.
fn nll_grad_in_every_mode(engine: &WgpuEngine, model: &Model, label: &str) -> usize {
    let mut n_modes = 0;
    let pts: Vec<Vec<f64>> = random_points(model, 8, 5)
        .into_iter()
        .filter(|p| model.nll(p).is_ok())
        .collect();
    let refs: Vec<&[f64]> = pts.iter().map(|p| p.as_slice()).collect();
    let data: Vec<_> = pts.iter().map(|_| &model.observed).collect();
    let mut ev = Evaluator::new(model);
    let mut cpu_grad = vec![0.0; model.n_params()];
    let cpu: Vec<NllGrad> = pts
        .iter()
        .map(|p| {
            let nll = ev.nll_grad(p, &model.observed, &mut cpu_grad).unwrap();
            (nll, cpu_grad.clone())
        })
        .collect();
    let mut first: Option<(ScratchMode, Vec<NllGrad>)> = None;
    for mode in fitting_modes(engine, model, label) {
        let session = engine.session_with_scratch(model, Some(mode)).unwrap();
        assert_eq!(session.scratch_mode(), mode);
        let gpu = session.nll_grad_batch(&refs, &data).unwrap();
        let mut against = vec![("CPU".to_string(), &cpu)];
        if let Some((m0, r0)) = &first {
            against.push((format!("mode {m0}"), r0));
        }
        for (what, reference) in against {
            for (k, ((nll, grad), (r_nll, r_grad))) in gpu.iter().zip(reference).enumerate() {
                let rel = (nll - r_nll).abs() / r_nll.abs().max(1.0);
                assert!(
                    rel <= 2e-6,
                    "{label} mode {mode} point {k}: NLL {nll} vs {what} {r_nll} (rel {rel:e})"
                );
                let scale = r_grad.iter().fold(1.0f64, |a, x| a.max(x.abs()));
                for (i, (a, b)) in grad.iter().zip(r_grad).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * b.abs().max(scale),
                        "{label} mode {mode} point {k}: dNLL/d{} {a} vs {what} {b}",
                        model.parameters[i].name
                    );
                }
            }
        }
        if first.is_none() {
            first = Some((mode, gpu));
        }
        n_modes += 1;
    }
    n_modes
}

#[test]
fn every_mode_that_fits_gives_the_cpus_nll_and_gradient() {
    let Some(engine) = engine() else { return };
    for (label, model) in models() {
        assert!(nll_grad_in_every_mode(&engine, &model, &label) > 0);
    }
}

/// A model whose scratch fits this adapter's workgroup memory only with its normsys
/// log-derivatives in global memory: the workgroup mode is refused, global memory is the
/// default (the scratch is far above what goes to workgroup memory by default), and
/// dlog-global agrees with global mode and the CPU.
#[test]
fn a_model_too_large_for_workgroup_scratch_runs_in_the_other_modes() {
    let Some(engine) = engine() else { return };
    let limit = engine.adapter.max_compute_workgroup_storage_size as usize;
    // two samples of 100 normsys modifiers a channel: 200 log-derivatives (800 bytes)
    let model = dlog_heavy(limit / 800 + 1, 100);
    let label = format!("{} channels of 200 normsys entries", limit / 800 + 1);
    assert_eq!(
        fitting_modes(&engine, &model, &label),
        [ScratchMode::DlogGlobal, ScratchMode::Global]
    );
    assert_eq!(
        engine
            .session_with_scratch(&model, None)
            .unwrap()
            .scratch_mode(),
        ScratchMode::Global,
        "a scratch that large goes to global memory by default"
    );
    assert_eq!(nll_grad_in_every_mode(&engine, &model, &label), 2);
}

/// A fit batch of three items (free fits from two starts, so that items after the first use
/// their own slice of global scratch) in every mode that fits, against the CPU's fit.
#[test]
fn every_mode_that_fits_gives_the_cpus_fits() {
    let Some(engine) = engine() else { return };
    for (label, model) in models()
        .into_iter()
        // tHu's fits take minutes on a software rasterizer; the NLL test covers it in every mode
        .filter(|(l, _)| (l.contains("code1") || !l.contains("code")) && !l.contains("tHu"))
    {
        let cpu = Fitter::new(&model).fit(&model.observed, &FitOptions::default());
        let init = model.init();
        let mut shifted = init.clone();
        shifted[model.poi] = (init[model.poi] + 0.5).min(model.bounds()[model.poi].1);
        let starts = [init.as_slice(), shifted.as_slice(), init.as_slice()];
        let data = [&model.observed; 3];
        let h0 = Fitter::new(&model).inverse_fisher_diagonal(&init).unwrap();
        let mut first: Option<(ScratchMode, Vec<f64>)> = None;
        for mode in fitting_modes(&engine, &model, &label) {
            let session = engine.session_with_scratch(&model, Some(mode)).unwrap();
            let fits = session
                .fit_batch(&data, &starts, &model.fixed(), &h0, &GpuFitOptions::f32())
                .unwrap();
            let mut twice_nll = Vec::new();
            for (k, f) in fits.iter().enumerate() {
                assert!(
                    f.status.converged(),
                    "{label} mode {mode} fit {k}: {:?}",
                    f.status
                );
                let t = 2.0 * model.nll(&f.pars).unwrap();
                eprintln!(
                    "{label} mode {mode} fit {k}: {} iterations, 2NLL {t:.6} vs CPU {:.6}, POI {:.5} vs {:.5}",
                    f.iterations,
                    cpu.twice_nll(),
                    f.pars[model.poi],
                    cpu.pars[model.poi]
                );
                assert!(
                    (t - cpu.twice_nll()).abs() <= 1e-3,
                    "{label} mode {mode} fit {k}: 2NLL {t} vs CPU {}",
                    cpu.twice_nll()
                );
                assert!(
                    (f.pars[model.poi] - cpu.pars[model.poi]).abs() <= 1e-3,
                    "{label} mode {mode} fit {k}: POI {} vs CPU {}",
                    f.pars[model.poi],
                    cpu.pars[model.poi]
                );
                twice_nll.push(t);
            }
            if let Some((m0, t0)) = &first {
                for (k, (a, b)) in twice_nll.iter().zip(t0).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-3,
                        "{label} fit {k}: 2NLL {a} in mode {mode} vs {b} in mode {m0}"
                    );
                }
            } else {
                first = Some((mode, twice_nll));
            }
        }
    }
}
