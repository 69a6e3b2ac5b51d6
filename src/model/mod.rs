//! The compiled model: one engine-neutral description of a HistFactory likelihood.
//!
//! A [`Workspace`] is compiled once into flat arrays that every
//! engine reads (the CPU engine here; the WGSL and CUDA engines upload the same arrays as f32 or
//! f64). The layout:
//!
//! ```text
//! main bins     b = 0..n_bins          channels in pyhf's order (sorted by name), concatenated
//! blocks        k = 0..n_blocks        one per (channel, sample): bin_start, sb_start, n_bins
//! sample-bins   sb = 0..n_sb           block k owns sb_start[k] .. sb_start[k] + n_bins[k]
//!   nominal[sb]                        nominal yield
//!
//! rate[sb]  = (nominal[sb] + sum_h delta_h[sb]) * scale[k] * binscale[sb]
//! lambda[b] = sum over the sample-bins of bin b of rate[sb]
//!
//! histosys  entries e: param, block, bins at hoff[e] .. hoff[e] + n_bins[block]
//!   delta_e[sb] = b1[hoff + i] * c1(alpha) + b2[hoff + i] * c2(alpha)   (interp::HistosysCode)
//! scale[k]  = prod normfactor/lumi params  *  prod normsys factors of block k
//!   linear   entries: param, block                      factor = theta
//!   normsys  entries: param, block, code4 coefficients a1..a6, ln hi, ln lo
//! binscale[sb] = prod of staterror / shapesys / shapefactor gammas on sb
//!   binfactor entries: param, sb
//!
//! constraints: gaussian (param, aux index, sigma) and poisson (param, aux index, tau);
//! the aux index points into the dataset's auxiliary data, ordered as pyhf orders them.
//! ```

mod compile;
pub mod interp;
mod params;

pub use compile::CompileOptions;
pub use interp::{HistosysCode, InterpCodes, NormsysCode};
pub use params::{Constraint, ParamKind, Parameter};

use crate::error::{Error, Result};
use crate::workspace::Workspace;

/// A channel of the compiled model.
#[derive(Debug, Clone)]
pub struct ChannelInfo {
    pub name: String,
    /// First main bin of this channel.
    pub bin_start: usize,
    pub n_bins: usize,
    /// Sample names of this channel, in the order of its blocks.
    pub samples: Vec<String>,
}

/// One (channel, sample) pair: a contiguous run of sample-bins.
#[derive(Debug, Clone, Copy)]
pub struct Block {
    pub channel: u32,
    /// First main bin of the block's channel.
    pub bin_start: u32,
    /// First sample-bin of the block.
    pub sb_start: u32,
    pub n_bins: u32,
}

/// Entries `start..end` of a table all belong to parameter `param`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub param: u32,
    pub start: u32,
    pub end: u32,
}

/// Histosys entries (structure of arrays).
#[derive(Debug, Clone, Default)]
pub struct HistosysTable {
    pub param: Vec<u32>,
    pub block: Vec<u32>,
    /// Offset of the entry's bases in `b1` / `b2`.
    pub offset: Vec<u32>,
    pub b1: Vec<f64>,
    pub b2: Vec<f64>,
}

/// Normsys entries (structure of arrays).
#[derive(Debug, Clone, Default)]
pub struct NormsysTable {
    pub param: Vec<u32>,
    pub block: Vec<u32>,
    /// code4 polynomial coefficients a1..a6, one array per power (unused with code1).
    pub coef: [Vec<f64>; 6],
    pub ln_hi: Vec<f64>,
    pub ln_lo: Vec<f64>,
}

/// A Gaussian constraint term `Normal(aux | theta, sigma)`.
#[derive(Debug, Clone, Copy)]
pub struct GaussTerm {
    pub param: u32,
    pub aux: u32,
    pub sigma: f64,
}

/// A Poisson constraint term `Poisson(aux | theta * tau)` (shapesys).
#[derive(Debug, Clone, Copy)]
pub struct PoissonTerm {
    pub param: u32,
    pub aux: u32,
    pub tau: f64,
}

