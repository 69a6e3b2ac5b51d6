//! Upper limits on the POI by the CLs method: the POI value where CLs falls to `alpha`, for the
//! observed CLs and each of the five expected CLs curves, found by bracketing on a grid and then
//! Brent's method (the same answer as pyhf's `upper_limit` with `scan=None`, to the tolerance).

use super::asymptotics::{AsymptoticCalculator, HypotestResult, TestStat};
use crate::model::{Dataset, Model};
use crate::{Error, Result};

/// Observed and expected upper limits.
#[derive(Debug, Clone)]
pub struct UpperLimit {
    pub alpha: f64,
    pub obs: f64,
    /// Expected limits at -2, -1, 0, +1, +2 sigma.
    pub exp: [f64; 5],
    /// Every hypothesis test evaluated on the way (for a Brazil-band plot), sorted by POI.
    pub tests: Vec<HypotestResult>,
    /// True when every fit behind the limits converged.
    pub converged: bool,
}

/// The CLs upper limits at level `alpha` (0.05 for 95% CL) with the asymptotic calculator.
pub fn upper_limit(
    model: &Model,
    data: &Dataset,
    alpha: f64,
    test_stat: TestStat,
) -> Result<UpperLimit> {
    check_test_stat(test_stat)?;
    let mut calc = AsymptoticCalculator::new(model, data, test_stat);
    upper_limit_with(model, alpha, false, |mus| {
        Ok(mus.iter().map(|&mu| calc.hypotest(mu)).collect())
    })
}

/// Upper limits use `qtilde` or `q`; checked before any fit.
pub fn check_test_stat(test_stat: TestStat) -> Result<()> {
    if test_stat == TestStat::Q0 {
        return Err(Error::Usage("upper limits use qtilde or q, not q0".into()));
    }
    Ok(())
}

/// The grid the limits are bracketed on: from near the POI's lower bound (or 0) to its upper
/// bound, in steps growing geometrically (fine where CLs falls fast, coarse above).
fn bracket_grid(model: &Model) -> Vec<f64> {
    let (lo, hi) = model.parameters[model.poi].bounds;
    let start = lo.max(0.0);
    let span = hi - start;
    let mut grid = vec![];
    let mut step = span / 512.0;
    let mut mu = start + step;
    while mu < hi {
        grid.push(mu);
        step *= 1.6;
        mu += step;
    }
    grid.push(hi);
    grid
}

