//! Toys drawn on the device (WGSL) against the CPU engine's toys for the same seed: main counts
//! and Poisson auxiliary data identical integers, Gaussian auxiliary data equal to f32 precision.
#![cfg(feature = "metal")]
#![allow(clippy::needless_range_loop)]

mod common;
use common::*;
use nextstat::device::wgpu::WgpuEngine;
use nextstat::toys::ToyGenerator;
use nextstat::Model;

fn engine() -> Option<WgpuEngine> {
    wgpu_engine("WGSL toy tests")
}

fn compare(engine: &WgpuEngine, model: &Model, label: &str) {
    let gen = ToyGenerator::new(model, &model.init()).unwrap();
    let (seed, ensemble, first, n) = (0xDEC_2026u64 << 20, 1u32, (1u64 << 32) - 100, 300u32);
    let (_, gpu) = engine.sample_toys(&gen, seed, ensemble, first, n).unwrap();
    let (nb, na) = (model.n_bins(), model.observed.aux.len());
    let poisson_aux: Vec<usize> = model
        .layout
        .poisson
        .iter()
        .map(|t| t.aux as usize)
        .collect();
    for t in 0..n as usize {
        // toy indices cross 2^32 to test the counter's carry
        let cpu = gen.generate(seed, ensemble, first + t as u64);
        let row = &gpu[t * (nb + na)..(t + 1) * (nb + na)];
        for b in 0..nb {
            assert_eq!(
                row[b] as f64, cpu.main[b],
                "{label} toy {t} bin {b}: main counts differ"
            );
        }
        for a in 0..na {
            let (g, c) = (row[nb + a] as f64, cpu.aux[a]);
            if poisson_aux.contains(&a) {
                assert_eq!(g, c, "{label} toy {t} aux {a}: Poisson aux differs");
            } else {
                assert!(
                    (g - c).abs() <= 3e-5 * (1.0 + c.abs()),
                    "{label} toy {t} aux {a}: {g} vs CPU {c}"
                );
            }
        }
    }
}

#[test]
fn device_toys_equal_cpu_toys() {
    let Some(engine) = engine() else { return };
    for path in example_models() {
        let model = load(&path, None, Default::default());
        compare(&engine, &model, &path.display().to_string());
    }
    if let Some(dir) = workspaces_dir() {
        for name in [
            "complex_workspace.json",
            "simple_workspace.json",
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
