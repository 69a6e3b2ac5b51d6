//! The f64 CUDA engine: the kernels of `cuda/` compiled at run time by NVRTC and run through
//! cudarc (driver API, libraries loaded dynamically, so building needs no CUDA toolkit).
//!
//! The model is uploaded once per [`CudaSession`] (the same [`PackedTables`] as the WGSL
//! engine, kept f64). One thread block evaluates one item; the L-BFGS kernel's blocks are
//! persistent: each fits the next item of the batch to the end and takes another, so a
//! finished fit retires at once and a batch is one launch. Several devices
//! (`--gpu cuda:0,1`) split every batch by item index; each item's arithmetic is the same on
//! any device, so results do not depend on the split. A session's single evaluations go to a
//! server block that stays resident between calls (`nll_grad_serve` in cuda/nll_grad.cu): no
//! launch per call.

use super::fit::{GpuFit, GpuFitOptions, GpuFitStatus};
use super::tables::{KernelTables, PackedTables};
use super::BatchSession;
use crate::model::{Dataset, Model};
use crate::toys::ToyGenerator;
use crate::trace::Trace;
use crate::{Error, Result};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PinnedHostSlice, PushKernelArg,
};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

const MODEL: &str = include_str!("../../cuda/model.cuh");
const NLL_ENTRY: &str = include_str!("../../cuda/nll_grad.cu");
const FIT_ENTRY: &str = include_str!("../../cuda/fit.cu");
const SAMPLE_ENTRY: &str = include_str!("../../cuda/sample_toys.cu");
/// Threads per block (`WG` in cuda/model.cuh) of the throughput kernels (fits, large batches).
const WG: u32 = 128;
/// Threads per output of a phase in the throughput kernels (`GS` in cuda/model.cuh): 8 split
/// the long per-parameter and per-block loops evenly enough to beat a thread per output
/// (tHu phase B on the H200: 0.695 s against 0.756 s, session 4).
const GROUP: u32 = 8;
/// Threads per block of the latency kernel (small NLL batches: one item gets a whole block,
/// its phases split over groups of [`SMALL_GROUPS`] threads per output).
const SMALL_WG: u32 = 1024;
/// Threads per output in the latency kernel's phases: `GS`, `GSS` and `GSG` of
/// cuda/model.cuh (in general, per sample-bin in the histosys sums, per parameter in the
/// gradient). On the H200 (tHu), 16 per parameter took the gradient phase from 22.8k to 15.8k
/// cycles (session 5); 2 per sample-bin beat 8 in a fresh launch (that loop 2.3k against 12.4k
/// cycles, session 5), but with the server's warm caches 8 is the faster (one call 32.4–33.0
/// against 33.4–34.5 µs, three rounds alternating, session 6 run H).
const SMALL_GROUPS: [u32; 3] = [8, 8, 16];
/// Items per launch at most: bounds the per-item buffers of one launch (datasets, parameters,
/// status); fewer when a quarter of the device's free memory cannot hold them. (Optimizer
/// state and scratch are per block slot, not per item.)
const MAX_ITEMS_PER_LAUNCH: usize = 65536;

/// Loads library `lib` ("cuda" or "nvrtc") the way cudarc will, so that a machine without it
/// gets an error instead of cudarc's panic. The library stays loaded (the handle is kept), so
/// cudarc's own load finds it in place; NVRTC is probed only when kernels must be compiled
/// (not when their PTX is in the cache), so a cached run never loads it.
fn probe_library(lib: &'static str) -> Result<()> {
    static CUDA: OnceLock<std::result::Result<libloading::Library, String>> = OnceLock::new();
    static NVRTC: OnceLock<std::result::Result<libloading::Library, String>> = OnceLock::new();
    let (cell, what) = match lib {
        "cuda" => (&CUDA, "the CUDA driver"),
        _ => (&NVRTC, "NVRTC"),
    };
    cell.get_or_init(|| {
        let mut names = cudarc::get_lib_name_candidates(lib);
        let mut seen = std::collections::HashSet::new();
        names.retain(|n| seen.insert(n.clone()));
        // SAFETY: loading a shared library runs its initialisers; these are the vendor's CUDA
        // libraries that cudarc itself would load next.
        names
            .iter()
            .find_map(|n| unsafe { libloading::Library::new(n) }.ok())
            .ok_or_else(|| {
                format!(
                    "{what} library was not found (tried {}); install the NVIDIA driver and CUDA's NVRTC, or use --gpu metal or --gpu cpu",
                    names.join(", ")
                )
            })
    })
    .as_ref()
    .map(|_| ())
    .map_err(|e| Error::Device(e.clone()))
}

fn cuda_err(what: &str) -> impl Fn(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::Device(format!("CUDA {what}: {e}"))
}

/// A tuning knob from the environment (`name`), else `default`; a value that `ok` rejects is
/// an error that says what is expected, never ignored.
fn tuning(name: &str, default: u32, ok: impl Fn(u32) -> bool, expected: &str) -> Result<u32> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(v) => match v.trim().parse::<u32>() {
            Ok(b) if ok(b) => Ok(b),
            _ => Err(Error::Usage(format!("{name}='{v}': expected {expected}"))),
        },
    }
}

/// How one module of the kernels is compiled: threads per block (`WG`), blocks per SM the
/// compiler keeps registers for (`MINB`), threads per output of a phase (`GS`), per
/// sample-bin in the histosys sums (`GSS`) and per parameter in the gradient phase (`GSG`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct KernelShape {
    block: u32,
    min_blocks: u32,
    group: u32,
    sample_group: u32,
    grad_group: u32,
}

impl KernelShape {
    /// The throughput kernels: [`WG`] threads, 6 blocks per SM (at most 85 registers a
    /// thread), [`GROUP`] threads per output in every phase, unless `NEXTSTAT_CUDA_BLOCK`,
    /// `NEXTSTAT_CUDA_MIN_BLOCKS`, `NEXTSTAT_CUDA_GROUP`, `NEXTSTAT_CUDA_SAMPLE_GROUP` or
    /// `NEXTSTAT_CUDA_GRAD_GROUP` say otherwise (for tuning on a new GPU).
    fn throughput() -> Result<Self> {
        Self::from_env("NEXTSTAT_CUDA", WG, 6, [GROUP; 3])
    }

    /// The latency kernel of small NLL batches: [`SMALL_WG`] threads in groups of
    /// [`SMALL_GROUPS`], registers for one block per SM, unless `NEXTSTAT_CUDA_SMALL_BLOCK`,
    /// `NEXTSTAT_CUDA_SMALL_MIN_BLOCKS`, `NEXTSTAT_CUDA_SMALL_GROUP`,
    /// `NEXTSTAT_CUDA_SMALL_SAMPLE_GROUP` or `NEXTSTAT_CUDA_SMALL_GRAD_GROUP` say otherwise.
    fn latency() -> Result<Self> {
        Self::from_env("NEXTSTAT_CUDA_SMALL", SMALL_WG, 1, SMALL_GROUPS)
    }

    fn from_env(prefix: &str, block: u32, min_blocks: u32, groups: [u32; 3]) -> Result<Self> {
        let block = tuning(
            &format!("{prefix}_BLOCK"),
            block,
            |b| (32..=1024).contains(&b) && b % 32 == 0,
            "a multiple of 32 from 32 to 1024",
        )?;
        let min_blocks = tuning(
            &format!("{prefix}_MIN_BLOCKS"),
            min_blocks,
            |b| (1..=32).contains(&b),
            "1 to 32",
        )?;
        let [group, sample_group, grad_group] = [
            ("GROUP", groups[0]),
            ("SAMPLE_GROUP", groups[1]),
            ("GRAD_GROUP", groups[2]),
        ]
        .map(|(name, default)| {
            tuning(
                &format!("{prefix}_{name}"),
                default,
                |g| g.is_power_of_two() && g <= 32,
                "1, 2, 4, 8, 16 or 32",
            )
        });
        let (group, sample_group, grad_group) = (group?, sample_group?, grad_group?);
        Ok(KernelShape {
            block,
            min_blocks,
            group,
            sample_group,
            grad_group,
        })
    }
}

/// FNV-1a, for naming cached PTX by its source and options.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for p in parts {
        for b in p.bytes().chain([0u8]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
}

/// Where compiled PTX is kept between runs: `$NEXTSTAT_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/nextstat`, else `~/.cache/nextstat`.
fn cache_dir() -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    if let Some(d) = std::env::var_os("NEXTSTAT_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("nextstat"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/nextstat"))
}

