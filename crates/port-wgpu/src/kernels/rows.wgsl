// gather_rows and scatter_add_rows: indexed rows of a [V, D] table.
//
// Parameters: w[2] = D (row length), w[3] = V (table rows), w[4] = N (indices); strides
// (row, col) of out at w[17..19], of a (table or src) at w[29..31]; idx's stride at w[41].
// An index outside [0, V) is never dereferenced: it sets status[0] and records the index in
// status[1], and the host reports it at the next read or synchronize.

@group(0) @binding(4) var<storage, read_write> status: array<atomic<u32>, 4>;

fn row_index(n: u32) -> u32 {
    let r = bitcast<i32>(b_bits(pw(40u) + n * pw(41u)));
    if (r < 0 || u32(r) >= pw(3u)) {
        atomicOr(&status[0], 1u);
        atomicMax(&status[1], bitcast<u32>(r));
        return 0xffffffffu;
    }
    return u32(r);
}

// out[n, c] = table[idx[n], c], bit for bit: one thread per output element.
@compute @workgroup_size(256)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = thread_id(gid, nwg);
    if (i >= pw(0u)) {
        return;
    }
    let d = pw(2u);
    let n = i / d;
    let c = i % d;
    let r = row_index(n);
    if (r == 0xffffffffu) {
        return;
    }
    out_store_bits(pw(16u) + n * pw(17u) + c * pw(18u), a_bits(pw(28u) + r * pw(29u) + c * pw(30u)));
}

// out[idx[n], c] += src[n, c] for n in [w[5], w[6]): one thread per column walks n in order,
// so repeated indices accumulate in a fixed order (deterministic, no float atomics) and
// columns never collide. The host splits N into such ranges to keep loops short.
@compute @workgroup_size(256)
fn scatter_add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = thread_id(gid, nwg);
    if (c >= pw(2u)) {
        return;
    }
    for (var n = pw(5u); n < pw(6u); n++) {
        let r = row_index(n);
        if (r != 0xffffffffu) {
            let e = pw(16u) + r * pw(17u) + c * pw(18u);
            out_store(e, out_load(e) + a_load(pw(28u) + n * pw(29u) + c * pw(30u)));
        }
    }
}
