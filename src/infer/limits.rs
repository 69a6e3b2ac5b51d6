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
    if test_stat == TestStat::Q0 {
        return Err(Error::Usage("upper limits use qtilde or q, not q0".into()));
    }
    let (lo, hi) = model.parameters[model.poi].bounds;
    let mut calc = AsymptoticCalculator::new(model, data, test_stat);
    let mut tests: Vec<HypotestResult> = Vec::new();
    let mut eval = |mu: f64, tests: &mut Vec<HypotestResult>| -> [f64; 6] {
        let r = calc.hypotest(mu);
        let v = [
            r.cls_obs,
            r.cls_exp[0],
            r.cls_exp[1],
            r.cls_exp[2],
            r.cls_exp[3],
            r.cls_exp[4],
        ];
        tests.push(r);
        v
    };
    // Bracket on a grid that grows geometrically from near the lower bound.
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
    let mut prev: Option<(f64, [f64; 6])> = None;
    let mut brackets: [Option<(f64, f64, f64, f64)>; 6] = [None; 6];
    for &mu in &grid {
        let v = eval(mu, &mut tests);
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
    let mut limits = [0.0; 6];
    for c in 0..6 {
        let (a, fa, b, fb) = brackets[c].ok_or_else(|| {
            Error::Usage(format!(
                "CLs does not fall below {alpha} inside the POI's bounds [{lo}, {hi}] for the {} limit; widen the POI's bounds in the measurement",
                if c == 0 { "observed".to_string() } else { format!("expected {:+} sigma", c as i32 - 3) }
            ))
        })?;
        limits[c] = brent(a, fa, b, fb, 1e-7 * b.abs().max(1e-3), |mu| {
            eval(mu, &mut tests)[c] - alpha
        });
    }
    tests.sort_by(|x, y| x.mu.total_cmp(&y.mu));
    let converged = tests.iter().all(|t| t.converged);
    Ok(UpperLimit {
        alpha,
        obs: limits[0],
        exp: [limits[1], limits[2], limits[3], limits[4], limits[5]],
        tests,
        converged,
    })
}

/// Brent's root finder on a bracket `[a, b]` with `f(a) = fa`, `f(b) = fb` of opposite signs.
pub fn brent(
    mut a: f64,
    mut fa: f64,
    mut b: f64,
    mut fb: f64,
    xtol: f64,
    mut f: impl FnMut(f64) -> f64,
) -> f64 {
    if fa.abs() < fb.abs() {
        std::mem::swap(&mut a, &mut b);
        std::mem::swap(&mut fa, &mut fb);
    }
    let (mut c, mut fc) = (a, fa);
    let mut mflag = true;
    let mut d = 0.0;
    for _ in 0..200 {
        if fb == 0.0 || (b - a).abs() < xtol {
            return b;
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
        if outside
            || (mflag && (s - b).abs() >= (b - c).abs() / 2.0)
            || (!mflag && (s - b).abs() >= (c - d).abs() / 2.0)
            || (mflag && (b - c).abs() < xtol)
            || (!mflag && (c - d).abs() < xtol)
        {
            s = 0.5 * (a + b);
            mflag = true;
        } else {
            mflag = false;
        }
        let fs = f(s);
        d = c;
        c = b;
        fc = fb;
        if fa * fs < 0.0 {
            b = s;
            fb = fs;
        } else {
            a = s;
            fa = fs;
        }
        if fa.abs() < fb.abs() {
            std::mem::swap(&mut a, &mut b);
            std::mem::swap(&mut fa, &mut fb);
        }
    }
    b
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
}
