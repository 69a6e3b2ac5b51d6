//! Helpers shared by the integration tests.
#![allow(dead_code)]

use nextstat::{CompileOptions, InterpCodes, Model, Workspace};
use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The public pyhf workspaces: `$NEXTSTAT_WORKSPACES`, else `../shared/workspaces` beside the
/// checkout. `None` (with a printed reason) when neither exists, so a bare clone still runs
/// everything else.
pub fn workspaces_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("NEXTSTAT_WORKSPACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/workspaces"));
    if dir.join("complex_workspace.json").exists() {
        Some(dir)
    } else {
        eprintln!(
            "skipping shared-workspace checks: {} not found (set NEXTSTAT_WORKSPACES)",
            dir.display()
        );
        None
    }
}

/// Our own example models (always present).
pub fn example_models() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("examples/models"))
        .expect("examples/models exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    v.sort();
    v
}

/// Every model file the tests can see: examples plus the shared workspaces when present.
pub fn all_models() -> Vec<PathBuf> {
    let mut v = example_models();
    if let Some(d) = workspaces_dir() {
        let mut shared: Vec<PathBuf> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        shared.sort();
        v.extend(shared);
    }
    v
}

pub fn load(path: &Path, measurement: Option<&str>, interp: InterpCodes) -> Model {
    let ws = Workspace::from_path(path).unwrap();
    Model::from_workspace(
        &ws,
        &CompileOptions {
            measurement: measurement.map(str::to_string),
            interp,
        },
    )
    .unwrap()
}

/// A small deterministic generator for test points (splitmix64).
pub struct Rng(pub u64);
impl Rng {
    pub fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }
}

/// Random in-bounds points (systematics in [-2, 2], factors in [0.7, 1.4]); the first is the
/// inits.
pub fn random_points(model: &Model, n: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|k| {
            model
                .parameters
                .iter()
                .map(|p| {
                    if p.fixed || k == 0 {
                        p.init
                    } else if p.kind == nextstat::model::ParamKind::Systematic {
                        rng.uniform(-2.0, 2.0)
                    } else {
                        rng.uniform(p.bounds.0.max(0.7), p.bounds.1.min(1.4))
                    }
                })
                .collect()
        })
        .collect()
}

pub const ALL_CODES: [&str; 6] = [
    "normsys=code1,histosys=code0",
    "normsys=code1,histosys=code2",
    "normsys=code1,histosys=code4p",
    "normsys=code4,histosys=code0",
    "normsys=code4,histosys=code2",
    "normsys=code4,histosys=code4p",
];

/// The WGSL engine on the best adapter (named on stderr), or `None` with the reason where wgpu
/// finds no adapter; with NEXTSTAT_REQUIRE_WGPU=1 (set by .ci/run) that is a failure instead.
/// `what` names the tests that skip.
#[cfg(feature = "metal")]
pub fn wgpu_engine(what: &str) -> Option<nextstat::device::wgpu::WgpuEngine> {
    match nextstat::device::wgpu::WgpuEngine::new() {
        Ok(e) => {
            eprintln!(
                "wgpu adapter: {} ({}, {})",
                e.adapter.name, e.adapter.backend, e.adapter.device_type
            );
            Some(e)
        }
        Err(err) => {
            let required = std::env::var("NEXTSTAT_REQUIRE_WGPU").is_ok_and(|v| v == "1");
            assert!(!required, "NEXTSTAT_REQUIRE_WGPU=1 but: {err}");
            eprintln!("skipping {what}: {err}");
            None
        }
    }
}

/// examples/models/shapes.json and its best fit to the observed data (where the device
/// engines' joint-batch and dense-preconditioner tests draw their toys).
pub fn shapes_at_best_fit() -> (Model, Vec<f64>) {
    at_best_fit(&repo().join("examples/models/shapes.json"))
}

/// A workspace's model and its best fit to the observed data.
pub fn at_best_fit(path: &Path) -> (Model, Vec<f64>) {
    let model = load(path, None, Default::default());
    let best = nextstat::infer::Fitter::new(&model)
        .fit_free(&model.observed)
        .pars;
    (model, best)
}

