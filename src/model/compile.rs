//! Compiles a workspace and one of its measurements into a [`Model`].
//!
//! Semantics follow pyhf 0.7.6: parameter sets are sorted by name; normsys and histosys may
//! share a name (one alpha); staterror sigmas are the per-bin relative uncertainty summed in
//! quadrature over the samples that carry the modifier, and a bin with zero uncertainty is
//! fixed with sigma 1; a shapesys bin with no uncertainty or no yield is fixed with tau 1; a
//! shapesys name may appear once in the whole workspace; shared per-bin modifiers take their
//! parameter count from the first channel (in sorted order) that uses them.

use super::*;
use crate::workspace::{Channel, ModifierKind, ParameterConfig};
use std::collections::{BTreeMap, HashMap};

/// Options of the compilation.
#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    /// Measurement to use; the first when `None`.
    pub measurement: Option<String>,
    /// Interpolation codes (pyhf's defaults: normsys code4, histosys code4p).
    pub interp: InterpCodes,
}

/// What a parameter set needs, gathered from the modifiers before user configs apply.
#[derive(Debug, Clone)]
struct SetReq {
    kind: ParamKind,
    /// Modifier types that use this name (for messages and sharing rules).
    types: Vec<&'static str>,
    /// Where it was first seen (JSON path), for messages.
    first_seen: String,
    n: usize,
    scalar: bool,
    inits: Vec<f64>,
    bounds: Vec<(f64, f64)>,
    fixed: Vec<bool>,
    /// Gaussian sigmas or Poisson factors per element; empty for free parameters.
    sigmas: Vec<f64>,
    factors: Vec<f64>,
    auxdata: Vec<f64>,
}

fn mod_path(ch: &Channel, ci: usize, si: usize, mi: usize) -> String {
    let s = &ch.samples[si];
    let m = &s.modifiers[mi];
    format!(
        "channels[{ci}] '{}' / samples[{si}] '{}' / modifiers[{mi}] '{}' ({})",
        ch.name,
        s.name,
        m.name,
        m.kind.type_name()
    )
}

