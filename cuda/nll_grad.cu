// Kernel: batch NLL and gradient, one block per item (appended to model.cuh).
// Shared memory: pars[np], grad[np], red[NWARP + 1], flag, then the item's scratch when
// `shared_scratch` (else it lives in `gscratch`, I[SCRATCH] doubles per item).

extern "C" __global__ void nll_grad(const u32* __restrict__ I, const double* __restrict__ F,
                                    const double* __restrict__ pars_in, u32 pars_stride,
                                    const double* __restrict__ data, u32 data_stride,
                                    double* gscratch, u32 shared_scratch, u32 n_items,
                                    double* out) {
    extern __shared__ double smem[];
    const u32 item = blockIdx.x;
    if (item >= n_items) return;
    const u32 np = I[N_PARAMS];
    double* pars = smem;
    double* grad = pars + np;
    double* red = grad + np;
    int* flag = (int*)(red + NWARP + 1);
    double* s = shared_scratch ? red + NWARP + 2 : gscratch + (size_t)item * I[SCRATCH];
    for (u32 p = threadIdx.x; p < np; p += WG) pars[p] = pars_in[(size_t)item * pars_stride + p];
    __syncthreads();
    const double nll = eval(I, F, data + (size_t)item * data_stride, pars, grad, s, red, flag);
    double* o = out + (size_t)item * (1 + np);
    if (threadIdx.x == 0) o[0] = nll;
    for (u32 p = threadIdx.x; p < np; p += WG) o[1 + p] = grad[p];
}
