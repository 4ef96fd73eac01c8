//! What one port call asks of a chip: FLOPs and bytes of each kernel it runs.
//!
//! A call is one or more [`Work`] items (a fused `linear` backward is two GEMMs and a column
//! sum, priced as one kernel: one launch). Each item names the efficiency it is priced with
//! (`op`, `dtype`, `shape`), so a profile can say how well a chip runs *that* op at *that* size.
//! The counts are the algorithm's, not an implementation's: an implementation that does more
//! (a causal attention that computes whole diagonal tiles) shows up as a lower efficiency.
//!
//! Bytes are each operand read once and each output written once (a broadcast operand, stride
//! 0, counts its distinct elements only): the traffic of a kernel that streams its operands.

use anychip_port::{check, BinaryOp, Composite, DType, UnaryOp, View};
use std::cell::RefCell;

/// Which roofline an item is priced on and which default efficiency it falls back to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Matrix products on the matrix units (peak of the operand dtype).
    Gemm,
    /// Attention cores: matrix-unit FLOPs with a softmax between them.
    Attention,
    /// Everything else: streaming kernels, bound by memory bandwidth.
    Memory,
}

impl Class {
    /// Name of the class's fallback entry in a sim profile.
    pub fn name(self) -> &'static str {
        match self {
            Class::Gemm => "gemm",
            Class::Attention => "attention",
            Class::Memory => "memory",
        }
    }
}

/// One kernel's demand.
#[derive(Clone, Debug, PartialEq)]
pub struct Work {
    /// Efficiency key: "gemm", "attention_fwd", "layer_norm_bwd", "unary_exp", ...
    pub op: String,
    pub class: Class,
    /// Dtype whose peak applies (the operands' for GEMMs, the data's otherwise).
    pub dtype: DType,
    /// Size key for the efficiency lookup: [m, n, k] for GEMMs, [t, s, head_dim] for
    /// attention, [elements] otherwise.
    pub shape: Vec<usize>,
    pub flops: f64,
    pub bytes: f64,
}

impl Work {
    fn memory(op: impl Into<String>, dtype: DType, elements: usize, flops: f64, bytes: f64) -> Work {
        Work { op: op.into(), class: Class::Memory, dtype, shape: vec![elements.max(1)], flops, bytes }
    }
}

/// Distinct elements a view touches (broadcast axes, stride 0, count once).
pub fn distinct(v: &View) -> usize {
    v.layout.shape.iter().zip(&v.layout.strides).filter(|(_, &s)| s != 0).map(|(&n, _)| n).product()
}

/// Bytes of a view's distinct elements.
pub fn bytes(v: &View) -> f64 {
    (distinct(v) * v.dtype.size()) as f64
}

fn sum_bytes(views: &[&View]) -> f64 {
    views.iter().map(|v| bytes(v)).sum()
}

/// FLOPs per element of a unary op (transcendentals as a vector math library evaluates them).
fn unary_flops(op: UnaryOp) -> f64 {
    match op {
        UnaryOp::Neg | UnaryOp::Abs => 1.0,
        UnaryOp::Sqrt | UnaryOp::Recip => 4.0,
        UnaryOp::Exp | UnaryOp::Log => 15.0,
        UnaryOp::Tanh | UnaryOp::Erf => 25.0,
    }
}

/// Lower-case name of an op enum (`Exp` as "exp"), as the efficiency keys spell it.
pub fn lower(op: impl std::fmt::Debug) -> String {
    format!("{op:?}").to_lowercase()
}

/// A primitive elementwise call over `out`.
pub fn elementwise(op: String, out: &View, inputs: &[&View], flops_per: f64) -> Work {
    let mut all: Vec<&View> = inputs.to_vec();
    all.push(out);
    Work::memory(op, out.dtype, out.numel(), flops_per * out.numel() as f64, sum_bytes(&all))
}

