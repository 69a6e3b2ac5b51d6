//! The model's tables arranged for data-parallel engines (WGSL, CUDA).
//!
//! A GPU evaluates one (parameter vector, dataset) item per workgroup, with threads over the
//! outputs of each phase: per sample-bin, per block, per main bin, per parameter. So every
//! table of the [`Layout`] appears grouped by the output that consumes it, as CSR lists
//! (`*_off` arrays of length `n + 1` into a flat list), and every per-parameter gradient sum
//! has its own list, so no two threads ever write the same value (no atomics):
//!
//! ```text
//! forward                                  backward (one thread per parameter)
//! add[sb]   <- histosys by sample-bin       grad[p] <- histosys entries of p  (sb, b1, b2)
//! scale[k]  <- linear, normsys by block              <- normsys entries of p (entry, block)
//! bins[sb]  <- per-bin factors by sb                 <- linear blocks of p, per-bin sbs of p
//! lam[b]    <- sample-bins by main bin               <- the constraint of p
//! ```
//!
//! Everything is derived from the one compiled [`Layout`]; engines only choose the float width.

use crate::model::{Layout, Model};

/// No entry (for optional per-parameter indices).
pub const NONE: u32 = u32::MAX;

/// Integer and float tables of one model, engine-neutral (f64; engines convert).
#[derive(Debug, Clone, Default)]
pub struct KernelTables {
    pub n_params: u32,
    pub n_bins: u32,
    pub n_sb: u32,
    pub n_blocks: u32,
    pub n_aux: u32,
    // --- sample-bins
    pub sb_bin: Vec<u32>,
    pub sb_block: Vec<u32>,
    pub nominal: Vec<f64>,
    /// First sample-bin and bin count of each block (its sample-bins are contiguous).
    pub blk_sb_start: Vec<u32>,
    pub blk_nbins: Vec<u32>,
    /// Sample-bins of each main bin.
    pub bin_sb_off: Vec<u32>,
    pub bin_sb: Vec<u32>,
    // --- histosys: segments (one per parameter), entries by sample-bin and by segment
    pub hseg_param: Vec<u32>,
    pub hs_sb_off: Vec<u32>,
    pub hs_sb_seg: Vec<u32>,
    pub hs_sb_b1: Vec<f64>,
    pub hs_sb_b2: Vec<f64>,
    pub hs_seg_off: Vec<u32>,
    pub hs_seg_sb: Vec<u32>,
    pub hs_seg_b1: Vec<f64>,
    pub hs_seg_b2: Vec<f64>,
    // --- normsys: segments, entries by block (with their data), and each segment's entries
    pub nseg_param: Vec<u32>,
    pub ns_blk_off: Vec<u32>,
    pub ns_blk_seg: Vec<u32>,
    /// code4 coefficients (6 per entry), ln hi, ln lo, by block.
    pub ns_coef: Vec<f64>,
    pub ns_ln_hi: Vec<f64>,
    pub ns_ln_lo: Vec<f64>,
    pub ns_seg_off: Vec<u32>,
    /// Entry (index in the by-block order) and its block.
    pub ns_seg_entry: Vec<u32>,
    pub ns_seg_block: Vec<u32>,
    // --- linear factors (normfactor, lumi): by block, and blocks of each parameter
    pub lin_blk_off: Vec<u32>,
    pub lin_blk_param: Vec<u32>,
    pub lin_par_off: Vec<u32>,
    pub lin_par_block: Vec<u32>,
    // --- per-bin factors (staterror, shapesys, shapefactor): by sample-bin, and per parameter
    pub bf_sb_off: Vec<u32>,
    pub bf_sb_param: Vec<u32>,
    pub bf_par_off: Vec<u32>,
    pub bf_par_sb: Vec<u32>,
    // --- per parameter: its histosys / normsys segment and constraint (or NONE)
    pub par_hseg: Vec<u32>,
    pub par_nseg: Vec<u32>,
    /// Gaussian constraint: aux index and 1/sigma^2 (NONE / 0 when none).
    pub par_gauss_aux: Vec<u32>,
    pub par_gauss_w: Vec<f64>,
    /// Poisson constraint: aux index and tau (NONE / 0 when none).
    pub par_pois_aux: Vec<u32>,
    pub par_pois_tau: Vec<f64>,
}

