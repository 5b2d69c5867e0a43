"""Inference backends (one module each; optional runtimes are imported inside them)."""

from agent.inference.backends.base import Backend, BackendError, BackendUnavailable
from agent.inference.backends.fake import FakeBackend
from agent.inference.backends.registry import create_backend, resolve_backend

__all__ = [
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "FakeBackend",
    "create_backend",
    "resolve_backend",
]
