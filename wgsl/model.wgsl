// The model on the device: tables, and `eval`, the NLL and gradient of one item (a dataset
// with the parameters in `wpars`) by one workgroup, threads over the outputs of each phase. A
// transliteration of `device::tables::reference_nll_grad` (src/device/tables.rs); the layout
// of `ints`/`floats` is written by src/device/wgpu.rs (meta slots below are offsets into them).
// The workgroup reductions (`wsum`, `wmax`: reduce_tree.wgsl or reduce_subgroup.wgsl) and then
// an entry point (nll_grad.wgsl, fit.wgsl) are appended to this file. The pipeline-overridable
// constants below (no defaults: the host must set each) size the workgroup arrays to the model
// and say where the per-item scratch lives (src/device/wgpu.rs, `ScratchMode`).
//
// Poisson terms are in deviance form (lam - n + n ln(n / lam), likewise for Poisson
// constraints) so that f32 sums small numbers; the host adds the data-only constant in f64.

// Threads per workgroup (a power of two; the host sets it, `NEXTSTAT_WGPU_WG`).
override WG: u32 = 64u;

// meta slots (ints[0..])
const N_PARAMS: u32 = 0u;
const N_BINS: u32 = 1u;
const N_SB: u32 = 2u;
const N_BLK: u32 = 3u;
const N_AUX: u32 = 4u;
const N_HSEG: u32 = 5u;
const N_NSEG: u32 = 6u;
const N_NS: u32 = 7u;
const N_ITEMS: u32 = 8u;
const SCRATCH: u32 = 9u;
const HISTO_CODE: u32 = 10u;
const NORMSYS_CODE: u32 = 11u;
// integer table offsets
const I_SB_BIN: u32 = 12u;
const I_SB_BLOCK: u32 = 13u;
const I_BIN_SB_OFF: u32 = 14u;
const I_BIN_SB: u32 = 15u;
const I_HSEG_PARAM: u32 = 16u;
const I_HS_SB_OFF: u32 = 17u;
const I_HS_SB_SEG: u32 = 18u;
const I_HS_SEG_OFF: u32 = 19u;
const I_HS_SEG_SB: u32 = 20u;
const I_NSEG_PARAM: u32 = 21u;
const I_NS_BLK_OFF: u32 = 22u;
const I_NS_BLK_SEG: u32 = 23u;
const I_NS_SEG_OFF: u32 = 24u;
const I_NS_SEG_ENTRY: u32 = 25u;
const I_NS_SEG_BLOCK: u32 = 26u;
const I_LIN_BLK_OFF: u32 = 27u;
const I_LIN_BLK_PARAM: u32 = 28u;
const I_LIN_PAR_OFF: u32 = 29u;
const I_LIN_PAR_BLOCK: u32 = 30u;
const I_BF_SB_OFF: u32 = 31u;
const I_BF_SB_PARAM: u32 = 32u;
const I_BF_PAR_OFF: u32 = 33u;
const I_BF_PAR_SB: u32 = 34u;
const I_PAR_HSEG: u32 = 35u;
const I_PAR_NSEG: u32 = 36u;
const I_PAR_GAUSS_AUX: u32 = 37u;
const I_PAR_POIS_AUX: u32 = 38u;
// float table offsets
const F_NOMINAL: u32 = 39u;
const F_HS_SB_B1: u32 = 40u;
const F_HS_SB_B2: u32 = 41u;
const F_HS_SEG_B1: u32 = 42u;
const F_HS_SEG_B2: u32 = 43u;
const F_NS_COEF: u32 = 44u;
const F_NS_LN_HI: u32 = 45u;
const F_NS_LN_LO: u32 = 46u;
const F_PAR_GAUSS_W: u32 = 47u;
const F_PAR_POIS_TAU: u32 = 48u;
// scratch offsets (per item, in floats)
const S_HC: u32 = 49u;
// slot 50: unused (src/device/tables.rs)
const S_ADD: u32 = 51u;
const S_BSCALE: u32 = 52u;
const S_SCALE: u32 = 53u;
const S_DLOG: u32 = 54u;
const S_W: u32 = 55u;
const S_GSB: u32 = 56u;
const S_U: u32 = 57u;
const I_BLK_SB_START: u32 = 58u;
const I_BLK_NBINS: u32 = 59u;
const N_META: u32 = 60u;