/// The limit search, whatever runs the fits: `tests(mus)` returns the hypothesis tests at
/// several POI values, one per value, so that an engine can fit them as one batch. The six
/// curves (observed and five expected) are bracketed on a grid, then their roots found by
/// Brent's method in lockstep, each step asking for up to six tests at once; the answers are
/// those of a search one test at a time (each curve's sequence of points is the same).
///
/// With `batch_grid` the whole grid is asked for in one call; the tests past the point where
/// every curve is bracketed are then dropped, so the result is the same as without, where the
/// grid is walked one point at a time and stops there.
pub fn upper_limit_with(
    model: &Model,
    alpha: f64,
    batch_grid: bool,
    mut tests: impl FnMut(&[f64]) -> Result<Vec<HypotestResult>>,
) -> Result<UpperLimit> {
    let (lo, hi) = model.parameters[model.poi].bounds;
    let start = lo.max(0.0);
    let mut ask = |mus: &[f64]| -> Result<Vec<HypotestResult>> {
        let r = tests(mus)?;
        if r.len() != mus.len() {
            return Err(Error::Length {
                what: "hypothesis tests".into(),
                expected: mus.len(),
                got: r.len(),
            });
        }
        Ok(r)
    };
    let curves = |r: &HypotestResult| -> [f64; 6] {
        [
            r.cls_obs,
            r.cls_exp[0],
            r.cls_exp[1],
            r.cls_exp[2],
            r.cls_exp[3],
            r.cls_exp[4],
        ]
    };
    let grid = bracket_grid(model);
    let mut prefetched = if batch_grid {
        ask(&grid)?.into_iter()
    } else {
        Vec::new().into_iter()
    };
    let mut done: Vec<HypotestResult> = Vec::new();
    let mut prev: Option<(f64, [f64; 6])> = None;
    let mut brackets: [Option<(f64, f64, f64, f64)>; 6] = [None; 6];
    for &mu in &grid {
        let r = match prefetched.next() {
            Some(r) => r,
            None => ask(&[mu])?.remove(0),
        };
        let v = curves(&r);
        done.push(r);
        if let Some((pmu, pv)) = prev {
            for c in 0..6 {
                if brackets[c].is_none() && pv[c] - alpha > 0.0 && v[c] - alpha <= 0.0 {
                    brackets[c] = Some((pmu, pv[c] - alpha, mu, v[c] - alpha));
                }
            }
        } else {
            for c in 0..6 {
                if v[c] <= alpha {
                    brackets[c] = Some((start, 1.0 - alpha, mu, v[c] - alpha));
                }
            }
        }
        if brackets.iter().all(Option::is_some) {
            break;
        }
        prev = Some((mu, v));
    }
    let mut solvers = Vec::with_capacity(6);
    for (c, bracket) in brackets.iter().enumerate() {
        let (a, fa, b, fb) = bracket.ok_or_else(|| {
            Error::Usage(format!(
                "CLs does not fall below {alpha} inside the POI's bounds [{lo}, {hi}] for the {} limit; widen the POI's bounds in the measurement",
                if c == 0 { "observed".to_string() } else { format!("expected {:+} sigma", c as i32 - 3) }
            ))
        })?;
        solvers.push(Brent::new(a, fa, b, fb, 1e-7 * b.abs().max(1e-3)));
    }
    loop {
        let asked: Vec<(usize, f64)> = solvers
            .iter_mut()
            .enumerate()
            .filter_map(|(c, s)| s.ask().map(|mu| (c, mu)))
            .collect();
        if asked.is_empty() {
            break;
        }
        let mus: Vec<f64> = asked.iter().map(|&(_, mu)| mu).collect();
        for (&(c, _), r) in asked.iter().zip(ask(&mus)?) {
            solvers[c].tell(curves(&r)[c] - alpha);
            done.push(r);
        }
    }
    let mut tests = done;
    tests.sort_by(|x, y| x.mu.total_cmp(&y.mu));
    let converged = tests.iter().all(|t| t.converged);
    let l: Vec<f64> = solvers.iter().map(Brent::root).collect();
    Ok(UpperLimit {
        alpha,
        obs: l[0],
        exp: [l[1], l[2], l[3], l[4], l[5]],
        tests,
        converged,
    })
}

/// Brent's root finder on a bracket `[a, b]` with `f(a) = fa`, `f(b) = fb` of opposite signs.
pub fn brent(a: f64, fa: f64, b: f64, fb: f64, xtol: f64, mut f: impl FnMut(f64) -> f64) -> f64 {
    let mut s = Brent::new(a, fa, b, fb, xtol);
    while let Some(x) = s.ask() {
        s.tell(f(x));
    }
    s.root()
}

/// Brent's method as a state machine, asked for one point at a time and told its value: so
/// that several root searches can advance in lockstep, their function values computed as one
/// batch (the upper limits' six curves on a GPU engine).
#[derive(Debug, Clone)]
pub struct Brent {
    a: f64,
    fa: f64,
    b: f64,
    fb: f64,
    c: f64,
    fc: f64,
    d: f64,
    mflag: bool,
    xtol: f64,
    steps: u32,
    pending: Option<f64>,
}

impl Brent {
    /// At most this many evaluations.
    const MAX_STEPS: u32 = 200;

    /// A search on `[a, b]` with `f(a) = fa`, `f(b) = fb` of opposite signs, to `xtol`.
    pub fn new(mut a: f64, mut fa: f64, mut b: f64, mut fb: f64, xtol: f64) -> Self {
        if fa.abs() < fb.abs() {
            std::mem::swap(&mut a, &mut b);
            std::mem::swap(&mut fa, &mut fb);
        }
        Brent {
            a,
            fa,
            b,
            fb,
            c: a,
            fc: fa,
            d: 0.0,
            mflag: true,
            xtol,
            steps: 0,
            pending: None,
        }
    }

