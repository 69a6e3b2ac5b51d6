// The model on a CUDA device, in f64: `eval`, the NLL and gradient of one item (a dataset and
// the parameters in `pars`) by one thread block, groups of GS threads over the outputs of each
// phase (each group splitting an output's entries). A
// transliteration of `device::tables::reference_nll_grad` (src/device/tables.rs) in the phases
// of wgsl/model.wgsl, but for the normsys factors: phase 1 computes them per entry (a factor
// and a log-derivative each, outside |alpha| < 1 an exponential per entry where the reference
// sums the exponents of a block), and phase 2 multiplies them per block. The tables are
// `device::tables::PackedTables` (header slots below are offsets into them). NLL terms are
// those of the CPU engine (lam - n ln lam, r - a ln r); the host adds the data-only constant
// and the Gaussian normalisations in f64.
// Kernels (nll_grad.cu, fit.cu, sample_toys.cu) are appended to this file and compiled by
// NVRTC once per process and kernel shape (WG, MINB, GS: src/device/cuda.rs, KernelShape).

typedef unsigned int u32;
typedef unsigned long long u64;

#ifndef WG
#define WG 128
#endif
#define NWARP (WG / 32)
// Blocks per SM the compiler keeps registers for (__launch_bounds__ of the item kernels).
#ifndef MINB
#define MINB 1
#endif
#define NONE 0xffffffffu
// Threads that share one output of a phase (a sample-bin, block, bin or parameter) and split
// its entries: 1 (a thread per output, the throughput layout) up to 32 (a warp per output,
// which shortens the longest chain of one evaluation: the latency layout).
#ifndef GS
#define GS 1
#endif
#define NGRP (WG / GS)
// Threads per parameter in the gradient phase (phase 5), whose per-parameter loops are the
// longest (tHu: up to 359 entries against about 17 per sample-bin in phase 2), so it may
// want wider groups than the other phases.
#ifndef GSG
#define GSG GS
#endif
#define NGRPG (WG / GSG)
// Threads per sample-bin in phase 2's histosys sums (about 17 entries each in tHu, so a
// single round of narrow groups beats several rounds of wide ones).
#ifndef GSS
#define GSS GS
#endif
#define NGRPS (WG / GSS)

// header slots (PackedTables::ints[0..])
#define N_PARAMS 0
#define N_BINS 1
#define N_SB 2
#define N_BLK 3
#define N_AUX 4
#define N_HSEG 5
#define N_NSEG 6
#define N_NS 7
#define SCRATCH 9
#define HISTO_CODE 10
#define NORMSYS_CODE 11
#define I_SB_BIN 12
#define I_SB_BLOCK 13
#define I_BIN_SB_OFF 14
#define I_BIN_SB 15
#define I_HSEG_PARAM 16
#define I_HS_SB_OFF 17
#define I_HS_SB_SEG 18
#define I_HS_SEG_OFF 19
#define I_HS_SEG_SB 20
#define I_NSEG_PARAM 21
#define I_NS_BLK_OFF 22
#define I_NS_BLK_SEG 23
#define I_NS_SEG_OFF 24
#define I_NS_SEG_ENTRY 25
#define I_NS_SEG_BLOCK 26
#define I_LIN_BLK_OFF 27
#define I_LIN_BLK_PARAM 28
#define I_LIN_PAR_OFF 29
#define I_LIN_PAR_BLOCK 30
#define I_BF_SB_OFF 31
#define I_BF_SB_PARAM 32
#define I_BF_PAR_OFF 33
#define I_BF_PAR_SB 34
#define I_PAR_HSEG 35
#define I_PAR_NSEG 36
#define I_PAR_GAUSS_AUX 37
#define I_PAR_POIS_AUX 38
#define F_NOMINAL 39
#define F_HS_SB_B1 40
#define F_HS_SB_B2 41
#define F_HS_SEG_B1 42
#define F_HS_SEG_B2 43
#define F_NS_COEF 44
#define F_NS_LN_HI 45
#define F_NS_LN_LO 46
#define F_PAR_GAUSS_W 47
#define F_PAR_POIS_TAU 48
#define S_HC 49
// slot 50: unused (src/device/tables.rs)
#define S_ADD 51
#define S_BSCALE 52
#define S_SCALE 53
#define S_DLOG 54
#define S_W 55
#define S_GSB 56
#define S_U 57
#define I_BLK_SB_START 58
#define I_BLK_NBINS 59

