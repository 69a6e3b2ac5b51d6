// Entry point: lockstep bounded L-BFGS, one workgroup per running fit (appended to model.wgsl).
// The same algorithm as src/optim/lbfgsb.rs (projected gradient, held bounds, two-loop
// recursion with a diagonal preconditioner or, for toys, the whole inverse Fisher information
// at their generating point, backtracking Armijo search along the projected path, judged by
// the slope where the NLL's changes are rounding noise), with every quantity it keeps in
// `state`/`status` on the device. A dispatch runs up to
// `iters_per_dispatch` iterations of every fit still running.
//
// Retirement: a dispatch launches one workgroup per entry of `active_in` (the fits still
// running), and workgroup `slot` fits item `active_in[slot]`. That one item index addresses
// every per-item buffer (data and scratch in `eval`, `state`, `status`), so a fit never meets
// another fit's data however the list is ordered. A fit still running at the end of the
// dispatch appends its item index to `active_out` (`running` counts them); the host reads back
// only that count and launches the next dispatch with the lists swapped, so converged fits
// cost nothing. The order of `active_out` depends on scheduling, but a fit's arithmetic
// touches only its own item's buffers, so its result does not.

struct FitConfig {
    // entries of `active_in` this dispatch (the workgroups launched, rounded up to a 2-D grid)
    n_active: u32,
    memory: u32,
    iters_per_dispatch: u32,
    max_iter: u32,
    pgtol: f32,
    ftol: f32,
    pgtol_loose: f32,
    state_stride: u32,
    // where the per-fit optimizer state starts in `state`: after every fit's parameters
    rest: u32,
    // 1: every box row has a whole initial inverse Hessian in `dense` (np x np a row), used
    // in place of its diagonal (h0)
    use_dense: u32,
    // 1: a fit starts at its box row's row of `starts` (toys); 0: at its own row
    start_by_box: u32,
    pad2: u32,
}

@group(0) @binding(5) var<uniform> cfg: FitConfig;
// Every fit's parameters x (np each, copied from `starts` by the fit's first dispatch: all
// the host reads back), then per fit (state_stride each): g, d, xn, gn, s[m], y[m], rho[m],
// alpha[m], f.
@group(0) @binding(6) var<storage, read_write> state: array<f32>;
// per fit: status, iteration, head, len, stall, one more parameter held fixed (or NONE), its
// row of `box`, the lowest projected gradient so far (f32 bits)
@group(0) @binding(7) var<storage, read_write> status: array<u32>;
// rows of np entries (a fit uses the row its status names; toys of different generating
// points have different preconditioners), per parameter: lower, upper, fixed (0/1), h0
// (inverse-diagonal preconditioner)
@group(0) @binding(8) var<storage, read> box: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read_write> running: atomic<u32>;
// item indices of the fits this dispatch runs, and those still running after it
@group(0) @binding(10) var<storage, read> active_in: array<u32>;
@group(0) @binding(11) var<storage, read_write> active_out: array<u32>;
// per box row, when `cfg.use_dense`: the whole initial inverse Hessian (np x np, symmetric)
// over the row's free parameters (the inverse Fisher information where a toy's fits start)
@group(0) @binding(12) var<storage, read> dense: array<f32>;
// start points, np each: one per fit, or one per box row (`cfg.start_by_box`)
@group(0) @binding(13) var<storage, read> starts: array<f32>;

const NEW: u32 = 0u;
const RUNNING: u32 = 1u;
const CONVERGED: u32 = 2u;
const CONVERGED_BY_OBJECTIVE: u32 = 3u;
const MAX_ITERATIONS: u32 = 4u;
const LINE_SEARCH_FAILED: u32 = 5u;
const NONFINITE_START: u32 = 6u;

var<workgroup> wflag: u32;

// A rise of the NLL (deviance form, f32) at a trial point below this (relative) is taken for
// rounding noise, and the point judged by the slope along the step.
const APPROX_WOLFE_NOISE: f32 = 1.0e-5;

// A parameter held in this fit: fixed for every fit (box) or this fit's extra one.
fn is_fixed(b0: u32, p: u32, extra: u32) -> bool {
    return box[b0 + p].z > 0.5 || p == extra;
}

