//! Bounded L-BFGS (projected-gradient L-BFGS-B).
//!
//! Each iteration: (1) the projected gradient decides convergence; (2) variables sitting on a
//! bound with the gradient pushing them outward form the active set, and are held; every other
//! variable, including one on a bound whose gradient points inward, is free to move; (3) the
//! two-loop recursion gives a quasi-Newton direction on the free variables (steepest descent
//! when that is not a descent direction); (4) a backtracking Armijo search along the projected
//! path `P(x + a d)` keeps iterates inside the box and rejects points where the objective is
//! not finite; where the objective's changes are rounding noise (near a minimum, an NLL of
//! thousands of terms cannot resolve a decrease of 1e-12), a trial point is judged by the slope
//! along the step instead (approximate Wolfe conditions), which the analytic gradient still
//! resolves; (5) the curvature pair updates the memory when `s.y > 0`.
//!
//! Converged means the projected gradient's largest component is below `pgtol`, or the
//! objective stopped changing (relative `ftol`) and the projected gradient stopped reaching new
//! lows, while that component is below `pgtol_loose`.

use super::matvec::dot;

/// Relative size (of the objective) below which a rise of the objective at a trial point is
/// taken for rounding noise, and the point judged by the slope instead (approximate Wolfe).
const APPROX_WOLFE_NOISE: f64 = 1e-10;

/// Settings of the minimiser.
#[derive(Debug, Clone, Copy)]
pub struct LbfgsbOptions {
    /// Number of curvature pairs kept.
    pub memory: usize,
    /// Iteration limit.
    pub max_iter: usize,
    /// Converged when max |projected gradient| is below this.
    pub pgtol: f64,
    /// Relative change of the objective below which progress has stopped.
    pub ftol: f64,
    /// When progress has stopped, the projected gradient must still be below this to call the
    /// result converged (rounding noise, not a failure).
    pub pgtol_loose: f64,
}

impl Default for LbfgsbOptions {
    fn default() -> Self {
        LbfgsbOptions {
            memory: 10,
            max_iter: 5000,
            pgtol: 1e-6,
            ftol: 1e-15,
            pgtol_loose: 1e-3,
        }
    }
}

/// How a minimisation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Projected gradient below `pgtol`.
    Converged,
    /// No further decrease possible at rounding level, projected gradient below `pgtol_loose`.
    ConvergedByObjective,
    /// The iteration limit was reached.
    MaxIterations,
    /// No step along any direction decreased the objective, and the gradient is not small.
    LineSearchFailed,
    /// The objective is not finite at the starting point.
    NonFiniteStart,
}

impl Status {
    pub fn converged(self) -> bool {
        matches!(self, Status::Converged | Status::ConvergedByObjective)
    }
    pub fn describe(self) -> &'static str {
        match self {
            Status::Converged => "converged",
            Status::ConvergedByObjective => "converged (objective stationary at rounding level)",
            Status::MaxIterations => "iteration limit reached",
            Status::LineSearchFailed => "line search failed",
            Status::NonFiniteStart => "objective not finite at the starting point",
        }
    }
}

/// Result of a minimisation.
#[derive(Debug, Clone)]
pub struct OptimResult {
    pub x: Vec<f64>,
    pub f: f64,
    pub grad: Vec<f64>,
    pub status: Status,
    pub iterations: usize,
    pub evaluations: usize,
    /// Largest |projected gradient| component at the end.
    pub pg_norm: f64,
}

/// The minimiser with its buffers, reusable across problems of the same size.
#[derive(Debug, Clone)]
pub struct Lbfgsb {
    n: usize,
    opts: LbfgsbOptions,
    x: Vec<f64>,
    g: Vec<f64>,
    d: Vec<f64>,
    xn: Vec<f64>,
    gn: Vec<f64>,
    free: Vec<bool>,
    /// Per variable, whether it is held at the current point (see [`Lbfgsb::held`]), set by
    /// [`Lbfgsb::refresh_held`] once per iterate: the loops below read it instead of testing
    /// bounds and signs per element.
    hold: Vec<bool>,
    s: Vec<Vec<f64>>,
    y: Vec<Vec<f64>>,
    rho: Vec<f64>,
    alpha: Vec<f64>,
    head: usize,
    len: usize,
    /// Diagonal initial inverse Hessian (preconditioner), when set.
    h0: Vec<f64>,
    use_h0: bool,
    /// A whole initial inverse Hessian (`n x n`, row-major), when set: it takes the
    /// diagonal's place. Shared, not copied, by clones (one per worker of a toy ensemble).
    /// `tmp` holds its products.
    h0_dense: Option<std::sync::Arc<[f64]>>,
    tmp: Vec<f64>,
}

