"""The agent's updater (docs/deploy.md, "On the device"): fetch (path, file://, HTTP with resume and
limits), then the model store's checks (sha256s, signature against the trust list, golden set)
before the switch; every refusal reported with its reason while the old model keeps serving; and
the whole path through a real mosquitto and a running agent.

Real parts throughout: ed25519 keys and signatures, tar files, a local HTTP server (stdlib, with
``Range`` support), ONNX Runtime on the tiny bundle, mosquitto. The only stand-in is
``RecordingReporter``, a fake at the ``model/reported`` seam that records what would be published.
"""

from __future__ import annotations

import base64
import json
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest

from agent.inference.backends.onnxruntime_backend import OnnxRuntimeBackend
from agent.inference.bundle_checks import BundleChecks
from agent.inference.model_store import ModelStore
from agent.update.fetch import FetchError, fetch_bundle
from agent.update.trial import UpdateState
from agent.update.updater import TrialPolicy, Updater
from contract.bundle import build_manifest, write_manifest
from contract.files import sha256_file
from contract.golden import GoldenItem, GoldenSet
from contract.messages import ModelDesired, ModelReported
from contract.signing import generate_keypair, sign_bundle
from tests.agent.bundles import make_tiny_bundle
from tests.agent.mqtt_helpers import publish, retained, wait_until
from tests.broker import free_port


class RecordingReporter:
    """Fake ``model/reported`` (the ModelStateReporter seam): records (version, state, detail, rollout)."""

    def __init__(self) -> None:
        self.rollout_id: Optional[str] = None
        self.states: list[tuple[int, str, str, Optional[str]]] = []

    def __call__(self, version: int, state: str, detail: str) -> None:
        self.states.append((version, state, detail, self.rollout_id))

    def last(self) -> tuple[int, str, str, Optional[str]]:
        return self.states[-1]


# -- building bundles --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("keys")
    out = {}
    for name in ("fleet", "intruder"):
        private, public = generate_keypair()
        (d / f"{name}.key").write_bytes(private)
        (d / f"{name}.pub").write_bytes(public)
        out[name] = d / name
    return out


def _tar(folder: Path) -> Path:
    out = folder.with_suffix(".tar")
    with tarfile.open(out, "w") as tar:
        for p in sorted(folder.rglob("*")):
            tar.add(p, arcname=str(p.relative_to(folder)), recursive=False)
    return out


def _bundle(root: Path, version: int, key: Optional[Path], *, golden_off: bool = False) -> Path:
    folder = make_tiny_bundle(root / f"v{version}-{key.name if key else 'unsigned'}", version=version)
    if golden_off:
        _add_wrong_golden_set(folder, version)
    if key is not None:
        sign_bundle(folder, key.with_suffix(".key"))
    return folder