/// The kernels compiled for one architecture and block size: once per process, and kept on
/// disk (named by a hash of the source and options) so that later runs skip NVRTC. A cache
/// that cannot be read or written only costs the compilation.
fn ptx_for(arch: &str, shape: KernelShape) -> Result<Ptx> {
    type Key = (String, KernelShape);
    static CACHE: OnceLock<Mutex<HashMap<Key, Ptx>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = cache
        .lock()
        .map_err(|_| Error::Device("the NVRTC cache was poisoned".into()))?;
    let key = (arch.to_string(), shape);
    if let Some(p) = map.get(&key) {
        return Ok(p.clone());
    }
    let (src, options) = kernel_source(arch, shape);
    let file = cache_dir().map(|d| {
        let h = fnv1a(&[&src, &options.join(" "), env!("CARGO_PKG_VERSION")]);
        d.join(format!("cuda-{arch}-{h:016x}.ptx"))
    });
    if let Some(text) = file.as_ref().and_then(|f| std::fs::read_to_string(f).ok()) {
        let ptx = Ptx::from_src(text);
        map.insert(key, ptx.clone());
        return Ok(ptx);
    }
    let ptx = compile(src, options)?;
    if let Some(f) = &file {
        // written whole to a temporary name, then renamed: readers never see half a file
        let tmp = f.with_extension(format!("tmp{}", std::process::id()));
        let written = f
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| std::fs::write(&tmp, ptx.to_src()))
            .and_then(|_| std::fs::rename(&tmp, f));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    map.insert(key, ptx.clone());
    Ok(ptx)
}

/// The kernels' source and NVRTC options for an architecture and a kernel shape.
fn kernel_source(arch: &str, shape: KernelShape) -> (String, Vec<String>) {
    let src = format!("{MODEL}\n{NLL_ENTRY}\n{FIT_ENTRY}\n{SAMPLE_ENTRY}");
    let options = vec![
        format!("--gpu-architecture={arch}"),
        format!("-DWG={}", shape.block),
        format!("-DMINB={}", shape.min_blocks),
        format!("-DGS={}", shape.group),
        format!("-DGSS={}", shape.sample_group),
        format!("-DGSG={}", shape.grad_group),
        "--fmad=true".to_string(),
    ];
    (src, options)
}

/// Compiles the kernels with NVRTC (no cache).
fn compile(src: String, options: Vec<String>) -> Result<Ptx> {
    probe_library("nvrtc")?;
    let opts = CompileOptions {
        options,
        name: Some("nextstat.cu".into()),
        ..Default::default()
    };
    compile_ptx_with_opts(src, opts)
        .map_err(|e| Error::Device(format!("NVRTC could not compile the CUDA kernels: {e}")))
}

/// The latency kernels (small NLL batches), compiled and loaded on first use: `nll` reads
/// its items from mapped host memory, `serve` is the server of single items ([`Server`]).
#[derive(Clone)]
struct LatencyKernel {
    nll: CudaFunction,
    serve: CudaFunction,
    block: u32,
}

/// One device with the kernels loaded.
struct Gpu {
    ordinal: usize,
    name: String,
    ctx: Arc<CudaContext>,
    arch: String,
    stream: Arc<CudaStream>,
    /// Built on the first small NLL batch (fits and toys never need it); an error is kept as
    /// its message.
    latency: OnceLock<std::result::Result<LatencyKernel, String>>,
    nll: CudaFunction,
    fit: CudaFunction,
    sample: CudaFunction,
    constants: CudaFunction,
    /// Shared memory a block may opt in to.
    max_shared: usize,
    /// Threads per block the kernels were compiled for.
    block: u32,
    /// Streaming multiprocessors.
    sm_count: usize,
}

impl Gpu {
    fn open(ordinal: usize) -> Result<Self> {
        let mut trace = Trace::start("cuda open");
        let ctx = CudaContext::new(ordinal).map_err(cuda_err("cannot open the device"))?;
        trace.mark("context");
        let name = ctx.name().map_err(cuda_err("device name"))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(cuda_err("compute capability"))?;
        let max_shared = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            )
            .map_err(cuda_err("shared memory limit"))? as usize;
        let sm_count = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )
            .map_err(cuda_err("multiprocessor count"))?
            .max(1) as usize;
        let shape = KernelShape::throughput()?;
        let arch = format!("compute_{major}{minor}");
        let ptx = ptx_for(&arch, shape)?;
        trace.mark("kernels compiled or read from the cache");
        // SAFETY: each context is used through its one stream only (`default_stream` below),
        // so cudarc's per-buffer events, which order uses across streams, are not needed.
        unsafe { ctx.disable_event_tracking() };
        let module = ctx
            .load_module(ptx)
            .map_err(cuda_err("loading the kernels"))?;
        trace.mark("module loaded");
        let f = |n: &str| {
            module
                .load_function(n)
                .map_err(|e| Error::Device(format!("CUDA kernel {n}: {e}")))
        };
        Ok(Gpu {
            ordinal,
            name,
            stream: ctx.default_stream(),
            ctx,
            arch,
            latency: OnceLock::new(),
            nll: f("nll_grad")?,
            fit: f("fit")?,
            sample: f("sample_toys")?,
            constants: f("toy_constants")?,
            max_shared,
            block: shape.block,
            sm_count,
        })
    }

    /// The latency kernel, compiled (or read from the PTX cache) and loaded on first use.
    fn latency_kernel(&self) -> Result<LatencyKernel> {
        self.latency
            .get_or_init(|| {
                let load = || -> Result<LatencyKernel> {
                    let shape = KernelShape::latency()?;
                    let module = self
                        .ctx
                        .load_module(ptx_for(&self.arch, shape)?)
                        .map_err(cuda_err("loading the latency kernel"))?;
                    let [nll, serve] = ["nll_grad", "nll_grad_serve"].map(|name| {
                        let f = module
                            .load_function(name)
                            .map_err(cuda_err("the latency kernel"))?;
                        // every model's layout stays within the device's opt-in limit
                        f.set_attribute(
                            cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                            self.max_shared as i32,
                        )
                        .map_err(cuda_err("shared memory size"))?;
                        Ok::<_, Error>(f)
                    });
                    Ok(LatencyKernel {
                        nll: nll?,
                        serve: serve?,
                        block: shape.block,
                    })
                };
                load().map_err(|e| e.to_string())
            })
            .clone()
            .map_err(Error::Device)
    }
}

/// The CUDA engine on one or more devices.
pub struct CudaEngine {
    gpus: Vec<Gpu>,
}

/// Number of CUDA devices visible (0 when there is no driver).
pub fn device_count() -> Result<usize> {
    probe_library("cuda")?;
    CudaContext::device_count()
        .map(|n| n.max(0) as usize)
        .map_err(cuda_err("counting devices"))
}

/// Each visible device.
pub fn list_devices() -> Result<Vec<super::CudaDeviceInfo>> {
    let n = device_count()?;
    (0..n)
        .map(|i| {
            let ctx = CudaContext::new(i).map_err(cuda_err("cannot open the device"))?;
            Ok(super::CudaDeviceInfo {
                ordinal: i,
                name: ctx.name().map_err(cuda_err("device name"))?,
                compute_capability: ctx
                    .compute_capability()
                    .map_err(cuda_err("compute capability"))?,
                memory_bytes: ctx.total_mem().map_err(cuda_err("memory size"))?,
            })
        })
        .collect()
}

impl CudaEngine {
    /// Opens the devices `ordinals` (every visible device when empty) and compiles the kernels
    /// (once per process and architecture).
    pub fn new(ordinals: &[usize]) -> Result<Self> {
        let mut trace = Trace::start("cuda open");
        let n = device_count()?;
        trace.mark("libraries found, devices counted");
        if n == 0 {
            return Err(Error::Device("no CUDA device is visible".into()));
        }
        let ids: Vec<usize> = if ordinals.is_empty() {
            (0..n).collect()
        } else {
            ordinals.to_vec()
        };
        if let Some(&bad) = ids.iter().find(|&&i| i >= n) {
            return Err(Error::Device(format!(
                "CUDA device {bad} does not exist ({n} visible: 0..{})",
                n - 1
            )));
        }
        let gpus = ids.into_iter().map(Gpu::open).collect::<Result<Vec<_>>>()?;
        Ok(CudaEngine { gpus })
    }

    /// The devices in words: "cuda:0 NVIDIA H200" or "cuda:0,1 (2 x NVIDIA H200)".
    pub fn describe(&self) -> String {
        let ids: Vec<String> = self.gpus.iter().map(|g| g.ordinal.to_string()).collect();
        let mut names: Vec<&str> = self.gpus.iter().map(|g| g.name.as_str()).collect();
        names.dedup();
        if self.gpus.len() == 1 {
            format!("cuda:{} {}", ids[0], names.join(", "))
        } else {
            format!(
                "cuda:{} ({} devices: {})",
                ids.join(","),
                self.gpus.len(),
                names.join(", ")
            )
        }
    }

    /// Number of devices the work is split over.
    pub fn n_devices(&self) -> usize {
        self.gpus.len()
    }

    /// Uploads `model` once to every device; the session runs batches against it.
    pub fn session<'a>(&'a self, model: &'a Model) -> Result<CudaSession<'a>> {
        CudaSession::new(self, model)
    }
}

/// Where an item's scratch lives (`SCRATCH_MODE_*` in cuda/model.cuh): all in shared memory
/// for small models; the normsys log-derivatives (the largest area) in global memory when the
/// rest fits, so that more blocks share an SM; all in global memory as a last resort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScratchMode {
    Shared = 0,
    DlogGlobal = 1,
    Global = 2,
}

