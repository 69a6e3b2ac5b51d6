//! Interpolation codes of HistFactory, as pyhf implements them.
//!
//! Every code is written so that its per-bin work is a fixed linear combination of two bases
//! stored in the compiled model, with coefficients that depend on the parameter alone:
//!
//! ```text
//! histosys:  delta(alpha)  = B1[b] * c1(alpha) + B2[b] * c2(alpha)
//! normsys:   factor(alpha) = 1 + sum_i a_i alpha^i        (code4, |alpha| < 1)
//!            factor(alpha) = exp(alpha * ln hi)  or  exp(-alpha * ln lo)  (otherwise)
//! ```
//!
//! so that the hot loops have no branch per bin and the same tables serve every engine.

use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// Interpolation of normsys (multiplicative) modifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NormsysCode {
    /// Piecewise exponential: `hi^alpha` above 0, `lo^-alpha` below.
    Code1,
    /// Exponential outside |alpha| >= 1, a sixth-order polynomial inside (pyhf's default).
    #[default]
    Code4,
}

/// Interpolation of histosys (additive) modifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HistosysCode {
    /// Piecewise linear.
    Code0,
    /// Quadratic inside |alpha| <= 1, linear extrapolation outside.
    Code2,
    /// Polynomial inside |alpha| <= 1, linear outside (pyhf's default).
    #[default]
    Code4p,
}

/// The interpolation codes of a model, like pyhf's `modifier_settings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InterpCodes {
    pub normsys: NormsysCode,
    pub histosys: HistosysCode,
}

impl fmt::Display for NormsysCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NormsysCode::Code1 => "code1",
            NormsysCode::Code4 => "code4",
        })
    }
}

impl fmt::Display for HistosysCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HistosysCode::Code0 => "code0",
            HistosysCode::Code2 => "code2",
            HistosysCode::Code4p => "code4p",
        })
    }
}

impl FromStr for InterpCodes {
    type Err = Error;

    /// Parses `normsys=code1,histosys=code0` (either part may be left out).
    fn from_str(s: &str) -> Result<Self> {
        let mut codes = InterpCodes::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (kind, code) = part.split_once('=').ok_or_else(|| {
                Error::Usage(format!(
                    "bad interpolation setting '{part}': expected normsys=CODE or histosys=CODE"
                ))
            })?;
            match (kind.trim(), code.trim()) {
                ("normsys", "code1") => codes.normsys = NormsysCode::Code1,
                ("normsys", "code4") => codes.normsys = NormsysCode::Code4,
                ("histosys", "code0") => codes.histosys = HistosysCode::Code0,
                ("histosys", "code2") => codes.histosys = HistosysCode::Code2,
                ("histosys", "code4p") => codes.histosys = HistosysCode::Code4p,
                ("normsys", c) => {
                    return Err(Error::Usage(format!(
                        "unknown normsys interpolation code '{c}' (known: code1, code4)"
                    )))
                }
                ("histosys", c) => {
                    return Err(Error::Usage(format!(
                        "unknown histosys interpolation code '{c}' (known: code0, code2, code4p)"
                    )))
                }
                (k, _) => {
                    return Err(Error::Usage(format!(
                        "unknown modifier type '{k}' in interpolation setting (known: normsys, histosys)"
                    )))
                }
            }
        }
        Ok(codes)
    }
}

impl HistosysCode {
    /// The two per-bin bases of this code from the nominal and the +-1 sigma templates.
    #[inline]
    pub fn bases(self, nom: f64, hi: f64, lo: f64) -> (f64, f64) {
        let up = hi - nom;
        let dn = nom - lo;
        match self {
            HistosysCode::Code0 => (up, dn),
            HistosysCode::Code2 => (0.5 * (hi + lo) - nom, 0.5 * (hi - lo)),
            HistosysCode::Code4p => (0.5 * (up + dn), 0.0625 * (up - dn)),
        }
    }