const NONE: u32 = 0xffffffffu;

@group(0) @binding(0) var<storage, read> ints: array<u32>;
@group(0) @binding(1) var<storage, read> floats: array<f32>;
@group(0) @binding(3) var<storage, read> data: array<f32>;
// The scratch areas in global memory (per item, as `ScratchMode` lays them out); bound in
// every mode (a placeholder when all of it is in workgroup memory).
@group(0) @binding(4) var<storage, read_write> scratch: array<f32>;

// Parameters of the model (at least 1): the size of `wpars` and `wgrad`.
override NP_WG: u32;
// Where an item's scratch lives, as the host chose for the model and adapter: all of it in
// workgroup memory (fastest, when it fits); the normsys log-derivatives (`S_DLOG`, the last and
// largest area) in global memory and the rest in workgroup memory; or all in global memory.
const SCRATCH_WORKGROUP: u32 = 0u;
const SCRATCH_DLOG_GLOBAL: u32 = 1u;
const SCRATCH_GLOBAL: u32 = 2u;
override SCRATCH_MODE: u32;
// Floats of `wscratch` (at least 1: no zero-sized arrays): the whole scratch, the areas before
// `S_DLOG`, or 1, by mode.
override WSCRATCH_LEN: u32;

// The reductions' partial sums (a tree's WG entries, or one per subgroup).
var<workgroup> red: array<f32, WG>;
// The parameters evaluated, the gradient, and the NLL (deviance form) of `eval`.
var<workgroup> wpars: array<f32, NP_WG>;
var<workgroup> wgrad: array<f32, NP_WG>;
var<workgroup> wnll: f32;
var<workgroup> undefined_flag: atomic<u32>;
// This item's scratch areas in workgroup memory (see SCRATCH_MODE).
var<workgroup> wscratch: array<f32, WSCRATCH_LEN>;
// Where this item's areas start in `scratch` (set by `eval`): all areas (SCRATCH_GLOBAL), or
// its normsys log-derivatives (SCRATCH_DLOG_GLOBAL).
var<private> gbase: u32;

fn m(slot: u32) -> u32 { return ints[slot]; }

// Float `i` of this item's scratch (an offset `m(S_*) + index` below `S_DLOG`), wherever it is.
fn sget(i: u32) -> f32 {
    if (SCRATCH_MODE == SCRATCH_GLOBAL) { return scratch[gbase + i]; }
    return wscratch[i];
}
fn sset(i: u32, v: f32) {
    if (SCRATCH_MODE == SCRATCH_GLOBAL) { scratch[gbase + i] = v; } else { wscratch[i] = v; }
}
// Normsys log-derivative `e` of this item (the `S_DLOG` area), wherever it is.
fn dget(e: u32) -> f32 {
    if (SCRATCH_MODE == SCRATCH_WORKGROUP) { return wscratch[m(S_DLOG) + e]; }
    if (SCRATCH_MODE == SCRATCH_DLOG_GLOBAL) { return scratch[gbase + e]; }
    return scratch[gbase + m(S_DLOG) + e];
}
fn dset(e: u32, v: f32) {
    if (SCRATCH_MODE == SCRATCH_WORKGROUP) {
        wscratch[m(S_DLOG) + e] = v;
    } else if (SCRATCH_MODE == SCRATCH_DLOG_GLOBAL) {
        scratch[gbase + e] = v;
    } else {
        scratch[gbase + m(S_DLOG) + e] = v;
    }
}
// Between the phases of `eval`: makes this item's scratch writes visible to the workgroup (the
// barrier of each memory the mode uses; the condition is a constant, so control stays uniform).
fn scratch_barrier() {
    if (SCRATCH_MODE != SCRATCH_WORKGROUP) { storageBarrier(); }
    if (SCRATCH_MODE != SCRATCH_GLOBAL) { workgroupBarrier(); }
}

