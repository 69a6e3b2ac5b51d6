//! Engines other than the CPU's: the shared data-parallel layout of the model, and the
//! engines that evaluate it.

pub mod tables;
#[cfg(feature = "metal")]
pub mod wgpu;

pub use tables::KernelTables;

use crate::{Error, Result};

/// The engine a computation runs on, chosen at run time (`--gpu cpu|metal|wgpu|cuda|auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// The f64 reference engine (rayon over items).
    Cpu,
    /// The portable f32 engine: WGSL through wgpu (named `metal` after its main target).
    Wgpu,
}

/// A `--gpu` request before it is resolved against what the machine has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    Exact(Device),
    /// The best engine available; says which.
    Auto,
}

impl std::str::FromStr for DeviceRequest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(DeviceRequest::Exact(Device::Cpu)),
            "metal" | "wgpu" => Ok(DeviceRequest::Exact(Device::Wgpu)),
            "auto" => Ok(DeviceRequest::Auto),
            c if c == "cuda" || c.starts_with("cuda:") => Err(Error::Device(
                "the CUDA engine is not part of this build yet; use --gpu metal (WGSL through wgpu) or --gpu cpu".into(),
            )),
            other => Err(Error::Usage(format!("unknown engine '{other}' (known: cpu, metal, wgpu, auto)"))),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Device::Cpu => "cpu",
            Device::Wgpu => "metal (wgpu)",
        })
    }
}
