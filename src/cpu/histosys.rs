//! The CPU engine's histosys tables and their two loops.
//!
//! Each histosys entry adds `c1(alpha) b1 + c2(alpha) b2` to one block's bins. Blocks are
//! short (one to six bins in tHu), so every entry is cut into lane records, one per
//! lane-vector of its block. Both loops stream these records from L2 on every evaluation
//! (135 kB for tHu) at well under L2's bandwidth: a record costs about as much to visit (its
//! index, its coefficient or lane of `g`, its sum) as to stream (tHu on dev: 2.4 cycles a
//! full record, 2.0 a half one of half the bytes). So the records spend few bytes on padding
//! while every load stays aligned, and as few visits as the blocks allow:
//! - a *full* record (a lane with three or four bins) is one 64-byte line, zero-padded;
//! - a *half* record (a lane with one or two bins) is 32 bytes;
//! - a *pair* record joins a block's last two lanes where the last is half (blocks of five,
//!   six, nine, ten ... bins; 974 of tHu's 2,603 lane records): one 64-byte full record and
//!   one 32-byte half record, in two arrays with one index and one visit (and, forward, one
//!   coefficient load). tHu's forward pass: 4.6k → 4.0k TSC cycles.
//!
//! Each kind is kept twice, so that each pass keeps its sums in registers: in parameter order
//! for the backward pass (a sum per parameter) and in block-lane order for the forward pass
//! (a sum per lane, with no read-modify-write per record). The two copies differ in layout,
//! each the one its pass loads with the fewest uops:
//! - the backward copy keeps the bases apart, `b1` then `b2` (`[b1_0, b1_1, b2_0, b2_1]` for a
//!   half record), so that one load of a lane of `g` multiplies both;
//! - the forward copy interleaves them, `[b1_0, b2_0, b1_1, b2_1, ...]`, so that one 16-byte
//!   broadcast of the segment's `[c1, c2]` multiplies every vector of the record (two
//!   broadcasts a record otherwise), and its sums are paired up once per lane.
//!
//! Indices are checked once, at construction; the AVX2 and AVX-512 loops use intrinsics (LLVM
//! does not reliably vectorize these loops) and compute the same sums bit for bit, and the
//! portable loops the same sums up to FMA rounding and summation order.

use super::isa::{AVX2, AVX512};
use super::lanes::{Lane, LaneGeometry, LANES};
use crate::model::{HistosysCode, Layout};

/// Doubles per full record (two lane-vectors).
const REC: usize = 2 * LANES;

/// Bins of a half record, and its doubles.
const HALF: usize = 2;
const HREC: usize = 2 * HALF;

/// A histosys segment's interpolation coefficients `[c1, c2]`, broadcast to every pair of an
/// interleaved record (tHu: 118 segments, one per histosys parameter).
pub type SegmentCoef = [f64; 2];

/// How many full records ahead the loops prefetch (half records: twice as many).
const PF: usize = 16;

/// One full record's two bases: `b1` then `b2` (backward copy), or interleaved (forward copy).
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct Full([f64; REC]);

/// One half record: `[b1_0, b1_1, b2_0, b2_1]` (backward copy), or `[b1_0, b2_0, b1_1, b2_1]`
/// (forward copy).
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(32))]
struct Half([f64; HREC]);

/// A record's bases interleaved, `[b1_0, b2_0, b1_1, b2_1, ...]`, from `b1` then `b2`.
fn interleave<const N: usize>(r: [f64; N]) -> [f64; N] {
    let mut out = [0.0; N];
    for k in 0..N / 2 {
        out[2 * k] = r[k];
        out[2 * k + 1] = r[N / 2 + k];
    }
    out
}

/// The records of one kind, in both orders.
#[derive(Debug, Clone)]
struct Records<R> {
    /// Parameter order: per record, the lane-vector of the block arrays it belongs to, as
    /// the offset of its first bin (lane-vector * LANES: an x86 address scales it).
    dst: Vec<u32>,
    /// Per segment (entries of one parameter): its range of records.
    by_segment: Vec<(u32, u32)>,
    rec: Vec<R>,
    /// Lane order: the lanes with records of this kind; lane `lanes[i]` has the records
    /// `lane_start[i]..lane_start[i + 1]`, each with its segment (records interleaved).
    lanes: Vec<u32>,
    lane_start: Vec<u32>,
    lane_seg: Vec<u32>,
    lane_rec: Vec<R>,
}

