"""PyTorch twin of anychip's decoder transformer (GPT-2 and Llama flavours).

Same architecture, same initialisation scheme (N(0, 0.02), residual projections scaled by
1/sqrt(2L)), same AdamW (decay on matrices only) and schedule, so loss curves and throughput
can be compared side by side with `anychip train` / `anychip bench` on the same machine.

    python3 tools/torch_twin/gpt.py bench --preset gpt2-tiny --threads 2 [--precision bf16] [--json FILE]
    python3 tools/torch_twin/gpt.py train --steps 300 --data ~/.cache/anychip/shakespeare/shakespeare.txt

`train --init-from RUN --batches anychip` starts from an anychip run's weights (RUN/checkpoint,
e.g. after `anychip train --steps 1 --lr 1e-30`, which leaves the initial weights as they
were) and draws the batches anychip's loader draws for --seed, so the two engines' loss
curves can be held against each other step by step over a whole run.
"""
import argparse, json, math, os, re, resource, statistics, struct, sys, time

import torch
import torch.nn as nn
import torch.nn.functional as F

# name: (vocab, max_ctx, n_layer, n_head, n_kv_head, d_model, d_ff, kind, tied)
PRESETS = {
    "shakespeare-bytes": (256, 256, 4, 4, 4, 256, 1024, "gpt2", True),
    "gpt2-tiny": (256, 128, 4, 4, 4, 256, 1024, "gpt2", True),
    "gpt2-small-30m": (50257, 256, 6, 6, 6, 384, 1536, "gpt2", True),
    "gpt2-124m": (50257, 1024, 12, 12, 12, 768, 3072, "gpt2", True),
    "llama-tiny": (256, 256, 4, 4, 2, 256, 704, "llama", False),
    "llama-30m": (50257, 256, 6, 8, 4, 384, 1024, "llama", True),
}


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        V, T, L, H, KV, D, FF, kind, _ = c
        hd = D // H
        bias = kind == "gpt2"
        Norm = (lambda d: nn.LayerNorm(d, eps=1e-5)) if kind == "gpt2" else (lambda d: nn.RMSNorm(d, eps=1e-5))
        self.ln1, self.ln2 = Norm(D), Norm(D)
        self.qkv = nn.Linear(D, (H + 2 * KV) * hd, bias=bias)
        self.o = nn.Linear(H * hd, D, bias=bias)
        self.up = nn.Linear(D, FF if kind == "gpt2" else 2 * FF, bias=bias)
        self.down = nn.Linear(FF, D, bias=bias)

    def forward(self, x, rope):
        V, T, L, H, KV, D, FF, kind, _ = self.c
        B, Tn, _ = x.shape
        hd = D // H
        q, k, v = self.qkv(self.ln1(x)).split([H * hd, KV * hd, KV * hd], dim=-1)
        q = q.view(B, Tn, H, hd).transpose(1, 2)
        k = k.view(B, Tn, KV, hd).transpose(1, 2)
        v = v.view(B, Tn, KV, hd).transpose(1, 2)
        if rope is not None:
            cos, sin = rope
            def rot(t):
                t1, t2 = t[..., : hd // 2], t[..., hd // 2 :]
                return torch.cat([t1 * cos - t2 * sin, t2 * cos + t1 * sin], dim=-1)
            q, k = rot(q), rot(k)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=KV != H)
        x = x + self.o(a.transpose(1, 2).reshape(B, Tn, H * hd))
        h = self.up(self.ln2(x))
        if kind == "gpt2":
            h = F.gelu(h, approximate="tanh")
        else:
            g, u = h.split(FF, dim=-1)
            h = F.silu(g) * u
        return x + self.down(h)


class GPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        V, T, L, H, KV, D, FF, kind, tied = c
        self.tok = nn.Embedding(V, D)
        self.pos = nn.Embedding(T, D) if kind == "gpt2" else None
        self.blocks = nn.ModuleList(Block(c) for _ in range(L))
        self.ln_f = nn.LayerNorm(D) if kind == "gpt2" else nn.RMSNorm(D, eps=1e-5)
        self.head = None if tied else nn.Linear(D, V, bias=False)
        for n, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * L) if n.endswith(("o.weight", "down.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif "ln" in n and n.endswith("weight"):
                nn.init.ones_(p)
            else:
                nn.init.zeros_(p)

    def forward(self, idx, targets, return_logits=False):
        V, T, L, H, KV, D, FF, kind, tied = self.c
        B, Tn = idx.shape
        x = self.tok(idx)
        rope = None
        if self.pos is not None:
            x = x + self.pos.weight[:Tn]
        else:
            hd = D // H
            inv = 10000.0 ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
            ang = torch.arange(Tn, dtype=torch.float64)[:, None] * inv.float()[None, :].double()
            rope = (ang.cos().float(), ang.sin().float())
        for b in self.blocks:
            x = b(x, rope)
        x = self.ln_f(x)
        logits = x @ (self.tok.weight if self.head is None else self.head.weight).T
        loss = F.cross_entropy(logits.view(-1, V), targets.reshape(-1))
        return (loss, logits.reshape(-1, V)) if return_logits else loss


# Philox4x32-10 (Random123), as anychip_port::philox: anychip's loader draws window starts with it.
_M0, _M1, _W0, _W1, _U32 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85, 0xFFFFFFFF
_DATA_STREAM = 0x44415441  # "DATA", crates/data/src/loader.rs


def philox4x32_10(ctr, key):
    for r in range(10):
        if r > 0:
            key = [(key[0] + _W0) & _U32, (key[1] + _W1) & _U32]
        p0, p1 = _M0 * ctr[0], _M1 * ctr[2]
        ctr = [((p1 >> 32) ^ ctr[1] ^ key[0]) & _U32, p1 & _U32, ((p0 >> 32) ^ ctr[3] ^ key[1]) & _U32, p0 & _U32]
    return ctr


def anychip_window_start(seed, step, row, n_tokens, ctx):
    """Start of row `row` of anychip's (single-rank) batch at `step`: Lemire's multiply-shift of
    64 Philox bits onto 0..n_tokens - ctx."""
    w = philox4x32_10([step & _U32, step >> 32, row, _DATA_STREAM], [seed & _U32, seed >> 32])
    return (((w[0] << 32) | w[1]) * (n_tokens - ctx)) >> 64


# The twin's parameter names -> anychip's (tok.weight -> tok_emb.weight, blocks.0.qkv -> blocks.0.attn.qkv, ...).
_RENAME = [(r"^tok\.", "tok_emb."), (r"^pos\.", "pos_emb."), (r"^head\.", "lm_head."), (r"\.qkv\.", ".attn.qkv."),
           (r"\.o\.", ".attn.o."), (r"\.up\.", ".mlp.up."), (r"\.down\.", ".mlp.down.")]


def anychip_name(name):
    """The twin's parameter name in anychip's naming."""
    for pat, rep in _RENAME:
        name = re.sub(pat, rep, name)
    return name


def load_anychip_weights(model, run):
    """Copy an anychip run's checkpointed weights (RUN/checkpoint/model.safetensors, f32) into
    the twin, mapping anychip's parameter names onto the twin's."""
    path = os.path.join(run, "checkpoint", "model.safetensors")
    # The format is an 8-byte header length, a JSON header and raw tensors; read here so the
    # twin needs torch alone, not the safetensors package.
    try:
        raw = open(path, "rb").read()
    except OSError as e:
        sys.exit(f"gpt.py: cannot read {path}: {e.strerror}; pass the --out directory of an anychip train run")
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    with torch.no_grad():
        for name, p in model.named_parameters():
            ours = anychip_name(name)
            h = header.get(ours)
            if h is None or h["dtype"] != "F32":
                sys.exit(f"gpt.py: {path} has no f32 tensor {ours}; was it written by this preset?")
            a, b = h["data_offsets"]
            if list(h["shape"]) != list(p.shape):
                sys.exit(f"gpt.py: {ours} is {h['shape']} in {path} but {list(p.shape)} in --preset; pick the run's preset")
            p.copy_(torch.frombuffer(bytearray(raw[8 + n + a:8 + n + b]), dtype=torch.float32).reshape(p.shape))


def optimizer(model, lr, wd=0.1):
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and "tok" not in n and "pos" not in n]
    other = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "tok" not in n and "pos" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": other, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95), eps=1e-8)


def rss_mib():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) / 1024 for l in f if l.startswith("VmRSS:"))


