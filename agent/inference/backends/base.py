"""The backend seam: one object that turns a preprocessed NCHW float32 batch into logits.

A backend is loaded from a bundle folder and its model card, warmed up at load, and then only
``infer`` is called (by the agent's inference thread and the HTTP ``/v1/count`` endpoint). Optional
runtimes (TensorRT, CUDA bindings) are imported inside the backend's own module, never here.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np

from contract.card import Artifact, ModelCard

log = logging.getLogger(__name__)

__all__ = ["Backend", "BackendError", "BackendUnavailable", "EngineBuildError", "pick_onnx_artifact"]


class BackendError(RuntimeError):
    """A backend that could not load or run a model; the message names the cause and the fix."""


class BackendUnavailable(BackendError):
    """The runtime a backend needs is not installed or has no device here."""


class EngineBuildError(BackendError):
    """Bad builder input (model, precision, batch profile, DLA) or a failed TensorRT build."""


class Backend(ABC):
    """Abstract inference backend.

    Subclasses set ``name``; ``precision`` and ``artifact`` are set by :meth:`load`.
    ``max_batch`` is the largest batch :meth:`infer` accepts (the runtime splits bigger ones).
    """

    name: ClassVar[str] = "abstract"

    def __init__(self) -> None:
        self.precision: str = "fp32"
        self.card: Optional[ModelCard] = None
        self.artifact: Optional[Artifact] = None
        self.model_file: Optional[Path] = None
        self.model_sha256: str = ""
        self.max_batch: int = 1
        self.device: str = "cpu"

    @classmethod
    def is_available(cls) -> tuple[bool, str]:
        """``(True, "")`` when this backend can run here, else ``(False, why not and how to fix)``."""
        return True, ""

    @abstractmethod
    def load(self, bundle: Path, card: ModelCard) -> None:
        """Load the model of ``bundle`` described by ``card``; raise :class:`BackendError`."""

    @abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """``batch`` float32 (N, C, H, W) (or the card's layout) -> logits float32 (N, num_classes)."""

    def warmup(self, iterations: int = 2) -> None:
        """Run a few zero batches so the first real frame does not pay for lazy initialisation."""
        if self.card is None:
            raise BackendError("warmup() before load()")
        spec = self.card.input
        shape = (1, 3, spec.height, spec.width) if spec.layout == "NCHW" else (1, spec.height, spec.width, 3)
        x = np.zeros(shape, dtype=np.float32)
        for _ in range(max(1, iterations)):
            out = self.infer(x)
        if out.shape != (1, self.card.model.num_classes):
            raise BackendError(
                f"{self.name}: model output has shape {tuple(out.shape)}, the card says "
                f"{self.card.model.num_classes} classes: the bundle's model and card.json disagree"
            )

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release runtime resources (sessions, CUDA memory)."""

    def describe(self) -> dict[str, object]:
        return {
            "backend": self.name,
            "precision": self.precision,
            "device": self.device,
            "file": self.model_file.name if self.model_file else None,
            "max_batch": self.max_batch,
        }


def pick_onnx_artifact(
    bundle: Path, card: ModelCard, precision: str, target: str
) -> tuple[Path, Optional[Artifact], str]:
    """Choose the ONNX file of ``bundle`` for ``precision`` (auto|fp32|fp16|int8) and ``target``.

    Returns ``(path, artifact row or None, precision)``. ``auto`` prefers INT8 for the target, then
    FP32. A bundle without artifact rows (a plain folder with ``model.fp32.onnx``) still loads.
    """
    order = ["int8", "fp32"] if precision == "auto" else [precision]
    for prec in order:
        for tgt in (target, "any"):
            art = card.artifact("onnx", prec, tgt)
            if art is not None and (bundle / art.file).is_file():
                return bundle / art.file, art, prec
    # conventional names (docs/architecture.md, "Model card and bundle") when the card lists no artifacts
    names = {
        "int8": [f"model.int8-{'trt' if target == 'tensorrt' else 'cpu'}.onnx"],
        "fp32": ["model.fp32.onnx", "model.onnx"],
        "fp16": ["model.fp16.onnx"],
    }
    for prec in order:
        for name in names.get(prec, []):
            if (bundle / name).is_file():
                return bundle / name, None, prec
    listed = ", ".join(f"{a.file} ({a.precision}/{a.target})" for a in card.artifacts if a.kind == "onnx")
    raise BackendError(
        f"bundle {bundle} has no ONNX model for precision={precision} target={target} "
        f"(card lists: {listed or 'none'}); pick another --precision or rebuild the bundle"
    )
