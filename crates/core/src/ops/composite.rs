//! Composite ops (softmax, norms, activations, linear, attention, cross-entropy...).
//!
//! Each records ONE autograd node whose backward is the composite's analytic `*Bwd` call, so
//! whatever a port runs for the forward (fused kernel or default decomposition), the gradient
//! is the one the contract defines.

use crate::error::{shape_err, Result};
use crate::tensor::{dtype_err, Tensor};
use anychip_port::{Composite, DType, GeluKind, Port};

pub(crate) fn run(port: &std::sync::Arc<dyn Port>, call: Composite) -> Result<()> {
    anychip_decomp::dispatch(port.as_ref(), &call)?;
    Ok(())
}

/// Rows of a `[..., D]` tensor: the product of the leading axes.
fn rows(t: &Tensor) -> usize {
    t.numel() / t.dim(-1).max(1)
}

impl Tensor {
    /// Softmax over the last axis.
    pub fn softmax(&self) -> Result<Tensor> {
        let x = self.contiguous()?;
        let y = x.empty_like()?;
        run(x.port(), Composite::SoftmaxFwd { x: x.view(), y: y.view() })?;
        let yd = y.detach();
        Ok(y.record("softmax", &[&x], move |g, _| {
            let (dy, dx) = (g.contiguous()?, yd.empty_like()?);
            run(yd.port(), Composite::SoftmaxBwd { y: yd.view(), dy: dy.view(), dx: dx.view() })?;
            Ok(vec![Some(dx)])
        }))
    }

    /// Log-softmax over the last axis.
    pub fn log_softmax(&self) -> Result<Tensor> {
        let x = self.contiguous()?;
        let y = x.empty_like()?;
        run(x.port(), Composite::LogSoftmaxFwd { x: x.view(), y: y.view() })?;
        let yd = y.detach();
        Ok(y.record("log_softmax", &[&x], move |g, _| {
            let (dy, dx) = (g.contiguous()?, yd.empty_like()?);
            run(yd.port(), Composite::LogSoftmaxBwd { y: yd.view(), dy: dy.view(), dx: dx.view() })?;
            Ok(vec![Some(dx)])
        }))
    }

    /// LayerNorm over the last axis with optional affine weight and bias `[D]`.
    pub fn layer_norm(&self, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f32) -> Result<Tensor> {
        let x = self.contiguous()?;
        let n = rows(&x);
        let y = x.empty_like()?;
        let mean = x.empty_on(&[n], DType::F32)?;
        let rstd = x.empty_on(&[n], DType::F32)?;
        let (w, b) = (weight.map(|w| w.detach()), bias.map(|b| b.detach()));
        run(
            x.port(),
            Composite::LayerNormFwd {
                x: x.view(),
                weight: w.as_ref().map(|t| t.view()),
                bias: b.as_ref().map(|t| t.view()),
                eps,
                y: y.view(),
                mean: mean.view(),
                rstd: rstd.view(),
            },
        )?;
        let mut inputs = vec![&x];
        inputs.extend(weight);
        inputs.extend(bias);
        let xd = x.detach();
        let has_b = bias.is_some();
        Ok(y.record("layer_norm", &inputs, move |g, needs| {
            let dy = g.contiguous()?;
            let dx = xd.empty_like()?;
            let dw = match &w {
                Some(w) if needs[1] => Some(w.empty_on(w.shape(), DType::F32)?),
                _ => None,
            };
            let db = match &b {
                Some(b) if needs[if w.is_some() { 2 } else { 1 }] => Some(b.empty_on(b.shape(), DType::F32)?),
                _ => None,
            };
            run(
                xd.port(),
                Composite::LayerNormBwd {
                    x: xd.view(),
                    weight: w.as_ref().map(|t| t.view()),
                    mean: mean.view(),
                    rstd: rstd.view(),
                    dy: dy.view(),
                    dx: dx.view(),
                    dweight: dw.as_ref().map(|t| t.view()),
                    dbias: db.as_ref().map(|t| t.view()),
                },
            )?;
            let mut out = vec![Some(dx)];
            if let Some(w) = &w {
                out.push(dw.map(|d| d.cast(w.dtype())).transpose()?);
            }
            if has_b {
                let bd = b.as_ref().unwrap().dtype();
                out.push(db.map(|d| d.cast(bd)).transpose()?);
            }
            Ok(out)
        }))
    }

