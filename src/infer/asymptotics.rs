//! Test statistics and asymptotic CLs (Cowan, Cranmer, Gross, Vitells, arXiv:1007.1727), as
//! pyhf's `AsymptoticCalculator` computes them.
//!
//! - `qmu` and `qmu_tilde` are both `2 (NLL(mu) - NLL(muhat))`, set to 0 when `muhat > mu`,
//!   with the model's POI bounds (so `muhat >= 0` when the POI's lower bound is 0, which is what
//!   makes `qmu_tilde`); they differ in how the test statistic maps to p-values.
//! - `q0` is `2 (NLL(0) - NLL(muhat))`, 0 when `muhat < 0`.
//! - The Asimov dataset is the expected data at the conditional fit to the observed data at
//!   `mu = 0` (`mu = 1` for `q0`), auxiliary data included.
//! - CLsb = Phi(-(t + sqrt(qA))), CLb = Phi(-t), CLs = CLsb / CLb, with the test statistic `t`
//!   (`sqrt(q) - sqrt(qA)`, or `(q - qA) / (2 sqrt(qA))` for qtilde when `q > qA`); the expected
//!   band evaluates the same at `t` = 2, 1, 0, -1, -2 (CLs at -2 sigma ... +2 sigma).

use super::mle::{FitResult, Fitter};
use crate::model::{Dataset, Model};

/// Which test statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestStat {
    /// `qmu_tilde` (pyhf's default).
    QTilde,
    /// `qmu`.
    Q,
    /// `q0` (discovery).
    Q0,
}

impl std::str::FromStr for TestStat {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "qtilde" => Ok(TestStat::QTilde),
            "q" => Ok(TestStat::Q),
            "q0" => Ok(TestStat::Q0),
            other => Err(crate::Error::Usage(format!(
                "unknown test statistic '{other}' (known: qtilde, q, q0)"
            ))),
        }
    }
}

impl std::fmt::Display for TestStat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TestStat::QTilde => "qtilde",
            TestStat::Q => "q",
            TestStat::Q0 => "q0",
        })
    }
}

/// The result of an asymptotic hypothesis test at one POI value.
#[derive(Debug, Clone)]
pub struct HypotestResult {
    pub mu: f64,
    pub test_stat: TestStat,
    /// CLs observed (for q0: the p-value p0).
    pub cls_obs: f64,
    pub clsb_obs: f64,
    pub clb_obs: f64,
    /// Expected CLs (p0 for q0) at -2, -1, 0, +1, +2 sigma.
    pub cls_exp: [f64; 5],
    /// The test statistic on the data and on the Asimov dataset.
    pub q_obs: f64,
    pub q_asimov: f64,
    /// True when every fit behind the numbers converged.
    pub converged: bool,
    /// Notes a physicist should see (as pyhf logs them).
    pub warnings: Vec<String>,
}

/// Standard normal CDF.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// Fits that do not depend on the tested POI value, computed once per dataset: the free fit
/// to the data, the Asimov dataset and the free fit to it.
pub struct AsymptoticCalculator<'m> {
    fitter: Fitter<'m>,
    data: Dataset,
    test_stat: TestStat,
    free_data: FitResult,
    asimov: Dataset,
    asimov_fit: FitResult,
    free_asimov: FitResult,
}

impl<'m> AsymptoticCalculator<'m> {
    pub fn new(model: &'m Model, data: &Dataset, test_stat: TestStat) -> Self {
        let mut fitter = Fitter::new(model);
        let free_data = fitter.fit_free(data);
        let asimov_mu = if test_stat == TestStat::Q0 { 1.0 } else { 0.0 };
        let asimov_fit = fitter.fit_fixed_poi(data, asimov_mu, None);
        let asimov = crate::cpu::Evaluator::new(model).expected_dataset(&asimov_fit.pars);
        let free_asimov = fitter.fit_free(&asimov);
        AsymptoticCalculator {
            fitter,
            data: data.clone(),
            test_stat,
            free_data,
            asimov,
            asimov_fit,
            free_asimov,
        }
    }

