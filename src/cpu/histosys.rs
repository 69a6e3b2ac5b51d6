//! The CPU engine's histosys tables and their two loops.
//!
//! Each histosys entry adds `c1(alpha) b1 + c2(alpha) b2` to one block's bins. Blocks are
//! short (one to six bins in tHu), so every entry is cut into lane records, one per
//! lane-vector of its block, padded with zeros to [`LANES`] bins: a record is one aligned
//! 64-byte line, its `b1` lane-vector then its `b2` lane-vector. Both loops stream these
//! tables from L2 on every evaluation (160 kB for tHu) and are bound by that stream more than
//! by arithmetic, so they load whole lines, prefetch well ahead, and keep their sums in
//! registers.
//!
//! To that end the records are kept twice: in parameter order for the backward pass (a sum
//! per parameter) and in block-lane order for the forward pass (a sum per lane, with no
//! read-modify-write of the lanes). Indices are checked once, at construction; the AVX2 and
//! AVX-512 loops use intrinsics (LLVM does not reliably vectorize these loops), and the
//! portable loops compute the same sums up to FMA rounding and summation order.

// The intrinsic paths (and so these levels) exist on x86-64 only.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_imports))]
use super::isa::{AVX2, AVX512};
use super::lanes::{Lane, LaneGeometry, LANES};
use crate::model::Layout;

/// Doubles per record (two lane-vectors).
const REC: usize = 2 * LANES;

/// A histosys segment's interpolation coefficients spread over a record (`c1` in the first
/// lane-vector, `c2` in the second), so that one 64-byte vector multiplies a whole record.
pub type RecCoef = [f64; REC];

/// How many records ahead the loops prefetch.
const PF: usize = 16;

/// One lane record's two bases.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Rec {
    b1: Lane,
    b2: Lane,
}

/// The histosys entries of a model as lane records (see the module documentation).
#[derive(Debug, Clone)]
pub struct HistosysLanes {
    /// Parameter order. Per record: the lane-vector of the block arrays it belongs to, as
    /// the offset of its first bin (lane-vector * LANES: an x86 address scales it, with no
    /// shift).
    dst: Vec<u32>,
    /// Per segment (entries of one parameter): its range of records.
    segments: Vec<(u32, u32)>,
    rec: Vec<Rec>,
    /// Block-lane order (parameter order within a lane): lane `v`'s records are
    /// `lane_start[v]..lane_start[v + 1]`, each with its segment.
    lane_start: Vec<u32>,
    lane_seg: Vec<u32>,
    lane_rec: Vec<Rec>,
}

impl HistosysLanes {
    pub fn new(l: &Layout, geo: &LaneGeometry) -> Self {
        let n_lanes = geo.n_blk_lanes;
        let h = &l.histosys;
        let (mut dst, mut rec, mut seg_of) = (Vec::new(), Vec::new(), Vec::new());
        let mut segments = Vec::with_capacity(l.histosys_segments.len());
        for (si, seg) in l.histosys_segments.iter().enumerate() {
            let first = dst.len() as u32;
            for e in seg.start as usize..seg.end as usize {
                let k = h.block[e] as usize;
                let n = l.blocks[k].n_bins as usize;
                let src = h.offset[e] as usize;
                for v in 0..geo.blk_width[k] as usize {
                    let (mut b1, mut b2) = ([0.0; LANES], [0.0; LANES]);
                    for j in 0..LANES.min(n - v * LANES) {
                        b1[j] = h.b1[src + v * LANES + j];
                        b2[j] = h.b2[src + v * LANES + j];
                    }
                    dst.push((geo.blk_lane[k] + v as u32) * LANES as u32);
                    rec.push(Rec { b1, b2 });
                    seg_of.push(si as u32);
                }
            }
            segments.push((first, dst.len() as u32));
        }
        let mut order: Vec<usize> = (0..dst.len()).collect();
        order.sort_by_key(|&j| dst[j]); // stable: parameter order within a lane
        let mut lane_start = vec![0u32; n_lanes + 1];
        for &d in &dst {
            lane_start[d as usize / LANES + 1] += 1;
        }
        for v in 0..n_lanes {
            lane_start[v + 1] += lane_start[v];
        }
        let lane_seg: Vec<u32> = order.iter().map(|&j| seg_of[j]).collect();
        let lane_rec: Vec<Rec> = order.iter().map(|&j| rec[j]).collect();
        // The invariants the unchecked loops rely on.
        assert!(dst
            .iter()
            .all(|&d| (d as usize).is_multiple_of(LANES) && (d as usize) < n_lanes * LANES));
        assert!(segments
            .iter()
            .all(|&(s, t)| s <= t && t as usize <= dst.len()));
        assert!(lane_start[n_lanes] as usize == lane_rec.len());
        assert!(lane_seg.iter().all(|&si| (si as usize) < segments.len()));
        HistosysLanes {
            dst,
            segments,
            rec,
            lane_start,
            lane_seg,
            lane_rec,
        }
    }

