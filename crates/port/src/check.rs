//! Argument checks every port needs, written once against the contract so that ports reject
//! bad calls with the same words and cannot drift apart on what "valid" means.

use crate::{invalid, DType, Layout, PortError, Result, View};

/// One past the largest element index `l` touches (its offset for an empty view); `None` on
/// overflow.
pub fn span(l: &Layout) -> Option<usize> {
    let numel = l.shape.iter().try_fold(1usize, |a, &n| a.checked_mul(n))?;
    if numel == 0 {
        return Some(l.offset);
    }
    l.shape
        .iter()
        .zip(&l.strides)
        .try_fold(l.offset.checked_add(1)?, |a, (&n, &s)| a.checked_add((n - 1).checked_mul(s)?))
}

/// Fail unless every element of `v` lies within the first `held` elements of its buffer.
pub fn in_bounds(what: &str, v: &View, held: usize) -> Result<()> {
    let l = &v.layout;
    match span(l) {
        Some(s) if s <= held => Ok(()),
        _ => Err(PortError::Invalid(format!(
            "{what}: {} view shape {:?} strides {:?} offset {} reaches past the end of its buffer ({held} elements); \
             allocate a larger buffer or fix the layout",
            v.dtype, l.shape, l.strides, l.offset
        ))),
    }
}

/// Fail unless `v` has exactly `shape`.
pub fn shape(what: &str, v: &View, shape: &[usize]) -> Result<()> {
    if v.shape() == shape {
        Ok(())
    } else {
        invalid(format!("{what}: shape {:?} does not match the expected {:?}", v.shape(), shape))
    }
}

/// Fail unless `v` holds floats.
pub fn float(what: &str, v: &View) -> Result<()> {
    if v.dtype.is_float() {
        Ok(())
    } else {
        invalid(format!("{what}: dtype {} is not a float dtype (f32 or bf16)", v.dtype))
    }
}

/// Shape and dtype agreement of `matmul`; returns (batch, m, k, n).
pub fn matmul(a: &View, b: &View, out: &View) -> Result<(usize, usize, usize, usize)> {
    for (name, v) in [("a", a), ("b", b), ("out", out)] {
        float(&format!("matmul {name}"), v)?;
        if v.layout.rank() != 3 {
            return invalid(format!("matmul {name}: shape {:?} must have rank 3 [batch, rows, cols]", v.shape()));
        }
    }
    let (sa, sb, so) = (a.shape(), b.shape(), out.shape());
    let (bt, m, k, n) = (sa[0], sa[1], sa[2], sb[2]);
    if sb[0] != bt || sb[1] != k || so != [bt, m, n] {
        return invalid(format!(
            "matmul: shapes a {sa:?} @ b {sb:?} -> out {so:?} do not agree; need a [B,M,K], b [B,K,N], out [B,M,N]"
        ));
    }
    if a.dtype != b.dtype {
        return invalid(format!("matmul: a is {} but b is {}; inputs must share a dtype", a.dtype, b.dtype));
    }
    if out.dtype != a.dtype && out.dtype != DType::F32 {
        return invalid(format!(
            "matmul: out is {} but inputs are {}; out must be {} or f32",
            out.dtype, a.dtype, a.dtype
        ));
    }
    Ok((bt, m, k, n))
}

/// Shape agreement of `reduce`: equal rank, each out extent equal to x's or 1.
pub fn reduce(x: &View, out: &View) -> Result<()> {
    float("reduce x", x)?;
    float("reduce out", out)?;
    let (xs, os) = (x.shape(), out.shape());
    if xs.len() != os.len() {
        return invalid(format!(
            "reduce: x has shape {xs:?} but out has shape {os:?}; ranks must be equal (keep reduced axes as 1)"
        ));
    }
    if let Some(d) = (0..xs.len()).find(|&d| os[d] != xs[d] && os[d] != 1) {
        return invalid(format!(
            "reduce: out extent {} on axis {d} is neither x's extent {} nor 1 (x {xs:?}, out {os:?})",
            os[d], xs[d]
        ));
    }
    Ok(())
}

