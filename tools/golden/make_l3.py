"""Write the L3 model goldens: a tiny GPT-2 and a tiny Llama with fixed weights and a fixed
batch, run by PyTorch: logits, loss, every named parameter's gradient, and the losses of 10
AdamW steps (the loss before each step's update). Names use anychip's parameter names.

    python3 tools/golden/make_l3.py            # rewrites tools/golden/out/l3-*.safetensors
"""
import os, sys
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "torch_twin"))
from gpt import GPT, anychip_name as ours, optimizer  # noqa: E402

# name: (vocab, max_ctx, n_layer, n_head, n_kv_head, d_model, d_ff, kind, tied)
CONFIGS = {
    "gpt2": (64, 16, 2, 2, 2, 32, 128, "gpt2", True),
    "llama": (64, 16, 2, 4, 2, 32, 64, "llama", False),
}


def main():
    out = os.environ.get("GOLDEN_OUT", os.path.join(os.path.dirname(__file__), "out"))
    os.makedirs(out, exist_ok=True)
    for tag, c in CONFIGS.items():
        torch.manual_seed(1234)
        model = GPT(c)
        with torch.no_grad():  # make norms and biases non-trivial so their gradients matter
            for n, p in model.named_parameters():
                if p.dim() == 1:
                    p.add_(0.1 * torch.randn_like(p))
        g = torch.Generator().manual_seed(99)
        tokens = torch.randint(0, c[0], (2, 13), generator=g)
        x, y = tokens[:, :-1], tokens[:, 1:]
        tensors = {"tokens": tokens.to(torch.int32)}
        for n, p in model.named_parameters():
            tensors["param." + ours(n)] = p.detach().clone()
        loss, logits = model(x, y, return_logits=True)
        loss.backward()
        for n, p in model.named_parameters():
            tensors["grad." + ours(n)] = p.grad.detach().clone()
        tensors["logits"] = logits.detach().clone()
        tensors["loss"] = loss.detach().reshape(1)
        model.zero_grad(set_to_none=True)
        opt = optimizer(model, 1e-2, wd=0.1)
        losses = []
        for _ in range(10):
            l = model(x, y)
            losses.append(l.item())
            opt.zero_grad(set_to_none=True)
            l.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        tensors["losses"] = torch.tensor(losses, dtype=torch.float32)
        path = os.path.join(out, f"l3-{tag}.safetensors")
        save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata={"torch": torch.__version__})
        print(tag, "loss", loss.item(), "10-step losses", [round(v, 5) for v in losses], "->", path)


if __name__ == "__main__":
    main()
