"""`binwatch export engine`: the export wrapper around the agent's TensorRT builder
(agent.surface.build_engine; its pure logic is tested in tests/agent/). Without TensorRT only the
input checks and the clear "missing" error (exit 3) run here; real builds are marked `tensorrt` and
skip where it is absent."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from agent.surface import trt_available, uses_strongly_typed
from tests.export.conftest import invoke
from tests.hw import requires_gpu, requires_tensorrt


@pytest.mark.skipif(
    trt_available(), reason="TensorRT is installed here: the missing-TensorRT path cannot run"
)
def test_missing_tensorrt_is_a_clear_error(bundle_dir: Path, tmp_path: Path) -> None:
    res = invoke("export", "engine", bundle_dir, "--precision", "int8", "--out", tmp_path / "m.engine")
    assert res.exit_code == 3, res.output
    assert "TensorRT is not installed" in res.output and "JetPack 6" in res.output
    assert "pip install tensorrt" in res.output
    assert not (tmp_path / "m.engine").exists()


def test_engine_input_errors_exit_2(bundle_dir: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00\x01 not onnx")
    res = invoke("export", "engine", corrupt)
    assert res.exit_code == 2, res.output
    assert "corrupt.onnx is not a valid ONNX model" in res.output
    res = invoke("export", "engine", bundle_dir / "model.int8-cpu.onnx", "--precision", "int8")
    assert res.exit_code == 2 and "unsigned" in res.output and "model.int8-trt.onnx" in res.output
    res = invoke("export", "engine", bundle_dir / "model.fp32.onnx", "--precision", "int8")
    assert res.exit_code == 2 and "Q/DQ" in res.output
    res = invoke("export", "engine", bundle_dir, "--precision", "int4")
    assert res.exit_code == 2 and "unknown precision" in res.output
    res = invoke("export", "engine", bundle_dir, "--min-batch", "4", "--max-batch", "2")
    assert res.exit_code == 2 and "batch profile" in res.output
    empty = tmp_path / "empty"
    empty.mkdir()
    res = invoke("export", "engine", empty)
    assert res.exit_code == 2 and "model.int8-trt.onnx" in res.output


def _run_engine(engine_path: Path, x: np.ndarray) -> np.ndarray:
    """Execute an engine with TensorRT 10's name-based API on torch CUDA buffers."""
    import tensorrt as trt
    import torch

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
    ctx = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inp = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
    out = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
    xt = torch.from_numpy(x).cuda()
    ctx.set_input_shape(inp, tuple(xt.shape))
    yt = torch.empty(tuple(ctx.get_tensor_shape(out)), dtype=torch.float32, device="cuda")
    ctx.set_tensor_address(inp, xt.data_ptr())
    ctx.set_tensor_address(out, yt.data_ptr())
    stream = torch.cuda.Stream()
    assert ctx.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return yt.cpu().numpy()


@pytest.mark.tensorrt
@requires_tensorrt
@requires_gpu
@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_build_engine_and_sidecar(bundle_dir: Path, tmp_path: Path, precision: str) -> None:
    import tensorrt as trt

    from agent.inference.backends.engine_cache import (
        check_engine_compat,
        detect_compute_capability,
        read_sidecar,
    )
    from agent.surface import decode_jpeg, preprocess
    from contract.card import load_card
    from contract.files import sha256_file
    from contract.golden import compare_golden, load_golden, softmax

    out = tmp_path / f"m.{precision}.engine"
    cache = tmp_path / "timing.cache"
    res = invoke(
        "export",
        "engine",
        bundle_dir,
        "--precision",
        precision,
        "--max-batch",
        "4",
        "--out",
        out,
        "--timing-cache",
        cache,
    )
    assert res.exit_code == 0, res.output
    assert out.is_file() and cache.is_file() and cache.stat().st_size > 0
    sc = read_sidecar(out)
    model = "model.int8-trt.onnx" if precision == "int8" else "model.fp32.onnx"
    assert sc.onnx_sha256 == sha256_file(bundle_dir / model)
    assert sc.engine_sha256 == sha256_file(out)
    assert (sc.batch_profile.min, sc.batch_profile.max) == (1, 4)
    assert sc.trt_version == trt.__version__ and sc.precision == precision
    assert sc.strongly_typed == (uses_strongly_typed(trt.__version__) and precision == "int8")
    cc = detect_compute_capability()
    assert check_engine_compat(sc, trt_version=trt.__version__, compute_capability=cc) == []

    card = load_card(bundle_dir)
    golden = load_golden(bundle_dir)
    x = np.stack(
        [preprocess(decode_jpeg((bundle_dir / it.file).read_bytes()), card.input) for it in golden.items]
    )
    logits = _run_engine(out, x)
    probs = {
        it.file: softmax(row.tolist(), card.output.temperature)
        for it, row in zip(golden.items, logits, strict=True)
    }
    assert compare_golden(golden, probs, precision) == []

    # a second build reuses the timing cache
    out2 = tmp_path / "again.engine"
    shutil.copy(cache, tmp_path / "cache-before")
    assert (
        invoke(
            "export", "engine", bundle_dir, "--precision", precision, "--out", out2, "--timing-cache", cache
        ).exit_code
        == 0
    )