// Where a kernel finds item `item`'s scratch and normsys log-derivatives (the last scratch
// area): in shared memory after `base`, or in the global areas, as the host chose.
#define SCRATCH_MODE_SHARED 0u    // all in shared memory
#define SCRATCH_MODE_DLOG_GLOBAL 1u // dlog in global memory, the rest shared
#define SCRATCH_MODE_GLOBAL 2u    // all in global memory

// The block's dynamic shared memory (its size is set at launch); each kernel lays it out.
extern __shared__ double smem[];

#define IT(slot) (I + I[slot])
#define FT(slot) (F + I[slot])

// A reduction over the block, the same on every thread; `red` holds NWARP + 1 doubles of
// shared memory. A fixed reduction order, so results do not depend on timing. Lanes past the
// last warp contribute 0, the identity of the sum and of the max over non-negative values
// (the only max taken: a gradient norm).
template <class Op>
__device__ double block_reduce(double v, double* red, Op op) {
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, o));
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    if (threadIdx.x < 32) {
        double s = threadIdx.x < NWARP ? red[threadIdx.x] : 0.0;
        for (int o = 16; o > 0; o >>= 1) s = op(s, __shfl_down_sync(0xffffffffu, s, o));
        if (threadIdx.x == 0) red[NWARP] = s;
    }
    __syncthreads();
    return red[NWARP];
}

struct SumOp {
    __device__ double operator()(double a, double b) const { return a + b; }
};
struct MaxOp {
    __device__ double operator()(double a, double b) const { return fmax(a, b); }
};

__device__ double block_sum(double v, double* red) { return block_reduce(v, red, SumOp()); }
__device__ double block_max(double v, double* red) { return block_reduce(v, red, MaxOp()); }

// Sum and product over the GS threads of a group, the same on each of them (a butterfly:
// every lane adds the same pairs, so every lane gets the same bits). Every lane of the warp
// calls them: the loops over outputs below run the same number of rounds on every thread.
template <int G>
__device__ __forceinline__ double group_sum_of(double v) {
#pragma unroll
    for (int o = G / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o, G);
    return v;
}
__device__ __forceinline__ double group_sum(double v) { return group_sum_of<GS>(v); }
template <int G>
__device__ __forceinline__ double group_prod_of(double v) {
#pragma unroll
    for (int o = G / 2; o > 0; o >>= 1) v *= __shfl_xor_sync(0xffffffffu, v, o, G);
    return v;
}
__device__ __forceinline__ double group_prod(double v) { return group_prod_of<GS>(v); }

// histosys coefficients (c1, c2, dc1, dc2) as interp::HistosysCode::coefficients
__device__ void histo_coefficients(u32 code, double a, double* c) {
    if (code == 0u) {
        if (a > 0.0) { c[0] = a; c[1] = 0.0; c[2] = 1.0; c[3] = 0.0; }
        else { c[0] = 0.0; c[1] = a; c[2] = 0.0; c[3] = 1.0; }
        return;
    }
    if (code == 2u) {
        if (a > 1.0) { c[0] = 2.0 * (a - 1.0); c[1] = a - 1.0; c[2] = 2.0; c[3] = 1.0; }
        else if (a >= -1.0) { c[0] = a * a; c[1] = a; c[2] = 2.0 * a; c[3] = 1.0; }
        else { c[0] = -2.0 * a; c[1] = a; c[2] = -2.0; c[3] = 1.0; }
        return;
    }
    if (a > 1.0) { c[0] = a; c[1] = 8.0 * a; c[2] = 1.0; c[3] = 8.0; }
    else if (a < -1.0) { c[0] = a; c[1] = -8.0 * a; c[2] = 1.0; c[3] = -8.0; }
    else {
        const double a2 = a * a;
        c[0] = a;
        c[1] = a2 * (15.0 + a2 * (-10.0 + 3.0 * a2));
        c[2] = 1.0;
        c[3] = a * (30.0 + a2 * (-40.0 + 18.0 * a2));
    }
}