impl<R: Copy> Records<R> {
    /// From `(lane, segment, record)` in parameter order (records with `b1` then `b2`);
    /// `interleave` gives a record's forward layout.
    fn new(
        list: &[(u32, u32, R)],
        n_segments: usize,
        n_lanes: usize,
        interleave: impl Fn(R) -> R,
    ) -> Self {
        let dst: Vec<u32> = list.iter().map(|&(v, ..)| v * LANES as u32).collect();
        let rec: Vec<R> = list.iter().map(|&(_, _, r)| r).collect();
        let mut by_segment = vec![(0u32, 0u32); n_segments];
        let mut i = 0;
        for (si, range) in by_segment.iter_mut().enumerate() {
            let s = i;
            while i < list.len() && list[i].1 as usize == si {
                i += 1;
            }
            *range = (s as u32, i as u32);
        }
        let mut order: Vec<usize> = (0..list.len()).collect();
        order.sort_by_key(|&j| list[j].0); // stable: parameter order within a lane
        let (mut lanes, mut lane_start) = (Vec::new(), vec![0u32]);
        for (i, &j) in order.iter().enumerate() {
            if lanes.last() != Some(&list[j].0) {
                if !lanes.is_empty() {
                    lane_start.push(i as u32);
                }
                lanes.push(list[j].0);
            }
        }
        if !lanes.is_empty() {
            lane_start.push(order.len() as u32);
        }
        let records = Records {
            dst,
            by_segment,
            rec,
            lanes,
            lane_start,
            lane_seg: order.iter().map(|&j| list[j].1).collect(),
            lane_rec: order.iter().map(|&j| interleave(list[j].2)).collect(),
        };
        // The invariants the unchecked loops rely on.
        assert!(i == list.len(), "records not in segment order");
        assert!(records.dst.iter().all(|&d| (d as usize) < n_lanes * LANES));
        assert!(records.lanes.iter().all(|&v| (v as usize) < n_lanes));
        assert!(records.lane_start.len() == records.lanes.len() + 1);
        assert!(records.lane_start.windows(2).all(|w| w[0] <= w[1]));
        assert!(*records.lane_start.last().unwrap_or(&0) as usize == list.len());
        assert!(records
            .lane_seg
            .iter()
            .all(|&si| (si as usize) < n_segments));
        records
    }

    /// Lane `i` of this kind: the lane-vector it sums into and its range of records.
    #[inline(always)]
    fn lane(&self, i: usize) -> (usize, usize, usize) {
        (
            self.lanes[i] as usize,
            self.lane_start[i] as usize,
            self.lane_start[i + 1] as usize,
        )
    }
}

impl Records<(Full, Half)> {
    /// Pair records as their full parts (with the indices) and their half parts in the same
    /// two orders.
    fn split(self) -> Pairs {
        let (rec, half): (Vec<Full>, Vec<Half>) = self.rec.into_iter().unzip();
        let (lane_rec, lane_half): (Vec<Full>, Vec<Half>) = self.lane_rec.into_iter().unzip();
        Pairs {
            full: Records {
                dst: self.dst,
                by_segment: self.by_segment,
                rec,
                lanes: self.lanes,
                lane_start: self.lane_start,
                lane_seg: self.lane_seg,
                lane_rec,
            },
            half,
            lane_half,
        }
    }
}

/// Pair records: a full record of lane `v` and a half record of lane `v + 1`, with one index
/// (`full.dst` and `full.lanes` name lane `v`).
#[derive(Debug, Clone)]
struct Pairs {
    full: Records<Full>,
    /// The half parts, in parameter order (`b1` then `b2`) and in lane order (interleaved).
    half: Vec<Half>,
    lane_half: Vec<Half>,
}

/// The histosys entries of a model as lane records (see the module documentation).
#[derive(Debug, Clone)]
pub struct HistosysLanes {
    full: Records<Full>,
    half: Records<Half>,
    pair: Pairs,
    n_lanes: usize,
    n_segments: usize,
    /// Each segment's parameter, and the number of parameters they need (the largest + 1).
    seg_param: Vec<u32>,
    params_needed: usize,
}

impl HistosysLanes {
    pub fn new(l: &Layout, geo: &LaneGeometry) -> Self {
        let h = &l.histosys;
        let (mut full, mut half, mut pair) = (Vec::new(), Vec::new(), Vec::new());
        for (si, seg) in l.histosys_segments.iter().enumerate() {
            let si = si as u32;
            for e in seg.start as usize..seg.end as usize {
                let k = h.block[e] as usize;
                let n_bins = l.blocks[k].n_bins as usize;
                let src = h.offset[e] as usize;
                let width = geo.blk_width[k] as usize;
                // lane v's bins, as a record of `N` doubles (`b1` then `b2`, zero-padded)
                let record = |v: usize| {
                    let n = LANES.min(n_bins - v * LANES);
                    let (b1, b2) = (&h.b1[src + v * LANES..], &h.b2[src + v * LANES..]);
                    move |r: &mut [f64]| {
                        let half = r.len() / 2;
                        r[..n].copy_from_slice(&b1[..n]);
                        r[half..half + n].copy_from_slice(&b2[..n]);
                    }
                };
                let is_half = |v: usize| n_bins - v * LANES <= HALF;
                let mut v = 0;
                while v < width {
                    let lane = geo.blk_lane[k] + v as u32;
                    if v + 2 == width && is_half(v + 1) {
                        let (mut f, mut hf) = (Full::default(), Half::default());
                        record(v)(&mut f.0);
                        record(v + 1)(&mut hf.0);
                        pair.push((lane, si, (f, hf)));
                        v += 2;
                        continue;
                    }
                    if is_half(v) {
                        let mut r = Half::default();
                        record(v)(&mut r.0);
                        half.push((lane, si, r));
                    } else {
                        let mut r = Full::default();
                        record(v)(&mut r.0);
                        full.push((lane, si, r));
                    }
                    v += 1;
                }
            }
        }
        let (n_lanes, n_segments) = (geo.n_blk_lanes, l.histosys_segments.len());
        let pair = Records::new(&pair, n_segments, n_lanes, |(f, h)| {
            (Full(interleave(f.0)), Half(interleave(h.0)))
        })
        .split();
        // The invariant of the unchecked pair loops: a pair's half lane is a lane too.
        assert!(pair.full.lanes.iter().all(|&v| (v as usize) + 1 < n_lanes));
        let seg_param: Vec<u32> = l.histosys_segments.iter().map(|g| g.param).collect();
        HistosysLanes {
            full: Records::new(&full, n_segments, n_lanes, |r| Full(interleave(r.0))),
            half: Records::new(&half, n_segments, n_lanes, |r| Half(interleave(r.0))),
            pair,
            n_lanes,
            n_segments,
            params_needed: seg_param.iter().map(|&p| p as usize + 1).max().unwrap_or(0),
            seg_param,
        }
    }

