//! Mixture-of-experts compute: the router's probabilities, grouped SwiGLU experts over
//! expert-sorted rows, and the weighted combine back to token order. The top-k (on the host)
//! and the dispatch gather are ordinary ops; these three are each ONE autograd node with an
//! analytic backward. MoE adds three composites to the port contract: the router
//! (`MoeRouterFwd/Bwd`), the experts' products (`GroupedLinearFwd/Bwd`) and the combine
//! (`MoeCombineFwd/Bwd`), each with a default decomposition (into the linear and softmax
//! decompositions; into one `linear` composite per expert; into `gather_rows`,
//! `scatter_add_rows`, `binary` and `reduce`), so a port that fuses nothing still runs them. The
//! experts' activation is the `SwigluFwd/Bwd` composite every SwiGLU model uses.
//!
//! Router, for x `[N, d]` and the router weight w `[E, d]`:
//!   z = x w^T `[N, E]` (f32), probs = softmax(z) per row;
//!   dz = probs * (dprobs - rowsum(dprobs * probs)), dx = dz w `[N, d]`, dw = dz^T x `[E, d]`.
//! It is the `MoeRouterFwd`/`MoeRouterBwd` composite (fused on `cpu`: one pass over the rows
//! each way instead of a skinny GEMM and a softmax of E-wide rows, with their temporaries).
//!
//! Grouped experts, for x `[S, d]` whose rows `offsets[e]..offsets[e+1]` go to expert e:
//!   h_e = x_e U_e^T `[n_e, 2F]` (gate half then up half), a_e = silu(g_e) * u_e,
//!   y_e = a_e D_e^T `[n_e, d]`.
//! Backward, with dy_e given:
//!   da_e = dy_e D_e, dD_e = dy_e^T a_e; du = da silu(g), dg = silu'(g) (da u);
//!   dU_e = dh_e^T x_e, dx_e = dh_e U_e.
//! The SwiGLU runs once over all S rows (one composite each way); each product runs for every
//! expert at once, as one `GroupedLinear` call on row ranges of one buffer (h = x U^T, y = a D^T
//! forward; da and dD, then dx and dU, backward), so a port can schedule the experts together
//! (`cpu` runs small experts' products side by side, each on one thread) and no per-expert
//! copy, concat or zero-filled gradient is made (an expert without rows gets no gradient).
//!
//! Combine, for y `[S, d]`, weights w `[S, 1]` and the token of each row tok `[S]` (I32):
//!   out `[N, d]`, out[tok[s]] += w[s] y[s];
//!   dy[s] = w[s] dout[tok[s]], dw[s] = <dout[tok[s]], y[s]>.
//! It is the `MoeCombineFwd`/`MoeCombineBwd` composite (default decomposition: a product and a
//! scatter-add of rows forward, a gather and products backward; fused on `cpu`).

use super::composite::run;
use crate::error::{shape_err, Result};
use crate::tensor::Tensor;
use anychip_port::{Composite, DType, View};

/// The views of `ts` (the experts' weights, for a `GroupedLinear` call).
fn views(ts: &[Tensor]) -> Vec<View> {
    ts.iter().map(Tensor::view).collect()
}

fn check_experts(x: &Tensor, offsets: &[usize], up: &[Tensor], down: &[Tensor]) -> Result<usize> {
    let (s, d) = (x.dim(0), x.dim(-1));
    let n = up.len();
    let f = down.first().map_or(0, |t| t.dim(-1));
    let ok_weights = up.iter().all(|u| u.shape() == [2 * f, d]) && down.iter().all(|w| w.shape() == [d, f]);
    if x.rank() != 2 || down.len() != n || offsets.len() != n + 1 || offsets[n] != s || !ok_weights || f == 0 {
        return shape_err(
            "moe_experts",
            format!(
                "x {:?}, {n} up and {} down weights, offsets ending at {:?}",
                x.shape(),
                down.len(),
                offsets.last()
            ),
        );
    }
    if offsets.windows(2).any(|w| w[1] < w[0]) {
        return shape_err("moe_experts", "offsets must not decrease".to_string());
    }
    Ok(f)
}

