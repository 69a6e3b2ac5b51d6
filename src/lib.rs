//! # nextstat
//!
//! HistFactory statistical inference for pyhf JSON workspaces: an exact, fast f64 likelihood
//! (pyhf's `-logpdf`, constants included) with analytic gradients, built to drive fits, scans,
//! limits and large toy ensembles.
//!
//! ```
//! use nextstat::{CompileOptions, Model, Workspace};
//!
//! let json = r#"{
//!   "channels": [{"name": "SR", "samples": [
//!     {"name": "signal", "data": [5.0, 10.0],
//!      "modifiers": [{"name": "mu", "type": "normfactor", "data": null}]},
//!     {"name": "background", "data": [50.0, 60.0],
//!      "modifiers": [{"name": "bkg_unc", "type": "shapesys", "data": [5.0, 6.0]}]}]}],
//!   "observations": [{"name": "SR", "data": [53.0, 65.0]}],
//!   "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
//!   "version": "1.0.0"
//! }"#;
//! let ws = Workspace::from_json_str(json)?;
//! let model = Model::from_workspace(&ws, &CompileOptions::default())?;
//! assert_eq!(model.par_names(), ["mu", "bkg_unc[0]", "bkg_unc[1]"]); // pyhf's order
//! let (nll, grad) = model.nll_grad(&model.init())?;
//! assert!(nll.is_finite() && grad.len() == 3);
//! # Ok::<(), nextstat::Error>(())
//! ```

// Numeric loops index several arrays in lockstep; iterator chains would obscure them.
#![allow(clippy::needless_range_loop)]

pub mod cpu;
pub mod device;
pub mod error;
pub mod infer;
pub mod model;
pub mod optim;
pub mod toys;
pub mod trace;
pub mod workspace;

pub use cpu::Evaluator;
pub use error::{Error, Result};
pub use model::{CompileOptions, Dataset, HistosysCode, InterpCodes, Model, NormsysCode};
pub use workspace::Workspace;

#[cfg(test)]
pub(crate) mod test_models {
    //! The bundled example models under several interpolation codes, for unit tests.
    use crate::{CompileOptions, Model, Workspace};

    /// Calls `f` for each example model compiled with each of three interpolation settings,
    /// stopping at the first error (a model that fails to load or compile, or one `f` returns).
    pub fn for_each(
        mut f: impl FnMut(&str, &str, Model) -> crate::Result<()>,
    ) -> crate::Result<()> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/models");
        for name in ["counting.json", "shapes.json", "multi.json"] {
            for interp in [
                "normsys=code1,histosys=code0",
                "normsys=code4,histosys=code4p",
                "histosys=code2",
            ] {
                let ws = Workspace::from_path(dir.join(name))?;
                let opts = CompileOptions {
                    measurement: None,
                    interp: interp.parse()?,
                };
                f(name, interp, Model::from_workspace(&ws, &opts)?)?;
            }
        }
        Ok(())
    }
}
