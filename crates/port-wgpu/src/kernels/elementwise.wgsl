// One output element per thread: fill, cast, copy_strided, unary, binary, compare, select.
//
// Thread i walks to element i of every view (see `offsets`): o.x in out, o.y in a, o.z in b,
// o.w in c. The body, generated per op and dtype, is one line such as
//   out_store(o.x, exp_f32(a_load(o.y)));           out[i] = exp(a[i])
//   out_store(o.x, maximum(a_load(o.y), b_load(o.z)));  out[i] = max(a[i], b[i])
// Loads widen to f32 and stores round to the output dtype, so math is always f32.

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = thread_id(gid, nwg);
    if (i >= pw(0u)) {
        return;
    }
    let o = offsets(i);
    {{BODY}}
}
