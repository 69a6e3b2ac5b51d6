// Workgroup reductions by a tree in workgroup memory (appended to model.wgsl when the adapter
// has no usable subgroup operations; reduce_subgroup.wgsl otherwise). Every invocation calls
// them in uniform control flow and gets the same value, read through workgroupUniformLoad so
// that callers may branch on it around barriers. A fixed order: results do not depend on
// timing.

var<workgroup> wscalar: f32;

fn reduce_setup() {}

fn wsum(t: u32, v: f32) -> f32 {
    red[t] = v;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h = h / 2u) {
        if (t < h) { red[t] += red[t + h]; }
        workgroupBarrier();
    }
    if (t == 0u) { wscalar = red[0]; }
    return workgroupUniformLoad(&wscalar);
}

fn wmax(t: u32, v: f32) -> f32 {
    red[t] = v;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h = h / 2u) {
        if (t < h) { red[t] = max(red[t], red[t + h]); }
        workgroupBarrier();
    }
    if (t == 0u) { wscalar = red[0]; }
    return workgroupUniformLoad(&wscalar);
}
