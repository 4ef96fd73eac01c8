"""The planner: chips, plans, comparisons and fleets, from crates/plan's library."""

import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from . import _native
from ._errors import DataError, InputError
from ._table import Table

PathLike = Union[str, "os.PathLike[str]"]


def _strs(values: Optional[Iterable[Any]]) -> List[str]:
    return [str(v) for v in (values or [])]


def _chip_files(files: Optional[Iterable[PathLike]]) -> List[str]:
    out = _strs(files)
    for f in out:
        if not Path(f).exists():
            raise DataError(f"chip file {f} does not exist")
    return out


def _measured(measured: Optional[PathLike]) -> Optional[str]:
    """A measured-runs file for the native calls: its path, checked to exist."""
    if measured is None:
        return None
    if not Path(str(measured)).exists():
        raise DataError(f"measured runs file {measured} does not exist")
    return str(measured)


def _job_options(
    seq: Optional[int],
    global_batch: Optional[int],
    overrides: Sequence[str],
    chip_files: Sequence[PathLike],
    stack: str,
    precision: str,
) -> Tuple[Any, ...]:
    """The arguments the native plan and compare take after the job's size, in their order
    (python/src/planner.rs): sequence, global batch, chip overrides and files, stack, precision."""
    return (seq, global_batch, _strs(overrides), _chip_files(chip_files), stack, precision)


def chips(overrides: Sequence[str] = (), chip_files: Sequence[PathLike] = ()) -> Table:
    """The chip database (as ``anychip chips``): one record per chip with its identity, every
    figure (``bf16_tflops``, ``memory_gb``, ``mem_bw_tbs``, ``tdp_w``, ...; None if not public)
    and the computed export class. ``overrides`` are ``CHIP.FIELD=VALUE`` strings and
    ``chip_files`` TOML chip files, as the command's ``--override`` and ``--chip-file``."""
    return Table(json.loads(_native.chips(_strs(overrides), _chip_files(chip_files))))


def plan(
    model: str,
    chips: str,
    tokens: float,
    seq: Optional[int] = None,
    global_batch: Optional[int] = None,
    top: int = 5,
    overrides: Sequence[str] = (),
    chip_files: Sequence[PathLike] = (),
    stack: str = "unknown",
    precision: str = "bf16",
    layout: Optional[str] = None,
    measured: Optional[PathLike] = None,
) -> Dict[str, Any]:
    """The best parallel layouts of one training job (as ``anychip plan``): ``model`` a preset
    (e.g. ``qwen3-8b``), TOML model file or Hugging Face ``config.json`` (or its directory; a
    family the planner does not know by name is read by transformers' standard field names, and
    the plan's ``model_note`` says what was assumed), ``chips`` ``NAME:COUNT`` (e.g. ``h20:1024``),
    ``tokens`` the training tokens; ``stack``, ``precision`` and ``layout`` as the command's
    ``--stack``, ``--precision`` and ``--layout`` (e.g. ``"tp=2,ep=8,etp=2,mb=1"``: only that
    layout is evaluated); ``measured`` a file of your measured runs (as :func:`check` reads) whose
    chips are priced with their residuals from those runs, as ``--measured``. Returns the plan (the JSON of ``anychip plan --json``, with
    ``accuracy``: the planner's cross-validated error on published runs like this one) with
    ``rows``: a :class:`Table` of the ``top`` fitting layouts, fastest first (layout, step_s,
    tokens_per_s, mfu, memory_gib, days, energy_mwh, cost_usd, ...), and ``best``, the first of
    them. A pinned ``layout`` the memory model prices over usable memory raises
    :class:`AnychipError` whose ``plan`` attribute holds that layout's plan all the same (its
    ``over_memory`` says why), as the command prints it before its error line."""
    if top < 1:
        raise InputError("top must be at least 1")
    p = json.loads(
        _native.plan(
            model,
            chips,
            float(tokens),
            *_job_options(seq, global_batch, overrides, chip_files, stack, precision),
            layout,
            _measured(measured),
        )
    )
    p["ranked"] = p["ranked"][:top]
    p["rows"] = Table(p["rows"][:top])
    p["best"] = p["rows"][0] if p["rows"] else None
    return p