def _add_wrong_golden_set(folder: Path, version: int) -> None:
    """A golden set whose reference says the opposite of what the model outputs."""
    import cv2

    img = np.full((32, 32, 3), 120, dtype=np.uint8)
    (folder / "golden").mkdir()
    ok, jpg = cv2.imencode(".jpg", img)
    assert ok
    (folder / "golden" / "0.jpg").write_bytes(jpg.tobytes())
    probs = [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    golden = GoldenSet(
        model="model.fp32.onnx",
        model_sha256=sha256_file(folder / "model.fp32.onnx"),
        temperature=1.0,
        counts=[0, 1, 2, 3, 4, 5],
        items=[
            GoldenItem(
                file="golden/0.jpg",
                sha256=sha256_file(folder / "golden" / "0.jpg"),
                logits=probs,
                probs=probs,
                count=5,
            )
        ],
    )
    (folder / "golden" / "expected.json").write_bytes(golden.to_json_bytes())
    write_manifest(folder, build_manifest(folder, model_name="tiny-count", model_version=version))


def _desired(tar: Path, version: int, rollout: str = "r1", url: Optional[str] = None) -> ModelDesired:
    from contract.signing import signature_of

    sig = (
        signature_of(tar.with_suffix("")) or base64.b64encode(bytes(64)).decode()
    )  # unsigned: any well-formed
    return ModelDesired(
        version=version,
        bundle_url=url or tar.as_uri(),
        sha256=sha256_file(tar),
        signature=sig,
        rollout_id=rollout,
    )


def _store(reporter: RecordingReporter, tmp_path: Path, trusted: list[Path]) -> ModelStore:
    return ModelStore(
        lambda: OnnxRuntimeBackend(threads=1),
        models_dir=tmp_path / "models",
        warmup=1,
        on_state=reporter,
        checks=BundleChecks(trusted_keys=trusted),
    )


def _updater(store: ModelStore, reporter: RecordingReporter, tmp_path: Path, **kw: Any) -> Updater:
    opts: dict[str, Any] = dict(
        max_bytes=10 << 20, timeout_s=5.0, keep_versions=2, retry_min_s=0.05, retry_max_s=0.2
    )
    opts.update(kw)
    opts.setdefault("trial", TrialPolicy(seconds=0.0, healthy=lambda: True, errors=lambda: 0))
    state = UpdateState(tmp_path / "updates" / "state.json")
    return Updater(
        store=store,
        report=reporter,
        staging=tmp_path / "updates",
        stop_event=threading.Event(),
        state=state,
        **opts,
    )


# -- a local HTTP server with Range ----------------------------------------------------------------


class _Files(BaseHTTPRequestHandler):
    root: Path
    ranges: list[str]

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        path = self.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        rng = self.headers.get("Range")
        start = 0
        if rng:
            self.ranges.append(rng)
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture()
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    root = tmp_path / "www"
    root.mkdir()
    ranges: list[str] = []
    handler = type("Files", (_Files,), {"root": root, "ranges": ranges})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root, ranges
    server.shutdown()
    server.server_close()


# -- fetch --------------------------------------------------------------------------------------------


def test_fetch_from_a_path_file_url_and_http_with_resume(tmp_path: Path, http_root: Any) -> None:
    base, www, ranges = http_root
    blob = bytes(range(256)) * 4000
    (www / "b.tar").write_bytes(blob)
    src = tmp_path / "b.tar"
    src.write_bytes(blob)
    import hashlib

    sha = hashlib.sha256(blob).hexdigest()
    for i, url in enumerate((str(src), src.as_uri())):
        got = fetch_bundle(url, tmp_path / f"s{i}", sha256=sha, max_bytes=1 << 20)
        assert got.read_bytes() == blob and got.name == f"{sha}.tar"
    staging = tmp_path / "http"
    staging.mkdir()
    (staging / f"{sha}.part").write_bytes(blob[:300_000])  # an interrupted download
    got = fetch_bundle(f"{base}/b.tar", staging, sha256=sha, max_bytes=1 << 20)
    assert got.read_bytes() == blob
    assert ranges == ["bytes=300000-"]  # it resumed instead of starting again
    assert sorted(p.name for p in staging.iterdir()) == [f"{sha}.tar"]


def test_fetch_refusals_name_the_cause(tmp_path: Path, http_root: Any) -> None:
    base, www, _ = http_root
    (www / "b.tar").write_bytes(b"x" * 5000)
    import hashlib

    sha = hashlib.sha256(b"x" * 5000).hexdigest()
    with pytest.raises(FetchError, match="more than the limit of 1024"):
        fetch_bundle(f"{base}/b.tar", tmp_path / "a", sha256=sha, max_bytes=1024)
    with pytest.raises(FetchError, match="sha256 of the download"):
        fetch_bundle(f"{base}/b.tar", tmp_path / "b", sha256="0" * 64, max_bytes=1 << 20)
    assert list((tmp_path / "b").iterdir()) == []  # nothing half-verified left behind
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_bundle(f"{base}/missing.tar", tmp_path / "c", sha256=sha, max_bytes=1 << 20)
    with pytest.raises(FetchError, match="cannot reach"):
        fetch_bundle(f"http://127.0.0.1:{free_port()}/b.tar", tmp_path / "d", sha256=sha, max_bytes=1 << 20)
    with pytest.raises(FetchError, match="not found"):
        fetch_bundle(str(tmp_path / "nope.tar"), tmp_path / "e", sha256=sha, max_bytes=1 << 20)
    with pytest.raises(FetchError, match="unsupported bundle URL"):
        fetch_bundle("ftp://host/b.tar", tmp_path / "f", sha256=sha, max_bytes=1 << 20)


# -- the updater with the real model store ---------------------------------------------------------


def test_a_signed_newer_bundle_is_applied_and_every_bad_one_refused(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    reporter = RecordingReporter()
    store = _store(reporter, tmp_path, [keys["fleet"].with_suffix(".pub")])
    store.load(_bundle(tmp_path, 1, keys["fleet"]))
    up = _updater(store, reporter, tmp_path)

    v2 = _tar(_bundle(tmp_path, 2, keys["fleet"]))
    assert up.apply(_desired(v2, 2, "r2"))
    assert store.current is not None and store.current.card.version == 2
    states = [(v, s, r) for v, s, _d, r in reporter.states if r == "r2"]
    assert states[0] == (2, "downloading", "r2") and states[-1] == (2, "active", "r2")
    assert (2, "verifying", "r2") in states

    def refused(desired: ModelDesired, reason: str) -> None:
        assert not up.apply(desired)
        version, state, detail, _rollout = reporter.last()
        assert (version, state) == (desired.version, "failed") and reason in detail, detail
        assert store.current is not None and store.current.card.version == 2  # still serving

    refused(_desired(_tar(_bundle(tmp_path, 1, keys["fleet"])), 1), "not newer than the running version 2")
    refused(
        _desired(_tar(_bundle(tmp_path, 3, keys["intruder"])), 3), "not signed by any key in the trust list"
    )
    refused(_desired(_tar(_bundle(tmp_path, 4, None)), 4), "MANIFEST.sig")
    refused(_desired(_tar(_bundle(tmp_path, 5, keys["fleet"], golden_off=True)), 5), "golden set")
    tampered = _bundle(tmp_path, 6, keys["fleet"])
    onnx = tampered / "model.fp32.onnx"
    data = bytearray(onnx.read_bytes())
    data[-1] ^= 0xFF  # one byte changed after signing
    onnx.write_bytes(bytes(data))
    refused(_desired(_tar(tampered), 6), "model.fp32.onnx")
    mislabeled = _tar(_bundle(tmp_path, 7, keys["fleet"]))
    refused(_desired(mislabeled, 8), "holds model version 7, the desired state says 8")
    tars = sorted(p.name for p in (tmp_path / "updates").glob("*.tar"))
    assert (
        len(tars) <= 2 and store.current.source is not None and store.current.source.name in tars
    )  # bounded
    assert len([d for d in (tmp_path / "models").iterdir() if not d.name.startswith(".")]) <= 3
    with pytest.raises(FetchError, match="more than the limit"):
        _updater(store, reporter, tmp_path, max_bytes=2048).apply(
            _desired(_tar(_bundle(tmp_path, 9, keys["fleet"])), 9)
        )
    assert store.current.card.version == 2


def test_the_worker_follows_the_most_specific_desired_state_and_retries(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    reporter = RecordingReporter()
    store = _store(reporter, tmp_path, [keys["fleet"].with_suffix(".pub")])
    store.load(_bundle(tmp_path, 1, keys["fleet"]))
    up = _updater(store, reporter, tmp_path)
    t = threading.Thread(target=up.loop, daemon=True)
    t.start()
    try:
        fleet = _tar(_bundle(tmp_path, 2, keys["fleet"]))
        device = _tar(_bundle(tmp_path, 3, keys["fleet"]))
        up.on_desired("fleet", "t", _desired(fleet, 2, "rf").to_json_bytes())
        assert wait_until(lambda: store.current.card.version == 2)
        missing = _desired(device, 3, "rd", url=str(tmp_path / "not-there-yet.tar"))
        up.on_desired("device", "t", missing.to_json_bytes())  # the device's own wins over the fleet's
        assert wait_until(
            lambda: len([s for s in reporter.states if s[3] == "rd" and "retry in" in s[2]]) >= 2
        )
        # still downloading while it retries with backoff (a rollout waits; it fails only at its
        # stage timeout), counting goes on
        assert not [s for s in reporter.states if s[1] == "failed" and s[3] == "rd"]
        assert reporter.last()[1] == "downloading" and "download failed" in reporter.last()[2]
        (tmp_path / "not-there-yet.tar").write_bytes(device.read_bytes())  # the server has it now
        assert wait_until(lambda: store.current.card.version == 3)
        up.on_desired("device", "t", b"{not json")
    finally:
        up.stop_event.set()
        t.join(5)
    assert store.current.card.version == 3


# -- end to end: a running agent and a real mosquitto --------------------------------------------------


@pytest.mark.mqtt
def test_a_running_agent_updates_from_a_retained_desired_state(
    mosquitto: Any, tmp_path: Path, keys: dict[str, Path], state_dir: Path, make_runtime: Any
) -> None:
    from tests.agent.conftest import agent_config

    v1 = _bundle(tmp_path, 1, keys["fleet"])
    v2 = _tar(_bundle(tmp_path, 2, keys["fleet"]))
    cfg = agent_config(
        bundle=v1,
        state_dir=state_dir,
        broker=mosquitto.url,
        model={"trusted_keys": [str(keys["fleet"].with_suffix(".pub"))]},
        update={"retry_min_s": 0.1},
    )
    rt = make_runtime(cfg)
    assert wait_until(lambda: rt.link.connected)
    publish(
        mosquitto.url,
        "binwatch/v1/s1/d1/model/desired",
        _desired(v2, 2, "roll-1").to_json_bytes(),
        retain=True,
    )
    assert wait_until(lambda: rt.store.current.card.version == 2, timeout=30)

    def reported() -> Optional[ModelReported]:
        raw = retained(mosquitto.url, "binwatch/v1/s1/d1/model/reported")
        return ModelReported.parse(raw) if raw else None

    assert wait_until(lambda: (r := reported()) is not None and r.state == "active" and r.version == 2)
    r = reported()
    assert r is not None and r.rollout_id == "roll-1"
    status = json.loads(retained(mosquitto.url, "binwatch/v1/s1/d1/status") or b"{}")
    assert status["model"]["version"] == 2
    # a forged bundle (another key) published as desired: refused with the reason, v2 keeps serving
    v3 = _tar(_bundle(tmp_path, 3, keys["intruder"]))
    publish(
        mosquitto.url,
        "binwatch/v1/s1/d1/model/desired",
        _desired(v3, 3, "roll-2").to_json_bytes(),
        retain=True,
    )
    assert wait_until(
        lambda: (r := reported()) is not None and r.rollout_id == "roll-2" and r.state == "failed"
    )
    assert "trust list" in (reported() or r).detail and rt.store.current.card.version == 2


# -- the trial after a switch, rollback, crash loop ----------------------------------------------------


def test_a_model_failing_its_trial_is_rolled_back_and_not_tried_again(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    reporter = RecordingReporter()
    store = _store(reporter, tmp_path, [keys["fleet"].with_suffix(".pub")])
    v1 = _tar(_bundle(tmp_path, 1, keys["fleet"]))
    store.load(v1)
    errors = [0]
    trial = TrialPolicy(seconds=60.0, healthy=lambda: True, errors=lambda: errors[0], max_errors=3)
    up = _updater(store, reporter, tmp_path, trial=trial)
    v2 = _desired(_tar(_bundle(tmp_path, 2, keys["fleet"])), 2, "r2")
    assert up.apply(v2) and store.current.card.version == 2
    up.check_trial()  # healthy, within the window: nothing happens
    assert store.current.card.version == 2 and up.state.trial is not None
    errors[0] = 3  # the new model starts failing
    up.check_trial()
    assert store.current.card.version == 1
    assert reporter.last()[:2] == (2, "rolled_back") and "3 inference errors" in reporter.last()[2]
    assert reporter.last()[3] == "r2"
    assert not up.apply(v2) and store.current.card.version == 1  # the same rollout is not retried
    # the state survives a restart: a fresh updater on the same state dir refuses it too
    again = _updater(store, RecordingReporter(), tmp_path)
    assert not again.apply(v2)


def test_a_passed_trial_is_confirmed_and_rollback_desired_may_go_back(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    reporter = RecordingReporter()
    store = _store(reporter, tmp_path, [keys["fleet"].with_suffix(".pub")])
    v1_tar = _tar(_bundle(tmp_path, 1, keys["fleet"]))
    store.load(v1_tar)
    up = _updater(store, reporter, tmp_path, trial=TrialPolicy(0.0, lambda: True, lambda: 0))
    assert up.apply(_desired(_tar(_bundle(tmp_path, 2, keys["fleet"])), 2, "r2"))
    up.check_trial()
    assert up.state.trial is None and store.current.card.version == 2
    back = _desired(v1_tar, 1, "r3").model_copy(update={"rollback": True})
    assert up.apply(back) and store.current.card.version == 1


@pytest.mark.mqtt
def test_a_crash_loop_after_a_switch_goes_back_on_the_next_start(
    mosquitto: Any, tmp_path: Path, keys: dict[str, Path], synth_bins: Path
) -> None:
    """The process is killed (SIGKILL) twice right after switching to version 2; the next start
    runs version 1 again and reports ``rolled_back``."""
    import os
    import signal
    import subprocess
    import sys

    from tests.hw import REPO

    v1 = _bundle(tmp_path, 1, keys["fleet"])
    v2 = _tar(_bundle(tmp_path, 2, keys["fleet"]))
    state = tmp_path / "state"
    config = tmp_path / "agent.yaml"
    config.write_text(
        json.dumps(
            {
                "agent": {"site": "s1", "device": "d1", "state_dir": str(state)},
                "mqtt": {"broker": mosquitto.url, "reconnect_min_delay": 0.2, "reconnect_max_delay": 1.0},
                "model": {
                    "bundle": str(v1),
                    "backend": "onnxruntime",
                    "threads": 1,
                    "trusted_keys": [str(keys["fleet"].with_suffix(".pub"))],
                },
                "update": {"trial_s": 600, "trial_restarts": 2},
                "cameras": [
                    {
                        "name": "replay",
                        "source": str(synth_bins),
                        "kind": "replay",
                        "loop": True,
                        "replay_rate": 20,
                    }
                ],
                "http": {"port": 0},
            }
        )
    )
    publish(
        mosquitto.url,
        "binwatch/v1/s1/d1/model/desired",
        _desired(v2, 2, "roll-9").to_json_bytes(),
        retain=True,
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    log = (tmp_path / "agent.log").open("ab")

    def reported() -> Optional[ModelReported]:
        raw = retained(mosquitto.url, "binwatch/v1/s1/d1/model/reported")
        return ModelReported.parse(raw) if raw else None

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "-c", str(config)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=log,
        )

    procs = []
    try:
        for _ in range(2):  # runs version 2 (switched, then started again inside the trial), then dies
            p = start()
            procs.append(p)
            assert wait_until(
                lambda: (r := reported()) is not None and r.state == "active" and r.version == 2, timeout=60
            )
            p.send_signal(signal.SIGKILL)
            p.wait(10)
            publish(
                mosquitto.url, "binwatch/v1/s1/d1/model/reported", b"", retain=True
            )  # clear, to see the next
        p = start()
        procs.append(p)
        assert wait_until(lambda: (r := reported()) is not None and r.state == "rolled_back", timeout=60)
        r = reported()
        assert r is not None and r.version == 2 and "crash loop" in r.detail and r.rollout_id == "roll-9"
        status = wait_until(
            lambda: (
                (s := json.loads(retained(mosquitto.url, "binwatch/v1/s1/d1/status") or b"{}"))
                and (s.get("model") or {}).get("version") == 1
                and s
            ),
            timeout=30,
        )
        assert status, "the agent should run version 1 after the crash loop"
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(30)
        log.close()
