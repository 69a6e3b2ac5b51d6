//! Retirement of converged fits on the WGSL engine: each dispatch launches workgroups only for
//! the fits still running (a list of item indices compacted on the device), and every per-item
//! buffer (data, parameters, optimizer state, status, scratch) is addressed through the same
//! item index. A batch whose fits converge at very different iterations, with small dispatches
//! so that the list is compacted many times, must give every item exactly what it gets when
//! fitted alone, and the CPU engine's fit of that item's data.
#![cfg(feature = "metal")]

mod common;
use common::*;
use nextstat::device::wgpu::WgpuEngine;
use nextstat::device::BatchSession;
use nextstat::device::{GpuFit, GpuFitOptions, GpuFitStatus};
use nextstat::infer::Fitter;
use nextstat::toys::ToyGenerator;
use nextstat::{Dataset, Model};

fn engine() -> Option<WgpuEngine> {
    wgpu_engine("WGSL compaction tests")
}

/// The models: one of ours and, where present, the shared complex workspace.
fn models() -> Vec<(String, Model)> {
    let mut v = vec![(
        "shapes.json".to_string(),
        load(
            &repo().join("examples/models/shapes.json"),
            None,
            Default::default(),
        ),
    )];
    if let Some(dir) = workspaces_dir() {
        v.push((
            "complex_workspace.json".to_string(),
            load(
                &dir.join("complex_workspace.json"),
                None,
                Default::default(),
            ),
        ));
    }
    v
}

/// A batch of fits that finish at very different iterations: the observed data and toys,
/// each started at its own CPU minimum (done at once), at the inits, and far away (POI high,
/// nuisance parameters pushed out), in a shuffled order.
fn mixed_batch(model: &Model) -> (Vec<Dataset>, Vec<Vec<f64>>) {
    let mut fitter = Fitter::new(model);
    let free = fitter.fit_free(&model.observed);
    let gen = ToyGenerator::new(model, &free.pars).unwrap();
    let mut datasets = vec![model.observed.clone()];
    datasets.extend((0..3).map(|k| gen.generate(7, 0, k)));
    let bounds = model.bounds();
    let fixed = model.fixed();
    let far: Vec<f64> = model
        .init()
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let (lo, hi) = bounds[i];
            if fixed[i] {
                x
            } else if i == model.poi {
                lo + 0.4 * (hi - lo)
            } else {
                // halfway to a bound, alternating sides
                let edge = if i % 2 == 0 { hi } else { lo };
                let edge = if edge.is_finite() { edge } else { x + 1.0 };
                x + 0.3 * (edge - x)
            }
        })
        .collect();
    let mut items = Vec::new();
    for d in &datasets {
        let at_min = fitter.fit_free(d).pars;
        items.push((d.clone(), at_min));
        items.push((d.clone(), model.init()));
        items.push((d.clone(), far.clone()));
    }
    // a fixed shuffle, so that neighbours in the batch differ in data and in length
    let order = [7, 2, 10, 0, 5, 11, 3, 8, 1, 6, 9, 4];
    order
        .iter()
        .map(|&k| items[k].clone())
        .unzip::<_, _, Vec<_>, Vec<_>>()
}

fn opts() -> GpuFitOptions {
    GpuFitOptions {
        // short dispatches: many compactions
        iters_per_dispatch: 2,
        // every fit runs to its end on the device
        tail_divisor: 0,
        ..GpuFitOptions::f32()
    }
}

fn fit(
    session: &nextstat::device::wgpu::WgpuSession,
    model: &Model,
    data: &[Dataset],
    starts: &[Vec<f64>],
    h0: &[f64],
    opts: &GpuFitOptions,
) -> Vec<GpuFit> {
    let d: Vec<&Dataset> = data.iter().collect();
    let s: Vec<&[f64]> = starts.iter().map(|x| x.as_slice()).collect();
    session.fit_batch(&d, &s, &model.fixed(), h0, opts).unwrap()
}

