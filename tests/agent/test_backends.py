"""Backends: ONNX Runtime on a real (tiny) bundle, auto selection with reasons, the fake backend,
and TensorRT (skipped with a reason where it is not installed)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from agent.inference.backends import (
    BackendError,
    BackendUnavailable,
    FakeBackend,
    create_backend,
    resolve_backend,
)
from agent.inference.backends.onnxruntime_backend import OnnxRuntimeBackend
from agent.inference.backends.tensorrt_backend import TensorRTBackend
from contract.card import load_card
from tests.hw import requires_gpu, requires_tensorrt


def test_onnxruntime_runs_the_bundle_model(tiny_bundle: Path) -> None:
    import onnxruntime as ort

    card = load_card(tiny_bundle)
    b = OnnxRuntimeBackend(threads=1, inter_threads=1)
    b.load(tiny_bundle, card)
    b.warmup(2)
    x = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    got = b.infer(x)
    ref = ort.InferenceSession(str(tiny_bundle / "model.fp32.onnx")).run(None, {"input": x})[0]
    assert got.shape == (5, 6) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert b.precision == "fp32" and b.device == "cpu"
    assert b.model_sha256 == card.artifacts[0].sha256
    assert b.describe()["threads"] == 1


def test_onnxruntime_refuses_a_missing_precision(tiny_bundle: Path) -> None:
    b = OnnxRuntimeBackend(precision="int8")
    with pytest.raises(BackendError, match="no ONNX model for precision=int8"):
        b.load(tiny_bundle, load_card(tiny_bundle))


def test_warmup_catches_a_card_that_disagrees_with_the_model(tiny_bundle: Path) -> None:
    card = load_card(tiny_bundle)
    wrong = card.model_copy(
        update={
            "model": card.model.model_copy(update={"num_classes": 4}),
            "output": card.output.model_copy(update={"counts": [0, 1, 2, 3]}),
        }
    )
    b = OnnxRuntimeBackend()
    b.load(tiny_bundle, wrong)
    with pytest.raises(BackendError, match="disagree"):
        b.warmup()


def test_auto_skips_tensorrt_with_a_reason(caplog: pytest.LogCaptureFixture) -> None:
    ok, why = TensorRTBackend.is_available()
    caplog.set_level(logging.INFO, logger="agent.inference.backends.registry")
    cls = resolve_backend("auto")
    if ok:
        assert cls is TensorRTBackend
    else:
        assert cls is OnnxRuntimeBackend
        assert f"skipping tensorrt: {why}" in caplog.text
        assert why  # says what is missing


def test_asking_for_an_unavailable_or_unknown_backend_explains() -> None:
    with pytest.raises(BackendError, match="unknown backend 'cuda'"):
        create_backend("cuda")
    ok, _why = TensorRTBackend.is_available()
    if not ok:
        with pytest.raises(BackendUnavailable, match="tensorrt"):
            create_backend("tensorrt")


def test_create_backend_passes_the_options_it_understands() -> None:
    b = create_backend("onnxruntime", threads=3, precision="fp32", engine_cache=Path("/x"), batch=8)
    assert isinstance(b, OnnxRuntimeBackend) and b.threads == 3 and b.requested_precision == "fp32"


def test_fake_backend(tiny_bundle: Path) -> None:
    card = load_card(tiny_bundle)
    b = FakeBackend(lambda x: np.tile([0, 0, 5.0, 0, 0, 0], (len(x), 1)))
    b.load(tiny_bundle, card)
    out = b.infer(np.zeros((3, 3, 32, 32), np.float32))
    assert out.shape == (3, 6) and out[:, 2].tolist() == [5.0] * 3
    assert b.calls == 1 and b.frames == 3
    assert FakeBackend(card=card).infer(np.zeros((2, 3, 32, 32), np.float32)).tolist() == [[0.0] * 6] * 2
    with pytest.raises(BackendError, match="shape"):
        FakeBackend(lambda x: np.zeros((1, 2)), card=card).infer(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(BackendError, match="boom"):
        FakeBackend(fail_load="boom").load(tiny_bundle, card)


@requires_tensorrt
@requires_gpu
def test_tensorrt_builds_caches_and_matches_onnxruntime(tiny_bundle: Path, tmp_path: Path) -> None:
    card = load_card(tiny_bundle)
    cache = tmp_path / "engines"
    trt_b = TensorRTBackend(precision="fp32", engine_cache=cache, batch=4)
    trt_b.load(tiny_bundle, card)
    assert trt_b.built and trt_b.engine_path is not None and trt_b.engine_path.is_file()
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    ort_b = OnnxRuntimeBackend()
    ort_b.load(tiny_bundle, card)
    np.testing.assert_allclose(trt_b.infer(x), ort_b.infer(x), rtol=1e-3, atol=1e-3)
    trt_b.close()
    again = TensorRTBackend(precision="fp32", engine_cache=cache, batch=4)
    again.load(tiny_bundle, card)
    assert not again.built  # from the cache
    again.close()


def test_tensorrt_engine_cache_decision_without_tensorrt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The cache check runs without TensorRT: a matching sidecar (and engine sha256) loads, any
    mismatch, including an engine file that is not the one the sidecar describes, rebuilds."""
    from agent.inference.backends import engine_cache as ec

    sha = "ab" * 32
    key = ec.engine_cache_key(sha, "10.3.0", "8.7", "int8", (1, 4, 4))
    engine = tmp_path / f"{key}.engine"
    engine.write_bytes(b"plain engine bytes")
    ec.write_sidecar(
        engine,
        ec.EngineSidecar(
            trt_version="10.3.0",
            compute_capability="8.7",
            onnx_sha256=sha,
            precision="int8",
            batch_profile={"min": 1, "opt": 4, "max": 4},
            engine_sha256=ec.sha256_file(engine),
        ),
    )
    b = TensorRTBackend(engine_cache=tmp_path)
    assert b._cached_engine(engine, "10.3.0", "8.7", sha, "int8", (1, 4, 4)) == b"plain engine bytes"
    assert b.rebuild_reason is None
    caplog.set_level(logging.WARNING)
    engine.write_bytes(b"foreign engine bytes")  # not the file the sidecar describes: rebuild
    assert b._cached_engine(engine, "10.3.0", "8.7", sha, "int8", (1, 4, 4)) is None
    assert "sha256" in (b.rebuild_reason or "") and "rebuilding" in caplog.text
    assert b._cached_engine(engine, "10.4.0", "8.7", sha, "int8", (1, 4, 4)) is None
    assert "running TensorRT 10.4.0" in caplog.text and "rebuilding" in caplog.text
    assert b._cached_engine(engine, "10.3.0", "7.2", sha, "int8", (1, 4, 4)) is None
    assert b._cached_engine(engine, "10.3.0", "8.7", sha, "int8", (1, 8, 8)) is None
    ec.sidecar_path(engine).write_text("{broken")
    assert b._cached_engine(engine, "10.3.0", "8.7", sha, "int8", (1, 4, 4)) is None
    assert b._cached_engine(tmp_path / "missing.engine", "10.3.0", "8.7", sha, "int8", (1, 4, 4)) is None
