"""``binwatch export engine``: the export side of the TensorRT engine build.

The builder itself lives with the agent (re-exported by :mod:`agent.surface`, the only agent module
export imports), because a Jetson builds its own engines and installs only ``.[agent]``. This
module resolves the input (an ONNX file, or a bundle folder whose model is picked by precision),
calls that builder and turns its errors into export errors, so the CLI keeps its messages and exit
codes: bad input -> :class:`ExportError` (2), TensorRT missing -> :class:`TensorRTMissing` (3).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

from agent.surface import BackendError, EngineSidecar, TensorRTNotFound, batch_profile
from agent.surface import build_engine as _build
from export.artifacts import FP32_ONNX, INT8_TRT_ONNX
from export.errors import ExportError, TensorRTMissing

__all__ = ["build_engine", "model_for_precision"]


@contextmanager
def _export_errors() -> Iterator[None]:
    """Agent builder errors -> export errors (same message)."""
    try:
        yield
    except TensorRTNotFound as e:
        raise TensorRTMissing(e.detail) from e
    except BackendError as e:
        raise ExportError(str(e)) from e


def model_for_precision(path: Path, precision: str) -> Path:
    """The ONNX file to build from: ``path`` itself, or the right model inside a bundle folder."""
    path = Path(path)
    if path.is_dir():
        name = INT8_TRT_ONNX if precision == "int8" else FP32_ONNX
        model = path / name
        if not model.is_file():
            raise ExportError(
                f"{path} has no {name}. Fix: pass a bundle from `binwatch export bundle` or an ONNX file"
            )
        return model
    return path


def build_engine(
    onnx_or_bundle: Path | str,
    out_path: Optional[Path | str] = None,
    *,
    precision: str = "int8",
    max_batch: int = 8,
    min_batch: int = 1,
    opt_batch: Optional[int] = None,
    **options: Any,
) -> tuple[Path, EngineSidecar]:
    """Build a TensorRT engine from an ONNX file or a bundle folder; returns ``(engine, sidecar)``.

    ``options`` (``workspace_mib``, ``dla_core``, ``timing_cache``, ``strongly_typed``, ``device``,
    ``verbose``, ``on_phase``) go to the agent's builder, :func:`agent.surface.build_engine`.
    """
    if precision not in ("int8", "fp16", "fp32"):
        raise ExportError(f"unknown precision {precision!r}: use int8, fp16 or fp32")
    with _export_errors():
        batch_profile(min_batch, opt_batch, max_batch)  # a bad profile is reported first, as before
    onnx_path = model_for_precision(Path(onnx_or_bundle), precision)
    with _export_errors():
        return _build(
            onnx_path,
            out_path,
            precision=precision,
            max_batch=max_batch,
            min_batch=min_batch,
            opt_batch=opt_batch,
            **options,
        )
