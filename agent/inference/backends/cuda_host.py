"""CUDA plumbing for the TensorRT backend: pinned host arrays, device buffers and one stream
through cuda-python (else pycuda), and the single worker thread that owns the CUDA context.

The CUDA bindings are imported inside these classes only (never at module import).
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Optional

import numpy as np

from agent.inference.backends.base import BackendError, BackendUnavailable

__all__ = ["INSTALL_CUDA", "CudaPython", "CudaWorker", "PyCuda", "cudart", "has_module"]

INSTALL_CUDA = "no CUDA Python bindings: pip install cuda-python (or pycuda)"


def has_module(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def cudart() -> Any:
    """The CUDA runtime module of cuda-python (new and old layouts), or None."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


# -- CUDA helpers (used on the worker thread only) ----------------------------------------------


class CudaPython:
    """cuda-python runtime API: pinned host arrays, device buffers, one stream."""

    def __init__(self, device: int) -> None:
        self.rt = cudart()
        if self.rt is None:
            raise BackendUnavailable(INSTALL_CUDA)
        self._check(self.rt.cudaSetDevice(device), "cudaSetDevice")
        self.device = device
        self.stream = self._check(self.rt.cudaStreamCreate(), "cudaStreamCreate")
        self._host: list[int] = []
        self._dev: list[int] = []

    def _check(self, result: Any, what: str) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise BackendError(f"CUDA {what} failed: {err}")
        return rest[0] if len(rest) == 1 else (rest or None)

    def compute_capability(self) -> str:
        props = self._check(self.rt.cudaGetDeviceProperties(self.device), "cudaGetDeviceProperties")
        return f"{props.major}.{props.minor}"

    def host_array(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        ptr = int(self._check(self.rt.cudaMallocHost(nbytes), "cudaMallocHost"))
        self._host.append(ptr)
        buf = (ctypes.c_byte * nbytes).from_address(ptr)
        return np.frombuffer(buf, dtype=dtype).reshape(shape)

    def device_buffer(self, nbytes: int) -> int:
        ptr = int(self._check(self.rt.cudaMalloc(nbytes), "cudaMalloc"))
        self._dev.append(ptr)
        return ptr

    def h2d(self, dptr: int, host: np.ndarray) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(
            self.rt.cudaMemcpyAsync(dptr, host.ctypes.data, host.nbytes, kind, self.stream), "H2D copy"
        )

    def d2h(self, host: np.ndarray, dptr: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(
            self.rt.cudaMemcpyAsync(host.ctypes.data, dptr, host.nbytes, kind, self.stream), "D2H copy"
        )

    def sync(self) -> None:
        self._check(self.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    @property
    def stream_handle(self) -> int:
        return int(self.stream)

    def close(self) -> None:
        for p in self._dev:
            self.rt.cudaFree(p)
        for p in self._host:
            self.rt.cudaFreeHost(p)
        self._dev, self._host = [], []
        if self.stream is not None:
            self.rt.cudaStreamDestroy(self.stream)
            self.stream = None


class PyCuda:
    """pycuda: a context made current on the worker thread (popped and detached at close)."""

    def __init__(self, device: int) -> None:
        try:
            import pycuda.driver as cuda
        except ImportError as e:
            raise BackendUnavailable(INSTALL_CUDA) from e
        cuda.init()
        self.cuda = cuda
        self.dev = cuda.Device(device)
        self.ctx = self.dev.make_context()
        self.stream = cuda.Stream()
        self._bufs: list[Any] = []

    def compute_capability(self) -> str:
        major, minor = self.dev.compute_capability()
        return f"{major}.{minor}"

    def host_array(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return self.cuda.pagelocked_empty(shape, dtype)

    def device_buffer(self, nbytes: int) -> int:
        buf = self.cuda.mem_alloc(nbytes)
        self._bufs.append(buf)
        return int(buf)

    def h2d(self, dptr: int, host: np.ndarray) -> None:
        self.cuda.memcpy_htod_async(dptr, host, self.stream)

    def d2h(self, host: np.ndarray, dptr: int) -> None:
        self.cuda.memcpy_dtoh_async(host, dptr, self.stream)

    def sync(self) -> None:
        self.stream.synchronize()

    @property
    def stream_handle(self) -> int:
        return int(self.stream.handle)

    def close(self) -> None:
        """Free the buffers, then pop the context this object made current and detach it (pop
        alone leaves it alive, holding the GPU's memory until the process exits)."""
        for b in self._bufs:
            b.free()
        self._bufs = []
        ctx, self.ctx = self.ctx, None
        if ctx is None:
            return
        try:
            ctx.pop()
        finally:
            ctx.detach()


class CudaWorker:
    """One thread that owns the CUDA context; ``call(fn)`` runs ``fn`` there."""

    def __init__(self, name: str = "tensorrt") -> None:
        self._q: queue.Queue[Optional[tuple[Callable[[], Any], Future]]] = queue.Queue()
        self._t = threading.Thread(target=self._run, name=name, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            fn, fut = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as e:  # handed to the caller
                fut.set_exception(e)

    def call(self, fn: Callable[[], Any], timeout: Optional[float] = None) -> Any:
        fut: Future = Future()
        self._q.put((fn, fut))
        return fut.result(timeout)

    def close(self) -> None:
        self._q.put(None)
        self._t.join(10)
