"""Local predictions from a bundle or an ONNX file (``binwatch predict``), with ONNX Runtime.

Counts and calibrated distributions (softmax of logits / card temperature) for image files,
preprocessed as the agent does. The backend is chosen automatically (the bundle's INT8-CPU model on
ONNX Runtime's CPU provider) or by flag. This is a convenience for people; the agent has its own
backends.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from contract.base import ContractError
from contract.card import ModelCard, load_card
from export.artifacts import FP32_ONNX, INT8_CPU_ONNX, INT8_TRT_ONNX
from export.errors import ExportError

log = logging.getLogger(__name__)

__all__ = ["BACKENDS", "Prediction", "Predictor", "open_predictor"]

BACKENDS = ("auto", "onnx-cpu", "onnx-cuda", "onnx-tensorrt")
_PROVIDERS = {
    "onnx-cpu": ["CPUExecutionProvider"],
    "onnx-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "onnx-tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
# preferred model files per backend, best first
_MODEL_ORDER = {
    "onnx-cpu": (INT8_CPU_ONNX, FP32_ONNX),
    "onnx-cuda": (FP32_ONNX,),
    "onnx-tensorrt": (INT8_TRT_ONNX, FP32_ONNX),
}


@dataclass
class Prediction:
    file: str
    count: Optional[int] = None
    label: Optional[str] = None  # "3", or "5+" for the overflow class
    confidence: Optional[float] = None
    distribution: Optional[dict[str, float]] = None
    error: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"file": self.file}
        if self.error is not None:
            d["error"] = self.error
        else:
            d.update(
                count=self.count, label=self.label, confidence=self.confidence, distribution=self.distribution
            )
        return d


class Predictor:
    """An ONNX Runtime session plus the card's preprocessing and output mapping."""

    def __init__(self, model_file: Path, card: ModelCard, backend: str, threads: Optional[int] = None):
        import onnxruntime as ort

        from export.parity import ort_session

        providers = _PROVIDERS[backend]
        available = set(ort.get_available_providers())
        if providers[0] not in available:
            raise ExportError(
                f"backend {backend} needs ONNX Runtime's {providers[0]}, which this onnxruntime build lacks "
                f"(available: {', '.join(sorted(available))}). Fix: use --backend onnx-cpu, or install "
                "onnxruntime-gpu"
            )
        self.model_file = model_file
        self.card = card
        self.backend = backend
        self.session = ort_session(model_file, threads, providers)
        self.input_name = self.session.get_inputs()[0].name
        if self.input_name != card.input.name:
            log.warning("model input is %r, card says %r", self.input_name, card.input.name)

    @property
    def precision(self) -> str:
        return "int8" if "int8" in self.model_file.name else "fp32"

    def _label(self, idx: int) -> str:
        out = self.card.output
        c = out.counts[idx]
        return f"{c}+" if out.overflow and idx == len(out.counts) - 1 else str(c)

    def predict_arrays(self, x: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (N, classes) for preprocessed inputs."""
        logits = self.session.run(None, {self.input_name: x})[0].astype(np.float64)
        z = logits / self.card.output.temperature
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict_files(self, paths: Sequence[Path], batch_size: int = 8) -> list[Prediction]:
        from agent.surface import DecodeError, decode_jpeg, preprocess

        results: list[Prediction] = []
        pending: list[tuple[int, np.ndarray]] = []

        def flush() -> None:
            if not pending:
                return
            probs = self.predict_arrays(np.stack([x for _, x in pending]))
            for (i, _), p in zip(pending, probs, strict=True):
                k = int(np.argmax(p))
                r = results[i]
                r.count = self.card.output.counts[k]
                r.label = self._label(k)
                r.confidence = float(p[k])
                r.distribution = {self._label(j): round(float(v), 6) for j, v in enumerate(p)}
            pending.clear()

        for path in paths:
            results.append(Prediction(file=str(path)))
            try:
                x = preprocess(decode_jpeg(Path(path).read_bytes()), self.card.input)
            except (DecodeError, OSError, ValueError) as e:
                results[-1].error = f"{type(e).__name__}: {e}"
                continue
            pending.append((len(results) - 1, x))
            if len(pending) == batch_size:
                flush()
        flush()
        return results


def _card_for_onnx(onnx_file: Path, card_path: Optional[Path]) -> ModelCard:
    candidates = [card_path] if card_path else [onnx_file.parent / "card.json"]
    for c in candidates:
        if c is not None and c.exists():
            try:
                return load_card(c)
            except ContractError as e:
                raise ExportError(str(e)) from e
    raise ExportError(
        f"no card.json beside {onnx_file}: predictions need the model card "
        "(input size, normalisation, counts). "
        "Fix: pass --card CARD.json, or predict with a bundle"
    )


def _pick_model(root: Path, backend: str, precision: str) -> Path:
    if precision == "fp32":
        order: tuple[str, ...] = (FP32_ONNX,)
    elif precision == "int8":
        order = tuple(f for f in _MODEL_ORDER[backend] if "int8" in f)
    else:
        order = _MODEL_ORDER[backend]
    for name in order:
        if (root / name).is_file():
            return root / name
    raise ExportError(f"{root} has none of {', '.join(order)} for backend {backend} / precision {precision}")


@contextmanager
def open_predictor(
    model: Path | str,
    *,
    backend: str = "auto",
    precision: str = "auto",
    card: Optional[Path | str] = None,
    threads: Optional[int] = None,
    verify: bool = True,
) -> Iterator[Predictor]:
    """A :class:`Predictor` for a bundle (folder or tar) or an ONNX file (card beside it or ``card``).

    ``backend='auto'`` runs the INT8-CPU model on the CPU. Bundles are hash-checked first (``verify``).
    """
    from export.artifacts import check_onnx_file
    from export.bundle import open_bundle, verify_dir

    if backend not in BACKENDS:
        raise ExportError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if precision not in ("auto", "fp32", "int8"):
        raise ExportError(f"unknown precision {precision!r}: use auto, fp32 or int8")
    chosen = "onnx-cpu" if backend == "auto" else backend
    p = Path(model)
    with ExitStack() as stack:
        if p.suffix.lower() == ".onnx":
            check_onnx_file(p)
            model_card = _card_for_onnx(p, Path(card) if card else None)
            model_file = p
        else:
            root = stack.enter_context(open_bundle(p))
            if verify:
                problems = verify_dir(root, run_golden=False)
                if problems:
                    raise ExportError(f"{p} does not verify: " + "; ".join(problems[:5]))
            model_card = load_card(Path(card)) if card else load_card(root)
            model_file = _pick_model(root, chosen, precision)
        log.info("predicting with %s on %s", model_file.name, chosen)
        yield Predictor(model_file, model_card, chosen, threads)
