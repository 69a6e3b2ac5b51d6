//! The CPU engine: f64 NLL and analytic gradient, the reference every engine is tested against.
//!
//! [`Evaluator`] owns scratch buffers sized for one model, so [`Evaluator::nll_grad`] does no
//! allocation per call. The kernel walks the flat tables of [`Layout`] in three passes:
//! forward (rates), Poisson terms (weights `w = dNLL/dlambda`), backward (chain rule per
//! table). Gradients are exact (no finite differences) for every modifier and code.

use crate::error::{Error, Result};
use crate::model::{Dataset, Layout, Model, NormsysCode, NormsysTable, Segment};
use rayon::prelude::*;

mod aligned;
mod histosys;
pub(crate) mod isa;
mod lanes;
mod poisson;
use aligned::Aligned;
use histosys::{HistosysLanes, SegmentCoef};
// The intrinsic paths (and so these levels) exist on x86-64 only.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_imports))]
use isa::{AVX2, AVX512, PORTABLE};
use lanes::{Lane, LaneGeometry, LANES};

/// Scratch space and the evaluation kernel for one model.
#[derive(Debug, Clone)]
pub struct Evaluator<'m> {
    model: &'m Model,
    histosys: HistosysLanes,
    geo: LaneGeometry,
    /// Additive part of every sample-bin (nominal + histosys deltas), in the block lanes.
    pad: Aligned<Lane>,
    scale: Vec<f64>,
    logscale: Vec<f64>,
    /// Per block, its scale without the linear factors (normfactor, lumi): the gradient of a
    /// linear factor is this times the block's other linear factors, with no division (and
    /// no special case for a factor at zero).
    nonlin: Vec<f64>,
    /// The linear factors grouped by block: runs `(block, start, end)` into `lin_param`.
    lin_runs: Vec<(u32, u32, u32)>,
    lin_param: Vec<u32>,
    /// Product of per-bin gammas, in the block lanes.
    binscale: Aligned<Lane>,
    /// dNLL / d(additive part), in the block lanes.
    gsb: Aligned<Lane>,
    /// Expected rates and dNLL/dlambda in the channel lanes; `lam` also per main bin.
    lam_pad: Aligned<Lane>,
    w_pad: Aligned<Lane>,
    lam: Vec<f64>,
    /// Per normsys entry: the polynomial factor (1 outside, where the exponential goes into
    /// `logscale`) and d ln(factor) / d alpha (for the gradient).
    fac: Aligned<f64>,
    dlog: Aligned<f64>,
    /// The normsys table with every parameter's run padded to a multiple of [`LANES`]
    /// entries (dummy entries: factor 1, block `n_blocks`), so its loop vectorizes whole.
    ns: NormsysTable,
    ns_segments: Vec<Segment>,
    /// The padded normsys coefficients, per vector of [`LANES`] entries: one lane-vector per
    /// power of alpha, so that a vector's coefficients are one contiguous 192-byte stream.
    ns_vc: Aligned<[Lane; 6]>,
    /// The parameter of each of those vectors (a parameter's run is whole vectors).
    ns_vparam: Vec<u32>,
    /// The padded normsys entries of each block, in runs padded to whole vectors with the
    /// index of a constant 1 (the last slot of `fac`): the per-block products read them.
    ns_by_block: Vec<u32>,
    ns_block_ranges: Vec<(u32, u32)>,
    /// Per histosys segment: interpolation coefficients as `[c1, c1, c2, c2]` (for the
    /// forward pass), and their derivatives `(d1, d2)`.
    hcoef: Aligned<SegmentCoef>,
    hderiv: Vec<[f64; 2]>,
    /// One row of the Jacobian (Fisher diagonal).
    row: Vec<f64>,
    /// Per Gaussian constraint, 1 / sigma (a product is cheaper than a division per call),
    /// and its gradient (theta - aux) / sigma^2, kept from the NLL pass for the backward one.
    inv_sigma: Vec<f64>,
    gauss_d: Vec<f64>,
    /// The Gaussian constraints as runs over consecutive constraints, parameters and
    /// auxiliary data, `[first constraint, first parameter, first aux, length]` (tHu: two).
    gauss_runs: Vec<[u32; 4]>,
    /// dNLL / d(product of per-bin factors), in the block lanes.
    gbs: Aligned<Lane>,
    /// The per-bin factors that are the only factor on their sample-bin (the product of the
    /// others is 1: the gradient is a plain sum of `gbs`), as runs per parameter
    /// `(param, start, end)` into `bf1_slot`, their flat indices in the block lanes.
    bf1_runs: Vec<(u32, u32, u32)>,
    bf1_slot: Vec<u32>,
    /// The other per-bin factors, as indices into `geo.binfactor`.
    bf_multi: Vec<u32>,
}

impl<'m> Evaluator<'m> {
    /// An evaluator with buffers sized for `model`.
    pub fn new(model: &'m Model) -> Self {
        let l = &model.layout;
        let n_blk = l.blocks.len();
        validate_indices(l, model.n_params());
        let channel_bins: Vec<(usize, usize)> = model
            .channels
            .iter()
            .map(|c| (c.bin_start, c.n_bins))
            .collect();
        let geo = LaneGeometry::new(l, &channel_bins, model.n_params());
        let histosys = HistosysLanes::new(l, &geo);
        let mut per_slot = vec![0u32; geo.n_blk_lanes * LANES];
        for &(_, f) in &geo.binfactor {
            per_slot[f as usize] += 1;
        }
        let (mut singles, mut bf_multi) = (Vec::new(), Vec::new());
        for (e, &(p, f)) in geo.binfactor.iter().enumerate() {
            if per_slot[f as usize] == 1 {
                singles.push((p, f));
            } else {
                bf_multi.push(e as u32);
            }
        }
        singles.sort_by_key(|&(p, _)| p);
        let bf1_runs = runs(singles.iter().map(|&(p, _)| p));
        let bf1_slot: Vec<u32> = singles.iter().map(|&(_, f)| f).collect();
        // The invariants of the unchecked per-bin factor loop (slots and parameters were
        // checked when the geometry was built).
        assert!(bf1_runs
            .iter()
            .all(|&(p, s, t)| (p as usize) < model.n_params()
                && s <= t
                && t as usize <= bf1_slot.len()));
        let mut lin = l.linear.clone();
        lin.sort_by_key(|&(_, k)| k);
        let lin_runs = runs(lin.iter().map(|&(_, k)| k));
        let lin_param: Vec<u32> = lin.iter().map(|&(p, _)| p).collect();
        // The invariant of the unchecked linear-factor loop (validate_indices checked the
        // blocks and parameters).
        assert!(lin_runs
            .iter()
            .all(|&(_, s, t)| s <= t && t as usize <= lin_param.len()));
        let (ns, ns_segments) = pad_normsys(l);
        let (ns_by_block, ns_block_ranges) = normsys_by_block(&ns, n_blk);
        let ns_vc: Vec<[Lane; 6]> = (0..ns.param.len() / LANES)
            .map(|v| std::array::from_fn(|c| std::array::from_fn(|j| ns.coef[c][v * LANES + j])))
            .collect();
        let ns_vc = Aligned::from_slice(&ns_vc);
        let ns_vparam: Vec<u32> = ns.param.iter().step_by(LANES).copied().collect();
        // The invariants of `normsys_poly`, `block_products` and `normsys_gradient`.
        assert!(ns_vparam.len() == ns_vc.len());
        assert!(ns_vparam.iter().all(|&p| (p as usize) < model.n_params()));
        assert!(ns_by_block.iter().all(|&i| (i as usize) <= ns.param.len()));
        assert!(ns_block_ranges.iter().all(|&(s, t)| s <= t
            && ((t - s) as usize).is_multiple_of(LANES)
            && t as usize <= ns_by_block.len()));
        assert!(ns.block.iter().all(|&k| (k as usize) <= n_blk));
        assert!(ns_segments
            .iter()
            .all(|g| ((g.end - g.start) as usize).is_multiple_of(LANES)
                && g.end as usize <= ns.param.len()));
        Evaluator {
            model,
            pad: Aligned::filled(geo.n_blk_lanes, [0.0; LANES]),
            binscale: Aligned::filled(geo.n_blk_lanes, [1.0; LANES]),
            gsb: Aligned::filled(geo.n_blk_lanes, [0.0; LANES]),
            gbs: Aligned::filled(geo.n_blk_lanes, [0.0; LANES]),
            lam_pad: Aligned::filled(geo.n_chan_lanes, [0.0; LANES]),
            w_pad: Aligned::filled(geo.n_chan_lanes, [0.0; LANES]),
            lam: vec![0.0; l.n_bins],
            geo,
            histosys,
            scale: vec![0.0; n_blk + 1],
            logscale: vec![0.0; n_blk + 1],
            nonlin: vec![0.0; n_blk + 1],
            lin_runs,
            lin_param,
            fac: Aligned::filled(ns.param.len() + 1, 1.0),
            dlog: Aligned::filled(ns.param.len(), 0.0),
            ns,
            ns_segments,
            ns_vc,
            ns_vparam,
            ns_by_block,
            ns_block_ranges,
            hcoef: Aligned::filled(l.histosys_segments.len(), [0.0; 2]),
            hderiv: vec![[0.0; 2]; l.histosys_segments.len()],
            row: vec![0.0; model.n_params()],
            inv_sigma: l.gauss.iter().map(|g| 1.0 / g.sigma).collect(),
            gauss_d: vec![0.0; l.gauss.len()],
            gauss_runs: gauss_runs(&l.gauss),
            bf1_runs,
            bf1_slot,
            bf_multi,
        }
    }