def bench(a):
    baseline = rss_mib()  # what importing torch costs before any model exists
    c = PRESETS[a.preset]
    torch.manual_seed(a.seed)
    model = GPT(c)
    opt = optimizer(model, 1e-4)
    V = c[0]
    n_params = sum(p.numel() for p in model.parameters())
    ctx = a.ctx or min(256, c[1])
    batch = a.batch or (4 if n_params > 50e6 else 8 if V > 256 else 16)
    # bf16 as PyTorch users run it on CPU: f32 master weights, matmuls autocast to bf16.
    amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16")
    times = []
    for i in range(a.warmup + a.steps):
        # The batch is drawn inside the timed region, as anychip bench times its loader too.
        t = time.perf_counter()
        x = torch.randint(0, V, (batch, ctx + 1))
        with amp:
            loss = model(x[:, :-1], x[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if not math.isfinite(loss.item()):
            sys.exit(f"benchmark loss became {loss.item()}")
        if i >= a.warmup:
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    out = {"preset": a.preset, "impl": "pytorch " + torch.__version__, "threads": torch.get_num_threads(),
           # ATen's kernel level (ATEN_CPU_CAPABILITY caps it), so a capped comparison shows it held.
           "cpu_capability": torch.backends.cpu.get_cpu_capability().lower(),
           "precision": a.precision, "n_params": n_params, "batch": batch, "ctx": ctx,
           "step_ms_median": med * 1e3, "step_ms_min": min(times) * 1e3, "tokens_per_s": batch * ctx / med,
           # ru_maxrss is in KiB on Linux.
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "baseline_rss_mib": baseline}
    print(json.dumps(out))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


def train(a):
    c = PRESETS[a.preset]
    data = torch.tensor(list(open(a.data, "rb").read()), dtype=torch.long)
    n_val = round(len(data) * 0.05)
    tr, va = data[:-n_val], data[-n_val:]
    torch.manual_seed(a.seed)
    model = GPT(c)
    if a.init_from:
        load_anychip_weights(model, a.init_from)
    opt = optimizer(model, a.lr)
    warm = a.lr_warmup if a.lr_warmup is not None else min(100, a.steps // 10)
    amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16")
    t0 = time.time()
    for step in range(a.steps):
        lr = a.lr * (step + 1) / warm if step < warm else 0.1 * a.lr + 0.45 * a.lr * (1 + math.cos(math.pi * (step - warm) / max(1, a.steps - warm)))
        for g in opt.param_groups:
            g["lr"] = lr
        if a.batches == "anychip":
            ix = [anychip_window_start(a.seed, step, r, len(tr), a.ctx) for r in range(a.batch)]
        else:
            ix = torch.randint(0, len(tr) - a.ctx - 1, (a.batch,))
        x = torch.stack([tr[i : i + a.ctx + 1] for i in ix])
        with amp:
            loss = model(x[:, :-1], x[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        evaluate = (a.eval_every and (step + 1) % a.eval_every == 0) or step + 1 == a.steps
        if evaluate:
            with torch.no_grad(), amp:
                nw = min(40 * a.batch, (len(va) - 1) // a.ctx)
                xs = torch.stack([va[i * a.ctx : i * a.ctx + a.ctx + 1] for i in range(nw)])
                vl = statistics.fmean(model(xs[j:j + a.batch, :-1], xs[j:j + a.batch, 1:]).item() for j in range(0, nw, a.batch))
            print(json.dumps({"step": step + 1, "loss": loss.item(), "val_loss": vl, "elapsed_s": time.time() - t0}), flush=True)
        elif a.log_every and (step + 1) % a.log_every == 0:
            print(json.dumps({"step": step + 1, "loss": loss.item(), "grad_norm": gnorm.item(), "elapsed_s": time.time() - t0}), flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["bench", "train"])
    p.add_argument("--preset", default="gpt2-tiny")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=0)
    p.add_argument("--ctx", type=int, default=0)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--eval-every", type=int, default=100, help="train: validation every N steps (0: only at the end)")
    p.add_argument("--log-every", type=int, default=0, help="train: also print the training loss every N steps")
    p.add_argument("--lr-warmup", type=int, default=None, help="train: warm-up steps (default min(100, steps/10))")
    p.add_argument("--json", help="bench: also write the result as JSON here")
    p.add_argument("--precision", choices=["f32", "bf16"], default="f32", help="bf16 autocasts the forward (bench and train)")
    p.add_argument("--data", default=os.path.expanduser("~/.cache/anychip/shakespeare/shakespeare.txt"))
    p.add_argument("--init-from", help="train: start from this anychip run's checkpointed weights")
    p.add_argument("--batches", choices=["torch", "anychip"], default="torch",
                   help="train: draw windows with torch.randint, or exactly as anychip's loader does for --seed")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.mode == "bench":
        bench(a)
    else:
        a.preset = a.preset if a.preset != "gpt2-tiny" else "shakespeare-bytes"
        a.batch, a.ctx = a.batch or 16, a.ctx or 256
        train(a)