    /// The free fit to the data.
    pub fn free_fit(&self) -> &FitResult {
        &self.free_data
    }

    /// The Asimov dataset the expected results use.
    pub fn asimov(&self) -> &Dataset {
        &self.asimov
    }

    /// `(q, conditional fit)` of the data (`asimov = false`) or the Asimov dataset.
    fn q(&mut self, mu: f64, asimov: bool) -> (f64, FitResult) {
        let poi = self.fitter.model().poi;
        let (data, free) = if asimov {
            (&self.asimov, &self.free_asimov)
        } else {
            (&self.data, &self.free_data)
        };
        let tested = if self.test_stat == TestStat::Q0 {
            0.0
        } else {
            mu
        };
        let cond = self.fitter.fit_fixed_poi(data, tested, None);
        let t = (2.0 * (cond.nll - free.nll)).max(0.0);
        let muhat = free.pars[poi];
        let q = match self.test_stat {
            TestStat::Q0 => {
                if muhat < 0.0 {
                    0.0
                } else {
                    t
                }
            }
            _ => {
                if muhat > mu {
                    0.0
                } else {
                    t
                }
            }
        };
        (q, cond)
    }

    /// The asymptotic hypothesis test at `mu`.
    pub fn hypotest(&mut self, mu: f64) -> HypotestResult {
        let model = self.fitter.model();
        let mut warnings = Vec::new();
        let lower = model.parameters[model.poi].bounds.0;
        match self.test_stat {
            TestStat::QTilde if lower != 0.0 => warnings.push(format!(
                "qmu_tilde test statistic used for a POI not bounded at zero (lower bound {lower}); use the qmu test statistic (--test-stat q) instead"
            )),
            TestStat::Q if lower == 0.0 => warnings.push(
                "qmu test statistic used for a POI bounded at zero; use the qmu_tilde test statistic (--test-stat qtilde) instead".to_string(),
            ),
            TestStat::Q0 if mu != 0.0 => warnings.push(format!(
                "q0 tests mu = 0; the requested mu = {mu} is ignored"
            )),
            _ => {}
        }
        let (q_obs, cond_data) = self.q(mu, false);
        let (q_asimov, cond_asimov) = self.q(mu, true);
        let converged = [
            &self.free_data,
            &self.asimov_fit,
            &self.free_asimov,
            &cond_data,
            &cond_asimov,
        ]
        .iter()
        .all(|f| f.converged);
        if !converged {
            warnings.push("a fit behind this result did not converge".to_string());
        }
        let (sq, sqa) = (q_obs.sqrt(), q_asimov.sqrt());
        let t = match self.test_stat {
            TestStat::Q | TestStat::Q0 => sq - sqa,
            TestStat::QTilde => {
                if sq <= sqa {
                    sq - sqa
                } else {
                    (q_obs - q_asimov) / (2.0 * sqa)
                }
            }
        };
        let pvalues = |t: f64| {
            let clsb = normal_cdf(-(t + sqa));
            let clb = normal_cdf(-t);
            (clsb, clb, clsb / clb)
        };
        let (clsb_obs, clb_obs, cls) = pvalues(t);
        let mut cls_exp = [0.0; 5];
        for (k, n_sigma) in [2.0, 1.0, 0.0, -1.0, -2.0].into_iter().enumerate() {
            let (clsb, _, cls) = pvalues(n_sigma);
            cls_exp[k] = if self.test_stat == TestStat::Q0 {
                clsb
            } else {
                cls
            };
        }
        HypotestResult {
            mu,
            test_stat: self.test_stat,
            cls_obs: if self.test_stat == TestStat::Q0 {
                clsb_obs
            } else {
                cls
            },
            clsb_obs,
            clb_obs,
            cls_exp,
            q_obs,
            q_asimov,
            converged,
            warnings,
        }
    }
}

/// One asymptotic hypothesis test (pyhf's `infer.hypotest` with asymptotics).
pub fn hypotest(model: &Model, data: &Dataset, mu: f64, test_stat: TestStat) -> HypotestResult {
    AsymptoticCalculator::new(model, data, test_stat).hypotest(mu)
}
