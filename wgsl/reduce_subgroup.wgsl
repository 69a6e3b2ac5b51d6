// Workgroup reductions through subgroup operations (appended to model.wgsl on a device opened
// with wgpu's SUBGROUP feature, which is what lets naga accept them, when the engine's probe
// found that this adapter's subgroups split a workgroup as `subgroup = local index / size`,
// `lane = local index % size`): a subgroup sum per subgroup, then invocation 0 adds the few
// partial sums in order. Two barriers instead of the tree's log2(WG) + 2. The same contract as reduce_tree.wgsl: every invocation calls them
// in uniform control flow and gets the same value through workgroupUniformLoad.

var<workgroup> wscalar: f32;
// This invocation's lane and its subgroup's size (set by `reduce_setup`).
var<private> sg_lane: u32;
var<private> sg_size: u32;

// Called by every invocation at the top of each entry point, before any branch: with every
// invocation active, the subgroup's size is the count of its invocations and the lane the
// count of those before it.
fn reduce_setup() {
    sg_size = subgroupAdd(1u);
    sg_lane = subgroupExclusiveAdd(1u);
}

fn wsum(t: u32, v: f32) -> f32 {
    let s = subgroupAdd(v);
    if (sg_lane == 0u) { red[t / sg_size] = s; }
    workgroupBarrier();
    if (t == 0u) {
        var tot = red[0];
        for (var i = 1u; i < WG / sg_size; i++) { tot += red[i]; }
        wscalar = tot;
    }
    return workgroupUniformLoad(&wscalar);
}

fn wmax(t: u32, v: f32) -> f32 {
    let s = subgroupMax(v);
    if (sg_lane == 0u) { red[t / sg_size] = s; }
    workgroupBarrier();
    if (t == 0u) {
        var tot = red[0];
        for (var i = 1u; i < WG / sg_size; i++) { tot = max(tot, red[i]); }
        wscalar = tot;
    }
    return workgroupUniformLoad(&wscalar);
}
