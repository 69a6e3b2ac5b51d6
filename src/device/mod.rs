//! Engines other than the CPU's: the shared data-parallel layout of the model, the engines
//! that evaluate it, and the one interface ([`BatchSession`]) through which inference code
//! uses any of them without knowing which runs.

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod fit;
pub mod tables;
#[cfg(feature = "metal")]
pub mod wgpu;

pub use fit::{GpuFit, GpuFitOptions, GpuFitStatus, SharedPars};
pub use tables::KernelTables;

use crate::model::{Dataset, Model};
use crate::toys::ToyGenerator;
use crate::{Error, Result};

/// At most this many CUDA devices in one request (`cuda:0,1,...`).
pub const MAX_CUDA_DEVICES: usize = 8;

/// CUDA device ordinals of a `--gpu cuda...` request, in order; an ordinal may repeat (two
/// contexts on one card split work exactly as two cards would).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaOrdinals {
    len: u8,
    ids: [u8; MAX_CUDA_DEVICES],
}

impl CudaOrdinals {
    /// Every visible device (resolved when the engine opens).
    pub const ALL: CudaOrdinals = CudaOrdinals {
        len: 0,
        ids: [0; MAX_CUDA_DEVICES],
    };

    pub fn new(ids: &[usize]) -> Result<Self> {
        if ids.is_empty() || ids.len() > MAX_CUDA_DEVICES {
            return Err(Error::Usage(format!(
                "give between 1 and {MAX_CUDA_DEVICES} CUDA devices (got {})",
                ids.len()
            )));
        }
        let mut out = CudaOrdinals {
            len: ids.len() as u8,
            ids: [0; MAX_CUDA_DEVICES],
        };
        for (o, &i) in out.ids.iter_mut().zip(ids) {
            *o = u8::try_from(i)
                .map_err(|_| Error::Usage(format!("CUDA device ordinal {i} is too large")))?;
        }
        Ok(out)
    }

    /// The ordinals asked for; empty means every visible device.
    pub fn ids(&self) -> Vec<usize> {
        self.ids[..self.len as usize]
            .iter()
            .map(|&i| i as usize)
            .collect()
    }
}

/// The engine a computation runs on, chosen at run time (`--gpu cpu|metal|wgpu|cuda|auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// The f64 reference engine (rayon over items).
    Cpu,
    /// The portable f32 engine: WGSL through wgpu (named `metal` after its main target).
    Wgpu,
    /// The f64 CUDA engine on these devices (`cuda`, `cuda:1`, `cuda:0,1`).
    Cuda(CudaOrdinals),
}

impl Device {
    pub fn cpu() -> Self {
        Device::Cpu
    }
    /// The WGSL engine (Metal on Apple Silicon, Vulkan/DX12 elsewhere).
    pub fn metal() -> Self {
        Device::Wgpu
    }
    /// The CUDA engine on one device.
    pub fn cuda(ordinal: usize) -> Result<Self> {
        Ok(Device::Cuda(CudaOrdinals::new(&[ordinal])?))
    }
}

/// A `--gpu` request before it is resolved against what the machine has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    Exact(Device),
    /// The best engine available (CUDA, then the WGSL engine, then the CPU); says which.
    Auto,
}

