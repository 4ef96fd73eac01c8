//! Tensor name and layout maps between Hugging Face checkpoints and anychip's parameters.
//!
//! anychip: `blocks.{i}.attn.qkv` = [q; k; v] rows, `blocks.{i}.mlp.up` = [gate; up] rows,
//! weights as [out, in]. GPT-2 (Conv1D) stores [in, out] and fuses c_attn as q|k|v columns.
//! ERNIE 4.5 rotates interleaved pairs (2j, 2j+1); anychip rotates halves (j, j + hd/2), so
//! q and k rows are permuted per head on import (and back on export): the same permutation on
//! q and k leaves every dot product, and so the attention, unchanged.

use crate::config::Arch;
use crate::tensors::{NamedTensors, Store};
use anychip_model_config::ModelConfig;
use anyhow::{anyhow, Result};
use std::collections::BTreeMap;

type Named = Vec<(String, Vec<f32>, Vec<usize>)>;

fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = v[r * cols + c];
        }
    }
    t
}

/// Row permutation taking interleaved-RoPE rows to rotate-half rows, per head of width `hd`.
fn interleaved_to_half(v: &[f32], heads: usize, hd: usize, cols: usize, inverse: bool) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for h in 0..heads {
        for j in 0..hd {
            // rotate-half row j takes interleaved row 2j (first half) or 2(j - hd/2) + 1.
            let src = if j < hd / 2 { 2 * j } else { 2 * (j - hd / 2) + 1 };
            let (from, to) = if inverse { (h * hd + j, h * hd + src) } else { (h * hd + src, h * hd + j) };
            out[to * cols..(to + 1) * cols].copy_from_slice(&v[from * cols..(from + 1) * cols]);
        }
    }
    out
}

/// HF tensors -> anychip parameters.
pub fn import(arch: Arch, c: &ModelConfig, s: &Store) -> Result<Named> {
    if arch == Arch::Gpt2 {
        return import_gpt2(c, s);
    }
    import_llama(arch, c, s)
}

/// GPT-2's tensors (Conv1D weights transposed to our [out, in]; with or without the
/// `transformer.` prefix).
fn import_gpt2(c: &ModelConfig, s: &Store) -> Result<Named> {
    let mut out: Named = Vec::new();
    let d = c.d_model;
    let pre = if s.has("transformer.wte.weight") { "transformer." } else { "" };
    let g = |n: &str| s.get(&format!("{pre}{n}"));
    out.push(("tok_emb.weight".into(), g("wte.weight")?.0, vec![c.vocab_size, d]));
    out.push(("pos_emb.weight".into(), g("wpe.weight")?.0, vec![c.max_ctx, d]));
    for i in 0..c.n_layer {
        let h = format!("h.{i}.");
        let conv = |n: &str, out_f: usize, in_f: usize| -> Result<Vec<f32>> {
            Ok(transpose(&g(&format!("{h}{n}.weight"))?.0, in_f, out_f))
        };
        for (ours, theirs) in [("ln1", "ln_1"), ("ln2", "ln_2")] {
            out.push((format!("blocks.{i}.{ours}.weight"), g(&format!("{h}{theirs}.weight"))?.0, vec![d]));
            out.push((format!("blocks.{i}.{ours}.bias"), g(&format!("{h}{theirs}.bias"))?.0, vec![d]));
        }
        out.push((format!("blocks.{i}.attn.qkv.weight"), conv("attn.c_attn", 3 * d, d)?, vec![3 * d, d]));
        out.push((format!("blocks.{i}.attn.qkv.bias"), g(&format!("{h}attn.c_attn.bias"))?.0, vec![3 * d]));
        out.push((format!("blocks.{i}.attn.o.weight"), conv("attn.c_proj", d, d)?, vec![d, d]));
        out.push((format!("blocks.{i}.attn.o.bias"), g(&format!("{h}attn.c_proj.bias"))?.0, vec![d]));
        out.push((format!("blocks.{i}.mlp.up.weight"), conv("mlp.c_fc", c.d_ff, d)?, vec![c.d_ff, d]));
        out.push((format!("blocks.{i}.mlp.up.bias"), g(&format!("{h}mlp.c_fc.bias"))?.0, vec![c.d_ff]));
        out.push((format!("blocks.{i}.mlp.down.weight"), conv("mlp.c_proj", d, c.d_ff)?, vec![d, c.d_ff]));
        out.push((format!("blocks.{i}.mlp.down.bias"), g(&format!("{h}mlp.c_proj.bias"))?.0, vec![d]));
    }
    out.push(("ln_f.weight".into(), g("ln_f.weight")?.0, vec![d]));
    out.push(("ln_f.bias".into(), g("ln_f.bias")?.0, vec![d]));
    if !c.tied_embeddings {
        out.push(("lm_head.weight".into(), s.get("lm_head.weight")?.0, vec![c.vocab_size, d]));
    }
    Ok(out)
}

