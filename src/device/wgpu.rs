//! The portable f32 engine: the WGSL kernels of `wgsl/` run through wgpu (Metal on Apple
//! Silicon, Vulkan or DX12 elsewhere, GL as a last resort, and Mesa's software rasterizers in
//! CI). The model is uploaded once per [`WgpuSession`]; each batch uploads only parameters and
//! data and reads back one NLL and one gradient per item.
//!
//! An item's scratch (the `S_*` areas of `device::tables`) lives in workgroup memory when it
//! fits the adapter's `max_compute_workgroup_storage_size`, as the CUDA engine keeps it in
//! shared memory: see [`ScratchMode`]; `NEXTSTAT_WGPU_SCRATCH` forces a mode.

use super::fit::{GpuFit, GpuFitOptions, GpuFitStatus, SharedPars};
use super::tables::{slot, KernelTables, PackedTables, N_META};
use crate::model::{Dataset, Model};
use crate::toys::ToyGenerator;
use crate::trace::Trace;
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use wgpu::util::DeviceExt;

const MODEL: &str = include_str!("../../wgsl/model.wgsl");
const NLL_ENTRY: &str = include_str!("../../wgsl/nll_grad.wgsl");
const FIT_ENTRY: &str = include_str!("../../wgsl/fit.wgsl");
const REDUCE_TREE: &str = include_str!("../../wgsl/reduce_tree.wgsl");
const REDUCE_SUBGROUP: &str = include_str!("../../wgsl/reduce_subgroup.wgsl");
const SUBGROUP_PROBE: &str = include_str!("../../wgsl/subgroup_probe.wgsl");
const SAMPLE_SHADER: &str = include_str!("../../wgsl/sample_toys.wgsl");

/// Where an item's scratch lives (`SCRATCH_*` in wgsl/model.wgsl), the design of the CUDA
/// engine's `SCRATCH_MODE_*`: all of it in workgroup memory when it fits (global memory is far
/// slower for the many small reads and writes of `eval`); the normsys log-derivatives (the
/// last and largest area) in global memory when the rest fits; all of it in global memory as
/// a last resort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScratchMode {
    Workgroup,
    DlogGlobal,
    Global,
}

impl ScratchMode {
    /// Every mode, fastest first.
    pub const ALL: [ScratchMode; 3] = [
        ScratchMode::Workgroup,
        ScratchMode::DlogGlobal,
        ScratchMode::Global,
    ];

    /// The mode's `SCRATCH_*` value in wgsl/model.wgsl.
    fn code(self) -> u32 {
        match self {
            ScratchMode::Workgroup => 0,
            ScratchMode::DlogGlobal => 1,
            ScratchMode::Global => 2,
        }
    }

    /// The mode's name, as `NEXTSTAT_WGPU_SCRATCH` takes it.
    pub fn name(self) -> &'static str {
        match self {
            ScratchMode::Workgroup => "workgroup",
            ScratchMode::DlogGlobal => "dlog-global",
            ScratchMode::Global => "global",
        }
    }
}

impl std::fmt::Display for ScratchMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ScratchMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        ScratchMode::ALL
            .into_iter()
            .find(|m| m.name() == s.trim())
            .ok_or_else(|| {
                Error::Usage(format!(
                    "scratch mode '{s}': expected workgroup, dlog-global or global"
                ))
            })
    }
}

/// The scratch mode `NEXTSTAT_WGPU_SCRATCH` (workgroup, dlog-global or global) forces, for
/// testing and benchmarking; `None` when unset (the mode is then chosen per model and
/// adapter). A forced mode that does not fit the adapter is an error, not a fallback.
pub fn forced_scratch_mode() -> Result<Option<ScratchMode>> {
    match std::env::var("NEXTSTAT_WGPU_SCRATCH") {
        Err(_) => Ok(None),
        Ok(v) => v
            .parse()
            .map(Some)
            .map_err(|e| Error::Usage(format!("NEXTSTAT_WGPU_SCRATCH: {e}"))),
    }
}

/// The runtime checks wgpu adds to the kernels: `NEXTSTAT_WGPU_CHECKS=on` (bounds clamps on
/// every buffer access, a counter in every loop) or `off` (none: the driver's own robust
/// buffer access stays). Default off: the kernels are this crate's own and index only what
/// the host sized (see the SAFETY note where they are built), and without the checks tHu's
/// device fits took 2.28 s against 2.73 s on the H200 (session 4). `on` is there to rule the
/// checks in or out when a kernel misbehaves.
fn runtime_checks() -> Result<wgpu::ShaderRuntimeChecks> {
    match std::env::var("NEXTSTAT_WGPU_CHECKS").as_deref() {
        Ok("on") => Ok(wgpu::ShaderRuntimeChecks::checked()),
        Err(_) | Ok("off") => Ok(wgpu::ShaderRuntimeChecks::unchecked()),
        Ok(v) => Err(Error::Usage(format!(
            "NEXTSTAT_WGPU_CHECKS='{v}': expected on or off"
        ))),
    }
}

/// How the model kernels reduce over a workgroup (sums and maxima of the fit, the NLL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reductions {
    /// Subgroup operations where the adapter has them and the engine's probe finds the split
    /// of a workgroup into subgroups that wgsl/reduce_subgroup.wgsl relies on; else the tree.
    Auto,
    /// Subgroup operations, or an error where they cannot be used.
    Subgroups,
    /// A tree in workgroup memory (wgsl/reduce_tree.wgsl) on every adapter.
    Tree,
}

/// `NEXTSTAT_WGPU_SUBGROUPS`: `off` (the default, [`Reductions::Tree`]), `auto` or `on`
/// ([`Reductions::Subgroups`]). The tree is the default because it measured faster: on the
/// H200 through Vulkan, tHu's 10,000 toys took 0.99–1.05 s with it against 1.06–1.12 s with
/// subgroups, complex_workspace's 27.5 ms against 32.5 ms (BENCHMARKS.md, session 6).
fn reductions_from_env() -> Result<Reductions> {
    match std::env::var("NEXTSTAT_WGPU_SUBGROUPS").as_deref() {
        Err(_) | Ok("off") => Ok(Reductions::Tree),
        Ok("auto") => Ok(Reductions::Auto),
        Ok("on") => Ok(Reductions::Subgroups),
        Ok(v) => Err(Error::Usage(format!(
            "NEXTSTAT_WGPU_SUBGROUPS='{v}': expected off, auto or on"
        ))),
    }
}

/// Runs wgsl/subgroup_probe.wgsl on one workgroup of `wg` invocations and returns the subgroup
/// size when every invocation has lane `index % size` and the size divides `wg` (the split
/// reduce_subgroup.wgsl relies on), else why not.
fn probe_subgroups(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    wg: u32,
) -> Result<std::result::Result<u32, String>> {
    // a driver or naga that rejects the probe rejects the reductions too: an answer, not a panic
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("subgroup_probe.wgsl"),
        source: wgpu::ShaderSource::Wgsl(SUBGROUP_PROBE.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("subgroup_probe.wgsl"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: &[("WG", wg as f64)],
            ..Default::default()
        },
        cache: None,
    });
    let out = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("subgroup probe"),
        size: 8 * wg as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("subgroup probe"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[wgpu::BindGroupEntry {
            binding: 0,
            resource: out.as_entire_binding(),
        }],
    });
    if let Some(e) = pollster::block_on(scope.pop()) {
        return Ok(Err(format!("the probe kernel was rejected: {e}")));
    }
    let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("subgroup probe"),
    });
    {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(1, 1, 1);
    }
    let v: Vec<u32> = read_back_after(device, queue, enc, &out, 2 * wg as usize)?;
    let size = v[1];
    let split = size > 0
        && wg.is_multiple_of(size)
        && v.chunks(2)
            .enumerate()
            .all(|(t, lane_size)| lane_size[1] == size && lane_size[0] == t as u32 % size);
    Ok(if split {
        Ok(size)
    } else {
        Err(format!(
            "its subgroups do not split a workgroup of {wg} by index (sizes and lanes: {:?})",
            v.chunks(2).take(8).collect::<Vec<_>>()
        ))
    })
}

