//! Samplers: Poisson counts by inverse CDF on integer thresholds (identical on every engine),
//! a general Poisson sampler for means that change per draw (PTRS), and normal deviates.
//!
//! All toys of an ensemble share their bins' means, so each bin's CDF is tabulated once, in f64
//! on the CPU, as 64-bit integer thresholds `T_k = floor(CDF(k) * 2^64)`; a count is the first
//! `k` with `u < T_k` for a raw 64-bit uniform `u`. Every engine compares the same integers, so
//! every engine draws the same counts, bit for bit.

/// The inverse-CDF table of one Poisson mean.
#[derive(Debug, Clone, PartialEq)]
pub struct PoissonTable {
    /// Smallest count the table can return (mass below it is under 2^-64).
    pub k_min: u32,
    /// `thresholds[i]` = floor(CDF(k_min + i) * 2^64), saturating; the last is `u64::MAX`.
    pub thresholds: Vec<u64>,
}

const TWO64: f64 = 18446744073709551616.0;

impl PoissonTable {
    /// The table for `mean` (finite, >= 0).
    pub fn new(mean: f64) -> Self {
        assert!(mean.is_finite() && mean >= 0.0, "Poisson mean {mean}");
        if mean == 0.0 {
            return PoissonTable {
                k_min: 0,
                thresholds: vec![u64::MAX],
            };
        }
        let ln_mean = mean.ln();
        let ln_pmf = |k: f64| k * ln_mean - mean - libm::lgamma(k + 1.0);
        // Start where the lower tail is far below 2^-64 (13 sigma, and never below 0).
        let k_min = (mean - 13.0 * mean.sqrt() - 5.0).floor().max(0.0);
        // Mass below k_min: bounded by the pmf at k_min times a geometric factor; negligible.
        let mut cdf = 0.0f64;
        let mut thresholds = Vec::new();
        let mut k = k_min;
        loop {
            cdf += ln_pmf(k).exp();
            let t = cdf * TWO64;
            if t >= TWO64 || (k > mean && (ln_pmf(k + 1.0) < -46.0)) {
                thresholds.push(u64::MAX);
                break;
            }
            thresholds.push(t as u64);
            k += 1.0;
        }
        PoissonTable {
            k_min: k_min as u32,
            thresholds,
        }
    }

    /// The count for 64 random bits `u`: the first `k` with `u < T_k`, the last entry
    /// (`u64::MAX`) catching everything above.
    #[inline]
    pub fn sample(&self, u: u64) -> u32 {
        let i = self.thresholds.partition_point(|&t| t <= u);
        self.k_min + i.min(self.thresholds.len() - 1) as u32
    }
}

