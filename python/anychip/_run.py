"""Training runs: ``anychip.train`` and :class:`Run`."""

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

from . import _native
from ._errors import DataError, InputError
from ._table import Table

PathLike = Union[str, "os.PathLike[str]"]
StepCallback = Callable[[Dict[str, Any]], Optional[bool]]


class Run:
    """A training run directory (``metrics.jsonl`` and ``checkpoint/``), as ``anychip train
    --out DIR`` writes it.

    ``summary`` is what the last :func:`train` or :meth:`resume` call in this process returned
    (steps, train_loss, val_loss, tokens_per_s, mfu, wall_s, n_params, out), or None for a run
    opened with :meth:`open`.
    """

    def __init__(self, directory: PathLike, summary: Optional[Dict[str, Any]] = None) -> None:
        self.dir: Path = Path(directory)
        self.summary: Optional[Dict[str, Any]] = summary

    @classmethod
    def open(cls, directory: PathLike) -> "Run":
        """The run in ``directory`` (raises :class:`DataError` if it holds no metrics.jsonl)."""
        run = cls(directory)
        if not (run.dir / "metrics.jsonl").exists():
            raise DataError(f"{run.dir} holds no metrics.jsonl; pass the out directory of a training run")
        return run

    @classmethod
    def resume(
        cls,
        directory: PathLike,
        steps: Optional[int] = None,
        port: str = "cpu",
        threads: Optional[int] = None,
        on_step: Optional[StepCallback] = None,
        stop_after: Optional[int] = None,
        quiet: bool = False,
    ) -> "Run":
        """Continue the run whose checkpoint is in ``directory`` (its run directory or the
        ``checkpoint/`` inside), exactly as ``anychip train --resume DIR`` does: same schedule,
        same data order. ``steps`` raises the total step budget; the run keeps its other
        settings. Ctrl-C and ``on_step`` behave as in :func:`train`."""
        d = Path(directory)
        if not d.exists():
            raise DataError(f"{d} does not exist; pass the out directory of a training run to resume")
        out = d if (d / "checkpoint").exists() or d.name != "checkpoint" else d.parent
        summary = _native.train(
            "shakespeare-bytes",
            "{}",
            str(out),
            port,
            threads=threads,
            resume=str(d),
            steps=steps,
            stop_after=stop_after,
            on_step=on_step,
            quiet=quiet,
        )
        return cls(out, json.loads(summary))

    @property
    def metrics(self) -> List[Dict[str, Any]]:
        """One dict per optimizer step (step, loss, lr, grad_norm, tokens, tokens_per_s,
        elapsed_s, and val_loss on validation steps), read from ``metrics.jsonl``. A step
        logged twice (a run resumed from an earlier checkpoint) keeps its latest record."""
        by_step: Dict[int, Dict[str, Any]] = {}
        path = self.dir / "metrics.jsonl"
        if path.exists():
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        rec = json.loads(line)
                        rec.setdefault("val_loss", None)
                        by_step[rec["step"]] = rec
        return Table(by_step[k] for k in sorted(by_step))

    def metrics_frame(self) -> Any:
        """:attr:`metrics` as a ``pandas.DataFrame`` (needs pandas)."""
        return Table(self.metrics).to_pandas()

    @property
    def checkpoint(self) -> Path:
        """The run's checkpoint directory."""
        return self.dir / "checkpoint"

    @property
    def config(self) -> Dict[str, Any]:
        """The run's settings (the checkpoint's config.json)."""
        path = self.checkpoint / "config.json"
        if not path.exists():
            raise DataError(f"{self.dir} has no checkpoint yet ({path} is missing)")
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    @property
    def step(self) -> int:
        """The step the checkpoint holds."""
        with open(self.checkpoint / "state.json", encoding="utf-8") as f:
            return int(json.load(f)["step"])

    def model(self, port: str = "cpu", threads: Optional[int] = None) -> "Any":
        """The trained model (:class:`anychip.Model`) from the checkpoint."""
        from ._model import Model

        return Model.load(self.dir, port=port, threads=threads)

    def __repr__(self) -> str:
        s = self.summary
        if s is None:
            return f"Run({str(self.dir)!r})"
        return (
            f"Run({str(self.dir)!r}, steps={s['steps']}, train_loss={s['train_loss']:.4f}, "
            f"val_loss={s['val_loss'] if s['val_loss'] is None else round(s['val_loss'], 4)}, "
            f"tokens_per_s={s['tokens_per_s']:.0f})"
        )


