"""Prove that transformers loads anychip's exports and computes the same loss.

    python3 tools/golden/check_export.py     # exports every golden model with `anychip export`
                                             # round trip and compares losses (needs torch)
"""
import json, os, subprocess, sys, tempfile
import torch
import torch.nn.functional as F
import transformers as T
from safetensors.torch import load_file

ROOT = os.path.join(os.path.dirname(__file__), "out")
BIN = os.environ.get("ANYCHIP", "target/release/anychip")


def main():
    worst = 0.0
    for arch in ["gpt2", "llama", "llama3_rope", "mistral", "qwen2", "qwen3", "ernie4_5", "qwen3_moe", "ernie4_5_moe"]:
        src = os.path.join(ROOT, f"hf-{arch}")
        batch = os.path.join(src, "batch.safetensors")
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "trained")
            # one anychip training step, so the export carries weights transformers never saw
            subprocess.run([BIN, "train", "--model", src, "--batch-file", batch, "--steps", "1", "--lr", "1e-2",
                            "--constant-lr", "--out", out], check=True, capture_output=True)
            ours = json.loads(subprocess.run([BIN, "eval", "--model", out, "--batch-file", batch], check=True,
                                             capture_output=True, text=True).stdout)["loss"]
            model = T.AutoModelForCausalLM.from_pretrained(out).float().eval()
            tok = load_file(batch)["tokens"]
            with torch.no_grad():
                lg = model(input_ids=tok[:, :-1]).logits
                theirs = F.cross_entropy(lg.reshape(-1, lg.shape[-1]), tok[:, 1:].reshape(-1)).item()
            worst = max(worst, abs(ours - theirs))
            print(f"{arch:12s} anychip {ours:.7f}  transformers {theirs:.7f}  |diff| {abs(ours - theirs):.2e}")
    print("max |diff|", worst)
    sys.exit(0 if worst < 1e-5 else 1)


if __name__ == "__main__":
    main()
