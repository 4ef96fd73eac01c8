//! Composite operations: each a forward AND an analytic backward.
//!
//! The engine records a composite as ONE autograd node whose gradient is always the matching
//! `*Bwd` call, so a fused forward can never cut gradients off. Every composite has a default
//! decomposition in `anychip-decomp`; a port overrides one by handling its calls in
//! [`crate::Port::composite`] and listing its [`Composite::name`] in `Capabilities::fused`.
//!
//! Conventions for every call: views are contiguous (except where [`Composite::AttentionFwd`],
//! [`Composite::RopeFwd`] and [`Composite::SiluFwd`] say otherwise); "rows" are all leading
//! axes flattened and the last axis is the feature axis; saved statistics (`mean`, `rstd`,
//! `lse`) are F32 of shape `[rows]`; outputs are overwritten (never accumulated) unless
//! stated; float data may be F32 or BF16, math is done in f32.

use crate::View;

/// Which GELU: forward and backward always use the same one (a mismatch is a classic bug).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GeluKind {
    /// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as in GPT-2.
    Tanh,
    /// 0.5 x (1 + erf(x / sqrt 2)), exact.
    Erf,
}

/// Whether a port ran a composite itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handled {
    Yes,
    No,
}

/// One composite call. See the module docs for conventions.
#[derive(Clone, Debug)]
pub enum Composite {
    /// y = softmax(x) over the last axis. A row that is entirely -inf gives all zeros.
    SoftmaxFwd { x: View, y: View },
    /// dx = y * (dy - sum(dy * y)) per row.
    SoftmaxBwd { y: View, dy: View, dx: View },
    /// y = x - logsumexp(x) over the last axis. A row that is entirely -inf gives all -inf.
    LogSoftmaxFwd { x: View, y: View },
    /// dx = dy - exp(y) * sum(dy) per row (rows of -inf give dx = dy where exp(y) = 0).
    LogSoftmaxBwd { y: View, dy: View, dx: View },
    /// y = (x - mean) * rstd * weight + bias, rstd = 1/sqrt(var + eps), biased variance.
    LayerNormFwd { x: View, weight: Option<View>, bias: Option<View>, eps: f32, y: View, mean: View, rstd: View },
    /// Gradients of LayerNormFwd; `dweight`/`dbias` are `[D]`, summed over rows.
    LayerNormBwd {
        x: View,
        weight: Option<View>,
        mean: View,
        rstd: View,
        dy: View,
        dx: View,
        dweight: Option<View>,
        dbias: Option<View>,
    },
    /// y = x * rstd * weight, rstd = 1/sqrt(mean(x^2) + eps).
    RmsNormFwd { x: View, weight: Option<View>, eps: f32, y: View, rstd: View },
    /// Gradients of RmsNormFwd; `dweight` is `[D]`, summed over rows.
    RmsNormBwd { x: View, weight: Option<View>, rstd: View, dy: View, dx: View, dweight: Option<View> },
    /// y = gelu(x) of the given kind.
    GeluFwd { kind: GeluKind, x: View, y: View },
    /// dx = dy * gelu'(x) of the same kind.
    GeluBwd { kind: GeluKind, x: View, dy: View, dx: View },
    /// y = x * sigmoid(x). x and y may have any strides (the gate half of a fused gate/up
    /// projection), as may x, dy and dx in the backward.
    SiluFwd { x: View, y: View },
    /// dx = dy * s * (1 + x (1 - s)), s = sigmoid(x).
    SiluBwd { x: View, dy: View, dx: View },
    /// SwiGLU over the two halves of one gate/up projection: for x `[..., 2F]` (gate g first,
    /// up u second), y `[..., F]` = silu(g) * u.
    SwigluFwd { x: View, y: View },
    /// Gradients of SwigluFwd into the two halves of dx `[..., 2F]`: dg = dy * u * silu'(g),
    /// du = dy * silu(g), with silu'(g) = s (1 + g (1 - s)), s = sigmoid(g).
    SwigluBwd { x: View, dy: View, dx: View },
    /// Fused log-softmax + NLL. logits `[N,V]`, targets `[N]` I32, loss `[1]` F32, lse `[N]` F32.
    /// loss = mean over rows with target >= 0 of (lse - logits[target]); rows with a negative
    /// target are ignored; with no counted row the loss is 0.
    CrossEntropyFwd { logits: View, targets: View, loss: View, lse: View },
    /// dlogits = dloss * (softmax(logits) - onehot(target)) / count, zero rows for ignored targets.
    /// `dloss` is `[1]` F32 (kept on device so no host round trip is needed).
    CrossEntropyBwd { logits: View, targets: View, lse: View, dloss: View, dlogits: View },
    /// Scaled dot-product attention with grouped KV heads.
    /// q `[B,Hq,T,Dh]`, k and v `[B,Hkv,S,Dh]` with Hq % Hkv == 0 (query head h reads KV head
    /// h / (Hq/Hkv)); out `[B,Hq,T,Dh]`; lse `[B,Hq,T]` F32 is logsumexp of the scaled scores.
    /// With `causal`, query t sees keys s <= t + (S - T). A query with no visible key gives
    /// out = 0 and lse = -inf. q, k, v, out (and in the backward dout, dq, dk, dv) may have any
    /// strides, so heads of a fused QKV projection are read in place and out may be laid out
    /// `[B,T,Hq,Dh]`; lse is contiguous. Output views do not overlap one another or the inputs.
    ///
    /// Operands: q, k and v share one dtype (and dout in the backward), the dtype the products
    /// multiply in, accumulating in f32; out, dq, dk and dv may be F32 or that dtype. With BF16
    /// operands (autocast attention), softmax and lse stay f32 and every other f32 value that
    /// enters a product is rounded to bf16 first, as FlashAttention does: the probabilities
    /// before P V (unnormalised, exp(S - m) for the row's max m or an online softmax's running
    /// max, with the sum taken before rounding; or P itself), P before dv = P^T dout, and
    /// dS = P (dP - D) (from the f32 P) before dq and dk. D = rowsum(dout * out) is f32.
    AttentionFwd { q: View, k: View, v: View, scale: f32, causal: bool, out: View, lse: View },
    /// Gradients of AttentionFwd; dk and dv sum over the query heads that share a KV head.
    AttentionBwd {
        q: View,
        k: View,
        v: View,
        out: View,
        lse: View,
        dout: View,
        scale: f32,
        causal: bool,
        dq: View,
        dk: View,
        dv: View,
    },
    /// out = table[ids]: table `[V,D]`, ids `[N]` I32 (in range), out `[N,D]`.
    EmbeddingFwd { table: View, ids: View, out: View },
    /// dtable = 0, then dtable[ids[n]] += dout[n] (repeated ids accumulate).
    EmbeddingBwd { ids: View, dout: View, dtable: View },
    /// Rotary embedding, rotate-half convention (Hugging Face Llama): x `[B,H,T,Dh]`,
    /// cos and sin `[T, Dh/2]`; with x1 = x[..., :Dh/2], x2 = x[..., Dh/2:]:
    /// y1 = x1 cos - x2 sin, y2 = x2 cos + x1 sin. x and y may have any strides (heads of a
    /// fused QKV projection), as may dy and dx in the backward; cos and sin are contiguous.
    RopeFwd { x: View, cos: View, sin: View, y: View },
    /// The inverse rotation applied to dy: dx1 = dy1 cos + dy2 sin, dx2 = dy2 cos - dy1 sin.
    RopeBwd { dy: View, cos: View, sin: View, dx: View },
    /// y = x w^T + b: x `[N,In]`, w `[Out,In]`, b `[Out]`, y `[N,Out]`.
    LinearFwd { x: View, w: View, b: Option<View>, y: View },
    /// dx = dy w, dw = dy^T x, db = sum_rows dy; each written only when present.
    LinearBwd { x: View, w: View, dy: View, dx: Option<View>, dw: Option<View>, db: Option<View> },
    /// One AdamW update in place, exactly as PyTorch's `torch.optim.AdamW` (step t >= 1):
    /// g = grad * grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    /// p = p (1 - lr wd); p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
    /// param F32 or BF16; grad same dtype or F32; m, v F32; grad_scale `[1]` F32 or absent (1).
    AdamWStep {
        param: View,
        grad: View,
        m: View,
        v: View,
        grad_scale: Option<View>,
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
        step: u64,
    },
    /// out `[1]` F32 = sqrt(sum over every element of every grad of g^2).
    GradNorm { grads: Vec<View>, out: View },
    /// Inverted dropout: element i is kept when uniform(seed, offset + i) >= p;
    /// mask = kept ? 1/(1-p) : 0 (dtype of x), y = x * mask.
    DropoutFwd { x: View, p: f32, seed: u64, offset: u64, y: View, mask: View },
    /// dx = dy * mask.
    DropoutBwd { dy: View, mask: View, dx: View },
    /// Mixture-of-experts combine: for y `[S, D]` (the experts' output rows), w `[S, 1]` (each
    /// row's routing weight; F32 or y's dtype) and tok `[S]` I32 (each row's token, below N):
    /// out `[N, D]` = 0, then out[tok[s]] += w[s] y[s] for s = 0, 1, ... in order. out has y's dtype.
    MoeCombineFwd { y: View, w: View, tok: View, out: View },
    /// Gradients of MoeCombineFwd, each written only when present: dy[s] = w[s] dout[tok[s]]
    /// `[S, D]`, dw[s] = <dout[tok[s]], y[s]> `[S, 1]`.
    MoeCombineBwd { y: View, w: View, tok: View, dout: View, dy: Option<View>, dw: Option<View> },
    /// Mixture-of-experts router: for x `[N, D]` (the tokens' hidden states) and w `[E, D]` (one
    /// row per expert), z = x w^T `[N, E]` (kept in f32, never rounded to a narrower dtype) and
    /// probs `[N, E]` = softmax(z) over the last axis, in x's dtype. x and w are F32 or BF16.
    MoeRouterFwd { x: View, w: View, probs: View },
    /// Gradients of MoeRouterFwd from its output probs and dprobs `[N, E]`: with
    /// dz = probs * (dprobs - rowsum(dprobs * probs)) (in f32), dx = dz w `[N, D]` and
    /// dw = dz^T x `[E, D]`, each written (overwritten, as `LinearBwd` does) only when present,
    /// in its own dtype (F32, or that of x or w).
    MoeRouterBwd { x: View, w: View, probs: View, dprobs: View, dx: Option<View>, dw: Option<View> },
    /// Grouped linear (the experts of a mixture-of-experts layer, over expert-sorted rows): for
    /// x `[S, In]`, E weights ws[e] `[Out, In]` (one shape and dtype) and offsets `[E + 1]`
    /// non-decreasing from offsets[0] = 0 to offsets[E] = S, group e is rows
    /// offsets[e]..offsets[e+1] and y `[S, Out]` has y_e = x_e ws[e]^T there: `LinearFwd`
    /// without bias on each group's rows. An empty group (offsets[e] = offsets[e+1]) writes
    /// nothing. Dtypes as `LinearFwd`; a port may run the groups in any order or at once.
    GroupedLinearFwd { x: View, ws: Vec<View>, offsets: Vec<usize>, y: View },
    /// Gradients of GroupedLinearFwd per group e, from dy `[S, Out]`: dx_e = dy_e ws[e] (rows
    /// offsets[e]..offsets[e+1] of dx `[S, In]`) and dws[e] = dy_e^T x_e `[Out, In]`, each written
    /// (overwritten, as `LinearBwd` does) only when present; `dws` has E entries, and an empty
    /// group's dws[e], when present, is zeroed (the empty sum).
    GroupedLinearBwd { x: View, ws: Vec<View>, dy: View, offsets: Vec<usize>, dx: Option<View>, dws: Vec<Option<View>> },
}

