//! Vectorisable f32 exp, and the activations built on it.
//!
//! std's `f32::exp` is a call into libm per element, which the compiler cannot vectorise; the
//! softmax over a 50257-word vocabulary does two of them per logit. This version (Cephes'
//! expf polynomial, about 1 ulp on the reduced range) is straight-line code, so loops over
//! slices of it compile to SIMD on any x86-64 baseline.

/// exp(x) to about 2 ulp; +inf -> inf, -inf and x < -87.3 -> 0 (subnormals flush), NaN -> NaN.
#[inline(always)]
#[allow(clippy::manual_clamp)] // max/min on purpose: see below
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts so n * C1 is exact and r keeps full precision.
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer with SSE2 alone.
    const ROUND: f32 = 12_582_912.0;
    // max/min rather than clamp: they compile to plain SIMD min/max (NaN is restored below).
    let xc = x.max(-87.3).min(88.7);
    let n = (xc * LOG2E + ROUND) - ROUND;
    let r = xc - n * C1 - n * C2;
    // exp(r) on |r| <= ln2/2.
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    let e = p * r * r + r + 1.0;
    // SAFETY: n is an integer in [-126, 128] (x was clamped), so it fits an i32; the unchecked
    // conversion avoids the saturating `as` sequence that blocks vectorisation.
    let scale = f32::from_bits(((unsafe { n.to_int_unchecked::<i32>() } + 127) as u32) << 23);
    let y = e * scale;
    let y = if x > 88.72 { f32::INFINITY } else { y };
    let y = if x < -87.3 { 0.0 } else { y };
    if x.is_nan() {
        x
    } else {
        y
    }
}

/// Define a slice kernel compiled three times on x86-64 (AVX-512, AVX2+FMA, baseline) and picked
/// at run time by the dispatch level ([`crate::isa::level`]), so release builds without
/// `-C target-cpu` still use the machine's widest vectors. On aarch64 the baseline is NEON, so
/// the one compiled body serves both `neon` and `portable`.
macro_rules! multiversion {
    ($(#[$m:meta])* pub fn $name:ident($($a:ident: $t:ty),*) -> $r:ty $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        pub fn $name($($a: $t),*) -> $r {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body($($a: $t),*) -> $r $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v4($($a: $t),*) -> $r { body($($a),*) }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v3($($a: $t),*) -> $r { body($($a),*) }
                match crate::isa::level() {
                    // SAFETY: the level is one the CPU supports (crate::isa).
                    crate::isa::Isa::Avx512 => return unsafe { v4($($a),*) },
                    // SAFETY: as above.
                    crate::isa::Isa::Avx2 => return unsafe { v3($($a),*) },
                    crate::isa::Isa::Neon | crate::isa::Isa::Portable => {}
                }
            }
            body($($a),*)
        }
    };
}

/// Run the hand-written kernel of the dispatch level ([`crate::isa::level`]): `$v4` (in
/// [`crate::math_avx512`]), `$v3` (in [`crate::math_avx2`]) or `$neon` (in
/// [`crate::math_neon`]), else the portable expression.
macro_rules! by_level {
    ($v4:expr, $v3:expr, $neon:expr, $portable:expr) => {{
        #[cfg(target_arch = "x86_64")]
        match crate::isa::level() {
            crate::isa::Isa::Avx512 => {
                // SAFETY: the level is one the CPU supports (crate::isa). (Unused where the
                // level has no hand kernel and `$v4` is the portable call.)
                #[allow(unused_unsafe)]
                let r = unsafe { $v4 };
                return r;
            }
            // SAFETY: as above.
            crate::isa::Isa::Avx2 => return unsafe { $v3 },
            crate::isa::Isa::Neon | crate::isa::Isa::Portable => {}
        }
        #[cfg(target_arch = "aarch64")]
        if crate::isa::level() == crate::isa::Isa::Neon {
            // SAFETY: the level is one the CPU supports (crate::isa: NEON is aarch64's baseline).
            return unsafe { $neon };
        }
        $portable
    }};
}

/// The bf16 bits of `v` (in the low 16 bits): round to nearest even, NaN kept quiet, exactly
/// `anychip_port::f32_to_bf16`, but without branches so that the slice kernels using it
/// vectorise (inlined into each of their ISA versions).
#[inline(always)]
fn bf16_bits(v: f32) -> u32 {
    let b = v.to_bits();
    let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16;
    let quiet = (b >> 16) | 0x0040;
    if v.is_nan() {
        quiet
    } else {
        rounded
    }
}