/// Submits `enc` with a copy of `buf` appended, then maps the copy: one submission for the
/// work and its readback.
fn read_back_after<T: bytemuck::Pod>(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    mut enc: wgpu::CommandEncoder,
    buf: &wgpu::Buffer,
    len: usize,
) -> Result<Vec<T>> {
    let bytes = (len * std::mem::size_of::<T>()) as u64;
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    enc.copy_buffer_to_buffer(buf, 0, &staging, 0, bytes);
    queue.submit([enc.finish()]);
    let slice = staging.slice(..);
    let (tx, rx) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Device(format!("GPU device lost or failed: {e}")))?;
    rx.recv()
        .map_err(|_| Error::Device("GPU readback was abandoned".into()))?
        .map_err(|e| Error::Device(format!("GPU readback failed: {e}")))?;
    let view = slice
        .get_mapped_range()
        .map_err(|e| Error::Device(format!("GPU readback failed: {e}")))?;
    let out = bytemuck::cast_slice(&view).to_vec();
    drop(view);
    staging.unmap();
    Ok(out)
}

/// Threads per workgroup of the model kernels (`WG` in model.wgsl): 64, or
/// `NEXTSTAT_WGPU_WG` (32, 64, 128 or 256) for tuning on a new adapter; checked when an engine
/// opens ([`check_workgroup_size`]).
fn workgroup_size() -> u32 {
    static WG: OnceLock<u32> = OnceLock::new();
    *WG.get_or_init(|| {
        std::env::var("NEXTSTAT_WGPU_WG")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .filter(|w| [32, 64, 128, 256].contains(w))
            .unwrap_or(64)
    })
}

/// An unusable `NEXTSTAT_WGPU_WG` is an error, not silently 64.
fn check_workgroup_size() -> Result<()> {
    match std::env::var("NEXTSTAT_WGPU_WG") {
        Err(_) => Ok(()),
        Ok(v) if v.trim().parse::<u32>().ok() == Some(workgroup_size()) => Ok(()),
        Ok(v) => Err(Error::Usage(format!(
            "NEXTSTAT_WGPU_WG='{v}': expected 32, 64, 128 or 256"
        ))),
    }
}

/// Workgroup memory below which an item's scratch goes there by default (a few kB leave room
/// for many resident workgroups per SM).
const SMALL_WORKGROUP_BYTES: usize = 8 * 1024;

/// How a workgroup lays out its memory for one model in one [`ScratchMode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ScratchLayout {
    mode: ScratchMode,
    /// Floats of `wscratch` (`WSCRATCH_LEN`, at least 1).
    workgroup_floats: usize,
    /// Floats of global scratch per item (0 when none).
    global_per_item: usize,
    /// Bytes of workgroup memory the kernels declare, `wscratch` included.
    workgroup_bytes: usize,
}

impl ScratchLayout {
    /// The layout of `mode` for a model of `np` parameters whose scratch has `per_item` floats,
    /// the normsys log-derivatives from float `dlog_at` on.
    fn new(mode: ScratchMode, np: usize, per_item: usize, dlog_at: usize) -> Self {
        // red (one per thread), wpars and wgrad (np each, at least 1), wnll,
        // undefined_flag, and the fitter's wscalar and wflag: 4 bytes each
        let base = 4 * (workgroup_size() as usize + 2 * np.max(1) + 4);
        let (in_workgroup, global_per_item) = match mode {
            ScratchMode::Workgroup => (per_item, 0),
            ScratchMode::DlogGlobal => (dlog_at, per_item - dlog_at),
            ScratchMode::Global => (0, per_item),
        };
        let workgroup_floats = in_workgroup.max(1);
        ScratchLayout {
            mode,
            workgroup_floats,
            global_per_item,
            workgroup_bytes: base + 4 * workgroup_floats,
        }
    }

    /// The layout for a model on an adapter with `limit` bytes of workgroup memory: `forced`,
    /// or else all of the scratch in workgroup memory when that takes at most
    /// [`SMALL_WORKGROUP_BYTES`], and all of it in global memory otherwise. An error when the
    /// forced mode does not fit, or when none does.
    ///
    /// Why not workgroup memory whenever it fits: the kernels are latency-bound, and a large
    /// workgroup allocation caps the workgroups an SM keeps resident. On the H200 (Vulkan),
    /// tHu's fits took 2.28 s with the scratch in global memory against 3.10 s in workgroup
    /// memory (23.8 kB a workgroup), and 2.73 against 4.55 s with runtime checks on
    /// (session 4). `dlog-global` is kept for testing and for adapters where it measures
    /// better (`NEXTSTAT_WGPU_SCRATCH`).
    fn choose(
        forced: Option<ScratchMode>,
        np: usize,
        per_item: usize,
        dlog_at: usize,
        limit: usize,
    ) -> Result<Self> {
        let fits = |l: &ScratchLayout| l.workgroup_bytes <= limit;
        match forced {
            Some(mode) => {
                let l = ScratchLayout::new(mode, np, per_item, dlog_at);
                if fits(&l) {
                    Ok(l)
                } else {
                    Err(Error::Device(format!(
                        "scratch mode {mode} (forced by NEXTSTAT_WGPU_SCRATCH or the caller) needs {} bytes of workgroup memory for this model ({np} parameters, {per_item} floats of scratch per item), above the adapter's max_compute_workgroup_storage_size of {limit}",
                        l.workgroup_bytes
                    )))
                }
            }
            None => [ScratchMode::Workgroup, ScratchMode::Global]
                .into_iter()
                .map(|m| ScratchLayout::new(m, np, per_item, dlog_at))
                .filter(|l| l.mode == ScratchMode::Global || l.workgroup_bytes <= SMALL_WORKGROUP_BYTES)
                .find(fits)
                .ok_or_else(|| {
                    Error::Device(format!(
                        "the model has {np} parameters; the WGSL engine needs {} bytes of workgroup memory for them, above the adapter's max_compute_workgroup_storage_size of {limit}",
                        ScratchLayout::new(ScratchMode::Global, np, per_item, dlog_at)
                            .workgroup_bytes
                    ))
                }),
        }
    }
}

/// One adapter as wgpu reports it.
#[derive(Debug, Clone)]
pub struct AdapterDescription {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub max_storage_buffer_binding_size: u64,
    pub max_compute_workgroups_per_dimension: u32,
    /// Bytes of workgroup memory a kernel may declare (decides the [`ScratchMode`]).
    pub max_compute_workgroup_storage_size: u32,
}

fn describe(a: &wgpu::Adapter) -> AdapterDescription {
    let info = a.get_info();
    let limits = a.limits();
    AdapterDescription {
        name: info.name,
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_string(),
        max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
        max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
        max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
    }
}

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

/// Every adapter this machine offers, on every backend wgpu knows.
pub fn list_adapters() -> Vec<AdapterDescription> {
    let inst = instance(wgpu::Backends::all());
    pollster::block_on(inst.enumerate_adapters(wgpu::Backends::all()))
        .iter()
        .map(describe)
        .collect()
}