impl Lbfgsb {
    pub fn new(n: usize, opts: LbfgsbOptions) -> Self {
        let m = opts.memory.max(1);
        Lbfgsb {
            n,
            opts,
            x: vec![0.0; n],
            g: vec![0.0; n],
            d: vec![0.0; n],
            xn: vec![0.0; n],
            gn: vec![0.0; n],
            free: vec![true; n],
            hold: vec![false; n],
            s: vec![vec![0.0; n]; m],
            y: vec![vec![0.0; n]; m],
            rho: vec![0.0; m],
            alpha: vec![0.0; m],
            head: 0,
            len: 0,
            h0: vec![1.0; n],
            use_h0: false,
            h0_dense: None,
            tmp: vec![0.0; n],
        }
    }

    /// Sets (or clears) a diagonal preconditioner: an estimate of the inverse Hessian's
    /// diagonal, used as the initial inverse Hessian of the two-loop recursion instead of a
    /// scalar. Badly scaled problems (parameters whose curvatures differ by orders of
    /// magnitude) converge in far fewer iterations with it.
    pub fn set_preconditioner(&mut self, inverse_diagonal: Option<&[f64]>) {
        match inverse_diagonal {
            Some(d) => {
                assert_eq!(d.len(), self.n);
                for (h, &v) in self.h0.iter_mut().zip(d) {
                    *h = if v.is_finite() && v > 0.0 { v } else { 1.0 };
                }
                self.use_h0 = true;
            }
            None => self.use_h0 = false,
        }
    }

    /// Sets (or clears) a whole initial inverse Hessian (`n x n`, row-major, symmetric
    /// positive definite), used in the two-loop recursion in place of the diagonal one: fits
    /// that start near where it was computed (toys at their generating point) take nearly
    /// Newton steps from their first iteration. Held variables are masked out of its products.
    pub fn set_dense_preconditioner(&mut self, inverse_hessian: Option<&[f64]>) {
        if let Some(h) = inverse_hessian {
            assert_eq!(h.len(), self.n * self.n, "dense preconditioner length");
        }
        self.h0_dense = inverse_hessian.map(std::sync::Arc::from);
    }

    /// `d <- H0 d` with the whole initial inverse Hessian, on the variables not held (a
    /// no-op without one).
    fn apply_dense(&mut self) {
        let Some(h) = &self.h0_dense else { return };
        super::mat_vec(h, self.n, &self.d, &mut self.tmp);
        for (t, &held) in self.tmp.iter_mut().zip(&self.hold) {
            if held {
                *t = 0.0;
            }
        }
        std::mem::swap(&mut self.d, &mut self.tmp);
    }

    pub fn options(&self) -> &LbfgsbOptions {
        &self.opts
    }

