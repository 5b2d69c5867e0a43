"""Pure engine-cache logic (runs everywhere, Python 3.10 without torch): cache key, compatibility
check, sidecar, L4T parsing, platform probes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import agent.inference.backends.engine_cache as ec
from agent.inference.backends.engine_cache import (
    EngineSidecar,
    _cc_from_device_tree,
    check_engine_compat,
    engine_cache_key,
    normalize_compute_capability,
    parse_l4t_release,
    read_l4t_release,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)
from contract.base import ContractError

SHA = "ab" * 32
OTHER = "cd" * 32


def _sidecar(**kw) -> EngineSidecar:
    base = dict(
        trt_version="10.3.0",
        compute_capability="8.7",
        l4t="36.3.0",
        onnx_sha256=SHA,
        precision="int8",
        batch_profile={"min": 1, "opt": 4, "max": 8},
        input_name="input",
        output_name="logits",
    )
    base.update(kw)
    return EngineSidecar.parse(base)


def test_key_is_deterministic_and_readable() -> None:
    k1 = engine_cache_key(SHA, "10.3.0", "8.7", "int8", (1, 4, 8))
    k2 = engine_cache_key(SHA.upper(), "10.3.0", (8, 7), "int8", {"min": 1, "opt": 4, "max": 8})
    assert k1 == k2
    assert k1.startswith(SHA[:16] + "-trt10.3.0-sm87-int8-b1_4_8-")
    assert all(c.isalnum() or c in "-_." for c in k1)  # a safe file name


@pytest.mark.parametrize(
    "change",
    [
        {"model_sha256": OTHER},
        {"trt_version": "10.3.0.30"},
        {"compute_capability": "8.9"},
        {"precision": "fp16"},
        {"batch_profile": (1, 2, 8)},
    ],
    ids=lambda c: next(iter(c)),
)
def test_key_changes_with_every_input(change: dict) -> None:
    args = {
        "model_sha256": SHA,
        "trt_version": "10.3.0",
        "compute_capability": "8.7",
        "precision": "int8",
        "batch_profile": (1, 4, 8),
    }
    assert engine_cache_key(**args) != engine_cache_key(**{**args, **change})


@pytest.mark.parametrize(
    "bad",
    [
        {"model_sha256": "xyz"},
        {"precision": "int4"},
        {"compute_capability": "eighty-seven"},
        {"batch_profile": (4, 2, 8)},
        {"trt_version": " "},
    ],
    ids=lambda c: next(iter(c)),
)
def test_key_rejects_bad_inputs(bad: dict) -> None:
    args = {
        "model_sha256": SHA,
        "trt_version": "10.3.0",
        "compute_capability": "8.7",
        "precision": "int8",
        "batch_profile": (1, 4, 8),
    }
    with pytest.raises(ValueError):
        engine_cache_key(**{**args, **bad})


@pytest.mark.parametrize(
    ("text", "want"), [("8.7", "8.7"), ("sm_87", "8.7"), ("87", "8.7"), ("sm90", "9.0"), ((7, 2), "7.2")]
)
def test_normalize_compute_capability(text, want) -> None:
    assert normalize_compute_capability(text) == want


def test_compat_same_platform_has_no_reasons() -> None:
    sc = _sidecar()
    assert check_engine_compat(sc, trt_version="10.3.0", compute_capability="8.7") == []
    assert (
        check_engine_compat(
            sc.to_dict(),
            trt_version="10.3.0",
            compute_capability="sm_87",
            onnx_sha256=SHA,
            precision="int8",
            batch_profile=(1, 4, 8),
            l4t="36.3.0",
        )
        == []
    )


def test_compat_names_each_mismatch() -> None:
    reasons = check_engine_compat(
        _sidecar(),
        trt_version="10.12.0.36",
        compute_capability="8.9",
        onnx_sha256=OTHER,
        precision="fp16",
        batch_profile=(1, 8, 16),
        l4t="36.4.0",
    )
    text = "\n".join(reasons)
    assert len(reasons) == 6, text
    assert "TensorRT 10.3.0" in text and "10.12.0.36" in text
    assert "compute capability 8.7" in text and "8.9" in text
    assert "ONNX" in text and "fp16" in text and "batch profile" in text and "L4T 36.3.0" in text


def test_compat_unreadable_sidecar_is_a_reason() -> None:
    reasons = check_engine_compat({"trt_version": "10.3.0"}, trt_version="10.3.0", compute_capability="8.7")
    assert len(reasons) == 1 and "sidecar" in reasons[0]


def test_sidecar_roundtrip(tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\x00plain engine bytes")
    sc = _sidecar(strongly_typed=True, dla_core=0, workspace_mib=512)
    path = write_sidecar(engine, sc)
    assert path == sidecar_path(engine) == tmp_path / "m.engine.json"
    back = read_sidecar(engine)
    assert back == sc
    assert json.loads(path.read_text())["schema"] == "binwatch.engine"
    assert engine.read_bytes() == b"\x00plain engine bytes"  # engine untouched, nothing prepended


def test_engine_file_problem_checks_the_sha256(tmp_path: Path) -> None:
    import hashlib

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine bytes")
    good = hashlib.sha256(b"engine bytes").hexdigest()
    assert ec.engine_file_problem(engine, _sidecar(engine_sha256=good)) is None
    engine.write_bytes(b"plain engine bytes")  # replaced or corrupted: the sidecar no longer vouches for it
    assert "differs" in (ec.engine_file_problem(engine, _sidecar(engine_sha256=good)) or "")
    assert "engine_sha256" in (ec.engine_file_problem(engine, _sidecar()) or "")  # old sidecar: stale
    assert _sidecar().gpu_fallback is None and _sidecar(dla_core=0, gpu_fallback=True).gpu_fallback


def test_read_sidecar_errors_name_the_file(tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    with pytest.raises(ContractError, match=r"m\.engine\.json"):
        read_sidecar(engine)
    sidecar_path(engine).write_text('{"schema": "binwatch.engine", "trt_version": 3}')
    with pytest.raises(ContractError, match=r"m\.engine\.json"):
        read_sidecar(engine)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (
            "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64\n",
            "36.3.0",
        ),
        ("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref", "35.4.1"),
        ("# R32 (release), REVISION: 7, GCID: 1", "32.7.0"),
        ("garbage", None),
    ],
)
def test_parse_l4t_release(text, want) -> None:
    assert parse_l4t_release(text) == want


def test_read_l4t_release_file(tmp_path: Path) -> None:
    f = tmp_path / "nv_tegra_release"
    f.write_text("# R36 (release), REVISION: 4.0, GCID: 1\n")
    assert read_l4t_release(f) == "36.4.0"
    assert read_l4t_release(tmp_path / "absent") is None


def test_jetson_compute_capability_from_the_device_tree(tmp_path: Path) -> None:
    """A Jetson is recognised from /proc/device-tree/compatible without any CUDA call."""
    compatible = tmp_path / "compatible"
    compatible.write_bytes(b"nvidia,p3768-0000+p3767-0005\x00nvidia,p3767-0005\x00nvidia,tegra234\x00")
    assert _cc_from_device_tree(compatible) == "8.7"
    compatible.write_bytes(b"nvidia,p2771-0000\x00nvidia,tegra186\x00")
    assert _cc_from_device_tree(compatible) == "6.2"
    compatible.write_bytes(b"raspberrypi,5-model-b\x00brcm,bcm2712\x00")
    assert _cc_from_device_tree(compatible) is None
    assert _cc_from_device_tree(tmp_path / "absent") is None


def test_engine_modules_import_without_torch_tensorrt_onnx_or_export() -> None:
    code = (
        "import sys, agent.inference.backends.engine_cache, agent.inference.backends.tensorrt_build\n"
        "import agent.inference.backends.tensorrt_backend\n"
        "bad = [m for m in ('torch', 'onnx', 'onnxruntime', 'tensorrt', 'export', 'training')"
        " if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def _fake_nvidia_smi(bin_dir: Path, body: str) -> None:
    exe = bin_dir / "nvidia-smi"
    exe.write_text("#!/bin/sh\n" + body + "\n")
    exe.chmod(0o755)


def test_nvidia_smi_probes_read_the_queried_field(tmp_path: Path, monkeypatch) -> None:
    """The compute capability and the GPU name come from a real nvidia-smi subprocess (a script here)."""
    _fake_nvidia_smi(
        tmp_path,
        'case "$1" in --query-gpu=compute_cap) echo "8.9";; --query-gpu=name) echo "NVIDIA L4";; esac',
    )
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    assert ec._cc_from_nvidia_smi(0) == "8.9"
    if not Path("/proc/device-tree/model").exists():  # a Jetson names itself from the device tree
        assert ec.detect_gpu_name(0) == "NVIDIA L4"


def test_nvidia_smi_failure_or_garbage_means_unknown(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    _fake_nvidia_smi(tmp_path, 'echo "No devices were found" >&2; exit 9')
    assert ec._cc_from_nvidia_smi(0) is None
    _fake_nvidia_smi(tmp_path, 'echo "[N/A]"')
    assert ec._cc_from_nvidia_smi(0) is None
