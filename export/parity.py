"""Parity of an exported ONNX model against the PyTorch model it came from.

Runs both on the same inputs (real images preprocessed as the agent does, or random tensors when
no images are at hand) and reports the largest absolute logit difference and whether every argmax
agrees. The ONNX side runs with more than one batch size, which also exercises the dynamic batch axis.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from contract.card import ModelCard
from export.errors import ExportError

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_ATOL", "ParityReport", "check_parity", "ort_session", "parity_inputs", "run_onnx"]

DEFAULT_ATOL = 1e-3


@dataclass(frozen=True)
class ParityReport:
    n: int
    max_abs_diff: float
    argmax_agree: int
    atol: float
    source: str  # "image" or "random"
    batch_sizes: tuple[int, ...]

    @property
    def passed(self) -> bool:
        return (
            bool(np.isfinite(self.max_abs_diff))
            and self.max_abs_diff <= self.atol
            and self.argmax_agree == self.n
        )

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"parity {verdict}: largest logit difference {self.max_abs_diff:.2e} "
            f"(tolerance {self.atol:.0e}), "
            f"argmax agrees on {self.argmax_agree}/{self.n} {self.source} inputs, "
            f"ONNX batch sizes {list(self.batch_sizes)}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "n": self.n,
            "max_abs_diff": self.max_abs_diff,
            "argmax_agree": self.argmax_agree,
            "atol": self.atol,
            "source": self.source,
            "batch_sizes": list(self.batch_sizes),
        }


def ort_session(
    onnx_path: Path | str, threads: Optional[int] = None, providers: Optional[list[str]] = None
) -> Any:
    """An ONNX Runtime session; a file ORT cannot load is an ExportError naming it."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(onnx_path), so, providers=providers or ["CPUExecutionProvider"])
    except Exception as e:
        raise ExportError(
            f"ONNX Runtime cannot load {onnx_path} ({type(e).__name__}: {str(e).strip()[:200]}). "
            "Fix: re-create it with `binwatch export onnx RUN`"
        ) from e


def run_onnx(session: Any, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Logits of ``x`` (N, ...) through an ORT session, in chunks of ``batch_size``."""
    name = session.get_inputs()[0].name
    outs = [session.run(None, {name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)]
    return np.concatenate(outs, axis=0)


def parity_inputs(
    card: ModelCard, images: Optional[Sequence[Path]] = None, n: int = 16, seed: int = 0
) -> tuple[np.ndarray, str]:
    """``(N x input batch, source)``: up to ``n`` of ``images`` preprocessed as the agent does, else
    ``n`` random normal tensors (the normalized input space)."""
    if images:
        from export.calib import ImageLoader, LabelledImage

        loader = ImageLoader(card.input, batch_size=len(images))
        batches = list(loader.batches([LabelledImage(p, p.stem, None) for p in list(images)[:n]]))
        if batches:
            return np.concatenate([b for b, _ in batches]), "image"
        log.warning("no parity image decoded; using random inputs")
    spec = card.input
    shape = (n, 3, spec.height, spec.width) if spec.layout == "NCHW" else (n, spec.height, spec.width, 3)
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32), "random"


def check_parity(
    model: Any,
    onnx_path: Path | str,
    inputs: np.ndarray,
    *,
    atol: float = DEFAULT_ATOL,
    source: str = "image",
) -> ParityReport:
    """Compare PyTorch (``model``, eval mode) with ONNX Runtime on ``inputs``."""
    import torch

    with torch.inference_mode():
        ref = model.eval()(torch.from_numpy(np.ascontiguousarray(inputs))).float().numpy()
    sess = ort_session(onnx_path)
    n = len(inputs)
    sizes = sorted({1, max(1, min(n, 8))})
    # batch 1 for the first image, then the rest in batches of up to 8 (dynamic batch axis)
    first = run_onnx(sess, inputs[:1], batch_size=1)
    rest = run_onnx(sess, inputs[1:], batch_size=sizes[-1]) if n > 1 else first[:0]
    got = np.concatenate([first, rest], axis=0)
    if got.shape != ref.shape:
        raise ExportError(f"ONNX output shape {got.shape} differs from PyTorch {ref.shape}")
    diff = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64)))) if n else 0.0
    agree = int(np.sum(np.argmax(got, axis=1) == np.argmax(ref, axis=1)))
    report = ParityReport(n, diff, agree, atol, source, tuple(sizes))
    log.info("%s", report.summary())
    return report