    /// Minimises `f` (which returns the objective and writes the gradient) from `x0` inside
    /// `[lower, upper]`, holding variables where `fixed` is true at their `x0` values.
    pub fn minimize<F>(
        &mut self,
        mut f: F,
        x0: &[f64],
        lower: &[f64],
        upper: &[f64],
        fixed: &[bool],
    ) -> OptimResult
    where
        F: FnMut(&[f64], &mut [f64]) -> f64,
    {
        let n = self.n;
        assert!(x0.len() == n && lower.len() == n && upper.len() == n && fixed.len() == n);
        let opts = self.opts;
        for i in 0..n {
            self.free[i] = !fixed[i];
            self.x[i] = if fixed[i] {
                x0[i]
            } else {
                x0[i].clamp(lower[i], upper[i])
            };
        }
        self.len = 0;
        self.head = 0;
        let mut evaluations = 1;
        let mut fx = f(&self.x, &mut self.g);
        self.mask(Which::G);
        if !fx.is_finite() {
            return self.result(fx, Status::NonFiniteStart, 0, evaluations, lower, upper);
        }
        let mut stalled = 0;
        let mut best_pg = f64::INFINITY;
        // the projected gradient at the current iterate, when the last step already took it
        let mut pg_here = None;
        for iter in 0..opts.max_iter {
            let pg = match pg_here.take() {
                Some(pg) => pg,
                None => self.refresh_held(lower, upper),
            };
            if pg <= opts.pgtol {
                return self.result(fx, Status::Converged, iter, evaluations, lower, upper);
            }
            // Quasi-Newton direction on the variables not held by an active bound.
            let mut have_dir = self.direction();
            let mut accepted = None;
            // Where the objective's changes are lost in its rounding, a step is judged by the
            // slope along it instead (below).
            let noise = APPROX_WOLFE_NOISE * fx.abs().max(1.0);
            for attempt in 0..2 {
                if !have_dir || attempt == 1 {
                    // Steepest descent on the free variables, memory cleared.
                    self.len = 0;
                    self.steepest();
                    have_dir = true;
                }
                let gd = dot(&self.g, &self.d);
                if gd >= 0.0 {
                    continue;
                }
                let dmax = self.d.iter().fold(0.0f64, |a, v| a.max(v.abs()));
                let mut step = if self.len == 0 && !self.use_h0 && self.h0_dense.is_none() {
                    (1.0 / dmax).min(1.0)
                } else {
                    1.0
                };
                for _ in 0..60 {
                    for ((((xn, &x), &d), (&lo, &hi)), &free) in self
                        .xn
                        .iter_mut()
                        .zip(&self.x)
                        .zip(&self.d)
                        .zip(lower.iter().zip(upper))
                        .zip(&self.free)
                    {
                        *xn = if free {
                            (x + step * d).clamp(lo, hi)
                        } else {
                            x
                        };
                    }
                    let fnew = f(&self.xn, &mut self.gn);
                    evaluations += 1;
                    let dec = dot_step(&self.g, &self.xn, &self.x);
                    if fnew.is_finite() && fnew <= fx + 1e-4 * dec {
                        accepted = Some(fnew);
                        break;
                    }
                    if fnew.is_finite() && fnew - fx <= noise && self.approximate_wolfe(dec) {
                        accepted = Some(fnew);
                        break;
                    }
                    // Safeguarded quadratic interpolation along the ray, else halve.
                    let q = if fnew.is_finite() {
                        let denom = 2.0 * (fnew - fx - step * gd);
                        if denom > 0.0 {
                            -gd * step * step / denom
                        } else {
                            0.5 * step
                        }
                    } else {
                        0.25 * step
                    };
                    step = q.clamp(0.1 * step, 0.5 * step);
                    if step * dmax < 1e-20 {
                        break;
                    }
                }
                if accepted.is_some() {
                    break;
                }
            }
            let Some(fnew) = accepted else {
                let status = if pg <= opts.pgtol_loose {
                    Status::ConvergedByObjective
                } else {
                    Status::LineSearchFailed
                };
                return self.result(fx, status, iter, evaluations, lower, upper);
            };
            self.mask(Which::Gn);
            // Curvature pair.
            let slot = self.head;
            for (si, (&xn, &x)) in self.s[slot].iter_mut().zip(self.xn.iter().zip(&self.x)) {
                *si = xn - x;
            }
            for (yi, (&gn, &g)) in self.y[slot].iter_mut().zip(self.gn.iter().zip(&self.g)) {
                *yi = gn - g;
            }
            let sy = dot(&self.s[slot], &self.y[slot]);
            let yy = dot(&self.y[slot], &self.y[slot]);
            if sy > 1e-12 * yy && sy > 0.0 {
                self.rho[slot] = 1.0 / sy;
                self.head = (self.head + 1) % self.s.len();
                self.len = (self.len + 1).min(self.s.len());
            }
            let change = fx - fnew;
            std::mem::swap(&mut self.x, &mut self.xn);
            std::mem::swap(&mut self.g, &mut self.gn);
            fx = fnew;
            // Where the objective no longer changes measurably, a step is still progress
            // while it takes the projected gradient to a new low (by a tenth).
            let pg_new = self.refresh_held(lower, upper);
            pg_here = Some(pg_new);
            let gradient_progress = pg_new < 0.9 * best_pg;
            best_pg = best_pg.min(pg_new);
            if change <= opts.ftol * fx.abs().max(1.0) && !gradient_progress {
                stalled += 1;
                if stalled >= 3 {
                    let pg = pg_new;
                    let status = if pg <= opts.pgtol {
                        Status::Converged
                    } else if pg <= opts.pgtol_loose {
                        Status::ConvergedByObjective
                    } else {
                        continue;
                    };
                    return self.result(fx, status, iter + 1, evaluations, lower, upper);
                }
            } else {
                stalled = 0;
            }
        }
        self.result(
            fx,
            Status::MaxIterations,
            opts.max_iter,
            evaluations,
            lower,
            upper,
        )
    }