pub(super) fn compile(ws: &Workspace, options: &CompileOptions) -> Result<Model> {
    let src = ws.source.as_str();
    let meas = ws.measurement(options.measurement.as_deref())?;
    let meas_index = ws
        .measurements
        .iter()
        .position(|m| m.name == meas.name)
        .unwrap_or(0);

    // --- channels in pyhf's order, with their observations -------------------------------
    let mut order: Vec<usize> = (0..ws.channels.len()).collect();
    order.sort_by(|&a, &b| ws.channels[a].name.cmp(&ws.channels[b].name));
    for (oi, obs) in ws.observations.iter().enumerate() {
        if !ws.channels.iter().any(|c| c.name == obs.name) {
            return Err(Error::invalid(
                src,
                format!("observations[{oi}] '{}'", obs.name),
                format!(
                    "observation for channel '{}', which does not exist",
                    obs.name
                ),
            ));
        }
    }
    let mut channels = Vec::new();
    let mut main = Vec::new();
    for &ci in &order {
        let ch = &ws.channels[ci];
        let obs = ws
            .observations
            .iter()
            .find(|o| o.name == ch.name)
            .ok_or_else(|| {
                Error::invalid(
                    src,
                    format!("channels[{ci}] '{}'", ch.name),
                    format!("channel '{}' has no observation", ch.name),
                )
            })?;
        let n_bins = obs.data.len();
        for (si, s) in ch.samples.iter().enumerate() {
            let sp = format!("channels[{ci}] '{}' / samples[{si}] '{}'", ch.name, s.name);
            if s.data.len() != n_bins {
                return Err(Error::invalid(
                    src,
                    format!("{sp} / data"),
                    format!(
                        "sample has {} bins but the observation of channel '{}' has {n_bins}",
                        s.data.len(),
                        ch.name
                    ),
                ));
            }
            for (mi, m) in s.modifiers.iter().enumerate() {
                let check = |what: &str, v: &Vec<f64>| -> Result<()> {
                    if v.len() != n_bins {
                        Err(Error::invalid(
                            src,
                            format!("{} / data / {what}", mod_path(ch, ci, si, mi)),
                            format!("has {} bins but the channel has {n_bins}", v.len()),
                        ))
                    } else {
                        Ok(())
                    }
                };
                match &m.kind {
                    ModifierKind::HistoSys { hi_data, lo_data } => {
                        check("hi_data", hi_data)?;
                        check("lo_data", lo_data)?;
                    }
                    ModifierKind::ShapeSys { uncertainties }
                    | ModifierKind::StatError { uncertainties }
                        if uncertainties.len() != n_bins =>
                    {
                        return Err(Error::invalid(
                            src,
                            format!("{} / data", mod_path(ch, ci, si, mi)),
                            format!(
                                "has {} bins but the channel has {n_bins}",
                                uncertainties.len()
                            ),
                        ));
                    }
                    ModifierKind::NormSys { hi, lo } if *hi <= 0.0 || *lo <= 0.0 => {
                        return Err(Error::invalid(
                            src,
                            format!("{} / data", mod_path(ch, ci, si, mi)),
                            format!("normsys factors must be positive (hi {hi}, lo {lo}): the interpolation takes their logarithm"),
                        ));
                    }
                    _ => {}
                }
            }
        }
        channels.push(ChannelInfo {
            name: ch.name.clone(),
            bin_start: main.len(),
            n_bins,
            samples: ch.samples.iter().map(|s| s.name.clone()).collect(),
        });
        main.extend_from_slice(&obs.data);
    }

    // --- parameter sets ---------------------------------------------------------------------
    let mut sets: BTreeMap<String, SetReq> = BTreeMap::new();
    // staterror: per name, per element accumulators (computed after the walk)
    let mut shapesys_seen: HashMap<String, String> = HashMap::new();
    // names in order of first use, per modifier type (pyhf's parameter order)
    let mut first_use: Vec<Vec<String>> = vec![Vec::new(); TYPE_ORDER.len()];
    for &ci in &order {
        let ch = &ws.channels[ci];
        let n_bins = ch.samples[0].data.len();
        // pyhf walks samples sorted by name; "first occurrence" follows that order.
        let mut sorder: Vec<usize> = (0..ch.samples.len()).collect();
        sorder.sort_by(|&a, &b| ch.samples[a].name.cmp(&ch.samples[b].name));
        for &si in &sorder {
            let s = &ch.samples[si];
            // ... and modifiers sorted by (name, type), as pyhf's config.modifiers.
            let mut morder: Vec<usize> = (0..s.modifiers.len()).collect();
            morder.sort_by(|&a, &b| {
                let (x, y) = (&s.modifiers[a], &s.modifiers[b]);
                (&x.name, x.kind.type_name()).cmp(&(&y.name, y.kind.type_name()))
            });
            for mi in morder {
                let m = &s.modifiers[mi];
                let path = mod_path(ch, ci, si, mi);
                let ty = m.kind.type_name();
                let rank = TYPE_ORDER
                    .iter()
                    .position(|t| *t == ty)
                    .unwrap_or(TYPE_ORDER.len());
                if !first_use[rank].contains(&m.name) {
                    first_use[rank].push(m.name.clone());
                }
                let (kind, n, scalar) = match &m.kind {
                    ModifierKind::NormFactor => (ParamKind::NormFactor, 1, true),
                    ModifierKind::Lumi => (ParamKind::Lumi, 1, true),
                    ModifierKind::NormSys { .. } | ModifierKind::HistoSys { .. } => {
                        (ParamKind::Systematic, 1, true)
                    }
                    ModifierKind::StatError { .. } => (ParamKind::StatError, n_bins, false),
                    ModifierKind::ShapeSys { .. } => (ParamKind::ShapeSys, n_bins, false),
                    ModifierKind::ShapeFactor => (ParamKind::ShapeFactor, n_bins, false),
                };
                if let ModifierKind::ShapeSys { .. } = m.kind {
                    if let Some(prev) = shapesys_seen.insert(m.name.clone(), path.clone()) {
                        return Err(Error::invalid(
                            src,
                            path,
                            format!(
                                "shapesys '{}' is already used at {prev}; pyhf allows a shapesys name only once (use one name per sample)",
                                m.name
                            ),
                        ));
                    }
                }
                match sets.get_mut(&m.name) {
                    Some(req) => {
                        if req.kind != kind {
                            return Err(Error::invalid(
                                src,
                                path,
                                format!(
                                    "parameter '{}' is used by a {ty} modifier here and by a {} modifier at {}; one name cannot drive two kinds of modifier (only normsys and histosys may share a name)",
                                    m.name,
                                    req.types.join("/"),
                                    req.first_seen
                                ),
                            ));
                        }
                        if !req.types.contains(&ty) {
                            req.types.push(ty);
                        }
                        // staterror sets concatenate over channels (sized below); other
                        // per-bin sets take their size from the first channel that uses them.
                        if req.kind != ParamKind::StatError && n > req.n {
                            return Err(Error::invalid(
                                src,
                                path,
                                format!(
                                    "{ty} '{}' has {} parameters from its first use at {}, but this channel has {n} bins",
                                    m.name, req.n, req.first_seen
                                ),
                            ));
                        }
                    }
                    None => {
                        let req = default_req(kind, ty, n, scalar, path.clone(), &m.kind, &s.data);
                        sets.insert(m.name.clone(), req);
                    }
                }
            }
        }
    }

    // staterror: element map per (name, channel) and sigmas (pyhf's staterror_builder).
    // element index of channel bin i = offset of the channel within the set + i
    let mut stat_offsets: HashMap<(String, usize), usize> = HashMap::new();
    for (name, req) in sets.iter_mut() {
        if req.kind != ParamKind::StatError {
            continue;
        }
        let mut elems = 0usize;
        let mut sigmas = Vec::new();
        for &ci in &order {
            let ch = &ws.channels[ci];
            let users: Vec<(&crate::workspace::Sample, &Vec<f64>)> = ch
                .samples
                .iter()
                .filter_map(|s| {
                    s.modifiers.iter().find_map(|m| match &m.kind {
                        ModifierKind::StatError { uncertainties } if &m.name == name => {
                            Some((s, uncertainties))
                        }
                        _ => None,
                    })
                })
                .collect();
            if users.is_empty() {
                continue;
            }
            stat_offsets.insert((name.clone(), ci), elems);
            let n_bins = ch.samples[0].data.len();
            for b in 0..n_bins {
                let nom_sum: f64 = users.iter().map(|(s, _)| s.data[b]).sum();
                let mut rel2 = 0.0;
                for (_, unc) in &users {
                    if nom_sum > 0.0 {
                        rel2 += (unc[b] / nom_sum).powi(2);
                    }
                }
                sigmas.push(rel2.sqrt());
            }
            elems += n_bins;
        }
        req.n = elems;
        req.fixed = sigmas.iter().map(|&s| s == 0.0).collect();
        req.sigmas = sigmas
            .iter()
            .map(|&s| if s == 0.0 { 1.0 } else { s })
            .collect();
        req.inits = vec![1.0; elems];
        req.bounds = vec![(1e-10, 10.0); elems];
        req.auxdata = vec![1.0; elems];
    }

    // --- user configs ---------------------------------------------------------------------------
    let mut unused_configs = Vec::new();
    for (pi, cfg) in meas.parameters.iter().enumerate() {
        let path = format!(
            "measurements[{meas_index}] '{}' / config / parameters[{pi}] '{}'",
            meas.name, cfg.name
        );
        match sets.get_mut(&cfg.name) {
            None => unused_configs.push(cfg.name.clone()),
            Some(req) => apply_config(req, cfg, src, &path)?,
        }
    }
    for (name, req) in &sets {
        if req.kind == ParamKind::Lumi
            && (req.auxdata.is_empty()
                || req.sigmas.is_empty()
                || req.inits.is_empty()
                || req.bounds.is_empty())
        {
            return Err(Error::invalid(
                src,
                format!("measurements[{meas_index}] '{}' / config / parameters", meas.name),
                format!("the lumi parameter '{name}' needs a parameter config with 'inits', 'bounds', 'auxdata' and 'sigmas' (pyhf has no defaults for them)"),
            ));
        }
    }

    // --- parameter table --------------------------------------------------------------------------
    let mut parameters = Vec::new();
    let mut set_start: HashMap<String, usize> = HashMap::new();
    let mut aux = Vec::new();
    let mut gauss = Vec::new();
    let mut poisson = Vec::new();
    for name in parameter_order(&first_use) {
        let req = &sets[&name];
        set_start.insert(name.clone(), parameters.len());
        for i in 0..req.n {
            let pname = if req.scalar {
                name.clone()
            } else {
                format!("{name}[{i}]")
            };
            let index = parameters.len() as u32;
            let constraint = match req.kind {
                ParamKind::NormFactor | ParamKind::ShapeFactor => Constraint::None,
                ParamKind::ShapeSys => {
                    let c = Constraint::Poisson {
                        aux: aux.len(),
                        tau: req.factors[i],
                    };
                    poisson.push(PoissonTerm {
                        param: index,
                        aux: aux.len() as u32,
                        tau: req.factors[i],
                    });
                    aux.push(req.auxdata[i]);
                    c
                }
                _ => {
                    let c = Constraint::Gaussian {
                        aux: aux.len(),
                        sigma: req.sigmas[i],
                    };
                    gauss.push(GaussTerm {
                        param: index,
                        aux: aux.len() as u32,
                        sigma: req.sigmas[i],
                    });
                    aux.push(req.auxdata[i]);
                    c
                }
            };
            parameters.push(Parameter {
                name: pname,
                set: name.clone(),
                kind: req.kind,
                init: req.inits[i],
                bounds: req.bounds[i],
                fixed: req.fixed[i],
                constraint,
                prefit_centre: match constraint {
                    Constraint::None => None,
                    Constraint::Gaussian { aux: a, .. } => Some(aux[a]),
                    Constraint::Poisson { aux: a, tau } => Some(aux[a] / tau),
                },
            });
        }
    }

    // --- POI ------------------------------------------------------------------------------------------
    let poi_path = format!("measurements[{meas_index}] '{}' / config / poi", meas.name);
    let poi = match sets.get(&meas.poi) {
        None => {
            return Err(Error::invalid(
                src,
                poi_path,
                format!("POI '{}' is not a parameter of the model", meas.poi),
            ))
        }
        Some(req) if !req.scalar => {
            return Err(Error::invalid(
                src,
                poi_path,
                format!(
                    "POI '{}' is a {}-element {} parameter set; the POI must be a scalar",
                    meas.poi,
                    req.n,
                    req.types.join("/")
                ),
            ))
        }
        Some(_) => set_start[&meas.poi],
    };

    // --- flat layout ---------------------------------------------------------------------------------
    let mut layout = Layout {
        n_bins: main.len(),
        gauss,
        poisson,
        ..Layout::default()
    };
    let interp = options.interp;
    for (k, &ci) in order.iter().enumerate() {
        let ch = &ws.channels[ci];
        let info = &channels[k];
        for s in &ch.samples {
            let block = layout.blocks.len() as u32;
            let sb_start = layout.nominal.len();
            layout.blocks.push(Block {
                channel: k as u32,
                bin_start: info.bin_start as u32,
                sb_start: sb_start as u32,
                n_bins: info.n_bins as u32,
            });
            layout.nominal.extend_from_slice(&s.data);
            for b in 0..info.n_bins {
                layout.sb_bin.push((info.bin_start + b) as u32);
                layout.sb_block.push(block);
            }
            for m in &s.modifiers {
                let p0 = set_start[&m.name];
                match &m.kind {
                    ModifierKind::NormFactor | ModifierKind::Lumi => {
                        layout.linear.push((p0 as u32, block));
                    }
                    ModifierKind::NormSys { hi, lo } => {
                        let t = &mut layout.normsys;
                        t.param.push(p0 as u32);
                        t.block.push(block);
                        let a = match interp.normsys {
                            NormsysCode::Code4 => interp::code4_coefficients(*hi, *lo),
                            NormsysCode::Code1 => [0.0; 6],
                        };
                        for (i, x) in a.into_iter().enumerate() {
                            t.coef[i].push(x);
                        }
                        t.ln_hi.push(hi.ln());
                        t.ln_lo.push(lo.ln());
                    }
                    ModifierKind::HistoSys { hi_data, lo_data } => {
                        let t = &mut layout.histosys;
                        t.param.push(p0 as u32);
                        t.block.push(block);
                        t.offset.push(t.b1.len() as u32);
                        for b in 0..info.n_bins {
                            let (b1, b2) = interp.histosys.bases(s.data[b], hi_data[b], lo_data[b]);
                            t.b1.push(b1);
                            t.b2.push(b2);
                        }
                    }
                    ModifierKind::StatError { .. } => {
                        let off = stat_offsets[&(m.name.clone(), ci)];
                        for b in 0..info.n_bins {
                            layout
                                .binfactor
                                .push(((p0 + off + b) as u32, (sb_start + b) as u32));
                        }
                    }
                    ModifierKind::ShapeSys { .. } | ModifierKind::ShapeFactor => {
                        for b in 0..info.n_bins {
                            layout
                                .binfactor
                                .push(((p0 + b) as u32, (sb_start + b) as u32));
                        }
                    }
                }
            }
        }
    }
    layout.histosys = sort_histosys(&layout.histosys);
    layout.histosys_segments = segments(&layout.histosys.param);
    layout.normsys = sort_normsys(&layout.normsys);
    layout.normsys_segments = segments(&layout.normsys.param);
    layout.gauss_const = layout
        .gauss
        .iter()
        .map(|g| g.sigma.ln() + 0.5 * (2.0 * std::f64::consts::PI).ln())
        .sum();

    let n_aux = aux.len();
    let mut model = Model {
        source: src.to_string(),
        measurement: meas.name.clone(),
        channels,
        parameters,
        poi,
        interp,
        observed: Dataset {
            main: Vec::new(),
            aux: Vec::new(),
            lgamma_const: 0.0,
        },
        unused_configs,
        layout,
        n_aux,
    };
    model.observed = Dataset::new(&model, main, aux)?;
    Ok(model)
}

