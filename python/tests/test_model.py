"""anychip.Model: NumPy in and out, the same numbers as the CLI."""

import json
import subprocess

import numpy as np
import pytest

import anychip
from conftest import corpus_tokens, write_tokens_safetensors


@pytest.fixture(scope="module")
def model(small_run):
    return anychip.Model.load(small_run.dir)


def test_loss_from_numpy_tokens_equals_the_cli_eval(model, small_run, corpus, cli, tmp_path):
    tokens = corpus_tokens(corpus, rows=3, length=33, offset=1000)
    batch = tmp_path / "batch.safetensors"
    write_tokens_safetensors(batch, tokens)
    out = subprocess.run([cli, "eval", "--model", str(small_run.dir), "--batch", str(batch)],
                         capture_output=True, text=True, check=True)
    # Both are f32 values: equal as f32 means the same number, bit for bit.
    assert np.float32(model.loss(tokens)) == np.float32(json.loads(out.stdout)["loss"])
    # Any integer dtype, and a list, give the same loss.
    assert model.loss(tokens.astype(np.int32)) == model.loss(tokens.tolist()) == model.loss(tokens)


def test_weights_round_trip_through_numpy(model, corpus):
    tokens = corpus_tokens(corpus, rows=2, length=17)
    before = model.loss(tokens)
    sd = model.state_dict()
    assert sd["tok_emb.weight"].shape == (256, model.config["d_model"]) and sd["tok_emb.weight"].dtype == np.float32
    assert sum(v.size for v in sd.values()) == model.n_params
    model.load_state_dict({k: v * 0.5 for k, v in sd.items()})
    assert model.loss(tokens) != before  # the load reached the model
    model.load_state_dict(sd)
    assert model.loss(tokens) == before
    after = model.state_dict()
    assert all(np.array_equal(after[k], sd[k]) for k in sd)


def test_logits_agree_with_the_loss(model, corpus):
    tokens = corpus_tokens(corpus, rows=2, length=17)
    logits = model.logits(tokens[:, :-1])
    assert logits.shape == (2, 16, 256) and logits.dtype == np.float32
    z = logits.astype(np.float64)
    logp = z - z.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, tokens[:, 1:, None], -1).mean()
    assert nll == pytest.approx(model.loss(tokens), rel=1e-5)
    assert model.logits(tokens[0, :-1]).shape == (16, 256)


def test_generate_text_and_ids(model):
    text = model.generate("ROMEO:", tokens=40, seed=3)
    assert text.startswith("ROMEO:") and len(text) > len("ROMEO:")
    assert model.generate("ROMEO:", tokens=40, seed=3) == text
    prompt = model.encode("the king")
    ids = model.generate(prompt, tokens=5, temperature=0)
    assert ids.dtype == np.int64 and len(ids) == len(prompt) + 5
    assert list(ids[: len(prompt)]) == list(prompt)
    # Greedy: the first new token is the argmax of the prompt's last logits.
    assert ids[len(prompt)] == int(model.logits(prompt.astype(np.int64))[-1].argmax())
    assert model.decode(ids).startswith("the king")
