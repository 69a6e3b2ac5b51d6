//! The f64 CUDA engine against the CPU f64 engine (issue 6's parity bounds): NLL relative
//! 1e-12, gradient 1e-10, fits (POI, twice the NLL) within 1e-8, identical integer toys, and
//! toy test statistics within 1e-8; retired fits keep their own data; a session reused gives
//! identical results; work split over two device contexts equals one device's.
//!
//! Without a CUDA driver these tests print why and pass (CI); on the GPU machine
//! `NEXTSTAT_REQUIRE_CUDA=1` makes a missing driver a failure.
#![cfg(feature = "cuda")]
#![allow(clippy::needless_range_loop)]

mod common;
use common::*;
use nextstat::device::cuda::CudaEngine;
use nextstat::device::{BatchSession, GpuFitOptions};
use nextstat::infer::{Fitter, TestStat};
use nextstat::optim::LbfgsbOptions;
use nextstat::toys::{ToyGenerator, ToyOptions};
use nextstat::{Evaluator, Model};

fn engine(ordinals: &[usize]) -> Option<CudaEngine> {
    match CudaEngine::new(ordinals) {
        Ok(e) => {
            eprintln!("CUDA engine: {}", e.describe());
            Some(e)
        }
        Err(err) => {
            let required = std::env::var("NEXTSTAT_REQUIRE_CUDA").is_ok_and(|v| v == "1");
            assert!(!required, "NEXTSTAT_REQUIRE_CUDA=1 but: {err}");
            eprintln!("skipping CUDA engine tests: {err}");
            None
        }
    }
}

/// Our example models under every interpolation code, and the shared workspaces.
fn models() -> Vec<(String, Model)> {
    let mut out = Vec::new();
    for path in example_models() {
        for codes in ALL_CODES {
            let interp = codes.parse().unwrap();
            out.push((
                format!("{} {codes}", path.display()),
                load(&path, None, interp),
            ));
        }
    }
    if let Some(dir) = workspaces_dir() {
        for name in [
            "complex_workspace.json",
            "simple_workspace.json",
            "two_channel_workspace.json",
            "workspace_tHu.json",
        ] {
            if dir.join(name).exists() {
                out.push((
                    name.to_string(),
                    load(&dir.join(name), None, Default::default()),
                ));
            }
        }
    }
    out
}

/// The CUDA engine's NLL `v` and gradient `g` at `p` on `data` are the CPU engine's within
/// issue 6's bounds (NLL 1e-12 relative, gradient 1e-10).
fn assert_cpus_nll_grad(
    ev: &mut Evaluator,
    p: &[f64],
    data: &nextstat::Dataset,
    v: f64,
    g: &[f64],
    label: &str,
) {
    let mut cg = vec![0.0; p.len()];
    let cv = ev.nll_grad(p, data, &mut cg).unwrap();
    assert!(
        (v - cv).abs() <= 1e-12 * cv.abs(),
        "{label}: NLL {v} vs CPU {cv}"
    );
    for (i, (a, b)) in g.iter().zip(&cg).enumerate() {
        assert!(
            (a - b).abs() <= 1e-10 * b.abs().max(1.0),
            "{label}: grad[{i}] {a} vs CPU {b}"
        );
    }
}

#[test]
fn nll_and_grad_match_cpu() {
    let Some(engine) = engine(&[0]) else { return };
    for (label, model) in models() {
        let session = engine.session(&model).unwrap();
        let pts: Vec<Vec<f64>> = random_points(&model, 21, 5)
            .into_iter()
            .filter(|p| model.nll(p).is_ok())
            .collect();
        // small batches run on the latency kernel (one item alone in its launch, more from
        // mapped host memory), batches above 64 items on the throughput kernel: each point
        // alone, the points once, and four times over as one batch
        let once: Vec<&[f64]> = pts.iter().map(|p| p.as_slice()).collect();
        let four: Vec<&[f64]> = once.iter().cycle().take(4 * once.len()).copied().collect();
        assert!(
            four.len() > 64,
            "{label}: the large batch must exceed 64 items"
        );
        let alone: Vec<Vec<&[f64]>> = once.iter().map(|p| vec![*p]).collect();
        let mut ev = Evaluator::new(&model);
        for refs in alone.iter().chain([&once, &four]) {
            let data = vec![&model.observed; refs.len()];
            let gpu = session.nll_grad_batch(refs, &data).unwrap();
            for (p, (v, g)) in refs.iter().zip(&gpu) {
                assert_cpus_nll_grad(&mut ev, p, &model.observed, *v, g, &label);
            }
        }
    }
}