    /// RMSNorm over the last axis with optional weight `[D]`.
    pub fn rms_norm(&self, weight: Option<&Tensor>, eps: f32) -> Result<Tensor> {
        let x = self.contiguous()?;
        let y = x.empty_like()?;
        let rstd = x.empty_on(&[rows(&x)], DType::F32)?;
        let w = weight.map(|w| w.detach());
        run(
            x.port(),
            Composite::RmsNormFwd {
                x: x.view(),
                weight: w.as_ref().map(|t| t.view()),
                eps,
                y: y.view(),
                rstd: rstd.view(),
            },
        )?;
        let mut inputs = vec![&x];
        inputs.extend(weight);
        let xd = x.detach();
        Ok(y.record("rms_norm", &inputs, move |g, needs| {
            let dy = g.contiguous()?;
            let dx = xd.empty_like()?;
            let dw = match &w {
                Some(w) if needs[1] => Some(w.empty_on(w.shape(), DType::F32)?),
                _ => None,
            };
            run(
                xd.port(),
                Composite::RmsNormBwd {
                    x: xd.view(),
                    weight: w.as_ref().map(|t| t.view()),
                    rstd: rstd.view(),
                    dy: dy.view(),
                    dx: dx.view(),
                    dweight: dw.as_ref().map(|t| t.view()),
                },
            )?;
            let mut out = vec![Some(dx)];
            if let Some(w) = &w {
                out.push(dw.map(|d| d.cast(w.dtype())).transpose()?);
            }
            Ok(out)
        }))
    }

    /// GELU of the given kind; the backward uses the same kind.
    pub fn gelu(&self, kind: GeluKind) -> Result<Tensor> {
        let x = self.contiguous()?;
        let y = x.empty_like()?;
        run(x.port(), Composite::GeluFwd { kind, x: x.view(), y: y.view() })?;
        let xd = x.detach();
        Ok(y.record("gelu", &[&x], move |g, _| {
            let (dy, dx) = (g.contiguous()?, xd.empty_like()?);
            run(xd.port(), Composite::GeluBwd { kind, x: xd.view(), dy: dy.view(), dx: dx.view() })?;
            Ok(vec![Some(dx)])
        }))
    }

    /// SiLU (x * sigmoid(x)).
    pub fn silu(&self) -> Result<Tensor> {
        let x = self.contiguous()?;
        let y = x.empty_like()?;
        run(x.port(), Composite::SiluFwd { x: x.view(), y: y.view() })?;
        let xd = x.detach();
        Ok(y.record("silu", &[&x], move |g, _| {
            let (dy, dx) = (g.contiguous()?, xd.empty_like()?);
            run(xd.port(), Composite::SiluBwd { x: xd.view(), dy: dy.view(), dx: dx.view() })?;
            Ok(vec![Some(dx)])
        }))
    }

    /// Inverted dropout with the Philox stream (`seed`, `offset`); identity when p == 0.
    pub fn dropout(&self, p: f32, seed: u64, offset: u64) -> Result<Tensor> {
        if p <= 0.0 {
            return Ok(self.clone());
        }
        let x = self.contiguous()?;
        let (y, mask) = (x.empty_like()?, x.empty_like()?);
        run(x.port(), Composite::DropoutFwd { x: x.view(), p, seed, offset, y: y.view(), mask: mask.view() })?;
        Ok(y.record("dropout", &[&x], move |g, _| {
            let (dy, dx) = (g.contiguous()?, mask.empty_like()?);
            run(mask.port(), Composite::DropoutBwd { dy: dy.view(), mask: mask.view(), dx: dx.view() })?;
            Ok(vec![Some(dx)])
        }))
    }
}

/// y = x w^T + b for x `[..., In]`, w `[Out, In]`, b `[Out]`.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    linear_impl(x, w, b, None)
}

/// [`linear`] with the product's operands rounded to `operands` (autocast): x and w are cast to
/// it on the way in, the product accumulates in f32 and y keeps x's dtype, as does the bias
/// add. The backward rounds dy to `operands` for dx = dy w and dw = dy^T x (f32 accumulation,
/// dx and dw written in x's and w's own dtypes), and sums db from the unrounded dy.
///
/// With `operands` = BF16 and f32 x and w this is bf16 mixed precision as `torch.autocast` does
/// it, with the weight gradient kept in f32. Every port gets it: the composite receives bf16
/// x, w and dy with f32 y, dx and dw, and a port without a bf16 matrix unit computes the same
/// numbers by widening (a bf16 product is exact in f32). With `operands` equal to both dtypes
/// it is plain [`linear`].
pub fn linear_autocast(x: &Tensor, w: &Tensor, b: Option<&Tensor>, operands: DType) -> Result<Tensor> {
    if x.dtype() == operands && w.dtype() == operands {
        return linear(x, w, b);
    }
    linear_impl(x, w, b, Some(operands))
}

