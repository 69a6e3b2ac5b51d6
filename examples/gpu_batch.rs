//! Times batch NLL + gradient on the WGSL engine against the CPU engine (rayon over items):
//! `cargo run --release --example gpu_batch -- WORKSPACE.json`
//!
//! Each batch evaluates B (parameter vector, dataset) items; the model is uploaded once (a
//! session) and timings exclude that, after a warm-up. Medians of 5 repeats.

use nextstat::device::wgpu::WgpuEngine;
use nextstat::{Dataset, Model};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: gpu_batch WORKSPACE.json")?;
    let model = Model::from_path(&path)?;
    let engine = WgpuEngine::new()?;
    println!(
        "{path}: {} parameters; adapter {} ({})",
        model.n_params(),
        engine.adapter.name,
        engine.adapter.backend
    );
    let session = engine.session(&model)?;
    for b in [1usize, 100, 1000, 10000] {
        let pars: Vec<Vec<f64>> = (0..b)
            .map(|i| {
                let mut p = model.init();
                p[model.poi] += 1e-3 * i as f64;
                p
            })
            .collect();
        let refs: Vec<&[f64]> = pars.iter().map(|p| p.as_slice()).collect();
        let data: Vec<&Dataset> = pars.iter().map(|_| &model.observed).collect();
        session.nll_grad_batch(&refs, &data)?;
        let gpu = median(
            (0..5)
                .map(|_| {
                    let t = Instant::now();
                    session
                        .nll_grad_batch(&refs, &data)
                        .map(|_| t.elapsed().as_secs_f64())
                        .unwrap_or(f64::NAN)
                })
                .collect(),
        );
        let items: Vec<(&[f64], &Dataset)> =
            refs.iter().zip(&data).map(|(p, d)| (*p, *d)).collect();
        let cpu = median(
            (0..5)
                .map(|_| {
                    let t = Instant::now();
                    let _ = model.nll_grad_batch(&items);
                    t.elapsed().as_secs_f64()
                })
                .collect(),
        );
        println!(
            "B = {b:>6}: wgsl {:>10.3} ms ({:>8.3} us/item)   cpu rayon {:>10.3} ms ({:>8.3} us/item)",
            gpu * 1e3,
            gpu * 1e6 / b as f64,
            cpu * 1e3,
            cpu * 1e6 / b as f64
        );
    }
    Ok(())
}
