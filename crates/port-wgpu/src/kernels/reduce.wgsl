// reduce: one workgroup per output element; out[j] = sum (or max) of x over the reduced axes.
//
// The kept axes are walked by `offsets` (o.x in out, o.y the first x element of the group);
// the reduced sub-space has w[2] axes and w[3] elements, its extents in w[41..49] and x's
// strides along it in w[53..61]. Thread t accumulates elements t, t + 256, ... in f32, then
// the 256 partials are combined by a tree in workgroup memory: the error grows like
// log2(256) + R/256 roundings rather than R.

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
    let j = wid.x + wid.y * nwg.x;
    let o = offsets(min(j, pw(0u) - 1u));
    var acc = {{INIT}};
    for (var r = lid.x; r < pw(3u); r += WG) {
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
        out_store(o.x, part[0]);
    }
}
