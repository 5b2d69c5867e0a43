"""Check an ONNX file before an engine is built from it: it loads, passes the ONNX checker, and is
the right kind for the precision (the signed-INT8 Q/DQ model for INT8, a float model otherwise).
``onnx`` is imported only inside these functions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

from agent.inference.backends.base import BackendUnavailable, EngineBuildError

__all__ = ["FP32_ONNX", "INT8_TRT_ONNX", "check_onnx_for_precision", "load_checked_onnx"]

FP32_ONNX = "model.fp32.onnx"
INT8_TRT_ONNX = "model.int8-trt.onnx"

PathLike = Union[str, os.PathLike[str]]


def load_checked_onnx(path: Path) -> Any:
    """Load and check an ONNX file; return the ``onnx.ModelProto``. A missing or corrupt file raises
    :class:`EngineBuildError` naming the fix; a missing ``onnx`` package, :class:`BackendUnavailable`."""
    try:
        import onnx
    except ImportError as e:
        raise BackendUnavailable(
            f"the onnx package is missing ({e}): pip install 'binwatch[agent]' (or pip install onnx)"
        ) from e
    if not path.is_file():
        raise EngineBuildError(f"{path}: no such ONNX file. Fix: run `binwatch export onnx RUN` first")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:  # protobuf DecodeError, ValidationError, ...
        raise EngineBuildError(
            f"{path} is not a valid ONNX model ({type(e).__name__}: {str(e).strip()[:200]}). "
            "Fix: re-create it with `binwatch export onnx RUN` (and `export quantize` for INT8 files)"
        ) from e
    return model


def check_onnx_for_precision(path: PathLike, precision: str) -> None:
    """The file is a valid ONNX model of the right kind: INT8 needs the signed-INT8 Q/DQ model,
    FP16/FP32 a float model. :class:`EngineBuildError` names the right file otherwise."""
    path = Path(path)
    model = load_checked_onnx(path)
    from onnx import TensorProto  # importable: load_checked_onnx imported onnx

    q_nodes = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    if precision != "int8":
        if q_nodes:
            raise EngineBuildError(f"{path} is a quantized (Q/DQ) model: build {precision} from {FP32_ONNX}")
        return
    if not q_nodes:
        raise EngineBuildError(
            f"{path} has no QuantizeLinear nodes: INT8 engines are built from the Q/DQ model "
            f"({INT8_TRT_ONNX}, `binwatch export quantize RUN --target tensorrt`)"
        )
    inits = {i.name: i for i in model.graph.initializer}
    for n in q_nodes:
        if len(n.input) > 2 and n.input[2] in inits and inits[n.input[2]].data_type == TensorProto.UINT8:
            raise EngineBuildError(
                f"{path} has unsigned (U8) activations: that is the CPU model. "
                f"TensorRT needs signed symmetric INT8, i.e. {INT8_TRT_ONNX}"
            )
