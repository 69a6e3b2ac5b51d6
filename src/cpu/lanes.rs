//! The CPU engine's lane layout: the block-lane geometry, with the loops for expected rates
//! and their backward pass.
//!
//! Blocks (one sample in one channel) are short, a few bins, so a loop per block spends more
//! on slicing and bounds checks than on arithmetic. Here every block (and every channel) is
//! padded with zeros to whole lane-vectors of [`LANES`] bins, and the loops run over flat
//! arrays whose indices were checked once, at construction. The AVX2 + FMA versions use
//! intrinsics (LLVM does not reliably vectorize these loops); the portable versions compute
//! the same sums up to FMA rounding.

// The intrinsic paths (and so these levels) exist on x86-64 only.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_imports))]
use super::isa::AVX2;
use crate::model::Layout;

/// Bins per lane-vector.
pub const LANES: usize = 4;

/// A lane-vector of bins.
pub type Lane = [f64; LANES];

/// Where blocks, channels, bins and sample-bins sit in the CPU engine's lane arrays: every
/// block (and every channel) padded to whole lane-vectors, so the per-block loops are lane
/// operations with no remainder and no per-bin bounds checks.
#[derive(Debug, Clone)]
pub struct LaneGeometry {
    /// Per block: first lane-vector in the block arrays, width in lanes, and first
    /// lane-vector of its channel in the channel arrays.
    pub blk_lane: Vec<u32>,
    pub blk_width: Vec<u32>,
    pub blk_chan_lane: Vec<u32>,
    pub n_blk_lanes: usize,
    pub n_chan_lanes: usize,
    /// Per lane-vector of the block arrays: its block, and its lane-vector in the channel
    /// arrays (the per-lane loops run flat over these: most blocks are one or two lanes, so a
    /// loop per block spends more on its bounds than on its arithmetic).
    pub lane_block: Vec<u32>,
    pub lane_chan: Vec<u32>,
    /// The block lanes grouped by channel lane (block order within each): channel lane `c`
    /// sums the block lanes `chan_order[chan_start[c]..chan_start[c + 1]]`, so its rate is
    /// one sum in registers rather than a read-modify-write per sample.
    chan_order: Vec<u32>,
    chan_start: Vec<u32>,
    /// Blocks in the model (every `lane_block` is below it).
    pub n_blocks: usize,
    /// Main bin -> flat index in the channel arrays.
    pub bin_flat: Vec<u32>,
    /// Nominal yields in the block arrays (zero in the padding).
    pub nominal: super::aligned::Aligned<Lane>,
    /// Per-bin factors as (parameter, flat index in the block arrays).
    pub binfactor: Vec<(u32, u32)>,
}

