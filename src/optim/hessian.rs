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
}
