// Kernel: bounded L-BFGS, persistent blocks (appended to model.cuh). The algorithm of
// wgsl/fit.wgsl and src/optim/lbfgsb.rs (projected gradient, held bounds, two-loop recursion
// with a diagonal preconditioner or, for toys, the whole inverse Fisher information at their
// generating point, backtracking Armijo search along the projected path, with Hager and
// Zhang's approximate Wolfe conditions where the NLL's changes are rounding noise) in f64. Each block takes the next unfitted item from a shared counter, fits it to the end and
// takes another: a finished fit retires at once and its block moves on, so no launch waits
// for its slowest fit and no block idles. The optimizer state and scratch live in the
// block's slot (as many slots as blocks, a working set that stays in L2), the results in the
// item's rows (parameters, status, NLL).

#define NEW 0u
#define RUNNING 1u
#define CONVERGED 2u
#define CONVERGED_BY_OBJECTIVE 3u
#define MAX_ITERATIONS 4u
#define LINE_SEARCH_FAILED 5u
#define NONFINITE_START 6u
// A rise of the NLL at a trial point below this (relative) is taken for rounding noise.
#define APPROX_WOLFE_NOISE 1.0e-10

__device__ __forceinline__ bool finite(double x) { return x == x && fabs(x) < 1.0e308; }

// D <- H D with a box row's whole initial inverse Hessian H (np x np, symmetric, so that
// thread p reads column p: neighbouring threads read neighbouring words), T as scratch, as
// the CPU's `Lbfgsb::apply_dense`; the caller zeroes the held parameters' entries after, at
// once (the second loop of the recursion must not see them). Every thread of the block calls
// it (barriers inside).
__device__ void apply_dense(const double* __restrict__ H, u32 np, double* D, double* T) {
    __syncthreads();
    for (u32 p = threadIdx.x; p < np; p += WG) {
        double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
        u32 q = 0;
        for (; q + 4 <= np; q += 4) {
            a0 += H[(size_t)q * np + p] * D[q];
            a1 += H[(size_t)(q + 1) * np + p] * D[q + 1];
            a2 += H[(size_t)(q + 2) * np + p] * D[q + 2];
            a3 += H[(size_t)(q + 3) * np + p] * D[q + 3];
        }
        for (; q < np; q++) a0 += H[(size_t)q * np + p] * D[q];
        T[p] = (a0 + a1) + (a2 + a3);
    }
    __syncthreads();
    for (u32 p = threadIdx.x; p < np; p += WG) D[p] = T[p];
    __syncthreads();
}