/// Shared memory below which a throughput block keeps all its scratch there (it then runs at
/// full occupancy anyway); the latency kernel, one block per SM, keeps it all there whenever
/// it fits.
const SMALL_SHARED_BYTES: usize = 24 * 1024;

/// How a block of `block` threads lays out its shared memory for a model: parameters,
/// gradient, the reduction slots and the flag, then as much of the item's scratch as fits
/// (all of it when that is at most `all_shared_below` bytes, else all but the normsys
/// log-derivatives, else none), then `staged` floats (the latency kernel's copy of its
/// dataset row; 0 for the throughput kernels).
struct BlockLayout {
    mode: ScratchMode,
    /// Dynamic shared memory per block.
    bytes: usize,
    /// Floats of global scratch per item.
    global_per_item: usize,
}

impl BlockLayout {
    fn new(
        np: usize,
        scratch_per_item: usize,
        dlog_at: usize,
        g: &Gpu,
        block: u32,
        (staged, all_shared_below): (usize, usize),
    ) -> Result<Self> {
        let base = 8 * (2 * np + (block / 32) as usize + 2 + staged);
        let (mode, bytes, global_per_item) = if base + 8 * scratch_per_item
            <= all_shared_below.min(g.max_shared)
        {
            (ScratchMode::Shared, base + 8 * scratch_per_item, 0)
        } else if base + 8 * dlog_at <= g.max_shared {
            (
                ScratchMode::DlogGlobal,
                base + 8 * dlog_at,
                scratch_per_item - dlog_at,
            )
        } else if base <= g.max_shared {
            (ScratchMode::Global, base, scratch_per_item)
        } else {
            return Err(Error::Device(format!(
                    "the model has {np} parameters; a CUDA block needs {base} bytes of shared memory for them, above {}'s {} bytes",
                    g.name, g.max_shared
                )));
        };
        Ok(BlockLayout {
            mode,
            bytes,
            global_per_item,
        })
    }
}

/// The model's tables on one device, and how a block lays out its shared memory.
struct DeviceModel {
    ints: CudaSlice<u32>,
    floats: CudaSlice<f64>,
    mode: ScratchMode,
    shared_bytes: u32,
    /// Floats of global scratch per item.
    global_per_item: usize,
    /// Items one launch takes (memory-bound, at most [`MAX_ITEMS_PER_LAUNCH`]).
    max_items: usize,
    /// Floats of scratch per item, and where in it the normsys log-derivatives start.
    scratch_per_item: usize,
    dlog_at: usize,
}

/// A model on the device(s).
pub struct CudaSession<'a> {
    engine: &'a CudaEngine,
    model: &'a Model,
    on: Vec<DeviceModel>,
    /// Per device: the latency kernel's buffers for small NLL batches, made on the first.
    small: Vec<Mutex<Option<SmallBatch>>>,
}

/// Batches of at most this many NLL evaluations reuse a session's buffers.
const SMALL_BATCH: usize = 64;

/// Device buffers of one NLL batch: parameters then datasets in, NLL and gradient out.
struct IoBuffers {
    input: CudaSlice<f64>,
    out: CudaSlice<f64>,
    scratch: CudaSlice<f64>,
}

/// What a small NLL batch (the latency a differentiable layer sees) runs with on one device:
/// the latency kernels, their block layout for the model, inputs and outputs for
/// [`SMALL_BATCH`] items in page-locked host memory mapped into the device's address space,
/// and the server of single items. The kernels read the inputs and write the outputs over
/// the bus, so a batch is one launch and one synchronisation, with no copies to wait for, and
/// a single item (served) not even that.
struct SmallBatch {
    /// First, so that it is dropped (and the kernel gone) before the buffers it uses.
    server: Server,
    kernel: LatencyKernel,
    layout: BlockLayout,
    /// Parameters then datasets (write-combined: the host only writes them).
    input: Mapped<f64>,
    /// NLL and gradient per item.
    out: Mapped<f64>,
    scratch: CudaSlice<f64>,
}

/// Page-locked host memory mapped into a device's address space: the allocation, its host
/// address (taken once: cudarc's accessors synchronise on an event every time) and its
/// device address.
struct Mapped<T> {
    _host: PinnedHostSlice<T>,
    ptr: *mut T,
    len: usize,
    dev: u64,
}

// SAFETY: the pointer is the allocation's own, which lives as long as `_host`; every access
// goes through the `Mutex` that holds the session's `SmallBatch`.
unsafe impl<T> Send for Mapped<T> {}

impl<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits + Copy + Default> Mapped<T> {
    /// `len` zeroed values (`flags` as cuMemHostAlloc takes them, besides DEVICEMAP).
    fn new(ctx: &Arc<CudaContext>, len: usize, flags: u32) -> Result<Self> {
        use cudarc::driver::sys;
        let len = len.max(1);
        // SAFETY: the memory is filled below before anything reads it.
        let mut host = unsafe {
            ctx.alloc_pinned_with_flags::<T>(len, flags | sys::CU_MEMHOSTALLOC_DEVICEMAP)
        }
        .map_err(cuda_err("page-locked allocation"))?;
        host.as_mut_slice()
            .map_err(cuda_err("page-locked allocation"))?
            .fill(T::default());
        let ptr = host
            .as_mut_ptr()
            .map_err(cuda_err("page-locked allocation"))?;
        let mut dev: sys::CUdeviceptr = 0;
        // SAFETY: `ptr` is a live allocation of this context made with CU_MEMHOSTALLOC_DEVICEMAP.
        unsafe { sys::cuMemHostGetDevicePointer_v2(&mut dev, ptr.cast(), 0) }
            .result()
            .map_err(cuda_err("mapping page-locked memory"))?;
        Ok(Mapped {
            _host: host,
            ptr,
            len,
            dev,
        })
    }

