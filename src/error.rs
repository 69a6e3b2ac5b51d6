//! Errors of the library.
//!
//! Every error that comes from a workspace names where it came from: the source (a file path,
//! or `<string>` / `<value>` for in-memory input) and the JSON path inside it, spelled with the
//! names a physicist knows (`channels[1] 'SR' / samples[0] 'ttbar' / modifiers[3] 'jes' (histosys)`),
//! so a bad workspace can be fixed without a debugger.

use std::fmt;

/// A location inside a workspace: the source it was read from and a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// File path, or `<string>` / `<value>` for in-memory input.
    pub source: String,
    /// JSON path with names, e.g. `channels[0] 'SR' / samples[1] 'bkg' / data`.
    pub path: String,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.source)
        } else {
            write!(f, "{}: {}", self.source, self.path)
        }
    }
}

/// The library's error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The input is not valid JSON.
    #[error("{source_name}: malformed JSON at line {line}, column {column}: {message}")]
    Json {
        source_name: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// The JSON is well formed but not a valid pyhf workspace (schema or semantics).
    #[error("{location}: {message}")]
    Invalid { location: Location, message: String },
    /// A parameter name that the model does not have.
    #[error("unknown parameter '{name}'{hint}")]
    UnknownParameter { name: String, hint: String },
    /// A parameter vector or dataset of the wrong length.
    #[error("{what}: expected {expected} values, got {got}")]
    Length {
        what: String,
        expected: usize,
        got: usize,
    },
    /// The expected event rate of a bin is negative (or zero with observed events) at the
    /// evaluated parameters, so the Poisson likelihood is undefined there.
    #[error(
        "expected rate {rate} in channel '{channel}' bin {bin} (observed {observed}) is not a positive number at these parameters; the likelihood is undefined there"
    )]
    NonPositiveRate {
        channel: String,
        bin: usize,
        rate: f64,
        observed: f64,
    },
    /// A constraint term is undefined at the evaluated parameters (for example a shapesys
    /// gamma that is not positive).
    #[error("constraint of parameter '{parameter}' is undefined at value {value}")]
    UndefinedConstraint { parameter: String, value: f64 },
    /// A parameter value outside what the model can evaluate (NaN or infinite).
    #[error("parameter '{name}' has a non-finite value {value}")]
    NonFiniteParameter { name: String, value: f64 },
    /// A compute device (GPU adapter, driver) is missing, too small, or failed.
    #[error("{0}")]
    Device(String),
    /// Bad option value (interpolation codes, parameter assignments, ...).
    #[error("{0}")]
    Usage(String),
}

/// Result alias for the library.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn invalid(
        source: &str,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Invalid {
            location: Location {
                source: source.to_string(),
                path: path.into(),
            },
            message: message.into(),
        }
    }
}