    /// The model this evaluator serves.
    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// NLL (pyhf's `-logpdf`) at `pars` for `data`, with errors for undefined likelihoods.
    pub fn nll(&mut self, pars: &[f64], data: &Dataset) -> Result<f64> {
        self.check(pars, data)?;
        let v = self.kernel(pars, data, None);
        self.finish(v, pars, data)
    }

    /// NLL and its gradient (written into `grad`), with errors for undefined likelihoods.
    pub fn nll_grad(&mut self, pars: &[f64], data: &Dataset, grad: &mut [f64]) -> Result<f64> {
        self.check(pars, data)?;
        if grad.len() != pars.len() {
            return Err(Error::Length {
                what: "gradient buffer".into(),
                expected: pars.len(),
                got: grad.len(),
            });
        }
        let v = self.kernel(pars, data, Some(grad));
        self.finish(v, pars, data)
    }

    /// The raw kernel for optimizers: NLL (`+inf` where the likelihood is undefined) and,
    /// when asked, the gradient. No checks, no allocation.
    #[inline]
    pub fn nll_grad_unchecked(
        &mut self,
        pars: &[f64],
        data: &Dataset,
        grad: Option<&mut [f64]>,
    ) -> f64 {
        self.kernel(pars, data, grad)
    }

    fn check(&self, pars: &[f64], data: &Dataset) -> Result<()> {
        let m = self.model;
        if pars.len() != m.n_params() {
            return Err(Error::Length {
                what: "parameter vector".into(),
                expected: m.n_params(),
                got: pars.len(),
            });
        }
        if data.main.len() != m.n_bins() || data.aux.len() != m.n_aux {
            return Err(Error::Length {
                what: "dataset (main + aux)".into(),
                expected: m.n_bins() + m.n_aux,
                got: data.main.len() + data.aux.len(),
            });
        }
        if let Some((i, &v)) = pars.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::NonFiniteParameter {
                name: m.parameters[i].name.clone(),
                value: v,
            });
        }
        Ok(())
    }

    /// Turns a non-finite kernel result into an error that names the bin or constraint.
    fn finish(&mut self, v: f64, pars: &[f64], data: &Dataset) -> Result<f64> {
        if v.is_finite() {
            return Ok(v);
        }
        let m = self.model;
        // The forward pass left lambda in self.lam.
        for (b, (&l, &n)) in self.lam.iter().zip(&data.main).enumerate() {
            if !(l > 0.0 || (l == 0.0 && n == 0.0)) {
                let ch = m
                    .channels
                    .iter()
                    .find(|c| b >= c.bin_start && b < c.bin_start + c.n_bins)
                    .map(|c| (c.name.clone(), b - c.bin_start))
                    .unwrap_or_else(|| ("?".into(), b));
                return Err(Error::NonPositiveRate {
                    channel: ch.0,
                    bin: ch.1,
                    rate: l,
                    observed: n,
                });
            }
        }
        for t in &m.layout.poisson {
            let r = pars[t.param as usize] * t.tau;
            let a = data.aux[t.aux as usize];
            if !(r > 0.0 || (r == 0.0 && a == 0.0)) {
                return Err(Error::UndefinedConstraint {
                    parameter: m.parameters[t.param as usize].name.clone(),
                    value: pars[t.param as usize],
                });
            }
        }
        Err(Error::Usage(format!(
            "the NLL is not finite ({v}) at these parameters"
        )))
    }

    /// Dispatches to the build of the kernel for the best instruction set this CPU has
    /// (the same source, compiled once per level of [`isa`]).
    #[inline]
    fn kernel(&mut self, pars: &[f64], data: &Dataset, grad: Option<&mut [f64]>) -> f64 {
        self.kernel_at(isa::level(), pars, data, grad)
    }

    /// The kernel built for `level`, which must be at most [`isa::supported`].
    #[inline]
    fn kernel_at(
        &mut self,
        level: u8,
        pars: &[f64],
        data: &Dataset,
        grad: Option<&mut [f64]>,
    ) -> f64 {
        assert!(level <= isa::supported(), "instruction set not supported");
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: the CPU supports the features each function is compiled for (asserted).
            if level == AVX2 {
                return unsafe { self.kernel_simd::<AVX2>(pars, data, grad) };
            }
            if level == AVX512 {
                return unsafe { self.kernel_simd::<AVX512>(pars, data, grad) };
            }
        }
        self.kernel_generic::<PORTABLE>(pars, data, grad)
    }

    /// The kernel compiled for AVX2 + FMA, at level `ISA` (AVX512's histosys loops are
    /// compiled for AVX-512 themselves: the rest of the kernel keeps 256-bit code).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn kernel_simd<const ISA: u8>(
        &mut self,
        pars: &[f64],
        data: &Dataset,
        grad: Option<&mut [f64]>,
    ) -> f64 {
        self.kernel_generic::<ISA>(pars, data, grad)
    }

    /// The kernel; `ISA` selects the intrinsic loops and must be at most [`isa::supported`]
    /// (only `kernel_at` sets it above [`PORTABLE`]).
    #[inline(always)]
    fn kernel_generic<const ISA: u8>(
        &mut self,
        pars: &[f64],
        data: &Dataset,
        grad: Option<&mut [f64]>,
    ) -> f64 {
        self.forward_generic::<ISA>(pars, grad.is_some());
        self.poisson_and_backward::<ISA>(pars, data, grad)
    }

    /// The expected main-measurement rates at `pars` (pyhf's `expected_actualdata`), written
    /// into `out` (length `n_bins`).
    pub fn expected_main(&mut self, pars: &[f64], out: &mut [f64]) {
        #[cfg(target_arch = "x86_64")]
        {
            if isa::level() >= AVX2 {
                // SAFETY: the CPU supports the features the function is compiled for (these
                // less frequent passes stay at AVX2 + FMA).
                unsafe { self.forward_avx2(pars) };
                out.copy_from_slice(&self.lam);
                return;
            }
        }
        self.forward_generic::<PORTABLE>(pars, false);
        out.copy_from_slice(&self.lam);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn forward_avx2(&mut self, pars: &[f64]) {
        self.forward_generic::<AVX2>(pars, false)
    }

    /// Forward pass: expected rates into `self.lam`, with the intermediate quantities the
    /// backward pass needs.
    #[inline(always)]
    ///
    /// `deriv`: whether the backward pass follows (it needs the normsys derivatives).
    fn forward_generic<const ISA: u8>(&mut self, pars: &[f64], deriv: bool) {
        let m = self.model;
        // The one length check the unchecked loops below rely on (for `pars`).
        assert_eq!(pars.len(), m.n_params(), "parameter vector length");
        let l: &Layout = &m.layout;
        let code_h = m.interp.histosys;
        let code_n = m.interp.normsys;

        // ---- forward: additive part (nominal + histosys deltas), per block lane from its
        // histosys records; the coefficients once per parameter segment
        self.histosys
            .coefficients::<ISA>(code_h, pars, &mut self.hcoef, &mut self.hderiv);
        self.histosys
            .forward::<ISA>(&self.geo.nominal, &self.hcoef, &mut self.pad);

        // ---- forward: per-block scale (normfactor, lumi, normsys)
        self.scale.fill(1.0);
        self.logscale.fill(0.0);
        let ns = &self.ns;
        // code4's polynomial for every entry in one pass (no per-parameter setup); the
        // parameters outside |alpha| < 1, and all of code1's, are overwritten below.
        let code4 = code_n == NormsysCode::Code4;
        if code4 {
            let n = ns.param.len();
            // SAFETY: ns_vparam was checked in `new` against n_params == pars.len() (asserted
            // above); AVX2 only after feature detection.
            unsafe {
                normsys_poly::<ISA>(
                    &self.ns_vc,
                    &self.ns_vparam,
                    pars,
                    &mut self.fac[..n],
                    &mut self.dlog,
                    deriv,
                )
            };
        }
        for seg in &self.ns_segments {
            let theta = pars[seg.param as usize];
            if code4 && theta < 1.0 && theta > -1.0 {
                continue;
            }
            let a = code_n.alpha(theta);
            for e in seg.start as usize..seg.end as usize {
                self.fac[e] = 1.0;
                self.logscale[ns.block[e] as usize] += a.w_hi * ns.ln_hi[e] + a.w_lo * ns.ln_lo[e];
                self.dlog[e] = a.dw_hi * ns.ln_hi[e] + a.dw_lo * ns.ln_lo[e];
            }
        }
        // SAFETY: the tables were checked in `new`; AVX2 only after feature detection.
        unsafe {
            block_products::<ISA>(
                &self.ns_by_block,
                &self.ns_block_ranges,
                &self.fac,
                &mut self.scale,
            )
        };
        for (s, &ls) in self.scale.iter_mut().zip(&self.logscale) {
            if ls != 0.0 {
                *s *= ls.exp();
            }
        }
        self.nonlin.copy_from_slice(&self.scale);
        for &(p, k) in &l.linear {
            // SAFETY: validate_indices checked p < n_params == pars.len() (asserted above) and
            // k < n_blocks < scale.len().
            unsafe { *self.scale.get_unchecked_mut(k as usize) *= *pars.get_unchecked(p as usize) };
        }

        // ---- forward: per-bin gammas and expected rates, in lanes
        let geo = &self.geo;
        self.binscale.fill([1.0; LANES]);
        let bs = self.binscale.as_flattened_mut();
        for &(p, s, t) in &self.bf1_runs {
            // SAFETY: runs, slots and parameters were checked in `new` and when the geometry
            // was built (slots < n_blk_lanes * LANES == bs.len()); pars.len() checked above.
            unsafe {
                let theta = *pars.get_unchecked(p as usize);
                for i in s as usize..t as usize {
                    *bs.get_unchecked_mut(*self.bf1_slot.get_unchecked(i) as usize) = theta;
                }
            }
        }
        for &e in &self.bf_multi {
            let (p, f) = geo.binfactor[e as usize];
            bs[f as usize] *= pars[p as usize];
        }
        self.lam_pad.fill([0.0; LANES]);
        geo.rates::<ISA>(&self.scale, &self.pad, &self.binscale, &mut self.lam_pad);
        let lf = self.lam_pad.as_flattened();
        for (l, &f) in self.lam.iter_mut().zip(&geo.bin_flat) {
            *l = lf[f as usize];
        }
    }

    #[inline(always)]
    fn poisson_and_backward<const ISA: u8>(
        &mut self,
        pars: &[f64],
        data: &Dataset,
        grad: Option<&mut [f64]>,
    ) -> f64 {
        let l: &Layout = &self.model.layout;
        let (nll, mut defined) = poisson::terms::<ISA>(
            &self.lam,
            &data.main,
            &self.geo.bin_flat,
            self.w_pad.as_flattened_mut(),
        );

        // ---- constraints
        let mut cons = gauss_terms::<ISA>(
            &self.gauss_runs,
            pars,
            &data.aux,
            &self.inv_sigma,
            &mut self.gauss_d,
        );
        for t in &l.poisson {
            let gam = pars[t.param as usize];
            let r = gam * t.tau;
            let a = data.aux[t.aux as usize];
            if r > 0.0 {
                cons += if a > 0.0 { r - a * r.ln() } else { r };
            } else if !(r == 0.0 && a == 0.0) {
                defined = false;
            }
        }
        if !defined {
            return f64::INFINITY;
        }
        let total = nll + cons + data.lgamma_const + l.gauss_const;

        let Some(grad) = grad else {
            return total;
        };

        // ---- backward
        grad.fill(0.0);
        for &[k, p, _, n] in &self.gauss_runs {
            let (k, p, n) = (k as usize, p as usize, n as usize);
            for (g, &gd) in grad[p..p + n].iter_mut().zip(&self.gauss_d[k..k + n]) {
                *g += gd;
            }
        }
        for t in &l.poisson {
            let p = t.param as usize;
            let a = data.aux[t.aux as usize];
            grad[p] += if a > 0.0 { t.tau - a / pars[p] } else { t.tau };
        }
        self.backward_main::<ISA>(pars, grad);
        total
    }

    /// Adds to `grad` the derivatives of `sum_b w[b] * lambda[b]` (with `self.w` set and the
    /// forward pass done): the main-measurement part of the gradient when `w = dNLL/dlambda`.
    #[inline(always)]
    fn backward_main<const ISA: u8>(&mut self, pars: &[f64], grad: &mut [f64]) {
        assert_eq!(grad.len(), pars.len(), "gradient buffer length");
        assert_eq!(pars.len(), self.model.n_params(), "parameter vector length");
        let ns = &self.ns;
        // dNLL/d(additive part) per sample-bin, and dNLL/d scale[k] (into logscale), in lanes
        let geo = &self.geo;
        let u = &mut self.logscale;
        geo.backward::<ISA>(
            &self.scale,
            &self.w_pad,
            &self.pad,
            &self.binscale,
            &mut self.gsb,
            &mut self.gbs,
            u,
        );
        // histosys, on the same lanes
        self.histosys.backward::<ISA>(&self.gsb, &self.hderiv, grad);
        for &(k, s, t) in &self.lin_runs {
            // SAFETY: runs lie in lin_param and name blocks below n_blocks < u.len() ==
            // nonlin.len() (checked in `new`); parameters are below n_params == pars.len() ==
            // grad.len() (validate_indices, and the asserts above).
            let (uk, run) = unsafe {
                let k = k as usize;
                (
                    *u.get_unchecked(k) * *self.nonlin.get_unchecked(k),
                    self.lin_param.get_unchecked(s as usize..t as usize),
                )
            };
            match *run {
                // SAFETY: as above.
                [p] => unsafe { *grad.get_unchecked_mut(p as usize) += uk },
                [p, q] => unsafe {
                    let (p, q) = (p as usize, q as usize);
                    *grad.get_unchecked_mut(p) += uk * *pars.get_unchecked(q);
                    *grad.get_unchecked_mut(q) += uk * *pars.get_unchecked(p);
                },
                _ => {
                    for (i, &p) in run.iter().enumerate() {
                        let mut others = uk;
                        for (j, &q) in run.iter().enumerate() {
                            if j != i {
                                others *= pars[q as usize];
                            }
                        }
                        grad[p as usize] += others;
                    }
                }
            }
        }
        // d NLL / d ln(scale[k]) = u[k] * scale[k]
        for (uk, &s) in u.iter_mut().zip(&self.scale) {
            *uk *= s;
        }
        // SAFETY: as above.
        unsafe { normsys_gradient::<ISA>(&self.ns_segments, &ns.block, &self.dlog, u, grad) };
        // per-bin factors: d lambda / d theta = (w s a) * (product of the other factors)
        let (gb, bf) = (self.gbs.as_flattened(), self.binscale.as_flattened());
        for &(p, s, t) in &self.bf1_runs {
            let mut acc = [0.0; 4];
            let (mut i, t) = (s as usize, t as usize);
            // SAFETY: runs lie in bf1_slot and name parameters below n_params (checked in
            // `new`), slots are below n_blk_lanes * LANES == gb.len() (checked when the
            // geometry was built), and grad.len() == pars.len() == n_params (asserted above).
            unsafe {
                let slot = |i: usize| *self.bf1_slot.get_unchecked(i) as usize;
                while i + 4 <= t {
                    for (q, a) in acc.iter_mut().enumerate() {
                        *a += gb.get_unchecked(slot(i + q));
                    }
                    i += 4;
                }
                while i < t {
                    acc[0] += gb.get_unchecked(slot(i));
                    i += 1;
                }
                *grad.get_unchecked_mut(p as usize) += (acc[0] + acc[1]) + (acc[2] + acc[3]);
            }
        }
        for &e in &self.bf_multi {
            let (p, f) = geo.binfactor[e as usize];
            let (p, f) = (p as usize, f as usize);
            let theta = pars[p];
            let others = if theta != 0.0 {
                bf[f] / theta
            } else {
                geo.binfactor
                    .iter()
                    .filter(|&&(q, g)| g as usize == f && q as usize != p)
                    .map(|&(q, _)| pars[q as usize])
                    .product()
            };
            grad[p] += gb[f] * others;
        }
    }

    /// The diagonal of the expected (Fisher) information at `pars`: for the main measurement
    /// `sum_b (dlambda_b/dtheta_i)^2 / lambda_b`, plus each constraint's curvature. A cheap,
    /// good diagonal preconditioner for fits. Returns false where some rate is not positive.
    pub fn fisher_diagonal(&mut self, pars: &[f64], out: &mut [f64]) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            if isa::level() >= AVX2 {
                // SAFETY: the CPU supports the features the function is compiled for (these
                // less frequent passes stay at AVX2 + FMA).
                return unsafe { self.fisher_diagonal_avx2(pars, out) };
            }
        }
        self.fisher_diagonal_generic::<PORTABLE>(pars, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fisher_diagonal_avx2(&mut self, pars: &[f64], out: &mut [f64]) -> bool {
        self.fisher_diagonal_generic::<AVX2>(pars, out)
    }

    /// The whole expected (Fisher) information at `pars`, row-major `n x n` into `out`
    /// (`sum_b J_bi J_bj / lambda_b` plus each constraint's curvature on the diagonal): the
    /// initial inverse Hessian of fits that start near `pars` (toys at their generating
    /// point) is its inverse. Returns false where some rate is not positive.
    pub fn fisher_matrix(&mut self, pars: &[f64], out: &mut [f64]) -> bool {
        self.fisher_generic::<PORTABLE>(pars, out, true)
    }

    #[inline(always)]
    fn fisher_diagonal_generic<const ISA: u8>(&mut self, pars: &[f64], out: &mut [f64]) -> bool {
        self.fisher_generic::<ISA>(pars, out, false)
    }

    /// The Fisher information's diagonal (`out` of length n), or with `full` the whole matrix
    /// (`out` of length n * n, row-major).
    #[inline(always)]
    fn fisher_generic<const ISA: u8>(&mut self, pars: &[f64], out: &mut [f64], full: bool) -> bool {
        let m = self.model;
        let n = m.n_params();
        assert_eq!(
            out.len(),
            if full { n * n } else { n },
            "Fisher output length"
        );
        let at = |i: usize| if full { i * n + i } else { i };
        self.forward_generic::<ISA>(pars, true);
        out.fill(0.0);
        let mut row = std::mem::take(&mut self.row);
        for b in 0..m.n_bins() {
            let lam = self.lam[b];
            if lam <= 0.0 {
                if lam < 0.0 {
                    self.row = row;
                    return false;
                }
                continue;
            }
            let wf = self.w_pad.as_flattened_mut();
            wf.fill(0.0);
            wf[self.geo.bin_flat[b] as usize] = 1.0;
            row.fill(0.0);
            self.backward_main::<ISA>(pars, &mut row);
            if full {
                // (r_i / sqrt(lam)) (r_j / sqrt(lam)): symmetric bit for bit
                let s = 1.0 / lam.sqrt();
                for r in row.iter_mut() {
                    *r *= s;
                }
                for (i, &ri) in row.iter().enumerate() {
                    if ri != 0.0 {
                        for (o, &rj) in out[i * n..(i + 1) * n].iter_mut().zip(&row) {
                            *o += ri * rj;
                        }
                    }
                }
            } else {
                for (o, r) in out.iter_mut().zip(&row) {
                    *o += r * r / lam;
                }
            }
        }
        self.row = row;
        for g in &m.layout.gauss {
            out[at(g.param as usize)] += 1.0 / (g.sigma * g.sigma);
        }
        for t in &m.layout.poisson {
            let gam = pars[t.param as usize];
            if gam > 0.0 {
                out[at(t.param as usize)] += t.tau / gam;
            }
        }
        true
    }
}