/// A device chosen and its compiled kernels; the model kernels become pipelines per session,
/// with the model's workgroup array sizes and scratch mode.
pub struct WgpuEngine {
    device: wgpu::Device,
    queue: wgpu::Queue,
    nll_module: wgpu::ShaderModule,
    fit_module: wgpu::ShaderModule,
    sampler: wgpu::ComputePipeline,
    /// The model kernels built so far, by (parameters, scratch mode, workgroup scratch
    /// floats): building them takes a noticeable time (0.4 s on lavapipe), and a process that
    /// opens many sessions of one model, or of models alike, builds each once.
    model_kernels: Mutex<HashMap<(usize, u32, usize), ModelKernels>>,
    limits: wgpu::Limits,
    /// The adapter in use.
    pub adapter: AdapterDescription,
    /// Set when only a GL adapter was found (slow; said so to the user).
    pub fell_back_to_gl: bool,
    /// The subgroup size when the kernels reduce through subgroups (reduce_subgroup.wgsl),
    /// `None` when they use the workgroup-memory tree (reduce_tree.wgsl).
    pub subgroup_size: Option<u32>,
}

fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

impl WgpuEngine {
    /// The best adapter: Vulkan, Metal or DX12 first (discrete, then integrated, then others),
    /// GL only when nothing else exists; reductions as `NEXTSTAT_WGPU_SUBGROUPS` says
    /// (default [`Reductions::Tree`]).
    pub fn new() -> Result<Self> {
        Self::with_reductions(reductions_from_env()?)
    }