    /// Per segment, its interpolation coefficients `[c1, c2]` into `coef` and their
    /// derivatives into `deriv`, at `pars` (`code.coefficients` of its parameter; code4p,
    /// pyhf's default, four segments a vector with AVX2: the same operations, bit for bit).
    #[inline(always)]
    pub fn coefficients<const ISA: u8>(
        &self,
        code: HistosysCode,
        pars: &[f64],
        coef: &mut [SegmentCoef],
        deriv: &mut [[f64; 2]],
    ) {
        let n = self.n_segments;
        assert!(coef.len() == n && deriv.len() == n && pars.len() >= self.params_needed);
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if ISA >= AVX2 && code == HistosysCode::Code4p {
            // SAFETY: as in `forward`; the parameters and lengths are asserted above.
            done = unsafe { self.code4p_avx2(pars, coef, deriv) };
        }
        for si in done..n {
            let [c1, c2, d1, d2] = code.coefficients(pars[self.seg_param[si] as usize]);
            coef[si] = [c1, c2];
            deriv[si] = [d1, d2];
        }
    }

    /// `pad[lane] = nominal[lane] + sum of b1 * c1[seg] + b2 * c2[seg]` over the lane's
    /// records.
    #[inline(always)]
    pub fn forward<const ISA: u8>(&self, nominal: &[Lane], coef: &[SegmentCoef], pad: &mut [Lane]) {
        assert!(pad.len() == self.n_lanes && nominal.len() == self.n_lanes);
        assert!(coef.len() == self.n_segments);
        pad.copy_from_slice(nominal);
        #[cfg(target_arch = "x86_64")]
        if ISA >= AVX2 {
            // SAFETY: ISA is above PORTABLE only in builds called after feature detection;
            // the tables were checked in `new`, the lengths above.
            unsafe {
                if ISA >= AVX512 {
                    self.forward_full_avx512(coef, pad);
                    self.forward_pair_avx512(coef, pad);
                } else {
                    self.forward_full_avx2(coef, pad);
                    self.forward_pair_avx2(coef, pad);
                }
                self.forward_half_avx2(coef, pad);
            }
            return;
        }
        let (f, h, p) = (&self.full, &self.half, &self.pair);
        for i in 0..f.lanes.len() {
            let (v, s, t) = f.lane(i);
            for j in s..t {
                let c = &coef[f.lane_seg[j] as usize];
                let b = &f.lane_rec[j].0;
                for k in 0..LANES {
                    pad[v][k] += b[2 * k] * c[0] + b[2 * k + 1] * c[1];
                }
            }
        }
        for i in 0..h.lanes.len() {
            let (v, s, t) = h.lane(i);
            for j in s..t {
                let c = &coef[h.lane_seg[j] as usize];
                let b = &h.lane_rec[j].0;
                for k in 0..HALF {
                    pad[v][k] += b[2 * k] * c[0] + b[2 * k + 1] * c[1];
                }
            }
        }
        for i in 0..p.full.lanes.len() {
            let (v, s, t) = p.full.lane(i);
            for j in s..t {
                let c = &coef[p.full.lane_seg[j] as usize];
                let (b, bh) = (&p.full.lane_rec[j].0, &p.lane_half[j].0);
                for k in 0..LANES {
                    pad[v][k] += b[2 * k] * c[0] + b[2 * k + 1] * c[1];
                }
                for k in 0..HALF {
                    pad[v + 1][k] += bh[2 * k] * c[0] + bh[2 * k + 1] * c[1];
                }
            }
        }
    }

