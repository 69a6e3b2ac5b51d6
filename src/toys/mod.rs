//! Toys: reproducible pseudo-experiments and toy-based hypothesis tests.

pub mod poisson;
pub mod rng;