multiversion! {
    /// dst[i] = x[i] rounded to bf16 bits, nearest even, NaN kept quiet: exactly
    /// `anychip_port::f32_to_bf16`, written without branches so it vectorises (mixed precision
    /// casts every weight and activation entering a matmul, hundreds of millions per step).
    pub fn f32_to_bf16_slice(x: &[f32], dst: &mut [u16]) -> () {
        for (d, &v) in dst.iter_mut().zip(x) {
            *d = bf16_bits(v) as u16;
        }
    }
}

multiversion! {
    /// x[i] rounded to the nearest bf16 value (ties to even, NaN kept quiet) and widened back
    /// in place: the same rounding as [`f32_to_bf16_slice`], for an operand that a bf16
    /// product takes from an f32 intermediate (attention's probabilities).
    pub fn round_bf16_inplace(x: &mut [f32]) -> () {
        for v in x.iter_mut() {
            *v = f32::from_bits(bf16_bits(*v) << 16);
        }
    }
}

multiversion! {
    /// Maximum of a slice; NaN anywhere gives NaN, empty gives -inf (16 lanes, vectorised).
    pub fn max_slice(x: &[f32]) -> f32 {
        let mut acc = [f32::NEG_INFINITY; 16];
        let mut nan = [false; 16];
        let mut xc = x.chunks_exact(16);
        for c in &mut xc {
            for l in 0..16 {
                nan[l] |= c[l].is_nan();
                acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
            }
        }
        let mut m = f32::NEG_INFINITY;
        let mut any_nan = nan.iter().any(|&b| b);
        for &v in acc.iter().chain(xc.remainder()) {
            any_nan |= v.is_nan();
            m = if v > m { v } else { m };
        }
        if any_nan {
            f32::NAN
        } else {
            m
        }
    }
}

/// out[i] = exp(x[i] - shift); returns the sum of out.
pub fn exp_shift_sum(x: &[f32], shift: f32, out: &mut [f32]) -> f32 {
    by_level!(
        exp_shift_sum_portable(x, shift, out),
        crate::math_avx2::exp_shift_sum(x, shift, out),
        crate::math_neon::exp_shift_sum(x, shift, out),
        exp_shift_sum_portable(x, shift, out)
    )
}

/// sum_i exp(x[i] - shift), without writing anything.
pub fn sum_exp_shift(x: &[f32], shift: f32) -> f32 {
    by_level!(
        sum_exp_shift_portable(x, shift),
        crate::math_avx2::sum_exp_shift(x, shift),
        crate::math_neon::sum_exp_shift(x, shift),
        sum_exp_shift_portable(x, shift)
    )
}

/// out[i] = scale * exp(x[i] - shift).
pub fn scaled_exp_shift(x: &[f32], shift: f32, scale: f32, out: &mut [f32]) {
    by_level!(
        scaled_exp_shift_portable(x, shift, scale, out),
        crate::math_avx2::scaled_exp_shift(x, shift, scale, out),
        crate::math_neon::scaled_exp_shift(x, shift, scale, out),
        scaled_exp_shift_portable(x, shift, scale, out)
    )
}

multiversion! {
    /// out[i] = exp(x[i] - shift); returns the sum of out (16 lanes, so it vectorises).
    pub fn exp_shift_sum_portable(x: &[f32], shift: f32, out: &mut [f32]) -> f32 {
        let mut acc = [0f32; 16];
        let (mut xc, mut oc) = (x.chunks_exact(16), out.chunks_exact_mut(16));
        for (c, o) in (&mut xc).zip(&mut oc) {
            for l in 0..16 {
                o[l] = exp(c[l] - shift);
                acc[l] += o[l];
            }
        }
        let mut tail = 0f32;
        for (&c, o) in xc.remainder().iter().zip(oc.into_remainder()) {
            *o = exp(c - shift);
            tail += *o;
        }
        acc.iter().sum::<f32>() + tail
    }
}