    /// As [`WgpuEngine::new`], with the workgroup reductions chosen by the caller.
    pub fn with_reductions(reductions: Reductions) -> Result<Self> {
        let mut trace = Trace::start("wgpu open");
        // GL's backend is brought up only when no other adapter exists: starting it (EGL)
        // costs tens of milliseconds that a run on Vulkan, Metal or DX12 does not need
        let enumerate = |backends: wgpu::Backends| {
            let inst = instance(backends);
            let mut found = pollster::block_on(inst.enumerate_adapters(backends));
            found.sort_by_key(|a| rank(a.get_info().device_type));
            found
        };
        let primary = wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12;
        let mut found = enumerate(primary);
        let fell_back_to_gl = found.is_empty();
        if fell_back_to_gl {
            found = enumerate(wgpu::Backends::GL);
        }
        trace.mark("adapters enumerated");
        let adapter = found.into_iter().next().ok_or_else(|| {
            Error::Device("no GPU adapter found; tried Vulkan, Metal, DX12 and GL (on Linux without a GPU, install Mesa's drivers: apt-get install mesa-vulkan-drivers)".into())
        })?;
        // every limit the adapter has, max_compute_workgroup_storage_size included (wgpu's
        // default of 16 KiB would keep most models' scratch out of workgroup memory)
        let limits = adapter.limits();
        let has_subgroups = adapter.features().contains(wgpu::Features::SUBGROUP);
        if reductions == Reductions::Subgroups && !has_subgroups {
            return Err(Error::Usage(format!(
                "NEXTSTAT_WGPU_SUBGROUPS=on, but adapter '{}' has no subgroup operations",
                adapter.get_info().name
            )));
        }
        let use_subgroups = has_subgroups && reductions != Reductions::Tree;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("nextstat"),
            required_features: if use_subgroups {
                wgpu::Features::SUBGROUP
            } else {
                wgpu::Features::empty()
            },
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| {
            Error::Device(format!(
                "cannot open GPU device '{}': {e}",
                adapter.get_info().name
            ))
        })?;
        trace.mark("device opened");
        let checks = runtime_checks()?;
        check_workgroup_size()?;
        let subgroup_size = if use_subgroups {
            match probe_subgroups(&device, &queue, workgroup_size())? {
                Ok(size) => Some(size),
                Err(why) if reductions == Reductions::Subgroups => {
                    return Err(Error::Usage(format!(
                        "NEXTSTAT_WGPU_SUBGROUPS=on, but adapter '{}' cannot use them: {why}",
                        adapter.get_info().name
                    )))
                }
                Err(_) => None,
            }
        } else {
            None
        };
        let module = |label: &str, source: &str| {
            let desc = wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            };
            // SAFETY: the kernels are this crate's own, not user input; every index they
            // form comes from tables built and checked on the host (device::tables) or from
            // item counts the host sized the buffers for, and every loop runs over table
            // entries, so it ends. The engine-parity tests run the unchecked build.
            unsafe { device.create_shader_module_trusted(desc, checks) }
        };
        // the model, its reductions (subgroup or tree), then an entry point
        trace.mark("subgroups probed");
        let reduce = match subgroup_size {
            Some(_) => REDUCE_SUBGROUP,
            None => REDUCE_TREE,
        };
        let nll_module = module("nll_grad.wgsl", &format!("{MODEL}\n{reduce}\n{NLL_ENTRY}"));
        let fit_module = module("fit.wgsl", &format!("{MODEL}\n{reduce}\n{FIT_ENTRY}"));
        let sample_module = module("sample_toys.wgsl", SAMPLE_SHADER);
        let sampler = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("sample_toys.wgsl"),
            layout: None,
            module: &sample_module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        trace.mark("kernels parsed, toy sampler built");
        Ok(WgpuEngine {
            device,
            queue,
            nll_module,
            fit_module,
            sampler,
            model_kernels: Mutex::new(HashMap::new()),
            limits,
            adapter: describe(&adapter),
            fell_back_to_gl,
            subgroup_size,
        })
    }

    /// Draws toys `first_toy..first_toy + n_toys` of `ensemble` on the device with the CPU
    /// engine's generator: returns the integer Poisson counts (per toy: main bins, then
    /// Poisson auxiliary data, in the layout's order) and the datasets (per toy: main counts,
    /// then auxiliary data in the model's order, f32).
    pub fn sample_toys(
        &self,
        gen: &ToyGenerator,
        seed: u64,
        ensemble: u32,
        first_toy: u64,
        n_toys: u32,
    ) -> Result<(Vec<u32>, Vec<f32>)> {
        let (out, cnt, n_poisson) =
            self.sample_on_device(gen, seed, ensemble, first_toy, n_toys)?;
        let (nb, na) = (gen.main.len(), gen.n_aux());
        let data: Vec<f32> = self.read_back(&out, (n_toys as usize * (nb + na)).max(1))?;
        let counts: Vec<u32> = self.read_back(&cnt, (n_toys as usize * n_poisson).max(1))?;
        Ok((
            counts[..n_toys as usize * n_poisson].to_vec(),
            data[..n_toys as usize * (nb + na)].to_vec(),
        ))
    }

    /// Draws toys into device buffers (datasets, integer counts) that stay on the device.
    fn sample_on_device(
        &self,
        gen: &ToyGenerator,
        seed: u64,
        ensemble: u32,
        first_toy: u64,
        n_toys: u32,
    ) -> Result<(wgpu::Buffer, wgpu::Buffer, usize)> {
        let n_bins = gen.main.len();
        let n_aux = gen.n_aux();
        let mut streams: Vec<[u32; 4]> = Vec::new();
        let mut thresholds: Vec<[u32; 2]> = Vec::new();
        let tables = gen
            .main
            .iter()
            .enumerate()
            .chain(gen.poisson.iter().map(|(a, t)| (n_bins + *a, t)));
        for (slot, t) in tables {
            streams.push([
                thresholds.len() as u32,
                t.thresholds.len() as u32,
                t.k_min,
                slot as u32,
            ]);
            thresholds.extend(t.thresholds.iter().map(|&x| [(x >> 32) as u32, x as u32]));
        }
        let gauss: Vec<[f32; 2]> = gen
            .gauss
            .iter()
            .map(|&(_, c, s)| [c as f32, s as f32])
            .collect();
        let gauss_slot: Vec<u32> = gen
            .gauss
            .iter()
            .map(|&(a, _, _)| (n_bins + a) as u32)
            .collect();
        let n_poisson = streams.len() as u32;
        let params: [u32; 12] = [
            seed as u32,
            (seed >> 32) as u32,
            ensemble,
            first_toy as u32,
            (first_toy >> 32) as u32,
            n_toys,
            n_poisson,
            n_bins as u32,
            gauss.len() as u32,
            n_aux as u32,
            0,
            0,
        ];
        let dev = &self.device;
        let storage = wgpu::BufferUsages::STORAGE;
        let prm = self.upload("params", &params, wgpu::BufferUsages::UNIFORM);
        let streams_b = self.upload("streams", &streams, storage);
        let thr_b = self.upload("thresholds", &thresholds, storage);
        let gauss_b = self.upload("gauss", &gauss, storage);
        let slot_b = self.upload("gauss_slot", &gauss_slot, storage);
        let out_len = (n_toys as usize * (n_bins + n_aux)).max(1);
        let cnt_len = (n_toys as usize * n_poisson as usize).max(1);
        let storage_out = |label, len: usize| {
            dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 4 * len as u64,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            })
        };
        let out = storage_out("toys", out_len);
        let cnt = storage_out("counts", cnt_len);
        let bind = self.bind(
            &self.sampler,
            "sample_toys",
            &[
                (0, &prm),
                (1, &streams_b),
                (2, &thr_b),
                (3, &gauss_b),
                (4, &slot_b),
                (5, &out),
                (6, &cnt),
            ],
        );
        let total = n_toys as usize * (n_poisson as usize + gauss.len());
        let groups = total.div_ceil(64);
        let max = self.limits.max_compute_workgroups_per_dimension as usize;
        let (gx, gy) = (groups.min(max), groups.div_ceil(max).max(1));
        let enc = self.record_dispatch(&self.sampler, &bind, "sample_toys", (gx as u32, gy as u32));
        self.queue.submit([enc.finish()]);
        Ok((out, cnt, n_poisson as usize))
    }

    /// A buffer holding `data`, for binding whole. Empty data gets a 16-byte placeholder:
    /// wgpu rejects zero-sized bindings, and a model without (say) Gaussian constraints still
    /// binds the slot.
    fn upload<T: bytemuck::Pod>(
        &self,
        label: &str,
        data: &[T],
        usage: wgpu::BufferUsages,
    ) -> wgpu::Buffer {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: if bytes.is_empty() { &[0u8; 16] } else { bytes },
                usage,
            })
    }

    /// A bind group for `pipeline` with every buffer bound whole.
    fn bind(
        &self,
        pipeline: &wgpu::ComputePipeline,
        label: &str,
        entries: &[(u32, &wgpu::Buffer)],
    ) -> wgpu::BindGroup {
        let layout = pipeline.get_bind_group_layout(0);
        let entries: Vec<wgpu::BindGroupEntry> = entries
            .iter()
            .map(|&(binding, buf)| wgpu::BindGroupEntry {
                binding,
                resource: buf.as_entire_binding(),
            })
            .collect();
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout: &layout,
            entries: &entries,
        })
    }

    /// Records one dispatch of `pipeline` over `groups` (x, y) workgroups; the caller submits
    /// the encoder, or hands it to [`Self::read_back_after`] to read the result in the same
    /// submission.
    fn record_dispatch(
        &self,
        pipeline: &wgpu::ComputePipeline,
        bind: &wgpu::BindGroup,
        label: &str,
        groups: (u32, u32),
    ) -> wgpu::CommandEncoder {
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(label),
                timestamp_writes: None,
            });
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, bind, &[]);
            pass.dispatch_workgroups(groups.0, groups.1, 1);
        }
        enc
    }

    /// Copies a storage buffer to the host.
    fn read_back<T: bytemuck::Pod>(&self, buf: &wgpu::Buffer, len: usize) -> Result<Vec<T>> {
        let enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("readback"),
            });
        self.read_back_after(enc, buf, len)
    }

    /// Submits `enc` with a copy of `buf` appended, then maps the copy.
    fn read_back_after<T: bytemuck::Pod>(
        &self,
        enc: wgpu::CommandEncoder,
        buf: &wgpu::Buffer,
        len: usize,
    ) -> Result<Vec<T>> {
        read_back_after(&self.device, &self.queue, enc, buf, len)
    }

    /// Uploads `model` once; the session evaluates batches against it. The scratch mode is
    /// `NEXTSTAT_WGPU_SCRATCH`'s, else the fastest that fits ([`ScratchMode`]).
    pub fn session<'a>(&'a self, model: &'a Model) -> Result<WgpuSession<'a>> {
        WgpuSession::new(self, model, forced_scratch_mode()?)
    }

    /// As [`Self::session`], in scratch mode `mode` (`None`: the fastest that fits), whatever
    /// `NEXTSTAT_WGPU_SCRATCH` says; an error when `mode` does not fit this adapter.
    pub fn session_with_scratch<'a>(
        &'a self,
        model: &'a Model,
        mode: Option<ScratchMode>,
    ) -> Result<WgpuSession<'a>> {
        WgpuSession::new(self, model, mode)
    }

    /// Bytes of workgroup memory the kernels declare for `model` in scratch mode `mode`.
    pub fn scratch_workgroup_bytes(model: &Model, mode: ScratchMode) -> usize {
        let packed = KernelTables::new(model).pack(model.interp);
        ScratchLayout::new(
            mode,
            model.n_params(),
            packed.scratch_per_item,
            packed.ints[slot::S_DLOG] as usize,
        )
        .workgroup_bytes
    }

    /// Whether a session of `model` in scratch mode `mode` fits this adapter's workgroup memory.
    pub fn scratch_fits(&self, model: &Model, mode: ScratchMode) -> bool {
        Self::scratch_workgroup_bytes(model, mode)
            <= self.limits.max_compute_workgroup_storage_size as usize
    }

    /// The model kernels (NLL + gradient, fit) for one model's layout, compiled with its
    /// pipeline-overridable constants (model.wgsl); a validation error is returned, not a
    /// panic.
    fn model_pipelines(&self, np: usize, layout: &ScratchLayout) -> Result<ModelKernels> {
        let key = (np, layout.mode.code(), layout.workgroup_floats);
        let mut built = self
            .model_kernels
            .lock()
            .map_err(|_| Error::Device("the WGSL kernel cache was poisoned".into()))?;
        if let Some(k) = built.get(&key) {
            return Ok(k.clone());
        }
        let constants = [
            ("WG", workgroup_size() as f64),
            ("NP_WG", np.max(1) as f64),
            ("SCRATCH_MODE", layout.mode.code() as f64),
            ("WSCRATCH_LEN", layout.workgroup_floats as f64),
        ];
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let compile = |label: &str, module: &wgpu::ShaderModule| {
            self.device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(label),
                    layout: None,
                    module,
                    entry_point: Some("main"),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &constants,
                        // every workgroup variable is written before it is read (model.wgsl,
                        // fit.wgsl), so zeroing it at each dispatch would be wasted work
                        zero_initialize_workgroup_memory: false,
                    },
                    cache: None,
                })
        };
        let nll = compile("nll_grad.wgsl", &self.nll_module);
        let fit = compile("fit.wgsl", &self.fit_module);
        match pollster::block_on(scope.pop()) {
            None => {
                built.insert(key, (nll.clone(), fit.clone()));
                Ok((nll, fit))
            }
            Some(e) => Err(Error::Device(format!(
                "cannot build the WGSL model kernels (scratch mode {}, {} bytes of workgroup memory): {e}",
                layout.mode, layout.workgroup_bytes
            ))),
        }
    }
}

