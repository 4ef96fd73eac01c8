// Transcendental functions written out in f32 so every GPU (and lavapipe) gives the same
// answer to about one ulp: the built-ins are allowed several ulps, or to be undefined for
// specials (log of 0 or of a negative number, tanh of large x). Coefficients are Cephes'
// minimax fits (S. Moshier) unless stated.

// exp(x) = 2^n exp(r), n = round(x / ln 2), r = x - n ln 2 with ln 2 split in two parts so
// n * C1 is exact; exp(r) on |r| <= ln2/2 by a degree-7 polynomial 1 + r + r^2 p(r).
fn exp_f32(x: f32) -> f32 {
    if (is_nan(x)) {
        return x;
    }
    if (x > 88.72283) {
        return inf_f32();
    }
    if (x < -103.97208) {
        return 0.0;
    }
    let n = round(x * 1.442695);
    let r = (x - n * 0.693359375) - n * -2.12194440e-4;
    var p = 1.9875691500e-4;
    p = p * r + 1.3981999507e-3;
    p = p * r + 8.3334519073e-3;
    p = p * r + 4.1665795894e-2;
    p = p * r + 1.6666665459e-1;
    p = p * r + 5.0000001201e-1;
    let e = p * r * r + r + 1.0;
    // 2^n in two steps so subnormal results and n = 128 stay representable.
    let h = i32(n) / 2;
    return ldexp(ldexp(e, h), i32(n) - h);
}

// log(x): x = m 2^e with m in [sqrt(1/2), sqrt 2); log(m) = f - f^2/2 + f^3 p(f), f = m - 1.
fn log_f32(x: f32) -> f32 {
    let b = bitcast<u32>(x);
    if (is_nan(x) || b == 0x7f800000u) {
        return x;
    }
    if ((b & 0x7fffffffu) == 0u) {
        return -inf_f32();
    }
    if ((b & 0x80000000u) != 0u) {
        return nan_f32();
    }
    let fr = frexp(x);
    var m = fr.fract;
    var e = f32(fr.exp);
    if (m < 0.70710678118654752) {
        e = e - 1.0;
        m = m + m - 1.0;
    } else {
        m = m - 1.0;
    }
    let z = m * m;
    var y = 7.0376836292e-2;
    y = y * m - 1.1514610310e-1;
    y = y * m + 1.1676998740e-1;
    y = y * m - 1.2420140846e-1;
    y = y * m + 1.4249322787e-1;
    y = y * m - 1.6668057665e-1;
    y = y * m + 2.0000714765e-1;
    y = y * m - 2.4999993993e-1;
    y = y * m + 3.3333331174e-1;
    y = y * m * z;
    y = y + e * -2.12194440e-4;
    y = y - 0.5 * z;
    return (m + y) + e * 0.693359375;
}

// tanh: an odd polynomial below 0.625 (where 1 - 2/(e^2x + 1) would cancel), else
// sign(x) (1 - 2 / (exp(2|x|) + 1)), which saturates to +-1 without overflow.
fn tanh_f32(x: f32) -> f32 {
    let a = abs(x);
    if (a < 0.625) {
        let z = x * x;
        var p = -5.70498872745e-3;
        p = p * z + 2.06390887954e-2;
        p = p * z - 5.37397155531e-2;
        p = p * z + 1.33314422036e-1;
        p = p * z - 3.33332819422e-1;
        return p * z * x + x;
    }
    if (is_nan(x)) {
        return x;
    }
    let t = 1.0 - 2.0 / (exp_f32(2.0 * a) + 1.0);
    return select(t, -t, x < 0.0);
}

// erf: Norbert Juffa's f32 minimax fits (max error about 1 ulp): an odd polynomial in x below
// |x| = 0.927734375, else 1 - exp(-(|x| + |x| q(|x|))) with the sign of x.
fn erf_f32(x: f32) -> f32 {
    let t = abs(x);
    let s = x * x;
    if (t > 0.927734375) {
        var r = fma(-1.72853470e-5, t, 3.83197126e-4);
        let u = fma(-3.88396438e-3, t, 2.42546219e-2);
        r = fma(r, s, u);
        r = fma(r, t, -1.06777877e-1);
        r = fma(r, t, -6.34846687e-1);
        r = fma(r, t, -1.28717512e-1);
        r = fma(r, t, -t);
        let y = 1.0 - exp_f32(r);
        return select(y, -y, x < 0.0);
    }
    var r = -5.96761703e-4;
    r = fma(r, s, 4.99119423e-3);
    r = fma(r, s, -2.67681349e-2);
    r = fma(r, s, 1.12819925e-1);
    r = fma(r, s, -3.76125336e-1);
    r = fma(r, s, 1.28379166e-1);
    return fma(r, x, x);
}

// cos(x) for |x| up to a few thousand: j = round(x / (pi/2)), r = x - j pi/2 with pi/2 split
// in three parts (Cody-Waite), then the sin or cos polynomial on |r| <= pi/4 by quadrant.
fn cos_f32(x: f32) -> f32 {
    let j = round(x * 0.63661977236);
    let r = ((x - j * 1.5703125) - j * 4.8375129699707031e-4) - j * 7.5497899548918821e-8;
    let z = r * r;
    var c = 2.443315711809948e-5;
    c = c * z - 1.388731625493765e-3;
    c = c * z + 4.166664568298827e-2;
    c = c * z * z - 0.5 * z + 1.0;
    var s = -1.9515295891e-4;
    s = s * z + 8.3321608736e-3;
    s = s * z - 1.6666654611e-1;
    s = s * z * r + r;
    let q = u32(i32(j) & 3);
    if (q == 0u) {
        return c;
    } else if (q == 1u) {
        return -s;
    } else if (q == 2u) {
        return -c;
    }
    return s;
}