multiversion! {
    /// sum_i exp(x[i] - shift), without writing anything, in portable code.
    pub fn sum_exp_shift_portable(x: &[f32], shift: f32) -> f32 {
        let mut acc = [0f32; 16];
        let mut xc = x.chunks_exact(16);
        for c in &mut xc {
            for l in 0..16 {
                acc[l] += exp(c[l] - shift);
            }
        }
        acc.iter().sum::<f32>() + xc.remainder().iter().map(|&c| exp(c - shift)).sum::<f32>()
    }
}

/// x[i] = exp(x[i] - shift) in place; returns the new sum.
pub fn exp_shift_sum_inplace(x: &mut [f32], shift: f32) -> f32 {
    by_level!(
        crate::math_avx512::exp_shift_sum_inplace(x, shift),
        crate::math_avx2::exp_shift_sum_inplace(x, shift),
        crate::math_neon::exp_shift_sum_inplace(x, shift),
        exp_shift_sum_inplace_portable(x, shift)
    )
}

multiversion! {
    /// x[i] = exp(x[i] - shift) in place; returns the new sum, in portable code.
    pub fn exp_shift_sum_inplace_portable(x: &mut [f32], shift: f32) -> f32 {
        let mut acc = [0f32; 16];
        let mut xc = x.chunks_exact_mut(16);
        for c in &mut xc {
            for l in 0..16 {
                c[l] = exp(c[l] - shift);
                acc[l] += c[l];
            }
        }
        let mut tail = 0f32;
        for c in xc.into_remainder() {
            *c = exp(*c - shift);
            tail += *c;
        }
        acc.iter().sum::<f32>() + tail
    }
}

multiversion! {
    /// out[i] = scale * exp(x[i] - shift), in portable code.
    pub fn scaled_exp_shift_portable(x: &[f32], shift: f32, scale: f32, out: &mut [f32]) -> () {
        for (o, &c) in out.iter_mut().zip(x) {
            *o = scale * exp(c - shift);
        }
    }
}

/// tanh(x) = 1 - 2 / (exp(2x) + 1): saturates cleanly to +-1 and keeps NaN.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

/// The logistic sigmoid 1 / (1 + exp(-x)).
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

multiversion! {
    /// One normalisation row: returns (mean, rstd) and writes y = (x - mean) rstd w + b.
    /// `center` = false gives RMSNorm (mean taken as 0). w and b are always given (ones and
    /// zeros when the layer has none) so the loop has no branch.
    pub fn norm_row_fwd(x: &[f32], w: &[f32], b: &[f32], center: bool, eps: f32, y: &mut [f32]) -> (f32, f32) {
        let d = x.len() as f32;
        let mu = if center { lanes_sum(x) / d } else { 0.0 };
        let mut acc = [0f32; 16];
        let mut xc = x.chunks_exact(16);
        for c in &mut xc {
            for l in 0..16 {
                let t = c[l] - mu;
                acc[l] += t * t;
            }
        }
        let var = (acc.iter().sum::<f32>() + xc.remainder().iter().map(|v| (v - mu) * (v - mu)).sum::<f32>()) / d;
        let rs = 1.0 / (var + eps).sqrt();
        for i in 0..y.len().min(x.len()).min(w.len()).min(b.len()) {
            y[i] = (x[i] - mu) * rs * w[i] + b[i];
        }
        (mu, rs)
    }
}

multiversion! {
    /// One normalisation row backward, xhat = (x - mu) rs and g = dy w:
    /// dx = rs (g - mean(g) [if center] - xhat mean(g xhat)); pw += dy xhat; pb += dy.
    pub fn norm_row_bwd(x: &[f32], dy: &[f32], w: &[f32], mu: f32, rs: f32, center: bool, dx: &mut [f32], pw: &mut [f32], pb: &mut [f32]) -> () {
        let n = x.len().min(dy.len()).min(w.len()).min(dx.len());
        let (mut sg, mut sgx) = ([0f32; 16], [0f32; 16]);
        let full = n / 16 * 16;
        for c in (0..full).step_by(16) {
            for l in 0..16 {
                let xh = (x[c + l] - mu) * rs;
                let g = dy[c + l] * w[c + l];
                sg[l] += g;
                sgx[l] += g * xh;
            }
        }
        for i in full..n {
            let xh = (x[i] - mu) * rs;
            let g = dy[i] * w[i];
            sg[0] += g;
            sgx[0] += g * xh;
        }
        if !pw.is_empty() {
            for i in 0..n.min(pw.len()).min(pb.len()) {
                pw[i] += dy[i] * (x[i] - mu) * rs;
                pb[i] += dy[i];
            }
        }
        let d = n as f32;
        let mg = if center { sg.iter().sum::<f32>() / d } else { 0.0 };
        let mgx = sgx.iter().sum::<f32>() / d;
        for i in 0..n {
            let xh = (x[i] - mu) * rs;
            dx[i] = rs * (dy[i] * w[i] - mg - xh * mgx);
        }
    }
}

