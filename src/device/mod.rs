//! Engines other than the CPU's: the shared data-parallel layout of the model, and the
//! engines that evaluate it.

pub mod tables;
#[cfg(feature = "metal")]
pub mod wgpu;

pub use tables::KernelTables;
