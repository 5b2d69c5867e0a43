"""A backend whose logits come from a Python function: for tests, dry runs and demos.

It ships with the library so that code built on the agent (and the agent's own tests) can drive
the whole pipeline without a model file::

    FakeBackend(lambda x: np.tile([0, 0, 5.0, 0, 0, 0], (len(x), 1)))   # always "2 items"
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import numpy as np

from agent.inference.backends.base import Backend, BackendError
from contract.card import ModelCard

log = logging.getLogger(__name__)

__all__ = ["FakeBackend"]

LogitsFn = Callable[[np.ndarray], np.ndarray]


class FakeBackend(Backend):
    """``infer(batch) = fn(batch)``; without ``fn`` the logits are zeros (a uniform distribution).

    ``delay_s`` sleeps per call (to simulate a slow model); ``fail_load`` makes :meth:`load` raise
    (to test that a failed model swap keeps the old model).
    """

    name = "fake"

    def __init__(
        self,
        fn: Optional[LogitsFn] = None,
        *,
        card: Optional[ModelCard] = None,
        delay_s: float = 0.0,
        fail_load: Optional[str] = None,
        max_batch: int = 64,
    ) -> None:
        super().__init__()
        self.fn = fn
        self.delay_s = delay_s
        self.fail_load = fail_load
        self.calls = 0
        self.frames = 0
        self.max_batch = max_batch
        if card is not None:
            self.card = card

    def load(self, bundle: Path, card: ModelCard) -> None:
        if self.fail_load:
            raise BackendError(self.fail_load)
        self.card = card
        self.model_file = Path(bundle) / "fake"
        self.model_sha256 = "0" * 64
        self.precision = "fp32"
        log.info("fake backend loaded for %s v%s", card.name, card.version)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self.card is None:
            raise BackendError("infer() before load()")
        if len(batch) > self.max_batch:
            raise BackendError(f"batch of {len(batch)} exceeds max_batch {self.max_batch}")
        self.calls += 1
        self.frames += len(batch)
        if self.delay_s:
            time.sleep(self.delay_s)
        n = self.card.model.num_classes
        if self.fn is None:
            return np.zeros((len(batch), n), dtype=np.float32)
        out = np.asarray(self.fn(batch), dtype=np.float32)
        if out.shape != (len(batch), n):
            raise BackendError(f"fake fn returned shape {out.shape}, expected {(len(batch), n)}")
        return out