    /// Coefficients `(c1, c2)` of the bases at `alpha`, and their derivatives `(d1, d2)`.
    #[inline]
    pub fn coefficients(self, alpha: f64) -> [f64; 4] {
        match self {
            // delta = up * alpha (alpha > 0), dn * alpha (alpha <= 0)
            HistosysCode::Code0 => {
                if alpha > 0.0 {
                    [alpha, 0.0, 1.0, 0.0]
                } else {
                    [0.0, alpha, 0.0, 1.0]
                }
            }
            // bases (a, b): a*alpha^2 + b*alpha inside; outside exactly as pyhf 0.7.6 has it,
            // (b + 2a)(alpha - 1) above 1 and (b - 2a) alpha below -1, which (unlike ROOT's
            // code 2) does not add the +-1 sigma shift and so jumps at |alpha| = 1.
            HistosysCode::Code2 => {
                if alpha > 1.0 {
                    [2.0 * (alpha - 1.0), alpha - 1.0, 2.0, 1.0]
                } else if alpha >= -1.0 {
                    [alpha * alpha, alpha, 2.0 * alpha, 1.0]
                } else {
                    [-2.0 * alpha, alpha, -2.0, 1.0]
                }
            }
            // bases (S, A): S*alpha + A*alpha^2 (15 - 10 alpha^2 + 3 alpha^4) inside
            HistosysCode::Code4p => {
                if alpha > 1.0 {
                    [alpha, 8.0 * alpha, 1.0, 8.0]
                } else if alpha < -1.0 {
                    [alpha, -8.0 * alpha, 1.0, -8.0]
                } else {
                    let a2 = alpha * alpha;
                    let poly = a2 * (15.0 + a2 * (-10.0 + 3.0 * a2));
                    let dpoly = alpha * (30.0 + a2 * (-40.0 + 18.0 * a2));
                    [alpha, poly, 1.0, dpoly]
                }
            }
        }
    }
}

/// pyhf's inverse matrix for the code4 polynomial with alpha0 = 1 (rows: a1..a6; columns:
/// hi-1, lo-1, hi ln hi, -lo ln lo, hi ln^2 hi, lo ln^2 lo).
const CODE4_A_INVERSE: [[f64; 6]; 6] = [
    [
        15.0 / 16.0,
        -15.0 / 16.0,
        -7.0 / 16.0,
        -7.0 / 16.0,
        1.0 / 16.0,
        -1.0 / 16.0,
    ],
    [
        3.0 / 2.0,
        3.0 / 2.0,
        -9.0 / 16.0,
        9.0 / 16.0,
        1.0 / 16.0,
        1.0 / 16.0,
    ],
    [
        -5.0 / 8.0,
        5.0 / 8.0,
        5.0 / 8.0,
        5.0 / 8.0,
        -1.0 / 8.0,
        1.0 / 8.0,
    ],
    [
        3.0 / -2.0,
        3.0 / -2.0,
        -7.0 / -8.0,
        7.0 / -8.0,
        -1.0 / 8.0,
        -1.0 / 8.0,
    ],
    [
        3.0 / 16.0,
        -3.0 / 16.0,
        -3.0 / 16.0,
        -3.0 / 16.0,
        1.0 / 16.0,
        -1.0 / 16.0,
    ],
    [
        1.0 / 2.0,
        1.0 / 2.0,
        -5.0 / 16.0,
        5.0 / 16.0,
        1.0 / 16.0,
        1.0 / 16.0,
    ],
];

/// The six polynomial coefficients of code4 for factors `hi`, `lo` (both positive).
pub fn code4_coefficients(hi: f64, lo: f64) -> [f64; 6] {
    let (lh, ll) = (hi.ln(), lo.ln());
    let b = [
        hi - 1.0,
        lo - 1.0,
        lh * hi,
        -ll * lo,
        lh * lh * hi,
        ll * ll * lo,
    ];
    let mut a = [0.0; 6];
    for (r, row) in CODE4_A_INVERSE.iter().enumerate() {
        a[r] = row.iter().zip(b.iter()).map(|(m, x)| m * x).sum();
    }
    a
}

