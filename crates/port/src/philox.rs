//! Counter-based random numbers (Philox4x32-10, Salmon et al., SC'11).
//!
//! Every port must produce exactly these streams so a run is reproducible on any chip:
//! sample `i` of a stream depends only on (`seed`, `i`), never on threads or launch order.
//!
//! - uniform(seed, i): block = philox(counter = [lo(i/4), hi(i/4), 0, 0], key = [lo(seed), hi(seed)]),
//!   word = block[i % 4], value = (word >> 8) * 2^-24, in [0, 1).
//! - normal(seed, i): block = philox(counter = [lo(i), hi(i), 1, 0], key), u1 = ((block[0] >> 8) + 1) * 2^-24
//!   in (0, 1], u2 = (block[1] >> 8) * 2^-24, value = sqrt(-2 ln u1) cos(2 pi u2), computed in f32.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// The Philox4x32 bijection with 10 rounds.
pub fn philox4x32_10(mut ctr: [u32; 4], mut key: [u32; 2]) -> [u32; 4] {
    for round in 0..10 {
        if round > 0 {
            key[0] = key[0].wrapping_add(W0);
            key[1] = key[1].wrapping_add(W1);
        }
        let p0 = (M0 as u64) * (ctr[0] as u64);
        let p1 = (M1 as u64) * (ctr[2] as u64);
        ctr = [((p1 >> 32) as u32) ^ ctr[1] ^ key[0], p1 as u32, ((p0 >> 32) as u32) ^ ctr[3] ^ key[1], p0 as u32];
    }
    ctr
}

fn key(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

const INV_2_24: f32 = 1.0 / 16_777_216.0;

/// Sample `i` of the uniform stream `seed`, in [0, 1).
pub fn uniform(seed: u64, i: u64) -> f32 {
    let block = i / 4;
    let w = philox4x32_10([block as u32, (block >> 32) as u32, 0, 0], key(seed));
    (w[(i % 4) as usize] >> 8) as f32 * INV_2_24
}

/// Sample `i` of the standard normal stream `seed`.
pub fn normal(seed: u64, i: u64) -> f32 {
    let w = philox4x32_10([i as u32, (i >> 32) as u32, 1, 0], key(seed));
    let u1 = ((w[0] >> 8) + 1) as f32 * INV_2_24;
    let u2 = (w[1] >> 8) as f32 * INV_2_24;
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn known_answer_vectors() {
        // Random123 kat_vectors for philox4x32_10.
        assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
        assert_eq!(philox4x32_10([u32::MAX; 4], [u32::MAX; 2]), [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
    }
    #[test]
    fn streams_look_right() {
        let n = 20000;
        let u: Vec<f32> = (0..n).map(|i| uniform(7, i)).collect();
        assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = u.iter().sum::<f32>() / n as f32;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        let z: Vec<f32> = (0..n).map(|i| normal(7, i)).collect();
        let zm = z.iter().sum::<f32>() / n as f32;
        let zv = z.iter().map(|x| (x - zm) * (x - zm)).sum::<f32>() / n as f32;
        assert!(zm.abs() < 0.03 && (zv - 1.0).abs() < 0.05, "{zm} {zv}");
        assert_ne!(uniform(7, 0), uniform(8, 0));
    }
}
