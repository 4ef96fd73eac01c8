// Shared by every kernel: the per-dispatch parameter block, the strided index walk, and the
// bit-level helpers that keep IEEE special values exact whatever the driver's float mode.
//
// Parameter block (64 u32 words, one 256-byte uniform slice per dispatch):
//   w[0]        number of threads' worth of work (elements, outputs, words...)
//   w[1]        rank of the walked index space (<= 8, after merging contiguous axes)
//   w[2..8]     kernel-specific scalars (f32 stored as bits)
//   w[8..16]    extents of the walked index space
//   view v = 0..3 (out, a, b, c): w[16 + 12 v] element offset, w[17 + 12 v ..][..8] strides
struct Params {
    w: array<vec4<u32>, 16>,
}

@group(0) @binding(0) var<uniform> P: Params;

const WG: u32 = 256u;

fn pw(i: u32) -> u32 {
    return P.w[i >> 2u][i & 3u];
}

fn pf(i: u32) -> f32 {
    return bitcast<f32>(pw(i));
}

// Linear thread id over a 2-D grid of 1-D workgroups (the grid is 2-D only because one
// dimension is capped at 65535 workgroups).
fn thread_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

// Buffer element index of the i-th element, in row-major order, of each of the four views:
// peel coordinates off the last axis first, c_d = i mod n_d, i = i div n_d, and add c_d s_d.
fn offsets(i: u32) -> vec4<u32> {
    var o = vec4<u32>(pw(16u), pw(28u), pw(40u), pw(52u));
    var r = i;
    for (var d = pw(1u); d > 0u; d--) {
        let k = d - 1u;
        let n = pw(8u + k);
        let c = r % n;
        r = r / n;
        o += c * vec4<u32>(pw(17u + k), pw(29u + k), pw(41u + k), pw(53u + k));
    }
    return o;
}

// NaN tests on the bits: a compiler allowed to assume no NaN cannot fold these away.
fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

fn nan_f32() -> f32 {
    return bitcast<f32>(0x7fc00000u);
}

fn inf_f32() -> f32 {
    return bitcast<f32>(0x7f800000u);
}

// IEEE 754-2019 maximum / minimum: NaN if either is NaN; +0 > -0.
fn maximum(a: f32, b: f32) -> f32 {
    if (is_nan(a) || is_nan(b)) {
        return nan_f32();
    }
    if (a == b) {
        return select(a, b, (bitcast<u32>(a) & 0x80000000u) != 0u);
    }
    return select(b, a, a > b);
}

fn minimum(a: f32, b: f32) -> f32 {
    if (is_nan(a) || is_nan(b)) {
        return nan_f32();
    }
    if (a == b) {
        return select(b, a, (bitcast<u32>(a) & 0x80000000u) != 0u);
    }
    return select(b, a, a < b);
}

// f32 -> bf16 bits, round to nearest even: add 0x7fff plus the lowest kept bit, then truncate.
// NaN keeps its top bits and is made quiet (the contract's rule).
fn f32_to_bf16(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    if ((b & 0x7fffffffu) > 0x7f800000u) {
        return (b >> 16u) | 0x40u;
    }
    return (b + 0x7fffu + ((b >> 16u) & 1u)) >> 16u;
}

// f32 -> i32 truncating toward zero, saturating out of range, NaN -> 0 (Rust's `as`).
fn f32_to_i32(x: f32) -> i32 {
    if (is_nan(x)) {
        return 0;
    }
    if (x >= 2147483648.0) {
        return 2147483647;
    }
    if (x < -2147483648.0) {
        return -2147483647 - 1;
    }
    return i32(x);
}

fn add_f32(a: f32, b: f32) -> f32 {
    return a + b;
}