/// CSR lists from (key, value) pairs, keys in `0..n`, values kept in input order per key.
fn csr<T: Copy>(n: usize, pairs: impl Iterator<Item = (usize, T)>) -> (Vec<u32>, Vec<T>) {
    let mut buckets: Vec<Vec<T>> = (0..n).map(|_| Vec::new()).collect();
    for (k, v) in pairs {
        buckets[k].push(v);
    }
    let mut off = Vec::with_capacity(n + 1);
    let mut flat = Vec::new();
    off.push(0);
    for b in buckets {
        flat.extend(b);
        off.push(flat.len() as u32);
    }
    (off, flat)
}

impl KernelTables {
    pub fn new(model: &Model) -> Self {
        let l: &Layout = &model.layout;
        let np = model.n_params();
        let n_sb = l.nominal.len();
        let n_blk = l.blocks.len();
        let mut t = KernelTables {
            n_params: np as u32,
            n_bins: l.n_bins as u32,
            n_sb: n_sb as u32,
            n_blocks: n_blk as u32,
            n_aux: model.observed.aux.len() as u32,
            sb_bin: l.sb_bin.clone(),
            sb_block: l.sb_block.clone(),
            nominal: l.nominal.clone(),
            blk_sb_start: l.blocks.iter().map(|b| b.sb_start).collect(),
            blk_nbins: l.blocks.iter().map(|b| b.n_bins).collect(),
            ..Default::default()
        };
        (t.bin_sb_off, t.bin_sb) = csr(
            l.n_bins,
            (0..n_sb).map(|sb| (l.sb_bin[sb] as usize, sb as u32)),
        );

        // histosys
        let h = &l.histosys;
        t.hseg_param = l.histosys_segments.iter().map(|s| s.param).collect();
        let mut seg_of_entry = vec![0u32; h.param.len()];
        for (si, s) in l.histosys_segments.iter().enumerate() {
            for e in s.start..s.end {
                seg_of_entry[e as usize] = si as u32;
            }
        }
        let mut by_sb = Vec::new();
        let mut by_seg = Vec::new();
        for e in 0..h.param.len() {
            let blk = l.blocks[h.block[e] as usize];
            for i in 0..blk.n_bins as usize {
                let sb = blk.sb_start as usize + i;
                let (b1, b2) = (
                    h.b1[h.offset[e] as usize + i],
                    h.b2[h.offset[e] as usize + i],
                );
                by_sb.push((sb, (seg_of_entry[e], b1, b2)));
                by_seg.push((seg_of_entry[e] as usize, (sb as u32, b1, b2)));
            }
        }
        let (off, v) = csr(n_sb, by_sb.into_iter());
        t.hs_sb_off = off;
        t.hs_sb_seg = v.iter().map(|x| x.0).collect();
        t.hs_sb_b1 = v.iter().map(|x| x.1).collect();
        t.hs_sb_b2 = v.iter().map(|x| x.2).collect();
        let (off, v) = csr(l.histosys_segments.len(), by_seg.into_iter());
        t.hs_seg_off = off;
        t.hs_seg_sb = v.iter().map(|x| x.0).collect();
        t.hs_seg_b1 = v.iter().map(|x| x.1).collect();
        t.hs_seg_b2 = v.iter().map(|x| x.2).collect();

        // normsys
        let ns = &l.normsys;
        t.nseg_param = l.normsys_segments.iter().map(|s| s.param).collect();
        let mut nseg_of_entry = vec![0u32; ns.param.len()];
        for (si, s) in l.normsys_segments.iter().enumerate() {
            for e in s.start..s.end {
                nseg_of_entry[e as usize] = si as u32;
            }
        }
        let (off, order) = csr(
            n_blk,
            (0..ns.param.len()).map(|e| (ns.block[e] as usize, e)),
        );
        t.ns_blk_off = off;
        let mut position = vec![0u32; ns.param.len()];
        for (pos, &e) in order.iter().enumerate() {
            position[e] = pos as u32;
            t.ns_blk_seg.push(nseg_of_entry[e]);
            for c in 0..6 {
                t.ns_coef.push(ns.coef[c][e]);
            }
            t.ns_ln_hi.push(ns.ln_hi[e]);
            t.ns_ln_lo.push(ns.ln_lo[e]);
        }
        let (off, v) = csr(
            l.normsys_segments.len(),
            (0..ns.param.len()).map(|e| (nseg_of_entry[e] as usize, (position[e], ns.block[e]))),
        );
        t.ns_seg_off = off;
        t.ns_seg_entry = v.iter().map(|x| x.0).collect();
        t.ns_seg_block = v.iter().map(|x| x.1).collect();

        // linear and per-bin factors
        (t.lin_blk_off, t.lin_blk_param) =
            csr(n_blk, l.linear.iter().map(|&(p, k)| (k as usize, p)));
        (t.lin_par_off, t.lin_par_block) = csr(np, l.linear.iter().map(|&(p, k)| (p as usize, k)));
        (t.bf_sb_off, t.bf_sb_param) =
            csr(n_sb, l.binfactor.iter().map(|&(p, sb)| (sb as usize, p)));
        (t.bf_par_off, t.bf_par_sb) = csr(np, l.binfactor.iter().map(|&(p, sb)| (p as usize, sb)));

        // per parameter
        t.par_hseg = vec![NONE; np];
        for (si, &p) in t.hseg_param.iter().enumerate() {
            t.par_hseg[p as usize] = si as u32;
        }
        t.par_nseg = vec![NONE; np];
        for (si, &p) in t.nseg_param.iter().enumerate() {
            t.par_nseg[p as usize] = si as u32;
        }
        t.par_gauss_aux = vec![NONE; np];
        t.par_gauss_w = vec![0.0; np];
        for g in &l.gauss {
            t.par_gauss_aux[g.param as usize] = g.aux;
            t.par_gauss_w[g.param as usize] = 1.0 / (g.sigma * g.sigma);
        }
        t.par_pois_aux = vec![NONE; np];
        t.par_pois_tau = vec![0.0; np];
        for p in &l.poisson {
            t.par_pois_aux[p.param as usize] = p.aux;
            t.par_pois_tau[p.param as usize] = p.tau;
        }
        t
    }