multiversion! {
    /// The MoE router's probabilities for rows of x (`[rows, d]`, back to back) and w `[E, d]`
    /// into z `[rows, E]`: logits z_e = <x, w_e>, four experts at a time (each 16 lanes of x
    /// loaded once for four accumulators), then [`softmax_rows`] over the block, so its exp
    /// runs on whole vectors rather than on E values at a time.
    pub fn router_probs(x: &[f32], w: &[f32], d: usize, z: &mut [f32]) -> () {
        let e = w.len() / d.max(1);
        for (xr, zr) in x.chunks_exact(d.max(1)).zip(z.chunks_exact_mut(e.max(1))) {
            let mut quads = zr.chunks_exact_mut(4);
            for (q, zq) in (&mut quads).enumerate() {
                let w4: [&[f32]; 4] = std::array::from_fn(|g| &w[(4 * q + g) * d..][..d]);
                zq.copy_from_slice(&dots4(xr, w4));
            }
            for (k, ze) in quads.into_remainder().iter_mut().enumerate() {
                *ze = crate::elem::dot(xr, &w[(e / 4 * 4 + k) * d..][..d]);
            }
        }
        softmax_rows(z, e);
    }
}

/// Softmax of each row of `e` values in z (rows back to back): the row max is shifted out,
/// then one exp over the whole slice, then each row is divided by its sum. A row of -inf gives
/// zeros; a NaN in a row makes the row NaN (inlined into the multiversioned callers).
#[inline(always)]
fn softmax_rows(z: &mut [f32], e: usize) {
    for r in z.chunks_exact_mut(e.max(1)) {
        let m = r.iter().fold(f32::NEG_INFINITY, |m, &v| if v > m || v.is_nan() { v } else { m });
        let m = if m == f32::NEG_INFINITY { 0.0 } else { m };
        r.iter_mut().for_each(|v| *v -= m);
    }
    z.iter_mut().for_each(|v| *v = exp(*v));
    for r in z.chunks_exact_mut(e.max(1)) {
        let s: f32 = r.iter().sum();
        // s >= 1 for a finite row (its max gives exp(0)); 0 only for a row of -inf.
        let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
        r.iter_mut().for_each(|v| *v *= inv);
    }
}

multiversion! {
    /// One row of the MoE router's backward, from that row's dz `[E]`: dx = sum_e dz[e] w_e
    /// (skipped when dx is empty) and dw_e += dz[e] x for every e (skipped when dw is empty, and
    /// x may be then); w and dw are `[E, D]`, row-major.
    pub fn router_row_bwd(x: &[f32], w: &[f32], dz: &[f32], dx: &mut [f32], dw: &mut [f32]) -> () {
        let d = w.len() / dz.len().max(1);
        if !dx.is_empty() {
            // 64 lanes of dx at a time, summed over the experts in registers (four AVX-512 ones).
            let full = d / 64 * 64;
            for c in (0..full).step_by(64) {
                let mut acc = [0f32; 64];
                for (e, &g) in dz.iter().enumerate() {
                    let we: &[f32; 64] = w[e * d + c..][..64].try_into().unwrap();
                    for l in 0..64 {
                        acc[l] += g * we[l];
                    }
                }
                dx[c..c + 64].copy_from_slice(&acc);
            }
            for i in full..d {
                dx[i] = dz.iter().enumerate().fold(0.0, |a, (e, &g)| a + g * w[e * d + i]);
            }
        }
        if !dw.is_empty() {
            for (e, &g) in dz.iter().enumerate() {
                dw[e * d..][..d].iter_mut().zip(x).for_each(|(p, &v)| *p += g * v);
            }
        }
    }
}