// histosys coefficients (c1, c2, dc1, dc2) as interp::HistosysCode::coefficients
fn histo_coefficients(code: u32, a: f32) -> vec4<f32> {
    if (code == 0u) {
        if (a > 0.0) { return vec4<f32>(a, 0.0, 1.0, 0.0); }
        return vec4<f32>(0.0, a, 0.0, 1.0);
    }
    if (code == 2u) {
        if (a > 1.0) { return vec4<f32>(2.0 * (a - 1.0), a - 1.0, 2.0, 1.0); }
        if (a >= -1.0) { return vec4<f32>(a * a, a, 2.0 * a, 1.0); }
        return vec4<f32>(-2.0 * a, a, -2.0, 1.0);
    }
    // code4p
    if (a > 1.0) { return vec4<f32>(a, 8.0 * a, 1.0, 8.0); }
    if (a < -1.0) { return vec4<f32>(a, -8.0 * a, 1.0, -8.0); }
    let a2 = a * a;
    return vec4<f32>(a, a2 * (15.0 + a2 * (-10.0 + 3.0 * a2)), 1.0, a * (30.0 + a2 * (-40.0 + 18.0 * a2)));
}

// One entry of each long sum in `eval` (table bases and scratch offsets passed in): the loops
// take them four at a time.
// A histosys entry's share of its sample-bin's additive part.
fn hs_add_term(e: u32, seg: u32, b1: u32, b2: u32, s_hc: u32) -> f32 {
    let o = s_hc + 4u * ints[seg + e];
    return floats[b1 + e] * sget(o) + floats[b2 + e] * sget(o + 1u);
}
// A sample-bin's share of its bin's expected rate.
fn rate_term(e: u32, bin_sb: u32, sb_block: u32, s_add: u32, s_scale: u32, s_bscale: u32) -> f32 {
    let sb = ints[bin_sb + e];
    return sget(s_add + sb) * sget(s_scale + ints[sb_block + sb]) * sget(s_bscale + sb);
}
// A histosys entry's share of its parameter's gradient (c2, c3: the segment's derivatives).
fn hs_grad_term(e: u32, seg_sb: u32, sb1: u32, sb2: u32, s_gsb: u32, c2: f32, c3: f32) -> f32 {
    return sget(s_gsb + ints[seg_sb + e]) * (floats[sb1 + e] * c2 + floats[sb2 + e] * c3);
}
// A normsys entry's share of its parameter's gradient.
fn ns_grad_term(e: u32, seg_block: u32, seg_entry: u32, s_u: u32, s_scale: u32) -> f32 {
    let k = ints[seg_block + e];
    return sget(s_u + k) * sget(s_scale + k) * dget(ints[seg_entry + e]);
}

// A normsys parameter at `a`: inside code4's polynomial (|a| < 1), or outside it (code1
// everywhere) the weights of ln(hi) and ln(lo) in the exponent and their derivatives.
struct NsAt {
    inside: bool,
    w_hi: f32,
    w_lo: f32,
    dw_hi: f32,
    dw_lo: f32,
}
fn ns_at(a: f32, code4: bool) -> NsAt {
    if (code4 && a < 1.0 && a > -1.0) { return NsAt(true, 0.0, 0.0, 0.0, 0.0); }
    var up = a >= 1.0;
    if (!code4) { up = a >= 0.0; }
    if (up) { return NsAt(false, a, 0.0, 1.0, 0.0); }
    return NsAt(false, 0.0, -a, 0.0, -1.0);
}

// Normsys entry `e`'s polynomial 1 + sum c_i a^(i+1) and its derivative (code4, |a| < 1).
fn ns_poly(e: u32, a: f32, coef: u32) -> vec2<f32> {
    var poly = 1.0;
    var dpoly = 0.0;
    var prev = 1.0;
    var pw = 1.0;
    for (var i = 0u; i < 6u; i++) {
        let c = floats[coef + 6u * e + i];
        pw *= a;
        poly += c * pw;
        dpoly += c * f32(i + 1u) * prev;
        prev = pw;
    }
    return vec2<f32>(poly, dpoly);
}