/// The order that sorts entries by (parameter, block).
fn param_order(param: &[u32], block: &[u32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..param.len()).collect();
    idx.sort_by_key(|&e| (param[e], block[e]));
    idx
}

fn sort_histosys(t: &HistosysTable) -> HistosysTable {
    let mut out = HistosysTable::default();
    for e in param_order(&t.param, &t.block) {
        let start = t.offset[e] as usize;
        let end = t.offset.get(e + 1).map_or(t.b1.len(), |&o| o as usize);
        out.param.push(t.param[e]);
        out.block.push(t.block[e]);
        out.offset.push(out.b1.len() as u32);
        out.b1.extend_from_slice(&t.b1[start..end]);
        out.b2.extend_from_slice(&t.b2[start..end]);
    }
    out
}

fn sort_normsys(t: &NormsysTable) -> NormsysTable {
    let mut out = NormsysTable::default();
    for e in param_order(&t.param, &t.block) {
        out.param.push(t.param[e]);
        out.block.push(t.block[e]);
        for i in 0..6 {
            out.coef[i].push(t.coef[i][e]);
        }
        out.ln_hi.push(t.ln_hi[e]);
        out.ln_lo.push(t.ln_lo[e]);
    }
    out
}

/// Runs of equal parameters in a table sorted by parameter.
fn segments(param: &[u32]) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    for (e, &p) in param.iter().enumerate() {
        match out.last_mut() {
            Some(s) if s.param == p => s.end = e as u32 + 1,
            _ => out.push(Segment {
                param: p,
                start: e as u32,
                end: e as u32 + 1,
            }),
        }
    }
    out
}

