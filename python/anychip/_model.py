"""Loaded models: loss, logits, generation and weights, with NumPy arrays in and out."""

import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from . import _native
from ._errors import DataError, InputError

PathLike = Union[str, "os.PathLike[str]"]


def _token_array(tokens: Any, what: str, min_len: int) -> "np.ndarray":
    """``tokens`` as a C-contiguous int64 array [B, N] (a 1-D array is one row), or InputError."""
    arr = np.asarray(tokens)
    if arr.dtype.kind not in "iu":
        raise InputError(
            f"{what} must be integer token ids, got dtype {arr.dtype}; convert with .astype(np.int64)"
        )
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < min_len:
        want = "[B, T+1] (inputs and their next tokens)" if min_len == 2 else "[B, T]"
        raise InputError(f"{what} has shape {list(np.shape(tokens))}; want {want} with at least {min_len} per row")
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise InputError(f"{what} holds ids beyond int64")
    return np.ascontiguousarray(arr, dtype=np.int64)


class Model:
    """A model for inference: an anychip run (or its checkpoint) or a Hugging Face directory
    (config.json + model.safetensors of a GPT-2, Llama, Qwen2/3 or Mistral model)."""

    def __init__(self, native: Any, path: Path) -> None:
        self._m = native
        self.path = path

    @classmethod
    def load(cls, path: PathLike, port: str = "cpu", threads: Optional[int] = None) -> "Model":
        """Load the model in ``path`` onto ``port`` (see :func:`anychip.ports`)."""
        p = Path(path)
        if not p.exists():
            raise DataError(f"{p} does not exist; pass an anychip run directory or a Hugging Face model directory")
        return cls(_native.NativeModel.load(str(p), port, threads), p)

    @property
    def config(self) -> Dict[str, Any]:
        """The architecture (anychip's ModelConfig: vocab_size, max_ctx, n_layer, ...)."""
        return json.loads(self._m.config_json())

    @property
    def arch(self) -> str:
        """The Hugging Face class the weights correspond to (e.g. ``GPT2LMHeadModel``)."""
        return self._m.arch

    @property
    def n_params(self) -> int:
        return self._m.n_params

    @property
    def tokenizer(self) -> Optional[str]:
        """``bytes`` or ``gpt2`` for an anychip run; None for a Hugging Face directory."""
        return self._m.tokenizer

    def loss(self, tokens: Any) -> float:
        """Mean next-token cross-entropy of ``tokens`` [B, T+1] (integers): each row's first T
        ids are the inputs and its last T the targets. The same computation (and number) as
        ``anychip eval --batch FILE`` on a file holding these tokens."""
        return float(self._m.loss(_token_array(tokens, "tokens", 2)))

    def logits(self, tokens: Any) -> "np.ndarray":
        """Logits [B, T, vocab] (float32) for input ids ``tokens`` [B, T] (a 1-D array: one row)."""
        arr = np.asarray(tokens)
        out = self._m.logits(_token_array(tokens, "tokens", 1))
        return out[0] if arr.ndim == 1 else out

    def encode(self, text: str) -> "np.ndarray":
        """Token ids (uint32) of ``text`` with the run's tokenizer."""
        return self._m.encode(text)

    def decode(self, ids: Any) -> str:
        """Text of token ids with the run's tokenizer."""
        return self._m.decode([int(i) for i in _token_array(ids, "ids", 0).ravel()])

    def generate(
        self,
        prompt: Any = "",
        tokens: int = 100,
        temperature: float = 0.8,
        top_k: int = 40,
        seed: int = 0,
    ) -> Any:
        """Continue ``prompt`` by ``tokens`` sampled tokens (temperature 0: greedy; top_k 0: all),
        as ``anychip sample`` does. A text prompt gives text back (prompt included; needs an
        anychip run's tokenizer); an integer array of ids gives the ids back (prompt included)."""
        if tokens < 0 or temperature < 0 or top_k < 0:
            raise InputError("tokens, temperature and top_k must be 0 or more")
        if isinstance(prompt, str):
            ids = self._m.encode(prompt)  # an empty prompt starts from end-of-text, as the CLI's
            out = self._m.generate_ids(ids.tolist(), tokens, temperature, top_k, seed)
            return prompt + self._m.decode(out[len(ids):].tolist())
        arr = _token_array(prompt, "prompt", 1)
        if arr.shape[0] != 1:
            raise InputError(f"prompt has {arr.shape[0]} rows; generate continues one sequence")
        return self._m.generate_ids(arr[0].tolist(), tokens, temperature, top_k, seed).astype(np.int64)

    def state_dict(self) -> Dict[str, "np.ndarray"]:
        """Every parameter by anychip name (``tok_emb.weight``, ``blocks.0.attn.qkv.weight``, ...)
        as a float32 array of its shape, copied out of the port."""
        return dict(self._m.state_dict())

    def load_state_dict(self, tensors: Dict[str, Any]) -> None:
        """Overwrite parameters by name from float32 arrays (any subset; shapes must match)."""
        items = []
        for name, value in tensors.items():
            arr = np.asarray(value)
            if arr.dtype != np.float32:
                raise InputError(f"'{name}' is {arr.dtype}; parameters are float32 (use .astype(np.float32))")
            items.append((name, np.ascontiguousarray(arr)))
        self._m.load_state_dict(items)

    def __repr__(self) -> str:
        return f"Model({str(self.path)!r}, arch={self.arch}, params={self.n_params})"
