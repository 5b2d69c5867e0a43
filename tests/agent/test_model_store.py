"""Model store: verified loads, atomic swap after warm-up, failed loads keep the old model,
.tar bundles, and reload on a watched path."""

from __future__ import annotations

import shutil
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from agent.inference.backends.fake import FakeBackend
from agent.inference.backends.onnxruntime_backend import OnnxRuntimeBackend
from agent.inference.model_store import ModelLoadError, ModelStore
from tests.agent.bundles import make_tiny_bundle
from tests.agent.mqtt_helpers import wait_until


def _store(tmp_path: Path, factory=lambda: OnnxRuntimeBackend(threads=1), **kw) -> tuple[ModelStore, list]:
    events: list[tuple[int, str, str]] = []
    store = ModelStore(factory, models_dir=tmp_path / "models", on_state=lambda *a: events.append(a), **kw)
    return store, events


def test_load_reports_states_and_uses_card_thresholds(tiny_bundle: Path, tmp_path: Path) -> None:
    store, events = _store(tmp_path)
    m = store.load(tiny_bundle)
    assert store.ready and store.current is m
    assert [e[1] for e in events] == ["verifying", "warming", "warming", "active"]
    assert (m.thresholds.mismatch, m.thresholds.match, m.thresholds.source) == (0.1, 0.3, "card")
    ref = m.ref
    assert (ref.name, ref.version, ref.backend, ref.precision) == ("tiny-count", 1, "onnxruntime-cpu", "fp32")
    store.close()


def test_config_thresholds_override_the_card(tiny_bundle: Path, tmp_path: Path) -> None:
    store, _ = _store(tmp_path, mismatch_threshold=0.02)
    assert store.load(tiny_bundle).thresholds.mismatch == 0.02
    store.close()


def test_tampered_bundle_is_refused_and_the_old_model_kept(tiny_bundle: Path, tmp_path: Path) -> None:
    store, events = _store(tmp_path)
    old = store.load(tiny_bundle)
    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle, bad)
    data = bytearray((bad / "model.fp32.onnx").read_bytes())
    data[-1] ^= 0xFF
    (bad / "model.fp32.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=r"model\.fp32\.onnx: sha256 differs"):
        store.load(bad)
    assert store.current is old and events[-1][1] == "failed"
    assert store.failed_loads == 1 and "sha256" in (store.last_error or "")
    # the old model still answers
    with store.use() as m:
        assert m.backend.infer(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 6)
    store.close()


def test_missing_or_broken_bundles_are_refused(tmp_path: Path) -> None:
    store, _ = _store(tmp_path)
    with pytest.raises(ModelLoadError, match="not found"):
        store.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no model card"):
        store.load(tmp_path / "empty")
    assert not store.ready


def test_swap_waits_for_warmup_and_the_old_model_serves_meanwhile(tiny_bundle: Path, tmp_path: Path) -> None:
    made: list[FakeBackend] = []

    def factory() -> FakeBackend:
        b = FakeBackend(lambda x: np.zeros((len(x), 6)), delay_s=0.0 if not made else 0.3)
        made.append(b)
        return b

    store, _ = _store(tmp_path, factory, warmup=3)
    old = store.load(tiny_bundle)
    v2 = make_tiny_bundle(tmp_path / "v2", version=2)
    t = threading.Thread(target=store.load, args=(v2,))
    served = 0
    with store.use() as m:  # a user holding the old model across the swap
        t.start()
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:  # the new one is warming (3 x 0.3 s)
            with store.use() as cur:
                assert cur is old
                cur.backend.infer(np.zeros((1, 3, 32, 32), np.float32))
                served += 1
        t.join(10)
        assert store.current is not None and store.current.card.version == 2
        assert m is old and old.retired and m.backend.calls >= 1
    assert served > 0
    assert made[1].calls == 3  # warmed up before the switch


def test_failed_backend_load_keeps_the_old_model(tiny_bundle: Path, tmp_path: Path) -> None:
    fail = {"next": None}

    def factory() -> FakeBackend:
        return FakeBackend(fail_load=fail["next"])

    store, events = _store(tmp_path, factory)
    old = store.load(tiny_bundle)
    fail["next"] = "out of memory while building"
    with pytest.raises(ModelLoadError, match="out of memory"):
        store.load(tiny_bundle)
    assert store.current is old
    assert events[-1][1:] == ("failed", "out of memory while building")


def test_tar_bundles_are_unpacked_safely(tiny_bundle: Path, tmp_path: Path) -> None:
    tar = tmp_path / "b.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(tiny_bundle, arcname="tiny")
    store, _ = _store(tmp_path)
    m = store.load(tar)
    assert m.bundle.parent == tmp_path / "models" and (m.bundle / "card.json").is_file()
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tf:
        tf.add(tiny_bundle / "card.json", arcname="../card.json")
    with pytest.raises(ModelLoadError, match="unsafe entry"):
        store.load(evil)
    assert store.current is m
    store.close()


def test_watched_path_reloads_on_change(tiny_bundle: Path, tmp_path: Path) -> None:
    live = tmp_path / "current"
    shutil.copytree(tiny_bundle, live)
    store, _ = _store(tmp_path)
    store.load(live)
    stop = threading.Event()
    store.watch(live, stop, interval_s=0.1)
    try:
        time.sleep(0.3)
        shutil.rmtree(live)
        make_tiny_bundle(live, version=7, seed=3)
        assert wait_until(lambda: store.current and store.current.card.version == 7, timeout=20)
    finally:
        stop.set()
        store.close()