/// The NLL + gradient and fit kernels of one model layout.
type ModelKernels = (wgpu::ComputePipeline, wgpu::ComputePipeline);

/// A model on the device.
pub struct WgpuSession<'a> {
    engine: &'a WgpuEngine,
    model: &'a Model,
    ints: wgpu::Buffer,
    floats: wgpu::Buffer,
    ints_host: Vec<u32>,
    /// Where an item's scratch lives, and the sizes that follow.
    scratch: ScratchLayout,
    /// The model kernels, built for this model's layout.
    pipeline: wgpu::ComputePipeline,
    fitter: wgpu::ComputePipeline,
    /// Workgroups launched per dispatch of the last fit batch ([`WgpuSession::dispatch_log`]).
    dispatch_log: std::sync::Mutex<Vec<u32>>,
}

impl<'a> WgpuSession<'a> {
    fn new(engine: &'a WgpuEngine, model: &'a Model, mode: Option<ScratchMode>) -> Result<Self> {
        let PackedTables {
            ints,
            floats,
            scratch_per_item,
        } = KernelTables::new(model).pack(model.interp);
        let np = model.n_params();
        let scratch = ScratchLayout::choose(
            mode,
            np,
            scratch_per_item,
            ints[slot::S_DLOG] as usize,
            engine.limits.max_compute_workgroup_storage_size as usize,
        )?;
        let floats: Vec<f32> = floats.iter().map(|&x| x as f32).collect();
        let max = engine.limits.max_storage_buffer_binding_size;
        for (what, bytes) in [
            ("integer tables", 4 * ints.len() as u64),
            ("float tables", 4 * floats.len() as u64),
        ] {
            if bytes > max {
                return Err(Error::Device(format!(
                    "the model's {what} need {bytes} bytes, above the adapter's max_storage_buffer_binding_size of {max}"
                )));
            }
        }
        let ints_buf = engine.upload(
            "ints",
            &ints,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        );
        let floats_buf = engine.upload("floats", &floats, wgpu::BufferUsages::STORAGE);
        let (pipeline, fitter) = engine.model_pipelines(np, &scratch)?;
        Ok(WgpuSession {
            engine,
            model,
            ints: ints_buf,
            floats: floats_buf,
            ints_host: ints,
            scratch,
            pipeline,
            fitter,
            dispatch_log: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Where this session keeps an item's scratch.
    pub fn scratch_mode(&self) -> ScratchMode {
        self.scratch.mode
    }

    /// The global scratch for `n` items (a placeholder when it is all in workgroup memory:
    /// the kernels bind it in every mode).
    fn global_scratch(&self, n: usize) -> wgpu::Buffer {
        self.engine.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("scratch"),
            size: (4 * n * self.scratch.global_per_item).max(16) as u64,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        })
    }
}

/// Rows of `len` values each (parameter vectors, start points), one after another in f32; a
/// row of another length is an error naming `what`.
fn rows_f32(rows: &[&[f64]], len: usize, what: &str) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(rows.len() * len);
    for r in rows {
        if r.len() != len {
            return Err(Error::Length {
                what: what.into(),
                expected: len,
                got: r.len(),
            });
        }
        out.extend(r.iter().map(|&x| x as f32));
    }
    Ok(out)
}

/// What the device's deviance-form sums leave out, in f64: sum over main counts and Poisson
/// auxiliary data of (n - n ln n), the data's ln Gamma(n + 1), and the Gaussian normalisations.
fn host_constant(m: &Model, d: &Dataset) -> f64 {
    let nlogn = |n: f64| if n > 0.0 { n - n * n.ln() } else { 0.0 };
    d.main.iter().map(|&n| nlogn(n)).sum::<f64>()
        + m.layout
            .poisson
            .iter()
            .map(|t| nlogn(d.aux[t.aux as usize]))
            .sum::<f64>()
        + d.lgamma_const
        + m.layout.gauss_const
}

/// Where a fit batch's fits start.
enum Starts<'a> {
    /// One start point per fit.
    PerItem(&'a [&'a [f64]]),
    /// One per box row: every fit starts at its box row's (a toy's free or conditional fit
    /// at its ensemble's generating point).
    PerBoxRow(&'a [&'a [f64]]),
}

/// One row of a fit batch's boxes: which parameters are fixed, and the inverse-diagonal
/// preconditioner (bounds are the model's).
struct BoxRow<'a> {
    fixed: &'a [bool],
    inverse_diagonal: &'a [f64],
    /// The whole initial inverse Hessian (`n x n`), when the fits of this row have one: a
    /// batch uses them when every row has one.
    dense: Option<&'a [f64]>,
}