    /// The host's view. The kernels write `out` only between a request (or launch) and its
    /// answer (or synchronisation), and the host reads it only after that.
    fn slice(&self) -> &[T] {
        // SAFETY: `ptr` holds `len` initialised values for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn slice_mut(&mut self) -> &mut [T] {
        // SAFETY: as `slice`, and `&mut self` makes this the only host view.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

/// How long the server of single items (`nll_grad_serve` in cuda/nll_grad.cu) stays on the
/// device without a request before it leaves. While it runs it holds one SM and polls host
/// memory; a device-wide synchronisation elsewhere in the process would wait for it, at most
/// this long.
const SERVER_IDLE: std::time::Duration = std::time::Duration::from_millis(10);

/// The server of a session's single evaluations on one device: one block that stays resident
/// while requests keep coming (launched on the first, relaunched after it left for lack of
/// work), on a stream of its own so that it runs beside the other kernels. A call writes the
/// inputs to mapped host memory as LL words tagged with the request's number (see
/// cuda/nll_grad.cu) and polls the answer's words for the same number: no launch, no
/// synchronisation, no flag or fence besides the data, and the kernel's code, constants and
/// the model's tables stay in the SM's caches between calls.
struct Server {
    stream: Arc<CudaStream>,
    /// The host's counter (the stop request) and the generation of the last server that left
    /// for lack of work (the kernel's).
    mailbox: Mapped<u64>,
    /// Parameters then the dataset row, two LL words a value (write-combined: the host only
    /// writes them).
    input: Mapped<u64>,
    /// The NLL then the gradient, two LL words a value.
    answer: Mapped<u64>,
    /// The last request made (and answered).
    seq: u64,
    /// Launches so far; the running server's number.
    generation: u64,
    state: ServerState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ServerState {
    /// Not on the device (never launched, or known to have left).
    Gone,
    /// Launched, maybe waiting for work.
    Running,
    /// Told to stop; may still be leaving.
    Stopping,
}

/// Two LL words of `v` tagged with `flag` (cuda/nll_grad.cu): the low half, then the high.
fn ll_words(v: f64, flag: u32) -> [u64; 2] {
    let (bits, tag) = (v.to_bits(), u64::from(flag) << 32);
    [(bits & 0xffff_ffff) | tag, (bits >> 32) | tag]
}

/// The value of two LL words, when both carry `flag`.
fn ll_value(words: [u64; 2], flag: u32) -> Option<f64> {
    let tagged = words.iter().all(|w| (w >> 32) as u32 == flag);
    tagged.then(|| f64::from_bits((words[0] & 0xffff_ffff) | (words[1] << 32)))
}

impl Server {
    /// A server for items of `n_in` input values (parameters and dataset row) and `n_out`
    /// answer values (NLL and gradient).
    fn new(ctx: &Arc<CudaContext>, n_in: usize, n_out: usize) -> Result<Self> {
        Ok(Server {
            stream: ctx.new_stream().map_err(cuda_err("stream"))?,
            mailbox: Mapped::new(ctx, 2, 0)?,
            input: Mapped::new(
                ctx,
                2 * n_in,
                cudarc::driver::sys::CU_MEMHOSTALLOC_WRITECOMBINED,
            )?,
            answer: Mapped::new(ctx, 2 * n_out, 0)?,
            seq: 0,
            generation: 0,
            state: ServerState::Gone,
        })
    }

    /// Counter `i` of the mailbox, shared with the device.
    fn counter(&self, i: usize) -> &std::sync::atomic::AtomicU64 {
        // SAFETY: the mailbox holds 2 aligned u64 for as long as `self` lives, and the device
        // touches them only with 8-byte (relaxed, system-scope) accesses.
        unsafe { std::sync::atomic::AtomicU64::from_ptr(self.mailbox.ptr.add(i)) }
    }

    /// Asks a running server to leave (it does at its next look at the mailbox: every eighth
    /// polling round, about ten microseconds).
    fn park(&mut self) {
        if self.state == ServerState::Running {
            self.counter(0)
                .store(u64::MAX, std::sync::atomic::Ordering::Release);
            self.state = ServerState::Stopping;
        }
    }

    /// Stops a server that runs and waits until it has left.
    fn settle(&mut self) -> Result<()> {
        if self.state != ServerState::Gone {
            self.park();
            self.stream
                .synchronize()
                .map_err(cuda_err("the NLL server"))?;
            self.state = ServerState::Gone;
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // the mapped memory must outlive the kernel that polls it; an error here has no
        // caller to go to, and the context reports it on its next call
        let _ = self.settle();
    }
}

/// Launch geometry: `n` blocks of `block` threads.
fn blocks(n: usize, block: u32, shared: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n as u32, 1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: shared,
    }
}

impl<'a> CudaSession<'a> {
    fn new(engine: &'a CudaEngine, model: &'a Model) -> Result<Self> {
        let PackedTables {
            mut ints,
            floats,
            scratch_per_item,
        } = KernelTables::new(model).pack(model.interp);
        // The kernels keep each normsys entry's factor after its log-derivative (phase 1 of
        // cuda/model.cuh computes both per entry): the last scratch area grows by one float
        // per entry.
        let n_ns = ints[super::tables::slot::N_NS];
        ints[super::tables::slot::SCRATCH] += n_ns;
        let scratch_per_item = scratch_per_item + n_ns as usize;
        let np = model.n_params();
        let mut on = Vec::with_capacity(engine.gpus.len());
        let dlog_at = ints[super::tables::slot::S_DLOG] as usize;
        for g in &engine.gpus {
            let BlockLayout {
                mode,
                bytes,
                global_per_item,
            } = BlockLayout::new(
                np,
                scratch_per_item,
                dlog_at,
                g,
                g.block,
                (0, SMALL_SHARED_BYTES),
            )?;
            for f in [&g.nll, &g.fit] {
                f.set_attribute(
                    cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    bytes as i32,
                )
                .map_err(cuda_err("shared memory size"))?;
            }
            let s = &g.stream;
            // per fit item: parameters, status, NLL, meta, its dataset and (NLL batches) its
            // global scratch, in bytes
            let row_len = model.n_bins() + model.observed.aux.len();
            let per_item = 8 * (np + 1 + row_len + global_per_item) + 4 * (8 + 4);
            let free = s.context().mem_get_info().map_err(cuda_err("memory"))?.0;
            let max_items = (free / 4 / per_item).clamp(256, MAX_ITEMS_PER_LAUNCH);
            on.push(DeviceModel {
                ints: s.clone_htod(&ints).map_err(cuda_err("upload"))?,
                floats: s.clone_htod(&floats).map_err(cuda_err("upload"))?,
                mode,
                shared_bytes: bytes as u32,
                global_per_item,
                max_items,
                scratch_per_item,
                dlog_at,
            });
        }
        Ok(CudaSession {
            engine,
            model,
            small: on.iter().map(|_| Mutex::new(None)).collect(),
            on,
        })
    }

    /// Runs `work(device index, range)` for contiguous ranges of `0..n` split over the
    /// devices (one thread each), concatenating the results in order.
    fn split<T: Send>(
        &self,
        n: usize,
        work: impl Fn(usize, std::ops::Range<usize>) -> Result<Vec<T>> + Sync,
    ) -> Result<Vec<T>> {
        let k = self.on.len();
        if k == 1 || n < 2 {
            return work(0, 0..n);
        }
        let per = n.div_ceil(k);
        let parts: Vec<Result<Vec<T>>> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..k)
                .map(|d| {
                    let r = (d * per).min(n)..((d + 1) * per).min(n);
                    let work = &work;
                    sc.spawn(move || work(d, r))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::Device("a CUDA worker thread panicked".into()))
                    })
                })
                .collect()
        });
        let mut out = Vec::with_capacity(n);
        for p in parts {
            out.extend(p?);
        }
        Ok(out)
    }

    fn row(d: &Dataset) -> impl Iterator<Item = f64> + '_ {
        d.main.iter().chain(&d.aux).copied()
    }

    /// The datasets' rows as the device reads them, each checked to be the model's length.
    fn rows_of<'d>(&self, data: impl Iterator<Item = &'d Dataset>) -> Result<Vec<f64>> {
        let len = self.model.n_bins() + self.model.observed.aux.len();
        super::dataset_rows(data, len, |x| x)
    }

    fn host_constant(&self, d: &Dataset) -> f64 {
        d.lgamma_const + self.model.layout.gauss_const
    }

    /// NLL and gradient of items `range` on device `dev`.
    fn nll_grad_on(
        &self,
        dev: usize,
        pars: &[&[f64]],
        data: &[&Dataset],
    ) -> Result<Vec<(f64, Vec<f64>)>> {
        let np = self.model.n_params();
        let b = pars.len();
        if b == 0 {
            return Ok(Vec::new());
        }
        let row_len = self.model.n_bins() + self.model.observed.aux.len();
        let mut p = Vec::with_capacity(b * (np + row_len));
        for x in pars {
            if x.len() != np {
                return Err(Error::Length {
                    what: "parameter vector".into(),
                    expected: np,
                    got: x.len(),
                });
            }
            p.extend_from_slice(x);
        }
        p.extend(data.iter().flat_map(|d| Self::row(d)));
        let v = if b <= SMALL_BATCH {
            self.small_batch_on(dev, &p, b)?
        } else {
            self.large_batch_on(dev, &p, b)?
        };
        Ok((0..b)
            .map(|i| {
                let o = i * (1 + np);
                (
                    v[o] + self.host_constant(data[i]),
                    v[o + 1..o + 1 + np].to_vec(),
                )
            })
            .collect())
    }

    /// NLL and gradient (without constants) of `b` items whose parameters and datasets are
    /// `p`, by the latency kernels through the session's mapped buffers: one item by the
    /// server, more by one launch.
    fn small_batch_on(&self, dev: usize, p: &[f64], b: usize) -> Result<Vec<f64>> {
        let (g, dm) = (&self.engine.gpus[dev], &self.on[dev]);
        let np = self.model.n_params();
        let row_len = self.model.n_bins() + self.model.observed.aux.len();
        let mut slot = self.small[dev]
            .lock()
            .map_err(|_| Error::Device("a CUDA buffer lock was poisoned".into()))?;
        if slot.is_none() {
            let kernel = g.latency_kernel()?;
            // one block per SM at most: all the scratch in shared memory where it fits
            let layout = BlockLayout::new(
                np,
                dm.scratch_per_item,
                dm.dlog_at,
                g,
                kernel.block,
                (row_len, g.max_shared),
            )?;
            let input = Mapped::new(
                &g.ctx,
                SMALL_BATCH * (np + row_len),
                cudarc::driver::sys::CU_MEMHOSTALLOC_WRITECOMBINED,
            )?;
            let out = Mapped::new(&g.ctx, SMALL_BATCH * (1 + np), 0)?;
            let scratch = g
                .stream
                .alloc_zeros::<f64>((SMALL_BATCH * layout.global_per_item).max(1))
                .map_err(cuda_err("allocation"))?;
            // the server's stream does not wait for the default stream: the model's upload
            // and the scratch's zeroing must be done before it starts
            g.stream.synchronize().map_err(cuda_err("upload"))?;
            *slot = Some(SmallBatch {
                server: Server::new(&g.ctx, np + row_len, 1 + np)?,
                kernel,
                layout,
                input,
                out,
                scratch,
            });
        }
        let sb = slot
            .as_mut()
            .ok_or_else(|| Error::Device("CUDA buffers missing".into()))?;
        if b == 1 {
            return self.serve_one(g, dm, sb, row_len, p);
        }
        sb.input
            .slice_mut()
            .get_mut(..p.len())
            .ok_or_else(|| Error::Device("small batch larger than its buffers".into()))?
            .copy_from_slice(p);
        // the input buffer is write-combined: flush the CPU's combining buffers before the
        // device reads it (a full fence drains them on x86)
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        // a server would only wait for this launch's blocks to leave its SM
        sb.server.settle()?;
        let (np32, rl32, b32) = (np as u32, row_len as u32, b as u32);
        let scratch_mode = sb.layout.mode as u32;
        let data_dev = sb.input.dev + (8 * b * np) as u64;
        let s = &g.stream;
        let mut l = s.launch_builder(&sb.kernel.nll);
        l.arg(&dm.ints)
            .arg(&dm.floats)
            .arg(&sb.input.dev)
            .arg(&np32)
            .arg(&data_dev)
            .arg(&rl32)
            .arg(&sb.scratch)
            .arg(&scratch_mode)
            .arg(&1u32)
            .arg(&b32)
            .arg(&sb.out.dev);
        // SAFETY: the arguments match nll_grad's signature in cuda/nll_grad.cu (the
        // mapped addresses stand for its pointers); the mapped buffers and the scratch
        // hold what the kernel indexes for `b` <= SMALL_BATCH items, and stay alive until
        // the synchronisation below.
        unsafe { l.launch(blocks(b, sb.kernel.block, sb.layout.bytes as u32)) }
            .map_err(cuda_err("nll_grad"))?;
        s.synchronize().map_err(cuda_err("nll_grad"))?;
        Ok(sb.out.slice()[..b * (1 + np)].to_vec())
    }

    /// Has the server evaluate the item `p` (parameters, then the dataset row), launching it
    /// when none runs, and returns its NLL and gradient.
    fn serve_one(
        &self,
        g: &Gpu,
        dm: &DeviceModel,
        sb: &mut SmallBatch,
        row_len: usize,
        p: &[f64],
    ) -> Result<Vec<f64>> {
        use std::sync::atomic::Ordering;
        if sb.server.state == ServerState::Stopping {
            sb.server.settle()?;
        }
        let seq = sb.server.seq + 1;
        // the request's number, modulo 2^32, tags its words: the previous request's differ
        let flag = seq as u32;
        let input = sb.server.input.slice_mut();
        if input.len() != 2 * p.len() {
            return Err(Error::Device("single item larger than its buffers".into()));
        }
        for (w, &v) in input.chunks_exact_mut(2).zip(p) {
            w.copy_from_slice(&ll_words(v, flag));
        }
        // the input is write-combined: flush the CPU's combining buffers now rather than
        // whenever they fill (a full fence drains them on x86)
        std::sync::atomic::fence(Ordering::SeqCst);
        // anything but the stop request: a server launched now must not leave at once
        sb.server.counter(0).store(seq, Ordering::Release);
        let launch = |sb: &mut SmallBatch| -> Result<()> {
            sb.server.generation += 1;
            let (rl32, mode) = (row_len as u32, sb.layout.mode as u32);
            let idle = SERVER_IDLE.as_nanos() as u64;
            let mut l = sb.server.stream.launch_builder(&sb.kernel.serve);
            l.arg(&dm.ints)
                .arg(&dm.floats)
                .arg(&rl32)
                .arg(&sb.scratch)
                .arg(&mode)
                .arg(&sb.server.mailbox.dev)
                .arg(&sb.server.input.dev)
                .arg(&sb.server.answer.dev)
                .arg(&sb.server.seq)
                .arg(&idle)
                .arg(&sb.server.generation);
            // SAFETY: the arguments match nll_grad_serve's signature in cuda/nll_grad.cu (the
            // mapped addresses stand for its pointers); the mapped buffers hold one item's LL
            // words, the scratch one item, and they outlive the kernel (`Server`'s drop waits
            // for it, and the session's tables and scratch outlive its `SmallBatch`).
            unsafe { l.launch(blocks(1, sb.kernel.block, sb.layout.bytes as u32)) }
                .map_err(cuda_err("the NLL server"))?;
            sb.server.state = ServerState::Running;
            Ok(())
        };
        if sb.server.state == ServerState::Gone
            || sb.server.counter(1).load(Ordering::Acquire) == sb.server.generation
        {
            launch(sb)?;
        }
        let since = std::time::Instant::now();
        let mut spins = 0u32;
        let mut out = vec![0.0; sb.server.answer.len / 2];
        // the words not yet seen with this request's tag (the device writes them in any order)
        let mut pending: Vec<usize> = (0..out.len()).collect();
        loop {
            let answer = sb.server.answer.ptr;
            pending.retain(|&i| {
                // SAFETY: `answer` holds 2 * out.len() words for as long as the server lives;
                // the device writes them whole (8-byte stores), so a volatile read sees one
                // write or another.
                let words = unsafe {
                    [
                        answer.add(2 * i).read_volatile(),
                        answer.add(2 * i + 1).read_volatile(),
                    ]
                };
                match ll_value(words, flag) {
                    Some(v) => {
                        out[i] = v;
                        false
                    }
                    None => true,
                }
            });
            if pending.is_empty() {
                break;
            }
            std::hint::spin_loop();
            // a server that left for lack of work just before the request: launch another
            if sb.server.counter(1).load(Ordering::Acquire) == sb.server.generation {
                launch(sb)?;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(4096) && since.elapsed() > std::time::Duration::from_millis(100)
            {
                // a fault in the kernel would leave the answer unwritten: ask the stream
                self.check_server(g, &sb.server)?;
            }
        }
        sb.server.seq = seq;
        Ok(out)
    }

    /// An error when the server's stream reports one (a fault in the kernel).
    fn check_server(&self, g: &Gpu, server: &Server) -> Result<()> {
        use cudarc::driver::sys::CUresult;
        g.ctx.bind_to_thread().map_err(cuda_err("the NLL server"))?;
        // SAFETY: the stream is live (the server owns it).
        match unsafe { cudarc::driver::sys::cuStreamQuery(server.stream.cu_stream()) } {
            CUresult::CUDA_SUCCESS | CUresult::CUDA_ERROR_NOT_READY => Ok(()),
            e => Err(Error::Device(format!(
                "the NLL server on CUDA device {} failed: {e:?}",
                g.ordinal
            ))),
        }
    }

    /// NLL and gradient (without constants) of `b` items whose parameters and datasets are
    /// `p`, by the throughput kernel through buffers made for this batch.
    fn large_batch_on(&self, dev: usize, p: &[f64], b: usize) -> Result<Vec<f64>> {
        let (g, dm) = (&self.engine.gpus[dev], &self.on[dev]);
        let s = &g.stream;
        let np = self.model.n_params();
        let row_len = self.model.n_bins() + self.model.observed.aux.len();
        let mut io = self.io_buffers(dev, b)?;
        s.memcpy_htod(p, &mut io.input.slice_mut(0..p.len()))
            .map_err(cuda_err("upload"))?;
        let (np32, rl32, b32) = (np as u32, row_len as u32, b as u32);
        let scratch_mode = dm.mode as u32;
        let pars_v = io.input.slice(0..b * np);
        let data_v = io.input.slice(b * np..b * (np + row_len));
        let mut out = io.out;
        let mut out_v = out.slice_mut(0..b * (1 + np));
        let mut l = s.launch_builder(&g.nll);
        l.arg(&dm.ints)
            .arg(&dm.floats)
            .arg(&pars_v)
            .arg(&np32)
            .arg(&data_v)
            .arg(&rl32)
            .arg(&io.scratch)
            .arg(&scratch_mode)
            .arg(&0u32)
            .arg(&b32)
            .arg(&mut out_v);
        // SAFETY: the arguments match nll_grad's signature in cuda/nll_grad.cu, and every
        // buffer holds what the kernel indexes for `b` items (made for them above).
        unsafe { l.launch(blocks(b, g.block, dm.shared_bytes)) }.map_err(cuda_err("nll_grad"))?;
        let mut v = vec![0.0; b * (1 + np)];
        s.memcpy_dtoh(&out_v, &mut v)
            .map_err(cuda_err("readback"))?;
        Ok(v)
    }

    /// Input, output and scratch buffers for `items` NLL evaluations on device `dev`.
    fn io_buffers(&self, dev: usize, items: usize) -> Result<IoBuffers> {
        let (s, dm) = (&self.engine.gpus[dev].stream, &self.on[dev]);
        let np = self.model.n_params();
        let row_len = self.model.n_bins() + self.model.observed.aux.len();
        Ok(IoBuffers {
            input: s
                .alloc_zeros::<f64>(items * (np + row_len))
                .map_err(cuda_err("allocation"))?,
            out: s
                .alloc_zeros::<f64>(items * (1 + np))
                .map_err(cuda_err("allocation"))?,
            scratch: self.global_scratch(s, dm, items)?,
        })
    }

    /// Global scratch for `n` items when the block's scratch is not in shared memory (else a
    /// placeholder).
    fn global_scratch(
        &self,
        s: &Arc<CudaStream>,
        dm: &DeviceModel,
        n: usize,
    ) -> Result<CudaSlice<f64>> {
        let len = n * dm.global_per_item;
        s.alloc_zeros::<f64>(len.max(1))
            .map_err(cuda_err("allocation"))
    }
}