impl std::str::FromStr for DeviceRequest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(DeviceRequest::Exact(Device::Cpu)),
            "metal" | "wgpu" => Ok(DeviceRequest::Exact(Device::Wgpu)),
            "auto" => Ok(DeviceRequest::Auto),
            "cuda" => Ok(DeviceRequest::Exact(Device::Cuda(CudaOrdinals::ALL))),
            c if c.starts_with("cuda:") => {
                let ids = c["cuda:".len()..]
                    .split(',')
                    .map(|x| {
                        x.trim().parse::<usize>().map_err(|_| {
                            Error::Usage(format!(
                                "'{c}': expected cuda:N or cuda:N,M,... with device ordinals"
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(DeviceRequest::Exact(Device::Cuda(CudaOrdinals::new(&ids)?)))
            }
            other => Err(Error::Usage(format!(
                "unknown engine '{other}' (known: cpu, metal, wgpu, cuda, cuda:N[,M...], auto)"
            ))),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Wgpu => f.write_str("metal (wgpu)"),
            Device::Cuda(o) if o.len == 0 => f.write_str("cuda"),
            Device::Cuda(o) => {
                let ids: Vec<String> = o.ids().iter().map(|i| i.to_string()).collect();
                write!(f, "cuda:{}", ids.join(","))
            }
        }
    }
}

/// One CUDA device as the driver reports it.
#[derive(Debug, Clone)]
pub struct CudaDeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (i32, i32),
    pub memory_bytes: usize,
}

/// The CUDA devices this machine offers, or why there are none (no driver, no NVRTC, a
/// build without the `cuda` feature).
pub fn cuda_devices() -> Result<Vec<CudaDeviceInfo>> {
    #[cfg(feature = "cuda")]
    {
        cuda::list_devices()
    }
    #[cfg(not(feature = "cuda"))]
    Err(Error::Device(
        "this build has no CUDA engine (rebuild with --features cuda)".into(),
    ))
}

/// One toy ensemble to fit on the device: its generator (at the generating parameters), its
/// ensemble number, where its fits start and their preconditioner, and where its toys come
/// from.
pub struct DeviceToyEnsemble<'a, 'm> {
    pub gen: &'a ToyGenerator<'m>,
    pub ensemble: u32,
    pub start: &'a [f64],
    pub inverse_diagonal: &'a [f64],
    /// `None`: the toys are drawn on the device and never leave it. `Some`: toys drawn on the
    /// host, `first_toy..first_toy + n_toys` of this ensemble in order (the same integers the
    /// device would draw), uploaded instead; they are fitted in the same joint batch.
    pub host_toys: Option<&'a [Dataset]>,
    /// The whole initial inverse Hessians of its free and its conditional fits (`n x n`
    /// each: the inverse Fisher information at `start` over each fit's free parameters),
    /// used in place of `inverse_diagonal` (symmetric: the engines read them by columns).
    pub dense: Option<[&'a [f64]; 2]>,
}

#[cfg(any(feature = "metal", feature = "cuda"))]
impl DeviceToyEnsemble<'_, '_> {
    /// The host toys of chunk `offset..offset + k` (toy indices from the batch's first toy),
    /// or an error when they are not there.
    fn host_chunk(&self, offset: usize, k: usize) -> Result<Option<&[Dataset]>> {
        let Some(toys) = self.host_toys else {
            return Ok(None);
        };
        toys.get(offset..offset + k).map(Some).ok_or(Error::Length {
            what: "host toys of the ensemble".into(),
            expected: offset + k,
            got: toys.len(),
        })
    }
}

/// The datasets' rows as the engines read them: per dataset its main counts, then its
/// auxiliary data, each converted by `to` (f32 or f64) and checked to be `len` long (a short
/// row would shift every row after it).
#[cfg(any(feature = "metal", feature = "cuda"))]
fn dataset_rows<'d, T>(
    data: impl IntoIterator<Item = &'d Dataset>,
    len: usize,
    to: impl Fn(f64) -> T,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for d in data {
        if d.main.len() + d.aux.len() != len {
            return Err(Error::Length {
                what: "dataset (main counts and auxiliary data)".into(),
                expected: len,
                got: d.main.len() + d.aux.len(),
            });
        }
        out.extend(d.main.iter().chain(&d.aux).map(|&x| to(x)));
    }
    Ok(out)
}

/// A model uploaded to a GPU engine: the batch operations inference code needs, the same on
/// every engine. Results are f64 whatever the engine's width; engines in f32 document what
/// that costs (see [`BatchSession::precision_bits`]).
pub trait BatchSession {
    /// What runs this session, for messages ("cuda:0 NVIDIA H200", "metal (wgpu) ...").
    fn describe(&self) -> String;
    /// 32 or 64: the float width of the device arithmetic.
    fn precision_bits(&self) -> u32;
    /// Fit settings suited to this engine's width.
    fn fit_options(&self) -> GpuFitOptions;
    /// NLL (pyhf's -logpdf, constants included) and gradient per (parameters, dataset) pair.
    fn nll_grad_batch(&self, pars: &[&[f64]], data: &[&Dataset]) -> Result<Vec<(f64, Vec<f64>)>>;
    /// Fits every dataset on the device from `starts`, holding `fixed` parameters at their
    /// start values, preconditioned by `inverse_diagonal`.
    fn fit_batch(
        &self,
        data: &[&Dataset],
        starts: &[&[f64]],
        fixed: &[bool],
        inverse_diagonal: &[f64],
        opts: &GpuFitOptions,
    ) -> Result<Vec<GpuFit>>;
    /// Draws toys `first_toy..first_toy + n_toys` of `ensemble` on the device and fits each
    /// twice there (free, and with the POI held at `tested`), both from `start`: the toys
    /// never leave the device. Returns (free fits, conditional fits).
    #[allow(clippy::too_many_arguments)]
    fn fit_device_toys(
        &self,
        gen: &ToyGenerator,
        seed: u64,
        ensemble: u32,
        first_toy: u64,
        n_toys: u64,
        start: &[f64],
        tested: f64,
        inverse_diagonal: &[f64],
        opts: &GpuFitOptions,
    ) -> Result<(Vec<GpuFit>, Vec<GpuFit>)> {
        let one = DeviceToyEnsemble {
            gen,
            ensemble,
            start,
            inverse_diagonal,
            host_toys: None,
            dense: None,
        };
        self.fit_device_toy_ensembles(&[one], seed, first_toy, n_toys, tested, opts)?
            .pop()
            .ok_or_else(|| Error::Device("no result for the toy ensemble".into()))
    }
    /// [`BatchSession::fit_device_toys`] for several ensembles of the same toy indices (both
    /// ensembles of a toy-based test), as one batch: one set of launches or dispatches, whose
    /// straggling tail is paid once. An ensemble with `host_toys` has them uploaded instead
    /// of drawn (and `seed` does not apply to it). Returns each ensemble's (free fits,
    /// conditional fits), in order.
    fn fit_device_toy_ensembles(
        &self,
        ensembles: &[DeviceToyEnsemble],
        seed: u64,
        first_toy: u64,
        n_toys: u64,
        tested: f64,
        opts: &GpuFitOptions,
    ) -> Result<Vec<(Vec<GpuFit>, Vec<GpuFit>)>>;
    /// Many fits of one dataset: fit `i` starts at `starts[i]` and also holds parameter
    /// `extra_fixed[i]` (none for `u32::MAX`): scan points and ranking refits.
    fn fit_variants(
        &self,
        data: &Dataset,
        starts: &[Vec<f64>],
        extra_fixed: &[u32],
        inverse_diagonal: &[f64],
        opts: &GpuFitOptions,
    ) -> Result<Vec<GpuFit>>;
    /// Toys drawn on the device, read back: integer Poisson counts (per toy: main bins, then
    /// Poisson auxiliary data) and the datasets (per toy: main counts, then auxiliary data).
    fn sample_toys(
        &self,
        gen: &ToyGenerator,
        seed: u64,
        ensemble: u32,
        first_toy: u64,
        n_toys: u32,
    ) -> Result<(Vec<u32>, Vec<f64>)>;
}

/// An opened GPU engine (the CPU engine needs none).
pub enum Engine {
    #[cfg(feature = "metal")]
    Wgpu(Box<wgpu::WgpuEngine>),
    #[cfg(feature = "cuda")]
    Cuda(cuda::CudaEngine),
}

impl Engine {
    /// Opens what `request` asks for: `None` for the CPU engine. An engine that is not there
    /// is an error, except for `auto`, which falls back (CUDA, then wgpu, then the CPU) and
    /// says so on stderr through `notice`.
    pub fn open(request: DeviceRequest, notice: &mut dyn FnMut(String)) -> Result<Option<Engine>> {
        match request {
            DeviceRequest::Exact(Device::Cpu) => Ok(None),
            DeviceRequest::Exact(Device::Wgpu) => {
                let e = Self::open_wgpu()?;
                if e.fell_back_to_gl() {
                    notice(format!(
                        "note: only a GL adapter was found ({}); the WGSL engine runs, slowly",
                        e.describe()
                    ));
                }
                Ok(Some(e))
            }
            DeviceRequest::Exact(Device::Cuda(o)) => Self::open_cuda(o).map(Some),
            DeviceRequest::Auto => {
                let mut why = Vec::new();
                match Self::open_cuda(CudaOrdinals::ALL) {
                    Ok(e) => return Ok(Some(e)),
                    Err(e) => why.push(format!("cuda: {e}")),
                }
                match Self::open_wgpu() {
                    Ok(e) => {
                        notice(format!(
                            "--gpu auto: using {} ({})",
                            e.describe(),
                            why.join("; ")
                        ));
                        return Ok(Some(e));
                    }
                    Err(e) => why.push(format!("wgpu: {e}")),
                }
                notice(format!(
                    "--gpu auto: no GPU engine ({}); using the CPU engine",
                    why.join("; ")
                ));
                Ok(None)
            }
        }
    }

    fn open_wgpu() -> Result<Engine> {
        #[cfg(feature = "metal")]
        {
            wgpu::WgpuEngine::new().map(|e| Engine::Wgpu(Box::new(e)))
        }
        #[cfg(not(feature = "metal"))]
        Err(Error::Device(
            "this build has no WGSL engine (rebuild with --features metal)".into(),
        ))
    }

    #[allow(unused_variables)]
    fn open_cuda(ordinals: CudaOrdinals) -> Result<Engine> {
        #[cfg(feature = "cuda")]
        {
            cuda::CudaEngine::new(&ordinals.ids()).map(Engine::Cuda)
        }
        #[cfg(not(feature = "cuda"))]
        Err(Error::Device(
            "this build has no CUDA engine (rebuild with --features cuda)".into(),
        ))
    }

    /// Whether the WGSL engine found only a GL adapter (slow).
    pub fn fell_back_to_gl(&self) -> bool {
        match self {
            #[cfg(feature = "metal")]
            Engine::Wgpu(e) => e.fell_back_to_gl,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The engine and its device(s), in words.
    pub fn describe(&self) -> String {
        match self {
            #[cfg(feature = "metal")]
            Engine::Wgpu(e) => {
                let reductions = match e.subgroup_size {
                    Some(n) => format!("subgroups of {n}"),
                    None => "workgroup trees".to_string(),
                };
                format!(
                    "metal (wgpu: {} via {}, reductions by {reductions})",
                    e.adapter.name, e.adapter.backend
                )
            }
            #[cfg(feature = "cuda")]
            Engine::Cuda(e) => e.describe(),
            #[allow(unreachable_patterns)]
            _ => unreachable!("an Engine value exists only for a built engine"),
        }
    }

    /// Uploads `model` once; the session runs batches against it.
    #[cfg_attr(not(any(feature = "metal", feature = "cuda")), allow(unused_variables))]
    pub fn session<'a>(&'a self, model: &'a Model) -> Result<Box<dyn BatchSession + 'a>> {
        match self {
            #[cfg(feature = "metal")]
            Engine::Wgpu(e) => Ok(Box::new(e.session(model)?)),
            #[cfg(feature = "cuda")]
            Engine::Cuda(e) => Ok(Box::new(e.session(model)?)),
            #[allow(unreachable_patterns)]
            _ => unreachable!("an Engine value exists only for a built engine"),
        }
    }
}
