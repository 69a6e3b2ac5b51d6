//! Engines other than the CPU's: the shared data-parallel layout of the model, and the
//! engines that evaluate it.

pub mod tables;

pub use tables::KernelTables;
