//! Toy-based CLs: agreement with asymptotics at large counts, failures counted, independence
//! from the thread count.

mod common;
use nextstat::infer::{hypotest, TestStat};
use nextstat::toys::{self, ToyGenerator, ToyOptions};
use nextstat::{CompileOptions, Model, Workspace};

const LARGE_COUNTS: &str = r#"{
  "channels": [{"name": "SR", "samples": [
    {"name": "signal", "data": [40.0, 60.0, 30.0],
     "modifiers": [{"name": "mu", "type": "normfactor", "data": null}]},
    {"name": "background", "data": [1000.0, 900.0, 400.0],
     "modifiers": [{"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.03, "lo": 0.97}},
                   {"name": "stat", "type": "staterror", "data": [10.0, 9.0, 6.0]}]}]}],
  "observations": [{"name": "SR", "data": [1000.0, 900.0, 400.0]}],
  "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
  "version": "1.0.0"
}"#;

fn model(json: &str) -> Model {
    Model::from_workspace(
        &Workspace::from_json_str(json).unwrap(),
        &CompileOptions::default(),
    )
    .unwrap()
}

fn toy_cls(m: &Model, mu: f64, n: u64, seed: u64) -> toys::ToyPValues {
    let base = toys::baseline(m, &m.observed, mu, TestStat::QTilde);
    let opts = ToyOptions {
        seed,
        first_toy: 0,
        n_toys: n,
        test_stat: TestStat::QTilde,
    };
    let ens = toys::run_ensembles(m, &base, mu, &opts, &|| {}).unwrap();
    toys::pvalues(base.q_obs, &ens, TestStat::QTilde)
}

#[test]
fn toys_agree_with_asymptotics_at_large_counts() {
    let m = model(LARGE_COUNTS);
    for (k, mu) in [0.7, 1.0, 1.5].into_iter().enumerate() {
        let asym = hypotest(&m, &m.observed, mu, TestStat::QTilde).cls_obs;
        let p = toy_cls(&m, mu, 3000, 11 + k as u64);
        assert_eq!(p.failed_sb + p.failed_b, 0);
        let pull = (p.cls - asym) / p.cls_err;
        eprintln!(
            "mu {mu}: toys {:.4} +- {:.4}, asymptotic {:.4} (pull {pull:+.2})",
            p.cls, p.cls_err, asym
        );
        assert!(
            pull.abs() < 3.0,
            "mu {mu}: toys {} +- {} vs asymptotic {asym}",
            p.cls,
            p.cls_err
        );
    }
}

/// q0 on a signal-only bin: the fit at mu = 0 of any toy with events is undefined, so those
/// toys fail; they are counted, and the rest are used. (For q0, as in pyhf, the ensemble
/// called background-only is drawn at mu = 1 and the other at mu = 0.)
#[test]
fn failed_fits_are_counted_not_dropped() {
    let json = r#"{"channels": [{"name": "SR", "samples": [{"name": "signal", "data": [0.7],
        "modifiers": [{"name": "mu", "type": "normfactor", "data": null}]}]}],
      "observations": [{"name": "SR", "data": [0.0]}],
      "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}], "version": "1.0.0"}"#;
    let m = model(json);
    let base = toys::baseline(&m, &m.observed, 0.0, TestStat::Q0);
    let n = 400;
    let opts = ToyOptions {
        seed: 5,
        first_toy: 0,
        n_toys: n,
        test_stat: TestStat::Q0,
    };
    let ens = toys::run_ensembles(&m, &base, 0.0, &opts, &|| {}).unwrap();
    let p = toys::pvalues(base.q_obs, &ens, TestStat::Q0);
    // Independently: which toys have events.
    let gen = ToyGenerator::new(&m, &base.cond_bkg.pars).unwrap();
    let mut counts = [0u32];
    let with_events = (0..n)
        .filter(|&t| {
            gen.main_counts(5, toys::hypotest::ENSEMBLE_BACKGROUND_ONLY, t, &mut counts);
            counts[0] > 0
        })
        .count();
    assert!(with_events > 50 && with_events < 350, "{with_events}");
    assert_eq!(p.failed_b, with_events);
    assert_eq!(p.n_b + p.failed_b, n as usize);
    assert_eq!(
        p.failed_sb, 0,
        "toys drawn at mu = 0 have no events and fit fine"
    );
}

#[test]
fn results_do_not_depend_on_threads() {
    let m = model(LARGE_COUNTS);
    let base = toys::baseline(&m, &m.observed, 1.0, TestStat::QTilde);
    let opts = ToyOptions {
        seed: 3,
        first_toy: 0,
        n_toys: 64,
        test_stat: TestStat::QTilde,
    };
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| toys::run_ensembles(&m, &base, 1.0, &opts, &|| {}).unwrap())
    };
    assert_eq!(run(1), run(2));
    // a shard is the same toys
    let shard = ToyOptions {
        first_toy: 16,
        n_toys: 16,
        ..opts
    };
    let part = toys::run_ensembles(&m, &base, 1.0, &shard, &|| {}).unwrap();
    let whole = run(2);
    assert_eq!(
        part.signal_plus_background[..],
        whole.signal_plus_background[16..32]
    );
    assert_eq!(part.background_only[..], whole.background_only[16..32]);
}

/// The batch-fit entry point fits generated toys like one-at-a-time fits, and the one-call toy
/// test agrees with its phases run separately.
#[test]
fn batch_fits_and_one_call_test() {
    let m = model(LARGE_COUNTS);
    let gen = ToyGenerator::new(&m, &m.init()).unwrap();
    let toys: Vec<_> = (0..8).map(|t| gen.generate(9, 0, t)).collect();
    let batch = nextstat::infer::fit_batch(&m, &toys, None, &[]);
    let mut fitter = nextstat::infer::Fitter::new(&m);
    for (d, b) in toys.iter().zip(&batch) {
        let one = fitter.fit_free(d);
        assert!(b.converged && (b.nll - one.nll).abs() < 1e-9);
    }
    let opts = ToyOptions {
        seed: 4,
        first_toy: 0,
        n_toys: 50,
        test_stat: TestStat::QTilde,
    };
    let (_, _, p) = toys::hypotest_toys(&m, &m.observed, 1.0, &opts).unwrap();
    assert_eq!(p, toy_cls(&m, 1.0, 50, 4));
}
