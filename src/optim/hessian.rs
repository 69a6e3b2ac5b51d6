//! Hessians by central differences of an analytic gradient, and their inverse.

use nalgebra::DMatrix;

/// The Hessian at `x` from central differences of `grad`, symmetrised; rows and columns of
/// parameters where `skip` is true are left zero. Steps shrink near bounds so that every
/// evaluation stays inside `[lower, upper]`.
pub fn hessian_from_gradient<F>(
    mut grad: F,
    x: &[f64],
    lower: &[f64],
    upper: &[f64],
    skip: &[bool],
) -> Vec<Vec<f64>>
where
    F: FnMut(&[f64], &mut [f64]),
{
    let n = x.len();
    let mut h = vec![vec![0.0; n]; n];
    let mut xp = x.to_vec();
    let (mut gp, mut gm) = (vec![0.0; n], vec![0.0; n]);
    for i in 0..n {
        if skip[i] {
            continue;
        }
        let step = 1e-5 * x[i].abs().max(1.0);
        let up = (x[i] + step).min(upper[i]);
        let dn = (x[i] - step).max(lower[i]);
        xp[i] = up;
        grad(&xp, &mut gp);
        xp[i] = dn;
        grad(&xp, &mut gm);
        xp[i] = x[i];
        let width = up - dn;
        for j in 0..n {
            if !skip[j] {
                h[i][j] = (gp[j] - gm[j]) / width;
            }
        }
    }
    for i in 0..n {
        for j in 0..i {
            let v = 0.5 * (h[i][j] + h[j][i]);
            h[i][j] = v;
            h[j][i] = v;
        }
    }
    h
}

/// From `inv`, the inverse (row-major `n x n`) of a positive definite matrix `A` over some
/// indices, the inverse of `A` over the same indices less `p`: `inv - inv[:, p] inv[p, :] /
/// inv[p, p]` (the Schur complement), with row and column `p` zero. O(n^2) instead of a new
/// factorisation: a fit with one more parameter held (the conditional fit beside the free
/// one). `None` when `inv[p, p]` is not positive.
pub fn inverse_without(inv: &[f64], n: usize, p: usize) -> Option<Vec<f64>> {
    assert_eq!(inv.len(), n * n, "inverse length");
    let hpp = inv[p * n + p];
    if hpp.is_nan() || hpp <= 0.0 {
        return None;
    }
    let col: Vec<f64> = (0..n).map(|i| inv[i * n + p]).collect();
    let mut out = inv.to_vec();
    for i in 0..n {
        let ci = col[i] / hpp;
        for (o, &cj) in out[i * n..(i + 1) * n].iter_mut().zip(&col) {
            *o -= ci * cj;
        }
    }
    for i in 0..n {
        out[i * n + p] = 0.0;
        out[p * n + i] = 0.0;
    }
    Some(out)
}

/// The inverse of the symmetric matrix `h` restricted to the indices `keep`, by Cholesky;
/// `None` when that block is not positive definite.
pub fn invert_symmetric(h: &[Vec<f64>], keep: &[usize]) -> Option<Vec<Vec<f64>>> {
    let k = keep.len();
    let m = DMatrix::from_fn(k, k, |a, b| h[keep[a]][keep[b]]);
    let inv = m.cholesky()?.inverse();
    let n = h.len();
    let mut out = vec![vec![0.0; n]; n];
    for a in 0..k {
        for b in 0..k {
            out[keep[a]][keep[b]] = inv[(a, b)];
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hessian_of_a_quadratic_and_its_inverse() {
        // f = x^T A x / 2 with A = [[4, 1], [1, 3]]
        let grad = |x: &[f64], g: &mut [f64]| {
            g[0] = 4.0 * x[0] + x[1];
            g[1] = x[0] + 3.0 * x[1];
        };
        let h = hessian_from_gradient(
            grad,
            &[0.3, -0.2],
            &[-1.0, -1.0],
            &[1.0, 1.0],
            &[false, false],
        );
        assert!(
            (h[0][0] - 4.0).abs() < 1e-8
                && (h[0][1] - 1.0).abs() < 1e-8
                && (h[1][1] - 3.0).abs() < 1e-8
        );
        let Some(inv) = invert_symmetric(&h, &[0, 1]) else {
            panic!("a positive-definite Hessian must invert");
        };
        // inverse of [[4,1],[1,3]] = [[3,-1],[-1,4]] / 11
        assert!((inv[0][0] - 3.0 / 11.0).abs() < 1e-8 && (inv[0][1] + 1.0 / 11.0).abs() < 1e-8);
        assert!(invert_symmetric(&[vec![1.0, 2.0], vec![2.0, 1.0]], &[0, 1]).is_none());
    }

    /// Dropping an index from an inverse by the Schur complement equals inverting the
    /// smaller block anew.
    #[test]
    fn inverse_without_an_index_is_the_smaller_blocks_inverse() {
        let a = vec![
            vec![4.0, 1.0, 0.5, 0.2],
            vec![1.0, 3.0, 0.3, 0.1],
            vec![0.5, 0.3, 2.0, 0.4],
            vec![0.2, 0.1, 0.4, 1.5],
        ];
        let Some(all) = invert_symmetric(&a, &[0, 1, 2, 3]) else {
            panic!("the test matrix is positive definite and must invert");
        };
        let all = all.concat();
        for p in 0..4 {
            let keep: Vec<usize> = (0..4).filter(|&i| i != p).collect();
            let Some(direct) = invert_symmetric(&a, &keep) else {
                panic!("dropping {p}: a principal block of a positive-definite matrix must invert");
            };
            let direct = direct.concat();
            let Some(schur) = inverse_without(&all, 4, p) else {
                panic!("dropping {p}: the inverse's diagonal is positive");
            };
            for (x, y) in direct.iter().zip(&schur) {
                assert!((x - y).abs() < 1e-13, "dropping {p}: {x} vs {y}");
            }
        }
        assert!(inverse_without(&[0.0; 4], 2, 1).is_none());
    }
}