// A normsys entry of a block: its factor (the polynomial inside |a| < 1, else 1) and its share
// of the block's exponent (outside, else 0); its log-derivative goes to the dlog area. The
// parameter's value comes from `wpars` (workgroup memory), its powers are made here: no
// per-segment scratch to read back.
fn ns_block_term(e: u32, blk_seg: u32, nseg_param: u32, code4: bool, coef: u32, ln_hi: u32, ln_lo: u32) -> vec2<f32> {
    let a = wpars[ints[nseg_param + ints[blk_seg + e]]];
    let at = ns_at(a, code4);
    if (at.inside) {
        let f = ns_poly(e, a, coef);
        dset(e, f.y / f.x);
        return vec2<f32>(f.x, 0.0);
    }
    let lh = floats[ln_hi + e];
    let ll = floats[ln_lo + e];
    dset(e, at.dw_hi * lh + at.dw_lo * ll);
    return vec2<f32>(1.0, at.w_hi * lh + at.w_lo * ll);
}

// The Poisson deviance term lam - n + n ln(n / lam) for n > 0 (lam for n = 0), written as
// n (x - ln(1 + x)) with x = (lam - n) / n and a series for small x: no cancellation, so an
// f32 error in lam enters only in second order near the minimum.
fn deviance(lam: f32, n: f32) -> f32 {
    if (n <= 0.0) { return lam; }
    let x = (lam - n) / n;
    if (abs(x) < 0.25) {
        var term = x * x;
        var sum = 0.0;
        var sign = 1.0;
        for (var k = 2u; k <= 12u; k++) {
            sum += sign * term / f32(k);
            term *= x;
            sign = -sign;
        }
        return n * sum;
    }
    return n * (x - log(1.0 + x));
}