/// The runs of equal keys in a sorted sequence, as `(key, start, end)` index ranges.
fn runs(keys: impl Iterator<Item = u32>) -> Vec<(u32, u32, u32)> {
    let mut out: Vec<(u32, u32, u32)> = Vec::new();
    for (i, k) in keys.enumerate() {
        match out.last_mut() {
            Some(r) if r.0 == k => r.2 += 1,
            _ => out.push((k, i as u32, i as u32 + 1)),
        }
    }
    out
}

/// The Gaussian constraints as maximal runs over consecutive constraints, parameters and
/// auxiliary data: `[first constraint, first parameter, first aux, length]`.
fn gauss_runs(gauss: &[crate::model::GaussTerm]) -> Vec<[u32; 4]> {
    let mut runs: Vec<[u32; 4]> = Vec::new();
    for (k, g) in gauss.iter().enumerate() {
        if let Some(r) = runs.last_mut() {
            let [k0, p0, a0, n] = *r;
            if k as u32 == k0 + n && g.param == p0 + n && g.aux == a0 + n {
                r[3] += 1;
                continue;
            }
        }
        runs.push([k as u32, g.param, g.aux, 1]);
    }
    runs
}

/// The Gaussian constraints' NLL, `sum (theta - aux)^2 / (2 sigma^2)`, over `runs`, with each
/// one's gradient `(theta - aux) / sigma^2` into `gd` (four a vector with AVX2).
#[inline(always)]
fn gauss_terms<const ISA: u8>(
    runs: &[[u32; 4]],
    pars: &[f64],
    aux: &[f64],
    inv_sigma: &[f64],
    gd: &mut [f64],
) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if ISA >= AVX2 {
        // SAFETY: AVX2 only after feature detection.
        return unsafe { gauss_terms_avx2(runs, pars, aux, inv_sigma, gd) };
    }
    let mut sum = 0.0;
    for &[k, p, a, n] in runs {
        let (k, p, a, n) = (k as usize, p as usize, a as usize, n as usize);
        for i in 0..n {
            let d = (pars[p + i] - aux[a + i]) * inv_sigma[k + i];
            sum += 0.5 * d * d;
            gd[k + i] = d * inv_sigma[k + i];
        }
    }
    sum
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gauss_terms_avx2(
    runs: &[[u32; 4]],
    pars: &[f64],
    aux: &[f64],
    inv_sigma: &[f64],
    gd: &mut [f64],
) -> f64 {
    use std::arch::x86_64::*;
    let (mut acc, mut tail) = (_mm256_setzero_pd(), 0.0);
    for &[k, p, a, n] in runs {
        let (k, p, a, n) = (k as usize, p as usize, a as usize, n as usize);
        // the run's slices (checked once), then vectors of four within them
        let (x, y, inv) = (&pars[p..p + n], &aux[a..a + n], &inv_sigma[k..k + n]);
        let g = &mut gd[k..k + n];
        let mut i = 0;
        while i + 4 <= n {
            let s = _mm256_loadu_pd(inv.as_ptr().add(i));
            let d = _mm256_mul_pd(
                _mm256_sub_pd(
                    _mm256_loadu_pd(x.as_ptr().add(i)),
                    _mm256_loadu_pd(y.as_ptr().add(i)),
                ),
                s,
            );
            acc = _mm256_fmadd_pd(d, d, acc);
            _mm256_storeu_pd(g.as_mut_ptr().add(i), _mm256_mul_pd(d, s));
            i += 4;
        }
        for i in i..n {
            let d = (x[i] - y[i]) * inv[i];
            tail += d * d;
            g[i] = d * inv[i];
        }
    }
    let h = _mm_add_pd(_mm256_castpd256_pd128(acc), _mm256_extractf128_pd::<1>(acc));
    0.5 * (_mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h))) + tail)
}

