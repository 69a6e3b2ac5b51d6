//! pyhf JSON workspaces (schema 1.0.0): the types, and reading them with precise errors.
//!
//! The reader is strict where pyhf's schema is strict (unknown keys, wrong types, unknown
//! modifier types are errors) so that a typo never passes silently. It goes through
//! `serde_json::Value` and converts by hand, because that is what lets every error carry the
//! names of the channel, sample and modifier it concerns.

mod parse;

use crate::error::{Error, Result};
use std::path::Path;

/// A whole pyhf workspace.
#[derive(Debug, Clone, PartialEq)]
pub struct Workspace {
    /// Where the workspace came from (a path, `<string>` or `<value>`); used in errors.
    pub source: String,
    pub channels: Vec<Channel>,
    pub observations: Vec<Observation>,
    pub measurements: Vec<Measurement>,
    pub version: String,
}

/// One channel (region): a list of samples over the same bins.
#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    pub name: String,
    pub samples: Vec<Sample>,
}

/// One sample (process) of a channel: nominal yields per bin and its modifiers.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub data: Vec<f64>,
    pub modifiers: Vec<Modifier>,
}

/// A modifier of a sample: its parameter name and its kind with data.
#[derive(Debug, Clone, PartialEq)]
pub struct Modifier {
    pub name: String,
    pub kind: ModifierKind,
}

/// The seven modifier kinds of HistFactory, with their data.
#[derive(Debug, Clone, PartialEq)]
pub enum ModifierKind {
    /// Free multiplicative normalisation (unconstrained).
    NormFactor,
    /// Free multiplicative factor per bin (unconstrained).
    ShapeFactor,
    /// Luminosity: multiplicative, Gaussian-constrained with sigma from the measurement.
    Lumi,
    /// Normalisation systematic: relative factors at +1 and -1 sigma.
    NormSys { hi: f64, lo: f64 },
    /// Shape systematic: absolute templates at +1 and -1 sigma.
    HistoSys {
        hi_data: Vec<f64>,
        lo_data: Vec<f64>,
    },
    /// Per-bin uncorrelated shape uncertainty (Barlow-Beeston, Poisson-constrained).
    ShapeSys { uncertainties: Vec<f64> },
    /// MC statistical uncertainty per bin (Gaussian-constrained, one parameter per bin).
    StatError { uncertainties: Vec<f64> },
}

impl ModifierKind {
    /// pyhf's name of the modifier type.
    pub fn type_name(&self) -> &'static str {
        match self {
            ModifierKind::NormFactor => "normfactor",
            ModifierKind::ShapeFactor => "shapefactor",
            ModifierKind::Lumi => "lumi",
            ModifierKind::NormSys { .. } => "normsys",
            ModifierKind::HistoSys { .. } => "histosys",
            ModifierKind::ShapeSys { .. } => "shapesys",
            ModifierKind::StatError { .. } => "staterror",
        }
    }
}

/// Observed counts of one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub name: String,
    pub data: Vec<f64>,
}

/// A measurement: the parameter of interest and parameter settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub name: String,
    pub poi: String,
    pub parameters: Vec<ParameterConfig>,
}

/// User settings for one parameter set (all optional, as in pyhf).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParameterConfig {
    pub name: String,
    pub inits: Option<Vec<f64>>,
    pub bounds: Option<Vec<[f64; 2]>>,
    pub auxdata: Option<Vec<f64>>,
    pub factors: Option<Vec<f64>>,
    pub sigmas: Option<Vec<f64>>,
    pub fixed: Option<bool>,
}

impl Workspace {
    /// Reads a workspace from a JSON file.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_str_named(&text, &path.display().to_string())
    }

    /// Reads a workspace from a JSON string; errors name the source `<string>`.
    pub fn from_json_str(text: &str) -> Result<Self> {
        Self::from_str_named(text, "<string>")
    }

    /// Reads a workspace from a JSON string, naming it `source` in errors.
    pub fn from_str_named(text: &str, source: &str) -> Result<Self> {
        // Editors on Windows may start a UTF-8 file with a byte-order mark, which is not JSON;
        // without this, serde_json reports "expected value at line 1, column 1" at a visible '{'.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::Json {
            source_name: source.to_string(),
            line: e.line(),
            column: e.column(),
            message: strip_position(&e.to_string()),
        })?;
        parse::workspace(&value, source)
    }

    /// Reads a workspace from an already parsed JSON value; errors name the source `<value>`.
    pub fn from_value(value: &serde_json::Value) -> Result<Self> {
        parse::workspace(value, "<value>")
    }

    /// The measurement called `name`, or the first one when `name` is `None`.
    pub fn measurement(&self, name: Option<&str>) -> Result<&Measurement> {
        match name {
            None => self.measurements.first().ok_or_else(|| {
                Error::invalid(
                    &self.source,
                    "measurements",
                    "the workspace has no measurement",
                )
            }),
            Some(n) => self
                .measurements
                .iter()
                .find(|m| m.name == n)
                .ok_or_else(|| {
                    let known: Vec<&str> =
                        self.measurements.iter().map(|m| m.name.as_str()).collect();
                    Error::invalid(
                        &self.source,
                        "measurements",
                        format!(
                            "no measurement named '{n}' (the workspace has: {})",
                            known.join(", ")
                        ),
                    )
                }),
        }
    }
}

/// serde_json appends " at line L column C" to its messages; we report those separately.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}
