//! Toy-based hypothesis tests (pyhf's `ToyCalculator`), parallel over toys.
//!
//! Phase A: three fits to the observed data (free; conditional at mu; conditional at the
//! background-only value, 0, or 1 for q0). Phase B: two ensembles of toys (signal plus
//! background, drawn at the conditional fit at mu; background only, drawn at the other), each
//! toy fitted twice to give its test statistic. p-values are the fractions of toys at or above
//! the observed test statistic; the expected band is pyhf's: CLs evaluated at every
//! background-only toy's test statistic, then its 2.3/15.9/50/84.1/97.7 percentiles.
//!
//! Toys are identified by (seed, ensemble, index) alone, so results do not depend on threads or
//! order, and a range of toys (`first_toy`, `n_toys`) is a shard that merges exactly.

use super::generate::ToyGenerator;
use crate::infer::mle::{FitOptions, FitResult, Fitter};
use crate::infer::TestStat;
use crate::model::{Dataset, Model};
use crate::Result;
use rayon::prelude::*;

/// Ensemble ids in the random streams.
pub const ENSEMBLE_SIGNAL_PLUS_BACKGROUND: u32 = 0;
pub const ENSEMBLE_BACKGROUND_ONLY: u32 = 1;

/// Settings of a toy-based test.
#[derive(Debug, Clone, Copy)]
pub struct ToyOptions {
    pub seed: u64,
    /// First toy index of this run (0 unless this is a shard).
    pub first_toy: u64,
    /// Toys per ensemble.
    pub n_toys: u64,
    pub test_stat: TestStat,
}

/// The observed side of a toy test: baseline fits and the observed test statistic.
#[derive(Debug, Clone)]
pub struct Baseline {
    pub free: FitResult,
    pub cond_mu: FitResult,
    pub cond_bkg: FitResult,
    pub q_obs: f64,
}

/// Test statistics of the two ensembles, `None` where a toy's fit did not converge.
#[derive(Debug, Clone, PartialEq)]
pub struct Ensembles {
    pub signal_plus_background: Vec<Option<f64>>,
    pub background_only: Vec<Option<f64>>,
}

/// p-values from toys.
#[derive(Debug, Clone, PartialEq)]
pub struct ToyPValues {
    pub cls: f64,
    pub clsb: f64,
    pub clb: f64,
    /// Binomial Monte Carlo uncertainties.
    pub cls_err: f64,
    pub clsb_err: f64,
    pub clb_err: f64,
    /// Expected CLs (p0 for q0) at -2, -1, 0, +1, +2 sigma.
    pub cls_exp: [f64; 5],
    /// Toys used (converged) per ensemble, and failures.
    pub n_sb: usize,
    pub n_b: usize,
    pub failed_sb: usize,
    pub failed_b: usize,
    /// Toys at or above the observed test statistic, per ensemble.
    pub pass_sb: usize,
    pub pass_b: usize,
    /// When no toy reaches the observed value: what the ensemble can resolve, e.g.
    /// "CLs < 0.0099 at this number of toys".
    pub resolution: Option<String>,
    /// The bound that sentence states (`cls < bound`), if any.
    pub cls_upper_bound: Option<f64>,
}

/// A whole toy-based test: the baseline fits, both ensembles and the p-values.
pub fn hypotest_toys(
    model: &Model,
    data: &Dataset,
    mu: f64,
    opts: &ToyOptions,
) -> Result<(Baseline, Ensembles, ToyPValues)> {
    let base = baseline(model, data, mu, opts.test_stat);
    let ens = run_ensembles(model, &base, mu, opts, &|| {})?;
    let p = pvalues(base.q_obs, &ens, opts.test_stat);
    Ok((base, ens, p))
}

/// Runs phase A. The three fits are independent and run in parallel.
pub fn baseline(model: &Model, data: &Dataset, mu: f64, test_stat: TestStat) -> Baseline {
    let tested = if test_stat == TestStat::Q0 { 0.0 } else { mu };
    let bkg = if test_stat == TestStat::Q0 { 1.0 } else { 0.0 };
    let (free, (cond_mu, cond_bkg)) = rayon::join(
        || Fitter::new(model).fit_free(data),
        || {
            rayon::join(
                || Fitter::new(model).fit_fixed_poi(data, tested, None),
                || Fitter::new(model).fit_fixed_poi(data, bkg, None),
            )
        },
    );
    let q_obs = test_statistic(model, &free, &cond_mu, mu, test_stat);
    Baseline {
        free,
        cond_mu,
        cond_bkg,
        q_obs,
    }
}

