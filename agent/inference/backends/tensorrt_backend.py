"""TensorRT 10 backend: engines built on the device from the bundle's ONNX, cached, run with
``execute_async_v3`` on one CUDA stream.

- Engine cache (docs/architecture.md, "Model card and bundle"):
  ``<engine_cache>/<key>.engine`` (plain serialized engine) with ``<key>.engine.json`` sidecar,
  key = (model sha256, TensorRT version, compute capability, precision, batch profile), via
  :mod:`agent.inference.backends.engine_cache`. A cached engine is checked against the running
  TensorRT and GPU, and the file against the sidecar's ``engine_sha256``, before it is loaded; on a
  mismatch, or when TensorRT cannot deserialize it, it is rebuilt ONCE with
  :mod:`agent.inference.backends.tensorrt_build` (persisted timing cache). The reason is logged and
  kept in ``rebuild_reason`` (``describe()`` hands it to the model store).
- INT8 engines are built from ``model.int8-trt.onnx`` (Q/DQ), FP16/FP32 from ``model.fp32.onnx``.
- Every CUDA and TensorRT call runs on one worker thread that owns the CUDA context
  (:mod:`agent.inference.backends.cuda_host`); ``infer`` hands the batch over and waits. Host buffers are
  pinned; tensors are bound by name (``set_input_shape``, ``set_tensor_address``).
- ``tensorrt`` and the CUDA bindings (``cuda-python``, else ``pycuda``) are imported inside
  functions only.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from agent.inference.backends import engine_cache as ec
from agent.inference.backends import tensorrt_build
from agent.inference.backends.base import Backend, BackendError, BackendUnavailable, pick_onnx_artifact
from agent.inference.backends.cuda_host import (
    INSTALL_CUDA,
    CudaPython,
    CudaWorker,
    PyCuda,
    cudart,
    has_module,
)
from contract.card import ModelCard
from contract.files import sha256_file

log = logging.getLogger(__name__)

__all__ = ["TensorRTBackend"]

# -- the backend ------------------------------------------------------------------------------------


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(
        self,
        precision: str = "auto",
        engine_cache: Optional[Path] = None,
        batch: int = 4,
        device_index: int = 0,
        workspace_mb: int = 1024,
    ) -> None:
        super().__init__()
        self.requested_precision = precision
        self.engine_cache = Path(engine_cache) if engine_cache else Path("binwatch-state/engines")
        self.batch = max(1, batch)
        self.device_index = device_index
        self.workspace_mb = workspace_mb
        self.device = f"cuda:{device_index}"
        self.engine_path: Optional[Path] = None
        self.built = False
        self.rebuild_reason: Optional[str] = None
        self._worker: Optional[CudaWorker] = None
        self._cuda: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._io: dict[str, Any] = {}

    @classmethod
    def is_available(cls) -> tuple[bool, str]:
        if not has_module("tensorrt"):
            return False, tensorrt_build.INSTALL_TENSORRT
        rt = cudart()
        if rt is None and not has_module("pycuda"):
            return False, INSTALL_CUDA
        if rt is not None:
            try:
                err, n = rt.cudaGetDeviceCount()
            except Exception as e:  # driver library missing
                return False, f"CUDA runtime unusable: {e}"
            if int(err) != 0 or n < 1:
                return False, f"no CUDA device visible ({err})"
        return True, ""

    # -- loading ----------------------------------------------------------------------------------
    def _precision_and_onnx(self, bundle: Path, card: ModelCard) -> tuple[str, Path, Any]:
        prec = self.requested_precision
        if prec == "auto":
            prec = (
                "int8"
                if card.artifact("onnx", "int8", "tensorrt") or (bundle / "model.int8-trt.onnx").is_file()
                else "fp16"
            )
        onnx_prec = "int8" if prec == "int8" else "fp32"
        path, art, _ = pick_onnx_artifact(bundle, card, onnx_prec, "tensorrt")
        return prec, path, art

    def load(self, bundle: Path, card: ModelCard) -> None:
        ok, why = self.is_available()
        if not ok:
            raise BackendUnavailable(why)
        import tensorrt as trt

        precision, onnx_path, art = self._precision_and_onnx(bundle, card)
        model_sha = art.sha256 if art is not None else sha256_file(onnx_path)
        profile = (1, self.batch, self.batch)
        if art is not None and art.batch_profile is not None:
            bp = art.batch_profile
            profile = (bp.min, bp.opt, bp.max)
        self._worker = CudaWorker()
        try:
            self._worker.call(lambda: self._setup_cuda())
            cc = self._worker.call(lambda: self._cuda.compute_capability())
            key = ec.engine_cache_key(
                model_sha256=model_sha,
                trt_version=trt.__version__,
                compute_capability=cc,
                precision=precision,
                batch_profile=profile,
            )
            self.engine_cache.mkdir(parents=True, exist_ok=True)
            engine_path = self.engine_cache / f"{key}.engine"
            data = self._cached_engine(engine_path, trt.__version__, cc, model_sha, precision, profile)
            if data is None:
                data = self._build(onnx_path, precision, profile, engine_path)
            self._load_engine(data, card, onnx_path, precision, profile, engine_path)
        except BaseException:
            self.close()
            raise
        self.card = card
        self.artifact = art
        self.model_file = onnx_path
        self.model_sha256 = model_sha
        self.precision = precision
        self.engine_path = engine_path
        log.info(
            "tensorrt: %s engine %s ready (TensorRT %s, sm %s, batch %s, %s)",
            precision,
            engine_path.name,
            trt.__version__,
            cc,
            profile,
            "built now" if self.built else "from cache",
        )

    def describe(self) -> dict[str, object]:
        d = super().describe()
        d["engine"] = self.engine_path.name if self.engine_path else None
        d["engine_built"] = self.built
        d["engine_rebuild_reason"] = self.rebuild_reason
        return d

    def _setup_cuda(self) -> None:
        self._cuda = CudaPython(self.device_index) if cudart() is not None else PyCuda(self.device_index)

    def _cached_engine(
        self,
        engine_path: Path,
        trt_version: str,
        cc: str,
        model_sha: str,
        precision: str,
        profile: tuple[int, int, int],
    ) -> Optional[bytes]:
        """The cached engine's bytes when its sidecar matches this TensorRT, GPU, model, precision
        and profile; None (with the reasons logged) when it must be (re)built."""
        if not engine_path.is_file() or not ec.sidecar_path(engine_path).is_file():
            return None
        try:
            sidecar = ec.read_sidecar(engine_path)
            problems = ec.check_engine_compat(
                sidecar,
                trt_version=trt_version,
                compute_capability=cc,
                onnx_sha256=model_sha,
                precision=precision,
                batch_profile=profile,
                l4t=ec.read_l4t_release(),
            )
            if not problems:  # built for here: is the file still the one that was built?
                bad = ec.engine_file_problem(engine_path, sidecar)
                problems = [bad] if bad else []
        except Exception as e:  # unreadable sidecar or engine file: rebuild
            problems = [f"sidecar unreadable: {e}"]
        if problems:
            self._note_rebuild(engine_path, "; ".join(problems))
            return None
        return engine_path.read_bytes()

    def _note_rebuild(self, engine_path: Path, reason: str) -> None:
        self.rebuild_reason = reason
        log.warning("tensorrt: cached engine %s unusable (%s); rebuilding", engine_path.name, reason)

    def _load_engine(
        self,
        data: bytes,
        card: ModelCard,
        onnx_path: Path,
        precision: str,
        profile: tuple[int, int, int],
        engine_path: Path,
    ) -> None:
        """Deserialize ``data``; a cached engine that does not deserialize is rebuilt once (a fresh
        build that fails to load is an error, not another rebuild)."""
        worker = self._worker
        assert worker is not None
        try:
            worker.call(lambda: self._deserialize(data, card))
        except BackendError as e:
            if self.built:
                raise
            self._note_rebuild(engine_path, f"cached engine does not load: {e}")
            fresh = self._build(onnx_path, precision, profile, engine_path)
            worker.call(lambda: self._deserialize(fresh, card))

    def _build(
        self, onnx_path: Path, precision: str, profile: tuple[int, int, int], engine_path: Path
    ) -> bytes:
        log.warning(
            "tensorrt: building a %s engine for %s here (minutes on a Jetson; not ready until then)",
            precision,
            onnx_path.name,
        )
        t0 = time.perf_counter()
        try:
            path, _sidecar = self._worker.call(  # type: ignore[union-attr]
                lambda: tensorrt_build.build_engine(
                    onnx_path,
                    engine_path,
                    precision=precision,
                    min_batch=profile[0],
                    opt_batch=profile[1],
                    max_batch=profile[2],
                    workspace_mib=self.workspace_mb,
                    timing_cache=self.engine_cache / "timing.cache",
                    device=self.device_index,
                    on_phase=lambda msg: log.warning("tensorrt build: %s", msg),
                )
            )
        except Exception as e:  # EngineBuildError and TensorRT's own errors
            raise BackendError(f"TensorRT engine build failed for {onnx_path.name}: {e}") from e
        self.built = True
        log.warning("tensorrt: engine built in %.0fs and cached as %s", time.perf_counter() - t0, path)
        return Path(path).read_bytes()

    def _deserialize(self, data: bytes, card: ModelCard) -> None:
        import tensorrt as trt

        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        try:
            engine = runtime.deserialize_cuda_engine(data)
        except Exception as e:  # some TensorRT versions raise instead of returning None
            raise BackendError(f"TensorRT could not deserialize the engine: {e}") from e
        if engine is None:
            raise BackendError(
                "TensorRT could not deserialize the engine (corrupt or built by another version)"
            )
        context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or not outputs:
            raise BackendError(f"engine has inputs {inputs} and outputs {outputs}; expected one input")
        in_name = inputs[0]
        out_name = card.output.name if card.output.name in outputs else outputs[0]
        _mn, _opt, mx = engine.get_tensor_profile_shape(in_name, 0)
        max_shape = tuple(int(d) for d in mx)
        context.set_input_shape(in_name, max_shape)
        out_shape = tuple(int(d) for d in context.get_tensor_shape(out_name))
        in_dtype = trt.nptype(engine.get_tensor_dtype(in_name))
        out_dtype = trt.nptype(engine.get_tensor_dtype(out_name))
        cuda = self._cuda
        host_in = cuda.host_array(max_shape, in_dtype)
        host_out = cuda.host_array(out_shape, out_dtype)
        dev_in = cuda.device_buffer(host_in.nbytes)
        dev_out = cuda.device_buffer(host_out.nbytes)
        context.set_tensor_address(in_name, dev_in)
        context.set_tensor_address(out_name, dev_out)
        self._engine, self._context = engine, context
        self._io = {
            "in": in_name,
            "out": out_name,
            "host_in": host_in,
            "host_out": host_out,
            "dev_in": dev_in,
            "dev_out": dev_out,
            "runtime": runtime,
        }
        self.max_batch = max_shape[0]

    # -- inference ------------------------------------------------------------------------------
    def _run(self, x: np.ndarray) -> np.ndarray:
        io, cuda, ctx = self._io, self._cuda, self._context
        n = x.shape[0]
        host_in: np.ndarray = io["host_in"]
        if x.shape[1:] != host_in.shape[1:]:
            raise BackendError(f"input shape {x.shape} does not fit the engine's {host_in.shape}")
        if not ctx.set_input_shape(io["in"], tuple(x.shape)):
            raise BackendError(f"TensorRT refused input shape {tuple(x.shape)}")
        host_in[:n] = x
        cuda.h2d(io["dev_in"], host_in[:n])
        if not ctx.execute_async_v3(cuda.stream_handle):
            raise BackendError("TensorRT execute_async_v3 failed")
        out: np.ndarray = io["host_out"]
        cuda.d2h(out[:n], io["dev_out"])
        cuda.sync()
        return np.array(out[:n], dtype=np.float32, copy=True)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self._worker is None or self._context is None:
            raise BackendError("infer() before load()")
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if len(x) > self.max_batch:
            raise BackendError(f"batch of {len(x)} exceeds the engine's max batch {self.max_batch}")
        return self._worker.call(lambda: self._run(x))

    def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return

        def release() -> None:
            self._context = None
            self._engine = None
            self._io = {}
            if self._cuda is not None:
                self._cuda.close()
                self._cuda = None

        try:
            worker.call(release, timeout=30)
        except Exception as e:
            log.warning("tensorrt: releasing CUDA resources failed: %s", e)
        worker.close()
