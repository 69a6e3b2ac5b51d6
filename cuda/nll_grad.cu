// Kernels: batch NLL and gradient, one block per item, and the latency server, one block that
// evaluates a session's single items as they come (appended to model.cuh).
// Shared memory: pars[np], grad[np], red[NWARP + 1], flag, then as much of the item's scratch
// as `scratch_mode` says (see scratch_for in model.cuh); the rest is in `gscratch`. With
// `stage_data`, the item's dataset row (data_stride doubles) follows that scratch: the
// latency kernels read their inputs from host memory mapped into the device, and one parallel
// copy at the start costs one trip across PCIe where the phases' own reads cost three.

// Where an item's arrays lie in the block's shared memory (and its scratch, wherever it is).
struct ItemSmem {
    double* pars;
    double* grad;
    double* red;
    int* flag;
    double* s;
    double* dl;
    double* staged;
};

__device__ __forceinline__ ItemSmem item_smem(const u32* __restrict__ I, double* gscratch,
                                              u32 scratch_mode, u32 item) {
    ItemSmem m;
    const u32 np = I[N_PARAMS];
    m.pars = smem;
    m.grad = m.pars + np;
    m.red = m.grad + np;
    m.flag = (int*)(m.red + NWARP + 1);
    scratch_for(I, scratch_mode, item, m.red + NWARP + 2, gscratch, &m.s, &m.dl);
    const u32 in_shared = scratch_mode == SCRATCH_MODE_SHARED ? I[SCRATCH]
                          : scratch_mode == SCRATCH_MODE_DLOG_GLOBAL ? I[S_DLOG] : 0u;
    m.staged = m.red + NWARP + 2 + in_shared;
    return m;
}

__device__ __forceinline__ void nll_grad_item(const u32* __restrict__ I, const double* __restrict__ F,
                                              const double* pars_in, u32 pars_stride,
                                              const double* data, u32 data_stride,
                                              double* gscratch, u32 scratch_mode, u32 stage_data,
                                              u32 item, double* out) {
    const u32 np = I[N_PARAMS];
    const ItemSmem m = item_smem(I, gscratch, scratch_mode, item);
    for (u32 p = threadIdx.x; p < np; p += WG) m.pars[p] = pars_in[(size_t)item * pars_stride + p];
    const double* row = data + (size_t)item * data_stride;
    if (stage_data) {
        for (u32 k = threadIdx.x; k < data_stride; k += WG) m.staged[k] = row[k];
        row = m.staged;
    }
    __syncthreads();
    const double nll = eval(I, F, row, m.pars, m.grad, m.s, m.dl, m.red, m.flag);
    double* o = out + (size_t)item * (1 + np);
    if (threadIdx.x == 0) o[0] = nll;
    for (u32 p = threadIdx.x; p < np; p += WG) o[1 + p] = m.grad[p];
}

extern "C" __global__ void __launch_bounds__(WG, MINB) nll_grad(const u32* __restrict__ I, const double* __restrict__ F,
                                    const double* __restrict__ pars_in, u32 pars_stride,
                                    const double* __restrict__ data, u32 data_stride,
                                    double* gscratch, u32 scratch_mode, u32 stage_data, u32 n_items,
                                    double* out) {
    const u32 item = blockIdx.x;
    if (item >= n_items) return;
    nll_grad_item(I, F, pars_in, pars_stride, data, data_stride, gscratch, scratch_mode, stage_data,
                  item, out);
}

// ---- The latency server (src/device/cuda.rs, `Server`): one block that stays resident while
// a session's single evaluations keep coming, so that a call costs no launch and no
// synchronisation (BENCHMARKS.md has the figures). Inputs and answers cross the bus as "LL"
// words, after NCCL's low-latency protocol: each 8-byte word carries a 32-bit half of a
// double and, above it, the low 32 bits of the request's number. A word crosses PCIe whole,
// so a word that shows the expected number holds this request's half: the block polls the
// inputs themselves (seeing a request and reading it are one trip across the bus, not two),
// and the host polls the answer's words (no fence and no separate flag after them).
// `mailbox` holds two counters in page-locked host memory mapped into the device: [0] the
// host's (SERVE_STOP asks the server to leave), [1] the generation of the last server that
// left for lack of work (the block's).