impl WgpuSession<'_> {
    /// How many workgroups (fits still running) each dispatch of the last device fit batch
    /// launched, in order: the first is the batch size, and the count shrinks as fits retire
    /// (tests check that converged fits stop costing work). A batch split into several (one
    /// larger than the device takes at once) reports its last part.
    pub fn dispatch_log(&self) -> Vec<u32> {
        self.dispatch_log
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// Items one fit batch may take on this device (workgroups per dimension, and the largest
    /// binding its per-item buffers may need).
    fn fit_items_cap(&self, opts: &GpuFitOptions) -> usize {
        let m = self.model;
        let (np, nb, na) = (m.n_params(), m.n_bins(), m.observed.aux.len());
        let stride = Self::state_stride(np, opts);
        let max_binding = self.engine.limits.max_storage_buffer_binding_size as usize;
        let per_item = 4 * (np + stride).max(self.scratch.global_per_item).max(nb + na);
        (self.engine.limits.max_compute_workgroups_per_dimension as usize)
            .min(max_binding / per_item)
            .max(1)
    }

    /// Floats of one fit's optimizer state after its parameters (fit.wgsl): g, d, xn, gn,
    /// `memory` pairs s and y, rho, alpha, f.
    fn state_stride(np: usize, opts: &GpuFitOptions) -> usize {
        let mem = opts.memory.max(1) as usize;
        np * (4 + 2 * mem) + 2 * mem + 1
    }

    /// Fits `n` datasets already on the device (per item: main data then auxiliary data, f32),
    /// in one batch (the caller keeps `n` within [`Self::fit_items_cap`]). Item `i` starts at
    /// `starts[i]` (with `Starts::PerBoxRow`, at its box row's start: the kernel copies it, so
    /// the toys' fits need no start point per fit from the host), uses bounds, fixed parameters
    /// and preconditioner `boxes[box_of[i]]` (row 0 for every item without `box_of`) and also
    /// holds parameter `extra_fixed[i]` (none for `u32::MAX`).
    #[allow(clippy::too_many_arguments)]
    fn fit_on(
        &self,
        data_b: &wgpu::Buffer,
        n: usize,
        starts: Starts,
        boxes: &[BoxRow],
        box_of: Option<&[u32]>,
        extra_fixed: Option<&[u32]>,
        opts: &GpuFitOptions,
    ) -> Result<Vec<GpuFit>> {
        let mut trace = crate::trace::Trace::start("wgsl fit");
        let m = self.model;
        let np = m.n_params();
        let rows_ok = boxes
            .iter()
            .all(|b| b.fixed.len() == np && b.inverse_diagonal.len() == np);
        let index_ok = |v: Option<&[u32]>, ok: &dyn Fn(u32) -> bool| {
            v.is_none_or(|v| v.len() == n && v.iter().all(|&x| ok(x)))
        };
        if boxes.is_empty()
            || !rows_ok
            || !index_ok(box_of, &|b| (b as usize) < boxes.len())
            || !index_ok(extra_fixed, &|e| e == u32::MAX || (e as usize) < np)
        {
            return Err(Error::Device(
                "a fit batch's bounds, held parameters or box rows do not match the model".into(),
            ));
        }
        let mem = opts.memory.max(1) as usize;
        let stride = Self::state_stride(np, opts);
        // the kernel writes every fit's parameters (from its start) and optimizer state before
        // it reads them (wgpu zeroes new buffers)
        let (rows, by_box) = match starts {
            Starts::PerItem(r) => (r, false),
            Starts::PerBoxRow(r) => (r, true),
        };
        if rows.len() != if by_box { boxes.len() } else { n } {
            return Err(Error::Device(
                "a fit batch's start points do not match its fits or box rows".into(),
            ));
        }
        let xs = rows_f32(rows, np, "start point")?;
        trace.mark("starts converted");
        let mut status0 = vec![0u32; 8 * n];
        for i in 0..n {
            status0[8 * i + 5] = extra_fixed.map_or(u32::MAX, |e| e[i]);
            status0[8 * i + 6] = box_of.map_or(0, |b| b[i]);
        }
        // the rows' whole initial inverse Hessians, when every row has one
        let dense: Option<Vec<f32>> = boxes
            .iter()
            .map(|b| b.dense)
            .collect::<Option<Vec<&[f64]>>>()
            .map(|rows| rows.concat().iter().map(|&x| x as f32).collect());
        if dense
            .as_ref()
            .is_some_and(|d| d.len() != boxes.len() * np * np)
        {
            return Err(Error::Length {
                what: "dense preconditioners of the fit batch".into(),
                expected: boxes.len() * np * np,
                got: dense.as_ref().map_or(0, |d| d.len()),
            });
        }
        let bounds = m.bounds();
        let boxes: Vec<[f32; 4]> = boxes
            .iter()
            .flat_map(|b| {
                (0..np).map(|i| {
                    [
                        bounds[i].0 as f32,
                        bounds[i].1 as f32,
                        if b.fixed[i] { 1.0 } else { 0.0 },
                        b.inverse_diagonal[i] as f32,
                    ]
                })
            })
            .collect();
        let cfg: [u32; 12] = [
            n as u32, // fits running: rewritten before each dispatch
            mem as u32,
            opts.iters_per_dispatch.max(1),
            opts.max_iter,
            (opts.pgtol as f32).to_bits(),
            (opts.ftol as f32).to_bits(),
            (opts.pgtol_loose as f32).to_bits(),
            stride as u32,
            (n * np) as u32,
            u32::from(dense.is_some()),
            u32::from(by_box),
            0,
        ];
        use wgpu::BufferUsages as U;
        let e = self.engine;
        let state_b = e.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("state"),
            size: (4 * n * (np + stride)) as u64,
            usage: U::STORAGE | U::COPY_SRC | U::COPY_DST,
            mapped_at_creation: false,
        });
        let starts_b = e.upload("starts", &xs, U::STORAGE);
        trace.mark("state buffer made, starts uploaded");
        let status_b = e.upload("status", &status0, U::STORAGE | U::COPY_SRC);
        let box_b = e.upload("box", &boxes, U::STORAGE);
        let dense_b = e.upload("dense", dense.as_deref().unwrap_or(&[0.0f32]), U::STORAGE);
        let cfg_b = e.upload("cfg", &cfg, U::UNIFORM | U::COPY_DST);
        let running_b = e.upload("running", &[0u32], U::STORAGE | U::COPY_SRC | U::COPY_DST);
        // The lists of running fits (item indices), read by one dispatch and appended to by
        // it in turn: every fit runs at first.
        let all: Vec<u32> = (0..n as u32).collect();
        let lists = [
            e.upload("active a", &all, U::STORAGE),
            e.upload("active b", &all, U::STORAGE),
        ];
        let scratch = self.global_scratch(n);
        trace.mark("other buffers uploaded");
        let bind_with = |from: &wgpu::Buffer, to: &wgpu::Buffer| {
            e.bind(
                &self.fitter,
                "fit",
                &[
                    (0, &self.ints),
                    (1, &self.floats),
                    (3, data_b),
                    (4, &scratch),
                    (5, &cfg_b),
                    (6, &state_b),
                    (7, &status_b),
                    (8, &box_b),
                    (9, &running_b),
                    (10, from),
                    (11, to),
                    (12, &dense_b),
                    (13, &starts_b),
                ],
            )
        };
        // ping-pong: even dispatches read list a and append to b, odd ones the reverse
        let binds = [
            bind_with(&lists[0], &lists[1]),
            bind_with(&lists[1], &lists[0]),
        ];
        // Stop when the batch is done, or when only a straggling tail is left: a dispatch
        // lasts as long as its slowest fit, so the last fits (f32 rounding can stall a line
        // search) are handed back unfinished and completed on the CPU in f64.
        let tail = match opts.tail_divisor {
            0 => 0,
            d => n / d as usize,
        };
        let max_groups = e.limits.max_compute_workgroups_per_dimension.max(1);
        let max_dispatches = (opts.max_iter / opts.iters_per_dispatch.max(1)) as usize + 4;
        let mut launched = Vec::new();
        let mut active = n as u32;
        trace.mark("batch set up");
        for k in 0..max_dispatches {
            e.queue
                .write_buffer(&cfg_b, 0, bytemuck::cast_slice(&[active]));
            e.queue
                .write_buffer(&running_b, 0, bytemuck::cast_slice(&[0u32]));
            let groups = (active.min(max_groups), active.div_ceil(max_groups));
            let enc = e.record_dispatch(&self.fitter, &binds[k % 2], "fit", groups);
            let still: Vec<u32> = e.read_back_after(enc, &running_b, 1)?;
            launched.push(active);
            let before = active;
            active = still
                .first()
                .copied()
                .ok_or_else(|| Error::Device("the GPU returned no count of running fits".into()))?;
            trace.mark_with(|| format!("dispatch {k}: {before} fits in, {active} still running"));
            if active as usize <= tail {
                break;
            }
        }
        if let Ok(mut log) = self.dispatch_log.lock() {
            *log = launched;
        }
        let st: Vec<f32> = self.engine.read_back(&state_b, n * np)?;
        let codes: Vec<u32> = self.engine.read_back(&status_b, 8 * n)?;
        trace.mark("parameters and status read back");
        // Every fit's parameters: without an NLL from the device, its caller evaluates one at
        // them. Widened to f64 vectors only where asked for (`keep_pars`) or where the fit must
        // be continued on the CPU; else shared in f32 (SharedPars).
        let poi = self.model.poi;
        let all = std::sync::Arc::new(st);
        let fits = (0..n)
            .map(|i| {
                let row = &all[i * np..(i + 1) * np];
                let status = GpuFitStatus::from_code(codes[8 * i]);
                let (pars, pars_f32) = if opts.keep_pars || !status.converged() {
                    (row.iter().map(|&x| f64::from(x)).collect(), None)
                } else {
                    (Vec::new(), SharedPars::row(&all, i, np))
                };
                GpuFit {
                    poi: f64::from(row[poi]),
                    pars,
                    pars_f32,
                    status,
                    iterations: codes[8 * i + 1],
                    nll: None,
                }
            })
            .collect();
        trace.mark("fits made");
        Ok(fits)
    }
}