    fn n_lanes(&self) -> usize {
        self.lane_start.len() - 1
    }

    /// `pad[lane] = nominal[lane] + sum of b1 * c1[seg] + b2 * c2[seg]` over the lane's
    /// records.
    #[inline(always)]
    pub fn forward<const ISA: u8>(&self, nominal: &[Lane], coef: &[RecCoef], pad: &mut [Lane]) {
        assert!(pad.len() == self.n_lanes() && nominal.len() == self.n_lanes());
        assert!(coef.len() == self.segments.len());
        #[cfg(target_arch = "x86_64")]
        if ISA == AVX512 {
            // SAFETY: ISA is AVX512 only in builds called after feature detection; the tables
            // were checked in `new`, the lengths above.
            unsafe { self.forward_avx512(nominal, coef, pad) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if ISA >= AVX2 {
            // SAFETY: as above, for AVX2.
            unsafe { self.forward_avx2(nominal, coef, pad) };
            return;
        }
        for (v, out) in pad.iter_mut().enumerate() {
            let mut a = nominal[v];
            for j in self.lane_start[v] as usize..self.lane_start[v + 1] as usize {
                let c = &coef[self.lane_seg[j] as usize];
                let Rec { b1, b2 } = &self.lane_rec[j];
                for k in 0..LANES {
                    a[k] += b1[k] * c[0] + b2[k] * c[LANES];
                }
            }
            *out = a;
        }
    }

    /// Per segment, `sums[seg] = (sum g * b1, sum g * b2)` over its records.
    #[inline(always)]
    pub fn backward<const ISA: u8>(&self, g: &[Lane], sums: &mut [[f64; 2]]) {
        assert!(g.len() == self.n_lanes() && sums.len() == self.segments.len());
        #[cfg(target_arch = "x86_64")]
        if ISA == AVX512 {
            // SAFETY: as in `forward`.
            unsafe { self.backward_avx512(g, sums) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if ISA >= AVX2 {
            // SAFETY: as in `forward`.
            unsafe { self.backward_avx2(g, sums) };
            return;
        }
        for (si, &(s, t)) in self.segments.iter().enumerate() {
            let (mut s1, mut s2) = ([0.0; LANES], [0.0; LANES]);
            for j in s as usize..t as usize {
                let gv = &g[self.dst[j] as usize / LANES];
                let Rec { b1, b2 } = &self.rec[j];
                for k in 0..LANES {
                    s1[k] += gv[k] * b1[k];
                    s2[k] += gv[k] * b2[k];
                }
            }
            sums[si] = [
                (s1[0] + s1[1]) + (s1[2] + s1[3]),
                (s2[0] + s2[1]) + (s2[2] + s2[3]),
            ];
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl HistosysLanes {
    #[target_feature(enable = "avx2,fma")]
    unsafe fn forward_avx2(&self, nominal: &[Lane], coef: &[RecCoef], pad: &mut [Lane]) {
        use std::arch::x86_64::*;
        let rec = self.lane_rec.as_ptr() as *const f64;
        let (seg, start) = (self.lane_seg.as_ptr(), self.lane_start.as_ptr());
        let c = coef.as_ptr() as *const f64;
        let (nominal, pad) = (nominal.as_ptr() as *const f64, pad.as_mut_ptr() as *mut f64);
        for v in 0..self.n_lanes() {
            // Two sums (b1 and b2 terms): each waits on its FMA once per record.
            let mut a1 = _mm256_loadu_pd(nominal.add(v * LANES));
            let mut a2 = _mm256_setzero_pd();
            for j in *start.add(v) as usize..*start.add(v + 1) as usize {
                // A prefetch past the end is harmless: it never faults.
                _mm_prefetch::<_MM_HINT_T0>(rec.wrapping_add((j + PF) * REC) as *const i8);
                let cj = c.add(*seg.add(j) as usize * REC);
                let r = rec.add(j * REC);
                a1 = _mm256_fmadd_pd(_mm256_load_pd(r), _mm256_broadcast_sd(&*cj), a1);
                let b2 = _mm256_load_pd(r.add(LANES));
                a2 = _mm256_fmadd_pd(b2, _mm256_broadcast_sd(&*cj.add(LANES)), a2);
            }
            _mm256_storeu_pd(pad.add(v * LANES), _mm256_add_pd(a1, a2));
        }
    }

    /// As `forward_avx2`, with a whole record times its coefficients as one 64-byte vector;
    /// the halves are added at the end of the lane.
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn forward_avx512(&self, nominal: &[Lane], coef: &[RecCoef], pad: &mut [Lane]) {
        use std::arch::x86_64::*;
        let rec = self.lane_rec.as_ptr() as *const f64;
        let (seg, start) = (self.lane_seg.as_ptr(), self.lane_start.as_ptr());
        let c = coef.as_ptr() as *const f64;
        let (nominal, pad) = (nominal.as_ptr() as *const f64, pad.as_mut_ptr() as *mut f64);
        let term = |j: usize, acc: __m512d| {
            _mm_prefetch::<_MM_HINT_T0>(rec.wrapping_add((j + PF) * REC) as *const i8);
            let cj = _mm512_loadu_pd(c.add(*seg.add(j) as usize * REC));
            _mm512_fmadd_pd(_mm512_load_pd(rec.add(j * REC)), cj, acc)
        };
        for v in 0..self.n_lanes() {
            let (s, t) = (*start.add(v) as usize, *start.add(v + 1) as usize);
            let mut a0 = _mm512_zextpd256_pd512(_mm256_loadu_pd(nominal.add(v * LANES)));
            let mut a1 = _mm512_setzero_pd();
            let mut j = s;
            while j + 2 <= t {
                a0 = term(j, a0);
                a1 = term(j + 1, a1);
                j += 2;
            }
            if j < t {
                a0 = term(j, a0);
            }
            let a = _mm512_add_pd(a0, a1);
            let lane = _mm256_add_pd(_mm512_castpd512_pd256(a), _mm512_extractf64x4_pd::<1>(a));
            _mm256_storeu_pd(pad.add(v * LANES), lane);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn backward_avx2(&self, g: &[Lane], sums: &mut [[f64; 2]]) {
        use std::arch::x86_64::*;
        let g = g.as_ptr() as *const f64;
        let (rec, dst) = (self.rec.as_ptr() as *const f64, self.dst.as_ptr());
        // One record's products with its lane of g, added to (s1, s2).
        let term = |j: usize, (s1, s2): (__m256d, __m256d)| {
            _mm_prefetch::<_MM_HINT_T0>(rec.wrapping_add((j + PF) * REC) as *const i8);
            let gv = _mm256_loadu_pd(g.add(*dst.add(j) as usize));
            let r = rec.add(j * REC);
            (
                _mm256_fmadd_pd(gv, _mm256_load_pd(r), s1),
                _mm256_fmadd_pd(gv, _mm256_load_pd(r.add(LANES)), s2),
            )
        };
        for (si, &(s, t)) in self.segments.iter().enumerate() {
            // Four pairs of sums: one pair would wait on the FMA latency per record.
            let z = (_mm256_setzero_pd(), _mm256_setzero_pd());
            let (mut a0, mut a1, mut a2, mut a3) = (z, z, z, z);
            let (mut j, t) = (s as usize, t as usize);
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
            let add4 = |a: __m256d, b: __m256d, c: __m256d, d: __m256d| {
                _mm256_add_pd(_mm256_add_pd(a, b), _mm256_add_pd(c, d))
            };
            let (mut x1, mut x2) = ([0.0; LANES], [0.0; LANES]);
            _mm256_storeu_pd(x1.as_mut_ptr(), add4(a0.0, a1.0, a2.0, a3.0));
            _mm256_storeu_pd(x2.as_mut_ptr(), add4(a0.1, a1.1, a2.1, a3.1));
            *sums.get_unchecked_mut(si) = [
                (x1[0] + x1[1]) + (x1[2] + x1[3]),
                (x2[0] + x2[1]) + (x2[2] + x2[3]),
            ];
        }
    }

    /// As `backward_avx2`, with a whole record against its lane of g broadcast to both
    /// halves: one line load and one FMA per record instead of three loads and two FMAs.
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn backward_avx512(&self, g: &[Lane], sums: &mut [[f64; 2]]) {
        use std::arch::x86_64::*;
        let g = g.as_ptr() as *const f64;
        let (rec, dst) = (self.rec.as_ptr() as *const f64, self.dst.as_ptr());
        let term = |j: usize, acc: __m512d| {
            _mm_prefetch::<_MM_HINT_T0>(rec.wrapping_add((j + PF) * REC) as *const i8);
            let gv = _mm512_broadcast_f64x4(_mm256_loadu_pd(g.add(*dst.add(j) as usize)));
            _mm512_fmadd_pd(gv, _mm512_load_pd(rec.add(j * REC)), acc)
        };
        for (si, &(s, t)) in self.segments.iter().enumerate() {
            let z = _mm512_setzero_pd();
            let (mut a0, mut a1, mut a2, mut a3) = (z, z, z, z);
            let (mut j, t) = (s as usize, t as usize);
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
            let a = _mm512_add_pd(_mm512_add_pd(a0, a1), _mm512_add_pd(a2, a3));
            let mut x = [0.0; REC];
            _mm512_storeu_pd(x.as_mut_ptr(), a);
            *sums.get_unchecked_mut(si) =
                [(x[0] + x[1]) + (x[2] + x[3]), (x[4] + x[5]) + (x[6] + x[7])];
        }
    }
}