    /// The next point to evaluate, or `None` when the search is done (see [`Brent::root`]).
    /// Asking again before [`Brent::tell`] gives the same point.
    pub fn ask(&mut self) -> Option<f64> {
        if let Some(s) = self.pending {
            return Some(s);
        }
        let (a, fa, b, fb, c, fc, d) = (self.a, self.fa, self.b, self.fb, self.c, self.fc, self.d);
        let xtol = self.xtol;
        if self.steps >= Self::MAX_STEPS || fb == 0.0 || (b - a).abs() < xtol {
            return None;
        }
        let mut s = if fa != fc && fb != fc {
            a * fb * fc / ((fa - fb) * (fa - fc))
                + b * fa * fc / ((fb - fa) * (fb - fc))
                + c * fa * fb / ((fc - fa) * (fc - fb))
        } else {
            b - fb * (b - a) / (fb - fa)
        };
        let q = (3.0 * a + b) / 4.0;
        let outside = !((s > q.min(b)) && (s < q.max(b)));
        let mflag = self.mflag;
        if outside
            || (mflag && (s - b).abs() >= (b - c).abs() / 2.0)
            || (!mflag && (s - b).abs() >= (c - d).abs() / 2.0)
            || (mflag && (b - c).abs() < xtol)
            || (!mflag && (c - d).abs() < xtol)
        {
            s = 0.5 * (a + b);
            self.mflag = true;
        } else {
            self.mflag = false;
        }
        self.pending = Some(s);
        Some(s)
    }

    /// The function's value at the point last asked for.
    pub fn tell(&mut self, fs: f64) {
        let Some(s) = self.pending.take() else { return };
        self.steps += 1;
        self.d = self.c;
        self.c = self.b;
        self.fc = self.fb;
        if self.fa * fs < 0.0 {
            self.b = s;
            self.fb = fs;
        } else {
            self.a = s;
            self.fa = fs;
        }
        if self.fa.abs() < self.fb.abs() {
            std::mem::swap(&mut self.a, &mut self.b);
            std::mem::swap(&mut self.fa, &mut self.fb);
        }
    }

    /// The best estimate of the root so far.
    pub fn root(&self) -> f64 {
        self.b
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn brent_finds_roots() {
        let r = super::brent(0.0, -2.0, 2.0, 2.0, 1e-12, |x| x * x - 2.0);
        assert!((r - 2f64.sqrt()).abs() < 1e-10);
        let r = super::brent(0.1, 0.1f64.ln() + 1.0, 3.0, 3f64.ln() + 1.0, 1e-12, |x| {
            x.ln() + 1.0
        });
        assert!((r - (-1f64).exp()).abs() < 1e-10);
    }

    /// Two searches advanced in lockstep visit the points each visits alone.
    #[test]
    fn brent_in_lockstep_is_brent_alone() {
        let f = |x: f64| x * x * x - 2.0;
        let g = |x: f64| (x - 0.3).tanh();
        let alone = |h: &dyn Fn(f64) -> f64, a: f64, b: f64| {
            let mut seen = Vec::new();
            let r = super::brent(a, h(a), b, h(b), 1e-9, |x| {
                seen.push(x);
                h(x)
            });
            (r, seen)
        };
        let (rf, sf) = alone(&f, 0.0, 3.0);
        let (rg, sg) = alone(&g, -1.0, 2.0);
        let mut s = [
            super::Brent::new(0.0, f(0.0), 3.0, f(3.0), 1e-9),
            super::Brent::new(-1.0, g(-1.0), 2.0, g(2.0), 1e-9),
        ];
        let (mut tf, mut tg) = (Vec::new(), Vec::new());
        loop {
            let (a, b) = (s[0].ask(), s[1].ask());
            if a.is_none() && b.is_none() {
                break;
            }
            // asking again before telling gives the same point
            assert_eq!(s[0].ask(), a);
            if let Some(x) = a {
                tf.push(x);
                s[0].tell(f(x));
            }
            if let Some(x) = b {
                tg.push(x);
                s[1].tell(g(x));
            }
        }
        assert_eq!((s[0].root(), s[1].root()), (rf, rg));
        assert_eq!((tf, tg), (sf, sg));
    }
}