/// `t` as an autocast product sees it: a copy rounded to `operands` (none when it already is
/// that dtype, or when not autocasting), cut from the graph, since the calling node's backward
/// is its composite's own.
pub(crate) fn operand(t: &Tensor, operands: Option<DType>) -> Result<Tensor> {
    match operands {
        Some(dt) => t.detach().cast(dt),
        None => Ok(t.detach()),
    }
}

fn linear_impl(x: &Tensor, w: &Tensor, b: Option<&Tensor>, operands: Option<DType>) -> Result<Tensor> {
    let in_f = x.dim(-1);
    if w.rank() != 2 || w.dim(1) != in_f {
        return shape_err("linear", format!("input {:?} with weight {:?} (want [out, {in_f}])", x.shape(), w.shape()));
    }
    let out_f = w.dim(0);
    let mut out_shape: Vec<isize> = x.shape()[..x.rank() - 1].iter().map(|&d| d as isize).collect();
    out_shape.push(out_f as isize);
    let x2 = x.reshape(&[-1, in_f as isize])?;
    let (wc, bc) = (w.contiguous()?, b.map(|b| b.contiguous()).transpose()?);
    let y = x2.empty_on(&[x2.dim(0), out_f], x.dtype())?;
    let (xd, wd, bd) = (operand(&x2, operands)?, operand(&wc, operands)?, bc.as_ref().map(|t| t.detach()));
    let (x_dtype, w_dtype) = (x2.dtype(), wc.dtype());
    run(x.port(), Composite::LinearFwd { x: xd.view(), w: wd.view(), b: bd.as_ref().map(|t| t.view()), y: y.view() })?;
    let mut inputs = vec![&x2, &wc];
    inputs.extend(bc.as_ref());
    let y = y.record("linear", &inputs, move |g, needs| {
        let dy = g.contiguous()?;
        let dyr = match operands {
            Some(dt) => dy.cast(dt)?,
            None => dy.clone(),
        };
        let dx = if needs[0] { Some(xd.empty_on(xd.shape(), x_dtype)?) } else { None };
        let dw = if needs[1] { Some(wd.empty_on(wd.shape(), w_dtype)?) } else { None };
        let want_db = bd.is_some() && needs.get(2).copied().unwrap_or(false);
        // Autocast sums db from the f32 dy, so the port is not asked for it.
        let db = if want_db && operands.is_none() { bd.as_ref().map(|b| b.empty_like()).transpose()? } else { None };
        run(
            xd.port(),
            Composite::LinearBwd {
                x: xd.view(),
                w: wd.view(),
                dy: dyr.view(),
                dx: dx.as_ref().map(|t| t.view()),
                dw: dw.as_ref().map(|t| t.view()),
                db: db.as_ref().map(|t| t.view()),
            },
        )?;
        let db = match (&bd, operands) {
            (Some(b), Some(_)) if want_db => Some(dy.sum_axes(&[0], false)?.cast(b.dtype())?),
            _ => db,
        };
        let mut out = vec![dx, dw];
        if bd.is_some() {
            out.push(db);
        }
        Ok(out)
    });
    y.reshape(&out_shape)
}

/// Refuse a target id `>= vocab`: the composite's contract would silently score it as a class
/// no logit has (negative ids are the contract's "ignore this row"). Reads the N targets to the
/// host, a sync the caller's `loss.item()` makes anyway. A port that holds no values (a
/// shapes-only modelled chip answers reads with `Unsupported`) has no ids to check.
fn check_targets(targets: &Tensor, vocab: usize) -> Result<()> {
    let ids = match targets.to_vec_i32() {
        Err(crate::Error::Port(anychip_port::PortError::Unsupported(_))) => return Ok(()),
        other => other?,
    };
    match ids.iter().enumerate().find(|(_, &id)| id >= 0 && id as usize >= vocab) {
        Some((row, id)) => Err(anychip_port::PortError::Invalid(format!(
            "cross_entropy: target id {id} at row {row} is outside the vocabulary of {vocab}; check token ids against the model's vocabulary"
        ))
        .into()),
        None => Ok(()),
    }
}

