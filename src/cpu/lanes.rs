//! The histosys tables in the CPU engine's padded lane layout, and their two loops.
//!
//! Each histosys entry covers one block's bins; blocks are short (a few bins), so a loop per
//! entry spends more on slicing and bounds checks than on arithmetic. Here every block is
//! padded with zeros to whole lane-vectors of [`LANES`] bins, the entries' bases likewise, and
//! the loops run over flat arrays whose indices were checked once, at construction. The AVX2 +
//! FMA versions use intrinsics (LLVM does not reliably vectorize these loops); the portable
//! versions compute the same sums up to FMA rounding.

use crate::model::Layout;

/// Bins per lane-vector.
pub const LANES: usize = 4;

/// A lane-vector of bins.
pub type Lane = [f64; LANES];

/// The padded histosys view of a model's [`Layout`]: one record per lane-vector, grouped by
/// parameter segment, so both loops are a single pass over flat arrays.
#[derive(Debug, Clone)]
pub struct PaddedHistosys {
    /// First lane-vector of each block in the padded block array.
    pub block_start: Vec<u32>,
    /// Per lane record: the lane-vector of the padded block array it adds to.
    dst: Vec<u32>,
    /// Per segment (entries of one parameter): its range of lane records.
    segments: Vec<(u32, u32)>,
    b1: Vec<Lane>,
    b2: Vec<Lane>,
    /// Lane-vectors of all blocks together.
    pub n_pad: usize,
}

impl PaddedHistosys {
    pub fn new(l: &Layout) -> Self {
        let width = |k: usize| (l.blocks[k].n_bins as usize).div_ceil(LANES);
        let mut block_start = Vec::with_capacity(l.blocks.len());
        let mut n_pad = 0;
        for k in 0..l.blocks.len() {
            block_start.push(n_pad as u32);
            n_pad += width(k);
        }
        let h = &l.histosys;
        let (mut dst, mut b1, mut b2) = (Vec::new(), Vec::new(), Vec::new());
        let mut segments = Vec::with_capacity(l.histosys_segments.len());
        for seg in &l.histosys_segments {
            let first = dst.len() as u32;
            for e in seg.start as usize..seg.end as usize {
                let k = h.block[e] as usize;
                let n = l.blocks[k].n_bins as usize;
                let src = h.offset[e] as usize;
                for v in 0..width(k) {
                    let (mut x1, mut x2) = ([0.0; LANES], [0.0; LANES]);
                    for j in 0..LANES.min(n - v * LANES) {
                        x1[j] = h.b1[src + v * LANES + j];
                        x2[j] = h.b2[src + v * LANES + j];
                    }
                    dst.push(block_start[k] + v as u32);
                    b1.push(x1);
                    b2.push(x2);
                }
            }
            segments.push((first, dst.len() as u32));
        }
        // The invariant the unchecked loops rely on.
        assert!(dst.iter().all(|&d| (d as usize) < n_pad));
        assert!(segments
            .iter()
            .all(|&(s, t)| s <= t && t as usize <= dst.len()));
        PaddedHistosys {
            block_start,
            dst,
            segments,
            b1,
            b2,
            n_pad,
        }
    }

    /// `pad[dst] += b1 * coef[seg][0] + b2 * coef[seg][1]` for every lane record.
    #[inline(always)]
    pub fn forward<const AVX2: bool>(&self, pad: &mut [Lane], coef: &[[f64; 4]]) {
        assert!(pad.len() == self.n_pad && coef.len() == self.segments.len());
        #[cfg(target_arch = "x86_64")]
        if AVX2 {
            // SAFETY: AVX2 is only true in builds called after feature detection.
            unsafe { self.forward_avx2(pad, coef) };
            return;
        }
        for (si, &(s, t)) in self.segments.iter().enumerate() {
            let (c1, c2) = (coef[si][0], coef[si][1]);
            for j in s as usize..t as usize {
                // SAFETY: indices checked in `new`; `pad.len() == n_pad` asserted above.
                unsafe {
                    let a = pad.get_unchecked_mut(*self.dst.get_unchecked(j) as usize);
                    let (x1, x2) = (self.b1.get_unchecked(j), self.b2.get_unchecked(j));
                    for k in 0..LANES {
                        a[k] += x1[k] * c1 + x2[k] * c2;
                    }
                }
            }
        }
    }