/// pyhf groups parameter sets by modifier type in this order.
const TYPE_ORDER: [&str; 7] = [
    "histosys",
    "lumi",
    "normfactor",
    "normsys",
    "shapefactor",
    "shapesys",
    "staterror",
];

/// pyhf's parameter order: sets grouped by type (a name shared by histosys and normsys sits
/// with histosys), each group in order of first use, except staterror sets, which pyhf
/// registers alphabetically.
fn parameter_order(first_use: &[Vec<String>]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (rank, names) in first_use.iter().enumerate() {
        let mut names = names.clone();
        if TYPE_ORDER[rank] == "staterror" {
            names.sort();
        }
        for n in names {
            if seen.insert(n.clone()) {
                out.push(n);
            }
        }
    }
    out
}

fn default_req(
    kind: ParamKind,
    ty: &'static str,
    n: usize,
    scalar: bool,
    first_seen: String,
    m: &ModifierKind,
    nominal: &[f64],
) -> SetReq {
    let mut req = SetReq {
        kind,
        types: vec![ty],
        first_seen,
        n,
        scalar,
        inits: vec![1.0; n],
        bounds: vec![(0.0, 10.0); n],
        fixed: vec![false; n],
        sigmas: Vec::new(),
        factors: Vec::new(),
        auxdata: Vec::new(),
    };
    match (kind, m) {
        (ParamKind::Systematic, _) => {
            req.inits = vec![0.0];
            req.bounds = vec![(-5.0, 5.0)];
            req.auxdata = vec![0.0];
            req.sigmas = vec![1.0];
        }
        (ParamKind::Lumi, _) => {
            // pyhf has no defaults: the measurement config must provide them.
            req.inits.clear();
            req.bounds.clear();
        }
        (ParamKind::ShapeSys, ModifierKind::ShapeSys { uncertainties }) => {
            let valid: Vec<bool> = uncertainties
                .iter()
                .zip(nominal)
                .map(|(&u, &nom)| u > 0.0 && nom > 0.0)
                .collect();
            req.factors = valid
                .iter()
                .zip(uncertainties.iter().zip(nominal))
                .map(|(&ok, (&u, &nom))| if ok { nom * nom / (u * u) } else { 1.0 })
                .collect();
            req.auxdata = req.factors.clone();
            req.fixed = valid.iter().map(|v| !v).collect();
            req.bounds = vec![(1e-10, 10.0); n];
        }
        _ => {}
    }
    req
}

