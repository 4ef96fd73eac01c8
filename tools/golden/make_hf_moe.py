"""Write the Hugging Face parity goldens of the mixture-of-experts families, as make_hf.py does for
the dense ones: a tiny random-weight Qwen3MoeForCausalLM and Ernie4_5_MoeForCausalLM saved with
`save_pretrained` (f32), a fixed batch, transformers' loss, and the losses of 5 AdamW steps.

    python3 tools/golden/make_hf_moe.py        # rewrites tools/golden/out/hf-qwen3_moe/, hf-ernie4_5_moe/

Choices that make the comparison sharp:
- router weights are scaled up (x40) so each token's top-k has clear margins: float rounding in
  another engine must not flip a choice, or the comparison would test tie-breaking, not the math;
- Qwen3-MoE: norm_topk_prob off (ERNIE covers renormalisation) and output_router_logits on with
  router_aux_loss_coef 0.02, so the training losses include transformers' load-balancing loss;
- ERNIE 4.5 MoE: a dense first layer (moe_layer_start_index 1), one shared expert, a non-zero
  e_score_correction_bias (it changes which experts are picked, never their weights), no aux loss
  (output_router_logits off, transformers' default), and no pad token: transformers builds ERNIE's
  embedding with padding_idx = pad_token_id (0 in its config), and torch then gives that row no
  gradient from the lookup, which no other architecture here does and anychip does not model. That
  is also the tied-embedding gradient difference docs/hf.md describes for dense ERNIE (its golden
  batch holds token 0).
The training objective is what transformers' own `loss` is: cross-entropy plus coef x aux_loss when
output_router_logits is set.
"""
import torch
import torch.nn.functional as F
import transformers as T
from make_hf import V, D, L, H, KV, FF, P, golden_root, perturb_vectors, write_golden

ARCHS = {
    "qwen3_moe": lambda: T.Qwen3MoeForCausalLM(T.Qwen3MoeConfig(
        vocab_size=V, hidden_size=D, intermediate_size=FF, moe_intermediate_size=16, num_experts=4,
        num_experts_per_tok=2, norm_topk_prob=False, decoder_sparse_step=1, num_hidden_layers=L,
        num_attention_heads=H, num_key_value_heads=KV, head_dim=16, max_position_embeddings=P,
        tie_word_embeddings=True, output_router_logits=True, router_aux_loss_coef=0.02)),
    "ernie4_5_moe": lambda: T.Ernie4_5_MoeForCausalLM(T.Ernie4_5_MoeConfig(
        vocab_size=V, hidden_size=D, intermediate_size=FF, moe_intermediate_size=16, moe_num_experts=4, moe_k=2,
        moe_num_shared_experts=1, moe_layer_start_index=1, moe_layer_interval=1, num_hidden_layers=3,
        num_attention_heads=H, num_key_value_heads=KV, head_dim=8, max_position_embeddings=P,
        tie_word_embeddings=False, pad_token_id=None)),
}

def objective(model, tokens):
    """transformers' training loss: cross-entropy, plus coef x aux_loss with output_router_logits."""
    out = model(input_ids=tokens[:, :-1])
    ce = F.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]).float(), tokens[:, 1:].reshape(-1))
    if model.config.output_router_logits:
        return ce + model.config.router_aux_loss_coef * out.aux_loss
    return ce


def tweak(name, p):
    """Non-trivial norms; clear routing margins; a non-zero ERNIE selection bias."""
    perturb_vectors(name, p)
    if name.endswith("gate.weight"):
        p.mul_(40.0)
    if name.endswith("e_score_correction_bias"):
        p.copy_(0.05 * torch.randn_like(p))


def main():
    for arch, make in ARCHS.items():
        write_golden(golden_root(), arch, make, objective, tweak)


if __name__ == "__main__":
    main()
