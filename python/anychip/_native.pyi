# Typed stub of the native module (python/src). The documented API is in anychip/__init__.py,
# _run.py, _model.py and _plan.py; these are the engine entry points they call.
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import numpy.typing as npt

__version__: str

def presets() -> List[str]: ...
def train(
    preset: str,
    settings: str,
    out: str,
    port: str,
    threads: Optional[int] = None,
    init: Optional[str] = None,
    resume: Optional[str] = None,
    steps: Optional[int] = None,
    stop_after: Optional[int] = None,
    on_step: Optional[Callable[[Dict[str, Any]], Optional[bool]]] = None,
    quiet: bool = False,
) -> str: ...

class NativeModel:
    @staticmethod
    def load(path: str, port: str = "cpu", threads: Optional[int] = None) -> "NativeModel": ...
    def config_json(self) -> str: ...
    @property
    def arch(self) -> str: ...
    @property
    def ctx(self) -> int: ...
    @property
    def n_params(self) -> int: ...
    @property
    def tokenizer(self) -> Optional[str]: ...
    def loss(self, tokens: npt.NDArray[np.int64]) -> float: ...
    def logits(self, tokens: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]: ...
    def generate_ids(
        self, prompt: Sequence[int], tokens: int, temperature: float, top_k: int, seed: int
    ) -> npt.NDArray[np.uint32]: ...
    def encode(self, text: str) -> npt.NDArray[np.uint32]: ...
    def decode(self, ids: Sequence[int]) -> str: ...
    def state_dict(self) -> Dict[str, npt.NDArray[np.float32]]: ...
    def load_state_dict(self, tensors: List[Tuple[str, npt.NDArray[np.float32]]]) -> None: ...

def chips(overrides: Sequence[str] = ..., chip_files: Sequence[str] = ...) -> str: ...
def plan(
    model: str,
    chips: str,
    tokens: float,
    seq: Optional[int] = None,
    global_batch: Optional[int] = None,
    overrides: Sequence[str] = ...,
    chip_files: Sequence[str] = ...,
    stack: str = "unknown",
    precision: str = "bf16",
    layout: Optional[str] = None,
    measured: Optional[str] = None,
) -> str: ...
def compare(
    chips: Sequence[str],
    model: str,
    count: int,
    tokens: float = 1e12,
    seq: Optional[int] = None,
    global_batch: Optional[int] = None,
    overrides: Sequence[str] = ...,
    chip_files: Sequence[str] = ...,
    stack: str = "unknown",
    precision: str = "bf16",
    measured: Optional[str] = None,
) -> str: ...
def fleet(
    fleet: str,
    jobs: str,
    objective: str = "makespan",
    inline: bool = False,
    overrides: Sequence[str] = ...,
    chip_files: Sequence[str] = ...,
    stack: str = "unknown",
    measured: Optional[str] = None,
) -> str: ...
def check(
    runs: str, overrides: Sequence[str] = ..., chip_files: Sequence[str] = ..., measured: Optional[str] = None
) -> str: ...
def ports() -> str: ...
def conform(port: str = "cpu", level: str = "L4", threads: Optional[int] = None) -> str: ...
def panic_for_test() -> None: ...
