// Kernel: batch NLL and gradient, one block per item (appended to model.cuh).
// Shared memory: pars[np], grad[np], red[NWARP + 1], flag, then as much of the item's scratch
// as `scratch_mode` says (see scratch_for in model.cuh); the rest is in `gscratch`. With
// `stage_data`, the item's dataset row (data_stride doubles) follows that scratch: the
// latency kernel reads its inputs from host memory mapped into the device, and one parallel
// copy at the start costs one trip across PCIe where the phases' own reads cost three.

__device__ __forceinline__ void nll_grad_item(const u32* __restrict__ I, const double* __restrict__ F,
                                              const double* pars_in, u32 pars_stride,
                                              const double* data, u32 data_stride,
                                              double* gscratch, u32 scratch_mode, u32 stage_data,
                                              u32 item, double* out) {
    const u32 np = I[N_PARAMS];
    double* pars = smem;
    double* grad = pars + np;
    double* red = grad + np;
    int* flag = (int*)(red + NWARP + 1);
    double *s, *dl;
    scratch_for(I, scratch_mode, item, red + NWARP + 2, gscratch, &s, &dl);
    for (u32 p = threadIdx.x; p < np; p += WG) pars[p] = pars_in[(size_t)item * pars_stride + p];
    const double* row = data + (size_t)item * data_stride;
    if (stage_data) {
        const u32 in_shared = scratch_mode == SCRATCH_MODE_SHARED ? I[SCRATCH]
                              : scratch_mode == SCRATCH_MODE_DLOG_GLOBAL ? I[S_DLOG] : 0u;
        double* staged = red + NWARP + 2 + in_shared;
        for (u32 k = threadIdx.x; k < data_stride; k += WG) staged[k] = row[k];
        row = staged;
    }
    __syncthreads();
    const double nll = eval(I, F, row, pars, grad, s, dl, red, flag);
    double* o = out + (size_t)item * (1 + np);
    if (threadIdx.x == 0) o[0] = nll;
    for (u32 p = threadIdx.x; p < np; p += WG) o[1 + p] = grad[p];
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

// One item whose parameters and dataset row (np + data_stride <= INLINE_CAP doubles) come in
// the launch itself, as a kernel parameter: the latency a differentiable layer sees, without
// the trip across PCIe that reading them from mapped host memory costs (about 3 us on an
// H200). The row is staged in shared memory, as reads of a kernel parameter at different
// addresses are serialised.
#define INLINE_CAP 480
struct Inline {
    double v[INLINE_CAP];
};

extern "C" __global__ void __launch_bounds__(WG, MINB) nll_grad_inline(const u32* __restrict__ I, const double* __restrict__ F,
                                    u32 data_stride, double* gscratch, u32 scratch_mode,
                                    double* out, const __grid_constant__ Inline in) {
    nll_grad_item(I, F, in.v, 0, in.v + I[N_PARAMS], data_stride, gscratch, scratch_mode, 1u, 0u,
                  out);
}