impl Composite {
    /// Names of every composite family, as listed in `Capabilities::fused` and reports.
    pub const NAMES: [&'static str; 18] = [
        "softmax",
        "log_softmax",
        "layer_norm",
        "rms_norm",
        "gelu",
        "silu",
        "swiglu",
        "cross_entropy",
        "attention",
        "embedding",
        "rope",
        "linear",
        "adamw",
        "grad_norm",
        "dropout",
        "moe_combine",
        "moe_router",
        "grouped_linear",
    ];

    /// Family name of this call (forward and backward share one).
    pub fn name(&self) -> &'static str {
        use Composite::*;
        match self {
            SoftmaxFwd { .. } | SoftmaxBwd { .. } => "softmax",
            LogSoftmaxFwd { .. } | LogSoftmaxBwd { .. } => "log_softmax",
            LayerNormFwd { .. } | LayerNormBwd { .. } => "layer_norm",
            RmsNormFwd { .. } | RmsNormBwd { .. } => "rms_norm",
            GeluFwd { .. } | GeluBwd { .. } => "gelu",
            SiluFwd { .. } | SiluBwd { .. } => "silu",
            SwigluFwd { .. } | SwigluBwd { .. } => "swiglu",
            CrossEntropyFwd { .. } | CrossEntropyBwd { .. } => "cross_entropy",
            AttentionFwd { .. } | AttentionBwd { .. } => "attention",
            EmbeddingFwd { .. } | EmbeddingBwd { .. } => "embedding",
            RopeFwd { .. } | RopeBwd { .. } => "rope",
            LinearFwd { .. } | LinearBwd { .. } => "linear",
            AdamWStep { .. } => "adamw",
            GradNorm { .. } => "grad_norm",
            DropoutFwd { .. } | DropoutBwd { .. } => "dropout",
            MoeCombineFwd { .. } | MoeCombineBwd { .. } => "moe_combine",
            MoeRouterFwd { .. } | MoeRouterBwd { .. } => "moe_router",
            GroupedLinearFwd { .. } | GroupedLinearBwd { .. } => "grouped_linear",
        }
    }
}

