"""The TensorRT backend's and builder's control flow against the FAKE TensorRT of tests/agent/fake_trt.py.

These check decisions only (cache hit, stale/corrupt cache -> one rebuild, profiles, DLA, strongly
typed FP16, timing cache); a real build is checked by the GPU-gated tests in test_backends.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from agent.inference.backends import engine_cache as ec
from agent.inference.backends.base import BackendError, EngineBuildError
from agent.inference.backends.tensorrt_backend import TensorRTBackend
from agent.inference.backends.tensorrt_build import build_engine
from contract.card import load_card
from tests.agent import fake_trt
from tests.agent.bundles import tiny_onnx


def _load(bundle: Path, cache: Path, **kw: object) -> TensorRTBackend:
    b = TensorRTBackend(precision="fp32", engine_cache=cache, batch=4, **kw)  # type: ignore[arg-type]
    b.load(bundle, load_card(bundle))
    return b


def test_backend_builds_then_hits_the_cache_and_closes_its_context(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = fake_trt.install(monkeypatch)
    b = _load(tiny_bundle, tmp_path)
    assert b.built and b.rebuild_reason is None and len(state.builds) == 1
    assert b.engine_path is not None and ec.read_sidecar(b.engine_path).engine_sha256 is not None
    x = np.ones((3, 3, 32, 32), np.float32)
    np.testing.assert_allclose(b.infer(x), np.tile(np.arange(6, dtype=np.float32) + 1.0, (3, 1)))
    assert b.describe()["engine_built"] is True
    b.close()
    (ctx,) = fake_trt.contexts_made()
    assert (ctx.popped, ctx.detached) == (1, 1)  # PyCuda pops AND detaches its context
    again = _load(tiny_bundle, tmp_path)
    assert not again.built and again.rebuild_reason is None and len(state.builds) == 1
    again.close()


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [("trt_version", "10.2.0", "TensorRT 10.2.0"), ("compute_capability", "7.2", "compute capability 7.2")],
)
def test_stale_sidecar_rebuilds(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str, value: str, why: str
) -> None:
    state = fake_trt.install(monkeypatch)
    first = _load(tiny_bundle, tmp_path)
    first.close()
    assert first.engine_path is not None
    side = ec.sidecar_path(first.engine_path)
    side.write_text(json.dumps({**json.loads(side.read_text()), field: value}))
    b = _load(tiny_bundle, tmp_path)
    assert b.built and why in (b.rebuild_reason or "") and len(state.builds) == 2
    assert b.describe()["engine_rebuild_reason"] == b.rebuild_reason
    b.close()


def test_other_gpu_gets_its_own_engine(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_trt.install(monkeypatch, cc=(8, 7))
    a = _load(tiny_bundle, tmp_path)
    a.close()
    fake_trt.install(monkeypatch, cc=(8, 9))
    b = _load(tiny_bundle, tmp_path)
    b.close()
    assert b.built and a.engine_path != b.engine_path and "sm89" in str(b.engine_path)


def test_corrupt_engine_file_is_rebuilt_once(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    state = fake_trt.install(monkeypatch)
    first = _load(tiny_bundle, tmp_path)
    first.close()
    assert first.engine_path is not None
    first.engine_path.write_bytes(b"plain engine bytes")
    caplog.set_level(logging.WARNING)
    b = _load(tiny_bundle, tmp_path)
    b.close()
    assert b.built and len(state.builds) == 2
    assert "sha256" in (b.rebuild_reason or "") and "rebuilding" in caplog.text
    assert fake_trt.engine_record(first.engine_path)["version"] == "10.3.0"  # a real (fake) engine again


def test_engine_that_does_not_deserialize_is_rebuilt_once(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = fake_trt.install(monkeypatch)
    first = _load(tiny_bundle, tmp_path)
    first.close()
    assert first.engine_path is not None
    foreign = b"foreign engine bytes"  # sha256 matches its sidecar, TensorRT refuses it
    first.engine_path.write_bytes(foreign)
    side = ec.read_sidecar(first.engine_path)
    ec.write_sidecar(
        first.engine_path, side.model_copy(update={"engine_sha256": ec.sha256_file(first.engine_path)})
    )
    b = _load(tiny_bundle, tmp_path)
    b.close()
    assert b.built and "does not load" in (b.rebuild_reason or "") and len(state.builds) == 2
    state.fail_deserialize = True  # nothing loads: one rebuild, then an error (no loop)
    first.engine_path.write_bytes(foreign)
    ec.write_sidecar(
        first.engine_path, side.model_copy(update={"engine_sha256": ec.sha256_file(first.engine_path)})
    )
    with pytest.raises(BackendError, match="deserialize"):
        _load(tiny_bundle, tmp_path)
    assert len(state.builds) == 3


def test_old_sidecar_without_engine_sha_is_stale(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = fake_trt.install(monkeypatch)
    first = _load(tiny_bundle, tmp_path)
    first.close()
    assert first.engine_path is not None
    side = ec.sidecar_path(first.engine_path)
    old = {
        k: v for k, v in json.loads(side.read_text()).items() if k not in ("engine_sha256", "gpu_fallback")
    }
    side.write_text(json.dumps(old))
    assert ec.read_sidecar(first.engine_path).gpu_fallback is None  # still readable
    b = _load(tiny_bundle, tmp_path)
    b.close()
    assert b.built and "engine_sha256" in (b.rebuild_reason or "") and len(state.builds) == 2


def test_profile_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx

    fake_trt.install(monkeypatch)
    model = onnx.load(str(tiny_onnx(tmp_path / "m.onnx")))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1  # fixed batch of 1
    onnx.save(model, str(tmp_path / "fixed.onnx"))
    with pytest.raises(EngineBuildError, match="fixed batch of 1"):
        build_engine(tmp_path / "fixed.onnx", tmp_path / "e.engine", precision="fp32", max_batch=4)
    with pytest.raises(EngineBuildError, match="bad batch profile"):
        build_engine(tmp_path / "m.onnx", tmp_path / "e.engine", precision="fp32", min_batch=4, max_batch=2)
    path, sc = build_engine(tmp_path / "m.onnx", tmp_path / "e.engine", precision="fp32", max_batch=8)
    rec = fake_trt.engine_record(path)
    assert rec["profile"]["input"] == [[1, 3, 32, 32], [4, 3, 32, 32], [8, 3, 32, 32]]
    assert (sc.batch_profile.min, sc.batch_profile.opt, sc.batch_profile.max) == (1, 4, 8)


@pytest.mark.parametrize("fallback", [True, False])
def test_dla_uses_a_static_profile_and_records_gpu_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fallback: bool
) -> None:
    fake_trt.install(monkeypatch, num_dla=2)
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    path, sc = build_engine(
        onnx_path, tmp_path / "e.engine", precision="fp16", max_batch=4, dla_core=1, gpu_fallback=fallback
    )
    rec = fake_trt.engine_record(path)
    assert rec["dla_core"] == 1 and rec["profile"]["input"] == [[4, 3, 32, 32]] * 3
    assert ("GPU_FALLBACK" in rec["flags"]) is fallback
    back = ec.read_sidecar(path)
    assert back.dla_core == 1 and back.gpu_fallback is fallback and back == sc
    assert (sc.batch_profile.min, sc.batch_profile.opt, sc.batch_profile.max) == (4, 4, 4)
    _, gpu = build_engine(onnx_path, tmp_path / "g.engine", precision="fp16", max_batch=4)
    assert gpu.gpu_fallback is None and gpu.dla_core is None


@pytest.mark.parametrize(("version", "fp16_flag"), [("10.12.0.36", True), ("11.0.0", False)])
def test_strongly_typed_fp16_builds_from_an_fp16_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str, fp16_flag: bool
) -> None:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto

    fake_trt.install(monkeypatch, version=version, fp16_flag=fp16_flag)
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    path, sc = build_engine(onnx_path, tmp_path / "cache" / "e.engine", precision="fp16", max_batch=4)
    rec = fake_trt.engine_record(path)
    fp16_model = tmp_path / "cache" / f"{sc.onnx_sha256}.fp16.onnx"
    assert rec["typed"] and "FP16" not in rec["flags"] and rec["source"] == str(fp16_model)
    assert set(rec["initializer_types"]) == {TensorProto.FLOAT16}
    assert sc.strongly_typed and sc.onnx_sha256 == ec.sha256_file(onnx_path)  # keyed by the FP32 model
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    ref = ort.InferenceSession(str(onnx_path)).run(None, {"input": x})[0]
    got = ort.InferenceSession(str(fp16_model)).run(None, {"input": x})[0]  # IO stays FP32
    np.testing.assert_allclose(got, ref, rtol=1e-2, atol=5e-2)
    onnx.checker.check_model(onnx.load(str(fp16_model)))


def test_fp16_before_10_12_uses_the_builder_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_trt.install(monkeypatch, version="10.3.0")
    path, sc = build_engine(tiny_onnx(tmp_path / "m.onnx"), tmp_path / "e.engine", precision="fp16")
    rec = fake_trt.engine_record(path)
    assert not rec["typed"] and "FP16" in rec["flags"] and rec["source"] == str(tmp_path / "m.onnx")
    assert not sc.strongly_typed
    fake_trt.install(monkeypatch, version="11.0.0", fp16_flag=False)
    with pytest.raises(EngineBuildError, match="no FP16 builder flag, build strongly typed"):
        build_engine(tmp_path / "m.onnx", tmp_path / "f.engine", precision="fp16", strongly_typed=False)


def test_timing_cache_is_written_and_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = fake_trt.install(monkeypatch)
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    cache = tmp_path / "timing.cache"
    build_engine(onnx_path, tmp_path / "a.engine", precision="fp32", timing_cache=cache)
    before = cache.read_bytes()
    assert before and state.timing_blobs_in == [b""]
    build_engine(onnx_path, tmp_path / "b.engine", precision="fp16", timing_cache=cache)
    after = cache.read_bytes()
    assert state.timing_blobs_in[-1] == before  # the second build started from the first one's cache
    assert after.startswith(before) and after != before
    fake_trt.install(monkeypatch, version="10.4.0")  # another TensorRT: the cache does not match
    build_engine(onnx_path, tmp_path / "c.engine", precision="fp32", timing_cache=cache)
    assert b"10.4.0" in cache.read_bytes() and b"10.3.0" not in cache.read_bytes()