/// Checks the index invariants the kernel's unchecked loops rely on. The compiler builds them
/// correct; this keeps a future bug from becoming memory unsafety.
fn validate_indices(l: &Layout, n_params: usize) {
    let n_sb = l.nominal.len();
    assert!(l.sb_bin.len() == n_sb && l.sb_block.len() == n_sb);
    assert!(l.sb_bin.iter().all(|&b| (b as usize) < l.n_bins));
    assert!(l.sb_block.iter().all(|&k| (k as usize) < l.blocks.len()));
    assert!(l
        .binfactor
        .iter()
        .all(|&(p, sb)| (p as usize) < n_params && (sb as usize) < n_sb));
    assert!(l
        .linear
        .iter()
        .all(|&(p, k)| (p as usize) < n_params && (k as usize) < l.blocks.len()));
    assert!(l
        .normsys
        .block
        .iter()
        .all(|&k| (k as usize) < l.blocks.len()));
    assert!(l.normsys.param.iter().all(|&p| (p as usize) < n_params));
}

/// Per block, the indices of its padded normsys entries, each block's run padded to whole
/// vectors with the index `ns.param.len()` (a slot of `fac` that always holds 1).
fn normsys_by_block(ns: &NormsysTable, n_blocks: usize) -> (Vec<u32>, Vec<(u32, u32)>) {
    let one = ns.param.len() as u32;
    let mut per_block: Vec<Vec<u32>> = vec![Vec::new(); n_blocks];
    for (e, &k) in ns.block.iter().enumerate() {
        if (k as usize) < n_blocks {
            per_block[k as usize].push(e as u32);
        }
    }
    let (mut idx, mut ranges) = (Vec::new(), Vec::with_capacity(n_blocks));
    for mut v in per_block {
        let start = idx.len() as u32;
        v.resize(v.len().div_ceil(LANES) * LANES, one);
        idx.extend(v);
        ranges.push((start, idx.len() as u32));
    }
    (idx, ranges)
}