impl Composite {
    /// The same call with every view passed through `f` (e.g. to run it on a mirror port).
    pub fn map_views(&self, f: &dyn Fn(&View) -> View) -> Composite {
        let o = |v: &Option<View>| v.as_ref().map(f);
        use Composite::*;
        match self {
            SoftmaxFwd { x, y } => SoftmaxFwd { x: f(x), y: f(y) },
            SoftmaxBwd { y, dy, dx } => SoftmaxBwd { y: f(y), dy: f(dy), dx: f(dx) },
            LogSoftmaxFwd { x, y } => LogSoftmaxFwd { x: f(x), y: f(y) },
            LogSoftmaxBwd { y, dy, dx } => LogSoftmaxBwd { y: f(y), dy: f(dy), dx: f(dx) },
            LayerNormFwd { x, weight, bias, eps, y, mean, rstd } => LayerNormFwd {
                x: f(x),
                weight: o(weight),
                bias: o(bias),
                eps: *eps,
                y: f(y),
                mean: f(mean),
                rstd: f(rstd),
            },
            LayerNormBwd { x, weight, mean, rstd, dy, dx, dweight, dbias } => LayerNormBwd {
                x: f(x),
                weight: o(weight),
                mean: f(mean),
                rstd: f(rstd),
                dy: f(dy),
                dx: f(dx),
                dweight: o(dweight),
                dbias: o(dbias),
            },
            RmsNormFwd { x, weight, eps, y, rstd } => {
                RmsNormFwd { x: f(x), weight: o(weight), eps: *eps, y: f(y), rstd: f(rstd) }
            }
            RmsNormBwd { x, weight, rstd, dy, dx, dweight } => {
                RmsNormBwd { x: f(x), weight: o(weight), rstd: f(rstd), dy: f(dy), dx: f(dx), dweight: o(dweight) }
            }
            GeluFwd { kind, x, y } => GeluFwd { kind: *kind, x: f(x), y: f(y) },
            GeluBwd { kind, x, dy, dx } => GeluBwd { kind: *kind, x: f(x), dy: f(dy), dx: f(dx) },
            SiluFwd { x, y } => SiluFwd { x: f(x), y: f(y) },
            SiluBwd { x, dy, dx } => SiluBwd { x: f(x), dy: f(dy), dx: f(dx) },
            SwigluFwd { x, y } => SwigluFwd { x: f(x), y: f(y) },
            SwigluBwd { x, dy, dx } => SwigluBwd { x: f(x), dy: f(dy), dx: f(dx) },
            CrossEntropyFwd { logits, targets, loss, lse } => {
                CrossEntropyFwd { logits: f(logits), targets: f(targets), loss: f(loss), lse: f(lse) }
            }
            CrossEntropyBwd { logits, targets, lse, dloss, dlogits } => CrossEntropyBwd {
                logits: f(logits),
                targets: f(targets),
                lse: f(lse),
                dloss: f(dloss),
                dlogits: f(dlogits),
            },
            AttentionFwd { q, k, v, scale, causal, out, lse } => {
                AttentionFwd { q: f(q), k: f(k), v: f(v), scale: *scale, causal: *causal, out: f(out), lse: f(lse) }
            }
            AttentionBwd { q, k, v, out, lse, dout, scale, causal, dq, dk, dv } => AttentionBwd {
                q: f(q),
                k: f(k),
                v: f(v),
                out: f(out),
                lse: f(lse),
                dout: f(dout),
                scale: *scale,
                causal: *causal,
                dq: f(dq),
                dk: f(dk),
                dv: f(dv),
            },
            EmbeddingFwd { table, ids, out } => EmbeddingFwd { table: f(table), ids: f(ids), out: f(out) },
            EmbeddingBwd { ids, dout, dtable } => EmbeddingBwd { ids: f(ids), dout: f(dout), dtable: f(dtable) },
            RopeFwd { x, cos, sin, y } => RopeFwd { x: f(x), cos: f(cos), sin: f(sin), y: f(y) },
            RopeBwd { dy, cos, sin, dx } => RopeBwd { dy: f(dy), cos: f(cos), sin: f(sin), dx: f(dx) },
            LinearFwd { x, w, b, y } => LinearFwd { x: f(x), w: f(w), b: o(b), y: f(y) },
            LinearBwd { x, w, dy, dx, dw, db } => {
                LinearBwd { x: f(x), w: f(w), dy: f(dy), dx: o(dx), dw: o(dw), db: o(db) }
            }
            AdamWStep { param, grad, m, v, grad_scale, lr, beta1, beta2, eps, weight_decay, step } => AdamWStep {
                param: f(param),
                grad: f(grad),
                m: f(m),
                v: f(v),
                grad_scale: o(grad_scale),
                lr: *lr,
                beta1: *beta1,
                beta2: *beta2,
                eps: *eps,
                weight_decay: *weight_decay,
                step: *step,
            },
            GradNorm { grads, out } => GradNorm { grads: grads.iter().map(f).collect(), out: f(out) },
            DropoutFwd { x, p, seed, offset, y, mask } => {
                DropoutFwd { x: f(x), p: *p, seed: *seed, offset: *offset, y: f(y), mask: f(mask) }
            }
            DropoutBwd { dy, mask, dx } => DropoutBwd { dy: f(dy), mask: f(mask), dx: f(dx) },
            MoeCombineFwd { y, w, tok, out } => MoeCombineFwd { y: f(y), w: f(w), tok: f(tok), out: f(out) },
            MoeCombineBwd { y, w, tok, dout, dy, dw } => {
                MoeCombineBwd { y: f(y), w: f(w), tok: f(tok), dout: f(dout), dy: o(dy), dw: o(dw) }
            }
            MoeRouterFwd { x, w, probs } => MoeRouterFwd { x: f(x), w: f(w), probs: f(probs) },
            MoeRouterBwd { x, w, probs, dprobs, dx, dw } => {
                MoeRouterBwd { x: f(x), w: f(w), probs: f(probs), dprobs: f(dprobs), dx: o(dx), dw: o(dw) }
            }
            GroupedLinearFwd { x, ws, offsets, y } => {
                GroupedLinearFwd { x: f(x), ws: ws.iter().map(f).collect(), offsets: offsets.clone(), y: f(y) }
            }
            GroupedLinearBwd { x, ws, dy, offsets, dx, dws } => GroupedLinearBwd {
                x: f(x),
                ws: ws.iter().map(f).collect(),
                dy: f(dy),
                offsets: offsets.clone(),
                dx: o(dx),
                dws: dws.iter().map(o).collect(),
            },
        }
    }