#[test]
fn toys_are_the_cpu_engines_toys() {
    let Some(engine) = engine(&[0]) else { return };
    for (label, model) in models() {
        let session = engine.session(&model).unwrap();
        let gen = ToyGenerator::new(&model, &model.init()).unwrap();
        // toy indices cross 2^32 to test the counter's carry
        let (seed, ensemble, first, n) = (0xDEC_2026u64 << 20, 1u32, (1u64 << 32) - 50, 120u32);
        let (_, toys) = session.sample_toys(&gen, seed, ensemble, first, n).unwrap();
        let (nb, na) = (model.n_bins(), model.observed.aux.len());
        let poisson: Vec<usize> = model
            .layout
            .poisson
            .iter()
            .map(|t| t.aux as usize)
            .collect();
        for t in 0..n as usize {
            let cpu = gen.generate(seed, ensemble, first + t as u64);
            let row = &toys[t * (nb + na)..(t + 1) * (nb + na)];
            assert_eq!(
                &row[..nb],
                &cpu.main[..],
                "{label} toy {t}: main counts differ"
            );
            for a in 0..na {
                let (g, c) = (row[nb + a], cpu.aux[a]);
                if poisson.contains(&a) {
                    assert_eq!(g, c, "{label} toy {t} aux {a}: Poisson aux differs");
                } else {
                    assert!(
                        (g - c).abs() <= 1e-12 * (1.0 + c.abs()),
                        "{label} toy {t} aux {a}: {g} vs CPU {c}"
                    );
                }
            }
        }
    }
}

/// Both fits to a projected gradient of 1e-10: twice the NLL within 1e-8, and the POI within
/// 1e-8, or, where the POI is poorly determined, within the floor that f64 rounding of the
/// NLL sets: a minimum found by comparing NLL values at rounding level (|NLL| eps) is located
/// only to sigma * sqrt(8 eps |NLL|) (multi.json's POI has sigma 16 and stops there).
///
/// On the default (smooth) interpolation codes: code0 and code1 have kinks at 0 where a
/// minimum can sit without a vanishing gradient, and no gradient tolerance is meaningful.
#[test]
fn fit_matches_cpu() {
    let Some(engine) = engine(&[0]) else { return };
    let pgtol = 1e-10;
    let smooth = models()
        .into_iter()
        .filter(|(label, _)| !label.contains("code0") && !label.contains("code1"));
    for (label, model) in smooth {
        let session = engine.session(&model).unwrap();
        let mut fitter = Fitter::with_options(
            &model,
            LbfgsbOptions {
                pgtol,
                ..Default::default()
            },
        );
        let cpu = fitter.fit(
            &model.observed,
            &nextstat::infer::FitOptions {
                uncertainties: true,
                ..Default::default()
            },
        );
        let sigma = cpu.uncertainties.as_ref().map_or(1.0, |u| u[model.poi]);
        let h0 = fitter.inverse_fisher_diagonal(&model.init()).unwrap();
        let init = model.init();
        let gpu = session
            .fit_batch(
                &[&model.observed],
                &[&init],
                &model.fixed(),
                &h0,
                &GpuFitOptions {
                    pgtol,
                    ..session.fit_options()
                },
            )
            .unwrap()
            .remove(0);
        assert!(gpu.status.converged(), "{label}: {:?}", gpu.status);
        let twice = 2.0 * model.nll(&gpu.pars).unwrap();
        assert!(
            (twice - cpu.twice_nll()).abs() <= 1e-8,
            "{label}: 2*NLL {twice} vs CPU {}",
            cpu.twice_nll()
        );
        let (a, b) = (gpu.pars[model.poi], cpu.pars[model.poi]);
        let floor = sigma * (8.0 * f64::EPSILON * cpu.nll.abs().max(1.0)).sqrt();
        assert!(
            (a - b).abs() <= floor.max(1e-8),
            "{label}: POI {a} vs CPU {b} (sigma {sigma}, {:?} after {} iterations)",
            gpu.status,
            gpu.iterations
        );
    }
}

