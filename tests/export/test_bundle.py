"""`binwatch export bundle` / `export verify`: every file hashed, any changed byte caught and named."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest

from contract.bundle import load_manifest
from contract.card import load_card
from export.bundle import verify_bundle
from tests.export.conftest import invoke

FILES = [
    "card.json",
    "model.fp32.onnx",
    "model.int8-trt.onnx",
    "model.int8-cpu.onnx",
    "golden/expected.json",
    "golden-image-0",
    "golden-image-last",
    "MANIFEST.json",
]


def _resolve(bundle: Path, name: str) -> str:
    images = sorted(p.relative_to(bundle).as_posix() for p in (bundle / "golden").glob("*.jpg"))
    return {"golden-image-0": images[0], "golden-image-last": images[-1]}.get(name, name)


def test_bundle_layout_and_verify(bundle_dir: Path) -> None:
    names = sorted(p.relative_to(bundle_dir).as_posix() for p in bundle_dir.rglob("*") if p.is_file())
    for required in ("card.json", "model.fp32.onnx", "model.int8-trt.onnx", "model.int8-cpu.onnx"):
        assert required in names
    images = [n for n in names if n.startswith("golden/") and n.endswith(".jpg")]
    assert len(images) == 4
    manifest = load_manifest(bundle_dir)
    assert set(manifest.files) == set(names) - {"MANIFEST.json"}
    card = load_card(bundle_dir)
    assert {a.file for a in card.artifacts} == {
        "model.fp32.onnx",
        "model.int8-trt.onnx",
        "model.int8-cpu.onnx",
    }
    golden = json.loads((bundle_dir / "golden/expected.json").read_text())
    assert golden["temperature"] == card.output.temperature
    assert {it["file"] for it in golden["items"]} == set(images)
    assert all(abs(sum(it["probs"]) - 1) < 1e-6 for it in golden["items"])
    res = invoke("export", "verify", bundle_dir)
    assert res.exit_code == 0, res.output
    assert "OK" in res.output and "golden set reproduced" in res.output


@pytest.mark.parametrize("name", FILES)
def test_one_changed_byte_is_caught_and_named(bundle_dir: Path, tmp_path: Path, name: str) -> None:
    copy = tmp_path / "b"
    shutil.copytree(bundle_dir, copy)
    rel = _resolve(copy, name)
    target = copy / rel
    data = bytearray(target.read_bytes())
    i = len(data) // 2
    data[i] = (data[i] + 1) % 256  # one byte, size unchanged
    target.write_bytes(bytes(data))
    problems = verify_bundle(copy, run_golden=False)
    assert problems, f"changing {rel} went unnoticed"
    assert any(p.startswith(f"{rel}:") for p in problems), problems
    res = invoke("export", "verify", copy, "--json")
    assert res.exit_code == 1
    out = json.loads(res.stdout)
    assert not out["ok"] and any(rel in p for p in out["problems"])


def test_extra_and_missing_files_are_named(bundle_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(bundle_dir, copy)
    (copy / "model.int8-cpu.onnx").unlink()
    (copy / "extra.bin").write_bytes(b"x")
    problems = verify_bundle(copy, run_golden=False)
    assert any(p.startswith("model.int8-cpu.onnx:") and "missing" in p for p in problems)
    assert any(p.startswith("extra.bin:") for p in problems)


def test_tar_bundle_verifies_and_refuses_unsafe_members(quantized, eval_data: Path, tmp_path: Path) -> None:
    run, _ = quantized
    tar_path = tmp_path / "model.tar"
    res = invoke("export", "bundle", run, "--out", tar_path, "--golden", eval_data, "--n-golden", "2")
    assert res.exit_code == 0, res.output
    with tarfile.open(tar_path) as tar:
        members = tar.getmembers()
    assert all(m.mtime == 0 and not m.name.startswith("/") for m in members)
    assert verify_bundle(tar_path) == []
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 0
        tar.addfile(info)
    res = invoke("export", "verify", evil)
    assert res.exit_code == 2 and "unsafe path" in res.output
    assert not (tmp_path.parent / "escape.txt").exists()


def test_bundle_needs_int8_models_or_calib(run_dir: Path, small_fp32: Path, tmp_path: Path) -> None:
    shutil.copy(small_fp32, run_dir / "model.fp32.onnx")
    from export.artifacts import record_artifact

    record_artifact(
        run_dir, run_dir / "model.fp32.onnx", kind="onnx", precision="fp32", target="any", opset=18
    )
    res = invoke("export", "bundle", run_dir, "--out", tmp_path / "b")
    assert res.exit_code == 2, res.output
    assert "export quantize" in res.output and "--calib" in res.output
    assert not (tmp_path / "b").exists()


def test_bundle_refuses_stale_card(quantized, tmp_path: Path, eval_data: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(quantized[0], run)
    with open(run / "model.int8-cpu.onnx", "ab") as f:
        f.write(b"\x00")
    res = invoke("export", "bundle", run, "--out", tmp_path / "b", "--golden", eval_data)
    assert res.exit_code == 2, res.output
    assert "model.int8-cpu.onnx changed after it was recorded" in res.output
