"""Write the Hugging Face parity goldens: for each supported architecture a tiny random-weight
model saved with `save_pretrained` (f32), a fixed batch, transformers' loss on it, and the
per-step losses of 5 AdamW steps (constant LR, weight decay on every parameter, no clipping).

    python3 tools/golden/make_hf.py        # rewrites tools/golden/out/hf-*/
    python3 tools/golden/make_hf.py llama3_rope   # only the architectures named
"""
import json, os
import torch
import torch.nn.functional as F
import transformers as T
from safetensors.torch import save_file

V, D, L, H, KV, FF, P = 96, 32, 2, 4, 2, 64, 64
ARCHS = {
    "gpt2": lambda: T.GPT2LMHeadModel(T.GPT2Config(vocab_size=V, n_embd=D, n_layer=L, n_head=H, n_positions=P,
                                                   resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)),
    "llama": lambda: T.LlamaForCausalLM(T.LlamaConfig(vocab_size=V, hidden_size=D, intermediate_size=FF,
                                                      num_hidden_layers=L, num_attention_heads=H,
                                                      num_key_value_heads=KV, max_position_embeddings=P)),
    # Mistral 7B v0.1 style: a sliding window (16) shorter than max_position_embeddings, inside
    # which it is full causal attention; anychip reads the window as its context limit.
    "mistral": lambda: T.MistralForCausalLM(T.MistralConfig(vocab_size=V, hidden_size=D, intermediate_size=FF,
                                                            num_hidden_layers=L, num_attention_heads=H,
                                                            num_key_value_heads=KV, max_position_embeddings=P,
                                                            sliding_window=16)),
    "qwen2": lambda: T.Qwen2ForCausalLM(T.Qwen2Config(vocab_size=V, hidden_size=D, intermediate_size=FF,
                                                      num_hidden_layers=L, num_attention_heads=H,
                                                      num_key_value_heads=KV, max_position_embeddings=P,
                                                      tie_word_embeddings=True)),
    "qwen3": lambda: T.Qwen3ForCausalLM(T.Qwen3Config(vocab_size=V, hidden_size=D, intermediate_size=FF,
                                                      num_hidden_layers=L, num_attention_heads=H,
                                                      num_key_value_heads=KV, head_dim=16, max_position_embeddings=8 * 64,
                                                      tie_word_embeddings=True)),
    # Llama 3.1+'s frequency-dependent RoPE scaling, with head_dim 16 so that one frequency is
    # kept (wavelength 6.3 < 64/4), two are blended and five divided by the factor.
    "llama3_rope": lambda: T.LlamaForCausalLM(T.LlamaConfig(
        vocab_size=V, hidden_size=D, intermediate_size=FF, num_hidden_layers=L, num_attention_heads=H,
        num_key_value_heads=KV, head_dim=16, max_position_embeddings=8 * 64,
        rope_parameters=dict(rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0,
                             high_freq_factor=4.0, original_max_position_embeddings=64))),
    "ernie4_5": lambda: T.Ernie4_5ForCausalLM(T.Ernie4_5Config(vocab_size=V, hidden_size=D, intermediate_size=FF,
                                                               num_hidden_layers=L, num_attention_heads=H,
                                                               num_key_value_heads=KV, head_dim=8,
                                                               max_position_embeddings=P)),
}
HP = dict(lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)


def loss_of(model, tokens):
    logits = model(input_ids=tokens[:, :-1]).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tokens[:, 1:].reshape(-1))