/// `scale[k] *= prod of fac over block k's normsys entries`.
///
/// # Safety
/// Every index in `idx` is below `fac.len()`, every range lies in `idx` with a length that is a
/// multiple of `LANES`, `ranges.len() <= scale.len()`, and AVX2 + FMA are available when `AVX2`
/// (the evaluator's tables, checked in `Evaluator::new`).
#[inline(always)]
unsafe fn block_products<const ISA: u8>(
    idx: &[u32],
    ranges: &[(u32, u32)],
    fac: &[f64],
    scale: &mut [f64],
) {
    #[cfg(target_arch = "x86_64")]
    if ISA >= AVX2 {
        block_products_avx2(idx, ranges, fac, scale);
        return;
    }
    for (k, &(s, t)) in ranges.iter().enumerate() {
        let mut p = 1.0;
        for &i in &idx[s as usize..t as usize] {
            p *= fac[i as usize];
        }
        scale[k] *= p;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_products_avx2(idx: &[u32], ranges: &[(u32, u32)], fac: &[f64], scale: &mut [f64]) {
    use std::arch::x86_64::*;
    for (k, &(s, t)) in ranges.iter().enumerate() {
        let mut acc = _mm256_set1_pd(1.0);
        let mut i = s as usize;
        while i < t as usize {
            let v = _mm_loadu_si128(idx.as_ptr().add(i) as *const __m128i);
            acc = _mm256_mul_pd(acc, _mm256_i32gather_pd::<8>(fac.as_ptr(), v));
            i += LANES;
        }
        let mut x = [0.0; LANES];
        _mm256_storeu_pd(x.as_mut_ptr(), acc);
        *scale.get_unchecked_mut(k) *= (x[0] * x[1]) * (x[2] * x[3]);
    }
}

/// `grad[p] += sum over p's normsys entries of u[block] * dlog` (`dlog`: each entry's
/// d ln(factor) / d alpha, from the forward pass).
///
/// # Safety
/// Segments are runs of whole vectors inside `block` and `dlog`, every block index is below
/// `u.len()`, and AVX2 + FMA are available when `AVX2` (checked in `Evaluator::new`).
#[inline(always)]
unsafe fn normsys_gradient<const ISA: u8>(
    segs: &[Segment],
    block: &[u32],
    dlog: &[f64],
    u: &[f64],
    grad: &mut [f64],
) {
    #[cfg(target_arch = "x86_64")]
    if ISA >= AVX2 {
        normsys_gradient_avx2(segs, block, dlog, u, grad);
        return;
    }
    for seg in segs {
        let mut acc = [0.0; LANES];
        for e in seg.start as usize..seg.end as usize {
            acc[e % LANES] += u[block[e] as usize] * dlog[e];
        }
        grad[seg.param as usize] += (acc[0] + acc[1]) + (acc[2] + acc[3]);
    }
}

/// As the portable loop: a vector of four entries at a time (segments are whole vectors),
/// their blocks' `u` gathered.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn normsys_gradient_avx2(
    segs: &[Segment],
    block: &[u32],
    dlog: &[f64],
    u: &[f64],
    grad: &mut [f64],
) {
    use std::arch::x86_64::*;
    for seg in segs {
        let mut acc = _mm256_setzero_pd();
        for e in (seg.start as usize..seg.end as usize).step_by(LANES) {
            let v = _mm_loadu_si128(block.as_ptr().add(e) as *const __m128i);
            let uv = _mm256_i32gather_pd::<8>(u.as_ptr(), v);
            acc = _mm256_fmadd_pd(uv, _mm256_loadu_pd(dlog.as_ptr().add(e)), acc);
        }
        let mut x = [0.0; LANES];
        _mm256_storeu_pd(x.as_mut_ptr(), acc);
        grad[seg.param as usize] += (x[0] + x[1]) + (x[2] + x[3]);
    }
}

/// `fac = 1 + sum_i c_i alpha^i` and `dlog = d ln(fac) / d alpha` for the entries of the
/// coefficient vectors `vc`, vector `v` at `alpha = pars[vparam[v]]` (code4's polynomial, and
/// its derivative over it: the division runs here, beside this pass's stream of coefficients
/// from L2, and the gradient then reads one array instead of two). Without `deriv`, `dlog`
/// may be left stale.
///
/// # Safety
/// Every `vparam` is below `pars.len()`, and AVX2 + FMA are available when `AVX2` (the
/// evaluator's tables, checked in `Evaluator::new`).
#[inline(always)]
unsafe fn normsys_poly<const ISA: u8>(
    vc: &[[Lane; 6]],
    vparam: &[u32],
    pars: &[f64],
    fac: &mut [f64],
    dlog: &mut [f64],
    deriv: bool,
) {
    assert!(fac.len() == vc.len() * LANES && dlog.len() == fac.len() && vparam.len() == vc.len());
    #[cfg(target_arch = "x86_64")]
    if ISA >= AVX2 {
        if deriv {
            normsys_poly_avx2::<true>(vc, vparam, pars, fac, dlog);
        } else {
            normsys_poly_avx2::<false>(vc, vparam, pars, fac, dlog);
        }
        return;
    }
    for (v, c) in vc.iter().enumerate() {
        let alpha = *pars.get_unchecked(vparam[v] as usize);
        let (mut pow, mut dpow, mut p) = ([0.0; 6], [0.0; 6], 1.0);
        for i in 0..6 {
            dpow[i] = (i as f64 + 1.0) * p;
            p *= alpha;
            pow[i] = p;
        }
        for j in 0..LANES {
            let poly = 1.0
                + (c[0][j] * pow[0] + c[1][j] * pow[1] + c[2][j] * pow[2])
                + (c[3][j] * pow[3] + c[4][j] * pow[4] + c[5][j] * pow[5]);
            let dpoly = (c[0][j] * dpow[0] + c[1][j] * dpow[1] + c[2][j] * dpow[2])
                + (c[3][j] * dpow[3] + c[4][j] * dpow[4] + c[5][j] * dpow[5]);
            fac[v * LANES + j] = poly;
            dlog[v * LANES + j] = dpoly / poly;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn normsys_poly_avx2<const DERIV: bool>(
    vc: &[[Lane; 6]],
    vparam: &[u32],
    pars: &[f64],
    fac: &mut [f64],
    dlog: &mut [f64],
) {
    use std::arch::x86_64::*;
    let one = _mm256_set1_pd(1.0);
    let (f, g) = (fac.as_mut_ptr(), dlog.as_mut_ptr());
    for (v, c) in vc.iter().enumerate() {
        let x = _mm256_broadcast_sd(pars.get_unchecked(*vparam.get_unchecked(v) as usize));
        let c: [__m256d; 6] = std::array::from_fn(|i| _mm256_loadu_pd(c[i].as_ptr()));
        if !DERIV {
            let mut q = _mm256_fmadd_pd(c[5], x, c[4]);
            for ci in [c[3], c[2], c[1], c[0]] {
                q = _mm256_fmadd_pd(q, x, ci);
            }
            _mm256_storeu_pd(f.add(v * LANES), _mm256_fmadd_pd(q, x, one));
            continue;
        }
        // Horner for q = sum_i c_i alpha^i and q' together; poly = 1 + alpha q and
        // dpoly = q + alpha q' (11 FMAs instead of 12 products and their sums).
        let mut q = _mm256_fmadd_pd(c[5], x, c[4]);
        let mut dq = c[5];
        for ci in [c[3], c[2], c[1], c[0]] {
            dq = _mm256_fmadd_pd(dq, x, q);
            q = _mm256_fmadd_pd(q, x, ci);
        }
        let poly = _mm256_fmadd_pd(q, x, one);
        let dpoly = _mm256_fmadd_pd(dq, x, q);
        _mm256_storeu_pd(f.add(v * LANES), poly);
        _mm256_storeu_pd(g.add(v * LANES), _mm256_div_pd(dpoly, poly));
    }
}

/// The normsys table with each parameter's run padded to a multiple of [`LANES`] entries by
/// dummy entries (zero coefficients and logarithms: factor 1, derivative 0) on the dummy block
/// `n_blocks`.
fn pad_normsys(l: &Layout) -> (NormsysTable, Vec<Segment>) {
    let t = &l.normsys;
    let dummy = l.blocks.len() as u32;
    let mut out = NormsysTable::default();
    let mut segments = Vec::with_capacity(l.normsys_segments.len());
    for seg in &l.normsys_segments {
        let start = out.param.len() as u32;
        let n = (seg.end - seg.start) as usize;
        for i in 0..n.div_ceil(LANES) * LANES {
            let e = seg.start as usize + i;
            let real = i < n;
            out.param.push(seg.param);
            out.block.push(if real { t.block[e] } else { dummy });
            for c in 0..6 {
                out.coef[c].push(if real { t.coef[c][e] } else { 0.0 });
            }
            out.ln_hi.push(if real { t.ln_hi[e] } else { 0.0 });
            out.ln_lo.push(if real { t.ln_lo[e] } else { 0.0 });
        }
        segments.push(Segment {
            param: seg.param,
            start,
            end: out.param.len() as u32,
        });
    }
    (out, segments)
}

impl Model {
    /// NLL (pyhf's `-logpdf(pars, data)`) at `pars` for the observed data.
    ///
    /// Allocates scratch space per call; use [`Evaluator`] in loops.
    pub fn nll(&self, pars: &[f64]) -> Result<f64> {
        Evaluator::new(self).nll(pars, &self.observed)
    }

    /// NLL and gradient at `pars` for the observed data.
    pub fn nll_grad(&self, pars: &[f64]) -> Result<(f64, Vec<f64>)> {
        let mut g = vec![0.0; self.n_params()];
        let v = Evaluator::new(self).nll_grad(pars, &self.observed, &mut g)?;
        Ok((v, g))
    }

    /// NLL and gradient for many (parameters, dataset) pairs in parallel (rayon), one
    /// evaluator per worker thread.
    pub fn nll_grad_batch(&self, items: &[(&[f64], &Dataset)]) -> Vec<Result<(f64, Vec<f64>)>> {
        items
            .par_iter()
            .map_init(
                || Evaluator::new(self),
                |ev, (pars, data)| {
                    let mut g = vec![0.0; pars.len()];
                    ev.nll_grad(pars, data, &mut g).map(|v| (v, g))
                },
            )
            .collect()
    }
}

impl Evaluator<'_> {
    /// The expected dataset at `pars` (pyhf's `expected_data`): expected main rates, and
    /// auxiliary data at the parameters' values (theta for Gaussian constraints, gamma * tau
    /// for Poisson ones). At fitted parameters this is the Asimov dataset.
    pub fn expected_dataset(&mut self, pars: &[f64]) -> Dataset {
        let m = self.model;
        let mut main = vec![0.0; m.n_bins()];
        self.expected_main(pars, &mut main);
        let mut aux = vec![0.0; m.observed.aux.len()];
        for g in &m.layout.gauss {
            aux[g.aux as usize] = pars[g.param as usize];
        }
        for t in &m.layout.poisson {
            aux[t.aux as usize] = pars[t.param as usize] * t.tau;
        }
        Dataset::from_parts(m, main, aux)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every build of the kernel this CPU runs (AVX2 + FMA, AVX-512) agrees with the portable
    /// one (FMA rounding and summation order only), on the example models and, where
    /// `NEXTSTAT_WORKSPACES` (or `../shared/workspaces`) has it, on tHu, whose blocks of five
    /// and six bins mix full and half histosys records.
    #[test]
    fn every_instruction_set_matches_portable_kernel() -> crate::Result<()> {
        let levels: Vec<u8> = (AVX2..=isa::supported()).collect();
        if levels.is_empty() {
            eprintln!("only the portable kernel runs on this CPU: nothing to compare");
        }
        let compare = |name: &str, model: &Model| {
            let mut pars = model.init();
            for (i, p) in pars.iter_mut().enumerate() {
                *p += 0.05
                    * ((i % 7) as f64 - 3.0)
                    * if model.parameters[i].fixed { 0.0 } else { 1.0 };
            }
            let mut ev = Evaluator::new(model);
            let mut g0 = vec![0.0; pars.len()];
            let f0 = ev.kernel_at(PORTABLE, &pars, &model.observed, Some(&mut g0));
            for &level in &levels {
                let mut g = vec![0.0; pars.len()];
                let f = ev.kernel_at(level, &pars, &model.observed, Some(&mut g));
                assert!(
                    (f0 - f).abs() <= 1e-12 * f0.abs(),
                    "{name} level {level}: {f0} vs {f}"
                );
                for (a, b) in g0.iter().zip(&g) {
                    assert!(
                        (a - b).abs() <= 1e-10 * a.abs().max(1.0),
                        "{name} level {level}: grad {a} vs {b}"
                    );
                }
            }
            // the AVX-512 histosys loops make the AVX2 loops' sums, bit for bit
            if levels.contains(&AVX512) {
                let (mut g2, mut g5) = (vec![0.0; pars.len()], vec![0.0; pars.len()]);
                let f2 = ev.kernel_at(AVX2, &pars, &model.observed, Some(&mut g2));
                let f5 = ev.kernel_at(AVX512, &pars, &model.observed, Some(&mut g5));
                assert_eq!(
                    f2.to_bits(),
                    f5.to_bits(),
                    "{name}: AVX2 {f2} vs AVX-512 {f5}"
                );
                for (p, (a, b)) in g2.iter().zip(&g5).enumerate() {
                    assert_eq!(a.to_bits(), b.to_bits(), "{name} grad {p}: {a} vs {b}");
                }
            }
        };
        crate::test_models::for_each(|name, interp, model| {
            compare(&format!("{name} {interp}"), &model);
            Ok(())
        })?;
        for interp in ["histosys=code0", "histosys=code2", "histosys=code4p"] {
            compare(
                &format!("wide blocks {interp}"),
                &wide_blocks_model(interp)?,
            );
        }
        let dir = std::env::var_os("NEXTSTAT_WORKSPACES")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/workspaces")
            });
        let thu = dir.join("workspace_tHu.json");
        if thu.exists() {
            compare("workspace_tHu.json", &Model::from_path(&thu)?);
        } else {
            eprintln!(
                "skipping tHu: {} not found (set NEXTSTAT_WORKSPACES)",
                thu.display()
            );
        }
        Ok(())
    }

    /// Channels of 1, 2, 5, 6, 9 and 10 bins whose samples carry shared histosys (and
    /// normsys) modifiers: full, half and pair histosys records in every position a block can
    /// give them (a pair after full lanes, half records alone).
    fn wide_blocks_model(interp: &str) -> crate::Result<Model> {
        let channels: Vec<serde_json::Value> = [1usize, 2, 5, 6, 9, 10]
            .iter()
            .map(|&n| {
                let v = |a: f64, b: f64| -> Vec<f64> {
                    (0..n).map(|i| a + b * ((i * 7 + n) % 5) as f64).collect()
                };
                let hs = |name: &str, up: f64, dn: f64| {
                    serde_json::json!({"name": name, "type": "histosys",
                        "data": {"hi_data": v(10.0 + up, 1.5), "lo_data": v(10.0 - dn, 1.0)}})
                };
                serde_json::json!({"name": format!("ch{n}"), "samples": [
                    {"name": "sig", "data": v(2.0, 0.5), "modifiers": [
                        {"name": "mu", "type": "normfactor", "data": null},
                        hs("jes", 1.2, 0.7)]},
                    {"name": "bkg", "data": v(10.0, 1.2), "modifiers": [
                        hs("jes", 0.9, 1.1), hs("jer", 0.4, 0.2), hs("pdf", 0.3, 0.5),
                        hs("fsr", 0.6, 0.1), hs("isr", 0.2, 0.7), hs("pu", 0.5, 0.4),
                        {"name": "xs", "type": "normsys", "data": {"hi": 1.1, "lo": 0.93}}]}]})
            })
            .collect();
        let observations: Vec<serde_json::Value> = [1usize, 2, 5, 6, 9, 10]
            .iter()
            .map(|&n| {
                let data: Vec<f64> = (0..n).map(|i| 11.0 + (i % 4) as f64).collect();
                serde_json::json!({"name": format!("ch{n}"), "data": data})
            })
            .collect();
        let ws = crate::Workspace::from_json_str(
            &serde_json::json!({"version": "1.0.0", "channels": channels,
                "observations": observations,
                "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}]})
            .to_string(),
        )?;
        let opts = crate::CompileOptions {
            measurement: None,
            interp: interp.parse()?,
        };
        Model::from_workspace(&ws, &opts)
    }

    /// The histosys coefficients of every instruction-set level are the portable ones bit for
    /// bit, inside, at and beyond |alpha| = 1, at every code (six segments: a group of four
    /// and a remainder).
    #[test]
    fn histosys_coefficients_match_the_portable_ones() -> crate::Result<()> {
        for interp in ["histosys=code0", "histosys=code2", "histosys=code4p"] {
            let model = wide_blocks_model(interp)?;
            let ev = Evaluator::new(&model);
            let segs = &model.layout.histosys_segments;
            assert_eq!(segs.len(), 6);
            let alphas = [
                -2.5,
                -1.0 - 1e-12,
                -1.0,
                -0.4,
                0.0,
                0.7,
                1.0,
                1.0 + 1e-12,
                3.0,
            ];
            for shift in 0..alphas.len() {
                let mut pars = model.init();
                for (i, g) in segs.iter().enumerate() {
                    pars[g.param as usize] = alphas[(i + shift) % alphas.len()];
                }
                let n = segs.len();
                let (mut c0, mut d0) = (vec![[0.0; 2]; n], vec![[0.0; 2]; n]);
                ev.histosys.coefficients::<PORTABLE>(
                    model.interp.histosys,
                    &pars,
                    &mut c0,
                    &mut d0,
                );
                for level in AVX2..=isa::supported() {
                    let (mut c, mut d) = (vec![[0.0; 2]; n], vec![[0.0; 2]; n]);
                    match level {
                        // SAFETY: the CPU supports the level (the range above).
                        #[cfg(target_arch = "x86_64")]
                        AVX2 | AVX512 => unsafe { coefficients_avx2(&ev, &pars, &mut c, &mut d) },
                        _ => unreachable!(),
                    }
                    for (x, y) in c0.iter().chain(&d0).zip(c.iter().chain(&d)) {
                        assert_eq!(
                            [x[0].to_bits(), x[1].to_bits()],
                            [y[0].to_bits(), y[1].to_bits()],
                            "{interp}, level {level}: {x:?} vs {y:?}"
                        );
                    }
                }
            }
        }
        Ok(())
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn coefficients_avx2(
        ev: &Evaluator,
        pars: &[f64],
        c: &mut [[f64; 2]],
        d: &mut [[f64; 2]],
    ) {
        ev.histosys
            .coefficients::<AVX2>(ev.model.interp.histosys, pars, c, d)
    }

    /// The wide-block model's gradient against central differences (its pair records'
    /// backward pass against their forward pass), at every histosys code.
    #[test]
    fn wide_blocks_gradient_matches_differences() -> crate::Result<()> {
        for interp in ["histosys=code0", "histosys=code2", "histosys=code4p"] {
            let model = wide_blocks_model(interp)?;
            let mut ev = Evaluator::new(&model);
            let mut pars = model.init();
            for (i, p) in pars.iter_mut().enumerate() {
                *p += 0.1 * ((i % 5) as f64 - 2.0) + 0.03;
            }
            assert_gradient_matches_differences(&mut ev, &pars, interp)?;
        }
        Ok(())
    }

    /// The analytic gradient at `pars` against central differences (step 1e-6, relative
    /// 1e-6).
    fn assert_gradient_matches_differences(
        ev: &mut Evaluator,
        pars: &[f64],
        label: &str,
    ) -> crate::Result<()> {
        let model = ev.model();
        let mut g = vec![0.0; pars.len()];
        ev.nll_grad(pars, &model.observed, &mut g)?;
        for i in 0..pars.len() {
            let h = 1e-6;
            let mut p = pars.to_vec();
            p[i] += h;
            let fp = ev.nll(&p, &model.observed)?;
            p[i] -= 2.0 * h;
            let fm = ev.nll(&p, &model.observed)?;
            let fd = (fp - fm) / (2.0 * h);
            assert!(
                (g[i] - fd).abs() <= 1e-6 * fd.abs().max(1.0),
                "{label}: d/d{} analytic {} vs {fd}",
                model.parameters[i].name,
                g[i]
            );
        }
        Ok(())
    }

    /// The whole Fisher information: symmetric, its diagonal the diagonal one's, and each
    /// entry `sum_b J_bi J_bj / lambda_b` (plus constraints) with `J` from central differences
    /// of the expected rates.
    #[test]
    fn fisher_matrix_is_the_jacobians_product() -> crate::Result<()> {
        let model = wide_blocks_model("histosys=code4p")?;
        let n = model.n_params();
        let pars: Vec<f64> = model
            .init()
            .iter()
            .enumerate()
            .map(|(i, &x)| x + 0.03 * ((i % 5) as f64 - 2.0))
            .collect();
        let mut ev = Evaluator::new(&model);
        let mut full = vec![0.0; n * n];
        let mut diag = vec![0.0; n];
        assert!(ev.fisher_matrix(&pars, &mut full));
        assert!(ev.fisher_diagonal(&pars, &mut diag));
        let nb = model.n_bins();
        let mut lam = vec![0.0; nb];
        ev.expected_main(&pars, &mut lam);
        let jac: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                let h = 1e-6 * pars[i].abs().max(1.0);
                let (mut up, mut dn) = (pars.clone(), pars.clone());
                up[i] += h;
                dn[i] -= h;
                let (mut lu, mut ld) = (vec![0.0; nb], vec![0.0; nb]);
                ev.expected_main(&up, &mut lu);
                ev.expected_main(&dn, &mut ld);
                (0..nb).map(|b| (lu[b] - ld[b]) / (2.0 * h)).collect()
            })
            .collect();
        for i in 0..n {
            assert!((full[i * n + i] - diag[i]).abs() <= 1e-12 * diag[i].abs().max(1.0));
            for j in 0..n {
                assert_eq!(
                    full[i * n + j],
                    full[j * n + i],
                    "not symmetric at ({i}, {j})"
                );
                let main: f64 = (0..nb).map(|b| jac[i][b] * jac[j][b] / lam[b]).sum();
                let cons = full[i * n + j] - main;
                // the off-diagonal entries are the main measurement's alone
                let tol = 1e-6 * full[i * n + i].abs().max(full[j * n + j].abs()).max(1.0);
                if i != j {
                    assert!(
                        cons.abs() <= tol,
                        "({i}, {j}): {} vs {main}",
                        full[i * n + j]
                    );
                }
            }
        }
        Ok(())
    }

    /// Blocks with three linear factors, one of them at zero, and a sample-bin with two
    /// per-bin factors: the gradient matches central differences (the NLL is smooth in every
    /// parameter here; normfactors enter linearly).
    #[test]
    fn gradient_with_many_and_zero_linear_factors() -> crate::Result<()> {
        let ws = crate::Workspace::from_json_str(
            r#"{"version": "1.0.0",
              "channels": [{"name": "SR", "samples": [
                {"name": "sig", "data": [3.0, 5.0, 2.0],
                 "modifiers": [
                   {"name": "mu", "type": "normfactor", "data": null},
                   {"name": "k1", "type": "normfactor", "data": null},
                   {"name": "k2", "type": "normfactor", "data": null},
                   {"name": "xs", "type": "normsys", "data": {"hi": 1.1, "lo": 0.92}}]},
                {"name": "bkg", "data": [20.0, 14.0, 9.0],
                 "modifiers": [
                   {"name": "k1", "type": "normfactor", "data": null},
                   {"name": "sf", "type": "shapefactor", "data": null},
                   {"name": "staterror_SR", "type": "staterror", "data": [1.0, 0.8, 0.7]}]}]}],
              "observations": [{"name": "SR", "data": [25.0, 21.0, 10.0]}],
              "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}]}"#,
        )?;
        let model = Model::from_workspace(&ws, &Default::default())?;
        let name = |i: usize| model.parameters[i].name.as_str();
        let mut ev = Evaluator::new(&model);
        for zero in [None, Some("mu"), Some("k2")] {
            let mut pars = model.init();
            for (i, p) in pars.iter_mut().enumerate() {
                *p += 0.03 * (i as f64 + 1.0);
                if Some(name(i)) == zero {
                    *p = 0.0;
                }
            }
            assert_gradient_matches_differences(&mut ev, &pars, &format!("{zero:?} at zero"))?;
        }
        Ok(())
    }
}