    /// Number of normsys entries (by-block order).
    pub fn n_normsys(&self) -> usize {
        self.ns_ln_hi.len()
    }

    /// Number of histosys segments and normsys segments.
    pub fn n_hseg(&self) -> usize {
        self.hseg_param.len()
    }
    pub fn n_nseg(&self) -> usize {
        self.nseg_param.len()
    }
}

/// The tables flattened for a GPU engine: one integer array (a header of [`N_META`] slots,
/// then every integer table) and one float array, with each table's start recorded in its
/// header slot, plus the layout of one item's scratch. `wgsl/model.wgsl` and `cuda/model.cuh`
/// read the header through the same slot numbers; the WGSL engine narrows the floats to f32,
/// the CUDA engine keeps them f64.
#[derive(Debug, Clone)]
pub struct PackedTables {
    pub ints: Vec<u32>,
    pub floats: Vec<f64>,
    /// Floats of scratch one item needs (the sum of the `S_*` areas).
    pub scratch_per_item: usize,
}

/// Header slots of [`PackedTables::ints`] (the constants of wgsl/model.wgsl and cuda/model.cuh).
pub mod slot {
    pub const N_PARAMS: usize = 0;
    pub const N_BINS: usize = 1;
    pub const N_SB: usize = 2;
    pub const N_BLK: usize = 3;
    pub const N_AUX: usize = 4;
    pub const N_HSEG: usize = 5;
    pub const N_NSEG: usize = 6;
    pub const N_NS: usize = 7;
    /// Items of the current batch (written per dispatch by the WGSL engine).
    pub const N_ITEMS: usize = 8;
    pub const SCRATCH: usize = 9;
    pub const HISTO_CODE: usize = 10;
    pub const NORMSYS_CODE: usize = 11;
    /// Scratch areas' offsets: S_HC..=S_U are slots 49..=57 (50 unused).
    pub const S_HC: usize = 49;
    /// Offset of the normsys log-derivatives, the last scratch area.
    pub const S_DLOG: usize = 54;
}

/// Slots in the header of [`PackedTables::ints`].
pub const N_META: usize = 60;

