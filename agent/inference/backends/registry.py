"""Backend registry: names to classes (imported lazily), and ``auto`` selection."""

from __future__ import annotations

import importlib
import logging
from typing import Any

from agent.inference.backends.base import Backend, BackendError, BackendUnavailable

log = logging.getLogger(__name__)

__all__ = ["AUTO_ORDER", "BACKENDS", "backend_class", "create_backend", "resolve_backend"]

BACKENDS: dict[str, str] = {
    "tensorrt": "agent.inference.backends.tensorrt_backend:TensorRTBackend",
    "onnxruntime": "agent.inference.backends.onnxruntime_backend:OnnxRuntimeBackend",
    "fake": "agent.inference.backends.fake:FakeBackend",
}
# ``auto`` tries these in order and takes the first that is available.
AUTO_ORDER = ("tensorrt", "onnxruntime")


def backend_class(name: str) -> type[Backend]:
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose one of: auto, {', '.join(BACKENDS)}")
    module_name, attr = BACKENDS[name].split(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr)


def resolve_backend(name: str) -> type[Backend]:
    """The backend class for ``name``; ``auto`` logs why each skipped backend was skipped."""
    if name != "auto":
        cls = backend_class(name)
        ok, why = cls.is_available()
        if not ok:
            raise BackendUnavailable(f"backend {name!r} is not available: {why}")
        return cls
    reasons = []
    for candidate in AUTO_ORDER:
        cls = backend_class(candidate)
        ok, why = cls.is_available()
        if ok:
            log.info("backend auto: using %s", candidate)
            return cls
        log.info("backend auto: skipping %s: %s", candidate, why)
        reasons.append(f"{candidate}: {why}")
    raise BackendUnavailable("no inference backend is available (" + "; ".join(reasons) + ")")


def create_backend(name: str, **options: Any) -> Backend:
    """Instantiate a backend by name with the options it understands (unknown ones are dropped)."""
    cls = resolve_backend(name)
    import inspect

    params = inspect.signature(cls.__init__).parameters
    accepted = {k: v for k, v in options.items() if k in params and v is not None}
    return cls(**accepted)
