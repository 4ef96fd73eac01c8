"""Shared fixtures: a small corpus, a short run trained on it, and the `anychip` CLI binary."""

import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

import anychip

# A short run: small batches and context so that the whole suite trains in seconds.
SMALL = dict(batch=4, ctx=32, eval_every=0, eval_batches=2, ckpt_every=0, quiet=True)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """About 120 kB of varied English-like text (byte tokenizer)."""
    rng = np.random.default_rng(7)
    words = ("the king queen lord my good sir thou art love night day death life sweet fair "
             "come go speak hear see know heart eyes hand blood crown sword").split()
    lines = []
    for _ in range(4000):
        n = int(rng.integers(3, 9))
        lines.append(" ".join(words[int(i)] for i in rng.integers(0, len(words), n)).capitalize() + ".")
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def small_run(corpus, tmp_path_factory) -> anychip.Run:
    """Six steps of the default preset on the corpus."""
    out = tmp_path_factory.mktemp("runs") / "small"
    return anychip.train(data=corpus, steps=6, out=out, **SMALL)


@pytest.fixture(scope="session")
def cli() -> str:
    """The `anychip` binary: $ANYCHIP_CLI, else `anychip` on PATH, else the cargo target
    directory's. Skips when none is found, unless ANYCHIP_REQUIRE_CLI=1 (CI) makes that fail."""
    candidates = [os.environ.get("ANYCHIP_CLI"), shutil.which("anychip")]
    target = Path(os.environ.get("CARGO_TARGET_DIR", Path(__file__).parents[2] / "target"))
    candidates += [str(target / "release" / "anychip"), str(target / "debug" / "anychip")]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    if os.environ.get("ANYCHIP_REQUIRE_CLI") == "1":
        pytest.fail("no anychip binary found; set ANYCHIP_CLI or build it with `cargo build -p anychip`")
    pytest.skip("no anychip binary found (set ANYCHIP_CLI to compare with the CLI)")


def write_tokens_safetensors(path: Path, tokens: np.ndarray) -> None:
    """Write `tokens` (int64) as the safetensors file `anychip eval --batch` reads."""
    data = np.ascontiguousarray(tokens, dtype="<i8").tobytes()
    header = json.dumps({"tokens": {"dtype": "I64", "shape": list(tokens.shape), "data_offsets": [0, len(data)]}})
    header += " " * (-len(header) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + data)


def corpus_tokens(corpus: Path, rows: int, length: int, offset: int = 0) -> np.ndarray:
    """`rows` windows of `length` byte ids from the corpus."""
    raw = np.frombuffer(corpus.read_bytes(), dtype=np.uint8).astype(np.int64)
    return np.stack([raw[offset + r * length: offset + (r + 1) * length] for r in range(rows)])