impl KernelTables {
    /// The flattened form every GPU engine uploads (see [`PackedTables`]).
    pub fn pack(&self, interp: crate::model::InterpCodes) -> PackedTables {
        use crate::model::{HistosysCode, NormsysCode};
        let t = self;
        let mut ints: Vec<u32> = vec![0; N_META];
        let mut floats: Vec<f64> = Vec::new();
        let n_ns = t.n_normsys() as u32;
        ints[slot::N_PARAMS] = t.n_params;
        ints[slot::N_BINS] = t.n_bins;
        ints[slot::N_SB] = t.n_sb;
        ints[slot::N_BLK] = t.n_blocks;
        ints[slot::N_AUX] = t.n_aux;
        ints[slot::N_HSEG] = t.n_hseg() as u32;
        ints[slot::N_NSEG] = t.n_nseg() as u32;
        ints[slot::N_NS] = n_ns;
        ints[slot::HISTO_CODE] = match interp.histosys {
            HistosysCode::Code0 => 0,
            HistosysCode::Code2 => 2,
            HistosysCode::Code4p => 4,
        };
        ints[slot::NORMSYS_CODE] = match interp.normsys {
            NormsysCode::Code1 => 1,
            NormsysCode::Code4 => 4,
        };
        for (s, v) in [
            (12, &t.sb_bin),
            (13, &t.sb_block),
            (14, &t.bin_sb_off),
            (15, &t.bin_sb),
            (16, &t.hseg_param),
            (17, &t.hs_sb_off),
            (18, &t.hs_sb_seg),
            (19, &t.hs_seg_off),
            (20, &t.hs_seg_sb),
            (21, &t.nseg_param),
            (22, &t.ns_blk_off),
            (23, &t.ns_blk_seg),
            (24, &t.ns_seg_off),
            (25, &t.ns_seg_entry),
            (26, &t.ns_seg_block),
            (27, &t.lin_blk_off),
            (28, &t.lin_blk_param),
            (29, &t.lin_par_off),
            (30, &t.lin_par_block),
            (31, &t.bf_sb_off),
            (32, &t.bf_sb_param),
            (33, &t.bf_par_off),
            (34, &t.bf_par_sb),
            (35, &t.par_hseg),
            (36, &t.par_nseg),
            (37, &t.par_gauss_aux),
            (38, &t.par_pois_aux),
            (58, &t.blk_sb_start),
            (59, &t.blk_nbins),
        ] {
            ints[s] = ints.len() as u32;
            ints.extend_from_slice(v);
        }
        for (s, v) in [
            (39, &t.nominal),
            (40, &t.hs_sb_b1),
            (41, &t.hs_sb_b2),
            (42, &t.hs_seg_b1),
            (43, &t.hs_seg_b2),
            (44, &t.ns_coef),
            (45, &t.ns_ln_hi),
            (46, &t.ns_ln_lo),
            (47, &t.par_gauss_w),
            (48, &t.par_pois_tau),
        ] {
            ints[s] = floats.len() as u32;
            floats.extend_from_slice(v);
        }
        // scratch areas per item (slot, floats): dlog last, so that an engine can keep the
        // others in fast memory and dlog, the largest, elsewhere. Slot 50 (S_HC + 1) names
        // no area: the engines make each normsys entry's powers of its parameter where they
        // use them (session 8; it held 12 floats per normsys segment).
        let mut off = 0u32;
        for (i, len) in [
            (0, 4 * t.n_hseg() as u32),
            (2, t.n_sb),
            (3, t.n_sb),
            (4, t.n_blocks),
            (6, t.n_bins),
            (7, t.n_sb),
            (8, t.n_blocks),
            (5, n_ns),
        ] {
            ints[slot::S_HC + i] = off;
            off += len.max(1);
        }
        ints[slot::SCRATCH] = off;
        if floats.is_empty() {
            floats.push(0.0);
        }
        PackedTables {
            ints,
            floats,
            scratch_per_item: off as usize,
        }
    }
}