    /// Per segment, `sums[seg] = (sum g * b1, sum g * b2)` over its lane records.
    #[inline(always)]
    pub fn backward<const AVX2: bool>(&self, g: &[Lane], sums: &mut [[f64; 2]]) {
        assert!(g.len() == self.n_pad && sums.len() == self.segments.len());
        #[cfg(target_arch = "x86_64")]
        if AVX2 {
            // SAFETY: as in `forward`.
            unsafe { self.backward_avx2(g, sums) };
            return;
        }
        for (si, &(s, t)) in self.segments.iter().enumerate() {
            let (mut s1, mut s2) = ([0.0; LANES], [0.0; LANES]);
            for j in s as usize..t as usize {
                // SAFETY: as in `forward`.
                unsafe {
                    let gv = g.get_unchecked(*self.dst.get_unchecked(j) as usize);
                    let (x1, x2) = (self.b1.get_unchecked(j), self.b2.get_unchecked(j));
                    for k in 0..LANES {
                        s1[k] += gv[k] * x1[k];
                        s2[k] += gv[k] * x2[k];
                    }
                }
            }
            sums[si] = [
                (s1[0] + s1[1]) + (s1[2] + s1[3]),
                (s2[0] + s2[1]) + (s2[2] + s2[3]),
            ];
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn forward_avx2(&self, pad: &mut [Lane], coef: &[[f64; 4]]) {
        use std::arch::x86_64::*;
        let pad = pad.as_mut_ptr() as *mut f64;
        let (b1, b2) = (
            self.b1.as_ptr() as *const f64,
            self.b2.as_ptr() as *const f64,
        );
        let dst = self.dst.as_ptr();
        for (si, &(s, t)) in self.segments.iter().enumerate() {
            let (c1, c2) = (_mm256_set1_pd(coef[si][0]), _mm256_set1_pd(coef[si][1]));
            for j in s as usize..t as usize {
                let a = pad.add(*dst.add(j) as usize * LANES);
                let x1 = _mm256_loadu_pd(b1.add(j * LANES));
                let x2 = _mm256_loadu_pd(b2.add(j * LANES));
                _mm256_storeu_pd(
                    a,
                    _mm256_fmadd_pd(x2, c2, _mm256_fmadd_pd(x1, c1, _mm256_loadu_pd(a))),
                );
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn backward_avx2(&self, g: &[Lane], sums: &mut [[f64; 2]]) {
        use std::arch::x86_64::*;
        let g = g.as_ptr() as *const f64;
        let (b1, b2) = (
            self.b1.as_ptr() as *const f64,
            self.b2.as_ptr() as *const f64,
        );
        let dst = self.dst.as_ptr();
        for (si, &(s, t)) in self.segments.iter().enumerate() {
            let (mut a1, mut a2) = (_mm256_setzero_pd(), _mm256_setzero_pd());
            for j in s as usize..t as usize {
                let gv = _mm256_loadu_pd(g.add(*dst.add(j) as usize * LANES));
                a1 = _mm256_fmadd_pd(gv, _mm256_loadu_pd(b1.add(j * LANES)), a1);
                a2 = _mm256_fmadd_pd(gv, _mm256_loadu_pd(b2.add(j * LANES)), a2);
            }
            let (mut x1, mut x2) = ([0.0; LANES], [0.0; LANES]);
            _mm256_storeu_pd(x1.as_mut_ptr(), a1);
            _mm256_storeu_pd(x2.as_mut_ptr(), a2);
            *sums.get_unchecked_mut(si) = [
                (x1[0] + x1[1]) + (x1[2] + x1[3]),
                (x2[0] + x2[1]) + (x2[2] + x2[3]),
            ];
        }
    }
}