    /// Hager and Zhang's approximate Wolfe conditions for the trial point `xn` (gradient
    /// `gn`) from `x`, with `dec` the slope at `x` along the step (negative):
    /// `0.9 dec <= slope at xn <= -(1 - 2e-4) dec`. On a quadratic the upper bound is the
    /// Armijo condition of the backtracking search (sufficient decrease 1e-4) written with
    /// slopes only, so it holds where the objective's own differences are rounding noise;
    /// the lower bound keeps the step from falling short. (W. W. Hager and H. Zhang, SIAM
    /// J. Optim. 16 (2005) 170.)
    fn approximate_wolfe(&self, dec: f64) -> bool {
        let slope: f64 = (0..self.n)
            .filter(|&i| self.free[i])
            .map(|i| self.gn[i] * (self.xn[i] - self.x[i]))
            .sum();
        slope >= 0.9 * dec && slope <= -(1.0 - 2e-4) * dec
    }

    fn mask(&mut self, which: Which) {
        let g = match which {
            Which::G => &mut self.g,
            Which::Gn => &mut self.gn,
        };
        for (gi, &free) in g.iter_mut().zip(&self.free) {
            if !free {
                *gi = 0.0;
            }
        }
    }

    /// Whether variable `i` is held by a bound: on it, with the gradient pushing outward.
    #[inline]
    fn held(&self, i: usize, lower: &[f64], upper: &[f64]) -> bool {
        !self.free[i]
            || (self.x[i] <= lower[i] && self.g[i] > 0.0)
            || (self.x[i] >= upper[i] && self.g[i] < 0.0)
    }

    /// Sets `hold` for the current iterate and returns the projected gradient's largest
    /// component (over the variables not held).
    fn refresh_held(&mut self, lower: &[f64], upper: &[f64]) -> f64 {
        let mut pg = 0.0f64;
        for i in 0..self.n {
            let h = self.held(i, lower, upper);
            self.hold[i] = h;
            if !h {
                pg = pg.max(self.g[i].abs());
            }
        }
        pg
    }

    fn projected_norm(&self, lower: &[f64], upper: &[f64]) -> f64 {
        (0..self.n)
            .filter(|&i| !self.held(i, lower, upper))
            .map(|i| self.g[i].abs())
            .fold(0.0, f64::max)
    }

    fn steepest(&mut self) {
        if self.h0_dense.is_some() {
            for ((d, &g), &held) in self.d.iter_mut().zip(&self.g).zip(&self.hold) {
                *d = if held { 0.0 } else { -g };
            }
            self.apply_dense();
            return;
        }
        for (((d, &g), &h0), &held) in self.d.iter_mut().zip(&self.g).zip(&self.h0).zip(&self.hold)
        {
            let h = if self.use_h0 { h0 } else { 1.0 };
            *d = if held { 0.0 } else { -h * g };
        }
    }