/// A plain, sequential evaluation over [`KernelTables`] in the order of the GPU kernels'
/// phases: the specification the WGSL and CUDA kernels transliterate, and the check that the
/// tables describe the same likelihood as the CPU engine. Returns the NLL without the
/// data-only constant (`sum ln Gamma(n+1)`) and the Gaussian normalisations, which engines add
/// on the host in f64, and writes the gradient.
pub fn reference_nll_grad(
    t: &KernelTables,
    interp: crate::model::InterpCodes,
    pars: &[f64],
    main: &[f64],
    aux: &[f64],
    grad: &mut [f64],
) -> f64 {
    let (n_sb, n_blk, n_bins) = (t.n_sb as usize, t.n_blocks as usize, t.n_bins as usize);
    // phase 1: per segment
    let hc: Vec<[f64; 4]> = t
        .hseg_param
        .iter()
        .map(|&p| interp.histosys.coefficients(pars[p as usize]))
        .collect();
    let na: Vec<_> = t
        .nseg_param
        .iter()
        .map(|&p| interp.normsys.alpha(pars[p as usize]))
        .collect();
    // phase 2: per sample-bin and per block
    let mut add = vec![0.0; n_sb];
    let mut bscale = vec![1.0; n_sb];
    for sb in 0..n_sb {
        let mut a = t.nominal[sb];
        for e in t.hs_sb_off[sb] as usize..t.hs_sb_off[sb + 1] as usize {
            let c = hc[t.hs_sb_seg[e] as usize];
            a += t.hs_sb_b1[e] * c[0] + t.hs_sb_b2[e] * c[1];
        }
        add[sb] = a;
        for e in t.bf_sb_off[sb] as usize..t.bf_sb_off[sb + 1] as usize {
            bscale[sb] *= pars[t.bf_sb_param[e] as usize];
        }
    }
    let mut scale = vec![1.0; n_blk];
    let mut dlog = vec![0.0; t.n_normsys()];
    for k in 0..n_blk {
        let mut s = 1.0;
        for e in t.lin_blk_off[k] as usize..t.lin_blk_off[k + 1] as usize {
            s *= pars[t.lin_blk_param[e] as usize];
        }
        let mut log = 0.0;
        for e in t.ns_blk_off[k] as usize..t.ns_blk_off[k + 1] as usize {
            let a = &na[t.ns_blk_seg[e] as usize];
            if a.inside {
                let c = &t.ns_coef[6 * e..6 * e + 6];
                let (mut poly, mut dpoly) = (1.0, 0.0);
                for i in 0..6 {
                    poly += c[i] * a.pow[i];
                    dpoly += c[i] * a.dpow[i];
                }
                s *= poly;
                dlog[e] = dpoly / poly;
            } else {
                log += a.w_hi * t.ns_ln_hi[e] + a.w_lo * t.ns_ln_lo[e];
                dlog[e] = a.dw_hi * t.ns_ln_hi[e] + a.dw_lo * t.ns_ln_lo[e];
            }
        }
        scale[k] = s * log.exp();
    }
    // phase 3: per main bin (deviance form), constraints
    let mut nll = 0.0;
    let mut w = vec![0.0; n_bins];
    for b in 0..n_bins {
        let mut lam = 0.0;
        for e in t.bin_sb_off[b] as usize..t.bin_sb_off[b + 1] as usize {
            let sb = t.bin_sb[e] as usize;
            lam += add[sb] * scale[t.sb_block[sb] as usize] * bscale[sb];
        }
        let n = main[b];
        if !(lam > 0.0 || (lam == 0.0 && n == 0.0)) {
            return f64::INFINITY;
        }
        nll += if n > 0.0 { lam - n * lam.ln() } else { lam };
        w[b] = if lam > 0.0 { 1.0 - n / lam } else { 1.0 };
    }
    for p in 0..t.n_params as usize {
        if t.par_gauss_aux[p] != NONE {
            let d = pars[p] - aux[t.par_gauss_aux[p] as usize];
            nll += 0.5 * d * d * t.par_gauss_w[p];
        }
        if t.par_pois_aux[p] != NONE {
            let (r, a) = (pars[p] * t.par_pois_tau[p], aux[t.par_pois_aux[p] as usize]);
            if !(r > 0.0 || (r == 0.0 && a == 0.0)) {
                return f64::INFINITY;
            }
            nll += if a > 0.0 { r - a * r.ln() } else { r };
        }
    }
    // phase 4: per sample-bin and per block
    let mut gsb = vec![0.0; n_sb];
    let mut u = vec![0.0; n_blk];
    for sb in 0..n_sb {
        let k = t.sb_block[sb] as usize;
        let wb = w[t.sb_bin[sb] as usize];
        gsb[sb] = wb * scale[k] * bscale[sb];
        u[k] += wb * add[sb] * bscale[sb];
    }
    // phase 5: per parameter
    for p in 0..t.n_params as usize {
        let mut g = 0.0;
        if t.par_gauss_aux[p] != NONE {
            g += (pars[p] - aux[t.par_gauss_aux[p] as usize]) * t.par_gauss_w[p];
        }
        if t.par_pois_aux[p] != NONE {
            let a = aux[t.par_pois_aux[p] as usize];
            g += if a > 0.0 {
                t.par_pois_tau[p] - a / pars[p]
            } else {
                t.par_pois_tau[p]
            };
        }
        if t.par_hseg[p] != NONE {
            let s = t.par_hseg[p] as usize;
            let c = hc[s];
            for e in t.hs_seg_off[s] as usize..t.hs_seg_off[s + 1] as usize {
                g += gsb[t.hs_seg_sb[e] as usize] * (t.hs_seg_b1[e] * c[2] + t.hs_seg_b2[e] * c[3]);
            }
        }
        if t.par_nseg[p] != NONE {
            let s = t.par_nseg[p] as usize;
            for e in t.ns_seg_off[s] as usize..t.ns_seg_off[s + 1] as usize {
                let k = t.ns_seg_block[e] as usize;
                g += u[k] * scale[k] * dlog[t.ns_seg_entry[e] as usize];
            }
        }
        for e in t.lin_par_off[p] as usize..t.lin_par_off[p + 1] as usize {
            let k = t.lin_par_block[e] as usize;
            g += u[k] * others_linear(t, pars, &scale, &na, k, p);
        }
        for e in t.bf_par_off[p] as usize..t.bf_par_off[p + 1] as usize {
            let sb = t.bf_par_sb[e] as usize;
            let k = t.sb_block[sb] as usize;
            let others = if pars[p] != 0.0 {
                bscale[sb] / pars[p]
            } else {
                (t.bf_sb_off[sb] as usize..t.bf_sb_off[sb + 1] as usize)
                    .map(|j| t.bf_sb_param[j] as usize)
                    .filter(|&q| q != p)
                    .map(|q| pars[q])
                    .product()
            };
            g += w[t.sb_bin[sb] as usize] * add[sb] * scale[k] * others;
        }
        grad[p] = g;
    }
    nll
}