/// y = SwiGLU(x) through expert e for rows `offsets[e]..offsets[e+1]` of x `[S, d]`, with
/// `up[e]` `[2F, d]` (gate rows then up rows) and `down[e]` `[d, F]`: output `[S, d]`.
pub fn moe_experts(x: &Tensor, offsets: &[usize], up: &[Tensor], down: &[Tensor]) -> Result<Tensor> {
    let f = check_experts(x, offsets, up, down)?;
    let x = x.contiguous()?;
    let (s, d) = (x.dim(0), x.dim(1));
    let port = x.port().clone();
    let (ud, dd): (Vec<Tensor>, Vec<Tensor>) = (
        up.iter().map(|t| t.contiguous().map(|t| t.detach())).collect::<Result<_>>()?,
        down.iter().map(|t| t.contiguous().map(|t| t.detach())).collect::<Result<_>>()?,
    );
    let h = x.empty_on(&[s, 2 * f], x.dtype())?;
    let a = x.empty_on(&[s, f], x.dtype())?;
    let y = x.empty_on(&[s, d], x.dtype())?;
    let (xv, hv, av, yv) = (x.view(), h.view(), a.view(), y.view());
    let offs = offsets.to_vec();
    run(&port, Composite::GroupedLinearFwd { x: xv, ws: views(&ud), offsets: offs.clone(), y: hv.clone() })?;
    run(&port, Composite::SwigluFwd { x: hv, y: av.clone() })?;
    run(&port, Composite::GroupedLinearFwd { x: av, ws: views(&dd), offsets: offs, y: yv })?;
    let mut inputs: Vec<&Tensor> = vec![&x];
    inputs.extend(up.iter());
    inputs.extend(down.iter());
    let (xd, offs) = (x.detach(), offsets.to_vec());
    Ok(y.record("moe_experts", &inputs, move |g, needs| {
        let dy = g.contiguous()?;
        experts_backward(&xd, &h, &a, &ud, &dd, &offs, &dy, needs)
    }))
}

