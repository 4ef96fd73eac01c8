// Byte-granular copy for the runtime's unaligned write and copy (buffers are u32 words).
//
// Parameters: w[0] = destination words to touch, w[2] = first such word, w[3] = source byte
// offset, w[4] = destination byte offset, w[5] = byte count. One thread owns one destination
// word: bytes inside [dst, dst + len) come from src at the same distance, the rest are kept.

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = thread_id(gid, nwg);
    if (i >= pw(0u)) {
        return;
    }
    let w = pw(2u) + i;
    var word = out_bits(w);
    for (var t = 0u; t < 4u; t++) {
        let at = 4u * w + t;
        if (at >= pw(4u) && at - pw(4u) < pw(5u)) {
            let s = pw(3u) + (at - pw(4u));
            let byte = (a_bits(s >> 2u) >> (8u * (s & 3u))) & 0xffu;
            word = (word & ~(0xffu << (8u * t))) | (byte << (8u * t));
        }
    }
    out_store_bits(w, word);
}