impl LaneGeometry {
    pub fn new(l: &Layout, channel_bins: &[(usize, usize)], n_params: usize) -> Self {
        let lanes = |n: usize| n.div_ceil(LANES);
        let mut chan_lane = Vec::with_capacity(channel_bins.len());
        let mut n_chan_lanes = 0;
        let mut bin_flat = vec![0u32; l.n_bins];
        for &(start, n) in channel_bins {
            chan_lane.push(n_chan_lanes as u32);
            for i in 0..n {
                bin_flat[start + i] = (n_chan_lanes * LANES + i) as u32;
            }
            n_chan_lanes += lanes(n);
        }
        let (mut blk_lane, mut blk_width, mut blk_chan_lane) = (vec![], vec![], vec![]);
        let (mut lane_block, mut lane_chan) = (vec![], vec![]);
        let mut n_blk_lanes = 0;
        let mut sb_flat = vec![0u32; l.nominal.len()];
        let mut nominal = Vec::new();
        for (k, blk) in l.blocks.iter().enumerate() {
            let n = blk.n_bins as usize;
            blk_lane.push(n_blk_lanes as u32);
            blk_width.push(lanes(n) as u32);
            blk_chan_lane.push(chan_lane[blk.channel as usize]);
            for i in 0..n {
                sb_flat[blk.sb_start as usize + i] = (n_blk_lanes * LANES + i) as u32;
            }
            for v in 0..lanes(n) {
                let mut x = [0.0; LANES];
                for j in 0..LANES.min(n - v * LANES) {
                    x[j] = l.nominal[blk.sb_start as usize + v * LANES + j];
                }
                nominal.push(x);
                lane_block.push(k as u32);
                lane_chan.push(chan_lane[blk.channel as usize] + v as u32);
            }
            n_blk_lanes += lanes(n);
        }
        let mut chan_order: Vec<u32> = (0..n_blk_lanes as u32).collect();
        chan_order.sort_by_key(|&i| lane_chan[i as usize]); // stable: block order
        let mut chan_start = vec![0u32; n_chan_lanes + 1];
        for &c in &lane_chan {
            chan_start[c as usize + 1] += 1;
        }
        for c in 0..n_chan_lanes {
            chan_start[c + 1] += chan_start[c];
        }
        let binfactor: Vec<(u32, u32)> = l
            .binfactor
            .iter()
            .map(|&(p, sb)| (p, sb_flat[sb as usize]))
            .collect();
        let g = LaneGeometry {
            blk_lane,
            blk_width,
            blk_chan_lane,
            n_blk_lanes,
            n_chan_lanes,
            lane_block,
            lane_chan,
            chan_order,
            chan_start,
            n_blocks: l.blocks.len(),
            bin_flat,
            nominal: super::aligned::Aligned::from_slice(&nominal),
            binfactor,
        };
        // The invariants the unchecked loops rely on.
        for k in 0..l.blocks.len() {
            assert!((g.blk_lane[k] + g.blk_width[k]) as usize <= g.n_blk_lanes);
            assert!((g.blk_chan_lane[k] + g.blk_width[k]) as usize <= g.n_chan_lanes);
        }
        assert!(g.lane_block.len() == g.n_blk_lanes && g.lane_chan.len() == g.n_blk_lanes);
        assert!(g.lane_block.iter().all(|&k| (k as usize) < g.n_blocks));
        assert!(g.lane_chan.iter().all(|&c| (c as usize) < g.n_chan_lanes));
        assert!(g.chan_start[g.n_chan_lanes] as usize == g.n_blk_lanes);
        assert!(g.chan_order.iter().all(|&i| (i as usize) < g.n_blk_lanes));
        assert!(g
            .bin_flat
            .iter()
            .all(|&f| (f as usize) < g.n_chan_lanes * LANES));
        assert!(g
            .binfactor
            .iter()
            .all(|&(p, f)| (p as usize) < n_params && (f as usize) < g.n_blk_lanes * LANES));
        g
    }
}