/// <x, w_g> for four rows w_g at once: four accumulators of 16 lanes (each 16 of x loaded once
/// for all four), tree-reduced at the end (inlined into the multiversioned callers).
#[inline(always)]
fn dots4(x: &[f32], w: [&[f32]; 4]) -> [f32; 4] {
    let n = x.len() / 16 * 16;
    let ([mut a0, mut a1, mut a2, mut a3], [w0, w1, w2, w3]) = ([[0f32; 16]; 4], w.map(|r| &r[..x.len()]));
    for c in (0..n).step_by(16) {
        let lanes = |v: &[f32]| -> [f32; 16] { v[c..c + 16].try_into().unwrap() };
        let (xc, b0, b1, b2, b3) = (lanes(x), lanes(w0), lanes(w1), lanes(w2), lanes(w3));
        for l in 0..16 {
            a0[l] += xc[l] * b0[l];
            a1[l] += xc[l] * b1[l];
            a2[l] += xc[l] * b2[l];
            a3[l] += xc[l] * b3[l];
        }
    }
    let tail = |r: &[f32]| x[n..].iter().zip(&r[n..]).map(|(p, q)| p * q).sum::<f32>();
    [tree_sum16(&a0) + tail(w0), tree_sum16(&a1) + tail(w1), tree_sum16(&a2) + tail(w2), tree_sum16(&a3) + tail(w3)]
}

/// The sum of 16 lanes as a tree, halves first (constant indices only, so the lanes stay in
/// registers).
#[inline(always)]
fn tree_sum16(a: &[f32; 16]) -> f32 {
    let h8: [f32; 8] = std::array::from_fn(|l| a[l] + a[l + 8]);
    let h4: [f32; 4] = std::array::from_fn(|l| h8[l] + h8[l + 4]);
    (h4[0] + h4[2]) + (h4[1] + h4[3])
}

multiversion! {
    /// The sum of x^2 in f64 over eight interleaved lanes (element i to lane i % 8), the lanes
    /// then added in lane order: one chain of dependent f64 additions was latency-bound (the
    /// global norm over 8M gradients took 3 ms on a 2-core Xeon); independent lanes vectorise.
    /// The order depends on the data alone, so a norm built from block sums of it stays
    /// independent of the thread count.
    pub fn sum_squares_f64(x: &[f32]) -> f64 {
        let mut lanes = [0f64; 8];
        let mut chunks = x.chunks_exact(8);
        for c in &mut chunks {
            for (l, &v) in lanes.iter_mut().zip(c) {
                *l += (v as f64) * (v as f64);
            }
        }
        for (l, &v) in lanes.iter_mut().zip(chunks.remainder()) {
            *l += (v as f64) * (v as f64);
        }
        lanes.iter().sum()
    }
}

/// Sum with 16 independent lanes (inlined into the multiversioned callers).
#[inline(always)]
fn lanes_sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut xc = x.chunks_exact(16);
    for c in &mut xc {
        for l in 0..16 {
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<f32>() + xc.remainder().iter().sum::<f32>()
}

/// sqrt(2 / pi), the GELU tanh approximation's scale.
const K: f32 = 0.797_884_6;
/// The cubic coefficient of the GELU tanh approximation.
const C: f32 = 0.044_715;

/// y = 0.5 x (1 + tanh(K (x + C x^3))).
pub fn gelu_tanh(x: &[f32], y: &mut [f32]) {
    by_level!(
        crate::math_avx512::gelu_tanh(x, y),
        crate::math_avx2::gelu_tanh(x, y),
        crate::math_neon::gelu_tanh(x, y),
        gelu_tanh_portable(x, y)
    )
}

/// dx = dy gelu_tanh'(x).
pub fn gelu_tanh_grad(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    by_level!(
        crate::math_avx512::gelu_tanh_grad(x, dy, dx),
        crate::math_avx2::gelu_tanh_grad(x, dy, dx),
        crate::math_neon::gelu_tanh_grad(x, dy, dx),
        gelu_tanh_grad_portable(x, dy, dx)
    )
}

multiversion! {
    /// y = 0.5 x (1 + tanh(K (x + C x^3))), in portable code.
    pub fn gelu_tanh_portable(x: &[f32], y: &mut [f32]) -> () {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = 0.5 * v * (1.0 + tanh(K * (v + C * v * v * v)));
        }
    }
}

multiversion! {
    /// dx = dy ((1 + t) / 2 + x (1 - t^2) K (1 + 3 C x^2) / 2), t = tanh(K (x + C x^3)), in
    /// portable code.
    pub fn gelu_tanh_grad_portable(x: &[f32], dy: &[f32], dx: &mut [f32]) -> () {
        for i in 0..dx.len().min(x.len()).min(dy.len()) {
            let v = x[i];
            let t = tanh(K * (v + C * v * v * v));
            dx[i] = dy[i] * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * K * (1.0 + 3.0 * C * v * v));
        }
    }
}

