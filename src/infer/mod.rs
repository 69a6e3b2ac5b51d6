//! Inference on one likelihood: maximum-likelihood fits, profile scans, test statistics,
//! asymptotic CLs, upper limits and nuisance-parameter ranking, as pyhf computes them.

pub mod asymptotics;
pub mod gpu;
pub mod limits;
pub mod mle;
pub mod ranking;
pub mod scan;

pub use asymptotics::{hypotest, HypotestResult, TestStat};
pub use limits::{upper_limit, UpperLimit};
pub use mle::{fit_batch, FitOptions, FitResult, Fitter};
pub use ranking::{ranking, RankingEntry};
pub use scan::{profile_scan, ScanPoint};
