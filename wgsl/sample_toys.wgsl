// Toy sampling on the device with the CPU engine's generator (src/toys/rng.rs,
// src/toys/generate.rs): Philox4x32-10 keyed by (seed, ensemble, toy, position), Poisson counts
// by comparing the raw 64-bit word against the same integer inverse-CDF thresholds, so counts
// are identical integers on every engine; Gaussian auxiliary data by Box-Muller in f32.
// One invocation per (toy, stream position).

struct Params {
    seed_lo: u32,
    seed_hi: u32,
    ensemble: u32,
    first_toy_lo: u32,
    first_toy_hi: u32,
    n_toys: u32,
    n_poisson: u32,   // main bins, then Poisson auxiliary data
    n_bins: u32,
    n_gauss: u32,
    n_aux: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> prm: Params;
// per Poisson stream: [offset into thresholds (pairs), length, k_min, output slot]
@group(0) @binding(1) var<storage, read> streams: array<vec4<u32>>;
// thresholds as (hi, lo) pairs
@group(0) @binding(2) var<storage, read> thresholds: array<vec2<u32>>;
// per Gaussian: (centre, sigma) and its aux slot
@group(0) @binding(3) var<storage, read> gauss: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read> gauss_slot: array<u32>;
// outputs per toy: n_bins + n_aux values (counts as exact floats; up to 2^24)
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> counts: array<u32>;

fn mulhilo(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu; let a1 = a >> 16u;
    let b0 = b & 0xffffu; let b1 = b >> 16u;
    let p00 = a0 * b0; let p01 = a0 * b1; let p10 = a1 * b0; let p11 = a1 * b1;
    let mid = (p00 >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
    let hi = p11 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u);
    return vec2<u32>(hi, a * b);
}

fn philox(ctr_in: vec4<u32>, key_in: vec2<u32>) -> vec4<u32> {
    var c = ctr_in;
    var k = key_in;
    for (var round = 0u; round < 10u; round++) {
        if (round > 0u) {
            k.x = k.x + 0x9E3779B9u;
            k.y = k.y + 0xBB67AE85u;
        }
        let r0 = mulhilo(0xD2511F53u, c.x);
        let r1 = mulhilo(0xCD9E8D57u, c.z);
        c = vec4<u32>(r1.x ^ c.y ^ k.x, r1.y, r0.x ^ c.w ^ k.y, r0.y);
    }
    return c;
}

// 64-bit word `position` of toy `toy` as (hi, lo)
fn word(toy: u32, position: u32) -> vec2<u32> {
    let t_lo = prm.first_toy_lo + toy;
    let carry = select(0u, 1u, t_lo < toy);
    let t_hi = prm.first_toy_hi + carry;
    let w = philox(vec4<u32>(position / 2u, prm.ensemble, t_lo, t_hi), vec2<u32>(prm.seed_lo, prm.seed_hi));
    if (position % 2u == 0u) { return vec2<u32>(w.x, w.y); }
    return vec2<u32>(w.z, w.w);
}

fn le(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.x < b.x || (a.x == b.x && a.y <= b.y);
}

fn uniform_open(w: vec2<u32>) -> f32 {
    // all 64 bits in floating point: relative precision 6e-8 however close to 0 the number is
    // (the CPU keeps 52 bits; Box-Muller's logarithm magnifies absolute errors near 0), and a
    // floor of 2^-65 so that it is never 0
    let u = f32(w.x) * 2.3283064365386963e-10 + f32(w.y) * 5.421010862427522e-20 + 2.710505431213761e-20;
    return min(u, 0.99999994);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let per_toy = prm.n_poisson + prm.n_gauss;
    let idx = gid.x + gid.y * nwg.x * 64u;
    if (idx >= prm.n_toys * per_toy) { return; }
    let toy = idx / per_toy;
    let j = idx % per_toy;
    let row = toy * (prm.n_bins + prm.n_aux);
    if (j < prm.n_poisson) {
        let s = streams[j];
        // main bin j uses position j; Poisson aux q uses n_bins + 2 n_gauss + q
        var position = j;
        if (j >= prm.n_bins) { position = prm.n_bins + 2u * prm.n_gauss + (j - prm.n_bins); }
        let u = word(toy, position);
        // first k with u < T_k: count the thresholds <= u (binary search), clamp to the last
        var lo = 0u;
        var hi = s.y;
        while (lo < hi) {
            let mid = (lo + hi) / 2u;
            if (le(thresholds[s.x + mid], u)) { lo = mid + 1u; } else { hi = mid; }
        }
        let k = s.z + min(lo, s.y - 1u);
        counts[toy * prm.n_poisson + j] = k;
        out[row + s.w] = f32(k);
    } else {
        let g = j - prm.n_poisson;
        let p = prm.n_bins + 2u * g;
        let u1 = uniform_open(word(toy, p));
        let u2 = uniform_open(word(toy, p + 1u));
        let z = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
        let cs = gauss[g];
        out[row + gauss_slot[g]] = cs.x + cs.y * z;
    }
}
