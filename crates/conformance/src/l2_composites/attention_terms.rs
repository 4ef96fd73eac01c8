//! Host f64 causal attention over the stored inputs, for the magnitudes of the terms each
//! output element sums ([`crate::tolerance::rounded_operands`]): what rounding the bf16
//! operands of attention's products (P and dS) can move an output by.

/// (b, hq, hkv, t, s, d), as in the cases.
pub(super) type Shape = (usize, usize, usize, usize, usize, usize);

/// Per-element sums of |terms|: out `[B,Hq,T,D]`, lse `[B,Hq,T]` (no rounded operand: zeros),
/// dq `[B,Hq,T,D]`, dk and dv `[B,Hkv,S,D]`.
pub(super) struct Terms {
    pub out: Vec<f64>,
    pub lse: Vec<f64>,
    pub dq: Vec<f64>,
    pub dk: Vec<f64>,
    pub dv: Vec<f64>,
}

/// The terms of causal attention with GQA on q, k, v and dout (row-major, as stored):
/// out_i = sum_j p_ij v_j; dv_j = sum_i p_ij dout_i; dq_i = scale sum_j ds_ij k_j;
/// dk_j = scale sum_i ds_ij q_i, with ds_ij = p_ij (dout_i . v_j - dout_i . out_i).
pub(super) fn terms(shape: Shape, q: &[f64], k: &[f64], v: &[f64], dout: &[f64], scale: f64) -> Terms {
    let (b, hq, hkv, t, s, d) = shape;
    let (nq, nk) = (b * hq * t * d, b * hkv * s * d);
    let mut m = Terms {
        out: vec![0.0; nq],
        lse: vec![0.0; b * hq * t],
        dq: vec![0.0; nq],
        dk: vec![0.0; nk],
        dv: vec![0.0; nk],
    };
    for bh in 0..b * hq {
        let kvh = (bh / hq) * hkv + (bh % hq) / (hq / hkv);
        for i in 0..t {
            // Query i sees keys j <= i + (S - T).
            let seen = (i as isize + s as isize - t as isize + 1).clamp(0, s as isize) as usize;
            let qi = &q[(bh * t + i) * d..][..d];
            let gi = &dout[(bh * t + i) * d..][..d];
            let key = |j: usize| (kvh * s + j) * d;
            let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
            let sc: Vec<f64> = (0..seen).map(|j| scale * dot(qi, &k[key(j)..][..d])).collect();
            let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = sc.iter().map(|x| (x - mx).exp()).collect();
            let l: f64 = e.iter().sum();
            let p: Vec<f64> = e.iter().map(|x| x / l).collect();
            let out: Vec<f64> = (0..d).map(|x| (0..seen).map(|j| p[j] * v[key(j) + x]).sum()).collect();
            let big_d = dot(gi, &out);
            let ds: Vec<f64> = (0..seen).map(|j| p[j] * (dot(gi, &v[key(j)..][..d]) - big_d)).collect();
            for x in 0..d {
                let o = (bh * t + i) * d + x;
                m.out[o] = (0..seen).map(|j| p[j] * v[key(j) + x].abs()).sum();
                m.dq[o] = scale * (0..seen).map(|j| ds[j].abs() * k[key(j) + x].abs()).sum::<f64>();
                for j in 0..seen {
                    m.dk[key(j) + x] += scale * ds[j].abs() * qi[x].abs();
                    m.dv[key(j) + x] += p[j] * gi[x].abs();
                }
            }
        }
    }
    m
}