/// `unary`.
pub fn unary(op: UnaryOp, x: &View, out: &View) -> Work {
    elementwise(format!("unary_{}", lower(op)), out, &[x], unary_flops(op))
}

/// `binary`.
pub fn binary(op: BinaryOp, a: &View, b: &View, out: &View) -> Work {
    elementwise(format!("binary_{}", lower(op)), out, &[a, b], 1.0)
}

/// `reduce` of `x` into `out`.
pub fn reduce(op: String, x: &View, out: &View) -> Work {
    Work::memory(op, x.dtype, x.numel(), x.numel() as f64, bytes(x) + bytes(out))
}

/// `matmul`: out[b] = a[b] @ b[b], a [B,M,K], b [B,K,N]; `accumulate` when beta != 0.
pub fn matmul(a: &View, b: &View, out: &View, accumulate: bool) -> Work {
    let (sa, so) = (a.shape(), out.shape());
    let r = sa.len();
    let (batch, m, k, n) = (sa[..r - 2].iter().product::<usize>(), sa[r - 2], sa[r - 1], so[r - 1]);
    let out_bytes = bytes(out) * if accumulate { 2.0 } else { 1.0 };
    gemm(batch, m, n, k, a.dtype, bytes(a) + bytes(b) + out_bytes)
}

fn gemm(batch: usize, m: usize, n: usize, k: usize, dtype: DType, bytes: f64) -> Work {
    Work {
        op: "gemm".into(),
        class: Class::Gemm,
        dtype,
        shape: vec![m * batch, n, k],
        flops: 2.0 * (batch * m * n * k) as f64,
        bytes,
    }
}

/// Rows (all leading axes) and features (last axis) of a view.
fn rows_cols(v: &View) -> (usize, usize) {
    let s = v.shape();
    let d = *s.last().unwrap_or(&1);
    (v.numel() / d.max(1), d)
}

/// Query-key pairs an attention call visits per (batch, head): all T x S, or the causal
/// triangle where query t sees keys s <= t + (S - T).
fn attention_pairs(t: usize, s: usize, causal: bool) -> f64 {
    if !causal {
        return (t * s) as f64;
    }
    (0..t).map(|i| (i + s + 1).saturating_sub(t).min(s)).sum::<usize>() as f64
}

/// Every view a composite call reads or writes (via `map_views`, which visits each once).
fn views_of(call: &Composite) -> Vec<View> {
    let seen = RefCell::new(Vec::new());
    let _ = call.map_views(&|v| {
        seen.borrow_mut().push(v.clone());
        v.clone()
    });
    seen.into_inner()
}

