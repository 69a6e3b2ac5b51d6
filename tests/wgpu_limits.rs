//! Asymptotic CLs and upper limits with their fits on the WGSL engine (finished in f64 on the
//! CPU) against the CPU engine: CLs within 1e-4, limits within 1e-3.
#![cfg(feature = "metal")]

mod common;
use common::*;
use nextstat::device::wgpu::WgpuEngine;
use nextstat::infer::gpu::{hypotest_gpu, upper_limit_gpu};
use nextstat::infer::{hypotest, upper_limit, TestStat};
use nextstat::Model;

fn engine() -> Option<WgpuEngine> {
    wgpu_engine("WGSL limit tests")
}

fn models() -> Vec<(String, Model)> {
    let mut v: Vec<(String, Model)> = example_models()
        .iter()
        .map(|p| (p.display().to_string(), load(p, None, Default::default())))
        .collect();
    if let Some(dir) = workspaces_dir() {
        v.push((
            "complex_workspace.json".into(),
            load(
                &dir.join("complex_workspace.json"),
                None,
                Default::default(),
            ),
        ));
    }
    v
}

#[test]
fn hypotest_on_the_wgsl_engine_matches_the_cpu() {
    let Some(engine) = engine() else { return };
    for (label, model) in models() {
        let session = engine.session(&model).unwrap();
        for (mu, ts) in [
            (1.0, TestStat::QTilde),
            (0.5, TestStat::Q),
            (0.0, TestStat::Q0),
        ] {
            let cpu = hypotest(&model, &model.observed, mu, ts);
            let gpu = hypotest_gpu(&model, &model.observed, mu, ts, &session).unwrap();
            eprintln!(
                "{label} {ts} mu {mu}: CLs {} vs CPU {}",
                gpu.cls_obs, cpu.cls_obs
            );
            assert_eq!(gpu.converged, cpu.converged, "{label} {ts}");
            assert_eq!(gpu.warnings, cpu.warnings, "{label} {ts}");
            let pairs = [
                (gpu.cls_obs, cpu.cls_obs),
                (gpu.clsb_obs, cpu.clsb_obs),
                (gpu.clb_obs, cpu.clb_obs),
            ];
            for (k, (g, c)) in pairs
                .into_iter()
                .chain(gpu.cls_exp.into_iter().zip(cpu.cls_exp))
                .enumerate()
            {
                assert!(
                    (g - c).abs() <= 1e-4,
                    "{label} {ts} value {k}: {g} vs CPU {c}"
                );
            }
            assert!(
                (gpu.q_obs - cpu.q_obs).abs() <= 1e-4 * cpu.q_obs.max(1.0),
                "{label} {ts}: q {} vs {}",
                gpu.q_obs,
                cpu.q_obs
            );
        }
    }
}

#[test]
fn upper_limits_on_the_wgsl_engine_match_the_cpu() {
    let Some(engine) = engine() else { return };
    for (label, model) in models() {
        let session = engine.session(&model).unwrap();
        let cpu = upper_limit(&model, &model.observed, 0.05, TestStat::QTilde).unwrap();
        let gpu =
            upper_limit_gpu(&model, &model.observed, 0.05, TestStat::QTilde, &session).unwrap();
        eprintln!(
            "{label}: observed {} vs CPU {}, {} tests vs {}",
            gpu.obs,
            cpu.obs,
            gpu.tests.len(),
            cpu.tests.len()
        );
        assert_eq!(gpu.converged, cpu.converged, "{label}");
        assert!((gpu.obs - cpu.obs).abs() <= 1e-3, "{label}: observed");
        for k in 0..5 {
            assert!(
                (gpu.exp[k] - cpu.exp[k]).abs() <= 1e-3,
                "{label}: expected {k}: {} vs {}",
                gpu.exp[k],
                cpu.exp[k]
            );
        }
    }
    let model = &models()[0].1;
    let session = engine.session(model).unwrap();
    assert!(upper_limit_gpu(model, &model.observed, 0.05, TestStat::Q0, &session).is_err());
}
