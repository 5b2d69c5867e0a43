"""`binwatch predict`: counts and calibrated distributions from a bundle or an ONNX file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from contract.golden import load_golden
from tests.export.conftest import invoke


def _lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_predict_bundle_uses_int8_cpu_and_temperature(bundle_dir: Path) -> None:
    golden = load_golden(bundle_dir)
    images = [bundle_dir / it.file for it in golden.items]
    res = invoke("predict", "--model", bundle_dir, *images, "--json")
    assert res.exit_code == 0, res.output
    rows = _lines(res.stdout)
    assert len(rows) == len(images)
    assert all(r["model"] == "model.int8-cpu.onnx" and r["backend"] == "onnx-cpu" for r in rows)
    for r, it in zip(rows, golden.items, strict=True):
        assert abs(sum(r["distribution"].values()) - 1) < 1e-4
        assert r["count"] == it.count  # golden images are ones INT8 reproduces

    # FP32 through predict reproduces the golden FP32 distributions (softmax(logits / T))
    res = invoke("predict", "--model", bundle_dir, *images, "--json", "--precision", "fp32")
    for r, it in zip(_lines(res.stdout), golden.items, strict=True):
        assert r["model"] == "model.fp32.onnx"
        assert max(abs(a - b) for a, b in zip(r["distribution"].values(), it.probs, strict=True)) < 1e-4


def test_predict_table_and_bad_image(bundle_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    good = bundle_dir / load_golden(bundle_dir).items[0].file
    res = invoke("predict", "--model", bundle_dir, good, bad)
    assert res.exit_code == 2, res.output
    assert "1 of 2 images could not be read" in res.output and "count" in res.output
    res = invoke("predict", "--model", bundle_dir, good, bad, "--json")
    assert res.exit_code == 2
    ok, broken = _lines(res.stdout)
    assert ok["file"] == str(good) and ok["count"] in load_golden(bundle_dir).counts
    assert broken["file"] == str(bad) and "DecodeError" in broken["error"] and "count" not in broken


def test_predict_onnx_needs_a_card(bundle_dir: Path, tmp_path: Path) -> None:
    onnx_file = tmp_path / "m.onnx"
    shutil.copy(bundle_dir / "model.fp32.onnx", onnx_file)
    image = bundle_dir / load_golden(bundle_dir).items[0].file
    res = invoke("predict", "--model", onnx_file, image)
    assert res.exit_code == 2 and "--card" in res.output
    res = invoke("predict", "--model", onnx_file, image, "--card", bundle_dir / "card.json", "--json")
    assert res.exit_code == 0, res.output
    assert _lines(res.stdout)[0]["model"] == "m.onnx"


def test_predict_corrupt_inputs_exit_2(bundle_dir: Path, tmp_path: Path) -> None:
    image = bundle_dir / load_golden(bundle_dir).items[0].file
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"garbage")
    res = invoke("predict", "--model", corrupt, image)
    assert res.exit_code == 2 and "not a valid ONNX model" in res.output
    tampered = tmp_path / "b"
    shutil.copytree(bundle_dir, tampered)
    with open(tampered / "model.int8-cpu.onnx", "ab") as f:
        f.write(b"\x00")
    res = invoke("predict", "--model", tampered, image)
    assert res.exit_code == 2 and "does not verify" in res.output and "model.int8-cpu.onnx" in res.output
    res = invoke("predict", "--model", bundle_dir, image, "--backend", "nope")
    assert res.exit_code == 2 and "unknown backend" in res.output
