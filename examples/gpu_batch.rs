//! Times a GPU engine's batch work against the CPU engine on one model:
//! `cargo run --release --features cuda --example gpu_batch -- WORKSPACE.json [ENGINE] [nll]`
//! (ENGINE as `--gpu` takes it: metal, cuda, cuda:0,1; default auto; `nll`: the batch NLL +
//! gradient only).
//!
//! Batch NLL + gradient for B items (the model uploaded once, a session; timings exclude
//! that, after a warm-up), and the device toy fits of `hypotest-toys --gpu-sample-toys` (free
//! and conditional fits of N toys drawn on the device). Medians of 5 repeats (201 for the
//! single-item latency).

use nextstat::device::{DeviceRequest, Engine};
use nextstat::infer::Fitter;
use nextstat::toys::ToyGenerator;
use nextstat::{Dataset, Model};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time<T>(repeats: usize, mut f: impl FnMut() -> nextstat::Result<T>) -> nextstat::Result<f64> {
    f()?;
    let mut v = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed().as_secs_f64());
    }
    Ok(median(v))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: gpu_batch WORKSPACE.json [ENGINE]")?;
    let request: DeviceRequest = args.next().as_deref().unwrap_or("auto").parse()?;
    let nll_only = match args.next().as_deref() {
        None => false,
        Some("nll") => true,
        Some(other) => return Err(format!("unknown argument '{other}' (expected nll)").into()),
    };
    let model = Model::from_path(&path)?;
    let engine = Engine::open(request, &mut |n| eprintln!("{n}"))?.ok_or("no GPU engine")?;
    println!(
        "{path}: {} parameters; engine {}",
        model.n_params(),
        engine.describe()
    );
    let t = Instant::now();
    let session = engine.session(&model)?;
    println!(
        "session (upload): {:.3} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
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
        let repeats = if b == 1 { 201 } else { 5 };
        let gpu = time(repeats, || session.nll_grad_batch(&refs, &data))?;
        let items: Vec<(&[f64], &Dataset)> =
            refs.iter().zip(&data).map(|(p, d)| (*p, *d)).collect();
        let cpu = time(5, || Ok(model.nll_grad_batch(&items)))?;
        println!(
            "nll+grad B = {b:>6}: gpu {:>10.3} ms ({:>8.3} us/item)   cpu rayon {:>10.3} ms ({:>8.3} us/item)",
            gpu * 1e3,
            gpu * 1e6 / b as f64,
            cpu * 1e3,
            cpu * 1e6 / b as f64
        );
    }
    if nll_only {
        return Ok(());
    }
    let grid: Vec<f64> = (0..21).map(|i| 0.25 * i as f64).collect();
    let scan = time(5, || {
        nextstat::infer::gpu::profile_scan_gpu(&model, &model.observed, &grid, &*session)
    })?;
    let scan_cpu = time(3, || {
        Ok(nextstat::infer::profile_scan(
            &model,
            &model.observed,
            &grid,
        ))
    })?;
    println!(
        "profile scan, 21 points 0..5: gpu {:.3} ms, cpu {:.3} ms",
        scan * 1e3,
        scan_cpu * 1e3
    );
    let mut fitter = Fitter::new(&model);
    let best = fitter.fit_free(&model.observed);
    let gen = ToyGenerator::new(&model, &best.pars)?;
    let h0 = fitter
        .inverse_fisher_diagonal(&best.pars)
        .ok_or("non-positive rate at the best fit")?;
    for memory in [10u32] {
        let opts = nextstat::device::GpuFitOptions {
            memory,
            ..session.fit_options()
        };
        println!("L-BFGS memory {memory}");
        for n in [100u64, 1000, 10000] {
            let mut last = None;
            let dt = time(3, || {
                let r = session.fit_device_toys(&gen, 1, 0, 0, n, &best.pars, 1.0, &h0, &opts)?;
                last = Some(r);
                Ok(())
            })?;
            let (free, cond) = last.ok_or("no result")?;
            let bad = free
                .iter()
                .chain(&cond)
                .filter(|f| !f.status.converged())
                .count();
            let iters: u32 = free.iter().chain(&cond).map(|f| f.iterations).sum();
            println!(
            "device toys N = {n:>6} (2N fits): {:>9.3} ms ({:>7.2} us/fit), {bad} not converged, mean {:.1} iterations",
            dt * 1e3,
            dt * 1e6 / (2 * n) as f64,
            iters as f64 / (2 * n) as f64
        );
        }
    }
    Ok(())
}