// NLL (deviance form; +inf where undefined) into `wnll` and gradient into `wgrad` for the
// parameters in `wpars` and dataset `item` of `data`. Every thread of the workgroup calls it.
fn eval(item: u32, t: u32) {
    let np = m(N_PARAMS);
    let nbins = m(N_BINS);
    let nsb = m(N_SB);
    let nblk = m(N_BLK);
    let naux = m(N_AUX);
    let d0 = item * (nbins + naux);
    if (SCRATCH_MODE == SCRATCH_GLOBAL) {
        gbase = item * m(SCRATCH);
    } else if (SCRATCH_MODE == SCRATCH_DLOG_GLOBAL) {
        gbase = item * (m(SCRATCH) - m(S_DLOG));
    }
    if (t == 0u) { atomicStore(&undefined_flag, 0u); }

    // Table bases and scratch offsets are read once into registers, and every loop's bounds
    // once per loop: the compiler cannot keep storage loads across the scratch writes
    // (read_write storage may alias), so an `ints[ints[slot] + i + 1]` in a loop condition
    // would be two dependent loads per iteration.
    let s_hc = m(S_HC);
    let s_add = m(S_ADD);
    let s_bscale = m(S_BSCALE);
    let s_scale = m(S_SCALE);
    let s_w = m(S_W);
    let s_gsb = m(S_GSB);
    let s_u = m(S_U);
    let sb_block = m(I_SB_BLOCK);
    let sb_bin = m(I_SB_BIN);
    let ns_blk_off = m(I_NS_BLK_OFF);
    let ns_blk_seg = m(I_NS_BLK_SEG);
    let lin_blk_off = m(I_LIN_BLK_OFF);
    let lin_blk_param = m(I_LIN_BLK_PARAM);
    let bf_sb_off = m(I_BF_SB_OFF);
    let bf_sb_param = m(I_BF_SB_PARAM);
    let ns_coef = m(F_NS_COEF);
    let nseg_param = m(I_NSEG_PARAM);
    let code4 = m(NORMSYS_CODE) == 4u;
    let ns_ln_hi = m(F_NS_LN_HI);
    let ns_ln_lo = m(F_NS_LN_LO);
    let gauss_aux = m(I_PAR_GAUSS_AUX);
    let pois_aux = m(I_PAR_POIS_AUX);
    let gauss_w = m(F_PAR_GAUSS_W);
    let pois_tau = m(F_PAR_POIS_TAU);
    let aux0 = d0 + nbins;

    // ---- phase 1: per histosys segment
    {
        let n_hseg = m(N_HSEG);
        let hseg_param = m(I_HSEG_PARAM);
        let code = m(HISTO_CODE);
        for (var s = t; s < n_hseg; s += WG) {
            let c = histo_coefficients(code, wpars[ints[hseg_param + s]]);
            let o = s_hc + 4u * s;
            sset(o, c.x); sset(o + 1u, c.y); sset(o + 2u, c.z); sset(o + 3u, c.w);
        }
    }
    scratch_barrier();

    // ---- phase 2: per sample-bin (additive part, per-bin factors) and per block (scale)
    {
        let nominal = m(F_NOMINAL);
        let hs_sb_off = m(I_HS_SB_OFF);
        let hs_sb_seg = m(I_HS_SB_SEG);
        let b1 = m(F_HS_SB_B1);
        let b2 = m(F_HS_SB_B2);
        for (var sb = t; sb < nsb; sb += WG) {
            var a = floats[nominal + sb];
            let e1 = ints[hs_sb_off + sb + 1u];
            // four entries a pass, four independent sums: their loads overlap (WGSL has no
            // unroll pragma, and one sum would wait on each entry's loads in turn)
            var e = ints[hs_sb_off + sb];
            var a1 = 0.0; var a2 = 0.0; var a3 = 0.0;
            for (; e + 4u <= e1; e += 4u) {
                a += hs_add_term(e, hs_sb_seg, b1, b2, s_hc);
                a1 += hs_add_term(e + 1u, hs_sb_seg, b1, b2, s_hc);
                a2 += hs_add_term(e + 2u, hs_sb_seg, b1, b2, s_hc);
                a3 += hs_add_term(e + 3u, hs_sb_seg, b1, b2, s_hc);
            }
            for (; e < e1; e++) { a += hs_add_term(e, hs_sb_seg, b1, b2, s_hc); }
            sset(s_add + sb, a + ((a1 + a2) + a3));
            var bs = 1.0;
            let f1 = ints[bf_sb_off + sb + 1u];
            for (var e = ints[bf_sb_off + sb]; e < f1; e++) {
                bs *= wpars[ints[bf_sb_param + e]];
            }
            sset(s_bscale + sb, bs);
        }
        for (var k = t; k < nblk; k += WG) {
            var s = 1.0;
            let l1 = ints[lin_blk_off + k + 1u];
            for (var e = ints[lin_blk_off + k]; e < l1; e++) {
                s *= wpars[ints[lin_blk_param + e]];
            }
            let n1 = ints[ns_blk_off + k + 1u];
            // per entry (factor inside |a| < 1, exponent share outside): four entries a pass,
            // in four independent products and sums
            var e = ints[ns_blk_off + k];
            var f0 = vec2<f32>(1.0, 0.0);
            var f1 = f0; var f2 = f0; var f3 = f0;
            for (; e + 4u <= n1; e += 4u) {
                let r0 = ns_block_term(e, ns_blk_seg, nseg_param, code4, ns_coef, ns_ln_hi, ns_ln_lo);
                let r1 = ns_block_term(e + 1u, ns_blk_seg, nseg_param, code4, ns_coef, ns_ln_hi, ns_ln_lo);
                let r2 = ns_block_term(e + 2u, ns_blk_seg, nseg_param, code4, ns_coef, ns_ln_hi, ns_ln_lo);
                let r3 = ns_block_term(e + 3u, ns_blk_seg, nseg_param, code4, ns_coef, ns_ln_hi, ns_ln_lo);
                f0 = vec2<f32>(f0.x * r0.x, f0.y + r0.y);
                f1 = vec2<f32>(f1.x * r1.x, f1.y + r1.y);
                f2 = vec2<f32>(f2.x * r2.x, f2.y + r2.y);
                f3 = vec2<f32>(f3.x * r3.x, f3.y + r3.y);
            }
            for (; e < n1; e++) {
                let r = ns_block_term(e, ns_blk_seg, nseg_param, code4, ns_coef, ns_ln_hi, ns_ln_lo);
                f0 = vec2<f32>(f0.x * r.x, f0.y + r.y);
            }
            s *= (f0.x * f1.x) * (f2.x * f3.x);
            let lg = (f0.y + f1.y) + (f2.y + f3.y);
            sset(s_scale + k, s * exp(lg));
        }
    }
    scratch_barrier();

    // ---- phase 3: per main bin and per constraint, deviance form; reduce
    var acc = 0.0;
    {
        let bin_sb_off = m(I_BIN_SB_OFF);
        let bin_sb = m(I_BIN_SB);
        for (var b = t; b < nbins; b += WG) {
            var lam = 0.0;
            let e1 = ints[bin_sb_off + b + 1u];
            var e = ints[bin_sb_off + b];
            var l1 = 0.0; var l2 = 0.0; var l3 = 0.0;
            for (; e + 4u <= e1; e += 4u) {
                lam += rate_term(e, bin_sb, sb_block, s_add, s_scale, s_bscale);
                l1 += rate_term(e + 1u, bin_sb, sb_block, s_add, s_scale, s_bscale);
                l2 += rate_term(e + 2u, bin_sb, sb_block, s_add, s_scale, s_bscale);
                l3 += rate_term(e + 3u, bin_sb, sb_block, s_add, s_scale, s_bscale);
            }
            for (; e < e1; e++) { lam += rate_term(e, bin_sb, sb_block, s_add, s_scale, s_bscale); }
            lam += (l1 + l2) + l3;
            let n = data[d0 + b];
            var w = 1.0;
            if (lam > 0.0) {
                acc += deviance(lam, n);
                w = 1.0 - n / lam;
            } else if (!(lam == 0.0 && n == 0.0)) {
                atomicStore(&undefined_flag, 1u);
            }
            sset(s_w + b, w);
        }
    }
    for (var p = t; p < np; p += WG) {
        let ga = ints[gauss_aux + p];
        if (ga != NONE) {
            let d = wpars[p] - data[aux0 + ga];
            acc += 0.5 * d * d * floats[gauss_w + p];
        }
        let pa = ints[pois_aux + p];
        if (pa != NONE) {
            let r = wpars[p] * floats[pois_tau + p];
            let a = data[aux0 + pa];
            if (r > 0.0) {
                acc += deviance(r, a);
            } else if (!(r == 0.0 && a == 0.0)) {
                atomicStore(&undefined_flag, 1u);
            }
        }
    }
    let nll_sum = wsum(t, acc);
    scratch_barrier();

    // ---- phase 4: per sample-bin (dNLL/d additive part), per block (dNLL/d scale)
    for (var sb = t; sb < nsb; sb += WG) {
        let k = ints[sb_block + sb];
        sset(s_gsb + sb, sget(s_w + ints[sb_bin + sb]) * sget(s_scale + k) * sget(s_bscale + sb));
    }
    {
        let blk_sb_start = m(I_BLK_SB_START);
        let blk_nbins = m(I_BLK_NBINS);
        for (var k = t; k < nblk; k += WG) {
            var u = 0.0;
            let first = ints[blk_sb_start + k];
            let last = first + ints[blk_nbins + k];
            for (var sb = first; sb < last; sb++) {
                u += sget(s_w + ints[sb_bin + sb]) * sget(s_add + sb) * sget(s_bscale + sb);
            }
            sset(s_u + k, u);
        }
    }
    scratch_barrier();

    // ---- phase 5: per parameter
    if (t == 0u) {
        if (atomicLoad(&undefined_flag) != 0u) {
            wnll = bitcast<f32>(0x7f800000u);
        } else {
            wnll = nll_sum;
        }
    }
    let par_hseg = m(I_PAR_HSEG);
    let hs_seg_off = m(I_HS_SEG_OFF);
    let hs_seg_sb = m(I_HS_SEG_SB);
    let sb1 = m(F_HS_SEG_B1);
    let sb2 = m(F_HS_SEG_B2);
    let par_nseg = m(I_PAR_NSEG);
    let ns_seg_off = m(I_NS_SEG_OFF);
    let ns_seg_block = m(I_NS_SEG_BLOCK);
    let ns_seg_entry = m(I_NS_SEG_ENTRY);
    let lin_par_off = m(I_LIN_PAR_OFF);
    let lin_par_block = m(I_LIN_PAR_BLOCK);
    let bf_par_off = m(I_BF_PAR_OFF);
    let bf_par_sb = m(I_BF_PAR_SB);
    for (var p = t; p < np; p += WG) {
        var g = 0.0;
        let x = wpars[p];
        let ga = ints[gauss_aux + p];
        if (ga != NONE) { g += (x - data[aux0 + ga]) * floats[gauss_w + p]; }
        let pa = ints[pois_aux + p];
        if (pa != NONE) {
            let a = data[aux0 + pa];
            let tau = floats[pois_tau + p];
            if (a > 0.0) { g += tau - a / x; } else { g += tau; }
        }
        let hs = ints[par_hseg + p];
        if (hs != NONE) {
            let o = s_hc + 4u * hs;
            let c2 = sget(o + 2u);
            let c3 = sget(o + 3u);
            let e1 = ints[hs_seg_off + hs + 1u];
            var e = ints[hs_seg_off + hs];
            var h0 = 0.0; var h1 = 0.0; var h2 = 0.0; var h3 = 0.0;
            for (; e + 4u <= e1; e += 4u) {
                h0 += hs_grad_term(e, hs_seg_sb, sb1, sb2, s_gsb, c2, c3);
                h1 += hs_grad_term(e + 1u, hs_seg_sb, sb1, sb2, s_gsb, c2, c3);
                h2 += hs_grad_term(e + 2u, hs_seg_sb, sb1, sb2, s_gsb, c2, c3);
                h3 += hs_grad_term(e + 3u, hs_seg_sb, sb1, sb2, s_gsb, c2, c3);
            }
            for (; e < e1; e++) { h0 += hs_grad_term(e, hs_seg_sb, sb1, sb2, s_gsb, c2, c3); }
            g += (h0 + h1) + (h2 + h3);
        }
        let ns = ints[par_nseg + p];
        if (ns != NONE) {
            let e1 = ints[ns_seg_off + ns + 1u];
            var e = ints[ns_seg_off + ns];
            var n0 = 0.0; var n1 = 0.0; var n2 = 0.0; var n3 = 0.0;
            for (; e + 4u <= e1; e += 4u) {
                n0 += ns_grad_term(e, ns_seg_block, ns_seg_entry, s_u, s_scale);
                n1 += ns_grad_term(e + 1u, ns_seg_block, ns_seg_entry, s_u, s_scale);
                n2 += ns_grad_term(e + 2u, ns_seg_block, ns_seg_entry, s_u, s_scale);
                n3 += ns_grad_term(e + 3u, ns_seg_block, ns_seg_entry, s_u, s_scale);
            }
            for (; e < e1; e++) { n0 += ns_grad_term(e, ns_seg_block, ns_seg_entry, s_u, s_scale); }
            g += (n0 + n1) + (n2 + n3);
        }
        let l1 = ints[lin_par_off + p + 1u];
        for (var e = ints[lin_par_off + p]; e < l1; e++) {
            let k = ints[lin_par_block + e];
            var others = 0.0;
            if (x != 0.0) {
                others = sget(s_scale + k) / x;
            } else {
                // product of the block's other factors, recomputed (rare: a factor at 0)
                others = 1.0;
                let j1 = ints[lin_blk_off + k + 1u];
                for (var j = ints[lin_blk_off + k]; j < j1; j++) {
                    let q = ints[lin_blk_param + j];
                    if (q != p) { others *= wpars[q]; }
                }
                var lg = 0.0;
                let n1 = ints[ns_blk_off + k + 1u];
                for (var j = ints[ns_blk_off + k]; j < n1; j++) {
                    let a = wpars[ints[nseg_param + ints[ns_blk_seg + j]]];
                    let at = ns_at(a, code4);
                    if (at.inside) {
                        others *= ns_poly(j, a, ns_coef).x;
                    } else {
                        lg += at.w_hi * floats[ns_ln_hi + j] + at.w_lo * floats[ns_ln_lo + j];
                    }
                }
                others *= exp(lg);
            }
            g += sget(s_u + k) * others;
        }
        let f1 = ints[bf_par_off + p + 1u];
        for (var e = ints[bf_par_off + p]; e < f1; e++) {
            let sb = ints[bf_par_sb + e];
            let k = ints[sb_block + sb];
            var others = 0.0;
            if (x != 0.0) {
                others = sget(s_bscale + sb) / x;
            } else {
                others = 1.0;
                let j1 = ints[bf_sb_off + sb + 1u];
                for (var j = ints[bf_sb_off + sb]; j < j1; j++) {
                    let q = ints[bf_sb_param + j];
                    if (q != p) { others *= wpars[q]; }
                }
            }
            g += sget(s_w + ints[sb_bin + sb]) * sget(s_add + sb) * sget(s_scale + k) * others;
        }
        wgrad[p] = g;
    }
    workgroupBarrier();
}