/// Fits that finish at very different iterations, in one batch with fewer block slots than
/// fits (a finished fit's block takes the next one, reusing its slot's optimizer state and
/// scratch): every item's result is that of the same item fitted alone.
#[test]
fn retired_fits_keep_their_own_data() {
    let Some(engine) = engine(&[0]) else { return };
    let Some(dir) = workspaces_dir() else { return };
    let model = load(
        &dir.join("complex_workspace.json"),
        None,
        Default::default(),
    );
    let session = engine.session(&model).unwrap();
    let mut fitter = Fitter::new(&model);
    let best = fitter.fit_free(&model.observed);
    let gen = ToyGenerator::new(&model, &best.pars).unwrap();
    let toys: Vec<_> = (0..24).map(|t| gen.generate(3, 0, t)).collect();
    // starts: at the minimum (done at once), near it, and far away, shuffled over the toys
    let far: Vec<f64> = model
        .parameters
        .iter()
        .map(|p| {
            if p.fixed {
                p.init
            } else {
                (p.init + 1.5).min(p.bounds.1)
            }
        })
        .collect();
    let starts: Vec<Vec<f64>> = (0..toys.len())
        .map(|i| match i % 3 {
            0 => best.pars.clone(),
            1 => far.clone(),
            _ => model.init(),
        })
        .collect();
    let data: Vec<_> = toys.iter().collect();
    let refs: Vec<&[f64]> = starts.iter().map(|s| s.as_slice()).collect();
    let h0 = fitter.inverse_fisher_diagonal(&best.pars).unwrap();
    let opts = GpuFitOptions {
        max_blocks: 5,
        ..session.fit_options()
    };
    let batch = session
        .fit_batch(&data, &refs, &model.fixed(), &h0, &opts)
        .unwrap();
    let iterations: Vec<u32> = batch.iter().map(|f| f.iterations).collect();
    assert!(
        iterations.iter().max() > iterations.iter().min(),
        "the fits should finish at different iterations: {iterations:?}"
    );
    for i in 0..data.len() {
        let alone = session
            .fit_batch(&data[i..=i], &refs[i..=i], &model.fixed(), &h0, &opts)
            .unwrap()
            .remove(0);
        assert_eq!(
            batch[i].pars, alone.pars,
            "item {i}: batch and alone differ"
        );
        assert_eq!(batch[i].status, alone.status);
        let cpu = fitter.fit_free(data[i]);
        let (a, b) = (batch[i].pars[model.poi], cpu.pars[model.poi]);
        assert!((a - b).abs() <= 1e-6, "item {i}: POI {a} vs CPU {b}");
    }
}

/// Single evaluations go to a server kernel that stays on the device between calls and
/// leaves after 10 ms without work: the answers stay the CPU's when calls alternate between
/// datasets, when the server has left and comes back, when a batch of several items runs in
/// between, and when its session is dropped while it runs and another takes its place.
#[test]
fn single_item_server_answers_across_idling_batches_and_sessions() {
    let Some(engine) = engine(&[0]) else { return };
    let shapes = example_models()
        .into_iter()
        .find(|p| p.ends_with("shapes.json"))
        .unwrap();
    let mut cases = vec![(
        "shapes".to_string(),
        load(&shapes, None, Default::default()),
    )];
    if let Some(dir) = workspaces_dir() {
        cases.push((
            "tHu".into(),
            load(&dir.join("workspace_tHu.json"), None, Default::default()),
        ));
    }
    for (label, model) in &cases {
        let pts = random_points(model, 6, 13);
        let main2: Vec<f64> = model.observed.main.iter().map(|n| n + 1.0).collect();
        let other = nextstat::Dataset::new(model, main2, model.observed.aux.clone()).unwrap();
        let mut ev = Evaluator::new(model);
        let check = |session: &nextstat::device::cuda::CudaSession,
                     ev: &mut Evaluator,
                     p: &[f64],
                     d: &nextstat::Dataset,
                     what: &str| {
            let (v, g) = session.nll_grad_batch(&[p], &[d]).unwrap().remove(0);
            assert_cpus_nll_grad(ev, p, d, v, &g, &format!("{label}, {what}"));
        };
        let session = engine.session(model).unwrap();
        for (i, p) in pts.iter().enumerate() {
            let d = if i % 2 == 0 { &model.observed } else { &other };
            check(&session, &mut ev, p, d, "back to back");
        }
        std::thread::sleep(std::time::Duration::from_millis(40));
        check(&session, &mut ev, &pts[1], &other, "after the server left");
        let two: Vec<&[f64]> = pts[..2].iter().map(|p| p.as_slice()).collect();
        session
            .nll_grad_batch(&two, &[&model.observed, &other])
            .unwrap();
        check(&session, &mut ev, &pts[2], &model.observed, "after a batch");
        drop(session);
        let session = engine.session(model).unwrap();
        check(&session, &mut ev, &pts[3], &other, "in a new session");
    }
}

