"""Errors that reach the user: each message names the cause and the fix.

The CLI maps them to exit codes: :class:`ExportError` (bad input) -> 2, a failed check
(:class:`CheckFailed`: parity, accuracy drop, bundle verification) -> 1, and a missing
TensorRT (:class:`TensorRTMissing`) -> 3.
"""

from __future__ import annotations

__all__ = ["CheckFailed", "ExportError", "TensorRTMissing"]


class ExportError(Exception):
    """Bad input (missing card, corrupt model, undecodable images, ...)."""

    exit_code = 2


class CheckFailed(ExportError):
    """The work ran but a quality gate failed (parity, INT8 accuracy drop, bundle verification)."""

    exit_code = 1


class TensorRTMissing(ExportError):
    """The ``tensorrt`` Python package is not importable."""

    exit_code = 3

    def __init__(self, detail: str = "") -> None:
        msg = (
            "TensorRT is not installed: on a Jetson it comes with JetPack 6; "
            "on x86 pip install tensorrt from NVIDIA's index (pip install --extra-index-url "
            "https://pypi.nvidia.com tensorrt)"
        )
        super().__init__(f"{msg} ({detail})" if detail else msg)
