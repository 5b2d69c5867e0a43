"""The golden set of a bundle: a few images with the FP32 model's outputs (``golden/expected.json``).

After installing a bundle the agent runs these images through whatever it built (TensorRT engine,
ONNX Runtime INT8, ...) and compares the distributions with the FP32 reference before switching to
the new model. Tolerances per precision are stored with the set.

Pure logic (stdlib, pydantic): no numpy, ONNX or torch. Written by ``binwatch export bundle``, checked
by the agent before it switches to a new model (:mod:`agent.inference.model_store`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Optional, Union

from pydantic import Field

from contract.base import Strict, Versioned

__all__ = [
    "DEFAULT_TOLERANCE",
    "GOLDEN_DIR",
    "GOLDEN_FILE",
    "GoldenItem",
    "GoldenSet",
    "compare_golden",
    "load_golden",
    "softmax",
]

GOLDEN_DIR = "golden"
GOLDEN_FILE = "golden/expected.json"
# Largest allowed absolute difference of any class probability against the FP32 reference.
DEFAULT_TOLERANCE = {"fp32": 1e-3, "fp16": 0.05, "int8": 0.15}


class GoldenItem(Strict):
    file: str = Field(min_length=1, description="image path relative to the bundle, e.g. golden/00017.jpg")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    logits: list[float]
    probs: list[float] = Field(description="softmax(logits / temperature)")
    count: int = Field(ge=0, description="predicted count (argmax mapped through output.counts)")


class GoldenSet(Versioned):
    SCHEMA = "binwatch.golden"
    VERSION = 1

    model: str = Field(description="the reference model file inside the bundle (FP32 ONNX)")
    model_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    temperature: float = Field(gt=0)
    counts: list[int] = Field(min_length=2)
    tolerance: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_TOLERANCE))
    items: list[GoldenItem] = Field(min_length=1)


def softmax(logits: Sequence[float], temperature: float = 1.0) -> list[float]:
    z = [x / temperature for x in logits]
    m = max(z)
    e = [math.exp(x - m) for x in z]
    s = sum(e)
    return [x / s for x in e]


def load_golden(bundle_dir: Union[str, Path]) -> GoldenSet:
    """Read ``golden/expected.json`` of a bundle folder; a :class:`~contract.base.ContractError`
    naming the file when it is missing, unreadable or invalid."""
    return GoldenSet.read_file(Path(bundle_dir) / GOLDEN_FILE)


def compare_golden(
    golden: GoldenSet,
    probs_by_file: dict[str, Sequence[float]],
    precision: str,
    tolerance: Optional[float] = None,
) -> list[str]:
    """Problems (empty: pass) comparing a model's probabilities with the golden FP32 reference.

    An item fails when its argmax differs or any probability is off by more than the tolerance for
    ``precision`` (``golden.tolerance``, or ``tolerance`` when given).
    """
    tol = (
        tolerance
        if tolerance is not None
        else golden.tolerance.get(precision, DEFAULT_TOLERANCE.get(precision, 0.15))
    )
    problems: list[str] = []
    for item in golden.items:
        got = probs_by_file.get(item.file)
        if got is None:
            problems.append(f"{item.file}: no output")
            continue
        if len(got) != len(item.probs):
            problems.append(f"{item.file}: {len(got)} classes, expected {len(item.probs)}")
            continue
        diff = max(abs(a - b) for a, b in zip(got, item.probs, strict=True))
        top_got = max(range(len(got)), key=lambda i: got[i])
        top_ref = max(range(len(item.probs)), key=lambda i: item.probs[i])
        if top_got != top_ref:
            problems.append(
                f"{item.file}: predicts count {golden.counts[top_got]}, reference {golden.counts[top_ref]}"
            )
        elif diff > tol:
            problems.append(f"{item.file}: probabilities differ by {diff:.4f} (> {tol} for {precision})")
    return problems