impl super::BatchSession for WgpuSession<'_> {
    fn describe(&self) -> String {
        let a = &self.engine.adapter;
        format!("metal (wgpu: {} via {})", a.name, a.backend)
    }
    fn precision_bits(&self) -> u32 {
        32
    }
    fn fit_options(&self) -> GpuFitOptions {
        GpuFitOptions::f32()
    }
    /// NLL (pyhf's -logpdf, constants included, summed in f64 on the host) and gradient for
    /// every (parameters, dataset) pair, evaluated in f32 on the device.
    fn nll_grad_batch(&self, pars: &[&[f64]], data: &[&Dataset]) -> Result<Vec<(f64, Vec<f64>)>> {
        let m = self.model;
        let (np, nb, na) = (m.n_params(), m.n_bins(), m.observed.aux.len());
        if pars.len() != data.len() {
            return Err(Error::Length {
                what: "datasets for the parameter vectors".into(),
                expected: pars.len(),
                got: data.len(),
            });
        }
        let b = pars.len();
        if b == 0 {
            return Ok(Vec::new());
        }
        // Items per dispatch: bounded by the workgroup count and by the largest buffer a
        // binding may have (scratch, outputs, data); larger batches run as several dispatches.
        let max_binding = self.engine.limits.max_storage_buffer_binding_size as usize;
        let per_item = 4 * self.scratch.global_per_item.max(1 + np).max(nb + na);
        let cap = (self.engine.limits.max_compute_workgroups_per_dimension as usize)
            .min(max_binding / per_item)
            .max(1);
        if b > cap {
            let mut out = Vec::with_capacity(b);
            for (p, d) in pars.chunks(cap).zip(data.chunks(cap)) {
                out.extend(self.nll_grad_batch(p, d)?);
            }
            return Ok(out);
        }
        let p32 = rows_f32(pars, np, "parameter vector")?;
        let mut d32 = Vec::with_capacity(b * (nb + na));
        let mut constant = Vec::with_capacity(b);
        for d in data {
            d32.extend(d.main.iter().chain(&d.aux).map(|&x| x as f32));
            constant.push(host_constant(m, d));
        }
        let dev = &self.engine.device;
        let mut ints = self.ints_host.clone();
        ints[slot::N_ITEMS] = b as u32;
        self.engine
            .queue
            .write_buffer(&self.ints, 0, bytemuck::cast_slice(&ints[..N_META]));
        let pars_buf = self
            .engine
            .upload("pars", &p32, wgpu::BufferUsages::STORAGE);
        let data_buf = self
            .engine
            .upload("data", &d32, wgpu::BufferUsages::STORAGE);
        let scratch_bytes = (4 * b * self.scratch.global_per_item) as u64;
        let out_bytes = (4 * b * (1 + np)) as u64;
        let max = self.engine.limits.max_storage_buffer_binding_size;
        if scratch_bytes > max {
            return Err(Error::Device(format!(
                "a batch of {b} needs {scratch_bytes} bytes of scratch, above the adapter's max_storage_buffer_binding_size of {max}; use smaller batches"
            )));
        }
        let scratch = self.global_scratch(b);
        let out = dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some("out"),
            size: out_bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let bind = self.engine.bind(
            &self.pipeline,
            "nll_grad",
            &[
                (0, &self.ints),
                (1, &self.floats),
                (2, &pars_buf),
                (3, &data_buf),
                (4, &scratch),
                (5, &out),
            ],
        );
        let enc = self
            .engine
            .record_dispatch(&self.pipeline, &bind, "nll_grad", (b as u32, 1));
        let vals: Vec<f32> = self.engine.read_back_after(enc, &out, b * (1 + np))?;
        Ok((0..b)
            .map(|i| {
                let o = i * (1 + np);
                let nll = vals[o] as f64 + constant[i];
                (
                    nll,
                    vals[o + 1..o + 1 + np].iter().map(|&g| g as f64).collect(),
                )
            })
            .collect())
    }
    /// Fits every dataset on the device, all in lockstep (one workgroup each), from the given
    /// starts, with `fixed` parameters held at their start values, preconditioned by
    /// `inverse_diagonal` (e.g. `Fitter::inverse_fisher_diagonal`). Between dispatches the host
    /// reads back only how many fits are still running, and the next dispatch launches
    /// workgroups for those only (the list of running fits is compacted on the device).
    fn fit_batch(
        &self,
        data: &[&Dataset],
        starts: &[&[f64]],
        fixed: &[bool],
        inverse_diagonal: &[f64],
        opts: &GpuFitOptions,
    ) -> Result<Vec<GpuFit>> {
        let m = self.model;
        let (np, nb, na) = (m.n_params(), m.n_bins(), m.observed.aux.len());
        let n = data.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        if starts.len() != n || fixed.len() != np || inverse_diagonal.len() != np {
            return Err(Error::Length {
                what: "fit batch inputs".into(),
                expected: n,
                got: starts.len(),
            });
        }
        let cap = self.fit_items_cap(opts);
        if n > cap {
            let mut out = Vec::with_capacity(n);
            for (d, s) in data.chunks(cap).zip(starts.chunks(cap)) {
                out.extend(self.fit_batch(d, s, fixed, inverse_diagonal, opts)?);
            }
            return Ok(out);
        }
        let d32 = super::dataset_rows(data.iter().copied(), nb + na, |x| x as f32)?;
        let data_b = self
            .engine
            .upload("data", &d32, wgpu::BufferUsages::STORAGE);
        let rows = [BoxRow {
            fixed,
            inverse_diagonal,
            dense: None,
        }];
        self.fit_on(&data_b, n, Starts::PerItem(starts), &rows, None, None, opts)
    }
    /// Every ensemble's toys drawn on the device, and both fits of every toy of every
    /// ensemble in one fit batch (each toy's row copied on the device for its second fit):
    /// one set of dispatches and read-backs, and one straggling tail, instead of one per
    /// ensemble and fit.
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
        let row_len = m.n_bins() + m.observed.aux.len();
        let row = 4 * row_len as u64;
        let ne = ensembles.len();
        for e in ensembles {
            if e.start.len() != np || e.inverse_diagonal.len() != np {
                return Err(Error::Length {
                    what: "start point and preconditioner".into(),
                    expected: np,
                    got: e.start.len().min(e.inverse_diagonal.len()),
                });
            }
        }
        let mut out: Vec<(Vec<GpuFit>, Vec<GpuFit>)> =
            (0..ne).map(|_| (Vec::new(), Vec::new())).collect();
        if ne == 0 {
            return Ok(out);
        }
        let fixed = m.fixed();
        // two rows per ensemble, its free fits' and its conditional fits' (their whole
        // initial inverse Hessians differ: the POI is held in the second)
        let rows: Vec<BoxRow> = ensembles
            .iter()
            .flat_map(|e| {
                [0, 1].map(|kind| BoxRow {
                    fixed: &fixed,
                    inverse_diagonal: e.inverse_diagonal,
                    dense: e.dense.map(|d| d[kind]),
                })
            })
            .collect();
        let cond_starts: Vec<Vec<f64>> = ensembles
            .iter()
            .map(|e| {
                let mut s = e.start.to_vec();
                s[m.poi] = tested;
                s
            })
            .collect();
        // the start of each box row's fits: free and conditional, per ensemble
        let row_starts: Vec<&[f64]> = ensembles
            .iter()
            .zip(&cond_starts)
            .flat_map(|(e, c)| [e.start, c.as_slice()])
            .collect();
        let per_chunk = (self.fit_items_cap(opts) / (2 * ne)).max(1) as u64;
        let e = self.engine;
        let mut trace = crate::trace::Trace::start("wgsl toys");
        let mut first = first_toy;
        while first < first_toy + n_toys {
            let k = per_chunk.min(first_toy + n_toys - first) as usize;
            // items: per ensemble, k free fits then k conditional fits of the same k toys
            let merged = e.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("toy rows"),
                size: (2 * ne * k) as u64 * row,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut enc = e
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            let bytes = k as u64 * row;
            let (mut extra, mut box_of) = (Vec::new(), Vec::new());
            for (i, ens) in ensembles.iter().enumerate() {
                let at = |half: u64| (2 * i as u64 + half) * bytes;
                if let Some(toys) = ens.host_chunk((first - first_toy) as usize, k)? {
                    let rows = super::dataset_rows(toys, row_len, |x| x as f32)?;
                    for half in 0..2u64 {
                        e.queue
                            .write_buffer(&merged, at(half), bytemuck::cast_slice(&rows));
                    }
                } else {
                    let (toys, _, _) =
                        e.sample_on_device(ens.gen, seed, ens.ensemble, first, k as u32)?;
                    for half in 0..2u64 {
                        enc.copy_buffer_to_buffer(&toys, 0, &merged, at(half), bytes);
                    }
                }
                extra.extend(std::iter::repeat_n(u32::MAX, k));
                extra.extend(std::iter::repeat_n(m.poi as u32, k));
                box_of.extend(std::iter::repeat_n(2 * i as u32, k));
                box_of.extend(std::iter::repeat_n(2 * i as u32 + 1, k));
            }
            e.queue.submit([enc.finish()]);
            trace.mark("toys drawn or uploaded");
            let mut fits = self
                .fit_on(
                    &merged,
                    2 * ne * k,
                    Starts::PerBoxRow(&row_starts),
                    &rows,
                    Some(&box_of),
                    Some(&extra),
                    opts,
                )?
                .into_iter();
            for (free, cond) in out.iter_mut() {
                free.extend(fits.by_ref().take(k));
                cond.extend(fits.by_ref().take(k));
            }
            first += k as u64;
        }
        Ok(out)
    }
    /// Many fits of one dataset in one batch: fit `i` starts at `starts[i]` and holds, besides
    /// the model's fixed parameters, parameter `extra_fixed[i]` (or none for `u32::MAX`) at its
    /// start value: scan points and ranking refits.
    fn fit_variants(
        &self,
        data: &Dataset,
        starts: &[Vec<f64>],
        extra_fixed: &[u32],
        inverse_diagonal: &[f64],
        opts: &GpuFitOptions,
    ) -> Result<Vec<GpuFit>> {
        let m = self.model;
        let n = starts.len();
        if extra_fixed.len() != n {
            return Err(Error::Length {
                what: "extra fixed parameters".into(),
                expected: n,
                got: extra_fixed.len(),
            });
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let one: Vec<f32> = data
            .main
            .iter()
            .chain(&data.aux)
            .map(|&x| x as f32)
            .collect();
        let mut d32 = Vec::with_capacity(n * one.len());
        for _ in 0..n {
            d32.extend_from_slice(&one);
        }
        let data_b = self
            .engine
            .upload("data", &d32, wgpu::BufferUsages::STORAGE);
        let refs: Vec<&[f64]> = starts.iter().map(|s| s.as_slice()).collect();
        let fixed = m.fixed();
        let rows = [BoxRow {
            fixed: &fixed,
            inverse_diagonal,
            dense: None,
        }];
        self.fit_on(
            &data_b,
            n,
            Starts::PerItem(&refs),
            &rows,
            None,
            Some(extra_fixed),
            opts,
        )
    }
    fn sample_toys(
        &self,
        gen: &ToyGenerator,
        seed: u64,
        ensemble: u32,
        first_toy: u64,
        n_toys: u32,
    ) -> Result<(Vec<u32>, Vec<f64>)> {
        let (counts, data) = self
            .engine
            .sample_toys(gen, seed, ensemble, first_toy, n_toys)?;
        Ok((counts, data.into_iter().map(f64::from).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::{ScratchLayout, ScratchMode, WgpuEngine};

    /// Sessions of one model (and of another with the same layout) share the model kernels:
    /// they are built once per engine. Skips where wgpu finds no adapter, unless
    /// NEXTSTAT_REQUIRE_WGPU is set.
    #[test]
    fn sessions_of_one_layout_build_the_model_kernels_once() -> crate::Result<()> {
        let engine = match WgpuEngine::new() {
            Ok(e) => e,
            Err(e) if std::env::var_os("NEXTSTAT_REQUIRE_WGPU").is_none() => {
                eprintln!("skipping: {e}");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let built = || {
            engine
                .model_kernels
                .lock()
                .map(|m| m.len())
                .unwrap_or(usize::MAX)
        };
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/models");
        let shapes = crate::Model::from_path(dir.join("shapes.json"))?;
        let multi = crate::Model::from_path(dir.join("multi.json"))?;
        let mode = Some(ScratchMode::Global);
        engine.session_with_scratch(&shapes, mode)?;
        assert_eq!(built(), 1);
        engine.session_with_scratch(&shapes, mode)?;
        assert_eq!(
            built(),
            1,
            "a second session of the model built its kernels again"
        );
        engine.session_with_scratch(&shapes, Some(ScratchMode::Workgroup))?;
        assert_eq!(built(), 2, "another scratch mode needs its own kernels");
        if multi.n_params() != shapes.n_params() {
            engine.session_with_scratch(&multi, mode)?;
            assert_eq!(built(), 3, "another parameter count needs its own kernels");
        }
        Ok(())
    }

    /// 10 parameters (a base of 4 * (64 + 20 + 4) = 352 bytes), 100 floats of scratch of
    /// which the last 60 are normsys log-derivatives.
    fn choose(forced: Option<ScratchMode>, limit: usize) -> crate::Result<ScratchLayout> {
        ScratchLayout::choose(forced, 10, 100, 40, limit)
    }

    #[test]
    fn small_scratch_goes_to_workgroup_memory_large_to_global() -> crate::Result<()> {
        let mode = |limit| choose(None, limit).map(|l| l.mode).ok();
        assert_eq!(mode(352 + 400), Some(ScratchMode::Workgroup));
        assert_eq!(mode(352 + 399), Some(ScratchMode::Global));
        assert_eq!(mode(356), Some(ScratchMode::Global));
        assert_eq!(mode(355), None);
        // a scratch above SMALL_WORKGROUP_BYTES stays global however much memory there is
        let big = super::SMALL_WORKGROUP_BYTES / 4;
        let l = ScratchLayout::choose(None, 10, big, 40, 1 << 20)?;
        assert_eq!(l.mode, ScratchMode::Global);
        let l = ScratchLayout::choose(None, 10, big - 100, 40, 1 << 20)?;
        assert_eq!(l.mode, ScratchMode::Workgroup);
        let l = choose(None, 1000)?;
        assert_eq!((l.workgroup_floats, l.global_per_item), (100, 0));
        let l = choose(Some(ScratchMode::DlogGlobal), 1000)?;
        assert_eq!((l.workgroup_floats, l.global_per_item), (40, 60));
        let l = choose(Some(ScratchMode::Global), 1000)?;
        assert_eq!((l.workgroup_floats, l.global_per_item), (1, 100));
        Ok(())
    }

    #[test]
    fn a_forced_mode_that_does_not_fit_is_an_error() {
        let err = choose(Some(ScratchMode::Workgroup), 600)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("workgroup") && err.contains("752 bytes") && err.contains("600"),
            "{err}"
        );
        assert!(choose(Some(ScratchMode::DlogGlobal), 600).is_ok());
        assert!("shared".parse::<ScratchMode>().is_err());
        assert_eq!(
            " dlog-global".parse::<ScratchMode>().ok(),
            Some(ScratchMode::DlogGlobal)
        );
    }
}
