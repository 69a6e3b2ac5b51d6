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
// synchronisation (on an H200, tHu: 40 us a call with a launch each, 32-33 us served; the
// evaluation itself takes about 25 us either way, BENCHMARKS.md). The host and the block talk through
// `mailbox`, three counters in page-locked host memory mapped into the device: [0] the
// request (the host's), [1] the last request answered, [2] the generation of the last server
// that left for lack of work (the block's). Inputs (parameters, then the dataset row) are read
// from mapped host memory at `in`, the NLL and gradient written to mapped host memory at `out`.

#define SERVE_STOP 0xffffffffffffffffull

__device__ __forceinline__ u64 load_acquire_sys(const u64* p) {
    u64 v;
#if __CUDA_ARCH__ >= 700
    asm volatile("ld.acquire.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
#else
    v = *(volatile const u64*)p;
    __threadfence_system();
#endif
    return v;
}

__device__ __forceinline__ void store_release_sys(u64* p, u64 v) {
#if __CUDA_ARCH__ >= 700
    asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
#else
    __threadfence_system();
    *(volatile u64*)p = v;
#endif
}

__device__ __forceinline__ u64 global_ns() {
    u64 t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

// Serves requests until `idle_ns` pass without one (it then writes `generation` to
// mailbox[2] and returns) or the request is SERVE_STOP. `served` is the last request the host
// has had answered: a request other than it is new work.
extern "C" __global__ void __launch_bounds__(WG, MINB) nll_grad_serve(const u32* __restrict__ I, const double* __restrict__ F,
                                    u32 data_stride, double* gscratch, u32 scratch_mode,
                                    u64* mailbox, const double* in, double* out, u64 served,
                                    u64 idle_ns, u64 generation) {
    const u32 np = I[N_PARAMS];
    const ItemSmem m = item_smem(I, gscratch, scratch_mode, 0u);
    for (;;) {
        if (threadIdx.x == 0) {
            const u64 since = global_ns();
            u64 req;
            do {
                req = load_acquire_sys(mailbox);
            } while (req == served && global_ns() - since < idle_ns);
            if (req == served) store_release_sys(mailbox + 2, generation);
            m.red[0] = __longlong_as_double((long long)req);
        }
        __syncthreads();
        // eval writes `red` only behind barriers that every thread reaches after this read
        const u64 req = (u64)__double_as_longlong(m.red[0]);
        if (req == served || req == SERVE_STOP) return;
        served = req;
        // fetched again from host memory every time (__ldcv: no cached copy is trusted)
        for (u32 p = threadIdx.x; p < np; p += WG) m.pars[p] = __ldcv(in + p);
        for (u32 k = threadIdx.x; k < data_stride; k += WG) m.staged[k] = __ldcv(in + np + k);
        __syncthreads();
        const double nll = eval(I, F, m.staged, m.pars, m.grad, m.s, m.dl, m.red, m.flag);
        if (threadIdx.x == 0) out[0] = nll;
        for (u32 p = threadIdx.x; p < np; p += WG) out[1 + p] = m.grad[p];
        // one release by one thread after the barrier publishes the whole block's answer
        // (release is cumulative over what the barrier ordered before it); a system fence on
        // every thread would wait for each one's writes to cross the bus
        __syncthreads();
        if (threadIdx.x == 0) store_release_sys(mailbox + 1, req);
    }
}
