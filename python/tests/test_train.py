"""anychip.train, Run, Run.resume: metrics, callbacks, stopping, Ctrl-C, the GIL."""

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import anychip
from conftest import SMALL


def test_train_returns_a_run_with_every_steps_metrics(small_run):
    m = small_run.metrics
    assert [r["step"] for r in m] == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(r["loss"]) and r["tokens_per_s"] > 0 for r in m)
    # The last step validates, as the CLI's does.
    assert m[-1]["val_loss"] is not None and m[0]["val_loss"] is None
    assert small_run.summary["steps"] == 6 and small_run.summary["train_loss"] == pytest.approx(m[-1]["loss"])
    assert small_run.step == 6 and small_run.config["batch"] == 4
    frame = small_run.metrics_frame()
    assert list(frame["step"]) == [1, 2, 3, 4, 5, 6] and "loss" in frame.columns


def test_on_step_sees_each_record_and_false_stops_with_a_checkpoint(corpus, tmp_path):
    seen = []

    def on_step(rec):
        seen.append(rec)
        return False if rec["step"] == 3 else None

    run = anychip.train(data=corpus, steps=6, out=tmp_path / "r", on_step=on_step, **SMALL)
    assert [r["step"] for r in seen] == [1, 2, 3]
    assert run.summary["steps"] == 3 and run.step == 3
    # The callback's records are the logged ones (the log holds each f32 to f32 precision).
    assert [(r["step"], np.float32(r["loss"]), np.float32(r["grad_norm"])) for r in seen] == [
        (r["step"], np.float32(r["loss"]), np.float32(r["grad_norm"])) for r in run.metrics
    ]
    resumed = anychip.Run.resume(run.dir, quiet=True)
    assert resumed.summary["steps"] == 6 and [r["step"] for r in resumed.metrics] == [1, 2, 3, 4, 5, 6]


def test_a_stopped_and_resumed_run_matches_an_uninterrupted_one(corpus, tmp_path, small_run):
    run = anychip.train(data=corpus, steps=6, out=tmp_path / "r", stop_after=2, **SMALL)
    assert run.step == 2
    anychip.Run.resume(run.dir, quiet=True)
    assert [r["loss"] for r in run.metrics] == [r["loss"] for r in small_run.metrics]


def test_an_exception_in_on_step_propagates_after_checkpointing(corpus, tmp_path):
    def on_step(rec):
        if rec["step"] == 2:
            raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        anychip.train(data=corpus, steps=6, out=tmp_path / "r", on_step=on_step, **SMALL)
    assert anychip.Run.open(tmp_path / "r").step == 2


CHILD = """
import sys, anychip
anychip.train(data=sys.argv[1], steps=100000, out=sys.argv[2], batch=4, ctx=32, eval_every=0,
              ckpt_every=0, quiet=True)
"""


def test_ctrl_c_stops_after_the_current_step_with_a_resumable_checkpoint(corpus, tmp_path):
    out = tmp_path / "r"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(corpus), str(out)], stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert child.returncode != 0 and "KeyboardInterrupt" in err and "anychip.Run.resume" in err, err
    run = anychip.Run.open(out)
    logged = len(run.metrics)
    assert 3 <= run.step == logged < 100000
    resumed = anychip.Run.resume(out, steps=logged + 2, quiet=True)
    assert resumed.summary["steps"] == logged + 2


def test_steps_run_with_the_gil_released(corpus, tmp_path):
    # A Python thread that wakes every 5 ms can only run during a step if the step released
    # the GIL; holding it, the thread would wake about once per step (between steps).
    wakes, done = [0], threading.Event()

    def ticker():
        while not done.is_set():
            time.sleep(0.005)
            wakes[0] += 1

    t = threading.Thread(target=ticker)
    t.start()
    try:
        run = anychip.train(data=corpus, steps=8, out=tmp_path / "r", **dict(SMALL, batch=16, ctx=128))
    finally:
        done.set()
        t.join()
    steps, wall = run.summary["steps"], run.metrics[-1]["elapsed_s"]
    assert wall / steps > 0.02, "steps too short for this test to tell"
    assert wakes[0] > 3 * steps, (wakes[0], steps, wall)


def test_train_without_arguments_uses_the_cli_defaults(tmp_path, monkeypatch):
    # The README's smoke test: the default preset and corpus (fetched once), 20 steps.
    monkeypatch.chdir(tmp_path)
    run = anychip.train(steps=20, quiet=True)
    assert run.summary["steps"] == 20 and run.dir.parent == Path("runs")
    assert run.config["preset"] == "shakespeare-bytes" and run.config["warmup"] == 2