impl LaneGeometry {
    /// Expected rates: `lam[chan lane] += pad * scale[block] * bs` over every block lane,
    /// summed per channel lane in block order.
    #[inline(always)]
    pub fn rates<const ISA: u8>(&self, scale: &[f64], pad: &[Lane], bs: &[Lane], lam: &mut [Lane]) {
        let n = self.n_blk_lanes;
        // The lengths the unchecked loops rely on (the index tables were checked in `new`).
        assert!(pad.len() == n && bs.len() == n && lam.len() == self.n_chan_lanes);
        assert!(scale.len() >= self.n_blocks);
        #[cfg(target_arch = "x86_64")]
        if ISA >= AVX2 {
            // SAFETY: AVX2 is only true in builds called after feature detection; indices as
            // below.
            unsafe { self.rates_avx2(scale, pad, bs, lam) };
            return;
        }
        for (c, lv) in lam.iter_mut().enumerate() {
            for &i in &self.chan_order[self.chan_start[c] as usize..self.chan_start[c + 1] as usize]
            {
                // SAFETY: i < n_blk_lanes == lengths of pad, bs, lane_block (checked in `new`);
                // lane_block < n_blocks <= scale.len().
                unsafe {
                    let i = i as usize;
                    let s = *scale.get_unchecked(*self.lane_block.get_unchecked(i) as usize);
                    let (a, b) = (pad.get_unchecked(i), bs.get_unchecked(i));
                    for j in 0..LANES {
                        lv[j] += a[j] * s * b[j];
                    }
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rates_avx2(&self, scale: &[f64], pad: &[Lane], bs: &[Lane], lam: &mut [Lane]) {
        use std::arch::x86_64::*;
        let (pad, bs) = (pad.as_ptr() as *const f64, bs.as_ptr() as *const f64);
        let lam = lam.as_mut_ptr() as *mut f64;
        let (order, start) = (self.chan_order.as_ptr(), self.chan_start.as_ptr());
        for c in 0..self.n_chan_lanes {
            let mut v = _mm256_loadu_pd(lam.add(c * LANES));
            for j in *start.add(c) as usize..*start.add(c + 1) as usize {
                let i = *order.add(j) as usize;
                let s = _mm256_broadcast_sd(
                    scale.get_unchecked(*self.lane_block.get_unchecked(i) as usize),
                );
                let a = _mm256_mul_pd(_mm256_loadu_pd(pad.add(i * LANES)), s);
                v = _mm256_fmadd_pd(a, _mm256_loadu_pd(bs.add(i * LANES)), v);
            }
            _mm256_storeu_pd(lam.add(c * LANES), v);
        }
    }

    /// The backward pass over the block lanes, from `w = dNLL/dlambda` in the channel lanes:
    /// `g = w * scale * bs` (dNLL / d additive part), `gb = w * scale * pad` (dNLL / d bs), and
    /// `u[block] = sum of w * pad * bs` (dNLL / d scale[block]; `u` is overwritten).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub fn backward<const ISA: u8>(
        &self,
        scale: &[f64],
        w: &[Lane],
        pad: &[Lane],
        bs: &[Lane],
        g: &mut [Lane],
        gb: &mut [Lane],
        u: &mut [f64],
    ) {
        let n = self.n_blk_lanes;
        assert!(pad.len() == n && bs.len() == n && g.len() == n && gb.len() == n);
        assert!(w.len() == self.n_chan_lanes);
        assert!(scale.len() >= self.n_blocks && u.len() >= self.n_blocks);
        u.fill(0.0);
        #[cfg(target_arch = "x86_64")]
        if ISA >= AVX2 {
            // SAFETY: as in `rates`.
            unsafe { self.backward_avx2(scale, w, pad, bs, g, gb, u) };
            return;
        }
        for i in 0..n {
            // SAFETY: as in `rates` (g and gb have n lanes, u at least n_blocks entries).
            unsafe {
                let k = *self.lane_block.get_unchecked(i) as usize;
                let s = *scale.get_unchecked(k);
                let wv = w.get_unchecked(*self.lane_chan.get_unchecked(i) as usize);
                let (a, b) = (pad.get_unchecked(i), bs.get_unchecked(i));
                let (gv, gbv) = (g.get_unchecked_mut(i), gb.get_unchecked_mut(i));
                let mut acc = [0.0; LANES];
                for j in 0..LANES {
                    let ws = wv[j] * s;
                    gv[j] = ws * b[j];
                    gbv[j] = ws * a[j];
                    acc[j] = wv[j] * a[j] * b[j];
                }
                *u.get_unchecked_mut(k) += (acc[0] + acc[1]) + (acc[2] + acc[3]);
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn backward_avx2(
        &self,
        scale: &[f64],
        w: &[Lane],
        pad: &[Lane],
        bs: &[Lane],
        g: &mut [Lane],
        gb: &mut [Lane],
        u: &mut [f64],
    ) {
        use std::arch::x86_64::*;
        let (w, pad, bs) = (
            w.as_ptr() as *const f64,
            pad.as_ptr() as *const f64,
            bs.as_ptr() as *const f64,
        );
        let (g, gb) = (g.as_mut_ptr() as *mut f64, gb.as_mut_ptr() as *mut f64);
        for i in 0..self.n_blk_lanes {
            let k = *self.lane_block.get_unchecked(i) as usize;
            let s = _mm256_broadcast_sd(scale.get_unchecked(k));
            let wv = _mm256_loadu_pd(w.add(*self.lane_chan.get_unchecked(i) as usize * LANES));
            let a = _mm256_loadu_pd(pad.add(i * LANES));
            let b = _mm256_loadu_pd(bs.add(i * LANES));
            let ws = _mm256_mul_pd(wv, s);
            _mm256_storeu_pd(g.add(i * LANES), _mm256_mul_pd(ws, b));
            _mm256_storeu_pd(gb.add(i * LANES), _mm256_mul_pd(ws, a));
            let acc = _mm256_mul_pd(_mm256_mul_pd(wv, a), b);
            let h = _mm_add_pd(_mm256_castpd256_pd128(acc), _mm256_extractf128_pd::<1>(acc));
            *u.get_unchecked_mut(k) += _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
        }
    }
}