#define SERVE_STOP 0xffffffffffffffffull

__device__ __forceinline__ u64 load_relaxed_sys(const u64* p) {
    u64 v;
#if __CUDA_ARCH__ >= 700
    asm volatile("ld.relaxed.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
#else
    v = *(volatile const u64*)p;
#endif
    return v;
}

__device__ __forceinline__ void store_relaxed_sys(u64* p, u64 v) {
#if __CUDA_ARCH__ >= 700
    asm volatile("st.relaxed.sys.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
#else
    *(volatile u64*)p = v;
#endif
}

__device__ __forceinline__ u64 global_ns() {
    u64 t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

// A double as its two LL words (low half first), tagged with `flag`.
__device__ __forceinline__ void store_ll(u64* p, double v, u32 flag) {
    const u64 bits = (u64)__double_as_longlong(v), tag = (u64)flag << 32;
    store_relaxed_sys(p, (bits & 0xffffffffull) | tag);
    store_relaxed_sys(p + 1, (bits >> 32) | tag);
}

// Serves requests served + 1, served + 2, ... until `idle_ns` pass without one (it then
// writes `generation` to mailbox[1] and returns) or the host asks it to stop. `in` holds
// 2 (np + data_stride) LL words (the parameters, then the dataset row), `out` 2 (1 + np)
// (the NLL, then the gradient).
extern "C" __global__ void __launch_bounds__(WG, MINB) nll_grad_serve(const u32* __restrict__ I, const double* __restrict__ F,
                                    u32 data_stride, double* gscratch, u32 scratch_mode,
                                    u64* mailbox, const u64* in, u64* out, u64 served,
                                    u64 idle_ns, u64 generation) {
    const u32 np = I[N_PARAMS];
    const ItemSmem m = item_smem(I, gscratch, scratch_mode, 0u);
    const u32 par_words = 2 * np, words = 2 * (np + data_stride);
    u32* par_halves = (u32*)m.pars;
    u32* data_halves = (u32*)m.staged;
    // free while the block polls: raised by thread 0 for the others to leave (1 for lack of
    // work, 2 at the host's request)
    volatile int* const leave_flag = (volatile int*)m.red;
    for (;;) {
        const u32 want = (u32)(served + 1);
        const u64 since = global_ns();
        if (threadIdx.x == 0) *leave_flag = 0;
        __syncthreads();
        // Each thread polls its own words until they are this request's, with no barrier a
        // round (a thread's words, once current, stay so until the answer). Thread 0 alone
        // looks at the mailbox and the clock, every 8th round of its own, until its word is
        // current (the request then is on its way). Measured on the H200 (BENCHMARKS.md): two
        // barriers a round cost 3 µs of the complex model's 11.7 µs call and 1.5 of tHu's
        // 30.5; every thread reading the mailbox each round made tHu's call 53 µs.
        bool ready = false;
        for (u32 round = 1;; round++) {
            ready = true;
            for (u32 k = threadIdx.x; k < words; k += WG) {
                const u64 v = load_relaxed_sys(in + k);
                if ((u32)(v >> 32) != want) ready = false;
                else if (k < par_words) par_halves[k] = (u32)v;
                else data_halves[k - par_words] = (u32)v;
            }
            if (ready) break;
            if (threadIdx.x == 0 && round % 8 == 0) {
                const bool stop = load_relaxed_sys(mailbox) == SERVE_STOP;
                if (stop) *leave_flag = 2;
                else if (global_ns() - since >= idle_ns) *leave_flag = 1;
            }
            if (*leave_flag) break;
        }
        // the barrier also publishes the halves
        if (!__syncthreads_and(ready)) {
            if (threadIdx.x == 0 && *leave_flag == 1) store_relaxed_sys(mailbox + 1, generation);
            return;
        }
        served += 1;
        const double nll = eval(I, F, m.staged, m.pars, m.grad, m.s, m.dl, m.red, m.flag);
        // eval's last barrier came after every write to grad
        const u32 flag = (u32)served;
        if (threadIdx.x == 0) store_ll(out, nll, flag);
        for (u32 p = threadIdx.x; p < np; p += WG) store_ll(out + 2 + 2 * p, m.grad[p], flag);
    }
}
