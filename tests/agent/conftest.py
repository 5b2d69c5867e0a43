"""Fixtures for the agent tests: a tiny ONNX bundle (no torch), synthetic bins with a wrong
manifest for some of them, agent configs/runtimes wired to a real broker, and the pieces the
end-to-end tests share (state dir and its verdict log, subscribers, a broker that keeps sessions)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.agent.bundles import make_tiny_bundle
from tests.agent.mqtt_helpers import ROOT, Collector, PersistentMosquitto

SYNTH_COUNT = 200
SYNTH_SIZE = (96, 96)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture(scope="session")
def synth_bins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``binwatch data synth --count 200 --mismatch 0.2`` (small images): bin-images/, metadata/,
    manifest-mismatch/ (20% of bins state a wrong quantity) and mismatch.json."""
    from training.data.synth import synthesize

    out = tmp_path_factory.mktemp("synth") / "bins"
    synthesize(out, SYNTH_COUNT, 5, seed=7, mismatch=0.2, size=SYNTH_SIZE, progress=False)
    return out


@pytest.fixture()
def replay_copy(synth_bins: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic bins (tests may corrupt or delete files in it)."""
    dst = tmp_path / "replay"
    shutil.copytree(synth_bins, dst)
    return dst


def agent_config(
    *,
    bundle: Optional[Path],
    state_dir: Path,
    broker: str,
    replay: Optional[Path] = None,
    manifest: Optional[Path] = None,
    cameras: Optional[list[dict[str, Any]]] = None,
    **sections: dict[str, Any],
):
    """An AgentConfig for tests: fast reconnects, frequent stats, any free HTTP port."""
    from agent.config import AgentConfig

    data: dict[str, Any] = {
        "agent": {"site": "s1", "device": "d1", "state_dir": str(state_dir)},
        "mqtt": {
            "broker": broker,
            "reconnect_min_delay": 0.2,
            "reconnect_max_delay": 1.0,
            "keepalive": 5,
            "stats_interval_s": 0.5,
            "stop_drain_s": 10,
        },
        "model": {
            "bundle": str(bundle) if bundle else None,
            "backend": "onnxruntime",
            "threads": 1,
            "batch": 4,
        },
        "http": {"port": 0},
    }
    cams = list(cameras or [])
    if replay is not None:
        cams.insert(0, {"name": "replay", "source": str(replay), "kind": "replay"})
    data["cameras"] = cams
    if manifest is not None:
        data["manifest"] = {"dir": str(manifest)}
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return AgentConfig.model_validate(data)


@pytest.fixture()
def make_runtime() -> Iterator[Any]:
    """``make_runtime(cfg, **kw)`` -> a started Runtime, stopped at teardown."""
    from agent.runtime import Runtime

    made: list[Runtime] = []

    def make(cfg: Any, start: bool = True, **kw: Any) -> Runtime:
        rt = Runtime(cfg, **kw)
        made.append(rt)
        if start:
            rt.start()
        return rt

    yield make
    for rt in made:
        rt.stop()


def event_camera(source: Path, *, name: str = "cam0", rate: float = 30) -> dict[str, Any]:
    """A looping replay camera in event mode: stands in for a live camera that sees bins on demand."""
    return {
        "name": name,
        "source": str(source),
        "kind": "replay",
        "loop": True,
        "replay_rate": rate,
        "drop_frames": True,
        "trigger": "event",
    }


@pytest.fixture()
def state_dir(tmp_path: Path) -> Path:
    """The agent's state dir for this test (created by the agent)."""
    return tmp_path / "state"


@pytest.fixture()
def verdict_log(state_dir: Path) -> Callable[[], list[dict[str, Any]]]:
    """``verdict_log()``: the verdicts the agent's log in ``state_dir`` holds now."""
    from agent.delivery.records import read_verdicts

    return lambda: read_verdicts(state_dir / "verdicts.jsonl")


@pytest.fixture()
def e2e_config(tiny_bundle: Path, state_dir: Path) -> Callable[..., Any]:
    """``e2e_config(broker_url, **kw)``: :func:`agent_config` with the tiny bundle and
    ``state_dir``; ``mismatched=FOLDER`` replays FOLDER against its partly wrong manifest
    (``FOLDER/manifest-mismatch``)."""

    def make(broker: str, *, mismatched: Optional[Path] = None, **kw: Any) -> Any:
        if mismatched is not None:
            kw.update(replay=mismatched, manifest=mismatched / "manifest-mismatch")
        return agent_config(bundle=tiny_bundle, state_dir=state_dir, broker=broker, **kw)

    return make


@pytest.fixture()
def collector(mosquitto: Any) -> Iterator[Collector]:
    """A subscriber on ``binwatch/#`` of the ``mosquitto`` broker, subscribed before the test runs."""
    col = Collector(mosquitto.url, "binwatch/#")
    try:
        yield col
    finally:
        col.close()


@pytest.fixture()
def persistent_broker(tmp_path: Path) -> Iterator[PersistentMosquitto]:
    """A started mosquitto that keeps sessions and queued messages across ``stop()``/``start()``."""
    broker = PersistentMosquitto(tmp_path / "broker")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture()
def persistent_alerts(persistent_broker: PersistentMosquitto) -> Iterator[Collector]:
    """A persistent-session subscriber on the alerts of ``persistent_broker``: it misses nothing
    published while it reconnects after a broker restart."""
    col = Collector(persistent_broker.url, f"{ROOT}/alert/mismatch", persistent=True)
    try:
        yield col
    finally:
        col.close()