/// Per-parameter quantities of a normsys parameter, shared by all its entries.
#[derive(Debug, Clone, Copy, Default)]
pub struct NormsysAlpha {
    /// True when the polynomial applies (code4 with |alpha| < 1).
    pub inside: bool,
    /// alpha^1..alpha^6 (inside only).
    pub pow: [f64; 6],
    /// d(alpha^i)/d alpha = i alpha^(i-1) (inside only).
    pub dpow: [f64; 6],
    /// Weight of ln hi in ln factor, and its derivative (outside).
    pub w_hi: f64,
    /// Weight of ln lo in ln factor (outside); ln factor = w_hi ln hi + w_lo ln lo.
    pub w_lo: f64,
    pub dw_hi: f64,
    pub dw_lo: f64,
}

impl NormsysCode {
    /// The per-parameter quantities at `alpha`.
    #[inline]
    pub fn alpha(self, alpha: f64) -> NormsysAlpha {
        let mut out = NormsysAlpha::default();
        let inside = matches!(self, NormsysCode::Code4) && alpha < 1.0 && alpha > -1.0;
        if inside {
            out.inside = true;
            let mut p = 1.0;
            for i in 0..6 {
                out.dpow[i] = (i as f64 + 1.0) * p;
                p *= alpha;
                out.pow[i] = p;
            }
        } else {
            // code1 switches at 0, code4 outside |alpha| >= 1: both are hi^alpha above and
            // lo^-alpha below.
            let up = match self {
                NormsysCode::Code1 => alpha >= 0.0,
                NormsysCode::Code4 => alpha >= 1.0,
            };
            if up {
                out.w_hi = alpha;
                out.dw_hi = 1.0;
            } else {
                out.w_lo = -alpha;
                out.dw_lo = -1.0;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_interp_settings() -> crate::Result<()> {
        let c: InterpCodes = "normsys=code1,histosys=code0".parse()?;
        assert_eq!(c.normsys, NormsysCode::Code1);
        assert_eq!(c.histosys, HistosysCode::Code0);
        let d: InterpCodes = "histosys=code2".parse()?;
        assert_eq!(d.normsys, NormsysCode::Code4);
        assert!("normsys=code9".parse::<InterpCodes>().is_err());
        assert!("shapesys=code1".parse::<InterpCodes>().is_err());
        assert!("normsys".parse::<InterpCodes>().is_err());
        Ok(())
    }

    /// code4's polynomial meets the exponential at |alpha| = 1 with equal value and slope.
    #[test]
    fn code4_is_continuous_at_one() {
        let (hi, lo) = (1.3, 0.8);
        let a = code4_coefficients(hi, lo);
        let poly = |x: f64| 1.0 + (0..6).map(|i| a[i] * x.powi(i as i32 + 1)).sum::<f64>();
        assert!((poly(1.0) - hi).abs() < 1e-12);
        assert!((poly(-1.0) - lo).abs() < 1e-12);
        let h = 1e-6;
        let slope = (poly(1.0) - poly(1.0 - h)) / h;
        assert!((slope - hi * hi.ln()).abs() < 1e-5);
    }

    /// Every histosys code reproduces the templates at alpha = +-1 and is 0 at alpha = 0.
    #[test]
    fn histosys_codes_hit_templates() {
        let (nom, hi, lo) = (10.0, 13.0, 8.5);
        for code in [
            HistosysCode::Code0,
            HistosysCode::Code2,
            HistosysCode::Code4p,
        ] {
            let (b1, b2) = code.bases(nom, hi, lo);
            let delta = |x: f64| {
                let c = code.coefficients(x);
                b1 * c[0] + b2 * c[1]
            };
            assert!((delta(1.0) - (hi - nom)).abs() < 1e-12, "{code}");
            assert!((delta(-1.0) - (lo - nom)).abs() < 1e-12, "{code}");
            assert!(delta(0.0).abs() < 1e-12, "{code}");
        }
    }
}
