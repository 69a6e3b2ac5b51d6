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

/// The padded histosys view of a model's [`Layout`].
#[derive(Debug, Clone)]
pub struct PaddedHistosys {
    /// First lane-vector of each block in the padded block array.
    pub block_start: Vec<u32>,
    /// Per entry: first lane-vector of its block, of its bases, and its width in lanes.
    dst: Vec<u32>,
    off: Vec<u32>,
    width: Vec<u32>,
    /// Per segment (entries of one parameter): entry range.
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
        let n_e = h.param.len();
        let (mut dst, mut off, mut wid) = (
            Vec::with_capacity(n_e),
            Vec::with_capacity(n_e),
            Vec::with_capacity(n_e),
        );
        let (mut b1, mut b2) = (Vec::new(), Vec::new());
        for e in 0..n_e {
            let k = h.block[e] as usize;
            let n = l.blocks[k].n_bins as usize;
            let src = h.offset[e] as usize;
            dst.push(block_start[k]);
            off.push(b1.len() as u32);
            wid.push(width(k) as u32);
            for v in 0..width(k) {
                let (mut x1, mut x2) = ([0.0; LANES], [0.0; LANES]);
                for j in 0..LANES.min(n - v * LANES) {
                    x1[j] = h.b1[src + v * LANES + j];
                    x2[j] = h.b2[src + v * LANES + j];
                }
                b1.push(x1);
                b2.push(x2);
            }
        }
        let segments = l
            .histosys_segments
            .iter()
            .map(|s| (s.start, s.end))
            .collect();
        let p = PaddedHistosys {
            block_start,
            dst,
            off,
            width: wid,
            segments,
            b1,
            b2,
            n_pad,
        };
        // The invariant the unchecked loops rely on.
        for e in 0..n_e {
            assert!(p.dst[e] as usize + p.width[e] as usize <= p.n_pad);
            assert!(p.off[e] as usize + p.width[e] as usize <= p.b1.len());
        }
        for &(s, t) in &p.segments {
            assert!(s <= t && t as usize <= n_e);
        }
        p
    }

    /// `pad[block of e] += b1[e] * coef[seg][0] + b2[e] * coef[seg][1]` for every entry.
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
            for e in s as usize..t as usize {
                // SAFETY: indices checked in `new`; `pad.len() == n_pad` asserted above.
                unsafe {
                    let (d, o) = (
                        *self.dst.get_unchecked(e) as usize,
                        *self.off.get_unchecked(e) as usize,
                    );
                    for v in 0..*self.width.get_unchecked(e) as usize {
                        let a = pad.get_unchecked_mut(d + v);
                        let (x1, x2) = (self.b1.get_unchecked(o + v), self.b2.get_unchecked(o + v));
                        for j in 0..LANES {
                            a[j] += x1[j] * c1 + x2[j] * c2;
                        }
                    }
                }
            }
        }
    }

    /// Per segment, `sums[seg] = (sum g * b1, sum g * b2)` over its entries' bins.
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
            for e in s as usize..t as usize {
                // SAFETY: as in `forward`.
                unsafe {
                    let (d, o) = (
                        *self.dst.get_unchecked(e) as usize,
                        *self.off.get_unchecked(e) as usize,
                    );
                    for v in 0..*self.width.get_unchecked(e) as usize {
                        let gv = g.get_unchecked(d + v);
                        let (x1, x2) = (self.b1.get_unchecked(o + v), self.b2.get_unchecked(o + v));
                        for j in 0..LANES {
                            s1[j] += gv[j] * x1[j];
                            s2[j] += gv[j] * x2[j];
                        }
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
        let (pad, b1, b2) = (
            pad.as_mut_ptr() as *mut f64,
            self.b1.as_ptr() as *const f64,
            self.b2.as_ptr() as *const f64,
        );
        for (si, &(s, t)) in self.segments.iter().enumerate() {
            let (c1, c2) = (_mm256_set1_pd(coef[si][0]), _mm256_set1_pd(coef[si][1]));
            for e in s as usize..t as usize {
                let d = *self.dst.get_unchecked(e) as usize * LANES;
                let o = *self.off.get_unchecked(e) as usize * LANES;
                for v in 0..*self.width.get_unchecked(e) as usize {
                    let a = pad.add(d + v * LANES);
                    let x1 = _mm256_loadu_pd(b1.add(o + v * LANES));
                    let x2 = _mm256_loadu_pd(b2.add(o + v * LANES));
                    _mm256_storeu_pd(
                        a,
                        _mm256_fmadd_pd(x2, c2, _mm256_fmadd_pd(x1, c1, _mm256_loadu_pd(a))),
                    );
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn backward_avx2(&self, g: &[Lane], sums: &mut [[f64; 2]]) {
        use std::arch::x86_64::*;
        let (g, b1, b2) = (
            g.as_ptr() as *const f64,
            self.b1.as_ptr() as *const f64,
            self.b2.as_ptr() as *const f64,
        );
        for (si, &(s, t)) in self.segments.iter().enumerate() {
            let (mut a1, mut a2) = (_mm256_setzero_pd(), _mm256_setzero_pd());
            for e in s as usize..t as usize {
                let d = *self.dst.get_unchecked(e) as usize * LANES;
                let o = *self.off.get_unchecked(e) as usize * LANES;
                for v in 0..*self.width.get_unchecked(e) as usize {
                    let gv = _mm256_loadu_pd(g.add(d + v * LANES));
                    a1 = _mm256_fmadd_pd(gv, _mm256_loadu_pd(b1.add(o + v * LANES)), a1);
                    a2 = _mm256_fmadd_pd(gv, _mm256_loadu_pd(b2.add(o + v * LANES)), a2);
                }
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