#[test]
fn session_reuse_gives_identical_results() {
    let Some(engine) = engine(&[0]) else { return };
    let Some(dir) = workspaces_dir() else { return };
    let model = load(&dir.join("workspace_tHu.json"), None, Default::default());
    let session = engine.session(&model).unwrap();
    let pts = random_points(&model, 8, 9);
    let refs: Vec<&[f64]> = pts.iter().map(|p| p.as_slice()).collect();
    let data = vec![&model.observed; pts.len()];
    let a = session.nll_grad_batch(&refs, &data).unwrap();
    let b = session.nll_grad_batch(&refs, &data).unwrap();
    assert_eq!(a, b);
}

/// Test statistics of toys fitted on the device (drawn there, or drawn on the host and
/// uploaded) equal the CPU engine's within 1e-8,
/// and the work split over two contexts of one device equals one context's, bit for bit.
#[test]
fn toy_test_statistics_match_cpu_and_split_over_devices() {
    let Some(one) = engine(&[0]) else { return };
    let Some(two) = engine(&[0, 0]) else { return };
    let Some(dir) = workspaces_dir() else { return };
    for name in ["complex_workspace.json", "workspace_tHu.json"] {
        let model = load(&dir.join(name), None, Default::default());
        let mu = 1.0;
        let base = nextstat::toys::baseline(&model, &model.observed, mu, TestStat::QTilde);
        let opts = ToyOptions {
            seed: 11,
            first_toy: 5,
            n_toys: 64,
            test_stat: TestStat::QTilde,
        };
        let cpu = nextstat::toys::run_ensembles(&model, &base, mu, &opts, &|| {}).unwrap();
        let s1 = one.session(&model).unwrap();
        // toys drawn on the device, and drawn on the host and uploaded
        for on_device in [true, false] {
            let gpu =
                nextstat::toys::gpu::run_ensembles_gpu(&model, &base, mu, &opts, &s1, on_device)
                    .unwrap();
            for (x, y) in cpu
                .signal_plus_background
                .iter()
                .chain(&cpu.background_only)
                .zip(
                    gpu.signal_plus_background
                        .iter()
                        .chain(&gpu.background_only),
                )
            {
                let (x, y) = (x.unwrap(), y.unwrap());
                assert!(
                    (x - y).abs() <= 1e-8 * x.abs().max(1.0),
                    "{name}: q {y} vs CPU {x} (toys drawn on the device: {on_device})"
                );
            }
        }
        // the split: device toys fitted on two contexts against one
        let gen = ToyGenerator::new(&model, &base.cond_mu.pars).unwrap();
        let h0 = Fitter::new(&model)
            .inverse_fisher_diagonal(&base.cond_mu.pars)
            .unwrap();
        let s2 = two.session(&model).unwrap();
        let fo = s1.fit_options();
        let run = |s: &dyn BatchSession| {
            s.fit_device_toys(&gen, 11, 0, 5, 33, &base.cond_mu.pars, mu, &h0, &fo)
                .unwrap()
        };
        let (f1, c1) = run(&s1);
        let (f2, c2) = run(&s2);
        for (a, b) in f1.iter().chain(&c1).zip(f2.iter().chain(&c2)) {
            assert_eq!(a.pars, b.pars, "{name}: split results differ");
        }
        // without keep_pars: the same fits, a converged one's parameters left on the device
        // but its NLL and POI read back, bit for bit
        let lean = nextstat::device::GpuFitOptions {
            keep_pars: false,
            ..fo
        };
        let (f3, c3) = s1
            .fit_device_toys(&gen, 11, 0, 5, 33, &base.cond_mu.pars, mu, &h0, &lean)
            .unwrap();
        for (a, b) in f1.iter().chain(&c1).zip(f3.iter().chain(&c3)) {
            assert_eq!(a.poi, a.pars[model.poi], "{name}: poi is not pars[poi]");
            assert_eq!((a.nll, a.poi, a.status), (b.nll, b.poi, b.status));
            let kept = if b.status.converged() {
                &[][..]
            } else {
                &a.pars[..]
            };
            assert_eq!(b.pars, kept, "{name}: parameters kept or dropped wrongly");
        }
    }
}

/// Toy fits with the whole inverse Fisher information as their initial inverse Hessian (as
/// `hypotest-toys --gpu cuda` runs them) reach the CPU engine's minima (twice the NLL within
/// 1e-8) in no more iterations than with the diagonal alone, none straggling (at most
/// twice the CPU's most iterations, plus 2): the shapes example, and the complex workspace.
#[test]
fn dense_preconditioned_toy_fits_match_cpu() {
    let Some(engine) = engine(&[0]) else { return };
    for (model, best) in dense_test_models() {
        let session = engine.session(&model).unwrap();
        assert_dense_toy_fits_match_cpu(&session, &model, &best, 1e-8);
    }
}