/// Applies a measurement's parameter config, with pyhf's rules on which keys a kind takes.
fn apply_config(req: &mut SetReq, cfg: &ParameterConfig, src: &str, path: &str) -> Result<()> {
    let n = req.n;
    let err = |key: &str, msg: String| Error::invalid(src, format!("{path} / {key}"), msg);
    let check_len = |key: &str, len: usize| -> Result<()> {
        if len != n {
            Err(err(
                key,
                format!(
                    "has {len} values but parameter set '{}' has {n} parameters",
                    cfg.name
                ),
            ))
        } else {
            Ok(())
        }
    };
    let kind_label = req.types.join("/");
    let takes_aux = !matches!(req.kind, ParamKind::NormFactor | ParamKind::ShapeFactor);
    let takes_sigmas = matches!(req.kind, ParamKind::Lumi | ParamKind::StatError);
    let takes_factors = req.kind == ParamKind::ShapeSys;
    if let Some(v) = &cfg.inits {
        check_len("inits", v.len())?;
        req.inits = v.clone();
    }
    if let Some(v) = &cfg.bounds {
        check_len("bounds", v.len())?;
        req.bounds = v.iter().map(|b| (b[0], b[1])).collect();
    }
    if let Some(v) = &cfg.auxdata {
        if !takes_aux {
            return Err(err(
                "auxdata",
                format!(
                    "'{}' is a {kind_label} parameter, which has no auxiliary data",
                    cfg.name
                ),
            ));
        }
        check_len("auxdata", v.len())?;
        req.auxdata = v.clone();
    }
    if let Some(v) = &cfg.sigmas {
        if !takes_sigmas {
            return Err(err(
                "sigmas",
                format!(
                    "'{}' is a {kind_label} parameter, which does not take sigmas",
                    cfg.name
                ),
            ));
        }
        check_len("sigmas", v.len())?;
        if let Some(s) = v.iter().find(|s| **s <= 0.0) {
            return Err(err("sigmas", format!("sigma {s} is not positive")));
        }
        req.sigmas = v.clone();
    }
    if let Some(v) = &cfg.factors {
        if !takes_factors {
            return Err(err(
                "factors",
                format!(
                    "'{}' is a {kind_label} parameter, which does not take factors",
                    cfg.name
                ),
            ));
        }
        check_len("factors", v.len())?;
        req.factors = v.clone();
    }
    if let Some(f) = cfg.fixed {
        req.fixed = vec![f; n];
    }
    Ok(())
}