/// Every item of a compacted batch gets bit for bit its fit alone, and the CPU engine's fit.
#[test]
fn retired_fits_keep_their_own_data() {
    let Some(engine) = engine() else { return };
    for (label, model) in models() {
        let session = engine.session(&model).unwrap();
        let (data, starts) = mixed_batch(&model);
        let n = data.len();
        let mut fitter = Fitter::new(&model);
        let h0 = fitter.inverse_fisher_diagonal(&model.init()).unwrap();
        let batch = fit(&session, &model, &data, &starts, &h0, &opts());
        let log = session.dispatch_log();
        eprintln!("{label}: workgroups per dispatch {log:?}");
        // the work shrinks as fits retire, over several compactions
        assert_eq!(
            log[0] as usize, n,
            "{label}: the first dispatch runs every fit"
        );
        assert!(log.windows(2).all(|w| w[1] <= w[0]), "{label}: {log:?}");
        let distinct = {
            let mut v = log.clone();
            v.dedup();
            v.len()
        };
        assert!(distinct >= 3, "{label}: too few compactions: {log:?}");
        assert!(*log.last().unwrap() < log[0], "{label}: {log:?}");
        let iters: Vec<u32> = batch.iter().map(|f| f.iterations).collect();
        let (lo, hi) = (iters.iter().min().unwrap(), iters.iter().max().unwrap());
        assert!(
            hi - lo >= 3 * opts().iters_per_dispatch,
            "{label}: fits should finish at different iterations: {iters:?}"
        );
        for k in 0..n {
            let alone = fit(
                &session,
                &model,
                &data[k..k + 1],
                &starts[k..k + 1],
                &h0,
                &opts(),
            )
            .remove(0);
            let b = &batch[k];
            assert_eq!(b.status, alone.status, "{label} item {k}");
            assert_eq!(b.iterations, alone.iterations, "{label} item {k}");
            for (x, y) in b.pars.iter().zip(&alone.pars) {
                assert!(
                    (x - y).abs() <= 1e-6,
                    "{label} item {k}: {x} in the batch, {y} alone"
                );
            }
            assert!(b.status.converged(), "{label} item {k}: {:?}", b.status);
            let cpu = fitter.fit_free(&data[k]);
            let nll = nextstat::Evaluator::new(&model)
                .nll(&b.pars, &data[k])
                .unwrap();
            assert!(
                (2.0 * nll - cpu.twice_nll()).abs() <= 1e-3,
                "{label} item {k}: 2NLL {} vs CPU {}",
                2.0 * nll,
                cpu.twice_nll()
            );
            assert!(
                (b.pars[model.poi] - cpu.pars[model.poi]).abs() <= 1e-3,
                "{label} item {k}: POI {} vs CPU {}",
                b.pars[model.poi],
                cpu.pars[model.poi]
            );
        }
    }
}

/// With a tail divisor the device stops once few fits are left: those come back unfinished
/// (for the CPU to complete), and the fits that did finish are still their own.
#[test]
fn straggling_tail_is_handed_back_after_compaction() {
    let Some(engine) = engine() else { return };
    let (label, model) = models().remove(0);
    let session = engine.session(&model).unwrap();
    let (data, starts) = mixed_batch(&model);
    let n = data.len();
    let h0 = Fitter::new(&model)
        .inverse_fisher_diagonal(&model.init())
        .unwrap();
    let tail_opts = GpuFitOptions {
        tail_divisor: 3,
        ..opts()
    };
    let full = fit(&session, &model, &data, &starts, &h0, &opts());
    let full_log = session.dispatch_log();
    let batch = fit(&session, &model, &data, &starts, &h0, &tail_opts);
    let log = session.dispatch_log();
    let unfinished = batch
        .iter()
        .filter(|f| f.status == GpuFitStatus::Unfinished)
        .count();
    eprintln!("{label}: {log:?} ({unfinished} handed back) against {full_log:?}");
    assert!(unfinished <= n / 3, "{label}: {unfinished} unfinished");
    assert!(log.len() <= full_log.len());
    if unfinished > 0 {
        assert!(log.len() < full_log.len(), "{label}: stopped early");
    }
    for (k, (b, f)) in batch.iter().zip(&full).enumerate() {
        if b.status != GpuFitStatus::Unfinished {
            assert_eq!(b.status, f.status, "item {k}");
            assert_eq!(b.pars, f.pars, "item {k}");
        }
    }
}
