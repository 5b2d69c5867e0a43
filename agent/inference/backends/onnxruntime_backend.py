"""ONNX Runtime backend: the CPU path everywhere, CUDA when onnxruntime-gpu is installed."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np

from agent.inference.backends.base import Backend, BackendError, BackendUnavailable, pick_onnx_artifact
from contract.card import ModelCard
from contract.files import sha256_file

log = logging.getLogger(__name__)

__all__ = ["OnnxRuntimeBackend"]


class OnnxRuntimeBackend(Backend):
    """``onnxruntime.InferenceSession`` with explicit intra/inter-op thread counts.

    ``precision='auto'`` runs the bundle's INT8 CPU model (Q/DQ U8S8) on the CPU provider and the
    FP32 model on CUDA. ``providers`` forces a provider list (e.g. ``["CPUExecutionProvider"]``).
    """

    name = "onnxruntime"

    def __init__(
        self,
        precision: str = "auto",
        threads: Optional[int] = None,
        inter_threads: Optional[int] = None,
        providers: Optional[list[str]] = None,
        use_cuda: bool = True,
    ) -> None:
        super().__init__()
        self.requested_precision = precision
        self.threads = threads
        self.inter_threads = inter_threads
        self.providers = providers
        self.use_cuda = use_cuda
        self._session = None
        self._input_name = "input"
        self._output_name = "logits"

    @classmethod
    def is_available(cls) -> tuple[bool, str]:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            return False, f"onnxruntime is not installed ({e}); pip install 'binwatch[agent]'"
        return True, ""

    def load(self, bundle: Path, card: ModelCard) -> None:
        ok, why = self.is_available()
        if not ok:
            raise BackendUnavailable(why)
        import onnxruntime as ort

        available = ort.get_available_providers()
        if self.providers:
            missing = [p for p in self.providers if p not in available]
            if missing:
                raise BackendUnavailable(f"onnxruntime providers {missing} not available here ({available})")
            providers = list(self.providers)
        elif self.use_cuda and "CUDAExecutionProvider" in available:
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        on_cuda = providers[0] == "CUDAExecutionProvider"
        precision = self.requested_precision
        if precision == "auto" and on_cuda:
            precision = "fp32"
        if precision == "fp16":
            raise BackendError("onnxruntime backend runs fp32 or int8 models; use --precision fp32|int8")
        path, artifact, prec = pick_onnx_artifact(bundle, card, precision, "cpu")

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads:
            opts.intra_op_num_threads = int(self.threads)
        if self.inter_threads:
            opts.inter_op_num_threads = int(self.inter_threads)
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types
            raise BackendError(f"onnxruntime could not load {path}: {e}") from e

        inputs, outputs = session.get_inputs(), session.get_outputs()
        names_in = [i.name for i in inputs]
        names_out = [o.name for o in outputs]
        self._input_name = card.input.name if card.input.name in names_in else names_in[0]
        self._output_name = card.output.name if card.output.name in names_out else names_out[0]
        batch_dim = inputs[names_in.index(self._input_name)].shape[0]
        self.max_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else 64
        self._session = session
        self.card = card
        self.artifact = artifact
        self.model_file = path
        self.model_sha256 = artifact.sha256 if artifact is not None else sha256_file(path)
        self.precision = prec
        self.device = "cuda" if on_cuda else "cpu"
        log.info(
            "onnxruntime: loaded %s (%s, providers=%s, intra_op=%s, inter_op=%s, max_batch=%d)",
            path.name,
            prec,
            providers,
            self.threads or "default",
            self.inter_threads or "default",
            self.max_batch,
        )

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self._session is None:
            raise BackendError("infer() before load()")
        x = np.ascontiguousarray(batch, dtype=np.float32)
        (out,) = self._session.run([self._output_name], {self._input_name: x})
        return np.asarray(out, dtype=np.float32)

    def close(self) -> None:
        self._session = None

    def describe(self) -> dict[str, object]:
        d = super().describe()
        d["threads"] = self.threads
        d["inter_threads"] = self.inter_threads
        return d