/// The kernels of a fused composite call.
pub fn composite(call: &Composite) -> Vec<Work> {
    use Composite::*;
    let all = views_of(call);
    let total: f64 = all.iter().map(bytes).sum();
    let data_dtype = all.iter().map(|v| v.dtype).find(|d| d.is_float()).unwrap_or(DType::F32);
    let dir = if is_backward(call) { "bwd" } else { "fwd" };
    let streaming = |flops_per: f64, elements: usize| {
        let op = match call {
            AdamWStep { .. } | GradNorm { .. } => call.name().to_string(),
            _ => format!("{}_{dir}", call.name()),
        };
        vec![Work::memory(op, data_dtype, elements, flops_per * elements as f64, total)]
    };
    match call {
        LinearFwd { x, w, b, y } => {
            let (n, inp) = rows_cols(x);
            let out = w.shape()[0];
            let mut v = vec![gemm(1, n, out, inp, x.dtype, bytes(x) + bytes(w) + bytes(y))];
            if let Some(b) = b {
                v.push(Work::memory("bias_add", y.dtype, n * out, (n * out) as f64, bytes(b) + 2.0 * bytes(y)));
            }
            v
        }
        LinearBwd { x, w, dy, dx, dw, db } => {
            let (n, inp) = rows_cols(x);
            let out = w.shape()[0];
            let mut v = Vec::new();
            if let Some(dx) = dx {
                v.push(gemm(1, n, inp, out, dy.dtype, bytes(dy) + bytes(w) + bytes(dx)));
            }
            if let Some(dw) = dw {
                v.push(gemm(1, out, inp, n, dy.dtype, bytes(dy) + bytes(x) + bytes(dw)));
            }
            if let Some(db) = db {
                v.push(Work::memory("bias_grad", dy.dtype, n * out, (n * out) as f64, bytes(dy) + bytes(db)));
            }
            v
        }
        AttentionFwd { q, k, causal, .. } | AttentionBwd { q, k, causal, .. } => {
            let (qs, ks) = (q.shape(), k.shape());
            let (b, hq, t, dh, s) = (qs[0], qs[1], qs[2], qs[3], ks[2]);
            let pairs = attention_pairs(t, s, *causal) * (b * hq) as f64;
            // Forward: S = QK^T and O = PV (2 x 2 Dh per pair) plus the softmax (~5 per pair).
            // Backward (recomputing P): QK^T, dV, dP, dQ, dK (5 x 2 Dh) plus ~8 per pair.
            let flops = if dir == "fwd" { pairs * (4 * dh + 5) as f64 } else { pairs * (10 * dh + 8) as f64 };
            vec![Work {
                op: format!("attention_{dir}"),
                class: Class::Attention,
                dtype: q.dtype,
                shape: vec![t, s, dh],
                flops,
                bytes: total,
            }]
        }
        CrossEntropyFwd { logits, .. } | CrossEntropyBwd { logits, .. } => streaming(4.0, logits.numel()),
        LayerNormFwd { x, .. } | RmsNormFwd { x, .. } => streaming(8.0, x.numel()),
        LayerNormBwd { x, .. } | RmsNormBwd { x, .. } => streaming(12.0, x.numel()),
        GeluFwd { x, .. } | GeluBwd { x, .. } => streaming(30.0, x.numel()),
        SiluFwd { x, .. } | SiluBwd { x, .. } => streaming(20.0, x.numel()),
        // Per output element of the F-wide half: a SiLU and a product forward; backward a SiLU,
        // its derivative and three products.
        SwigluFwd { y, .. } => streaming(21.0, y.numel()),
        SwigluBwd { dy, .. } => streaming(44.0, dy.numel()),
        SoftmaxFwd { x, .. } | LogSoftmaxFwd { x, .. } => streaming(20.0, x.numel()),
        SoftmaxBwd { y, .. } | LogSoftmaxBwd { y, .. } => streaming(4.0, y.numel()),
        RopeFwd { x, .. } => streaming(3.0, x.numel()),
        RopeBwd { dy, .. } => streaming(3.0, dy.numel()),
        EmbeddingFwd { out, .. } => streaming(0.0, out.numel()),
        EmbeddingBwd { dout, dtable, .. } => {
            // Zeroing the table and adding the rows: the table is written once, rows read once.
            streaming(1.0, dout.numel() + dtable.numel())
        }
        AdamWStep { param, .. } => streaming(15.0, param.numel()),
        GradNorm { grads, .. } => streaming(2.0, grads.iter().map(|g| g.numel()).sum()),
        DropoutFwd { x, .. } => streaming(25.0, x.numel()),
        DropoutBwd { dy, .. } => streaming(1.0, dy.numel()),
        // Per element of y: a product and an add forward; backward a product for dy and a
        // multiply-add for dw.
        MoeCombineFwd { y, .. } => streaming(2.0, y.numel()),
        MoeCombineBwd { y, .. } => streaming(3.0, y.numel()),
        // The linear it contains (GEMMs whose calibrated efficiency falls with their low
        // arithmetic intensity at E = 8 to 128 outputs a row), the softmax in the same kernel
        // not priced (~20 FLOPs a probability, against 2 D of the product); backward dx = dz w
        // and dw = dz^T x, each when present, with the small [N, E] probs and dprobs in each.
        MoeRouterFwd { x, w, .. } => {
            let (n, d) = rows_cols(x);
            vec![gemm(1, n, w.shape()[0], d, x.dtype, total)]
        }
        MoeRouterBwd { x, w, probs, dprobs, dx, dw } => {
            let ((n, d), e, ne) = (rows_cols(x), w.shape()[0], bytes(probs) + bytes(dprobs));
            let mut v = Vec::new();
            if let Some(dx) = dx {
                v.push(gemm(1, n, d, e, x.dtype, ne + bytes(w) + bytes(dx)));
            }
            if let Some(dw) = dw {
                v.push(gemm(1, e, d, n, x.dtype, ne + bytes(x) + bytes(dw)));
            }
            v
        }
        // The linears it contains, one GEMM per non-empty group and product (as `LinearFwd` and
        // `LinearBwd` price each, without bias), in one kernel: one launch for the call (a
        // grouped GEMM, as Transformer Engine's GroupedLinear runs a MoE layer's experts). An
        // empty group's dw, when present, is written as zeros: its bytes only.
        GroupedLinearFwd { x, ws, offsets, y } => {
            let (inp, out) = (x.shape()[1], y.shape()[1]);
            let (xe, ye, we) = (row_bytes(x), row_bytes(y), ws.first().map_or(0.0, bytes));
            check::groups(offsets).map(|(_, _, n)| gemm(1, n, out, inp, x.dtype, n as f64 * (xe + ye) + we)).collect()
        }
        GroupedLinearBwd { x, ws, dy, offsets, dx, dws } => {
            let (inp, out) = (x.shape()[1], dy.shape()[1]);
            let (xe, dye, we) = (row_bytes(x), row_bytes(dy), ws.first().map_or(0.0, bytes));
            let mut v = Vec::new();
            for (e, w) in offsets.windows(2).enumerate() {
                let n = w[1] - w[0];
                if let Some(dx) = dx.as_ref().filter(|_| n > 0) {
                    v.push(gemm(1, n, inp, out, dy.dtype, n as f64 * (dye + row_bytes(dx)) + we));
                }
                match dws.get(e).and_then(Option::as_ref) {
                    Some(dw) if n > 0 => v.push(gemm(1, out, inp, n, dy.dtype, n as f64 * (dye + xe) + bytes(dw))),
                    Some(dw) => v.push(Work::memory("grouped_linear_zero", dw.dtype, dw.numel(), 0.0, bytes(dw))),
                    None => {}
                }
            }
            v
        }
    }
}

