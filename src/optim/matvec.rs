//! The fitter's vector products: [`dot`], and [`mat_vec`], `out = H x` for a dense row-major
//! `n x n` matrix (the L-BFGS-B fitter's whole initial inverse Hessian, applied once per
//! iteration). For the 184-parameter tHu model that product (34k multiply-adds) cost as much
//! as the NLL and gradient themselves, as a dot product per row whose sums waited on each
//! other; the AVX2 path takes eight rows at once, eight independent sums in flight, and reads
//! each slice of `x` once for all eight.

use crate::cpu::isa;

/// `out[i] = H[i, :] . x` for every row `i` (`h.len() == n * n`, `x` and `out` of length `n`).
pub fn mat_vec(h: &[f64], n: usize, x: &[f64], out: &mut [f64]) {
    assert!(
        h.len() == n * n && x.len() == n && out.len() == n,
        "mat_vec: a {n} x {n} matrix needs vectors of {n}"
    );
    #[cfg(target_arch = "x86_64")]
    if isa::level() >= isa::AVX2 {
        // SAFETY: level() reports AVX2 and FMA only where the CPU has them; the lengths
        // were checked above.
        unsafe { mat_vec_avx2(h, n, x, out) };
        return;
    }
    mat_vec_portable(h, n, x, out);
}

/// `a . b` in four interleaved partial sums: one running sum would wait on each addition's
/// latency in turn (these dots are most of the optimizer's own time on models of a few
/// hundred parameters).
#[inline]
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    for (x, y) in ra.iter().zip(rb) {
        acc[0] += x * y;
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3])
}

/// Plain Rust: a [`dot`] a row.
fn mat_vec_portable(h: &[f64], n: usize, x: &[f64], out: &mut [f64]) {
    for (row, o) in h.chunks_exact(n).zip(out.iter_mut()) {
        *o = dot(row, x);
    }
}

/// Eight rows at a time, one four-wide sum per row (the FMA latency hidden by the eight),
/// each four-wide slice of `x` loaded once for the eight rows; the last rows and columns
/// that do not fill a block are summed as the portable path does.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn mat_vec_avx2(h: &[f64], n: usize, x: &[f64], out: &mut [f64]) {
    use std::arch::x86_64::*;
    const R: usize = 8;
    let full = n / 4 * 4;
    let (hp, xp) = (h.as_ptr(), x.as_ptr());
    let hsum = |v: __m256d| {
        let lo = _mm256_castpd256_pd128(v);
        let hi = _mm256_extractf128_pd::<1>(v);
        let s = _mm_add_pd(lo, hi);
        _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)))
    };
    let mut i = 0;
    while i + R <= n {
        let mut acc = [_mm256_setzero_pd(); R];
        let mut q = 0;
        while q < full {
            let xv = _mm256_loadu_pd(xp.add(q));
            for (r, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_pd(_mm256_loadu_pd(hp.add((i + r) * n + q)), xv, *a);
            }
            q += 4;
        }
        for (r, a) in acc.iter().enumerate() {
            let mut s = hsum(*a);
            for q in full..n {
                s += h[(i + r) * n + q] * x[q];
            }
            out[i + r] = s;
        }
        i += R;
    }
    if i < n {
        mat_vec_portable(&h[i * n..], n, x, &mut out[i..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size around the blocks' edges (rows of eight, columns of four), against the
    /// sum in order, on the path this CPU takes and on the portable one.
    #[test]
    fn matches_the_plain_sum_at_every_size() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        for n in 1..=37 {
            let h: Vec<f64> = (0..n * n).map(|_| next()).collect();
            let x: Vec<f64> = (0..n).map(|_| next()).collect();
            let expected: Vec<f64> = (0..n)
                .map(|i| (0..n).map(|q| h[i * n + q] * x[q]).sum())
                .collect();
            let mut fast = vec![f64::NAN; n];
            let mut plain = vec![f64::NAN; n];
            mat_vec(&h, n, &x, &mut fast);
            mat_vec_portable(&h, n, &x, &mut plain);
            for i in 0..n {
                for (got, path) in [(fast[i], "dispatched"), (plain[i], "portable")] {
                    assert!(
                        (got - expected[i]).abs() <= 1e-14 * n as f64,
                        "n {n} row {i} ({path}): {got} vs {}",
                        expected[i]
                    );
                }
            }
        }
    }
}
