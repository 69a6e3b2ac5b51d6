//! The parameter table of a compiled model.

/// What kind of modifier a parameter drives (for listing; normsys and histosys may share).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ParamKind {
    NormFactor,
    Lumi,
    /// normsys and/or histosys (one Gaussian-constrained alpha).
    Systematic,
    StatError,
    ShapeSys,
    ShapeFactor,
}

impl ParamKind {
    pub fn label(self) -> &'static str {
        match self {
            ParamKind::NormFactor => "normfactor",
            ParamKind::Lumi => "lumi",
            ParamKind::Systematic => "normsys/histosys",
            ParamKind::StatError => "staterror",
            ParamKind::ShapeSys => "shapesys",
            ParamKind::ShapeFactor => "shapefactor",
        }
    }
}

/// The constraint term of a parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Constraint {
    /// Free parameter.
    None,
    /// `Normal(aux | theta, sigma)`; `aux` indexes the auxiliary data.
    Gaussian { aux: usize, sigma: f64 },
    /// `Poisson(aux | theta * tau)`; `aux` indexes the auxiliary data.
    Poisson { aux: usize, tau: f64 },
}

/// One scalar parameter (an element of a parameter set).
#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    /// pyhf's name: the set name for scalars, `set[i]` for elements of a vector set.
    pub name: String,
    /// Name of the parameter set.
    pub set: String,
    pub kind: ParamKind,
    pub init: f64,
    pub bounds: (f64, f64),
    pub fixed: bool,
    pub constraint: Constraint,
    /// Centre of the constraint at the nominal auxiliary data (None for free parameters).
    pub prefit_centre: Option<f64>,
}

impl Parameter {
    /// The pre-fit centre of a constrained parameter: its auxiliary datum scaled back to the
    /// parameter (aux for Gaussian constraints, aux / tau for Poisson ones); the init for a
    /// free parameter.
    pub fn init_centre(&self) -> f64 {
        self.prefit_centre.unwrap_or(self.init)
    }
}
