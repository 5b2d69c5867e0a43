"""The agent-side TensorRT builder without TensorRT: version switch, batch profile, the ONNX/Q-DQ
input checks (run before TensorRT is looked for) and the agent-side "TensorRT missing" error.
Real builds are in tests/export/test_engine.py and tests/agent/test_backends.py (need a GPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.inference.backends.base import BackendError, BackendUnavailable, EngineBuildError
from agent.inference.backends.onnx_check import check_onnx_for_precision
from agent.inference.backends.tensorrt_build import (
    INSTALL_TENSORRT,
    TensorRTNotFound,
    batch_profile,
    build_engine,
    parse_version,
    trt_available,
    uses_strongly_typed,
)
from tests.agent.bundles import tiny_onnx


def qdq_onnx(path: Path, zero_point: str = "int8") -> Path:
    """input -> QuantizeLinear -> DequantizeLinear -> GlobalAveragePool: a minimal Q/DQ model with a
    signed (TensorRT) or unsigned (CPU) activation zero point."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    zp_dtype = np.int8 if zero_point == "int8" else np.uint8
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "s", "zp"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["dq"]),
        helper.make_node("GlobalAveragePool", ["dq"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3, 1, 1])],
        initializer=[
            numpy_helper.from_array(np.array(0.05, np.float32), "s"),
            numpy_helper.from_array(np.array(0, zp_dtype), "zp"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    ("version", "typed"),
    [("10.3.0", False), ("10.3.0.30", False), ("10.11.0.33", False), ("10.12.0.36", True), ("11.0", True)],
)
def test_version_switch(version: str, typed: bool) -> None:
    assert uses_strongly_typed(version) is typed


def test_parse_version() -> None:
    assert parse_version("10.3.0.30") == (10, 3, 0, 30)
    assert parse_version("10.12.0.36+cuda12") == (10, 12, 0, 36)


def test_batch_profile_defaults_and_errors() -> None:
    p = batch_profile(1, None, 8)
    assert (p.min, p.opt, p.max) == (1, 4, 8)
    p = batch_profile(1, None, 1)
    assert (p.min, p.opt, p.max) == (1, 1, 1)
    p = batch_profile(4, None, 6)
    assert (p.min, p.opt, p.max) == (4, 4, 6)
    with pytest.raises(EngineBuildError, match="batch profile min=4 opt=4 max=2"):
        batch_profile(4, None, 2)
    with pytest.raises(EngineBuildError, match="batch profile"):
        batch_profile(1, 9, 8)


def test_onnx_checks_accept_the_right_model_and_name_the_fix(tmp_path: Path) -> None:
    fp32 = tiny_onnx(tmp_path / "model.fp32.onnx", size=8)
    signed = qdq_onnx(tmp_path / "model.int8-trt.onnx", "int8")
    unsigned = qdq_onnx(tmp_path / "model.int8-cpu.onnx", "uint8")
    check_onnx_for_precision(fp32, "fp16")
    check_onnx_for_precision(fp32, "fp32")
    check_onnx_for_precision(signed, "int8")
    with pytest.raises(EngineBuildError, match=r"unsigned \(U8\).*model\.int8-trt\.onnx"):
        check_onnx_for_precision(unsigned, "int8")
    with pytest.raises(EngineBuildError, match=r"no QuantizeLinear nodes.*Q/DQ model"):
        check_onnx_for_precision(fp32, "int8")
    with pytest.raises(EngineBuildError, match=r"quantized \(Q/DQ\) model: build fp16 from model\.fp32"):
        check_onnx_for_precision(signed, "fp16")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00\x01 not onnx")
    with pytest.raises(EngineBuildError, match=r"corrupt\.onnx is not a valid ONNX model"):
        check_onnx_for_precision(corrupt, "fp32")
    with pytest.raises(EngineBuildError, match="no such ONNX file"):
        check_onnx_for_precision(tmp_path / "absent.onnx", "fp32")


def test_build_reports_input_errors_before_looking_for_tensorrt(tmp_path: Path) -> None:
    fp32 = tiny_onnx(tmp_path / "model.fp32.onnx", size=8)
    out = tmp_path / "m.engine"
    with pytest.raises(EngineBuildError, match="unknown precision 'int4'"):
        build_engine(fp32, out, precision="int4")
    with pytest.raises(EngineBuildError, match="Q/DQ"):
        build_engine(fp32, out, precision="int8")
    with pytest.raises(EngineBuildError, match="batch profile"):
        build_engine(fp32, out, precision="fp16", min_batch=4, max_batch=2)
    assert not out.exists()
    assert issubclass(EngineBuildError, BackendError)  # the agent handles builder errors as backend errors


@pytest.mark.skipif(
    trt_available(), reason="TensorRT is installed here: the missing-TensorRT path cannot run"
)
def test_missing_tensorrt_is_an_agent_side_unavailable_error(tmp_path: Path) -> None:
    fp32 = tiny_onnx(tmp_path / "model.fp32.onnx", size=8)
    out = tmp_path / "m.engine"
    with pytest.raises(TensorRTNotFound) as info:
        build_engine(fp32, out, precision="fp16")
    assert isinstance(info.value, BackendUnavailable)
    assert str(info.value).startswith(INSTALL_TENSORRT)
    assert "JetPack 6" in str(info.value) and "pip install" in str(info.value)
    assert "tensorrt" in info.value.detail  # the ImportError's text, kept for the export CLI
    assert not out.exists()
