"""`binwatch export quantize`: INT8 Q/DQ for TensorRT (signed, symmetric) and the CPU (U8S8)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from contract.card import load_card
from contract.files import sha256_file
from tests.export.conftest import invoke


def _qdq(model_path: Path):
    model = onnx.load(str(model_path))
    inits = {i.name: i for i in model.graph.initializer}
    qs = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dqs = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    return model, inits, qs, dqs


def _attr(node, name):
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)


def test_tensorrt_model_structure(quantized) -> None:
    run, _ = quantized
    model, inits, qs, dqs = _qdq(run / "model.int8-trt.onnx")
    opset = next(i.version for i in model.opset_import if i.domain in ("", "ai.onnx"))
    assert opset >= 13
    assert qs, "no QuantizeLinear nodes"
    weights = [n for n in dqs if n.input[0] in inits]
    activations = [n for n in dqs if n.input[0] not in inits]
    assert len(activations) == len(qs)
    for n in qs + activations:  # every activation Q/DQ: signed INT8, zero point 0, one scale
        zp = inits[n.input[2]]
        assert zp.data_type == TensorProto.INT8, n.name
        assert not numpy_helper.to_array(zp).any(), n.name
        assert numpy_helper.to_array(inits[n.input[1]]).size == 1, n.name
    conv_like = {n.input[1] for n in model.graph.node if n.op_type in ("Conv", "Gemm")}
    assert len(weights) == len(conv_like) > 0
    for n in weights:  # weights: INT8, per channel along an explicit axis, zero point 0
        w = numpy_helper.to_array(inits[n.input[0]])
        scale = numpy_helper.to_array(inits[n.input[1]])
        zp = numpy_helper.to_array(inits[n.input[2]])
        axis = _attr(n, "axis")
        assert inits[n.input[0]].data_type == TensorProto.INT8, n.name
        assert axis is not None and scale.ndim == 1 and scale.size == w.shape[axis] > 1, n.name
        assert zp.dtype == np.int8 and not zp.any(), n.name
    # biases stay float: TensorRT has no INT32 DequantizeLinear
    assert all(inits[n.input[0]].data_type != TensorProto.INT32 for n in weights)
    # Q/DQ sit on the inputs of every Conv/Gemm (explicit quantization placement)
    producer = {o: n for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        if n.op_type in ("Conv", "Gemm"):
            assert producer[n.input[0]].op_type == "DequantizeLinear", n.name
            assert producer[n.input[1]].op_type == "DequantizeLinear", n.name


def test_cpu_model_is_u8s8_per_channel(quantized) -> None:
    run, _ = quantized
    _, inits, qs, dqs = _qdq(run / "model.int8-cpu.onnx")
    assert qs
    assert all(inits[n.input[2]].data_type == TensorProto.UINT8 for n in qs)
    weights = [n for n in dqs if n.input[0] in inits and inits[n.input[0]].data_type == TensorProto.INT8]
    assert weights
    assert all(numpy_helper.to_array(inits[n.input[1]]).size > 1 for n in weights)  # per channel


def test_cpu_int8_accuracy_within_one_point(quantized) -> None:
    """Acceptance: on 500 held-out synthetic bins the CPU INT8 model loses at most 1.0 point."""
    run, report = quantized
    assert report["passed"] and report["written"]
    assert report["n_eval"] == 500
    assert report["fp32_accuracy"] > 0.3  # the fixture model learned something (6 classes: chance ~0.17)
    by_target = {t["target"]: t for t in report["targets"]}
    assert by_target["cpu"]["accuracy_drop"] <= 1.0
    assert by_target["tensorrt"]["accuracy_drop"] <= 1.0
    card = load_card(run)
    for target, name in (("cpu", "model.int8-cpu.onnx"), ("tensorrt", "model.int8-trt.onnx")):
        row = card.artifact("onnx", "int8", target)
        assert row is not None and row.file == name
        assert row.sha256 == sha256_file(run / name)
        assert row.accuracy == pytest.approx(by_target[target]["accuracy"])
        assert row.accuracy_drop == pytest.approx(by_target[target]["accuracy_drop"], abs=1e-3)
    assert card.artifact("onnx", "fp32").accuracy == pytest.approx(report["fp32_accuracy"])


def test_accuracy_gate_fails_and_writes_nothing(
    run_dir: Path, calib_small: Path, small_fp32: Path, monkeypatch
) -> None:
    """A drop above --max-drop exits 1 and leaves the run untouched (the evaluation seam is faked)."""
    import export.quantize as q

    shutil.copy(small_fp32, run_dir / "model.fp32.onnx")

    real = q.evaluate

    def worse(models, items, spec, **kw):
        score = real(models, items, spec, **kw)
        score.accuracy = {k: (v if k == "fp32" else v - 0.05) for k, v in score.accuracy.items()}
        return score

    monkeypatch.setattr(q, "evaluate", worse)
    before = (run_dir / "card.json").read_bytes()
    res = invoke(
        "export", "quantize", run_dir, "--calib", calib_small, "--n", "8", "--eval-n", "16", "--target", "cpu"
    )
    assert res.exit_code == 1, res.output
    assert "accuracy check failed" in res.output and "--force" in res.output
    assert not (run_dir / "model.int8-cpu.onnx").exists()
    assert before == (run_dir / "card.json").read_bytes()


def test_undecodable_calibration_images_exit_2(run_dir: Path, tmp_path: Path, small_fp32: Path) -> None:
    shutil.copy(small_fp32, run_dir / "model.fp32.onnx")
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"{i}.jpg").write_bytes(b"not a jpeg at all" * i)
    res = invoke("export", "quantize", run_dir, "--calib", bad, "--target", "cpu", "--force")
    assert res.exit_code == 2, res.output
    assert "none of the calibration images" in res.output and "could be decoded" in res.output
    assert "0.jpg" in res.output
    assert "Traceback" not in res.output


def test_corrupt_onnx_exits_2(run_dir: Path, calib_small: Path) -> None:
    (run_dir / "model.fp32.onnx").write_bytes(b"\x08\x07garbage" * 100)
    res = invoke("export", "quantize", run_dir, "--calib", calib_small, "--n", "4")
    assert res.exit_code == 2, res.output
    assert "model.fp32.onnx is not a valid ONNX model" in res.output


def test_calibration_folder_missing_exits_2(run_dir: Path, tmp_path: Path) -> None:
    res = invoke("export", "quantize", run_dir, "--calib", tmp_path / "nope")
    assert res.exit_code == 2, res.output
    assert "nope" in res.output


def test_eval_images_overlapping_the_calibration_picks_are_refused(
    run_dir: Path, calib_small: Path, small_fp32: Path, tmp_path: Path
) -> None:
    """--eval may not score the gate on calibration images: not the same folder, nor a copy of it."""
    shutil.copy(small_fp32, run_dir / "model.fp32.onnx")
    copy = shutil.copytree(calib_small, tmp_path / "copy")
    before = (run_dir / "card.json").read_bytes()
    for eval_dir in (calib_small, copy):
        res = invoke(
            "export",
            "quantize",
            run_dir,
            "--calib",
            calib_small,
            "--n",
            "64",
            "--eval",
            eval_dir,
            "--target",
            "cpu",
        )
        assert res.exit_code == 2, res.output
        assert "also calibration images" in res.output and "in-sample" in res.output
    assert not (run_dir / "model.int8-cpu.onnx").exists()
    assert before == (run_dir / "card.json").read_bytes()


def test_gate_on_calibration_images_is_marked_in_sample(
    run_dir: Path, calib_small: Path, small_fp32: Path, tmp_path: Path
) -> None:
    """With no other images than the calibration picks, the figure says it is in-sample."""
    import json

    shutil.copy(small_fp32, run_dir / "model.fp32.onnx")
    plain = tmp_path / "plain"
    plain.mkdir()
    for p in sorted((calib_small / "bin-images").glob("*.jpg"))[:6]:
        shutil.copy(p, plain / p.name)
    res = invoke("export", "quantize", run_dir, "--calib", plain, "--n", "8", "--target", "cpu", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout[res.stdout.index("{") :])
    assert report["in_sample"] is True and report["n_eval"] == 6
    text = invoke("export", "quantize", run_dir, "--calib", plain, "--n", "8", "--target", "cpu", "--force")
    assert "IN-SAMPLE" in text.output, text.output
