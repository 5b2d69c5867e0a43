"""Atomic, state-dict-only checkpoints (``contract.files.atomic_writer``: a temp file in the same
folder, then ``os.replace``), the RNG state they carry, and a hash of a state dict."""

from __future__ import annotations

import hashlib
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contract.files import atomic_writer

__all__ = [
    "get_rng_state",
    "load_checkpoint",
    "save_atomic",
    "set_rng_state",
    "state_dict_sha256",
]

log = logging.getLogger(__name__)


def save_atomic(obj: Any, path: Path | str) -> Path:
    """``torch.save`` to a temp file beside ``path``, fsync, then rename over it (never half-written)."""
    p = Path(path)
    with atomic_writer(p, mode=0o644) as f:  # 0644: a run folder is meant to be shared
        torch.save(obj, f)
    return p


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_atomic` (``weights_only=True``: no code runs)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no checkpoint at {p}")
    return torch.load(p, map_location=map_location, weights_only=True)


def get_rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states in a form ``weights_only`` loading accepts."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    try:
        py = state["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        name, keys, *rest = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        log.warning("could not restore RNG state (%s); continuing with fresh randomness", e)


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """A hash of a state dict's names, dtypes, shapes and values (CPU bytes, in key order)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