/// Mean cross-entropy of `logits [N, V]` against `targets [N]` (I32; negative = ignored).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if logits.rank() != 2 || targets.shape() != [logits.dim(0)] {
        return shape_err("cross_entropy", format!("logits {:?}, targets {:?}", logits.shape(), targets.shape()));
    }
    if targets.dtype() != DType::I32 {
        return Err(dtype_err("cross_entropy", "targets must be i32"));
    }
    check_targets(targets, logits.dim(1))?;
    let x = logits.contiguous()?;
    let t = targets.contiguous()?.detach();
    let loss = x.empty_on(&[1], DType::F32)?;
    let lse = x.empty_on(&[x.dim(0)], DType::F32)?;
    run(
        x.port(),
        Composite::CrossEntropyFwd { logits: x.view(), targets: t.view(), loss: loss.view(), lse: lse.view() },
    )?;
    let xd = x.detach();
    Ok(loss.record("cross_entropy", &[&x], move |g, _| {
        let dloss = g.cast(DType::F32)?.contiguous()?;
        let dx = xd.empty_like()?;
        run(
            xd.port(),
            Composite::CrossEntropyBwd {
                logits: xd.view(),
                targets: t.view(),
                lse: lse.view(),
                dloss: dloss.view(),
                dlogits: dx.view(),
            },
        )?;
        Ok(vec![Some(dx)])
    }))
}

/// Rows of `table [V, D]` picked by `ids` (I32, any shape): output `ids.shape + [D]`.
pub fn embedding(table: &Tensor, ids: &Tensor) -> Result<Tensor> {
    if table.rank() != 2 || ids.dtype() != DType::I32 {
        return shape_err("embedding", format!("table {:?} (want [V, D]), ids {}", table.shape(), ids.dtype()));
    }
    let idx = ids.contiguous()?.detach().reshape(&[-1])?;
    let d = table.dim(1);
    let tc = table.contiguous()?;
    let out = tc.empty_on(&[idx.numel(), d], tc.dtype())?;
    run(tc.port(), Composite::EmbeddingFwd { table: tc.view(), ids: idx.view(), out: out.view() })?;
    let td = tc.detach();
    let out = out.record("embedding", &[&tc], move |g, _| {
        let dout = g.contiguous()?;
        let dt = td.empty_like()?;
        run(td.port(), Composite::EmbeddingBwd { ids: idx.view(), dout: dout.view(), dtable: dt.view() })?;
        Ok(vec![Some(dt)])
    });
    let mut shape: Vec<isize> = ids.shape().iter().map(|&s| s as isize).collect();
    shape.push(d as isize);
    out.reshape(&shape)
}

/// Rotary position embedding (rotate-half) on x `[B,H,T,D]` with cos/sin tables `[T, D/2]`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if x.rank() != 4 || cos.shape() != [x.dim(2), x.dim(3) / 2] || sin.shape() != cos.shape() {
        return shape_err("rope", format!("x {:?}, cos {:?}, sin {:?}", x.shape(), cos.shape(), sin.shape()));
    }
    let x = x.contiguous()?;
    let (c, s) = (cos.contiguous()?.detach(), sin.contiguous()?.detach());
    let y = x.empty_like()?;
    run(x.port(), Composite::RopeFwd { x: x.view(), cos: c.view(), sin: s.view(), y: y.view() })?;
    Ok(y.record("rope", &[&x], move |g, _| {
        let dy = g.contiguous()?;
        let dx = dy.empty_like()?;
        run(dy.port(), Composite::RopeBwd { dy: dy.view(), cos: c.view(), sin: s.view(), dx: dx.view() })?;
        Ok(vec![Some(dx)])
    }))
}

/// Hyper-parameters of one AdamW update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWParams {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

/// One in-place AdamW update of `param` (no autograd); `step` counts from 1.
pub fn adamw_step(
    param: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    grad_scale: Option<&Tensor>,
    hp: AdamWParams,
    step: u64,
) -> Result<()> {
    let g = grad.contiguous()?;
    run(
        param.port(),
        Composite::AdamWStep {
            param: param.view(),
            grad: g.view(),
            m: m.view(),
            v: v.view(),
            grad_scale: grad_scale.map(|t| t.view()),
            lr: hp.lr,
            beta1: hp.beta1,
            beta2: hp.beta2,
            eps: hp.eps,
            weight_decay: hp.weight_decay,
            step,
        },
    )
}

/// Global L2 norm of many gradients, as a `[1]` F32 tensor kept on the device.
pub fn grad_norm(grads: &[&Tensor]) -> Result<Tensor> {
    let first = grads.first().ok_or(crate::Error::Backward("grad_norm of no gradients".into()))?;
    let cs: Vec<Tensor> = grads.iter().map(|g| g.contiguous()).collect::<Result<_>>()?;
    let out = first.empty_on(&[1], DType::F32)?;
    run(first.port(), Composite::GradNorm { grads: cs.iter().map(|g| g.view()).collect(), out: out.view() })?;
    Ok(out)
}