    /// Adds to each segment's parameter in `grad` its histosys gradient,
    /// `dc1 * sum(g b1) + dc2 * sum(g b2)` over its records, with `deriv[seg] = [dc1, dc2]`
    /// (the sums stay in registers: no per-segment array between two loops).
    #[inline(always)]
    pub fn backward<const ISA: u8>(&self, g: &[Lane], deriv: &[[f64; 2]], grad: &mut [f64]) {
        assert!(g.len() == self.n_lanes && deriv.len() == self.n_segments);
        assert!(grad.len() >= self.params_needed);
        // the half records' loop broadcasts 16 bytes of g from each lane's start
        assert!(
            (g.as_ptr() as usize).is_multiple_of(16),
            "g not 16-byte aligned"
        );
        #[cfg(target_arch = "x86_64")]
        if ISA >= AVX512 {
            // SAFETY: as in `forward`.
            unsafe { self.backward_avx512(g, deriv, grad) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if ISA >= AVX2 {
            // SAFETY: as in `forward`.
            unsafe { self.backward_avx2(g, deriv, grad) };
            return;
        }
        let (f, h) = (&self.full, &self.half);
        for (si, d) in deriv.iter().enumerate() {
            let (mut s1, mut s2) = ([0.0; LANES], [0.0; LANES]);
            let (s, t) = f.by_segment[si];
            for j in s as usize..t as usize {
                let gv = &g[f.dst[j] as usize / LANES];
                let (b1, b2) = f.rec[j].0.split_at(LANES);
                for k in 0..LANES {
                    s1[k] += gv[k] * b1[k];
                    s2[k] += gv[k] * b2[k];
                }
            }
            let (s, t) = h.by_segment[si];
            for j in s as usize..t as usize {
                let gv = &g[h.dst[j] as usize / LANES];
                let b = &h.rec[j].0;
                for k in 0..HALF {
                    s1[k] += gv[k] * b[k];
                    s2[k] += gv[k] * b[HALF + k];
                }
            }
            let p = &self.pair;
            let (s, t) = p.full.by_segment[si];
            for j in s as usize..t as usize {
                let v = p.full.dst[j] as usize / LANES;
                let (b1, b2) = p.full.rec[j].0.split_at(LANES);
                let bh = &p.half[j].0;
                for k in 0..LANES {
                    s1[k] += g[v][k] * b1[k];
                    s2[k] += g[v][k] * b2[k];
                }
                for k in 0..HALF {
                    s1[k] += g[v + 1][k] * bh[k];
                    s2[k] += g[v + 1][k] * bh[HALF + k];
                }
            }
            let sum = [
                (s1[0] + s1[1]) + (s1[2] + s1[3]),
                (s2[0] + s2[1]) + (s2[2] + s2[3]),
            ];
            grad[self.seg_param[si] as usize] += d[0] * sum[0] + d[1] * sum[1];
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl HistosysLanes {
    /// code4p's coefficients of whole groups of four segments (`HistosysCode::coefficients`
    /// with every branch computed and blended: products and sums in its order, no FMA);
    /// returns how many segments it did.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn code4p_avx2(
        &self,
        pars: &[f64],
        coef: &mut [SegmentCoef],
        deriv: &mut [[f64; 2]],
    ) -> usize {
        use std::arch::x86_64::*;
        let (c, d) = (
            coef.as_mut_ptr() as *mut f64,
            deriv.as_mut_ptr() as *mut f64,
        );
        let alpha = |i: usize| *pars.get_unchecked(*self.seg_param.get_unchecked(i) as usize);
        let k = |x: f64| _mm256_set1_pd(x);
        // [x_0, y_0, x_1, y_1] and [x_2, y_2, x_3, y_3] at `p`
        let store_pairs = |p: *mut f64, x: __m256d, y: __m256d| {
            let (lo, hi) = (_mm256_unpacklo_pd(x, y), _mm256_unpackhi_pd(x, y));
            _mm256_storeu_pd(p, _mm256_permute2f128_pd::<0x20>(lo, hi));
            _mm256_storeu_pd(p.add(4), _mm256_permute2f128_pd::<0x31>(lo, hi));
        };
        let mut i = 0;
        while i + 4 <= self.n_segments {
            let a = _mm256_set_pd(alpha(i + 3), alpha(i + 2), alpha(i + 1), alpha(i));
            let a2 = _mm256_mul_pd(a, a);
            // a2 (15 + a2 (-10 + 3 a2)) and a (30 + a2 (-40 + 18 a2))
            let poly = _mm256_mul_pd(
                a2,
                _mm256_add_pd(
                    k(15.0),
                    _mm256_mul_pd(a2, _mm256_add_pd(k(-10.0), _mm256_mul_pd(k(3.0), a2))),
                ),
            );
            let dpoly = _mm256_mul_pd(
                a,
                _mm256_add_pd(
                    k(30.0),
                    _mm256_mul_pd(a2, _mm256_add_pd(k(-40.0), _mm256_mul_pd(k(18.0), a2))),
                ),
            );
            let above = _mm256_cmp_pd::<_CMP_GT_OQ>(a, k(1.0));
            let below = _mm256_cmp_pd::<_CMP_LT_OQ>(a, k(-1.0));
            let c2 = _mm256_blendv_pd(
                _mm256_blendv_pd(poly, _mm256_mul_pd(k(-8.0), a), below),
                _mm256_mul_pd(k(8.0), a),
                above,
            );
            let d2 = _mm256_blendv_pd(_mm256_blendv_pd(dpoly, k(-8.0), below), k(8.0), above);
            store_pairs(c.add(2 * i), a, c2);
            store_pairs(d.add(2 * i), k(1.0), d2);
            i += 4;
        }
        i
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn forward_full_avx2(&self, coef: &[SegmentCoef], pad: &mut [Lane]) {
        use std::arch::x86_64::*;
        let f = &self.full;
        let rec = f.lane_rec.as_ptr() as *const f64;
        let seg = f.lane_seg.as_ptr();
        let c = coef.as_ptr() as *const f64;
        // One record's terms, `[b1_0 c1, b2_0 c2, b1_1 c1, b2_1 c2]` and the same of bins 2
        // and 3, added to the sums of the lane's first and second halves.
        let term = |j: usize, (a1, a2): (__m256d, __m256d)| {
            // A prefetch past the end is harmless: it never faults.
            _mm_prefetch::<_MM_HINT_T0>(rec.wrapping_add((j + PF) * REC) as *const i8);
            let cj = _mm256_broadcast_pd(&*(c.add(*seg.add(j) as usize * 2) as *const __m128d));
            let r = rec.add(j * REC);
            (
                _mm256_fmadd_pd(_mm256_load_pd(r), cj, a1),
                _mm256_fmadd_pd(_mm256_load_pd(r.add(LANES)), cj, a2),
            )
        };
        let z = _mm256_setzero_pd();
        let pad = pad.as_mut_ptr() as *mut f64;
        for i in 0..f.lanes.len() {
            let (v, s, t) = f.lane(i);
            let (a1, a2) = interleaved(s..t, (z, z), (z, z), term, |x, y| {
                (_mm256_add_pd(x.0, y.0), _mm256_add_pd(x.1, y.1))
            });
            add_full_lane(pad.add(v * LANES), a1, a2);
        }
    }

    /// `forward_full_avx2` with a record as one 512-bit load and the segment's `[c1, c2]`
    /// broadcast to all four pairs: the same products and sums, one load and one FMA a record
    /// fewer.
    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    unsafe fn forward_full_avx512(&self, coef: &[SegmentCoef], pad: &mut [Lane]) {
        use std::arch::x86_64::*;
        let f = &self.full;
        let rec = f.lane_rec.as_ptr() as *const f64;
        let seg = f.lane_seg.as_ptr();
        let c = coef.as_ptr() as *const f64;
        let term = |j: usize, a: __m512d| {
            _mm_prefetch::<_MM_HINT_T0>(rec.wrapping_add((j + PF) * REC) as *const i8);
            let cj = _mm512_broadcast_f64x2(_mm_load_pd(c.add(*seg.add(j) as usize * 2)));
            _mm512_fmadd_pd(_mm512_load_pd(rec.add(j * REC)), cj, a)
        };
        let z = _mm512_setzero_pd();
        let pad = pad.as_mut_ptr() as *mut f64;
        for i in 0..f.lanes.len() {
            let (v, s, t) = f.lane(i);
            let a = interleaved(s..t, z, z, term, |x, y| _mm512_add_pd(x, y));
            add_full_lane(
                pad.add(v * LANES),
                _mm512_castpd512_pd256(a),
                _mm512_extractf64x4_pd::<1>(a),
            );
        }
    }

    /// Pair records, lane order: the full part as in `forward_full_avx2`, the half part as in
    /// `forward_half_avx2`, with one coefficient load for both.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn forward_pair_avx2(&self, coef: &[SegmentCoef], pad: &mut [Lane]) {
        use std::arch::x86_64::*;
        let p = &self.pair;
        let rec = p.full.lane_rec.as_ptr() as *const f64;
        let hrec = p.lane_half.as_ptr() as *const f64;
        let seg = p.full.lane_seg.as_ptr();
        let c = coef.as_ptr() as *const f64;
        type Sums = ((__m256d, __m256d), __m256d);
        let term = |j: usize, ((a1, a2), b): Sums| {
            _mm_prefetch::<_MM_HINT_T0>(rec.wrapping_add((j + PF) * REC) as *const i8);
            let cj = _mm256_broadcast_pd(&*(c.add(*seg.add(j) as usize * 2) as *const __m128d));
            let r = rec.add(j * REC);
            (
                (
                    _mm256_fmadd_pd(_mm256_load_pd(r), cj, a1),
                    _mm256_fmadd_pd(_mm256_load_pd(r.add(LANES)), cj, a2),
                ),
                _mm256_fmadd_pd(_mm256_load_pd(hrec.add(j * HREC)), cj, b),
            )
        };
        let z = _mm256_setzero_pd();
        let pad = pad.as_mut_ptr() as *mut f64;
        for i in 0..p.full.lanes.len() {
            let (v, s, t) = p.full.lane(i);
            let ((a1, a2), b) = interleaved(s..t, ((z, z), z), ((z, z), z), term, |x, y| {
                (
                    (_mm256_add_pd(x.0 .0, y.0 .0), _mm256_add_pd(x.0 .1, y.0 .1)),
                    _mm256_add_pd(x.1, y.1),
                )
            });
            add_full_lane(pad.add(v * LANES), a1, a2);
            add_half_lane(pad.add((v + 1) * LANES), b);
        }
    }

    /// `forward_pair_avx2` with the full part as one 512-bit load and FMA.
    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    unsafe fn forward_pair_avx512(&self, coef: &[SegmentCoef], pad: &mut [Lane]) {
        use std::arch::x86_64::*;
        let p = &self.pair;
        let rec = p.full.lane_rec.as_ptr() as *const f64;
        let hrec = p.lane_half.as_ptr() as *const f64;
        let seg = p.full.lane_seg.as_ptr();
        let c = coef.as_ptr() as *const f64;
        let term = |j: usize, (a, b): (__m512d, __m256d)| {
            _mm_prefetch::<_MM_HINT_T0>(rec.wrapping_add((j + PF) * REC) as *const i8);
            let cj = _mm512_broadcast_f64x2(_mm_load_pd(c.add(*seg.add(j) as usize * 2)));
            (
                _mm512_fmadd_pd(_mm512_load_pd(rec.add(j * REC)), cj, a),
                _mm256_fmadd_pd(
                    _mm256_load_pd(hrec.add(j * HREC)),
                    _mm512_castpd512_pd256(cj),
                    b,
                ),
            )
        };
        let (z5, z) = (_mm512_setzero_pd(), _mm256_setzero_pd());
        let pad = pad.as_mut_ptr() as *mut f64;
        for i in 0..p.full.lanes.len() {
            let (v, s, t) = p.full.lane(i);
            let (a, b) = interleaved(s..t, (z5, z), (z5, z), term, |x, y| {
                (_mm512_add_pd(x.0, y.0), _mm256_add_pd(x.1, y.1))
            });
            add_full_lane(
                pad.add(v * LANES),
                _mm512_castpd512_pd256(a),
                _mm512_extractf64x4_pd::<1>(a),
            );
            add_half_lane(pad.add((v + 1) * LANES), b);
        }
    }

    /// Half records: `[b1_0, b2_0, b1_1, b2_1] * [c1, c2, c1, c2]` summed per lane; its pairs
    /// are added into the lane's first two bins.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn forward_half_avx2(&self, coef: &[SegmentCoef], pad: &mut [Lane]) {
        use std::arch::x86_64::*;
        let h = &self.half;
        let rec = h.lane_rec.as_ptr() as *const f64;
        let seg = h.lane_seg.as_ptr();
        let (c, pad) = (coef.as_ptr() as *const f64, pad.as_mut_ptr() as *mut f64);
        let term = |j: usize, acc: __m256d| {
            _mm_prefetch::<_MM_HINT_T0>(rec.wrapping_add((j + 2 * PF) * HREC) as *const i8);
            let cj = _mm256_broadcast_pd(&*(c.add(*seg.add(j) as usize * 2) as *const __m128d));
            _mm256_fmadd_pd(_mm256_load_pd(rec.add(j * HREC)), cj, acc)
        };
        for i in 0..h.lanes.len() {
            let (v, s, t) = h.lane(i);
            let z = _mm256_setzero_pd();
            let a = interleaved(s..t, z, z, term, |x, y| _mm256_add_pd(x, y));
            add_half_lane(pad.add(v * LANES), a);
        }
    }

    /// Per segment, its full and pair records' products with their lanes of g, then its half
    /// records' and the pairs' half parts (`[g_0, g_1, g_0, g_1] * [b1_0, b1_1, b2_0, b2_1]`),
    /// reduced and stored once (tHu: 118 segments).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn backward_avx2(&self, g: &[Lane], deriv: &[[f64; 2]], grad: &mut [f64]) {
        use std::arch::x86_64::*;
        let gp = g.as_ptr() as *const f64;
        let BackwardBases {
            frec,
            fdst,
            prec,
            phrec,
            pdst,
        } = self.backward_bases();
        // One full record's products with its lane of g, added to (s1, s2).
        let full = |j: usize, (s1, s2): (__m256d, __m256d)| {
            _mm_prefetch::<_MM_HINT_T0>(frec.wrapping_add((j + PF) * REC) as *const i8);
            let gv = _mm256_loadu_pd(gp.add(*fdst.add(j) as usize));
            let r = frec.add(j * REC);
            (
                _mm256_fmadd_pd(gv, _mm256_load_pd(r), s1),
                _mm256_fmadd_pd(gv, _mm256_load_pd(r.add(LANES)), s2),
            )
        };
        // One pair's products: its full part with its lane of g, its half part with the next
        // lane's first two bins, twice.
        type Sums = ((__m256d, __m256d), __m256d);
        let pair = |j: usize, ((s1, s2), b): Sums| {
            _mm_prefetch::<_MM_HINT_T0>(prec.wrapping_add((j + PF) * REC) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(phrec.wrapping_add((j + PF) * HREC) as *const i8);
            let gl = gp.add(*pdst.add(j) as usize);
            let gv = _mm256_loadu_pd(gl);
            let gh = _mm256_broadcast_pd(&*(gl.add(LANES) as *const __m128d));
            let r = prec.add(j * REC);
            (
                (
                    _mm256_fmadd_pd(gv, _mm256_load_pd(r), s1),
                    _mm256_fmadd_pd(gv, _mm256_load_pd(r.add(LANES)), s2),
                ),
                _mm256_fmadd_pd(gh, _mm256_load_pd(phrec.add(j * HREC)), b),
            )
        };
        let z = _mm256_setzero_pd();
        let zz = ((z, z), z);
        self.backward_segments(
            g,
            deriv,
            grad,
            |s, t| {
                if t - s >= 4 {
                    interleaved(s..t, (z, z), (z, z), full, |x, y| {
                        (_mm256_add_pd(x.0, y.0), _mm256_add_pd(x.1, y.1))
                    })
                } else {
                    // fewer than four: the interleaved sums would be this one and zeros
                    (s..t).fold((z, z), |acc, j| full(j, acc))
                }
            },
            |s, t| {
                if t - s >= 4 {
                    interleaved(s..t, zz, zz, pair, |x, y| {
                        (
                            (_mm256_add_pd(x.0 .0, y.0 .0), _mm256_add_pd(x.0 .1, y.0 .1)),
                            _mm256_add_pd(x.1, y.1),
                        )
                    })
                } else {
                    (s..t).fold(zz, |acc, j| pair(j, acc))
                }
            },
        );
    }

    /// `backward_avx2` with a full record (a pair's full part) as one 512-bit load,
    /// multiplied by its lane of g in both halves: the same products and sums, one load and
    /// one FMA a record fewer.
    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    unsafe fn backward_avx512(&self, g: &[Lane], deriv: &[[f64; 2]], grad: &mut [f64]) {
        use std::arch::x86_64::*;
        let gp = g.as_ptr() as *const f64;
        let BackwardBases {
            frec,
            fdst,
            prec,
            phrec,
            pdst,
        } = self.backward_bases();
        let full = |j: usize, s: __m512d| {
            _mm_prefetch::<_MM_HINT_T0>(frec.wrapping_add((j + PF) * REC) as *const i8);
            let gv = _mm512_broadcast_f64x4(_mm256_loadu_pd(gp.add(*fdst.add(j) as usize)));
            _mm512_fmadd_pd(gv, _mm512_load_pd(frec.add(j * REC)), s)
        };
        let pair = |j: usize, (a, b): (__m512d, __m256d)| {
            _mm_prefetch::<_MM_HINT_T0>(prec.wrapping_add((j + PF) * REC) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(phrec.wrapping_add((j + PF) * HREC) as *const i8);
            let gl = gp.add(*pdst.add(j) as usize);
            let gv = _mm512_broadcast_f64x4(_mm256_loadu_pd(gl));
            let gh = _mm256_broadcast_pd(&*(gl.add(LANES) as *const __m128d));
            (
                _mm512_fmadd_pd(gv, _mm512_load_pd(prec.add(j * REC)), a),
                _mm256_fmadd_pd(gh, _mm256_load_pd(phrec.add(j * HREC)), b),
            )
        };
        let z = _mm512_setzero_pd();
        let zz = (z, _mm256_setzero_pd());
        let halves = |a: __m512d| (_mm512_castpd512_pd256(a), _mm512_extractf64x4_pd::<1>(a));
        self.backward_segments(
            g,
            deriv,
            grad,
            |s, t| {
                halves(if t - s >= 4 {
                    interleaved(s..t, z, z, full, |x, y| _mm512_add_pd(x, y))
                } else {
                    (s..t).fold(z, |acc, j| full(j, acc))
                })
            },
            |s, t| {
                let (a, b) = if t - s >= 4 {
                    interleaved(s..t, zz, zz, pair, |x, y| {
                        (_mm512_add_pd(x.0, y.0), _mm256_add_pd(x.1, y.1))
                    })
                } else {
                    (s..t).fold(zz, |acc, j| pair(j, acc))
                };
                (halves(a), b)
            },
        );
    }

    /// The per-segment loop of the backward pass: `full_sums(s, t)` gives the lane sums
    /// `(g b1, g b2)` of the full records `s..t`, `pair_sums(s, t)` those of the pairs `s..t`
    /// (their full parts) with the half-record sums of their half parts; the half records,
    /// the reduction and the store are here.
    #[inline(always)]
    unsafe fn backward_segments(
        &self,
        g: &[Lane],
        deriv: &[[f64; 2]],
        grad: &mut [f64],
        mut full_sums: impl FnMut(
            usize,
            usize,
        ) -> (std::arch::x86_64::__m256d, std::arch::x86_64::__m256d),
        mut pair_sums: impl FnMut(
            usize,
            usize,
        ) -> (
            (std::arch::x86_64::__m256d, std::arch::x86_64::__m256d),
            std::arch::x86_64::__m256d,
        ),
    ) {
        use std::arch::x86_64::*;
        let (f, h, p) = (&self.full, &self.half, &self.pair);
        let g = g.as_ptr() as *const f64;
        for si in 0..self.n_segments {
            let (s, t) = *f.by_segment.get_unchecked(si);
            let (s1, s2) = full_sums(s as usize, t as usize);
            let (s, t) = *p.full.by_segment.get_unchecked(si);
            let (s, t) = (s as usize, t as usize);
            let ((p1, p2), ph) = pair_sums(s, t);
            let (s1, s2) = (_mm256_add_pd(s1, p1), _mm256_add_pd(s2, p2));
            let (s, t) = *h.by_segment.get_unchecked(si);
            let a = _mm256_add_pd(half_sums(g, &h.rec, &h.dst, s as usize..t as usize), ph);
            // [(s1_0 + s1_1) + (s1_2 + s1_3), the same of s2] + [a_0 + a_1, a_2 + a_3]: the
            // sums pairwise, as `hsum`
            let p = _mm256_hadd_pd(s1, s2);
            let fs = _mm_add_pd(_mm256_castpd256_pd128(p), _mm256_extractf128_pd::<1>(p));
            let hs = _mm_hadd_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd::<1>(a));
            // dc1 * S1 + dc2 * S2 into the segment's parameter (`backward`'s scalar order)
            let pr = _mm_mul_pd(
                _mm_add_pd(fs, hs),
                _mm_loadu_pd(deriv.get_unchecked(si).as_ptr()),
            );
            *grad.get_unchecked_mut(*self.seg_param.get_unchecked(si) as usize) +=
                _mm_cvtsd_f64(_mm_add_sd(pr, _mm_unpackhi_pd(pr, pr)));
        }
    }
}

/// Where the backward loops read: the full records and their lanes' offsets, and the pairs'
/// full parts, half parts and lanes' offsets (parameter order).
#[cfg(target_arch = "x86_64")]
struct BackwardBases {
    frec: *const f64,
    fdst: *const u32,
    prec: *const f64,
    phrec: *const f64,
    pdst: *const u32,
}

#[cfg(target_arch = "x86_64")]
impl HistosysLanes {
    fn backward_bases(&self) -> BackwardBases {
        let (f, p) = (&self.full, &self.pair);
        BackwardBases {
            frec: f.rec.as_ptr() as *const f64,
            fdst: f.dst.as_ptr(),
            prec: p.full.rec.as_ptr() as *const f64,
            phrec: p.half.as_ptr() as *const f64,
            pdst: p.full.dst.as_ptr(),
        }
    }
}

/// The products of half records `recs[range]` with the first two bins of the lane at
/// `g + dst[j]`, twice (one broadcast load: g is 16-byte aligned, asserted in
/// `backward`, and lanes start at multiples of four doubles), in four interleaved sums as the
/// full records' (one would wait on the FMA latency per record).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn half_sums(
    g: *const f64,
    recs: &[Half],
    dst: &[u32],
    range: std::ops::Range<usize>,
) -> std::arch::x86_64::__m256d {
    use std::arch::x86_64::*;
    let (hrec, hdst) = (recs.as_ptr() as *const f64, dst.as_ptr());
    let half = |j: usize, acc: __m256d| {
        _mm_prefetch::<_MM_HINT_T0>(hrec.wrapping_add((j + 2 * PF) * HREC) as *const i8);
        let gv = _mm256_broadcast_pd(&*(g.add(*hdst.add(j) as usize) as *const __m128d));
        _mm256_fmadd_pd(gv, _mm256_load_pd(hrec.add(j * HREC)), acc)
    };
    let z = _mm256_setzero_pd();
    if range.len() >= 4 {
        interleaved(range, z, z, half, |x, y| _mm256_add_pd(x, y))
    } else {
        range.fold(z, |acc, j| half(j, acc))
    }
}

/// Adds a full lane's sums into its four bins at `p`: `a1` holds the pairs of bins 0 and 1
/// (`[b1_0 c1, b2_0 c2, b1_1 c1, b2_1 c2]`), `a2` those of bins 2 and 3.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn add_full_lane(
    p: *mut f64,
    a1: std::arch::x86_64::__m256d,
    a2: std::arch::x86_64::__m256d,
) {
    use std::arch::x86_64::*;
    // [bin 0, bin 2, bin 1, bin 3], each its b1 terms plus its b2 terms
    let bins = _mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_hadd_pd(a1, a2));
    _mm256_storeu_pd(p, _mm256_add_pd(_mm256_loadu_pd(p), bins));
}