/// The analytic backward of [`moe_experts`] (see the module header for the math).
#[allow(clippy::too_many_arguments)]
fn experts_backward(
    x: &Tensor,
    h: &Tensor,
    a: &Tensor,
    up: &[Tensor],
    down: &[Tensor],
    offsets: &[usize],
    dy: &Tensor,
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>> {
    let n_exp = up.len();
    let port = x.port().clone();
    let (da, dh, dx) = (a.empty_like()?, h.empty_like()?, x.empty_like()?);
    let (dav, dhv, dxv, dyv, av, hv, xv) = (da.view(), dh.view(), dx.view(), dy.view(), a.view(), h.view(), x.view());
    // Each weight's gradient where autograd needs it and its expert has rows (an expert
    // without rows gets none).
    let grads = |ws: &[Tensor], first: usize| -> Result<Vec<Option<Tensor>>> {
        let wanted = |e: usize| needs[first + e] && offsets[e + 1] > offsets[e];
        (0..n_exp).map(|e| if wanted(e) { ws[e].empty_like().map(Some) } else { Ok(None) }).collect()
    };
    let grad_views = |gs: &[Option<Tensor>]| gs.iter().map(|g| g.as_ref().map(Tensor::view)).collect::<Vec<_>>();
    let d_down = grads(down, 1 + n_exp)?;
    let (dws, offs) = (grad_views(&d_down), offsets.to_vec());
    let call =
        Composite::GroupedLinearBwd { x: av, ws: views(down), dy: dyv, offsets: offs, dx: Some(dav.clone()), dws };
    run(&port, call)?;
    // SwiGLU backward over every row at once: du = da silu(g); dg = silu'(g) (da u).
    run(&port, Composite::SwigluBwd { x: hv, dy: dav, dx: dhv.clone() })?;
    let d_up = grads(up, 1)?;
    let (dws, offs) = (grad_views(&d_up), offsets.to_vec());
    run(&port, Composite::GroupedLinearBwd { x: xv, ws: views(up), dy: dhv, offsets: offs, dx: Some(dxv), dws })?;
    let mut out = vec![Some(dx)];
    out.extend(d_up);
    out.extend(d_down);
    Ok(out)
}

/// out `[n_tokens, d]` with out[tok[s]] = sum of w[s] y[s] over the rows s of that token, for
/// y `[S, d]`, w `[S, 1]` and tok `[S]` (I32, values below `n_tokens`): the `MoeCombine`
/// composite each way.
pub fn moe_combine(y: &Tensor, w: &Tensor, tok: &Tensor, n_tokens: usize) -> Result<Tensor> {
    let s = y.dim(0);
    if y.rank() != 2 || w.shape() != [s, 1] || tok.shape() != [s] || tok.dtype() != DType::I32 {
        return shape_err(
            "moe_combine",
            format!("y {:?}, w {:?}, tok {:?} {}", y.shape(), w.shape(), tok.shape(), tok.dtype()),
        );
    }
    let (y, w, tok) = (y.contiguous()?, w.contiguous()?, tok.contiguous()?.detach());
    let port = y.port().clone();
    let out = y.empty_on(&[n_tokens, y.dim(1)], y.dtype())?;
    let (yd, wd) = (y.detach(), w.detach());
    run(&port, Composite::MoeCombineFwd { y: yd.view(), w: wd.view(), tok: tok.view(), out: out.view() })?;
    Ok(out.record("moe_combine", &[&y, &w], move |g, needs| {
        let g = g.contiguous()?;
        let dy = if needs[0] { Some(yd.empty_like()?) } else { None };
        let dw = if needs[1] { Some(wd.empty_like()?) } else { None };
        let (y, w, tok, dout) = (yd.view(), wd.view(), tok.view(), g.view());
        let (dyv, dwv) = (dy.as_ref().map(|t| t.view()), dw.as_ref().map(|t| t.view()));
        run(g.port(), Composite::MoeCombineBwd { y, w, tok, dout, dy: dyv, dw: dwv })?;
        Ok(vec![dy, dw])
    }))
}

/// The router's probabilities `[N, E]` = softmax(x w^T) per row, for x `[N, d]` (the tokens'
/// hidden states) and w `[E, d]` (one row per expert): the `MoeRouter` composite each way, one
/// autograd node whose backward computes dx and dw only where they are needed.
pub fn moe_router(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if x.rank() != 2 || w.rank() != 2 || w.dim(1) != x.dim(1) {
        return shape_err(
            "moe_router",
            format!("x {:?} with router weight {:?} (want [N, d] and [E, d])", x.shape(), w.shape()),
        );
    }
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    let port = x.port().clone();
    let probs = x.empty_on(&[x.dim(0), w.dim(0)], x.dtype())?;
    let (xd, wd, pd) = (x.detach(), w.detach(), probs.detach());
    run(&port, Composite::MoeRouterFwd { x: xd.view(), w: wd.view(), probs: probs.view() })?;
    Ok(probs.record("moe_router", &[&x, &w], move |g, needs| {
        let g = g.contiguous()?;
        let dx = if needs[0] { Some(xd.empty_like()?) } else { None };
        let dw = if needs[1] { Some(wd.empty_like()?) } else { None };
        let (x, w, probs, dprobs) = (xd.view(), wd.view(), pd.view(), g.view());
        let (dxv, dwv) = (dx.as_ref().map(|t| t.view()), dw.as_ref().map(|t| t.view()));
        run(g.port(), Composite::MoeRouterBwd { x, w, probs, dprobs, dx: dxv, dw: dwv })?;
        Ok(vec![dx, dw])
    }))
}