/// The flat arrays every engine evaluates.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    pub n_bins: usize,
    pub blocks: Vec<Block>,
    pub nominal: Vec<f64>,
    /// Main bin of each sample-bin.
    pub sb_bin: Vec<u32>,
    /// Block of each sample-bin.
    pub sb_block: Vec<u32>,
    pub histosys: HistosysTable,
    pub normsys: NormsysTable,
    /// (param, block): normfactor and lumi, factor = theta.
    pub linear: Vec<(u32, u32)>,
    /// (param, sample-bin): staterror, shapesys and shapefactor gammas.
    pub binfactor: Vec<(u32, u32)>,
    pub gauss: Vec<GaussTerm>,
    pub poisson: Vec<PoissonTerm>,
    /// Runs of histosys / normsys entries that share a parameter (the tables are sorted by
    /// parameter, then block), so per-parameter work happens once and gradient sums stay in
    /// registers.
    pub histosys_segments: Vec<Segment>,
    pub normsys_segments: Vec<Segment>,
    /// Model constant of the Gaussian constraints: sum of ln(sigma) + ln(2 pi)/2.
    pub gauss_const: f64,
}

/// Observed data for a model: main-measurement counts and auxiliary data.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Counts per main bin, in the model's bin order.
    pub main: Vec<f64>,
    /// Auxiliary data, in pyhf's order (constrained parameters in parameter order).
    pub aux: Vec<f64>,
    /// sum of ln Gamma(n + 1) over main counts and Poisson auxiliary data: the data-only
    /// constant of the NLL, computed once per dataset.
    pub(crate) lgamma_const: f64,
}

impl Dataset {
    /// A dataset for `model` from main counts and auxiliary data.
    pub fn new(model: &Model, main: Vec<f64>, aux: Vec<f64>) -> Result<Self> {
        if main.len() != model.layout.n_bins {
            return Err(Error::Length {
                what: "main data".into(),
                expected: model.layout.n_bins,
                got: main.len(),
            });
        }
        if aux.len() != model.n_aux {
            return Err(Error::Length {
                what: "auxiliary data".into(),
                expected: model.n_aux,
                got: aux.len(),
            });
        }
        let lgamma_const = Self::lgamma_const(model, &main, &aux);
        Ok(Dataset {
            main,
            aux,
            lgamma_const,
        })
    }

    /// A dataset whose lengths are known to fit `model` (engine-internal constructor).
    pub(crate) fn from_parts(model: &Model, main: Vec<f64>, aux: Vec<f64>) -> Self {
        debug_assert!(main.len() == model.layout.n_bins && aux.len() == model.n_aux);
        let lgamma_const = Self::lgamma_const(model, &main, &aux);
        Dataset {
            main,
            aux,
            lgamma_const,
        }
    }

    fn lgamma_const(model: &Model, main: &[f64], aux: &[f64]) -> f64 {
        main.iter().map(|&n| libm::lgamma(n + 1.0)).sum::<f64>()
            + model
                .layout
                .poisson
                .iter()
                .map(|t| libm::lgamma(aux[t.aux as usize] + 1.0))
                .sum::<f64>()
    }

    /// Main data followed by auxiliary data, as pyhf's `workspace.data(model)`.
    pub fn to_pyhf_vec(&self) -> Vec<f64> {
        self.main.iter().chain(self.aux.iter()).copied().collect()
    }
}

/// A compiled HistFactory model.
#[derive(Debug, Clone)]
pub struct Model {
    /// Where the workspace came from.
    pub source: String,
    /// Name of the measurement this model was built from.
    pub measurement: String,
    pub channels: Vec<ChannelInfo>,
    /// Parameters in pyhf's order (parameter sets sorted by name, expanded per element).
    pub parameters: Vec<Parameter>,
    /// Index of the parameter of interest.
    pub poi: usize,
    pub interp: InterpCodes,
    /// Observed data of the workspace.
    pub observed: Dataset,
    /// Measurement parameter configs that no modifier uses (accepted, as pyhf does).
    pub unused_configs: Vec<String>,
    pub layout: Layout,
    pub(crate) n_aux: usize,
}

impl Model {
    /// Compiles the measurement `measurement` (the first when `None`) of a workspace.
    pub fn from_workspace(ws: &Workspace, options: &CompileOptions) -> Result<Self> {
        compile::compile(ws, options)
    }

    /// Reads and compiles a workspace file with default options.
    pub fn from_path(path: impl AsRef<std::path::Path>) -> Result<Self> {
        Self::from_workspace(&Workspace::from_path(path)?, &CompileOptions::default())
    }

    /// Number of parameters.
    pub fn n_params(&self) -> usize {
        self.parameters.len()
    }

