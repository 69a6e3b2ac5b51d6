//! Optimisation: a bounded L-BFGS-B minimiser and numerical Hessians.
//!
//! The minimiser is written as an explicit state machine over preallocated buffers (no
//! allocation per iteration), so that the same algorithm can run in lockstep on a GPU later:
//! every quantity it keeps between iterations lives in [`Lbfgsb`].

mod hessian;
mod lbfgsb;
mod matvec;

pub use hessian::{hessian_from_gradient, inverse_without, invert_symmetric};
pub use lbfgsb::{Lbfgsb, LbfgsbOptions, OptimResult, Status};
pub use matvec::mat_vec;
