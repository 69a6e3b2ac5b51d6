// Kernel: toy sampling with the CPU engine's generator (src/toys/rng.rs, src/toys/generate.rs):
// Philox4x32-10 keyed by (seed, ensemble, toy, position), Poisson counts by comparing the raw
// 64-bit word with the same integer inverse-CDF thresholds (identical integers on every
// engine), Gaussian auxiliary data by Box-Muller in f64 from the CPU's 52-bit uniforms. One
// thread per (toy, stream position). Appended to model.cuh.

__device__ __forceinline__ void philox(u32 c[4], u32 k0, u32 k1) {
    for (int round = 0; round < 10; round++) {
        if (round > 0) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; }
        const u32 hi0 = __umulhi(0xD2511F53u, c[0]), lo0 = 0xD2511F53u * c[0];
        const u32 hi1 = __umulhi(0xCD9E8D57u, c[2]), lo1 = 0xCD9E8D57u * c[2];
        const u32 n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
        c[0] = n0; c[1] = lo1; c[2] = n2; c[3] = lo0;
    }
}

// 64-bit word `position` of toy `toy` (absolute index)
__device__ u64 word(u64 seed, u32 ensemble, u64 toy, u32 position) {
    u32 c[4] = {position / 2u, ensemble, (u32)toy, (u32)(toy >> 32)};
    philox(c, (u32)seed, (u32)(seed >> 32));
    const int j = (position % 2u) * 2;
    return ((u64)c[j] << 32) | (u64)c[j + 1];
}

__device__ double uniform_open(u64 x) {
    return ((double)(x >> 12) + 0.5) * (1.0 / 4503599627370496.0);
}

// streams: per Poisson stream [offset into thresholds, length, k_min, output slot]
extern "C" __global__ void sample_toys(u64 seed, u32 ensemble, u64 first_toy, u32 n_toys,
                                       u32 n_poisson, u32 n_bins, u32 n_gauss, u32 n_aux,
                                       const u32* __restrict__ streams,
                                       const u64* __restrict__ thresholds,
                                       const double* __restrict__ gauss,  // (centre, sigma)
                                       const u32* __restrict__ gauss_slot, double* out,
                                       u32* counts, u32 write_counts) {
    const u64 per_toy = n_poisson + n_gauss;
    const u64 idx = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (u64)n_toys * per_toy) return;
    const u32 toy = (u32)(idx / per_toy);
    const u32 j = (u32)(idx % per_toy);
    double* row = out + (size_t)toy * (n_bins + n_aux);
    if (j < n_poisson) {
        const u32* s = streams + 4 * j;
        // main bin j uses position j; Poisson aux q uses n_bins + 2 n_gauss + q
        const u32 position = j < n_bins ? j : n_bins + 2 * n_gauss + (j - n_bins);
        const u64 u = word(seed, ensemble, first_toy + toy, position);
        // first k with u < T_k: count the thresholds <= u, clamp to the last
        u32 lo = 0, hi = s[1];
        while (lo < hi) {
            const u32 mid = (lo + hi) / 2;
            if (thresholds[s[0] + mid] <= u) lo = mid + 1; else hi = mid;
        }
        const u32 k = s[2] + min(lo, s[1] - 1);
        if (write_counts) counts[(size_t)toy * n_poisson + j] = k;
        row[s[3]] = (double)k;
    } else {
        const u32 g = j - n_poisson;
        const u32 p = n_bins + 2 * g;
        const double u1 = uniform_open(word(seed, ensemble, first_toy + toy, p));
        const double u2 = uniform_open(word(seed, ensemble, first_toy + toy, p + 1));
        const double z = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
        row[gauss_slot[g]] = gauss[2 * g] + gauss[2 * g + 1] * z;
    }
}

// The data-only constant of each toy's NLL, sum of ln Gamma(n + 1) over its main counts and
// Poisson auxiliary data (Dataset::lgamma_const on the CPU), one thread per toy in a fixed
// order, so that fits of toys drawn here report pyhf's full NLL.
extern "C" __global__ void toy_constants(const double* __restrict__ rows, u32 row_len,
                                         u32 n_rows, const u32* __restrict__ slots,
                                         u32 n_slots, double* out) {
    const u32 t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n_rows) return;
    const double* r = rows + (size_t)t * row_len;
    double c = 0.0;
    for (u32 s = 0; s < n_slots; s++) c += lgamma(r[slots[s]] + 1.0);
    out[t] = c;
}
