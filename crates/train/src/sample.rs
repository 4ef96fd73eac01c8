//! Text generation from a checkpoint: temperature and top-k sampling.

use crate::checkpoint;
use anychip_core::{no_grad, Tensor};
use anychip_data::{tokenizer, TokenizerKind};
use anychip_nn::Transformer;
use anychip_port::Port;
use anyhow::{bail, Result};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// Sampling settings.
pub struct SampleOptions {
    pub prompt: String,
    pub tokens: usize,
    pub temperature: f32,
    pub top_k: usize,
    pub seed: u64,
}

/// Pick a token from `logits` (one row) with temperature and top-k; `u` is a uniform in [0,1).
pub fn pick(logits: &[f32], temperature: f32, top_k: usize, u: f32) -> usize {
    if temperature <= 0.0 {
        return logits.iter().enumerate().fold(0, |best, (i, &x)| if x > logits[best] { i } else { best });
    }
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    let k = if top_k == 0 { idx.len() } else { top_k.min(idx.len()) };
    let top = &idx[..k];
    let m = logits[top[0]];
    let w: Vec<f64> = top.iter().map(|&i| (((logits[i] - m) / temperature) as f64).exp()).collect();
    let total: f64 = w.iter().sum();
    let mut target = u as f64 * total;
    for (j, &wi) in w.iter().enumerate() {
        if target < wi {
            return top[j];
        }
        target -= wi;
    }
    top[k - 1]
}

/// Generate text from the checkpoint in `dir`, streaming it to `out`; returns the text.
pub fn sample(dir: &Path, opts: &SampleOptions, port: &Arc<dyn Port>, out: &mut dyn Write) -> Result<String> {
    if opts.temperature.is_nan() || opts.temperature < 0.0 {
        bail!("--temperature must be 0 or more (0: greedy), got {}", opts.temperature);
    }
    let ck = checkpoint::open(dir)?;
    let kind: TokenizerKind = ck.cfg.tokenizer.parse()?;
    let tok = tokenizer(kind)?;
    let model = Transformer::new(&ck.cfg.model, port, ck.cfg.seed)?;
    checkpoint::load_weights(&ck.dir, &model, None)?;
    let mut ids: Vec<u32> = tok.encode(&opts.prompt);
    if ids.is_empty() {
        ids.push(tok.eot().unwrap_or(b'\n' as u32));
    }
    let ctx = ck.cfg.ctx.min(model.config().max_ctx);
    let mut text = opts.prompt.clone();
    write!(out, "{}", opts.prompt)?;
    let start = ids.len();
    generate(&model, &ids, ctx, opts, &mut |ids| {
        // Decode the whole generated tail so multi-byte characters print once complete.
        let so_far = tok.decode(&ids[start..]);
        let Some(new) = so_far.get(text.len() - opts.prompt.len()..) else { return Ok(()) };
        if !new.ends_with('\u{FFFD}') {
            write!(out, "{new}")?;
            out.flush()?;
            text.push_str(new);
        }
        Ok(())
    })?;
    writeln!(out)?;
    Ok(text)
}

/// Continue the token ids `prompt` (at least one) by `opts.tokens` tokens sampled from
/// `model` (each seeing at most the last `ctx`), calling `on_token` with all ids so far after
/// each; returns the prompt followed by the generated ids. `opts.prompt` is not read.
pub fn generate(
    model: &Transformer,
    prompt: &[u32],
    ctx: usize,
    opts: &SampleOptions,
    on_token: &mut dyn FnMut(&[u32]) -> Result<()>,
) -> Result<Vec<u32>> {
    if opts.temperature.is_nan() || opts.temperature < 0.0 {
        bail!("--temperature must be 0 or more, got {}", opts.temperature);
    }
    if prompt.is_empty() || ctx == 0 {
        bail!("generation needs a prompt of at least one token and a context of at least one");
    }
    let _g = no_grad();
    let mut ids = prompt.to_vec();
    for i in 0..opts.tokens {
        let window = &ids[ids.len().saturating_sub(ctx)..];
        let x: Vec<i32> = window.iter().map(|&t| t as i32).collect();
        let xt = Tensor::from_i32(model.port(), &x, &[1, x.len()])?;
        let logits = model.forward(&xt)?;
        let v = logits.dim(1);
        let last = logits.narrow(0, x.len() - 1, 1)?.to_vec_f32()?;
        let u = anychip_port::philox::uniform(opts.seed, i as u64);
        let next = pick(&last[..v], opts.temperature, opts.top_k, u) as u32;
        ids.push(next);
        on_token(&ids)?;
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::pick;
    #[test]
    fn greedy_top_k_and_temperature() {
        let l = [0.0, 3.0, 1.0, 2.0];
        assert_eq!(pick(&l, 0.0, 0, 0.5), 1);
        // top-1 is greedy whatever u is.
        assert_eq!(pick(&l, 1.0, 1, 0.99), 1);
        // With top-2, u near 1 lands on the second best.
        assert_eq!(pick(&l, 1.0, 2, 0.999), 3);
        // Tiny temperature approaches greedy.
        assert_eq!(pick(&l, 1e-3, 0, 0.999), 1);
    }
}