/// The Llama family's tensors: q, k and v concatenated (ERNIE's interleaved RoPE halves
/// reordered), gate and up concatenated, the experts through [`crate::moe::import_layer`].
fn import_llama(arch: Arch, c: &ModelConfig, s: &Store) -> Result<Named> {
    let mut out: Named = Vec::new();
    let d = c.d_model;
    let (hd, nq, nkv) = (c.head_dim, c.n_head, c.n_kv_head);
    let g = |n: &str| s.get(n).map(|x| x.0);
    out.push(("tok_emb.weight".into(), g("model.embed_tokens.weight")?, vec![c.vocab_size, d]));
    for i in 0..c.n_layer {
        let l = format!("model.layers.{i}.");
        out.push((format!("blocks.{i}.ln1.weight"), g(&format!("{l}input_layernorm.weight"))?, vec![d]));
        out.push((format!("blocks.{i}.ln2.weight"), g(&format!("{l}post_attention_layernorm.weight"))?, vec![d]));
        let (mut q, mut k) = (g(&format!("{l}self_attn.q_proj.weight"))?, g(&format!("{l}self_attn.k_proj.weight"))?);
        if arch.is_ernie() {
            q = interleaved_to_half(&q, nq, hd, d, false);
            k = interleaved_to_half(&k, nkv, hd, d, false);
        }
        let v = g(&format!("{l}self_attn.v_proj.weight"))?;
        out.push((format!("blocks.{i}.attn.qkv.weight"), [q, k, v].concat(), vec![(nq + 2 * nkv) * hd, d]));
        if c.qkv_bias {
            let b: Vec<f32> = ["q", "k", "v"]
                .iter()
                .map(|n| g(&format!("{l}self_attn.{n}_proj.bias")))
                .collect::<Result<Vec<_>>>()?
                .concat();
            out.push((format!("blocks.{i}.attn.qkv.bias"), b, vec![(nq + 2 * nkv) * hd]));
        }
        if c.qk_norm {
            out.push((format!("blocks.{i}.attn.q_norm.weight"), g(&format!("{l}self_attn.q_norm.weight"))?, vec![hd]));
            out.push((format!("blocks.{i}.attn.k_norm.weight"), g(&format!("{l}self_attn.k_norm.weight"))?, vec![hd]));
        }
        out.push((format!("blocks.{i}.attn.o.weight"), g(&format!("{l}self_attn.o_proj.weight"))?, vec![d, nq * hd]));
        if let (true, Some(m)) = (c.is_moe_layer(i), &c.moe) {
            crate::moe::import_layer(c, m, s, i, &mut out)?;
            continue;
        }
        let gate_up = [g(&format!("{l}mlp.gate_proj.weight"))?, g(&format!("{l}mlp.up_proj.weight"))?].concat();
        out.push((format!("blocks.{i}.mlp.up.weight"), gate_up, vec![2 * c.d_ff, d]));
        out.push((format!("blocks.{i}.mlp.down.weight"), g(&format!("{l}mlp.down_proj.weight"))?, vec![d, c.d_ff]));
    }
    out.push(("ln_f.weight".into(), g("model.norm.weight")?, vec![d]));
    if !c.tied_embeddings {
        out.push(("lm_head.weight".into(), g("lm_head.weight")?, vec![c.vocab_size, d]));
    }
    Ok(out)
}

/// anychip parameters -> HF tensors (names and layouts transformers expects).
pub fn export(arch: Arch, c: &ModelConfig, ours: &NamedTensors) -> Result<NamedTensors> {
    let get = |n: &str| ours.get(n).map(|x| x.0.clone()).ok_or_else(|| anyhow!("model has no parameter '{n}'"));
    let mut out = BTreeMap::new();
    let mut put = |n: String, v: Vec<f32>, s: Vec<usize>| {
        out.insert(n, (v, s));
    };
    if arch == Arch::Gpt2 {
        export_gpt2(c, &get, &mut put)?;
    } else {
        export_llama(arch, c, &get, &mut put)?;
    }
    Ok(out)
}

/// Our tensor by name, and where an exported one goes.
pub(crate) type Get<'a> = &'a dyn Fn(&str) -> Result<Vec<f32>>;
pub(crate) type Put<'a> = &'a mut dyn FnMut(String, Vec<f32>, Vec<usize>);