/// y = x sigmoid(x). (At AVX-512 the multiversioned portable loop runs: it has no hand
/// kernel there.)
pub fn silu(x: &[f32], y: &mut [f32]) {
    by_level!(silu_portable(x, y), crate::math_avx2::silu(x, y), crate::math_neon::silu(x, y), silu_portable(x, y))
}

/// dx = dy s (1 + x (1 - s)), s = sigmoid(x).
pub fn silu_grad(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    by_level!(
        silu_grad_portable(x, dy, dx),
        crate::math_avx2::silu_grad(x, dy, dx),
        crate::math_neon::silu_grad(x, dy, dx),
        silu_grad_portable(x, dy, dx)
    )
}

multiversion! {
    /// SwiGLU's backward over one row, one exp per element: with s = sigmoid(g),
    /// du = dy g s and dg = dy u s (1 + g (1 - s)) = dy u (s + g s (1 - s)).
    pub fn swiglu_grad(g: &[f32], u: &[f32], dy: &[f32], dg: &mut [f32], du: &mut [f32]) -> () {
        let n = g.len().min(u.len()).min(dy.len()).min(dg.len()).min(du.len());
        for i in 0..n {
            let s = sigmoid(g[i]);
            let gs = g[i] * s;
            du[i] = dy[i] * gs;
            dg[i] = dy[i] * u[i] * (s + gs * (1.0 - s));
        }
    }
}

multiversion! {
    /// y = x sigmoid(x), in portable code.
    pub fn silu_portable(x: &[f32], y: &mut [f32]) -> () {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = v * sigmoid(v);
        }
    }
}

multiversion! {
    /// dx = dy s (1 + x (1 - s)), s = sigmoid(x), in portable code.
    pub fn silu_grad_portable(x: &[f32], dy: &[f32], dx: &mut [f32]) -> () {
        for i in 0..dx.len().min(x.len()).min(dy.len()) {
            let s = sigmoid(x[i]);
            dx[i] = dy[i] * s * (1.0 + x[i] * (1.0 - s));
        }
    }
}

/// Accuracy checks every level's hand-written kernels are held to ([`crate::math_avx2`] and
/// [`crate::math_neon`] run them on their own kernels): against the portable kernels and f64.
#[cfg(test)]
pub(crate) mod checks {
    use super::{C, K};

    /// One level's exp-based slice kernels.
    pub struct Kernels {
        pub exp_shift_sum_inplace: unsafe fn(&mut [f32], f32) -> f32,
        pub exp_shift_sum: unsafe fn(&[f32], f32, &mut [f32]) -> f32,
        pub sum_exp_shift: unsafe fn(&[f32], f32) -> f32,
        pub scaled_exp_shift: unsafe fn(&[f32], f32, f32, &mut [f32]),
        pub gelu_tanh: unsafe fn(&[f32], &mut [f32]),
        pub gelu_tanh_grad: unsafe fn(&[f32], &[f32], &mut [f32]),
        pub silu: unsafe fn(&[f32], &mut [f32]),
        pub silu_grad: unsafe fn(&[f32], &[f32], &mut [f32]),
    }

    /// The shifted exp against the portable one: within 3e-7 relative on a sweep, exactly on
    /// the edges (0 below -87.3, inf above 88.72, NaN kept), and the returned sum.
    ///
    /// # Safety
    /// The CPU must support the kernels' level.
    pub unsafe fn exp_shift_matches_the_portable_exp(k: &Kernels) {
        let mut x: Vec<f32> = (0..2001).map(|i| (i as f32 - 1500.0) * 0.0613).collect();
        x.extend([f32::NEG_INFINITY, f32::INFINITY, f32::NAN, -87.29, -87.31, 88.71, 88.73, 0.0, 1.0, 2.0]);
        let shift = 0.75;
        let mut got = x.clone();
        let sum = (k.exp_shift_sum_inplace)(&mut got, shift);
        for (i, &v) in x.iter().enumerate() {
            let want = crate::math::exp(v - shift);
            if want.is_nan() {
                assert!(got[i].is_nan(), "exp({v} - {shift}) = {}", got[i]);
            } else if want == 0.0 || want.is_infinite() {
                assert_eq!(got[i], want, "exp({v} - {shift})");
            } else {
                assert!((got[i] - want).abs() <= 3e-7 * want, "exp({v} - {shift}) = {} want {want}", got[i]);
            }
        }
        let mut f: Vec<f32> = x[..2001].to_vec();
        let s = (k.exp_shift_sum_inplace)(&mut f, shift) as f64;
        let want: f64 = x[..2001].iter().map(|&v| ((v - shift) as f64).exp()).sum();
        assert!((s - want).abs() <= 1e-5 * want, "sum {s} want {want}");
        assert!(sum.is_nan(), "a NaN input makes the sum NaN");
    }