// D <- H D for fit `b` (state offsets D, XN as scratch) with box row `row`'s whole initial
// inverse Hessian H, as the CPU's `Lbfgsb::apply_dense` (the caller zeroes the held
// parameters' entries after, at once: the second loop of the recursion must not see them).
// H is symmetric, so thread p reads column p: neighbouring threads read neighbouring words.
// Every thread calls it (barriers inside).
fn apply_dense(t: u32, np: u32, row: u32, D: u32, XN: u32) {
    storageBarrier();
    let base = row * np * np;
    for (var p = t; p < np; p += WG) {
        var a0 = 0.0; var a1 = 0.0; var a2 = 0.0; var a3 = 0.0;
        let c = base + p;
        var q = 0u;
        for (; q + 4u <= np; q += 4u) {
            a0 += dense[c + q * np] * state[D + q];
            a1 += dense[c + (q + 1u) * np] * state[D + q + 1u];
            a2 += dense[c + (q + 2u) * np] * state[D + q + 2u];
            a3 += dense[c + (q + 3u) * np] * state[D + q + 3u];
        }
        for (; q < np; q++) { a0 += dense[c + q * np] * state[D + q]; }
        state[XN + p] = (a0 + a1) + (a2 + a3);
    }
    storageBarrier();
    for (var p = t; p < np; p += WG) { state[D + p] = state[XN + p]; }
    storageBarrier();
}

// A parameter held at this point: fixed, or on a bound with the gradient pushing outward.
fn is_held(b0: u32, p: u32, extra: u32, x: f32, g: f32) -> bool {
    let bx = box[b0 + p];
    return is_fixed(b0, p, extra) || (x <= bx.x && g > 0.0) || (x >= bx.y && g < 0.0);
}

