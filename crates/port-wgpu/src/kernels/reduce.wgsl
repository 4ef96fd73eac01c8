// reduce: one workgroup per output element; out[j] = sum (or max) of x over the reduced axes.
//
// The kept axes are walked by `offsets` (o.x in out, o.y the first x element of the group);
// the reduced sub-space has w[2] axes and w[3] elements, its extents in w[41..49] and x's
// strides along it in w[53..61]. Thread t accumulates elements t, t + 256, ... in f32, then
// the 256 partials are combined by a tree in workgroup memory: the error grows like
// log2(256) + R/256 roundings rather than R.
//
// Long reductions are split: workgroup g handles output j = g / w[5] and chunk c = g mod w[5]
// (reduced elements [c w[4], (c + 1) w[4])), and stores at o.x + c w[6]; the host then
// reduces those partials in a second pass. This keeps every GPU busy on a single long sum,
// and every thread's loop short (lavapipe stops loops after 65535 iterations).

var<workgroup> part: array<f32, 256>;

// Element offset (relative to the group's first x element) of the r-th reduced element.
fn reduced_offset(r0: u32) -> u32 {
    var r = r0;
    var off = 0u;
    for (var d = pw(2u); d > 0u; d--) {
        let k = d - 1u;
        let n = pw(41u + k);
        off += (r % n) * pw(53u + k);
        r = r / n;
    }
    return off;
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = wid.x + wid.y * nwg.x;
    let j = g / pw(5u);
    let c = g % pw(5u);
    let o = offsets(min(j, pw(0u) - 1u));
    let end = min(pw(3u), (c + 1u) * pw(4u));
    var acc = {{INIT}};
    for (var r = c * pw(4u) + lid.x; r < end; r += WG) {
        acc = {{COMBINE}}(acc, x_load(o.y + reduced_offset(r)));
    }
    part[lid.x] = acc;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h = h / 2u) {
        if (lid.x < h) {
            part[lid.x] = {{COMBINE}}(part[lid.x], part[lid.x + h]);
        }
        workgroupBarrier();
    }
    if (lid.x == 0u && j < pw(0u)) {
        out_store(o.x + c * pw(6u), part[0]);
    }
}