/// scale[k] without the linear factor of parameter `p` (division unless it is 0).
fn others_linear(
    t: &KernelTables,
    pars: &[f64],
    scale: &[f64],
    na: &[crate::model::interp::NormsysAlpha],
    k: usize,
    p: usize,
) -> f64 {
    if pars[p] != 0.0 {
        return scale[k] / pars[p];
    }
    let mut s: f64 = (t.lin_blk_off[k] as usize..t.lin_blk_off[k + 1] as usize)
        .map(|e| t.lin_blk_param[e] as usize)
        .filter(|&q| q != p)
        .map(|q| pars[q])
        .product();
    let mut log = 0.0;
    for e in t.ns_blk_off[k] as usize..t.ns_blk_off[k + 1] as usize {
        let a = &na[t.ns_blk_seg[e] as usize];
        if a.inside {
            s *= 1.0 + (0..6).map(|i| t.ns_coef[6 * e + i] * a.pow[i]).sum::<f64>();
        } else {
            log += a.w_hi * t.ns_ln_hi[e] + a.w_lo * t.ns_ln_lo[e];
        }
    }
    s * log.exp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Evaluator;

    /// The tables describe the same likelihood and gradient as the CPU engine.
    #[test]
    fn tables_reproduce_the_cpu_engine() -> crate::Result<()> {
        crate::test_models::for_each(|name, interp, model| {
            let t = KernelTables::new(&model);
            for shift in [0.0, 0.3, -1.4] {
                let mut pars = model.init();
                for (i, p) in pars.iter_mut().enumerate() {
                    if !model.parameters[i].fixed {
                        *p += shift
                            * (0.5 + 0.1 * (i % 3) as f64)
                            * if *p == 0.0 { 1.0 } else { 0.2 };
                    }
                }
                let mut g_ref = vec![0.0; pars.len()];
                let mut g_cpu = vec![0.0; pars.len()];
                let d = &model.observed;
                let v = reference_nll_grad(&t, model.interp, &pars, &d.main, &d.aux, &mut g_ref);
                let cpu = Evaluator::new(&model).nll_grad(&pars, d, &mut g_cpu)?;
                let full = v + d.lgamma_const + model.layout.gauss_const;
                assert!(
                    (full - cpu).abs() <= 1e-11 * cpu.abs(),
                    "{name} {interp} {shift}: {full} vs {cpu}"
                );
                for (a, b) in g_ref.iter().zip(&g_cpu) {
                    assert!(
                        (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                        "{name} {interp} {shift}: grad {a} vs {b}"
                    );
                }
            }
            Ok(())
        })
    }
}
