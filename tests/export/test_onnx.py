"""`binwatch export onnx`: parity-checked FP32 export of a trained run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from contract.card import load_card
from contract.files import sha256_file
from tests.export.conftest import invoke


def test_export_onnx_parity_and_card(quantized) -> None:
    run, _ = quantized  # the fixture ran `binwatch export onnx RUN --images ...` (exit 0 = parity passed)
    path = run / "model.fp32.onnx"
    card = load_card(run)
    model = onnx.load(str(path))
    opset = next(i.version for i in model.opset_import if i.domain in ("", "ai.onnx"))
    assert opset >= 17
    assert [i.name for i in model.graph.input] == [card.input.name]
    assert [o.name for o in model.graph.output] == [card.output.name]
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value  # dynamic batch axis
    row = card.artifact("onnx", "fp32")
    assert row is not None and row.file == "model.fp32.onnx" and row.sha256 == sha256_file(path)
    assert row.opset == opset


def test_parity_numbers_and_dynamic_batch(quantized) -> None:
    import onnxruntime as ort
    import torch

    from training.model import load_run

    run, _ = quantized
    model, card = load_run(run)
    sess = ort.InferenceSession(str(run / "model.fp32.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        x = (
            np.random.default_rng(n)
            .standard_normal((n, 3, card.input.height, card.input.width))
            .astype(np.float32)
        )
        got = sess.run(None, {card.input.name: x})[0]
        with torch.inference_mode():
            ref = model(torch.from_numpy(x)).numpy()
        assert got.shape == (n, card.model.num_classes)
        assert np.abs(got - ref).max() < 1e-3


def test_parity_failure_exits_1(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    res = invoke("export", "onnx", run_dir, "--out", out, "--atol", "0", "--n", "2")
    assert res.exit_code == 1, res.output
    assert "parity FAIL" in res.output and "not recorded" in res.output
    assert load_card(run_dir).artifact("onnx", "fp32") is None


def test_run_without_card_exits_2(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "weights.pt").write_bytes(b"")
    res = invoke("export", "onnx", run)
    assert res.exit_code == 2, res.output
    assert "card.json" in res.output and "binwatch train" in res.output
    assert "Traceback" not in res.output


def test_run_without_weights_exits_2(run_dir: Path) -> None:
    (run_dir / "weights.pt").unlink()
    res = invoke("export", "onnx", run_dir)
    assert res.exit_code == 2, res.output
    assert "weights" in res.output