def compare(
    chips: Sequence[str],
    model: str,
    count: Optional[int] = None,
    tokens: float = 1e12,
    seq: Optional[int] = None,
    global_batch: Optional[int] = None,
    overrides: Sequence[str] = (),
    chip_files: Sequence[PathLike] = (),
    stack: str = "unknown",
    precision: str = "bf16",
    measured: Optional[PathLike] = None,
    days: Optional[float] = None,
) -> Table:
    """The same job on ``count`` chips of each kind (as ``anychip chips compare``), or, with
    ``days`` instead of ``count``, on the fewest chips of each kind (whole nodes) that train it
    within that many days (``--days``): one record per chip with its ``count``, best layout,
    tokens_per_s, mfu, days, energy_mwh, cost_usd, headroom_gib, ``validated`` (whether the
    performance model is validated on that chip family) and ``accuracy`` (the planner's measured
    error on published runs like this one, as ``anychip plan`` prints it), or ``refused`` (why no
    layout fits, or no count meets the deadline) with the numbers absent. ``stack``,
    ``precision`` and ``measured`` as ``anychip plan``'s ``--stack``, ``--precision`` and
    ``--measured``."""
    if isinstance(chips, str):
        chips = [chips]
    rows = json.loads(
        _native.compare(
            _strs(chips),
            model,
            None if count is None else int(count),
            float(tokens),
            *_job_options(seq, global_batch, overrides, chip_files, stack, precision),
            _measured(measured),
            None if days is None else float(days),
        )
    )
    return Table(rows)


def fleet(
    fleet: Union[PathLike, Mapping[str, Any]],
    jobs: Union[PathLike, Mapping[str, Any]],
    objective: str = "makespan",
    overrides: Sequence[str] = (),
    chip_files: Sequence[PathLike] = (),
    measured: Optional[PathLike] = None,
) -> Dict[str, Any]:
    """Place training jobs on a fleet of chip pools (as ``anychip fleet``). ``fleet`` and
    ``jobs`` are TOML files (the command's ``--fleet`` and ``--jobs``) or dicts of the same
    tables (``{"pool": [{"name": ..., "chip": ..., "count": ...}]}``, ``{"job": [...]}``);
    ``objective`` is ``makespan`` or ``cost``; ``measured`` as :func:`plan`'s. Returns the schedule (the JSON of
    ``anychip fleet --json``) with ``rows``: a :class:`Table` of one record per job share
    (job, model, chip, count, layout, start_days, end_days, days, mfu, tokens_per_s, cost_usd).
    A job's ``deadline_days`` (days from the start by which it must end) puts it first; each
    assignment then carries ``meets_deadline`` and, for a missed one, ``chips_for_deadline``."""
    inline = isinstance(fleet, Mapping)
    if inline != isinstance(jobs, Mapping):
        raise InputError("pass fleet and jobs both as files or both as dicts")
    if inline:
        f, j = json.dumps(fleet), json.dumps(jobs)
    else:
        f, j = str(fleet), str(jobs)
        for what, path in (("fleet", f), ("jobs", j)):
            if not Path(path).exists():
                raise DataError(f"{what} file {path} does not exist")
    s = json.loads(
        _native.fleet(
            f, j, objective, inline, _strs(overrides), _chip_files(chip_files), measured=_measured(measured)
        )
    )
    rows = []
    for a in s["assignments"]:
        for share in a["shares"]:
            rows.append(
                {
                    "job": a["job"],
                    "model": a["model"],
                    "chip": share["chip"],
                    "count": share["count"],
                    "layout": share["layout"],
                    "start_days": a["start_days"],
                    "end_days": a["start_days"] + a["days"],
                    "days": a["days"],
                    "mfu": share["mfu"],
                    "tokens_per_s": share["tokens_per_s"],
                    "cost_usd": a["cost_usd"],
                }
            )
    s["rows"] = Table(rows)
    return s


def check(
    runs: PathLike,
    overrides: Sequence[str] = (),
    chip_files: Sequence[PathLike] = (),
    measured: Optional[PathLike] = None,
) -> Dict[str, Any]:
    """Price your own measured runs, each on its own layout, with the shipped calibration (as
    ``anychip plan check --runs FILE``): ``runs`` a TOML file of ``[[row]]`` tables in the format
    of ``examples/runs/runs.toml``. Returns the report (the JSON of ``anychip plan check --json``:
    ``runs``, ``summary`` with ``mean_abs_error``, ``signed_mean_error``, ``worst_abs_error``,
    ``p90_abs_error``, ``by_kind``, ``by_chip`` and ``by_stack``) with ``rows``: a :class:`Table` of one record per run (id,
    chip, chips, model, stack, layout, published_tokens_per_chip_s, predicted_tokens_per_chip_s,
    error, fits, fitted). ``measured`` prices them with the residuals of another file of runs, as
    ``--measured``; ``measured_leave_one_out`` is what a residual from the file's own other runs
    of each chip gains."""
    path = str(runs)
    if not Path(path).exists():
        raise DataError(f"runs file {path} does not exist")
    r = json.loads(_native.check(path, _strs(overrides), _chip_files(chip_files), _measured(measured)))
    r["rows"] = Table([{k: v for k, v in run.items() if k != "estimate"} for run in r["runs"]])
    return r