    /// Number of main bins.
    pub fn n_bins(&self) -> usize {
        self.layout.n_bins
    }

    /// Parameter names (pyhf's `par_names`: `name` or `name[i]`).
    pub fn par_names(&self) -> Vec<&str> {
        self.parameters.iter().map(|p| p.name.as_str()).collect()
    }

    /// Index of the parameter called `name` (pyhf spelling).
    pub fn param_index(&self, name: &str) -> Result<usize> {
        self.parameters
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| {
                let set: Vec<&str> = self
                    .parameters
                    .iter()
                    .filter(|p| p.set == name)
                    .map(|p| p.name.as_str())
                    .collect();
                let hint = if set.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (it is a parameter set with {} elements: {}...)",
                        set.len(),
                        set[0]
                    )
                };
                Error::UnknownParameter {
                    name: name.to_string(),
                    hint,
                }
            })
    }

    /// pyhf's `suggested_init()`.
    pub fn init(&self) -> Vec<f64> {
        self.parameters.iter().map(|p| p.init).collect()
    }

    /// pyhf's `suggested_bounds()`.
    pub fn bounds(&self) -> Vec<(f64, f64)> {
        self.parameters.iter().map(|p| p.bounds).collect()
    }

    /// pyhf's `suggested_fixed()`.
    pub fn fixed(&self) -> Vec<bool> {
        self.parameters.iter().map(|p| p.fixed).collect()
    }

    /// Auxiliary data at nominal (the measurement's auxdata), in pyhf's order.
    pub fn nominal_aux(&self) -> &[f64] {
        &self.observed.aux
    }
}

impl Model {
    fn check_len(&self, pars: &[f64]) -> Result<()> {
        if pars.len() != self.n_params() {
            return Err(Error::Length {
                what: "parameter vector".into(),
                expected: self.n_params(),
                got: pars.len(),
            });
        }
        Ok(())
    }

    /// Sets the parameter called `name` (pyhf spelling: `mu`, `gamma_stat[2]`) in `pars`.
    pub fn set_param(&self, pars: &mut [f64], name: &str, value: f64) -> Result<()> {
        self.check_len(pars)?;
        if !value.is_finite() {
            return Err(Error::NonFiniteParameter {
                name: name.to_string(),
                value,
            });
        }
        let i = self.param_index(name)?;
        pars[i] = value;
        Ok(())
    }

    /// Applies a JSON object of assignments (`{"mu": 1.2, "gamma[0]": 0.9, "gamma": [..]}`),
    /// where an array value sets every element of a vector parameter set.
    pub fn set_params_from_json(
        &self,
        pars: &mut [f64],
        obj: &serde_json::Value,
        source: &str,
    ) -> Result<()> {
        self.check_len(pars)?;
        let map = obj.as_object().ok_or_else(|| {
            Error::invalid(
                source,
                "",
                "expected a JSON object of parameter name to value",
            )
        })?;
        for (name, v) in map {
            match v {
                serde_json::Value::Number(n) => {
                    let x = n.as_f64().unwrap_or(f64::NAN);
                    self.set_param(pars, name, x)
                        .map_err(|e| Error::invalid(source, name.clone(), e.to_string()))?;
                }
                serde_json::Value::Array(items) => {
                    let idx: Vec<usize> = self
                        .parameters
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| &p.set == name && p.name != p.set)
                        .map(|(i, _)| i)
                        .collect();
                    if idx.is_empty() {
                        return Err(Error::invalid(
                            source,
                            name.clone(),
                            format!("'{name}' is not a vector parameter set of the model"),
                        ));
                    }
                    if idx.len() != items.len() {
                        return Err(Error::invalid(
                            source,
                            name.clone(),
                            format!(
                                "'{name}' has {} elements, got {} values",
                                idx.len(),
                                items.len()
                            ),
                        ));
                    }
                    for (k, (i, item)) in idx.iter().zip(items).enumerate() {
                        let x = item.as_f64().filter(|x| x.is_finite()).ok_or_else(|| {
                            Error::invalid(
                                source,
                                format!("{name}[{k}]"),
                                "expected a finite number",
                            )
                        })?;
                        pars[*i] = x;
                    }
                }
                _ => {
                    return Err(Error::invalid(
                        source,
                        name.clone(),
                        "expected a number (or an array for a vector parameter set)",
                    ))
                }
            }
        }
        Ok(())
    }
}
