// Kernel: batch NLL and gradient, one block per item (appended to model.cuh).
// Shared memory: pars[np], grad[np], red[NWARP + 1], flag, then as much of the item's scratch
// as `scratch_mode` says (see scratch_for in model.cuh); the rest is in `gscratch`.

extern "C" __global__ void __launch_bounds__(WG, MINB) nll_grad(const u32* __restrict__ I, const double* __restrict__ F,
                                    const double* __restrict__ pars_in, u32 pars_stride,
                                    const double* __restrict__ data, u32 data_stride,
                                    double* gscratch, u32 scratch_mode, u32 n_items,
                                    double* out) {
    const u32 item = blockIdx.x;
    if (item >= n_items) return;
    const u32 np = I[N_PARAMS];
    double* pars = smem;
    double* grad = pars + np;
    double* red = grad + np;
    int* flag = (int*)(red + NWARP + 1);
    double *s, *dl;
    scratch_for(I, scratch_mode, item, red + NWARP + 2, gscratch, &s, &dl);
    for (u32 p = threadIdx.x; p < np; p += WG) pars[p] = pars_in[(size_t)item * pars_stride + p];
    __syncthreads();
    const double nll = eval(I, F, data + (size_t)item * data_stride, pars, grad, s, dl, red, flag);
    double* o = out + (size_t)item * (1 + np);
    if (threadIdx.x == 0) o[0] = nll;
    for (u32 p = threadIdx.x; p < np; p += WG) o[1 + p] = grad[p];
}
