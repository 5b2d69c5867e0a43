"""The agent's surface for the server side: the only agent names ``training/`` and ``export/`` may
import, so that the device and the server preprocess frames and build engines the same way
(docs/architecture.md, "Who may import what"; enforced by tests/contract/test_layering.py).

- preprocessing: :func:`decode_jpeg`, :func:`preprocess`, :func:`resize_frame`, :class:`DecodeError`;
- engine build: :func:`build_engine` and what its callers need to check TensorRT, the ONNX model
  and the batch profile first;
- backend load: :func:`create_backend` (a backend by registry name) and :class:`BackendError`.
"""

from __future__ import annotations

from agent.inference.backends.base import BackendError
from agent.inference.backends.engine_cache import EngineSidecar
from agent.inference.backends.onnx_check import load_checked_onnx
from agent.inference.backends.registry import create_backend
from agent.inference.backends.tensorrt_build import (
    DEFAULT_WORKSPACE_MIB,
    STRONGLY_TYPED_FROM,
    TensorRTNotFound,
    batch_profile,
    build_engine,
    import_tensorrt,
    parse_version,
    trt_available,
    uses_strongly_typed,
)
from agent.inference.preprocess import preprocess, resize_frame
from agent.intake.decode import DecodeError, decode_jpeg

__all__ = [
    "DEFAULT_WORKSPACE_MIB",
    "STRONGLY_TYPED_FROM",
    "BackendError",
    "DecodeError",
    "EngineSidecar",
    "TensorRTNotFound",
    "batch_profile",
    "build_engine",
    "create_backend",
    "decode_jpeg",
    "import_tensorrt",
    "load_checked_onnx",
    "parse_version",
    "preprocess",
    "resize_frame",
    "trt_available",
    "uses_strongly_typed",
]