    /// The row passes (written, summed, scaled) against the portable ones on a ragged length.
    ///
    /// # Safety
    /// The CPU must support the kernels' level.
    pub unsafe fn exp_shift_row_passes_match_the_portable_ones(k: &Kernels) {
        let x: Vec<f32> = (0..1003).map(|i| ((i * 37) % 101) as f32 * 0.3 - 20.0).collect();
        let (mut a, mut b) = (vec![0f32; x.len()], vec![0f32; x.len()]);
        let sa = (k.exp_shift_sum)(&x, 3.0, &mut a);
        let sb = crate::math::exp_shift_sum_portable(&x, 3.0, &mut b);
        let close = |g: f32, w: f32| (g - w).abs() <= 3e-7 * w.abs() + 1e-30;
        assert!(a.iter().zip(&b).all(|(&g, &w)| close(g, w)) && (sa - sb).abs() <= 1e-5 * sb, "{sa} vs {sb}");
        let s = (k.sum_exp_shift)(&x, 3.0);
        assert!((s - sb).abs() <= 1e-5 * sb, "{s} vs {sb}");
        (k.scaled_exp_shift)(&x, 3.0, -0.5, &mut a);
        assert!(a.iter().zip(&b).all(|(&g, &w)| close(g, -0.5 * w)));
    }