    /// Two-loop recursion on the gradient restricted to the variables not held; false when
    /// the result is not a descent direction.
    fn direction(&mut self) -> bool {
        let m = self.s.len();
        for ((d, &g), &held) in self.d.iter_mut().zip(&self.g).zip(&self.hold) {
            *d = if held { 0.0 } else { -g };
        }
        if self.len == 0 {
            if self.h0_dense.is_some() {
                self.apply_dense();
            } else if self.use_h0 {
                for (d, &h) in self.d.iter_mut().zip(&self.h0) {
                    *d *= h;
                }
            }
            return dot(&self.g, &self.d) < 0.0;
        }
        // q = -d (the masked gradient); work on d = -q throughout.
        for k in 0..self.len {
            let j = (self.head + m - 1 - k) % m;
            let a = self.rho[j] * dot(&self.s[j], &self.d);
            self.alpha[j] = a;
            for (d, &y) in self.d.iter_mut().zip(&self.y[j]) {
                *d -= a * y;
            }
        }
        if self.h0_dense.is_some() {
            self.apply_dense();
        } else if self.use_h0 {
            for (d, &h) in self.d.iter_mut().zip(&self.h0) {
                *d *= h;
            }
        } else {
            let last = (self.head + m - 1) % m;
            let gamma = 1.0 / (self.rho[last] * dot(&self.y[last], &self.y[last]));
            for v in self.d.iter_mut() {
                *v *= gamma;
            }
        }
        for k in (0..self.len).rev() {
            let j = (self.head + m - 1 - k) % m;
            let b = self.rho[j] * dot(&self.y[j], &self.d);
            let a = self.alpha[j];
            for (d, &s) in self.d.iter_mut().zip(&self.s[j]) {
                *d += (a - b) * s;
            }
        }
        for (d, &held) in self.d.iter_mut().zip(&self.hold) {
            if held {
                *d = 0.0;
            }
        }
        dot(&self.g, &self.d) < 0.0
    }

    fn result(
        &self,
        f: f64,
        status: Status,
        iterations: usize,
        evaluations: usize,
        lower: &[f64],
        upper: &[f64],
    ) -> OptimResult {
        OptimResult {
            x: self.x.clone(),
            f,
            grad: self.g.clone(),
            status,
            iterations,
            evaluations,
            pg_norm: if f.is_finite() {
                self.projected_norm(lower, upper)
            } else {
                f64::INFINITY
            },
        }
    }
}

enum Which {
    G,
    Gn,
}

