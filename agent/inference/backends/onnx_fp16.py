"""FP16 ONNX for strongly typed TensorRT builds (TensorRT >= 10.12; TensorRT 11 has no FP16 flag).

A strongly typed network takes its types from the model, so an FP16 engine needs an FP16 model.
Bundles carry FP32 ONNX; :func:`fp16_onnx` converts it once and keeps the result next to the engine
cache as ``<onnx sha256>.fp16.onnx`` (reused on the next build). The graph's inputs and outputs stay
FP32 (a Cast at each end), so callers feed and read float32 as before.

Uses ``onnxconverter_common.float16`` when installed, else a small converter over ``onnx`` itself
(float initializers, Constant nodes and Cast targets to FP16). ``onnx`` is imported inside.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from agent.inference.backends.base import EngineBuildError
from contract.files import write_atomic

log = logging.getLogger(__name__)

__all__ = ["fp16_onnx", "fp16_onnx_path"]


def fp16_onnx_path(cache_dir: Path, onnx_sha256: str) -> Path:
    """Where the FP16 copy of the model with this sha256 lives."""
    return Path(cache_dir) / f"{onnx_sha256}.fp16.onnx"


def fp16_onnx(fp32_path: Path, cache_dir: Path, onnx_sha256: str) -> Path:
    """The FP16 model converted from ``fp32_path`` (converted now unless already cached)."""
    out = fp16_onnx_path(cache_dir, onnx_sha256)
    if out.is_file():
        return out
    try:
        import onnx
    except ImportError as e:
        raise EngineBuildError(f"FP16 with strongly typed TensorRT needs onnx (pip install onnx): {e}") from e
    model = onnx.load(str(fp32_path))
    try:
        from onnxconverter_common import float16  # type: ignore[import-not-found]
    except ImportError:
        converted = _convert(model)
    else:
        converted = float16.convert_float_to_float16(model, keep_io_types=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, converted.SerializeToString())
    log.info("converted %s to FP16 for a strongly typed build: %s", fp32_path.name, out)
    return out


def _convert(model: Any) -> Any:
    """FP32 -> FP16 with ``onnx`` only; graph inputs and outputs stay FP32 (Cast nodes at the ends)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    f32, f16 = TensorProto.FLOAT, TensorProto.FLOAT16
    for init in graph.initializer:
        if init.data_type == f32:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype("float16"), init.name))
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.name == "value" and attr.t.data_type == f32:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype("float16")))
            if node.op_type == "Cast" and attr.name == "to" and attr.i == f32:
                attr.i = f16
    del graph.value_info[:]  # shapes/types are re-inferred by the parser
    head, tail = [], []
    for inp in graph.input:
        if inp.type.tensor_type.elem_type != f32:
            continue
        cast_name = f"{inp.name}__fp16"
        for node in graph.node:
            node.input[:] = [cast_name if i == inp.name else i for i in node.input]
        head.append(helper.make_node("Cast", [inp.name], [cast_name], to=f16))
    for out in graph.output:
        if out.type.tensor_type.elem_type != f32:
            continue
        inner = f"{out.name}__fp16"
        for node in graph.node:
            node.output[:] = [inner if o == out.name else o for o in node.output]
        tail.append(helper.make_node("Cast", [inner], [out.name], to=f32))
    nodes = head + list(graph.node) + tail
    del graph.node[:]
    graph.node.extend(nodes)
    return model
