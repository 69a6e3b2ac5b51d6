// Entry point: batch NLL and gradient, one workgroup per item (appended to model.wgsl).

@group(0) @binding(2) var<storage, read> pars: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    reduce_setup();
    let item = wid.x;
    let t = lid.x;
    if (item >= m(N_ITEMS)) { return; }
    let np = m(N_PARAMS);
    for (var p = t; p < np; p += WG) { wpars[p] = pars[item * np + p]; }
    workgroupBarrier();
    eval(item, t);
    let o0 = item * (1u + np);
    if (t == 0u) { out[o0] = wnll; }
    for (var p = t; p < np; p += WG) { out[o0 + 1u + p] = wgrad[p]; }
}