// Per item, `meta` holds (data row, start row, extra parameter held or NONE, box row): the
// dataset, start point and bounds/preconditioner it fits, so that one batch can mix datasets,
// starts, held parameters and preconditioners (both fits of several toy ensembles, scans).
// With `use_dense`, every box row has a whole initial inverse Hessian in `dense` (np x np a
// row), used in place of the row's diagonal.
// status per item: code, iteration, head, len, stall, lowest projected gradient (f32 bits),
// (2 unused); `fout` per item the NLL reached and the value of parameter `poi` there (what a
// toy's test statistic needs, so that the host can leave the other parameters on the device).
__device__ void fit_one(const u32* __restrict__ I, const double* __restrict__ F,
                        const double* __restrict__ data, u32 row_len,
                        const uint4* __restrict__ meta, double* gscratch, u32 scratch_mode,
                        const double* __restrict__ starts, const double* __restrict__ boxes,
                        const double* __restrict__ dense, u32 use_dense, double* xs,
                        double* work, u32* status, double* fout, u32 poi, u32 memory,
                        u32 iters, u32 max_iter, double pgtol, double ftol, double pgtol_loose,
                        const u32 item, const u32 slot, u32* sh_u_ptr) {
    u32& sh_u = *sh_u_ptr;
    const u32 t = threadIdx.x;
    const u32 np = I[N_PARAMS];
    const u32 mm = memory;
    double* pars = smem;
    double* grad = pars + np;
    double* red = grad + np;
    int* flag = (int*)(red + NWARP + 1);
    double *s, *dl;
    scratch_for(I, scratch_mode, slot, red + NWARP + 2, gscratch, &s, &dl);
    const uint4 mt = meta[item];
    const double* d = data + (size_t)mt.x * row_len;
    const double* start = starts + (size_t)mt.y * np;
    const u32 extra = mt.z;
    const double* box = boxes + (size_t)mt.w * 4 * np;
    const double* H = use_dense ? dense + (size_t)mt.w * np * np : nullptr;
    const size_t ws = (size_t)np * (4 + 2 * mm) + 2 * mm + 1;
    double* X = xs + (size_t)item * np;
    double* G = work + (size_t)slot * ws;
    double* D = G + np;
    double* XN = D + np;
    double* GN = XN + np;
    double* S = GN + np;
    double* Y = S + (size_t)mm * np;
    double* RHO = Y + (size_t)mm * np;
    double* ALPHA = RHO + mm;
    double* FV = ALPHA + mm;
    u32* st = status + 8 * (size_t)item;

#define FIXED(p) (box[4 * (p) + 2] > 0.5 || (p) == extra)
#define HELD(p, x, g) (FIXED(p) || ((x) <= box[4 * (p)] && (g) > 0.0) || ((x) >= box[4 * (p) + 1] && (g) < 0.0))

    if (t == 0) sh_u = st[0];
    __syncthreads();
    if (sh_u > RUNNING) return;
    if (sh_u == NEW) {
        for (u32 p = t; p < np; p += WG) {
            const double x = start[p];
            X[p] = x;
            pars[p] = x;
        }
        __syncthreads();
        const double f = eval(I, F, d, pars, grad, s, dl, red, flag);
        for (u32 p = t; p < np; p += WG) G[p] = FIXED(p) ? 0.0 : grad[p];
        if (t == 0) {
            FV[0] = f;
            fout[2 * item] = f;
            fout[2 * item + 1] = X[poi];
            st[0] = finite(f) ? RUNNING : NONFINITE_START;
            st[1] = 0; st[2] = 0; st[3] = 0; st[4] = 0;
            st[5] = 0x7f800000u;  // the lowest projected gradient so far, f32: none yet
        }
        if (!finite(f)) return;
    }

    for (u32 it = 0; it < iters; it++) {
        __syncthreads();
        // ---- projected gradient and convergence
        double pg = 0.0;
        for (u32 p = t; p < np; p += WG) {
            const double x = X[p], g = G[p];
            if (!HELD(p, x, g)) pg = fmax(pg, fabs(g));
        }
        const double pgmax = block_max(pg, red);
        if (pgmax <= pgtol) {
            if (t == 0) st[0] = CONVERGED;
            break;
        }
        if (st[1] >= max_iter) {
            __syncthreads();
            if (t == 0) st[0] = MAX_ITERATIONS;
            break;
        }
        // ---- direction: two-loop recursion on the variables not held
        for (u32 p = t; p < np; p += WG) {
            const double x = X[p], g = G[p];
            D[p] = HELD(p, x, g) ? 0.0 : -g;
        }
        u32 len = st[3];
        const u32 head = st[2];
        __syncthreads();
        for (u32 k = 0; k < len; k++) {
            const u32 j = (head + mm - 1 - k) % mm;
            double part = 0.0;
            for (u32 p = t; p < np; p += WG) part += S[(size_t)j * np + p] * D[p];
            const double a = RHO[j] * block_sum(part, red);
            if (t == 0) ALPHA[j] = a;
            for (u32 p = t; p < np; p += WG) D[p] -= a * Y[(size_t)j * np + p];
            __syncthreads();
        }
        if (H) {
            // the held parameters' entries zeroed before the second loop, as the CPU's
            apply_dense(H, np, D, XN);
            for (u32 p = t; p < np; p += WG)
                if (HELD(p, X[p], G[p])) D[p] = 0.0;
        } else {
            for (u32 p = t; p < np; p += WG) D[p] *= box[4 * p + 3];
        }
        __syncthreads();
        for (u32 kk = 0; kk < len; kk++) {
            const u32 k = len - 1 - kk;
            const u32 j = (head + mm - 1 - k) % mm;
            double part = 0.0;
            for (u32 p = t; p < np; p += WG) part += Y[(size_t)j * np + p] * D[p];
            const double bb = RHO[j] * block_sum(part, red);
            const double a = ALPHA[j];
            for (u32 p = t; p < np; p += WG) D[p] += (a - bb) * S[(size_t)j * np + p];
            __syncthreads();
        }
        double gdp = 0.0;
        for (u32 p = t; p < np; p += WG) {
            const double x = X[p], g = G[p];
            if (HELD(p, x, g)) D[p] = 0.0;
            gdp += g * D[p];
        }
        double gd = block_sum(gdp, red);
        if (!(gd < 0.0)) {
            // not a descent direction: steepest descent, memory cleared
            for (u32 p = t; p < np; p += WG) {
                const double x = X[p], g = G[p];
                D[p] = HELD(p, x, g) ? 0.0 : (H ? -g : -box[4 * p + 3] * g);
            }
            if (H) {
                apply_dense(H, np, D, XN);
                for (u32 p = t; p < np; p += WG)
                    if (HELD(p, X[p], G[p])) D[p] = 0.0;
            }
            if (t == 0) st[3] = 0;
            len = 0;
            double gp = 0.0;
            for (u32 p = t; p < np; p += WG) gp += G[p] * D[p];
            gd = block_sum(gp, red);
        }
        // ---- backtracking Armijo search along the projected path
        const double f0 = FV[0];
        double step = 1.0, fnew = 0.0;
        bool accepted = false;
        for (int ls = 0; ls < 20; ls++) {
            double decp = 0.0;
            for (u32 p = t; p < np; p += WG) {
                double xn = X[p];
                if (!FIXED(p)) xn = fmin(fmax(xn + step * D[p], box[4 * p]), box[4 * p + 1]);
                XN[p] = xn;
                pars[p] = xn;
                decp += G[p] * (xn - X[p]);
            }
            __syncthreads();
            fnew = eval(I, F, d, pars, grad, s, dl, red, flag);
            const double dec = block_sum(decp, red);
            if (finite(fnew) && fnew <= f0 + 1.0e-4 * dec) {
                accepted = true;
                break;
            }
            // Where the NLL's rise is rounding noise, the step is judged by the slope along
            // it (Hager and Zhang's approximate Wolfe conditions, as the CPU's
            // src/optim/lbfgsb.rs): 0.9 dec <= slope <= -(1 - 2e-4) dec.
            if (finite(fnew) && fnew - f0 <= APPROX_WOLFE_NOISE * fmax(fabs(f0), 1.0)) {
                double slp = 0.0;
                for (u32 p = t; p < np; p += WG)
                    if (!FIXED(p)) slp += grad[p] * (XN[p] - X[p]);
                const double slope = block_sum(slp, red);
                if (slope >= 0.9 * dec && slope <= -(1.0 - 2.0e-4) * dec) {
                    accepted = true;
                    break;
                }
            }
            step *= 0.5;
        }
        if (!accepted) {
            if (t == 0) {
                if (st[3] > 0) st[3] = 0;  // retry from steepest descent next iteration
                else if (pgmax <= pgtol_loose) st[0] = CONVERGED_BY_OBJECTIVE;
                else st[0] = LINE_SEARCH_FAILED;
                sh_u = st[0];
            }
            __syncthreads();
            if (sh_u != RUNNING) break;
            continue;
        }
        // ---- curvature pair, and the step; with the projected gradient at the new point:
        // where the NLL no longer changes measurably, a step is still progress while it takes
        // that to a new low (by a tenth)
        double syp = 0.0, yyp = 0.0, pgn = 0.0;
        for (u32 p = t; p < np; p += WG) {
            const double gn = FIXED(p) ? 0.0 : grad[p];
            const double xn = XN[p];
            const double sv = xn - X[p];
            const double yv = gn - G[p];
            S[(size_t)head * np + p] = sv;
            Y[(size_t)head * np + p] = yv;
            syp += sv * yv;
            yyp += yv * yv;
            X[p] = xn;
            G[p] = gn;
            if (!HELD(p, xn, gn)) pgn = fmax(pgn, fabs(gn));
        }
        const double sy = block_sum(syp, red);
        const double yy = block_sum(yyp, red);
        const double pg_new = block_max(pgn, red);
        if (t == 0) {
            if (sy > 1.0e-10 * yy && sy > 0.0) {
                RHO[head] = 1.0 / sy;
                st[2] = (head + 1) % mm;
                st[3] = min(len + 1, mm);
            }
            const double change = f0 - fnew;
            FV[0] = fnew;
            st[1] = st[1] + 1;
            const float best = __uint_as_float(st[5]);
            const bool gradient_progress = pg_new < 0.9 * (double)best;
            st[5] = __float_as_uint(fminf(best, (float)pg_new));
            if (change <= ftol * fmax(fabs(fnew), 1.0) && !gradient_progress) st[4] = st[4] + 1;
            else st[4] = 0;
            if (st[4] >= 3) {
                // progress has stopped at rounding level: converged if the gradient is small
                if (pg_new <= pgtol) st[0] = CONVERGED;
                else if (pg_new <= pgtol_loose) st[0] = CONVERGED_BY_OBJECTIVE;
                else st[4] = 0;
            }
            sh_u = st[0];
        }
        __syncthreads();
        if (sh_u != RUNNING) break;
    }
    __syncthreads();
    if (t == 0) {
        fout[2 * item] = FV[0];
        fout[2 * item + 1] = X[poi];
    }
#undef FIXED
#undef HELD
}

extern "C" __global__ void __launch_bounds__(WG, MINB)
    fit(const u32* __restrict__ I, const double* __restrict__ F, const double* __restrict__ data,
        u32 row_len, const uint4* __restrict__ meta, double* gscratch, u32 scratch_mode,
        const double* __restrict__ starts, const double* __restrict__ boxes,
        const double* __restrict__ dense, u32 use_dense, double* xs, double* work, u32* status,
        double* fout, u32 poi, u32 memory, u32 max_iter, double pgtol, double ftol,
        double pgtol_loose, u32 n_items, u32* next_item) {
    __shared__ u32 sh_u;
    __shared__ u32 sh_item;
    for (;;) {
        __syncthreads();
        if (threadIdx.x == 0) sh_item = atomicAdd(next_item, 1u);
        __syncthreads();
        const u32 item = sh_item;
        if (item >= n_items) return;
        // max_iter + 1 passes let the iteration limit be detected (and reported) in the loop
        fit_one(I, F, data, row_len, meta, gscratch, scratch_mode, starts, boxes, dense,
                use_dense, xs, work, status, fout, poi, memory, max_iter + 1, max_iter, pgtol,
                ftol, pgtol_loose, item, blockIdx.x, &sh_u);
    }
}