    /// GELU and SiLU and their gradients against f64, over a dense sweep, the clamp region,
    /// specials (which must be the portable kernel's, bit for bit) and a ragged tail.
    ///
    /// # Safety
    /// The CPU must support the kernels' level.
    pub unsafe fn activations_match_f64_and_keep_specials(kn: &Kernels) {
        let mut x: Vec<f32> = (0..4001).map(|i| (i as f32 - 2000.0) * 0.006).collect();
        x.extend([-95.0, -60.0, -9.5, 9.5, 60.0, 95.0, 1e30, -1e30, 0.0, -0.0, 1e-30]);
        x.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 0.5]);
        let dy: Vec<f32> = x.iter().enumerate().map(|(i, _)| 1.0 + (i % 7) as f32 * 0.25).collect();
        let n = x.len();
        let (mut y, mut dx, mut ys, mut dxs) = (vec![0f32; n], vec![0f32; n], vec![0f32; n], vec![0f32; n]);
        let (mut yp, mut dxp, mut ysp, mut dxsp) = (y.clone(), dx.clone(), ys.clone(), dxs.clone());
        (kn.gelu_tanh)(&x, &mut y);
        (kn.gelu_tanh_grad)(&x, &dy, &mut dx);
        (kn.silu)(&x, &mut ys);
        (kn.silu_grad)(&x, &dy, &mut dxs);
        crate::math::gelu_tanh_portable(&x, &mut yp);
        crate::math::gelu_tanh_grad_portable(&x, &dy, &mut dxp);
        crate::math::silu_portable(&x, &mut ysp);
        crate::math::silu_grad_portable(&x, &dy, &mut dxsp);
        for i in 0..n {
            if !x[i].is_finite() {
                for (got, want, what) in
                    [(&y, &yp, "gelu"), (&dx, &dxp, "gelu'"), (&ys, &ysp, "silu"), (&dxs, &dxsp, "silu'")]
                {
                    // A NaN's sign bit carries no meaning (and differs between code paths).
                    let same = got[i].to_bits() == want[i].to_bits() || (got[i].is_nan() && want[i].is_nan());
                    assert!(same, "{what} at {}: {} vs {}", x[i], got[i], want[i]);
                }
                continue;
            }
            let (v, k, c, g) = (x[i] as f64, K as f64, C as f64, dy[i] as f64);
            // GELU as a logistic of 2u in f64 (keeps the tiny values 1 + tanh rounds to 0).
            let u2 = 2.0 * k * (v + c * v * v * v);
            let s = 1.0 / (1.0 + (-u2).exp());
            let (want_y, want_g) = (v * s, g * (s + 2.0 * k * v * s * (1.0 - s) * (1.0 + 3.0 * c * v * v)));
            // exp inherits its argument's f32 rounding (relative 2^-24 of it) as a relative error.
            let rel = |t: f64| 2e-6 + 1.2e-7 * t.abs().min(80.0);
            let close = |got: f32, want: f64, tol: f64| (got as f64 - want).abs() <= tol;
            assert!(close(y[i], want_y, rel(u2) * want_y.abs() + 1e-30), "gelu({}) = {} want {want_y}", x[i], y[i]);
            let gtol = 2.0 * rel(u2) * (want_g.abs() + g * 1e-2);
            assert!(close(dx[i], want_g, gtol), "gelu'({}) = {} want {want_g}", x[i], dx[i]);
            let s = 1.0 / (1.0 + (-v).exp());
            let (want_y, want_g) = (v * s, g * s * (1.0 + v * (1.0 - s)));
            // Below x = -80, s is taken as 0: the result is 0 instead of under 1e-33.
            let floor = if v < -80.0 { 1e-32 } else { 1e-30 };
            assert!(close(ys[i], want_y, rel(v) * want_y.abs() + floor), "silu({}) = {} want {want_y}", x[i], ys[i]);
            let gtol = 2.0 * rel(v) * (want_g.abs() + g * 1e-2) + floor;
            assert!(close(dxs[i], want_g, gtol), "silu'({}) = {} want {want_g}", x[i], dxs[i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn bf16_slice_rounding_is_the_contract_rule_bit_for_bit() {
        // Ties both ways, NaN payloads, infinities, denormals, overflow to inf, and a sweep of
        // bit patterns (every 65537th, so all rounding bit combinations come by).
        let mut x: Vec<f32> = vec![
            1.0 + 1.0 / 256.0,
            1.0 + 3.0 / 256.0,
            -0.0,
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7f80_0001),
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            1e-40,
            -3e-39,
        ];
        x.extend((0..u32::MAX / 65537).map(|i| f32::from_bits(i.wrapping_mul(65537))));
        let mut got = vec![0u16; x.len()];
        f32_to_bf16_slice(&x, &mut got);
        for (v, g) in x.iter().zip(&got) {
            assert_eq!(*g, anychip_port::f32_to_bf16(*v), "{v:e} ({:#010x})", v.to_bits());
        }
    }
    #[test]
    fn exp_matches_std() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max(((a - b) / b).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
    }
    #[test]
    fn slice_kernels_agree_with_scalar() {
        let x: Vec<f32> = (0..37).map(|i| i as f32 * 0.3 - 5.0).collect();
        let mut out = vec![0f32; 37];
        let s = exp_shift_sum(&x, 1.5, &mut out);
        let want: Vec<f32> = x.iter().map(|&v| exp(v - 1.5)).collect();
        assert!(out.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 1e-6 * b));
        assert!((s - want.iter().sum::<f32>()).abs() < 1e-4 * s);
        assert!((sum_exp_shift(&x, 1.5) - s).abs() < 1e-4 * s);
        scaled_exp_shift(&x, 1.5, 2.0, &mut out);
        assert!(out.iter().zip(&want).all(|(a, b)| (a - 2.0 * b).abs() <= 2e-6 * b));
    }
    #[test]
    fn sum_squares_f64_matches_a_plain_f64_sum_tail_included() {
        // Lengths around the 8-lane width, so a dropped or doubled remainder shows.
        for n in [0usize, 1, 7, 8, 9, 15, 16, 17, 1000, 1027] {
            let x: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013).collect();
            let want: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
            let got = sum_squares_f64(&x);
            assert!((got - want).abs() <= 1e-12 * want.max(1e-300), "n {n}: {got} vs {want}");
        }
    }

    #[test]
    fn tanh_saturates() {
        assert_eq!(tanh(100.0), 1.0);
        assert_eq!(tanh(-100.0), -1.0);
        assert!((tanh(0.5) - 0.5f32.tanh()).abs() < 1e-6);
    }
}