fn is_finite(x: f32) -> bool {
    return x == x && abs(x) < 3.0e38;
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    reduce_setup();
    let slot = wid.y * nwg.x + wid.x;
    let t = lid.x;
    if (slot >= cfg.n_active) { return; }
    let item = active_in[slot];
    let np = m(N_PARAMS);
    let mm = cfg.memory;
    let X = item * np;
    let b = cfg.rest + item * cfg.state_stride;
    let G = b;
    let D = b + np;
    let XN = b + 2u * np;
    let GN = b + 3u * np;
    let S = b + 4u * np;
    let Y = S + mm * np;
    let RHO = Y + mm * np;
    let ALPHA = RHO + mm;
    let F = ALPHA + mm;
    let st = item * 8u;
    let extra = status[st + 5u];
    let row = status[st + 6u];
    let b0 = row * np;

    if (t == 0u) { wflag = status[st]; }
    var stat = workgroupUniformLoad(&wflag);
    if (stat > RUNNING) { return; }

    // first evaluation at the start point
    if (stat == NEW) {
        let s0 = select(item, row, cfg.start_by_box != 0u) * np;
        for (var p = t; p < np; p += WG) {
            let x = starts[s0 + p];
            state[X + p] = x;
            wpars[p] = x;
        }
        workgroupBarrier();
        eval(item, t);
        for (var p = t; p < np; p += WG) {
            state[G + p] = select(wgrad[p], 0.0, is_fixed(b0, p, extra));
        }
        if (t == 0u) {
            state[F] = wnll;
            if (is_finite(wnll)) { status[st] = RUNNING; } else { status[st] = NONFINITE_START; }
            status[st + 1u] = 0u;
            status[st + 2u] = 0u;
            status[st + 3u] = 0u;
            status[st + 4u] = 0u;
            status[st + 7u] = 0x7f800000u; // the lowest projected gradient so far: none yet
            wflag = status[st];
        }
        stat = workgroupUniformLoad(&wflag);
        if (stat != RUNNING) { return; }
    }

    for (var it = 0u; it < cfg.iters_per_dispatch; it++) {
        storageBarrier();
        // ---- projected gradient and convergence
        var pg = 0.0;
        for (var p = t; p < np; p += WG) {
            let g = state[G + p];
            let held = is_held(b0, p, extra, state[X + p], g);
            if (!held) { pg = max(pg, abs(g)); }
        }
        let pgmax = wmax(t, pg);
        if (pgmax <= cfg.pgtol) {
            if (t == 0u) { status[st] = CONVERGED; }
            break;
        }
        if (t == 0u) { wflag = status[st + 1u]; }
        if (workgroupUniformLoad(&wflag) >= cfg.max_iter) {
            if (t == 0u) { status[st] = MAX_ITERATIONS; }
            break;
        }
        // ---- direction: two-loop recursion on the variables not held
        for (var p = t; p < np; p += WG) {
            let g = state[G + p];
            let held = is_held(b0, p, extra, state[X + p], g);
            state[D + p] = select(-g, 0.0, held);
        }
        storageBarrier();
        if (t == 0u) { wflag = status[st + 3u]; }
        var len = workgroupUniformLoad(&wflag);
        if (t == 0u) { wflag = status[st + 2u]; }
        let head = workgroupUniformLoad(&wflag);
        for (var k = 0u; k < len; k++) {
            let j = (head + mm - 1u - k) % mm;
            var part = 0.0;
            for (var p = t; p < np; p += WG) { part += state[S + j * np + p] * state[D + p]; }
            let a = state[RHO + j] * wsum(t, part);
            if (t == 0u) { state[ALPHA + j] = a; }
            for (var p = t; p < np; p += WG) { state[D + p] -= a * state[Y + j * np + p]; }
            storageBarrier();
        }
        if (cfg.use_dense != 0u) {
            // the held parameters' entries zeroed before the second loop, as the CPU's
            apply_dense(t, np, row, D, XN);
            for (var p = t; p < np; p += WG) {
                if (is_held(b0, p, extra, state[X + p], state[G + p])) { state[D + p] = 0.0; }
            }
        } else {
            for (var p = t; p < np; p += WG) { state[D + p] *= box[b0 + p].w; }
        }
        storageBarrier();
        for (var kk = 0u; kk < len; kk++) {
            let k = len - 1u - kk;
            let j = (head + mm - 1u - k) % mm;
            var part = 0.0;
            for (var p = t; p < np; p += WG) { part += state[Y + j * np + p] * state[D + p]; }
            let bb = state[RHO + j] * wsum(t, part);
            let a = state[ALPHA + j];
            for (var p = t; p < np; p += WG) { state[D + p] += (a - bb) * state[S + j * np + p]; }
            storageBarrier();
        }
        var gdp = 0.0;
        for (var p = t; p < np; p += WG) {
            let g = state[G + p];
            let held = is_held(b0, p, extra, state[X + p], g);
            if (held) { state[D + p] = 0.0; }
            gdp += g * state[D + p];
        }
        var gd = wsum(t, gdp);
        if (!(gd < 0.0)) {
            // not a descent direction: steepest descent, memory cleared
            let dense_on = cfg.use_dense != 0u;
            for (var p = t; p < np; p += WG) {
                let g = state[G + p];
                let held = is_held(b0, p, extra, state[X + p], g);
                state[D + p] = select(select(-box[b0 + p].w * g, -g, dense_on), 0.0, held);
            }
            if (dense_on) {
                apply_dense(t, np, row, D, XN);
                for (var p = t; p < np; p += WG) {
                    let g = state[G + p];
                    let held = is_held(b0, p, extra, state[X + p], g);
                    if (held) { state[D + p] = 0.0; }
                }
            }
            if (t == 0u) { status[st + 3u] = 0u; }
            len = 0u;
            storageBarrier();
            var gp = 0.0;
            for (var p = t; p < np; p += WG) { gp += state[G + p] * state[D + p]; }
            gd = wsum(t, gp);
        }
        // ---- backtracking Armijo search along the projected path
        let f0 = state[F];
        var step = 1.0;
        var accepted = 0u;
        var fnew = 0.0;
        for (var ls = 0u; ls < 20u; ls++) {
            for (var p = t; p < np; p += WG) {
                let bx = box[b0 + p];
                var xn = state[X + p];
                if (!is_fixed(b0, p, extra)) { xn = clamp(xn + step * state[D + p], bx.x, bx.y); }
                state[XN + p] = xn;
                wpars[p] = xn;
            }
            workgroupBarrier();
            eval(item, t);
            var decp = 0.0;
            for (var p = t; p < np; p += WG) { decp += state[G + p] * (state[XN + p] - state[X + p]); }
            let dec = wsum(t, decp);
            if (t == 0u) { wscalar = wnll; }
            fnew = workgroupUniformLoad(&wscalar);
            if (is_finite(fnew) && fnew <= f0 + 1.0e-4 * dec) {
                accepted = 1u;
                break;
            }
            // Where the NLL's rise is rounding noise, the step is judged by the slope along it
            // (Hager and Zhang's approximate Wolfe conditions, as src/optim/lbfgsb.rs).
            if (t == 0u) {
                let noisy = is_finite(fnew) && fnew - f0 <= APPROX_WOLFE_NOISE * max(abs(f0), 1.0);
                wflag = select(0u, 1u, noisy);
            }
            if (workgroupUniformLoad(&wflag) == 1u) {
                var slp = 0.0;
                for (var p = t; p < np; p += WG) {
                    if (!is_fixed(b0, p, extra)) { slp += wgrad[p] * (state[XN + p] - state[X + p]); }
                }
                let slope = wsum(t, slp);
                if (slope >= 0.9 * dec && slope <= -(1.0 - 2.0e-4) * dec) {
                    accepted = 1u;
                    break;
                }
            }
            step = step * 0.5;
        }
        if (accepted == 0u) {
            if (t == 0u) {
                if (status[st + 3u] > 0u) {
                    status[st + 3u] = 0u; // retry from steepest descent next iteration
                } else if (pgmax <= cfg.pgtol_loose) {
                    status[st] = CONVERGED_BY_OBJECTIVE;
                } else {
                    status[st] = LINE_SEARCH_FAILED;
                }
                wflag = status[st];
            }
            if (workgroupUniformLoad(&wflag) != RUNNING) { break; }
            continue;
        }
        // ---- curvature pair, and the step
        for (var p = t; p < np; p += WG) {
            state[GN + p] = select(wgrad[p], 0.0, is_fixed(b0, p, extra));
        }
        storageBarrier();
        var syp = 0.0;
        var yyp = 0.0;
        for (var p = t; p < np; p += WG) {
            let s = state[XN + p] - state[X + p];
            let y = state[GN + p] - state[G + p];
            state[S + head * np + p] = s;
            state[Y + head * np + p] = y;
            syp += s * y;
            yyp += y * y;
        }
        let sy = wsum(t, syp);
        let yy = wsum(t, yyp);
        // the projected gradient at the new point: where the NLL no longer changes
        // measurably, a step is still progress while it takes this to a new low (by a tenth)
        var pgn = 0.0;
        for (var p = t; p < np; p += WG) {
            let x = state[XN + p];
            let g = state[GN + p];
            state[X + p] = x;
            state[G + p] = g;
            if (!is_held(b0, p, extra, x, g)) { pgn = max(pgn, abs(g)); }
        }
        let pg_new = wmax(t, pgn);
        if (t == 0u) {
            if (sy > 1.0e-10 * yy && sy > 0.0) {
                state[RHO + head] = 1.0 / sy;
                status[st + 2u] = (head + 1u) % mm;
                status[st + 3u] = min(len + 1u, mm);
            }
            let change = f0 - fnew;
            state[F] = fnew;
            status[st + 1u] = status[st + 1u] + 1u;
            let best = bitcast<f32>(status[st + 7u]);
            status[st + 7u] = bitcast<u32>(min(best, pg_new));
            if (change <= cfg.ftol * max(abs(fnew), 1.0) && !(pg_new < 0.9 * best)) {
                status[st + 4u] = status[st + 4u] + 1u;
            } else {
                status[st + 4u] = 0u;
            }
            wflag = status[st + 4u];
        }
        if (workgroupUniformLoad(&wflag) >= 3u) {
            // progress has stopped at rounding level: converged if the gradient is small
            if (t == 0u) {
                if (pg_new <= cfg.pgtol) {
                    status[st] = CONVERGED;
                } else if (pg_new <= cfg.pgtol_loose) {
                    status[st] = CONVERGED_BY_OBJECTIVE;
                } else {
                    status[st + 4u] = 0u;
                }
                wflag = status[st];
            }
            if (workgroupUniformLoad(&wflag) != RUNNING) { break; }
        }
    }
    storageBarrier();
    if (t == 0u && status[st] == RUNNING) { active_out[atomicAdd(&running, 1u)] = item; }
}