/// GPT-2's names under `transformer.`, weights transposed to Conv1D's [in, out].
fn export_gpt2(c: &ModelConfig, get: Get, put: Put) -> Result<()> {
    let d = c.d_model;
    put("transformer.wte.weight".into(), get("tok_emb.weight")?, vec![c.vocab_size, d]);
    put("transformer.wpe.weight".into(), get("pos_emb.weight")?, vec![c.max_ctx, d]);
    for i in 0..c.n_layer {
        let h = format!("transformer.h.{i}.");
        let b = format!("blocks.{i}.");
        for (ours, theirs) in [("ln1", "ln_1"), ("ln2", "ln_2")] {
            put(format!("{h}{theirs}.weight"), get(&format!("{b}{ours}.weight"))?, vec![d]);
            put(format!("{h}{theirs}.bias"), get(&format!("{b}{ours}.bias"))?, vec![d]);
        }
        for (ours, theirs, o, n) in [
            ("attn.qkv", "attn.c_attn", 3 * d, d),
            ("attn.o", "attn.c_proj", d, d),
            ("mlp.up", "mlp.c_fc", c.d_ff, d),
            ("mlp.down", "mlp.c_proj", d, c.d_ff),
        ] {
            put(format!("{h}{theirs}.weight"), transpose(&get(&format!("{b}{ours}.weight"))?, o, n), vec![n, o]);
            put(format!("{h}{theirs}.bias"), get(&format!("{b}{ours}.bias"))?, vec![o]);
        }
    }
    put("transformer.ln_f.weight".into(), get("ln_f.weight")?, vec![d]);
    put("transformer.ln_f.bias".into(), get("ln_f.bias")?, vec![d]);
    if !c.tied_embeddings {
        put("lm_head.weight".into(), get("lm_head.weight")?, vec![c.vocab_size, d]);
    }
    Ok(())
}

/// The Llama family's names: q, k and v split (ERNIE's RoPE halves interleaved back), gate and
/// up split, the experts through [`crate::moe::export_layer`].
fn export_llama(arch: Arch, c: &ModelConfig, get: Get, put: Put) -> Result<()> {
    let d = c.d_model;
    let (hd, nq, nkv) = (c.head_dim, c.n_head, c.n_kv_head);
    put("model.embed_tokens.weight".into(), get("tok_emb.weight")?, vec![c.vocab_size, d]);
    for i in 0..c.n_layer {
        let (l, b) = (format!("model.layers.{i}."), format!("blocks.{i}."));
        put(format!("{l}input_layernorm.weight"), get(&format!("{b}ln1.weight"))?, vec![d]);
        put(format!("{l}post_attention_layernorm.weight"), get(&format!("{b}ln2.weight"))?, vec![d]);
        let qkv = get(&format!("{b}attn.qkv.weight"))?;
        let (mut q, rest) = (qkv[..nq * hd * d].to_vec(), &qkv[nq * hd * d..]);
        let (mut k, v) = (rest[..nkv * hd * d].to_vec(), rest[nkv * hd * d..].to_vec());
        if arch.is_ernie() {
            q = interleaved_to_half(&q, nq, hd, d, true);
            k = interleaved_to_half(&k, nkv, hd, d, true);
        }
        put(format!("{l}self_attn.q_proj.weight"), q, vec![nq * hd, d]);
        put(format!("{l}self_attn.k_proj.weight"), k, vec![nkv * hd, d]);
        put(format!("{l}self_attn.v_proj.weight"), v, vec![nkv * hd, d]);
        if c.qkv_bias {
            let bias = get(&format!("{b}attn.qkv.bias"))?;
            put(format!("{l}self_attn.q_proj.bias"), bias[..nq * hd].to_vec(), vec![nq * hd]);
            put(format!("{l}self_attn.k_proj.bias"), bias[nq * hd..(nq + nkv) * hd].to_vec(), vec![nkv * hd]);
            put(format!("{l}self_attn.v_proj.bias"), bias[(nq + nkv) * hd..].to_vec(), vec![nkv * hd]);
        }
        if c.qk_norm {
            put(format!("{l}self_attn.q_norm.weight"), get(&format!("{b}attn.q_norm.weight"))?, vec![hd]);
            put(format!("{l}self_attn.k_norm.weight"), get(&format!("{b}attn.k_norm.weight"))?, vec![hd]);
        }
        put(format!("{l}self_attn.o_proj.weight"), get(&format!("{b}attn.o.weight"))?, vec![d, nq * hd]);
        if let (true, Some(m)) = (c.is_moe_layer(i), &c.moe) {
            crate::moe::export_layer(c, m, i, get, put)?;
            continue;
        }
        let up = get(&format!("{b}mlp.up.weight"))?;
        let ff = c.d_ff;
        put(format!("{l}mlp.gate_proj.weight"), up[..ff * d].to_vec(), vec![ff, d]);
        put(format!("{l}mlp.up_proj.weight"), up[ff * d..].to_vec(), vec![ff, d]);
        put(format!("{l}mlp.down_proj.weight"), get(&format!("{b}mlp.down.weight"))?, vec![d, ff]);
    }
    put("model.norm.weight".into(), get("ln_f.weight")?, vec![d]);
    if !c.tied_embeddings {
        put("lm_head.weight".into(), get("lm_head.weight")?, vec![c.vocab_size, d]);
    }
    Ok(())
}