/// The models the dense-preconditioner toy tests fit: our shapes example, and the shared
/// complex workspace where it is present (a third of its free fits end with the POI on its
/// bound).
pub fn dense_test_models() -> Vec<(Model, Vec<f64>)> {
    let mut out = vec![shapes_at_best_fit()];
    if let Some(dir) = workspaces_dir() {
        out.push(at_best_fit(&dir.join("complex_workspace.json")));
    }
    out
}

/// Both fits of 40 host-drawn toys generated at `best`, with the whole inverse Fisher
/// information at `best` as their initial inverse Hessian (as the toy commands run them on a
/// device engine): every free and conditional fit converges and reaches the CPU engine's
/// minimum of the same toy (twice the NLL, in f64 at the fitted point, within `tol`), in no
/// more iterations on average than with the diagonal preconditioner alone, and none in more
/// than twice the CPU fitter's most (plus 2): a fit whose POI stops on its bound must not
/// straggle (the held parameters' entries of the preconditioned direction are zeroed before
/// the recursion's second loop, as on the CPU).
#[cfg(any(feature = "metal", feature = "cuda"))]
pub fn assert_dense_toy_fits_match_cpu(
    session: &dyn nextstat::device::BatchSession,
    model: &Model,
    best: &[f64],
    tol: f64,
) {
    use nextstat::device::{DeviceToyEnsemble, GpuFit};
    use nextstat::infer::{FitOptions, Fitter};
    use nextstat::toys::ToyGenerator;
    let mut fitter = Fitter::new(model);
    let gen = ToyGenerator::new(model, best).unwrap();
    let h0 = fitter.inverse_fisher_diagonal(best).unwrap();
    let whole = nextstat::toys::hypotest::toy_inverse_fisher(&mut fitter, best).unwrap();
    let (seed, n, tested) = (5u64, 40u64, 1.0);
    let toys: Vec<nextstat::Dataset> = (0..n).map(|t| gen.generate(seed, 0, t)).collect();
    let opts = session.fit_options();
    let run = |dense: bool| {
        let ens = [DeviceToyEnsemble {
            gen: &gen,
            ensemble: 0,
            start: best,
            inverse_diagonal: &h0,
            host_toys: Some(&toys),
            dense: dense.then(|| [whole[0].as_slice(), whole[1].as_slice()]),
        }];
        session
            .fit_device_toy_ensembles(&ens, seed, 0, n, tested, &opts)
            .unwrap()
            .remove(0)
    };
    let (free, cond) = run(true);
    let (free_diag, cond_diag) = run(false);
    // the CPU engine's toy fitters, preconditioned the same way
    let mut cpu = nextstat::toys::hypotest::ToyFitters::at(model, best);
    let mut cond_start = best.to_vec();
    cond_start[model.poi] = tested;
    let mean = |v: &[GpuFit]| v.iter().map(|f| f.iterations as f64).sum::<f64>() / v.len() as f64;
    let mut ev = nextstat::Evaluator::new(model);
    let mut cpu_most = 0;
    for (t, toy) in toys.iter().enumerate() {
        let a = cpu.free.fit(
            toy,
            &FitOptions {
                init: Some(best.to_vec()),
                ..Default::default()
            },
        );
        let b = cpu
            .cond
            .fit_fixed_poi(toy, tested, Some(cond_start.clone()));
        cpu_most = cpu_most.max(a.iterations).max(b.iterations);
        for (kind, gpu, reference) in [("free", &free[t], &a), ("conditional", &cond[t], &b)] {
            assert!(gpu.status.converged(), "toy {t} {kind}: {:?}", gpu.status);
            let twice = 2.0 * ev.nll(&gpu.pars, toy).unwrap();
            assert!(
                (twice - reference.twice_nll()).abs() <= tol,
                "toy {t} {kind}: 2 NLL {twice} vs CPU {}",
                reference.twice_nll()
            );
        }
    }
    let most = free.iter().chain(&cond).map(|f| f.iterations).max();
    assert!(
        most.is_some_and(|m| m as usize <= 2 * cpu_most + 2),
        "a device fit took {most:?} iterations; the CPU's fits {cpu_most} at most"
    );
    assert!(
        mean(&free) + mean(&cond) <= mean(&free_diag) + mean(&cond_diag),
        "dense {} + {} iterations against diagonal {} + {}",
        mean(&free),
        mean(&cond),
        mean(&free_diag),
        mean(&cond_diag)
    );
}
