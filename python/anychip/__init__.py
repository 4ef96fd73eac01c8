"""anychip: train transformer language models on any chip, and plan training jobs across chips.

The Rust engine behind the ``anychip`` command, from Python::

    import anychip
    run = anychip.train(steps=200)             # a byte-level GPT on Shakespeare, on the cpu port
    run.metrics_frame().plot(x="step", y="loss")
    model = anychip.Model.load(run.dir)
    print(model.generate("ROMEO:", tokens=200))
    anychip.compare(["h20", "p800", "ppu"], model="qwen3-8b", count=1024).to_pandas()

Training, evaluation and planning release the GIL; errors are :class:`AnychipError` subclasses
carrying the command line's one-line messages.
"""

import json as _json
from typing import Optional

from . import _native
from ._errors import AnychipError, DataError, InputError, UnsupportedError
from ._model import Model
from ._plan import check, chips, compare, fleet, plan
from ._run import Run, train
from ._table import Table

__version__: str = _native.__version__


def presets() -> "list[str]":
    """Names of the model presets ``train(preset=...)`` accepts."""
    return list(_native.presets())


def ports() -> Table:
    """The registered ports (the same as ``anychip ports``): one record each with ``name``,
    ``about``, ``available``, ``device``, the dtypes it stores and computes, its fused ops, and
    ``error`` (why it is unavailable on this machine, else None)."""
    return Table(_json.loads(_native.ports()))


def conform(port: str = "cpu", level: str = "L4", threads: Optional[int] = None) -> dict:
    """Run the conformance suite on ``port`` from L0 up to ``level`` (``L0``..``L5`` or ``all``)
    against the ``ref`` oracle, as ``anychip conform`` does. Returns the report (the JSON of
    ``anychip conform --json``) with ``report["passed"]`` added; ``report["rows"]`` holds one
    record per check. A failing port is a report with ``passed`` False, not an exception."""
    report = _json.loads(_native.conform(port, level, threads))
    report["rows"] = Table(report["rows"])
    return report


__all__ = [
    "AnychipError",
    "DataError",
    "InputError",
    "UnsupportedError",
    "Model",
    "Run",
    "Table",
    "check",
    "chips",
    "compare",
    "conform",
    "fleet",
    "plan",
    "ports",
    "presets",
    "train",
]
