// Probe: each invocation of one workgroup writes its subgroup lane and subgroup size, so that
// the engine can check, before it relies on it, that subgroups split a workgroup as
// reduce_subgroup.wgsl assumes.

override WG: u32 = 64u;

@group(0) @binding(0) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(WG)
fn main(
    @builtin(local_invocation_index) t: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) size: u32,
) {
    out[2u * t] = lane;
    out[2u * t + 1u] = size;
}