/// Bytes of one row of a 2-D view.
fn row_bytes(v: &View) -> f64 {
    let (rows, _) = rows_cols(v);
    if rows == 0 {
        0.0
    } else {
        bytes(v) / rows as f64
    }
}

/// Whether a composite call is a backward (gradient) kernel.
pub fn is_backward(call: &Composite) -> bool {
    use Composite::*;
    matches!(
        call,
        SoftmaxBwd { .. }
            | LogSoftmaxBwd { .. }
            | LayerNormBwd { .. }
            | RmsNormBwd { .. }
            | GeluBwd { .. }
            | SiluBwd { .. }
            | SwigluBwd { .. }
            | CrossEntropyBwd { .. }
            | AttentionBwd { .. }
            | EmbeddingBwd { .. }
            | RopeBwd { .. }
            | LinearBwd { .. }
            | DropoutBwd { .. }
            | MoeCombineBwd { .. }
            | MoeRouterBwd { .. }
            | GroupedLinearBwd { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use anychip_port::{Buffer, DeviceMemory};
    use std::sync::Arc;

    struct Nothing;
    impl DeviceMemory for Nothing {
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
        fn bytes(&self) -> usize {
            0
        }
    }
    fn view(shape: &[usize], dtype: DType) -> View {
        View::contiguous(Buffer(Arc::new(Nothing)), dtype, shape)
    }

    #[test]
    fn causal_pairs_are_the_triangle() {
        assert_eq!(attention_pairs(4, 4, true), 10.0);
        assert_eq!(attention_pairs(4, 4, false), 16.0);
        // Two new queries after six cached keys see 7 and 8 keys.
        assert_eq!(attention_pairs(2, 8, true), 15.0);
    }

    #[test]
    fn linear_backward_is_two_gemms_of_the_forward_size() {
        let (x, w, dy) = (view(&[64, 32], DType::F32), view(&[16, 32], DType::F32), view(&[64, 16], DType::F32));
        let fwd = composite(&Composite::LinearFwd { x: x.clone(), w: w.clone(), b: None, y: dy.clone() });
        let bwd = composite(&Composite::LinearBwd {
            x: x.clone(),
            w: w.clone(),
            dy,
            dx: Some(x.clone()),
            dw: Some(w.clone()),
            db: None,
        });
        assert_eq!(fwd.len(), 1);
        assert_eq!(fwd[0].flops, 2.0 * 64.0 * 32.0 * 16.0);
        assert_eq!(bwd.len(), 2);
        assert_eq!(bwd.iter().map(|w| w.flops).sum::<f64>(), 2.0 * fwd[0].flops);
        assert_eq!(bwd[1].shape, vec![16, 32, 64]);
    }

    #[test]
    fn grouped_linear_is_the_sum_of_its_groups_linears() {
        // Groups of 5, 0 and 11 rows: the empty one costs nothing forward, and only its zeroed
        // gradient backward.
        let (s, inp, out, offsets) = (16, 32, 8, vec![0, 5, 5, 16]);
        let (x, y, w) = (view(&[s, inp], DType::F32), view(&[s, out], DType::F32), view(&[out, inp], DType::F32));
        let ws = vec![w.clone(); 3];
        let fwd = composite(&Composite::GroupedLinearFwd {
            x: x.clone(),
            ws: ws.clone(),
            offsets: offsets.clone(),
            y: y.clone(),
        });
        let bwd = composite(&Composite::GroupedLinearBwd {
            x: x.clone(),
            ws,
            dy: y,
            offsets: offsets.clone(),
            dx: Some(x),
            dws: vec![Some(w.clone()), Some(w.clone()), Some(w)],
        });
        let per_group = |n: usize| {
            let (xe, ye, we) =
                (view(&[n, inp], DType::F32), view(&[n, out], DType::F32), view(&[out, inp], DType::F32));
            let f = composite(&Composite::LinearFwd { x: xe.clone(), w: we.clone(), b: None, y: ye.clone() });
            let b = composite(&Composite::LinearBwd {
                x: xe.clone(),
                w: we.clone(),
                dy: ye,
                dx: Some(xe),
                dw: Some(we),
                db: None,
            });
            (f, b)
        };
        let ((f5, b5), (f11, b11)) = (per_group(5), per_group(11));
        assert_eq!(fwd, [f5, f11].concat());
        assert_eq!(bwd.len(), 5);
        assert_eq!(bwd[..2], b5[..]);
        assert_eq!(bwd[3..], b11[..]);
        assert_eq!((bwd[2].flops, bwd[2].bytes), (0.0, (out * inp * 4) as f64));
    }

    #[test]
    fn broadcast_operands_count_their_distinct_bytes() {
        let b = View {
            buf: Buffer(Arc::new(Nothing)),
            dtype: DType::F32,
            layout: anychip_port::Layout { shape: vec![8, 4], strides: vec![0, 1], offset: 0 },
        };
        let out = view(&[8, 4], DType::F32);
        let w = binary(BinaryOp::Add, &out, &b, &out);
        assert_eq!(w.bytes, (32 + 4 + 32) as f64 * 4.0);
    }
}