// The NLL without the host's constants (+inf where undefined) of the parameters in `pars`
// (shared) and dataset `data` (main counts then auxiliary data), returned on every thread;
// the gradient into `grad` (shared). `s` is this item's scratch (shared or global) and
// `dlog` its last area, the normsys log-derivatives (wherever the kernel put it), `red`
// NWARP + 1 shared doubles, `flag` one shared int. Every thread of the block calls it.
__device__ double eval(const u32* __restrict__ I, const double* __restrict__ F,
                       const double* __restrict__ data, const double* pars, double* grad,
                       double* s, double* dlog, double* red, int* flag) {
    const u32 t = threadIdx.x;
    // this thread's group (one output per round) and its lane in it (a share of the entries)
    const u32 grp = t / GS, lane = t % GS;
    const u32 np = I[N_PARAMS], nbins = I[N_BINS], nsb = I[N_SB], nblk = I[N_BLK];
    double* hc = s + I[S_HC];
    // each normsys entry's factor, after its log-derivative (the CUDA engine's last scratch
    // area holds both: src/device/cuda.rs, CudaSession::new)
    double* nsf = dlog + I[N_NS];
    double* add = s + I[S_ADD];
    double* bscale = s + I[S_BSCALE];
    double* scale = s + I[S_SCALE];
    double* w = s + I[S_W];
    double* gsb = s + I[S_GSB];
    double* u = s + I[S_U];
    const double* aux = data + nbins;
    if (t == 0) *flag = 0;

    // ---- phase 1: per histosys segment (coefficients) and per normsys entry (its factor and
    // log-derivative). The entries are spread evenly over the block, not grouped by block as
    // in the reference: the polynomial and the division of each entry are the heaviest
    // arithmetic of the evaluation, and a block of many entries (48 in tHu) kept its group
    // busy long after the others were done.
    {
        const u32* hseg_param = IT(I_HSEG_PARAM);
        const u32 code = I[HISTO_CODE];
        for (u32 k = t; k < I[N_HSEG]; k += WG) histo_coefficients(code, pars[hseg_param[k]], hc + 4 * k);
        const u32* nseg_param = IT(I_NSEG_PARAM);
        const u32* ns_blk_seg = IT(I_NS_BLK_SEG);
        const double* coef = FT(F_NS_COEF);
        const double* ln_hi = FT(F_NS_LN_HI);
        const double* ln_lo = FT(F_NS_LN_LO);
        const bool code4 = I[NORMSYS_CODE] == 4u;
        for (u32 e = t; e < I[N_NS]; e += WG) {
            // every table read of the entry at once (the coefficients do not wait for the
            // segment), then the parameter
            double c[6];
#pragma unroll
            for (int i = 0; i < 6; i++) c[i] = __ldg(coef + 6 * e + i);
            const double lh = __ldg(ln_hi + e), ll = __ldg(ln_lo + e);
            const double a = pars[__ldg(nseg_param + __ldg(ns_blk_seg + e))];
            double f, dl;
            if (code4 && a < 1.0 && a > -1.0) {
                // 1 + sum c_i a^i and its derivative, as the reference sums them
                double poly = 1.0, dpoly = 0.0, prev = 1.0, pw = 1.0;
#pragma unroll
                for (int i = 0; i < 6; i++) {
                    pw *= a;
                    poly += c[i] * pw;
                    dpoly += c[i] * (double)(i + 1) * prev;
                    prev = pw;
                }
                f = poly;
                dl = dpoly / poly;
            } else {
                // exponential: exp(w_hi ln_hi + w_lo ln_lo), d ln / d alpha = dw_hi ln_hi + dw_lo ln_lo
                const bool up = code4 ? a >= 1.0 : a >= 0.0;
                const double w_hi = up ? a : 0.0, w_lo = up ? 0.0 : -a;
                const double dw_hi = up ? 1.0 : 0.0, dw_lo = up ? 0.0 : -1.0;
                f = exp(w_hi * lh + w_lo * ll);
                dl = dw_hi * lh + dw_lo * ll;
            }
            nsf[e] = f;
            dlog[e] = dl;
        }
    }
    __syncthreads();

    // ---- phase 2: per sample-bin (additive part, per-bin factors) and per block (scale)
    {
        const double* nominal = FT(F_NOMINAL);
        const u32* hs_sb_off = IT(I_HS_SB_OFF);
        const u32* hs_sb_seg = IT(I_HS_SB_SEG);
        const double* b1 = FT(F_HS_SB_B1);
        const double* b2 = FT(F_HS_SB_B2);
        const u32* bf_sb_off = IT(I_BF_SB_OFF);
        const u32* bf_sb_param = IT(I_BF_SB_PARAM);
        const u32 grps = t / GSS, lanes = t % GSS;
        for (u32 r = 0; r < nsb; r += NGRPS) {
            const u32 sb = r + grps;
            double a = 0.0, bs = 1.0, nom = 0.0;
            if (sb < nsb) {
                // every offset first: one trip to L2 for all of them
                const u32 e0 = __ldg(hs_sb_off + sb), e1 = __ldg(hs_sb_off + sb + 1);
                const u32 f0 = __ldg(bf_sb_off + sb), f1 = __ldg(bf_sb_off + sb + 1);
                nom = __ldg(nominal + sb);
#pragma unroll 4
                for (u32 e = e0 + lanes; e < e1; e += GSS) {
                    const double* c = hc + 4 * __ldg(hs_sb_seg + e);
                    a += __ldg(b1 + e) * c[0] + __ldg(b2 + e) * c[1];
                }
                for (u32 e = f0 + lanes; e < f1; e += GSS) bs *= pars[__ldg(bf_sb_param + e)];
            }
            a = group_sum_of<GSS>(a);
            bs = group_prod_of<GSS>(bs);
            if (sb < nsb && lanes == 0) {
                add[sb] = nom + a;
                bscale[sb] = bs;
            }
        }
        const u32* lin_blk_off = IT(I_LIN_BLK_OFF);
        const u32* lin_blk_param = IT(I_LIN_BLK_PARAM);
        const u32* ns_blk_off = IT(I_NS_BLK_OFF);
        for (u32 r = 0; r < nblk; r += NGRP) {
            const u32 k = r + grp;
            double sc = 1.0;
            const u32 n0 = k < nblk ? __ldg(ns_blk_off + k) : 0u;
            const u32 n1 = k < nblk ? __ldg(ns_blk_off + k + 1) : 0u;
            const u32 l0 = k < nblk ? __ldg(lin_blk_off + k) : 0u;
            const u32 l1 = k < nblk ? __ldg(lin_blk_off + k + 1) : 0u;
            for (u32 e = l0 + lane; e < l1; e += GS) sc *= pars[__ldg(lin_blk_param + e)];
            for (u32 e = n0 + lane; e < n1; e += GS) sc *= nsf[e];
            sc = group_prod(sc);
            if (k < nblk && lane == 0) scale[k] = sc;
        }
    }
    __syncthreads();

    // ---- phase 3: per main bin and per constraint; reduce
    double acc = 0.0;
    {
        const u32* bin_sb_off = IT(I_BIN_SB_OFF);
        const u32* bin_sb = IT(I_BIN_SB);
        const u32* sb_block = IT(I_SB_BLOCK);
        for (u32 r = 0; r < nbins; r += NGRP) {
            const u32 b = r + grp;
            double lam = 0.0;
            if (b < nbins) {
                const u32 e0 = __ldg(bin_sb_off + b), e1 = __ldg(bin_sb_off + b + 1);
#pragma unroll 4
                for (u32 e = e0 + lane; e < e1; e += GS) {
                    const u32 sb = __ldg(bin_sb + e);
                    lam += add[sb] * scale[sb_block[sb]] * bscale[sb];
                }
            }
            lam = group_sum(lam);
            if (b >= nbins || lane != 0) continue;
            const double n = data[b];
            double wb = 1.0;
            if (lam > 0.0) {
                acc += n > 0.0 ? lam - n * log(lam) : lam;
                wb = 1.0 - n / lam;
            } else if (!(lam == 0.0 && n == 0.0)) {
                *flag = 1;
            }
            w[b] = wb;
        }
        const u32* gauss_aux = IT(I_PAR_GAUSS_AUX);
        const u32* pois_aux = IT(I_PAR_POIS_AUX);
        const double* gauss_w = FT(F_PAR_GAUSS_W);
        const double* tau = FT(F_PAR_POIS_TAU);
        for (u32 p = t; p < np; p += WG) {
            const u32 ga = gauss_aux[p];
            if (ga != NONE) {
                const double d = pars[p] - aux[ga];
                acc += 0.5 * d * d * gauss_w[p];
            }
            const u32 pa = pois_aux[p];
            if (pa != NONE) {
                const double r = pars[p] * tau[p], a = aux[pa];
                if (r > 0.0) acc += a > 0.0 ? r - a * log(r) : r;
                else if (!(r == 0.0 && a == 0.0)) *flag = 1;
            }
        }
    }
    // block_sum's barriers also publish w[] and flag
    double nll = block_sum(acc, red);
    if (*flag) nll = __longlong_as_double(0x7ff0000000000000LL);

    // ---- phase 4: per sample-bin (dNLL/d additive part), per block (dNLL/d scale)
    {
        const u32* sb_bin = IT(I_SB_BIN);
        const u32* sb_block = IT(I_SB_BLOCK);
        for (u32 sb = t; sb < nsb; sb += WG) gsb[sb] = w[sb_bin[sb]] * scale[sb_block[sb]] * bscale[sb];
        const u32* first = IT(I_BLK_SB_START);
        const u32* nb = IT(I_BLK_NBINS);
        for (u32 r = 0; r < nblk; r += NGRP) {
            const u32 k = r + grp;
            double uk = 0.0;
            if (k < nblk)
                for (u32 sb = first[k] + lane; sb < first[k] + nb[k]; sb += GS) uk += w[sb_bin[sb]] * add[sb] * bscale[sb];
            uk = group_sum(uk);
            if (k < nblk && lane == 0) u[k] = uk;
        }
    }
    __syncthreads();

    // ---- phase 5: per parameter
    {
        const u32 grpg = t / GSG, laneg = t % GSG;
        const u32* gauss_aux = IT(I_PAR_GAUSS_AUX);
        const u32* pois_aux = IT(I_PAR_POIS_AUX);
        const double* gauss_w = FT(F_PAR_GAUSS_W);
        const double* tau = FT(F_PAR_POIS_TAU);
        const u32* par_hseg = IT(I_PAR_HSEG);
        const u32* hs_seg_off = IT(I_HS_SEG_OFF);
        const u32* hs_seg_sb = IT(I_HS_SEG_SB);
        const double* sb1 = FT(F_HS_SEG_B1);
        const double* sb2 = FT(F_HS_SEG_B2);
        const u32* par_nseg = IT(I_PAR_NSEG);
        const u32* ns_seg_off = IT(I_NS_SEG_OFF);
        const u32* ns_seg_entry = IT(I_NS_SEG_ENTRY);
        const u32* ns_seg_block = IT(I_NS_SEG_BLOCK);
        const u32* lin_par_off = IT(I_LIN_PAR_OFF);
        const u32* lin_par_block = IT(I_LIN_PAR_BLOCK);
        const u32* lin_blk_off = IT(I_LIN_BLK_OFF);
        const u32* lin_blk_param = IT(I_LIN_BLK_PARAM);
        const u32* ns_blk_off = IT(I_NS_BLK_OFF);
        const u32* bf_par_off = IT(I_BF_PAR_OFF);
        const u32* bf_par_sb = IT(I_BF_PAR_SB);
        const u32* bf_sb_off = IT(I_BF_SB_OFF);
        const u32* bf_sb_param = IT(I_BF_SB_PARAM);
        const u32* sb_block = IT(I_SB_BLOCK);
        const u32* sb_bin = IT(I_SB_BIN);
        for (u32 r = 0; r < np; r += NGRPG) {
            // groups past the last parameter add nothing but still take part in group_sum
            const u32 p = min(r + grpg, np - 1);
            const bool mine = r + grpg < np;
            double g = 0.0;
            const double x = pars[p];
            const u32 ga = gauss_aux[p];
            if (ga != NONE && laneg == 0) g += (x - aux[ga]) * gauss_w[p];
            const u32 pa = pois_aux[p];
            if (pa != NONE && laneg == 0) {
                const double a = aux[pa];
                g += a > 0.0 ? tau[p] - a / x : tau[p];
            }
            const u32 hs = par_hseg[p];
            if (hs != NONE) {
                const double* c = hc + 4 * hs;
                const u32 e0 = __ldg(hs_seg_off + hs), e1 = __ldg(hs_seg_off + hs + 1);
                const double c2 = c[2], c3 = c[3];
#pragma unroll 4
                for (u32 e = e0 + laneg; e < e1; e += GSG)
                    g += gsb[__ldg(hs_seg_sb + e)] * (__ldg(sb1 + e) * c2 + __ldg(sb2 + e) * c3);
            }
            const u32 ns = par_nseg[p];
            if (ns != NONE) {
                const u32 e0 = __ldg(ns_seg_off + ns), e1 = __ldg(ns_seg_off + ns + 1);
#pragma unroll 4
                for (u32 e = e0 + laneg; e < e1; e += GSG) {
                    const u32 k = __ldg(ns_seg_block + e);
                    g += u[k] * scale[k] * dlog[__ldg(ns_seg_entry + e)];
                }
            }
            for (u32 e = lin_par_off[p] + laneg; e < lin_par_off[p + 1]; e += GSG) {
                const u32 k = lin_par_block[e];
                double others;
                if (x != 0.0) {
                    others = scale[k] / x;
                } else {
                    // the block's other factors, recomputed (rare: a factor at 0)
                    others = 1.0;
                    for (u32 j = lin_blk_off[k]; j < lin_blk_off[k + 1]; j++) {
                        const u32 q = lin_blk_param[j];
                        if (q != p) others *= pars[q];
                    }
                    for (u32 j = ns_blk_off[k]; j < ns_blk_off[k + 1]; j++) others *= nsf[j];
                }
                g += u[k] * others;
            }
            for (u32 e = bf_par_off[p] + laneg; e < bf_par_off[p + 1]; e += GSG) {
                const u32 sb = bf_par_sb[e];
                double others;
                if (x != 0.0) {
                    others = bscale[sb] / x;
                } else {
                    others = 1.0;
                    for (u32 j = bf_sb_off[sb]; j < bf_sb_off[sb + 1]; j++) {
                        const u32 q = bf_sb_param[j];
                        if (q != p) others *= pars[q];
                    }
                }
                g += w[sb_bin[sb]] * add[sb] * scale[sb_block[sb]] * others;
            }
            g = group_sum_of<GSG>(mine ? g : 0.0);
            if (mine && laneg == 0) grad[p] = g;
        }
    }
    __syncthreads();
    return nll;
}

__device__ __forceinline__ void scratch_for(const u32* __restrict__ I, u32 mode, u32 item,
                                            double* base, double* gscratch, double** s,
                                            double** dlog) {
    const size_t per = I[SCRATCH];
    if (mode == SCRATCH_MODE_GLOBAL) {
        *s = gscratch + (size_t)item * per;
        *dlog = *s + I[S_DLOG];
    } else if (mode == SCRATCH_MODE_DLOG_GLOBAL) {
        *s = base;
        const size_t n_dlog = per - I[S_DLOG];
        *dlog = gscratch + (size_t)item * n_dlog;
    } else {
        *s = base;
        *dlog = base + I[S_DLOG];
    }
}