/// Where a batch of fits finds its inputs: per item (data row, start row, extra parameter
/// held or `u32::MAX`, box row) in `meta`, rows of datasets and starts on the device, and box
/// rows (per parameter: lower, upper, fixed, preconditioner) on the host, with, where every
/// box row has one, its whole initial inverse Hessian (`np x np` a row, used in place of the
/// diagonal).
struct FitInputs<'b> {
    data: &'b CudaSlice<f64>,
    starts: &'b CudaSlice<f64>,
    meta: Vec<u32>,
    boxes: &'b [f64],
    dense: Option<&'b [f64]>,
}

impl CudaSession<'_> {
    /// Every start point has one value per parameter.
    fn check_starts(&self, lens: impl Iterator<Item = usize>) -> Result<()> {
        let np = self.model.n_params();
        match lens.into_iter().find(|&l| l != np) {
            Some(got) => Err(Error::Length {
                what: "start point".into(),
                expected: np,
                got,
            }),
            None => Ok(()),
        }
    }

    /// One box row: bounds, the fixed mask and the preconditioner of a group of fits.
    fn box_row(&self, fixed: &[bool], inverse_diagonal: &[f64]) -> Result<Vec<f64>> {
        let np = self.model.n_params();
        if fixed.len() != np || inverse_diagonal.len() != np {
            return Err(Error::Length {
                what: "fixed mask and preconditioner".into(),
                expected: np,
                got: fixed.len().min(inverse_diagonal.len()),
            });
        }
        let bounds = self.model.bounds();
        Ok((0..np)
            .flat_map(|i| {
                [
                    bounds[i].0,
                    bounds[i].1,
                    if fixed[i] { 1.0 } else { 0.0 },
                    inverse_diagonal[i],
                ]
            })
            .collect())
    }

    /// Fits the items of `inputs` on device `dev` in one launch of persistent blocks: each
    /// block fits the next unfitted item to the end, then takes another, so finished fits
    /// retire at once. Optimizer state and scratch are per block slot (a working set that
    /// stays in L2); results per item. Returns each fit and the NLL it reached on the device
    /// (without the data's constant).
    fn fit_on(
        &self,
        dev: usize,
        inputs: &FitInputs,
        opts: &GpuFitOptions,
    ) -> Result<Vec<(GpuFit, f64)>> {
        let (g, dm) = (&self.engine.gpus[dev], &self.on[dev]);
        let s = &g.stream;
        let m = self.model;
        let np = m.n_params();
        let n = inputs.meta.len() / 4;
        if n == 0 {
            return Ok(Vec::new());
        }
        let mem = opts.memory.max(1) as usize;
        let ws = np * (4 + 2 * mem) + 2 * mem + 1;
        let row_len = (m.n_bins() + m.observed.aux.len()) as u32;
        // as many blocks as can be resident at once: more would only queue
        let per_sm = g
            .fit
            .occupancy_max_active_blocks_per_multiprocessor(g.block, dm.shared_bytes as usize, None)
            .map_err(cuda_err("occupancy"))?
            .max(1) as usize;
        let resident = per_sm * g.sm_count;
        let slots = n.min(match opts.max_blocks {
            0 => resident,
            b => (b as usize).min(resident),
        });
        let meta_b = s.clone_htod(&inputs.meta).map_err(cuda_err("upload"))?;
        let box_b = s.clone_htod(inputs.boxes).map_err(cuda_err("upload"))?;
        let n_rows = inputs.boxes.len() / (4 * np);
        if let Some(d) = inputs.dense.filter(|d| d.len() != n_rows * np * np) {
            return Err(Error::Length {
                what: "dense preconditioners of the fit batch".into(),
                expected: n_rows * np * np,
                got: d.len(),
            });
        }
        let dense_b = s
            .clone_htod(inputs.dense.unwrap_or(&[0.0]))
            .map_err(cuda_err("upload"))?;
        let use_dense = u32::from(inputs.dense.is_some());
        let mut xs = s
            .alloc_zeros::<f64>(n * np)
            .map_err(cuda_err("allocation"))?;
        let mut work = s
            .alloc_zeros::<f64>(slots * ws)
            .map_err(cuda_err("allocation"))?;
        let mut status = s
            .alloc_zeros::<u32>(8 * n)
            .map_err(cuda_err("allocation"))?;
        let mut fout = s
            .alloc_zeros::<f64>(2 * n)
            .map_err(cuda_err("allocation"))?;
        let poi = m.poi as u32;
        let scratch = self.global_scratch(s, dm, slots)?;
        let mut next_item = s.alloc_zeros::<u32>(1).map_err(cuda_err("allocation"))?;
        let scratch_mode = dm.mode as u32;
        let (mem32, max_iter, n32) = (mem as u32, opts.max_iter, n as u32);
        let (pgtol, ftol, loose) = (opts.pgtol, opts.ftol, opts.pgtol_loose);
        let mut l = s.launch_builder(&g.fit);
        l.arg(&dm.ints)
            .arg(&dm.floats)
            .arg(inputs.data)
            .arg(&row_len)
            .arg(&meta_b)
            .arg(&scratch)
            .arg(&scratch_mode)
            .arg(inputs.starts)
            .arg(&box_b)
            .arg(&dense_b)
            .arg(&use_dense)
            .arg(&mut xs)
            .arg(&mut work)
            .arg(&mut status)
            .arg(&mut fout)
            .arg(&poi)
            .arg(&mem32)
            .arg(&max_iter)
            .arg(&pgtol)
            .arg(&ftol)
            .arg(&loose)
            .arg(&n32)
            .arg(&mut next_item);
        let mut trace = Trace::start("cuda fit");
        // SAFETY: the arguments match fit's signature in cuda/fit.cu; every item's meta row
        // names a data row, a start row and a box row that the callers uploaded (and, with
        // `use_dense`, `dense` holds a matrix for every box row, checked above); `work` and
        // the global scratch hold one slot per block of the launch.
        unsafe { l.launch(blocks(slots, g.block, dm.shared_bytes)) }.map_err(cuda_err("fit"))?;
        s.synchronize().map_err(cuda_err("fit"))?;
        trace.mark_with(|| format!("{n} fits in {slots} blocks"));
        // Host buffers sized for the whole batch.
        let codes = s.clone_dtoh(&status).map_err(cuda_err("readback"))?;
        let f = s.clone_dtoh(&fout).map_err(cuda_err("readback"))?;
        let status_of = |i: usize| GpuFitStatus::from_code(codes[8 * i]);
        let x = if opts.keep_pars {
            s.clone_dtoh(&xs).map_err(cuda_err("readback"))?
        } else {
            Vec::new()
        };
        let mut fits = Vec::with_capacity(n);
        for i in 0..n {
            let pars = if opts.keep_pars {
                x[i * np..(i + 1) * np].to_vec()
            } else if !status_of(i).converged() {
                // a fit to be continued on the CPU needs its parameters (rare)
                s.clone_dtoh(&xs.slice(i * np..(i + 1) * np))
                    .map_err(cuda_err("readback"))?
            } else {
                Vec::new()
            };
            let fit = GpuFit {
                pars,
                pars_f32: None,
                poi: f[2 * i + 1],
                status: status_of(i),
                iterations: codes[8 * i + 1],
                nll: None,
            };
            fits.push((fit, f[2 * i]));
        }
        trace.mark("results read back");
        Ok(fits)
    }

    /// Each toy row's data-only NLL constant (sum of ln Gamma(n + 1) over the Poisson
    /// `slots`), computed on device `dev` and read back.
    fn toy_constants(
        &self,
        dev: usize,
        rows: &CudaSlice<f64>,
        n_rows: usize,
        slots: &CudaSlice<u32>,
        n_slots: u32,
    ) -> Result<Vec<f64>> {
        let g = &self.engine.gpus[dev];
        let s = &g.stream;
        let mut out = s
            .alloc_zeros::<f64>(n_rows.max(1))
            .map_err(cuda_err("allocation"))?;
        let row_len = (self.model.n_bins() + self.model.observed.aux.len()) as u32;
        let n32 = n_rows as u32;
        let mut l = s.launch_builder(&g.constants);
        l.arg(rows)
            .arg(&row_len)
            .arg(&n32)
            .arg(slots)
            .arg(&n_slots)
            .arg(&mut out);
        let cfg = LaunchConfig {
            grid_dim: (n_rows.div_ceil(128).max(1) as u32, 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match toy_constants in cuda/sample_toys.cu; `rows` holds
        // n_rows rows of row_len values and every slot is below row_len.
        unsafe { l.launch(cfg) }.map_err(cuda_err("toy_constants"))?;
        s.clone_dtoh(&out).map_err(cuda_err("readback"))
    }

    /// Draws toys `first_toy..first_toy + n_toys` of `ensemble` on device `dev` into `out`
    /// (per toy: main counts then auxiliary data); with `write_counts`, also the integer
    /// Poisson counts into `cnt` (per toy: main bins, then Poisson auxiliary data). Returns the
    /// number of Poisson streams per toy.
    #[allow(clippy::too_many_arguments)]
    fn sample_into(
        &self,
        dev: usize,
        gen: &ToyGenerator,
        seed: u64,
        ensemble: u32,
        first_toy: u64,
        n_toys: usize,
        out: &mut cudarc::driver::CudaViewMut<f64>,
        cnt: &mut CudaSlice<u32>,
        write_counts: bool,
    ) -> Result<usize> {
        let g = &self.engine.gpus[dev];
        let s = &g.stream;
        let n_bins = gen.main.len();
        let n_aux = gen.n_aux();
        let mut streams: Vec<u32> = Vec::new();
        let mut thresholds: Vec<u64> = Vec::new();
        let tables = gen
            .main
            .iter()
            .enumerate()
            .chain(gen.poisson.iter().map(|(a, t)| (n_bins + *a, t)));
        for (slot, t) in tables {
            streams.extend([
                thresholds.len() as u32,
                t.thresholds.len() as u32,
                t.k_min,
                slot as u32,
            ]);
            thresholds.extend_from_slice(&t.thresholds);
        }
        let gauss: Vec<f64> = gen.gauss.iter().flat_map(|&(_, c, sd)| [c, sd]).collect();
        let gauss_slot: Vec<u32> = gen
            .gauss
            .iter()
            .map(|&(a, _, _)| (n_bins + a) as u32)
            .collect();
        let n_poisson = streams.len() / 4;
        if out.len() < n_toys * (n_bins + n_aux) || (write_counts && cnt.len() < n_toys * n_poisson)
        {
            return Err(Error::Device("toy buffers smaller than the toys".into()));
        }
        let up_u32 = |v: &[u32]| {
            s.clone_htod(if v.is_empty() { &[0u32][..] } else { v })
                .map_err(cuda_err("upload"))
        };
        let streams_b = up_u32(&streams)?;
        let slot_b = up_u32(&gauss_slot)?;
        let thr_b = s
            .clone_htod(if thresholds.is_empty() {
                &[0u64][..]
            } else {
                &thresholds
            })
            .map_err(cuda_err("upload"))?;
        let gauss_b = s
            .clone_htod(if gauss.is_empty() { &[0.0][..] } else { &gauss })
            .map_err(cuda_err("upload"))?;
        let total = n_toys * (n_poisson + gen.gauss.len());
        if total > 0 {
            let (nt, npois, nb, ng, na, wc) = (
                n_toys as u32,
                n_poisson as u32,
                n_bins as u32,
                gen.gauss.len() as u32,
                n_aux as u32,
                u32::from(write_counts),
            );
            let mut l = s.launch_builder(&g.sample);
            l.arg(&seed)
                .arg(&ensemble)
                .arg(&first_toy)
                .arg(&nt)
                .arg(&npois)
                .arg(&nb)
                .arg(&ng)
                .arg(&na)
                .arg(&streams_b)
                .arg(&thr_b)
                .arg(&gauss_b)
                .arg(&slot_b)
                .arg(out)
                .arg(cnt)
                .arg(&wc);
            let cfg = LaunchConfig {
                grid_dim: (total.div_ceil(256) as u32, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: the arguments match sample_toys in cuda/sample_toys.cu; `out` holds
            // n_toys rows and `cnt` n_toys * n_poisson counts when they are written (checked
            // above), and the stream table indexes `thresholds` as built here.
            unsafe { l.launch(cfg) }.map_err(cuda_err("sample_toys"))?;
        }
        Ok(n_poisson)
    }
}

impl BatchSession for CudaSession<'_> {
    fn describe(&self) -> String {
        self.engine.describe()
    }

    fn precision_bits(&self) -> u32 {
        64
    }

    fn fit_options(&self) -> GpuFitOptions {
        GpuFitOptions::f64()
    }

    fn nll_grad_batch(&self, pars: &[&[f64]], data: &[&Dataset]) -> Result<Vec<(f64, Vec<f64>)>> {
        if pars.len() != data.len() {
            return Err(Error::Length {
                what: "datasets for the parameter vectors".into(),
                expected: pars.len(),
                got: data.len(),
            });
        }
        self.split(pars.len(), |dev, r| {
            let mut out = Vec::with_capacity(r.len());
            let mut i = r.start;
            while i < r.end {
                let j = (i + self.on[dev].max_items).min(r.end);
                out.extend(self.nll_grad_on(dev, &pars[i..j], &data[i..j])?);
                i = j;
            }
            Ok(out)
        })
    }

    fn fit_batch(
        &self,
        data: &[&Dataset],
        starts: &[&[f64]],
        fixed: &[bool],
        inverse_diagonal: &[f64],
        opts: &GpuFitOptions,
    ) -> Result<Vec<GpuFit>> {
        if starts.len() != data.len() {
            return Err(Error::Length {
                what: "start points for the datasets".into(),
                expected: data.len(),
                got: starts.len(),
            });
        }
        self.check_starts(starts.iter().map(|s| s.len()))?;
        let boxes = self.box_row(fixed, inverse_diagonal)?;
        self.split(data.len(), |dev, r| {
            let s = &self.engine.gpus[dev].stream;
            let mut out = Vec::with_capacity(r.len());
            let mut i = r.start;
            while i < r.end {
                let j = (i + self.on[dev].max_items).min(r.end);
                let d = self.rows_of(data[i..j].iter().copied())?;
                let st: Vec<f64> = starts[i..j]
                    .iter()
                    .flat_map(|s| s.iter().copied())
                    .collect();
                let data_b = s.clone_htod(&d).map_err(cuda_err("upload"))?;
                let starts_b = s.clone_htod(&st).map_err(cuda_err("upload"))?;
                let meta = (0..(j - i) as u32)
                    .flat_map(|k| [k, k, u32::MAX, 0])
                    .collect();
                let inputs = FitInputs {
                    data: &data_b,
                    starts: &starts_b,
                    meta,
                    boxes: &boxes,
                    dense: None,
                };
                for (k, (mut fit, f)) in self.fit_on(dev, &inputs, opts)?.into_iter().enumerate() {
                    fit.nll = f.is_finite().then(|| f + self.host_constant(data[i + k]));
                    out.push(fit);
                }
                i = j;
            }
            Ok(out)
        })
    }

    /// Every ensemble's toys drawn into one device buffer and both fits of every toy of every
    /// ensemble fitted as one batch: one set of launches, whose straggling tail is paid once.
    fn fit_device_toy_ensembles(
        &self,
        ensembles: &[super::DeviceToyEnsemble],
        seed: u64,
        first_toy: u64,
        n_toys: u64,
        tested: f64,
        opts: &GpuFitOptions,
    ) -> Result<Vec<(Vec<GpuFit>, Vec<GpuFit>)>> {
        let m = self.model;
        let np = m.n_params();
        let n = usize::try_from(n_toys)
            .map_err(|_| Error::Usage(format!("{n_toys} toys do not fit in memory")))?;
        let ne = ensembles.len();
        if ne == 0 {
            return Ok(Vec::new());
        }
        let fixed = m.fixed();
        // two box rows per ensemble, its free fits' and its conditional fits' (their whole
        // initial inverse Hessians differ: the POI is held in the second)
        let mut boxes = Vec::with_capacity(2 * ne * 4 * np);
        let mut starts = Vec::with_capacity(2 * ne * np);
        for e in ensembles {
            if e.start.len() != np {
                return Err(Error::Length {
                    what: "start point".into(),
                    expected: np,
                    got: e.start.len(),
                });
            }
            if let Some(h) = e.dense.iter().flatten().find(|h| h.len() != np * np) {
                return Err(Error::Length {
                    what: "whole initial inverse Hessian".into(),
                    expected: np * np,
                    got: h.len(),
                });
            }
            let row = self.box_row(&fixed, e.inverse_diagonal)?;
            boxes.extend_from_slice(&row);
            boxes.extend(row);
            starts.extend_from_slice(e.start);
            let mut cond = e.start.to_vec();
            cond[m.poi] = tested;
            starts.extend(cond);
        }
        let row_len = m.n_bins() + m.observed.aux.len();
        let poi = m.poi as u32;
        // where a toy row holds Poisson counts: main bins, then Poisson auxiliary data
        let slots: Vec<u32> = (0..m.n_bins() as u32)
            .chain(m.layout.poisson.iter().map(|t| m.n_bins() as u32 + t.aux))
            .collect();
        let n_slots = slots.len() as u32;
        // the rows' whole initial inverse Hessians, when every ensemble has them
        let dense: Option<Vec<f64>> = ensembles
            .iter()
            .map(|e| e.dense)
            .collect::<Option<Vec<[&[f64]; 2]>>>()
            .map(|pairs| pairs.concat().concat());
        // toys per launch: both fits of every ensemble's toy are items
        let chunk = |dev: usize| (self.on[dev].max_items / (2 * ne)).max(1);
        let per_toy = self.split(n, |dev, r| {
            let s = &self.engine.gpus[dev].stream;
            let starts_b = s.clone_htod(&starts).map_err(cuda_err("upload"))?;
            let slots_b = s.clone_htod(&slots).map_err(cuda_err("upload"))?;
            let mut cnt = s.alloc_zeros::<u32>(1).map_err(cuda_err("allocation"))?;
            let mut out: Vec<Vec<(GpuFit, GpuFit)>> = Vec::with_capacity(r.len());
            let mut i = r.start;
            while i < r.end {
                let j = (i + chunk(dev)).min(r.end);
                let k = j - i;
                let mut trace = Trace::start("cuda toys");
                let mut data_b = s
                    .alloc_zeros::<f64>((ne * k * row_len).max(1))
                    .map_err(cuda_err("allocation"))?;
                let mut meta = Vec::with_capacity(4 * 2 * ne * k);
                for (e, ens) in ensembles.iter().enumerate() {
                    let mut rows = data_b.slice_mut(e * k * row_len..(e + 1) * k * row_len);
                    if let Some(toys) = ens.host_chunk(i, k)? {
                        let host = self.rows_of(toys.iter())?;
                        s.memcpy_htod(&host, &mut rows)
                            .map_err(cuda_err("upload"))?;
                    } else {
                        self.sample_into(
                            dev,
                            ens.gen,
                            seed,
                            ens.ensemble,
                            first_toy + i as u64,
                            k,
                            &mut rows,
                            &mut cnt,
                            false,
                        )?;
                    }
                    let (e32, k32) = (e as u32, k as u32);
                    for t in 0..k32 {
                        meta.extend([e32 * k32 + t, 2 * e32, u32::MAX, 2 * e32]);
                    }
                    for t in 0..k32 {
                        meta.extend([e32 * k32 + t, 2 * e32 + 1, poi, 2 * e32 + 1]);
                    }
                }
                let constants = self.toy_constants(dev, &data_b, ne * k, &slots_b, n_slots)?;
                trace.mark("sampled, constants read back");
                let inputs = FitInputs {
                    data: &data_b,
                    starts: &starts_b,
                    meta,
                    boxes: &boxes,
                    dense: dense.as_deref(),
                };
                let mut fits: Vec<Option<GpuFit>> = self
                    .fit_on(dev, &inputs, opts)?
                    .into_iter()
                    .enumerate()
                    .map(|(item, (mut fit, f))| {
                        let row = inputs.meta[4 * item] as usize;
                        fit.nll = f
                            .is_finite()
                            .then(|| f + constants[row] + m.layout.gauss_const);
                        Some(fit)
                    })
                    .collect();
                // items: per ensemble, k free fits then k conditional fits; each taken once
                for t in 0..k {
                    let mut pairs = Vec::with_capacity(ne);
                    for e in 0..ne {
                        let base = 2 * e * k;
                        match (fits[base + t].take(), fits[base + k + t].take()) {
                            (Some(free), Some(cond)) => pairs.push((free, cond)),
                            _ => return Err(Error::Device("a device fit is missing".into())),
                        }
                    }
                    out.push(pairs);
                }
                trace.mark("fits paired");
                i = j;
            }
            Ok(out)
        })?;
        let mut result: Vec<(Vec<GpuFit>, Vec<GpuFit>)> = (0..ne)
            .map(|_| (Vec::with_capacity(n), Vec::with_capacity(n)))
            .collect();
        for toy in per_toy {
            for (e, (free, cond)) in toy.into_iter().enumerate() {
                result[e].0.push(free);
                result[e].1.push(cond);
            }
        }
        Ok(result)
    }

    fn fit_variants(
        &self,
        data: &Dataset,
        starts: &[Vec<f64>],
        extra_fixed: &[u32],
        inverse_diagonal: &[f64],
        opts: &GpuFitOptions,
    ) -> Result<Vec<GpuFit>> {
        if extra_fixed.len() != starts.len() {
            return Err(Error::Length {
                what: "extra fixed parameters".into(),
                expected: starts.len(),
                got: extra_fixed.len(),
            });
        }
        self.check_starts(starts.iter().map(|s| s.len()))?;
        let one: Vec<f64> = Self::row(data).collect();
        let boxes = self.box_row(&self.model.fixed(), inverse_diagonal)?;
        let constant = self.host_constant(data);
        self.split(starts.len(), |dev, r| {
            let s = &self.engine.gpus[dev].stream;
            let data_b = s.clone_htod(&one).map_err(cuda_err("upload"))?;
            let mut out = Vec::with_capacity(r.len());
            let mut i = r.start;
            while i < r.end {
                let j = (i + self.on[dev].max_items).min(r.end);
                let st: Vec<f64> = starts[i..j].iter().flatten().copied().collect();
                let starts_b = s.clone_htod(&st).map_err(cuda_err("upload"))?;
                let meta = (i..j)
                    .flat_map(|k| [0, (k - i) as u32, extra_fixed[k], 0])
                    .collect();
                let inputs = FitInputs {
                    data: &data_b,
                    starts: &starts_b,
                    meta,
                    boxes: &boxes,
                    dense: None,
                };
                for (mut fit, f) in self.fit_on(dev, &inputs, opts)? {
                    fit.nll = f.is_finite().then_some(f + constant);
                    out.push(fit);
                }
                i = j;
            }
            Ok(out)
        })
    }

    fn sample_toys(
        &self,
        gen: &ToyGenerator,
        seed: u64,
        ensemble: u32,
        first_toy: u64,
        n_toys: u32,
    ) -> Result<(Vec<u32>, Vec<f64>)> {
        let n = n_toys as usize;
        let row_len = gen.main.len() + gen.n_aux();
        let n_poisson = gen.main.len() + gen.poisson.len();
        let per_toy = self.split(n, |dev, r| {
            let s = &self.engine.gpus[dev].stream;
            let mut out = s
                .alloc_zeros::<f64>((r.len() * row_len).max(1))
                .map_err(cuda_err("allocation"))?;
            let mut cnt = s
                .alloc_zeros::<u32>((r.len() * n_poisson).max(1))
                .map_err(cuda_err("allocation"))?;
            self.sample_into(
                dev,
                gen,
                seed,
                ensemble,
                first_toy + r.start as u64,
                r.len(),
                &mut out.slice_mut(..),
                &mut cnt,
                true,
            )?;
            let d = s.clone_dtoh(&out).map_err(cuda_err("readback"))?;
            let c = s.clone_dtoh(&cnt).map_err(cuda_err("readback"))?;
            Ok((0..r.len())
                .map(|t| {
                    (
                        c[t * n_poisson..(t + 1) * n_poisson].to_vec(),
                        d[t * row_len..(t + 1) * row_len].to_vec(),
                    )
                })
                .collect())
        })?;
        let mut counts = Vec::new();
        let mut data = Vec::new();
        for (c, d) in per_toy {
            counts.extend(c);
            data.extend(d);
        }
        Ok((counts, data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ll_words_carry_a_double_and_reject_other_requests() {
        for v in [
            0.0,
            -0.0,
            1.5,
            -260.341189845,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::INFINITY,
        ] {
            for flag in [1u32, 7, u32::MAX] {
                let w = ll_words(v, flag);
                assert_eq!(ll_value(w, flag).map(f64::to_bits), Some(v.to_bits()));
                assert_eq!(ll_value(w, flag.wrapping_sub(1)), None);
                // one word of this request and one of the previous: not yet a value
                let stale = ll_words(v, flag.wrapping_sub(1));
                assert_eq!(ll_value([w[0], stale[1]], flag), None);
                assert_eq!(ll_value([stale[0], w[1]], flag), None);
            }
        }
        assert!(ll_value(ll_words(f64::NAN, 3), 3).is_some_and(f64::is_nan));
    }

    /// The kernels compile with NVRTC, which needs no GPU. CI runs this with NVRTC from PyPI
    /// and `NEXTSTAT_REQUIRE_NVRTC=1`, so a kernel that does not build fails there rather than
    /// first on the GPU machine; elsewhere it skips, saying why, where NVRTC is missing.
    #[test]
    fn kernels_compile_with_nvrtc() {
        // SAFETY: loading NVRTC runs its initialisers, as cudarc itself would.
        let found = cudarc::get_lib_name_candidates("nvrtc")
            .iter()
            .any(|n| unsafe { libloading::Library::new(n) }.is_ok());
        if !found {
            assert!(
                std::env::var_os("NEXTSTAT_REQUIRE_NVRTC").is_none(),
                "NEXTSTAT_REQUIRE_NVRTC is set but no NVRTC library was found (LD_LIBRARY_PATH?)"
            );
            eprintln!("skipping the NVRTC compile check: no NVRTC library found");
            return;
        }
        // the default shapes (as KernelShape::throughput and ::latency make them without
        // environment overrides) and one more
        let shapes = [
            (
                "compute_90",
                KernelShape {
                    block: WG,
                    min_blocks: 6,
                    group: GROUP,
                    sample_group: GROUP,
                    grad_group: GROUP,
                },
            ),
            (
                "compute_90",
                KernelShape {
                    block: SMALL_WG,
                    min_blocks: 1,
                    group: SMALL_GROUPS[0],
                    sample_group: SMALL_GROUPS[1],
                    grad_group: SMALL_GROUPS[2],
                },
            ),
            (
                "compute_80",
                KernelShape {
                    block: 256,
                    min_blocks: 2,
                    group: 32,
                    sample_group: 4,
                    grad_group: 1,
                },
            ),
        ];
        for (arch, shape) in shapes {
            let (src, options) = kernel_source(arch, shape);
            let ptx = compile(src, options).unwrap_or_else(|e| panic!("{arch}: {e}"));
            let text = ptx.to_src();
            for entry in ["nll_grad", "fit", "sample_toys", "toy_constants"] {
                assert!(
                    text.contains(&format!(".entry {entry}(")),
                    "{arch}: the PTX has no kernel {entry}"
                );
            }
        }
    }
}