    /// The views this call writes, each with a short name (for reports that compare results).
    pub fn outputs<'a>(&'a self) -> Vec<(&'static str, &'a View)> {
        use Composite::*;
        let mut v: Vec<(&'static str, &'a View)> = Vec::new();
        let opt = |name: &'static str, o: &'a Option<View>| o.as_ref().map(|o| (name, o));
        match self {
            SoftmaxFwd { y, .. }
            | LogSoftmaxFwd { y, .. }
            | GeluFwd { y, .. }
            | SiluFwd { y, .. }
            | SwigluFwd { y, .. } => v.push(("y", y)),
            SoftmaxBwd { dx, .. }
            | LogSoftmaxBwd { dx, .. }
            | GeluBwd { dx, .. }
            | SiluBwd { dx, .. }
            | SwigluBwd { dx, .. } => v.push(("dx", dx)),
            LayerNormFwd { y, mean, rstd, .. } => v.extend([("y", y), ("mean", mean), ("rstd", rstd)]),
            LayerNormBwd { dx, dweight, dbias, .. } => {
                v.push(("dx", dx));
                v.extend(opt("dweight", dweight));
                v.extend(opt("dbias", dbias));
            }
            RmsNormFwd { y, rstd, .. } => v.extend([("y", y), ("rstd", rstd)]),
            RmsNormBwd { dx, dweight, .. } => {
                v.push(("dx", dx));
                v.extend(opt("dweight", dweight));
            }
            CrossEntropyFwd { loss, lse, .. } => v.extend([("loss", loss), ("lse", lse)]),
            CrossEntropyBwd { dlogits, .. } => v.push(("dlogits", dlogits)),
            AttentionFwd { out, lse, .. } => v.extend([("out", out), ("lse", lse)]),
            AttentionBwd { dq, dk, dv, .. } => v.extend([("dq", dq), ("dk", dk), ("dv", dv)]),
            EmbeddingFwd { out, .. } => v.push(("out", out)),
            EmbeddingBwd { dtable, .. } => v.push(("dtable", dtable)),
            RopeFwd { y, .. } => v.push(("y", y)),
            RopeBwd { dx, .. } => v.push(("dx", dx)),
            LinearFwd { y, .. } => v.push(("y", y)),
            LinearBwd { dx, dw, db, .. } => {
                v.extend(opt("dx", dx));
                v.extend(opt("dw", dw));
                v.extend(opt("db", db));
            }
            AdamWStep { param, m, v: vv, .. } => v.extend([("param", param), ("m", m), ("v", vv)]),
            GradNorm { out, .. } => v.push(("out", out)),
            DropoutFwd { y, mask, .. } => v.extend([("y", y), ("mask", mask)]),
            DropoutBwd { dx, .. } => v.push(("dx", dx)),
            MoeCombineFwd { out, .. } => v.push(("out", out)),
            MoeCombineBwd { dy, dw, .. } => {
                v.extend(opt("dy", dy));
                v.extend(opt("dw", dw));
            }
            MoeRouterFwd { probs, .. } => v.push(("probs", probs)),
            MoeRouterBwd { dx, dw, .. } => {
                v.extend(opt("dx", dx));
                v.extend(opt("dw", dw));
            }
            GroupedLinearFwd { y, .. } => v.push(("y", y)),
            GroupedLinearBwd { dx, dws, .. } => {
                v.extend(opt("dx", dx));
                // One entry per present group gradient, in group order.
                v.extend(dws.iter().flat_map(|d| opt("dws", d)));
            }
        }
        v
    }
}