/// pyhf's test statistics from a free and a conditional fit.
pub fn test_statistic(
    model: &Model,
    free: &FitResult,
    cond: &FitResult,
    mu: f64,
    ts: TestStat,
) -> f64 {
    statistic_of(free.nll, cond.nll, free.pars[model.poi], mu, ts)
}

/// The test statistic from the free fit's NLL and POI (`muhat`) and the conditional fit's
/// NLL: what [`test_statistic`] needs of the two fits.
pub fn statistic_of(free_nll: f64, cond_nll: f64, muhat: f64, mu: f64, ts: TestStat) -> f64 {
    let t = (2.0 * (cond_nll - free_nll)).max(0.0);
    match ts {
        TestStat::Q0 if muhat < 0.0 => 0.0,
        TestStat::Q | TestStat::QTilde if muhat > mu => 0.0,
        _ => t,
    }
}

/// Phase B: the test statistic of every toy of both ensembles; `progress` is called once per
/// finished toy (from worker threads).
pub fn run_ensembles(
    model: &Model,
    base: &Baseline,
    mu: f64,
    opts: &ToyOptions,
    progress: &(dyn Fn() + Sync),
) -> Result<Ensembles> {
    let sb_gen = ToyGenerator::new(model, &base.cond_mu.pars)?;
    let b_gen = ToyGenerator::new(model, &base.cond_bkg.pars)?;
    let jobs: Vec<(u32, u64)> = [ENSEMBLE_SIGNAL_PLUS_BACKGROUND, ENSEMBLE_BACKGROUND_ONLY]
        .iter()
        .flat_map(|&e| (opts.first_toy..opts.first_toy + opts.n_toys).map(move |t| (e, t)))
        .collect();
    // One pair of fitters per ensemble, preconditioned once at its generating point (the
    // two ensembles side by side) and cloned by the workers: with the whole inverse Fisher
    // information a toy's fits take nearly Newton steps from their first iteration (tHu's
    // need about a quarter of the iterations).
    let (sb_proto, b_proto) = rayon::join(
        || ToyFitters::at(model, &sb_gen.gen_pars),
        || ToyFitters::at(model, &b_gen.gen_pars),
    );
    // Chunks of toys per worker task (four per thread, for balance), fitters cloned once per
    // chunk from one made per ensemble, and only for the ensembles the chunk holds (most
    // hold one): small ensembles still spread over every thread, and the clones (0.2 ms
    // each for tHu, as long as a toy's fits now) stay few.
    let chunk = (jobs.len() / (4 * rayon::current_num_threads())).max(1);
    let qs: Vec<Option<f64>> = jobs
        .par_chunks(chunk)
        .flat_map_iter(|part| {
            let (mut sb_fitters, mut b_fitters) = (None, None);
            part.iter()
                .map(|&(ensemble, toy)| {
                    let (gen, fitters) = if ensemble == ENSEMBLE_SIGNAL_PLUS_BACKGROUND {
                        (&sb_gen, sb_fitters.get_or_insert_with(|| sb_proto.clone()))
                    } else {
                        (&b_gen, b_fitters.get_or_insert_with(|| b_proto.clone()))
                    };
                    let data = gen.generate(opts.seed, ensemble, toy);
                    let q = toy_test_statistic(fitters, &data, mu, opts.test_stat, &gen.gen_pars);
                    progress();
                    q
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let n = opts.n_toys as usize;
    Ok(Ensembles {
        signal_plus_background: qs[..n].to_vec(),
        background_only: qs[n..].to_vec(),
    })
}

/// The fitters of one ensemble's toys: the free fit's and the conditional fit's, each
/// preconditioned for its own free parameters at the ensemble's generating point, where
/// every toy's fits start.
#[derive(Clone)]
pub struct ToyFitters<'m> {
    pub free: Fitter<'m>,
    pub cond: Fitter<'m>,
}

impl<'m> ToyFitters<'m> {
    /// Fitters preconditioned at `pars`: the inverse Fisher diagonal, and the whole inverse
    /// Fisher information over each fit's free parameters (one factorisation; the
    /// conditional fit's inverse derived from the free fit's by dropping the POI). Where the
    /// information is not positive definite the fitters keep the diagonal alone.
    pub fn at(model: &'m Model, pars: &[f64]) -> Self {
        let mut free = Fitter::new(model);
        let diagonal = free.inverse_fisher_diagonal(pars);
        let whole = toy_inverse_fisher(&mut free, pars);
        free.set_preconditioner(diagonal);
        free.set_dense_preconditioner(whole.as_ref().map(|w| w[0].as_slice()));
        let mut cond = free.clone();
        cond.set_dense_preconditioner(whole.as_ref().map(|w| w[1].as_slice()));
        ToyFitters { free, cond }
    }
}

/// The whole inverse Fisher information at `pars` over a toy's free fit's parameters and
/// over its conditional fit's (the POI held): one factorisation, the second derived from
/// the first by dropping the POI (its Schur complement). None where the information is not
/// positive definite.
pub fn toy_inverse_fisher(fitter: &mut Fitter, pars: &[f64]) -> Option<[Vec<f64>; 2]> {
    let model = fitter.model();
    let free = fitter.inverse_fisher_matrix(pars, &model.fixed())?;
    // a POI fixed in the model is held already
    let cond = if model.fixed()[model.poi] {
        free.clone()
    } else {
        crate::optim::inverse_without(&free, model.n_params(), model.poi)?
    };
    Some([free, cond])
}

/// The test statistic of one toy (fits started at the generating parameters); `None` when a
/// fit did not converge.
pub fn toy_test_statistic(
    fitters: &mut ToyFitters,
    data: &Dataset,
    mu: f64,
    ts: TestStat,
    start: &[f64],
) -> Option<f64> {
    let model = fitters.free.model();
    let free = fitters.free.fit(
        data,
        &FitOptions {
            init: Some(start.to_vec()),
            ..FitOptions::default()
        },
    );
    let tested = if ts == TestStat::Q0 { 0.0 } else { mu };
    let mut s = start.to_vec();
    s[model.poi] = tested;
    let cond = fitters.cond.fit_fixed_poi(data, tested, Some(s));
    if !(free.converged && cond.converged) {
        return None;
    }
    Some(test_statistic(model, &free, &cond, mu, ts))
}

/// numpy's `percentile` with linear interpolation, on sorted values.
fn percentile_sorted(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = p / 100.0 * (sorted.len() - 1) as f64;
    let lo = idx.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let frac = idx - lo as f64;
    sorted[lo] + frac * (sorted[hi] - sorted[lo])
}

/// Fraction of `sorted` at or above `t`.
fn tail(sorted: &[f64], t: f64) -> f64 {
    let below = sorted.partition_point(|&x| x < t);
    (sorted.len() - below) as f64 / sorted.len() as f64
}

/// p-values, uncertainties and the expected band from the ensembles.
pub fn pvalues(q_obs: f64, ens: &Ensembles, ts: TestStat) -> ToyPValues {
    let sorted = |v: &[Option<f64>]| {
        let mut s: Vec<f64> = v.iter().flatten().copied().collect();
        s.sort_by(f64::total_cmp);
        s
    };
    let sb = sorted(&ens.signal_plus_background);
    let b = sorted(&ens.background_only);
    let (n_sb, n_b) = (sb.len(), b.len());
    let clsb = tail(&sb, q_obs);
    let clb = tail(&b, q_obs);
    let pass_sb = (clsb * n_sb as f64).round() as usize;
    let pass_b = (clb * n_b as f64).round() as usize;
    let binom = |p: f64, n: usize| (p * (1.0 - p) / n as f64).sqrt();
    let (clsb_err, clb_err) = (binom(clsb, n_sb), binom(clb, n_b));
    let is_q0 = ts == TestStat::Q0;
    let cls = if is_q0 { clsb } else { clsb / clb };
    let cls_err = if is_q0 {
        clsb_err
    } else if clsb > 0.0 && clb > 0.0 {
        cls * ((clsb_err / clsb).powi(2) + (clb_err / clb).powi(2)).sqrt()
    } else {
        f64::NAN
    };
    // pyhf: the p-value at every background-only toy, then percentiles of those.
    let mut at_b: Vec<f64> = b
        .iter()
        .map(|&t| {
            let s = tail(&sb, t);
            if is_q0 {
                s
            } else {
                s / tail(&b, t)
            }
        })
        .collect();
    at_b.sort_by(f64::total_cmp);
    let mut cls_exp = [0.0; 5];
    for (k, p) in [2.27501319, 15.86552539, 50.0, 84.13447461, 97.72498681]
        .iter()
        .enumerate()
    {
        cls_exp[k] = percentile_sorted(&at_b, *p);
    }
    let (resolution, cls_upper_bound) = if n_sb == 0 || n_b == 0 {
        (
            Some("no converged toys in an ensemble: nothing can be said".to_string()),
            None,
        )
    } else if pass_b == 0 {
        (
            Some(format!(
                "no background-only toy reaches the observed test statistic: CLb < {:.3e} and CLs is undefined at this number of toys",
                1.0 / n_b as f64
            )),
            None,
        )
    } else if pass_sb == 0 {
        let bound = if is_q0 {
            1.0 / n_sb as f64
        } else {
            (1.0 / n_sb as f64) / clb
        };
        let label = if is_q0 { "p0" } else { "CLs" };
        (Some(format!("{label} < {bound:.3e} at this number of toys (no signal-plus-background toy reaches the observed test statistic)")), Some(bound))
    } else {
        (None, None)
    };
    ToyPValues {
        cls,
        clsb,
        clb,
        cls_err,
        clsb_err,
        clb_err,
        cls_exp,
        n_sb,
        n_b,
        failed_sb: ens.signal_plus_background.len() - n_sb,
        failed_b: ens.background_only.len() - n_b,
        pass_sb,
        pass_b,
        resolution,
        cls_upper_bound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile_sorted(&v, 50.0), 2.5);
        assert_eq!(percentile_sorted(&v, 0.0), 1.0);
        assert_eq!(percentile_sorted(&v, 100.0), 4.0);
        assert!((percentile_sorted(&v, 15.86552539) - 1.4759657617).abs() < 1e-9);
    }

    /// A free parameter the likelihood does not depend on (a normfactor on an empty sample)
    /// has a zero row in the Fisher information: the whole inverse still exists (unit
    /// curvature there), and the conditional one has the POI's row and column zero.
    #[test]
    fn whole_inverse_fisher_with_a_parameter_that_does_nothing() -> crate::Result<()> {
        let ws = serde_json::json!({
            "version": "1.0.0",
            "channels": [{"name": "c", "samples": [
                {"name": "s", "data": [3.0, 5.0], "modifiers": [
                    {"name": "mu", "type": "normfactor", "data": null}]},
                {"name": "b", "data": [10.0, 8.0], "modifiers": [
                    {"name": "bn", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}}]},
                {"name": "empty", "data": [0.0, 0.0], "modifiers": [
                    {"name": "idle", "type": "normfactor", "data": null}]}
            ]}],
            "observations": [{"name": "c", "data": [12.0, 14.0]}],
            "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}]
        });
        let ws = crate::Workspace::from_value(&ws)?;
        let model = Model::from_workspace(&ws, &Default::default())?;
        let n = model.n_params();
        let mut fitter = Fitter::new(&model);
        let Some([free, cond]) = toy_inverse_fisher(&mut fitter, &model.init()) else {
            panic!("no whole inverse");
        };
        let idle = model.param_index("idle")?;
        assert_eq!(free[idle * n + idle], 1.0);
        for i in 0..n {
            assert_eq!(cond[model.poi * n + i], 0.0);
            assert_eq!(cond[i * n + model.poi], 0.0);
            assert!(free[i * n + i] > 0.0);
        }
        Ok(())
    }

    #[test]
    fn pvalues_count_toys_at_or_above() {
        let ens = Ensembles {
            signal_plus_background: vec![Some(0.0), Some(1.0), Some(2.0), Some(3.0), None],
            background_only: vec![Some(0.0), Some(0.0), Some(0.5), Some(2.0)],
        };
        let p = pvalues(2.0, &ens, TestStat::QTilde);
        assert_eq!((p.clsb, p.clb), (0.5, 0.25));
        assert_eq!(p.cls, 2.0);
        assert_eq!((p.failed_sb, p.failed_b), (1, 0));
        let p = pvalues(5.0, &ens, TestStat::QTilde);
        assert!(p.resolution.is_some_and(|r| r.contains("CLb <")));
    }
}