/// (N, D, E) of a `MoeRouterFwd`/`MoeRouterBwd` call: x `[N, D]`, w `[E, D]`, every view of `ne`
/// (probs, dprobs) `[N, E]`, and dx, dw (when present) shaped as x and w.
pub fn moe_router(
    x: &View,
    w: &View,
    ne: &[&View],
    dx: Option<&View>,
    dw: Option<&View>,
) -> Result<(usize, usize, usize)> {
    let (xs, ws) = (x.shape(), w.shape());
    let ok = xs.len() == 2
        && ws.len() == 2
        && xs[1] == ws[1]
        && ne.iter().all(|v| v.shape() == [xs[0], ws[0]])
        && dx.is_none_or(|v| v.shape() == xs)
        && dw.is_none_or(|v| v.shape() == ws);
    if !ok {
        return invalid(format!(
            "moe_router: x {xs:?} and w {ws:?} must be [N, D] and [E, D], with probs and dprobs [N, E] and dx, dw shaped as x, w"
        ));
    }
    Ok((xs[0], xs[1], ws[0]))
}

/// Each non-empty group of a `grouped_linear` call's `offsets`: (group, first row, rows). The
/// one walk over the groups that the default decomposition and fused kernels share.
pub fn groups(offsets: &[usize]) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    offsets.windows(2).enumerate().filter(|(_, w)| w[1] > w[0]).map(|(e, w)| (e, w[0], w[1] - w[0]))
}

/// The weight gradients asked for of a `grouped_linear` call's empty groups: each is zero, and
/// no product writes it.
pub fn empty_group_grads<'a>(offsets: &'a [usize], dws: &'a [Option<View>]) -> impl Iterator<Item = &'a View> + 'a {
    dws.iter().enumerate().filter(|(e, _)| offsets[*e] == offsets[*e + 1]).filter_map(|(_, dw)| dw.as_ref())
}

/// (S, In, Out) of a `GroupedLinearFwd`/`GroupedLinearBwd` call: x `[S, In]`, `yy` (y, or dy)
/// `[S, Out]`, every ws[e] `[Out, In]` of one dtype, offsets `[E + 1]` non-decreasing from 0 to
/// S; in the backward (`dws` given) dx shaped as x when present and E entries in dws, each
/// present one `[Out, In]`.
pub fn grouped_linear(
    x: &View,
    ws: &[View],
    offsets: &[usize],
    yy: &View,
    dx: Option<&View>,
    dws: Option<&[Option<View>]>,
) -> Result<(usize, usize, usize)> {
    let (xs, ys) = (x.shape(), yy.shape());
    if xs.len() != 2 || ys.len() != 2 || ys[0] != xs[0] || dx.is_some_and(|v| v.shape() != xs) {
        return invalid(format!(
            "grouped_linear: x {xs:?} and y (or dy) {ys:?} must be [S, In] and [S, Out], with dx shaped as x"
        ));
    }
    let (s, inp, out) = (xs[0], xs[1], ys[1]);
    if let Some(w) = ws.iter().find(|w| w.shape() != [out, inp] || w.dtype != ws[0].dtype) {
        return invalid(format!(
            "grouped_linear: weight {:?} {} where every weight must be [{out}, {inp}] of one dtype",
            w.shape(),
            w.dtype
        ));
    }
    if offsets.len() != ws.len() + 1
        || offsets.first() != Some(&0)
        || offsets.last() != Some(&s)
        || offsets.windows(2).any(|w| w[1] < w[0])
    {
        return invalid(format!(
            "grouped_linear: offsets {offsets:?} must be {} non-decreasing row indices from 0 to {s} (one more than the {} weights)",
            ws.len() + 1,
            ws.len()
        ));
    }
    if let Some(dws) = dws {
        if dws.len() != ws.len() || dws.iter().flatten().any(|d| d.shape() != [out, inp]) {
            return invalid(format!(
                "grouped_linear: {} weight gradients for {} weights, each present one [{out}, {inp}]",
                dws.len(),
                ws.len()
            ));
        }
    }
    Ok((s, inp, out))
}