/// A normal deviate from two uniforms in (0, 1) (Box-Muller, cosine branch).
#[inline]
pub fn normal_from_uniforms(u1: f64, u2: f64) -> f64 {
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A Poisson deviate for any mean from a supply of uniforms in (0, 1): multiplication of
/// uniforms below mean 10, Hörmann's transformed rejection with squeeze (PTRS) above. For
/// means that change from draw to draw, where tables do not pay.
pub fn poisson_general(mean: f64, mut uniform: impl FnMut() -> f64) -> u64 {
    if mean <= 0.0 {
        return 0;
    }
    if mean < 10.0 {
        let limit = (-mean).exp();
        let mut k = 0u64;
        let mut p = uniform();
        while p > limit {
            k += 1;
            p *= uniform();
        }
        return k;
    }
    let slam = mean.sqrt();
    let loglam = mean.ln();
    let b = 0.931 + 2.53 * slam;
    let a = -0.059 + 0.02483 * b;
    let invalpha = 1.1239 + 1.1328 / (b - 3.4);
    let vr = 0.9277 - 3.6224 / (b - 2.0);
    loop {
        let u = uniform() - 0.5;
        let v = uniform();
        let us = 0.5 - u.abs();
        let k = ((2.0 * a / us + b) * u + mean + 0.43).floor();
        if us >= 0.07 && v <= vr {
            return k as u64;
        }
        if k < 0.0 || (us < 0.013 && v > us) {
            continue;
        }
        if (v.ln() + invalpha.ln() - (a / (us * us) + b).ln())
            <= -mean + k * loglam - libm::lgamma(k + 1.0)
        {
            return k as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toys::rng::ToyStream;

    fn pmf(k: u32, mean: f64) -> f64 {
        (k as f64 * mean.ln() - mean - libm::lgamma(k as f64 + 1.0)).exp()
    }

    /// Pearson chi-square of `counts` against the Poisson pmf, bins with expected >= 5 (the
    /// tails pooled); returns (chi2, degrees of freedom).
    fn chi2(counts: &std::collections::BTreeMap<u32, u64>, n: u64, mean: f64) -> (f64, usize) {
        let kmax = counts.keys().max().copied().unwrap_or(0) + 10;
        let (mut chi2, mut dof) = (0.0, 0usize);
        let (mut pool_obs, mut pool_exp) = (0.0, 0.0);
        for k in 0..=kmax {
            let e = pmf(k, mean) * n as f64;
            let o = *counts.get(&k).unwrap_or(&0) as f64;
            pool_obs += o;
            pool_exp += e;
            if pool_exp >= 5.0 {
                chi2 += (pool_obs - pool_exp).powi(2) / pool_exp;
                dof += 1;
                pool_obs = 0.0;
                pool_exp = 0.0;
            }
        }
        (chi2, dof.saturating_sub(1))
    }

    /// The histogram's chi-square is below its mean plus 5 sigma.
    fn assert_chi2_ok(hist: &std::collections::BTreeMap<u32, u64>, n: u64, mean: f64) {
        let (c, dof) = chi2(hist, n, mean);
        if dof > 0 {
            assert!(
                c < dof as f64 + 5.0 * (2.0 * dof as f64).sqrt(),
                "mean {mean}: chi2 {c} / {dof}"
            );
        }
    }

    /// Mean, variance and chi-square against the pmf, for means from 0.01 to 1e4.
    #[test]
    fn table_sampler_is_poisson() {
        let n = 200_000u64;
        for (i, &mean) in [0.01, 0.3, 1.0, 4.5, 17.0, 120.0, 1e3, 1e4]
            .iter()
            .enumerate()
        {
            let table = PoissonTable::new(mean);
            let mut hist = std::collections::BTreeMap::new();
            let (mut s, mut s2) = (0.0, 0.0);
            for t in 0..n {
                let k = table.sample(ToyStream::new(99, i as u32, t).u64_at(0));
                *hist.entry(k).or_insert(0u64) += 1;
                s += k as f64;
                s2 += (k as f64).powi(2);
            }
            let m = s / n as f64;
            let var = s2 / n as f64 - m * m;
            assert!(
                (m - mean).abs() < 5.0 * (mean / n as f64).sqrt() + 1e-12,
                "mean {mean}: {m}"
            );
            assert!(
                (var - mean).abs() < 6.0 * mean * (2.0 / n as f64).sqrt() + 1e-3,
                "mean {mean}: var {var}"
            );
            assert_chi2_ok(&hist, n, mean);
        }
    }

    #[test]
    fn general_sampler_is_poisson() {
        let n = 100_000u64;
        for (i, &mean) in [0.05, 2.5, 9.9, 10.0, 55.0, 800.0].iter().enumerate() {
            let mut hist = std::collections::BTreeMap::new();
            let mut s = 0.0;
            for t in 0..n {
                let st = ToyStream::new(7, 100 + i as u32, t);
                let mut pos = 0;
                let k = poisson_general(mean, || {
                    pos += 1;
                    st.uniform_at(pos)
                }) as u32;
                *hist.entry(k).or_insert(0u64) += 1;
                s += k as f64;
            }
            let m = s / n as f64;
            assert!(
                (m - mean).abs() < 5.0 * (mean / n as f64).sqrt(),
                "mean {mean}: {m}"
            );
            assert_chi2_ok(&hist, n, mean);
        }
    }

    #[test]
    fn normal_deviates() {
        let n = 200_000u64;
        let (mut s, mut s2, mut below) = (0.0, 0.0, 0u64);
        for t in 0..n {
            let st = ToyStream::new(3, 0, t);
            let z = normal_from_uniforms(st.uniform_at(0), st.uniform_at(1));
            s += z;
            s2 += z * z;
            if z < -1.0 {
                below += 1;
            }
        }
        let m = s / n as f64;
        assert!(m.abs() < 5.0 / (n as f64).sqrt());
        assert!((s2 / n as f64 - 1.0).abs() < 5.0 * (2.0 / n as f64).sqrt());
        let p = below as f64 / n as f64;
        assert!((p - 0.158655).abs() < 5.0 * (0.1587f64 * 0.8413 / n as f64).sqrt());
    }

    #[test]
    fn zero_and_tiny_means() {
        assert_eq!(PoissonTable::new(0.0).sample(u64::MAX), 0);
        let t = PoissonTable::new(1e-12);
        assert_eq!(t.sample(0), 0);
        assert_eq!(t.sample(u64::MAX), 1);
    }
}