def llama_equivalent_losses(path, tokens):
    """ERNIE 4.5 with its q/k rows permuted from interleaved to rotate-half RoPE is the same
    function as a Llama; train that Llama the same way. transformers' own Ernie4_5 class drifts
    from this after the first update (its forward matches to 1e-6), so anychip, which computes
    the rotate-half form, is held to this trajectory and the drift is reported in docs/hf.md."""
    e = T.Ernie4_5ForCausalLM.from_pretrained(path).float()
    cfg = T.LlamaConfig(vocab_size=V, hidden_size=D, intermediate_size=FF, num_hidden_layers=L, num_attention_heads=H,
                        num_key_value_heads=KV, head_dim=D // H, max_position_embeddings=P, tie_word_embeddings=True,
                        rms_norm_eps=e.config.rms_norm_eps, rope_parameters=dict(e.config.rope_parameters))
    llama = T.LlamaForCausalLM(cfg).float()
    hd = D // H
    idx = [2 * j if j < hd // 2 else 2 * (j - hd // 2) + 1 for j in range(hd)]
    sd = {}
    for k, v in e.state_dict().items():
        if "q_proj" in k or "k_proj" in k:
            heads = v.shape[0] // hd
            v = v.view(heads, hd, -1)[:, idx, :].reshape(heads * hd, -1)
        sd[k] = v
    llama.load_state_dict(sd, strict=True)
    return adamw_losses(llama, tokens, loss_of)


def adamw_losses(model, tokens, objective):
    """The objective before each of 5 AdamW steps (constant LR, decay on every parameter)."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), **HP)
    losses = []
    for _ in range(5):
        l = objective(model, tokens)
        losses.append(l.item())
        opt.zero_grad(set_to_none=True)
        l.backward()
        opt.step()
    return losses


def write_expected(out, loss, losses, **extra):
    json.dump({**extra, "loss": loss, "adamw": {"lr": HP["lr"], "beta1": 0.9, "beta2": 0.95, "eps": 1e-8,
                                       "weight_decay": HP["weight_decay"]}, "losses": losses,
               "transformers": T.__version__, "torch": torch.__version__},
              open(os.path.join(out, "expected.json"), "w"), indent=1)


def perturb_vectors(name, p):
    """Non-trivial norms so their mapping is tested."""
    if p.dim() == 1:
        p.add_(0.1 * torch.randn_like(p))


def sharpen_attention(name, p):
    """Non-trivial norms, and q/k weights 25x the init so attention is far from uniform: with
    the init's near-uniform attention the positions barely matter, and a model that ignored the
    RoPE scaling matched the loss to 1e-5 (with this, the two differ by 0.01)."""
    perturb_vectors(name, p)
    if "q_proj" in name or "k_proj" in name:
        p.mul_(25.0)


def write_golden(root, arch, make, objective=None, tweak=perturb_vectors, extra=None):
    """One golden under ROOT/hf-ARCH: a seeded random-weight model (each parameter passed to
    `tweak` in order) saved with save_pretrained, a fixed batch, transformers' loss on it and
    the objective before each of 5 AdamW steps; `extra(out, tokens)` adds fields."""
    torch.manual_seed(7)
    model = make().float().eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            tweak(n, p)
    out = os.path.join(root, f"hf-{arch}")
    model.save_pretrained(out, safe_serialization=True)
    tokens = torch.randint(0, V, (2, 10), generator=torch.Generator().manual_seed(3))
    save_file({"tokens": tokens.to(torch.int64)}, os.path.join(out, "batch.safetensors"))
    with torch.no_grad():
        loss = loss_of(model, tokens).item()
    losses = adamw_losses(model, tokens, objective or loss_of)
    write_expected(out, loss, losses, **(extra(out, tokens) if extra else {}))
    print(arch, loss, losses)


def golden_root():
    return os.environ.get("GOLDEN_OUT", os.path.join(os.path.dirname(__file__), "out"))


def main():
    """Every golden, or only the architectures named on the command line."""
    import sys
    names = sys.argv[1:] or list(ARCHS)
    for arch, make in ((a, ARCHS[a]) for a in names):
        extra = None
        if arch == "ernie4_5":
            extra = lambda out, tokens: {"losses_llama_equivalent": llama_equivalent_losses(out, tokens)}
        tweak = sharpen_attention if arch == "llama3_rope" else perturb_vectors
        write_golden(golden_root(), arch, make, tweak=tweak, extra=extra)


if __name__ == "__main__":
    main()
