//! Toys drawn on the device (WGSL) against the CPU engine's toys for the same seed: main counts
//! and Poisson auxiliary data identical integers, Gaussian auxiliary data equal to f32 precision;
//! and the fits of several ensembles in one device batch equal to each ensemble's alone, with
//! their toys drawn on the device or on the host and uploaded.
#![cfg(feature = "metal")]
#![allow(clippy::needless_range_loop)]

mod common;
use common::*;
use nextstat::device::wgpu::WgpuEngine;
use nextstat::toys::ToyGenerator;
use nextstat::{Dataset, Model};

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

/// Both fits of every toy of two ensembles (different generating points, so different
/// preconditioners) in one device batch give, fit for fit and bit for bit, what each ensemble
/// gives alone: every fit reads its own toy row, start, held POI and box row.
#[test]
fn ensembles_in_one_batch_equal_each_alone() {
    use nextstat::device::{BatchSession, DeviceToyEnsemble};
    use nextstat::infer::Fitter;
    let Some(engine) = engine() else { return };
    let (model, best) = shapes_at_best_fit();
    let session = engine.session(&model).unwrap();
    let mut fitter = Fitter::new(&model);
    let mut other = best.clone();
    other[model.poi] = 0.0;
    let points = [best, other];
    let gens: Vec<ToyGenerator> = points
        .iter()
        .map(|p| ToyGenerator::new(&model, p).unwrap())
        .collect();
    let h0s: Vec<Vec<f64>> = points
        .iter()
        .map(|p| fitter.inverse_fisher_diagonal(p).unwrap())
        .collect();
    let opts = session.fit_options();
    let (seed, first, n, tested) = (7u64, 3u64, 40u64, 1.0);
    // the first ensemble's toys drawn on the host (the same integers as on the device)
    let host: Vec<_> = (first..first + n)
        .map(|t| gens[0].generate(seed, 0, t))
        .collect();
    // both ensembles, the first's toys uploaded from the host where asked
    let ensembles_with = |upload_first: bool| -> Vec<DeviceToyEnsemble> {
        (0..2)
            .map(|e| DeviceToyEnsemble {
                gen: &gens[e],
                ensemble: e as u32,
                start: &points[e],
                inverse_diagonal: &h0s[e],
                host_toys: (upload_first && e == 0).then_some(host.as_slice()),
                dense: None,
            })
            .collect()
    };
    let ensembles = ensembles_with(false);
    let together = session
        .fit_device_toy_ensembles(&ensembles, seed, first, n, tested, &opts)
        .unwrap();
    // the same batch with the first ensemble's toys uploaded from the host, the second's
    // drawn on the device
    let mixed = ensembles_with(true);
    let mixed = session
        .fit_device_toy_ensembles(&mixed, seed, first, n, tested, &opts)
        .unwrap();
    // Host toys are rounded to f32 on the host, device toys' Gaussian auxiliary data made in
    // f32 there: equal to f32 precision, not bit for bit. So the host ensemble's fits are
    // checked against separate batches of the same uploaded toys, the device one's against
    // its fits alone below.
    let refs: Vec<&Dataset> = host.iter().collect();
    let mut cond_start = points[0].clone();
    cond_start[model.poi] = tested;
    let mut cond_fixed = model.fixed();
    cond_fixed[model.poi] = true;
    let alone_free = session
        .fit_batch(
            &refs,
            &vec![points[0].as_slice(); refs.len()],
            &model.fixed(),
            &h0s[0],
            &opts,
        )
        .unwrap();
    let alone_cond = session
        .fit_batch(
            &refs,
            &vec![cond_start.as_slice(); refs.len()],
            &cond_fixed,
            &h0s[0],
            &opts,
        )
        .unwrap();
    for (kind, one, both) in [
        ("free", &alone_free, &mixed[0].0),
        ("conditional", &alone_cond, &mixed[0].1),
    ] {
        assert_eq!(both.len(), n as usize);
        for (t, (a, b)) in one.iter().zip(both).enumerate() {
            assert_eq!(
                (&a.pars, a.status, a.iterations),
                (&b.pars, b.status, b.iterations),
                "host toy {t}: the {kind} fit differs in the joint batch"
            );
        }
    }
    // too few host toys for the batch: an error, not a short or shifted batch
    let short = [DeviceToyEnsemble {
        host_toys: Some(&host[..5]),
        ..ensembles[0]
    }];
    assert!(session
        .fit_device_toy_ensembles(&short, seed, first, n, tested, &opts)
        .is_err());
    for (e, ens) in ensembles.iter().enumerate() {
        let (free, cond) = session
            .fit_device_toys(
                ens.gen,
                seed,
                ens.ensemble,
                first,
                n,
                ens.start,
                tested,
                ens.inverse_diagonal,
                &opts,
            )
            .unwrap();
        for (kind, one, both) in [
            ("free", &free, &together[e].0),
            ("conditional", &cond, &together[e].1),
        ] {
            assert_eq!(one.len(), n as usize);
            assert_eq!(both.len(), n as usize);
            for (t, (a, b)) in one.iter().zip(both).enumerate() {
                assert_eq!(
                    (&a.pars, a.status, a.iterations),
                    (&b.pars, b.status, b.iterations),
                    "ensemble {e} toy {t}: the {kind} fit differs in the joint batch"
                );
            }
        }
        if e == 1 {
            for (kind, one, both) in [
                ("free", &free, &mixed[1].0),
                ("conditional", &cond, &mixed[1].1),
            ] {
                for (t, (a, b)) in one.iter().zip(both).enumerate() {
                    assert_eq!(
                        (&a.pars, a.status, a.iterations),
                        (&b.pars, b.status, b.iterations),
                        "device ensemble toy {t}: the {kind} fit differs beside host toys"
                    );
                }
            }
        }
        for c in &cond {
            assert_eq!(
                c.pars[model.poi], tested,
                "ensemble {e}: the POI was not held"
            );
        }
    }
}

/// Toy fits with the whole inverse Fisher information as their initial inverse Hessian (as
/// `hypotest-toys --gpu metal` runs them) reach the CPU engine's minima (twice the NLL within
/// 1e-3, f32) in no more iterations than with the diagonal alone, none straggling (at most
/// twice the CPU's most iterations, plus 2): the shapes example, and the complex workspace.
#[test]
fn dense_preconditioned_toy_fits_match_cpu() {
    let Some(engine) = engine() else { return };
    for (model, best) in dense_test_models() {
        let session = engine.session(&model).unwrap();
        assert_dense_toy_fits_match_cpu(&session, &model, &best, 1e-3);
    }
}
