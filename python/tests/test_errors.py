"""Bad input raises anychip's exceptions with the CLI's messages; nothing crashes the interpreter."""

import numpy as np
import pytest

import anychip
from conftest import SMALL


def test_unknown_preset(tmp_path):
    with pytest.raises(anychip.InputError, match=r"unknown preset 'gpt9'; available presets: .*shakespeare-bytes"):
        anychip.train(preset="gpt9", steps=1, out=tmp_path / "r")


def test_missing_data_file(tmp_path):
    with pytest.raises(anychip.DataError, match="does not exist") as e:
        anychip.train(data=tmp_path / "nope.txt", steps=1, out=tmp_path / "r")
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, anychip.AnychipError)


def test_unknown_setting_names_the_known_ones(corpus, tmp_path):
    with pytest.raises(anychip.InputError, match="unknown training setting 'bacth'; known settings: .*batch"):
        anychip.train(data=corpus, steps=1, out=tmp_path / "r", bacth=4)


def test_engine_errors_keep_the_cli_message(corpus, tmp_path):
    with pytest.raises(anychip.AnychipError, match=r"--ctx 100000 is larger than the model's maximum context"):
        anychip.train(data=corpus, steps=1, out=tmp_path / "r", **dict(SMALL, ctx=100000))


def test_an_existing_checkpoint_is_not_overwritten(small_run):
    with pytest.raises(anychip.AnychipError, match="already holds a checkpoint; pass --resume"):
        anychip.train(steps=1, out=small_run.dir)


def test_missing_model_dir(tmp_path):
    with pytest.raises(anychip.DataError, match="does not exist"):
        anychip.Model.load(tmp_path / "nothing")


def test_tokens_of_the_wrong_dtype_or_shape(small_run):
    model = anychip.Model.load(small_run.dir)
    with pytest.raises(anychip.InputError, match="must be integer token ids, got dtype float32") as e:
        model.loss(np.zeros((2, 9), dtype=np.float32))
    assert isinstance(e.value, ValueError)
    with pytest.raises(anychip.InputError, match=r"has shape \[2, 3, 4\]"):
        model.loss(np.zeros((2, 3, 4), dtype=np.int64))
    with pytest.raises(anychip.InputError, match=r"want \[B, T\+1\]"):
        model.loss(np.zeros((2, 1), dtype=np.int64))
    with pytest.raises(anychip.InputError, match="token id 256 is outside the model's vocabulary of 256"):
        model.loss(np.full((1, 4), 256))
    with pytest.raises(anychip.InputError, match="outside the model's vocabulary"):
        model.logits(np.array([[-1, 2]]))
    with pytest.raises(anychip.InputError, match="float32"):
        model.load_state_dict({"tok_emb.weight": np.zeros((256, 4))})
    with pytest.raises(anychip.InputError, match="has no parameter 'nope'"):
        model.load_state_dict({"nope": np.zeros(3, dtype=np.float32)})


def test_a_panic_becomes_an_anychip_error():
    with pytest.raises(anychip.AnychipError, match="internal error: deliberate panic"):
        anychip._native.panic_for_test()


def test_planner_and_ports_errors():
    with pytest.raises(anychip.InputError, match="must look like NAME:COUNT"):
        anychip.plan(model="qwen3-8b", chips="h20", tokens=1e12)
    with pytest.raises(anychip.AnychipError, match="nochip"):
        anychip.compare(["h20", "nochip"], model="qwen3-8b", count=8)
    with pytest.raises(anychip.InputError, match="L9"):
        anychip.conform("cpu", level="L9")
    with pytest.raises(anychip.AnychipError, match="nosuchport"):
        anychip.conform("nosuchport", level="L0")