/// `g . (xn - x)`, the slope along a step, summed as [`dot`] is.
fn dot_step(g: &[f64], xn: &[f64], x: &[f64]) -> f64 {
    let n = g.len().min(xn.len()).min(x.len());
    let mut acc = [0.0; 4];
    let mut i = 0;
    while i + 4 <= n {
        for k in 0..4 {
            acc[k] += g[i + k] * (xn[i + k] - x[i + k]);
        }
        i += 4;
    }
    while i < n {
        acc[0] += g[i] * (xn[i] - x[i]);
        i += 1;
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rosenbrock(x: &[f64], g: &mut [f64]) -> f64 {
        let n = x.len();
        let mut f = 0.0;
        g.fill(0.0);
        for i in 0..n - 1 {
            let a = x[i + 1] - x[i] * x[i];
            let b = 1.0 - x[i];
            f += 100.0 * a * a + b * b;
            g[i] += -400.0 * x[i] * a - 2.0 * b;
            g[i + 1] += 200.0 * a;
        }
        f
    }

    #[test]
    fn rosenbrock_unbounded() {
        let n = 6;
        let mut opt = Lbfgsb::new(n, LbfgsbOptions::default());
        let r = opt.minimize(
            rosenbrock,
            &vec![-1.2; n],
            &vec![-10.0; n],
            &vec![10.0; n],
            &vec![false; n],
        );
        assert!(r.status.converged(), "{:?}", r.status);
        for xi in &r.x {
            assert!((xi - 1.0).abs() < 1e-5, "{:?}", r.x);
        }
    }

    /// Rosenbrock in 2D with x1 <= 0.5 active: the optimum is (0.5, 0.25).
    /// A quadratic on top of a large constant (as an NLL carries its ln Gamma terms): near the
    /// minimum its differences are lost in rounding while its gradient stays exact. The slope
    /// test takes the fit to a projected gradient of 1e-10; comparing values alone stopped at
    /// 1.8e-6 (ConvergedByObjective, x off by up to 1.3e-6).
    #[test]
    fn reaches_a_small_gradient_where_the_objective_is_rounding_noise() {
        let c = [0.3, -1.2, 2.0, 0.7];
        let w = [1.0, 10.0, 0.1, 3.0];
        let f = |x: &[f64], g: &mut [f64]| {
            let mut v = 1e9;
            for i in 0..4 {
                let d = x[i] - c[i];
                v += 0.5 * w[i] * d * d + 0.1 * d * d * d * d;
                g[i] = w[i] * d + 0.4 * d * d * d;
            }
            v
        };
        let mut opt = Lbfgsb::new(
            4,
            LbfgsbOptions {
                pgtol: 1e-10,
                ..Default::default()
            },
        );
        let r = opt.minimize(f, &[0.0; 4], &[-10.0; 4], &[10.0; 4], &[false; 4]);
        assert_eq!(r.status, Status::Converged, "{r:?}");
        assert!(r.pg_norm <= 1e-10);
        for i in 0..4 {
            assert!((r.x[i] - c[i]).abs() <= 1e-9, "x[{i}] = {}", r.x[i]);
        }
    }

    #[test]
    fn rosenbrock_with_active_bound() {
        let mut opt = Lbfgsb::new(2, LbfgsbOptions::default());
        let r = opt.minimize(
            rosenbrock,
            &[-1.2, 1.0],
            &[-2.0, -2.0],
            &[0.5, 2.0],
            &[false, false],
        );
        assert!(r.status.converged(), "{:?}", r.status);
        assert!((r.x[0] - 0.5).abs() < 1e-9, "{:?}", r.x);
        assert!((r.x[1] - 0.25).abs() < 1e-6, "{:?}", r.x);
    }

    /// A quadratic whose unconstrained optimum (3, -2, 0.5) lies outside the box
    /// [0, 1] x [-1, 1] x [0, 1]: the answer is the box's nearest corner in the metric.
    #[test]
    fn quadratic_with_active_bounds() {
        let q = |x: &[f64], g: &mut [f64]| {
            let c = [3.0, -2.0, 0.5];
            let w = [1.0, 4.0, 2.0];
            let mut f = 0.0;
            for i in 0..3 {
                f += 0.5 * w[i] * (x[i] - c[i]).powi(2);
                g[i] = w[i] * (x[i] - c[i]);
            }
            f
        };
        let mut opt = Lbfgsb::new(3, LbfgsbOptions::default());
        let r = opt.minimize(
            q,
            &[0.5, 0.0, 0.9],
            &[0.0, -1.0, 0.0],
            &[1.0, 1.0, 1.0],
            &[false; 3],
        );
        assert!(r.status.converged());
        assert!((r.x[0] - 1.0).abs() < 1e-12 && (r.x[1] + 1.0).abs() < 1e-12);
        assert!((r.x[2] - 0.5).abs() < 1e-7);
    }

    /// A correlated quadratic with its exact inverse Hessian as the dense preconditioner: the
    /// first step is Newton's and lands on the minimum; with a held (fixed) variable the
    /// masked products still give a descent direction and the constrained minimum. With the
    /// diagonal alone the same problem takes many iterations.
    #[test]
    fn dense_preconditioner_takes_newton_steps() {
        // H = [[4, 3, 0], [3, 4, 1], [0, 1, 2]], minimum at c
        let h = [[4.0, 3.0, 0.0], [3.0, 4.0, 1.0], [0.0, 1.0, 2.0]];
        let c = [1.0, -2.0, 0.5];
        let q = |x: &[f64], g: &mut [f64]| {
            let d: Vec<f64> = (0..3).map(|i| x[i] - c[i]).collect();
            let mut f = 0.0;
            for i in 0..3 {
                g[i] = (0..3).map(|j| h[i][j] * d[j]).sum();
                f += 0.5 * d[i] * g[i];
            }
            f
        };
        let m = nalgebra::Matrix3::from_fn(|i, j| h[i][j]);
        let Some(inv) = m.try_inverse() else {
            panic!("the test's Hessian is positive definite and must invert");
        };
        let dense: Vec<f64> = (0..3)
            .flat_map(|i| (0..3).map(move |j| inv[(i, j)]))
            .collect();
        let (lo, hi) = ([-10.0; 3], [10.0; 3]);
        let opts = LbfgsbOptions {
            pgtol: 1e-12,
            ..Default::default()
        };
        let mut newton = Lbfgsb::new(3, opts);
        newton.set_dense_preconditioner(Some(&dense));
        let r = newton.minimize(q, &[0.0; 3], &lo, &hi, &[false; 3]);
        assert_eq!(r.status, Status::Converged);
        assert!(r.iterations <= 2, "{} iterations", r.iterations);
        for i in 0..3 {
            assert!((r.x[i] - c[i]).abs() < 1e-12);
        }
        let mut plain = Lbfgsb::new(3, opts);
        let p = plain.minimize(q, &[0.0; 3], &lo, &hi, &[false; 3]);
        assert!(
            p.iterations > r.iterations + 2,
            "{} iterations",
            p.iterations
        );
        // x[1] held at 0 (the dense products masked to x0 and x2)
        let r = newton.minimize(q, &[0.0; 3], &lo, &hi, &[false, true, false]);
        assert!(r.status.converged());
        // d/dx0: 4 (x0 - c0) + 3 (0 - c1) = 0; d/dx2: (0 - c1) + 2 (x2 - c2) = 0
        assert!((r.x[0] - (c[0] + 3.0 * c[1] / 4.0)).abs() < 1e-10);
        assert_eq!(r.x[1], 0.0);
        assert!((r.x[2] - (c[2] + c[1] / 2.0)).abs() < 1e-10);
    }

    /// A variable starting on its lower bound with the gradient pointing inward must move
    /// (the POI of a fit starting at 0).
    #[test]
    fn leaves_a_bound_when_the_gradient_points_inward() {
        let f = |x: &[f64], g: &mut [f64]| {
            g[0] = 2.0 * (x[0] - 1.7);
            g[1] = 2.0 * (x[1] + 0.3);
            (x[0] - 1.7).powi(2) + (x[1] + 0.3).powi(2)
        };
        let mut opt = Lbfgsb::new(2, LbfgsbOptions::default());
        let r = opt.minimize(f, &[0.0, 0.0], &[0.0, -5.0], &[10.0, 5.0], &[false, false]);
        assert!(r.status.converged());
        assert!(
            (r.x[0] - 1.7).abs() < 1e-8 && (r.x[1] + 0.3).abs() < 1e-8,
            "{:?}",
            r.x
        );
    }

    #[test]
    fn fixed_variables_stay() {
        let mut opt = Lbfgsb::new(3, LbfgsbOptions::default());
        let r = opt.minimize(
            rosenbrock,
            &[0.3, 0.7, 1.0],
            &[-5.0; 3],
            &[5.0; 3],
            &[false, true, false],
        );
        assert!(r.status.converged());
        assert_eq!(r.x[1], 0.7);
    }

    /// Regions where the objective is undefined (+inf) are stepped back from.
    #[test]
    fn backs_off_from_undefined_regions() {
        let f = |x: &[f64], g: &mut [f64]| {
            if x[0] < 0.5 {
                return f64::INFINITY;
            }
            g[0] = 2.0 * (x[0] - 0.6);
            (x[0] - 0.6).powi(2)
        };
        let mut opt = Lbfgsb::new(1, LbfgsbOptions::default());
        let r = opt.minimize(f, &[5.0], &[-10.0], &[10.0], &[false]);
        assert!(r.status.converged(), "{:?}", r.status);
        assert!((r.x[0] - 0.6).abs() < 1e-7);
    }

    #[test]
    fn reports_a_non_finite_start() {
        let mut opt = Lbfgsb::new(1, LbfgsbOptions::default());
        let r = opt.minimize(
            |_: &[f64], _: &mut [f64]| f64::NAN,
            &[1.0],
            &[0.0],
            &[2.0],
            &[false],
        );
        assert_eq!(r.status, Status::NonFiniteStart);
    }
}
