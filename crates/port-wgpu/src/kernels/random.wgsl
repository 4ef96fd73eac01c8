// random: out[i] = sample (seed, offset + i) of the Philox4x32-10 stream, bit for bit as
// `anychip_port::philox` (Salmon et al., SC'11), with 64-bit counters as (lo, hi) u32 pairs.
//
// Parameters: w[2], w[3] = seed lo, hi; w[4], w[5] = offset lo, hi; w[6] = 0 uniform, 1 normal.
//   uniform: block = philox([lo(s/4), hi(s/4), 0, 0], key)[s % 4]; value = (word >> 8) 2^-24
//   normal:  block = philox([lo(s), hi(s), 1, 0], key); u1 = ((b0 >> 8) + 1) 2^-24,
//            u2 = (b1 >> 8) 2^-24; value = sqrt(-2 ln u1) cos(2 pi u2)

// (hi, lo) of the 64-bit product a * b, from 16-bit halves (WGSL has no 64-bit integers).
fn mul_hi_lo(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let mid = (p00 >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
    let hi = a1 * b1 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u);
    return vec2<u32>(hi, a * b);
}

fn philox(ctr0: vec4<u32>, key0: vec2<u32>) -> vec4<u32> {
    var ctr = ctr0;
    var key = key0;
    for (var round = 0u; round < 10u; round++) {
        if (round > 0u) {
            key += vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
        }
        let p0 = mul_hi_lo(0xD2511F53u, ctr.x);
        let p1 = mul_hi_lo(0xCD9E8D57u, ctr.z);
        ctr = vec4<u32>(p1.x ^ ctr.y ^ key.x, p1.y, p0.x ^ ctr.w ^ key.y, p0.y);
    }
    return ctr;
}

const INV_2_24: f32 = 5.9604644775390625e-8;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = thread_id(gid, nwg);
    if (i >= pw(0u)) {
        return;
    }
    let key = vec2<u32>(pw(2u), pw(3u));
    // s = offset + i as a 64-bit (lo, hi) pair.
    let lo = pw(4u) + i;
    let hi = pw(5u) + select(0u, 1u, lo < i);
    var v: f32;
    if (pw(6u) == 0u) {
        let block = philox(vec4<u32>((lo >> 2u) | (hi << 30u), hi >> 2u, 0u, 0u), key);
        v = f32(block[lo & 3u] >> 8u) * INV_2_24;
    } else {
        let block = philox(vec4<u32>(lo, hi, 1u, 0u), key);
        let u1 = f32((block.x >> 8u) + 1u) * INV_2_24;
        let u2 = f32(block.y >> 8u) * INV_2_24;
        v = sqrt(-2.0 * log_f32(u1)) * cos_f32(6.2831853 * u2);
    }
    out_store(offsets(i).x, v);
}