def train(
    preset: str = "shakespeare-bytes",
    data: Optional[PathLike] = None,
    steps: Optional[int] = None,
    port: str = "cpu",
    precision: str = "f32",
    out: Optional[PathLike] = None,
    on_step: Optional[StepCallback] = None,
    *,
    init: Optional[PathLike] = None,
    tokenizer: Optional[str] = None,
    batch: Optional[int] = None,
    ctx: Optional[int] = None,
    lr: Optional[float] = None,
    seed: Optional[int] = None,
    threads: Optional[int] = None,
    stop_after: Optional[int] = None,
    quiet: bool = False,
    **settings: Any,
) -> Run:
    """Train a model, as ``anychip train`` does, and return its :class:`Run`.

    Defaults are the command's: a byte-level GPT (``shakespeare-bytes``) on the works of
    Shakespeare (fetched once), 1200 steps, on the ``cpu`` port, writing
    ``runs/<preset>-<time>``. Arguments:

    - ``preset``: a model preset (:func:`anychip.presets`); ``init``: a Hugging Face directory
      to start from instead (its architecture and weights).
    - ``data``: a UTF-8 text file or a directory of them; ``tokenizer``: ``bytes`` or ``gpt2``.
    - ``steps``, ``batch``, ``ctx``, ``lr`` (peak; decays to a tenth), ``seed``.
    - ``port``: see :func:`anychip.ports`; ``threads``: worker threads (default all cores).
    - ``precision``: ``f32`` or ``bf16`` (mixed precision: bf16 products, f32 master weights).
    - ``out``: the run directory (must not hold a checkpoint: use :meth:`Run.resume`).
    - ``on_step(record)``: called after every step with the step's metrics dict; returning
      ``False`` stops the run (checkpointed); an exception it raises stops the run
      (checkpointed) and propagates.
    - ``stop_after``: stop (checkpointed) after this many steps of the schedule.
    - ``**settings``: any other field of the run's config, by the name ``Run.config`` shows
      (``accum``, ``warmup``, ``min_lr``, ``eval_every``, ``eval_batches``, ``ckpt_every``,
      ``val_fraction``, ``adamw={"weight_decay": ...}``, ...).

    Steps run with the GIL released. Ctrl-C (KeyboardInterrupt) stops after the current step
    and leaves a checkpoint that :meth:`Run.resume` continues; the KeyboardInterrupt is then
    re-raised with the directory in its message.
    """
    given: Dict[str, Any] = dict(settings)
    for key, value in (("data", data), ("steps", steps), ("tokenizer", tokenizer), ("batch", batch),
                       ("ctx", ctx), ("lr", lr), ("seed", seed)):
        if value is not None:
            given[key] = str(value) if key == "data" else value
    if precision not in ("f32", "bf16"):
        raise InputError(f"precision '{precision}' is not one of f32, bf16")
    given["precision"] = precision
    if data is not None and not Path(data).exists():
        raise DataError(f"training data {data} does not exist; pass a UTF-8 text file or a directory of them")
    if on_step is not None and not callable(on_step):
        raise InputError("on_step must be a function taking the step's metrics dict")
    if out is None:
        out = Path("runs") / f"{preset if init is None else 'hf-init'}-{int(time.time())}"
    summary = _native.train(
        preset,
        json.dumps(given),
        str(out),
        port,
        threads=threads,
        init=None if init is None else str(init),
        stop_after=stop_after,
        on_step=on_step,
        quiet=quiet,
    )
    return Run(out, json.loads(summary))
