//! Composite operations: each a forward AND an analytic backward.
//!
//! The engine records a composite as ONE autograd node whose gradient is always the matching
//! `*Bwd` call, so a fused forward can never cut gradients off. Every composite has a default
//! decomposition in `anychip-decomp`; a port overrides one by handling its calls in
//! [`crate::Port::composite`] and listing its [`Composite::name`] in `Capabilities::fused`.
//!
//! Conventions for every call: views are contiguous; "rows" are all leading axes flattened and
//! the last axis is the feature axis; saved statistics (`mean`, `rstd`, `lse`) are F32 of shape
//! `[rows]`; outputs are overwritten (never accumulated) unless stated; float data may be F32
//! or BF16, math is done in f32.

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
    /// y = x * sigmoid(x).
    SiluFwd { x: View, y: View },
    /// dx = dy * s * (1 + x (1 - s)), s = sigmoid(x).
    SiluBwd { x: View, dy: View, dx: View },
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
    /// out = 0 and lse = -inf.
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
    /// y1 = x1 cos - x2 sin, y2 = x2 cos + x1 sin.
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
}

impl Composite {
    /// Names of every composite family, as listed in `Capabilities::fused` and reports.
    pub const NAMES: [&'static str; 14] = [
        "softmax",
        "log_softmax",
        "layer_norm",
        "rms_norm",
        "gelu",
        "silu",
        "cross_entropy",
        "attention",
        "embedding",
        "rope",
        "linear",
        "adamw",
        "grad_norm",
        "dropout",
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
            CrossEntropyFwd { .. } | CrossEntropyBwd { .. } => "cross_entropy",
            AttentionFwd { .. } | AttentionBwd { .. } => "attention",
            EmbeddingFwd { .. } | EmbeddingBwd { .. } => "embedding",
            RopeFwd { .. } | RopeBwd { .. } => "rope",
            LinearFwd { .. } | LinearBwd { .. } => "linear",
            AdamWStep { .. } => "adamw",
            GradNorm { .. } => "grad_norm",
            DropoutFwd { .. } | DropoutBwd { .. } => "dropout",
        }
    }
}
