//! Toys: reproducible pseudo-experiments and toy-based hypothesis tests.

pub mod generate;
pub mod gpu;
pub mod hypotest;
pub mod poisson;
pub mod rng;

pub use generate::ToyGenerator;
pub use hypotest::{
    baseline, hypotest_toys, pvalues, run_ensembles, Baseline, Ensembles, ToyOptions, ToyPValues,
};