/// Adds a half lane's sums (`[b1_0 c1, b2_0 c2, b1_1 c1, b2_1 c2]`) into its first two bins
/// at `p`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn add_half_lane(p: *mut f64, a: std::arch::x86_64::__m256d) {
    use std::arch::x86_64::*;
    let both = _mm_hadd_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd::<1>(a));
    _mm_storeu_pd(p, _mm_add_pd(_mm_loadu_pd(p), both));
}

/// `term(j, sum)` folded over the records `range` into four interleaved sums (the first
/// starting at `init`, the others at `zero`), combined with `add` at the end: one sum would
/// wait on the FMA latency per record.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn interleaved<A: Copy>(
    range: std::ops::Range<usize>,
    init: A,
    zero: A,
    mut term: impl FnMut(usize, A) -> A,
    add: impl Fn(A, A) -> A,
) -> A {
    let (mut a0, mut a1, mut a2, mut a3) = (init, zero, zero, zero);
    let (mut j, t) = (range.start, range.end);
    while j + 4 <= t {
        a0 = term(j, a0);
        a1 = term(j + 1, a1);
        a2 = term(j + 2, a2);
        a3 = term(j + 3, a3);
        j += 4;
    }
    while j < t {
        a0 = term(j, a0);
        j += 1;
    }
    add(add(a0, a1), add(a2, a3))
}
