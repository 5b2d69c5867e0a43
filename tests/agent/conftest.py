"""Fixtures for the agent tests: a tiny ONNX bundle (no torch), synthetic bins with a wrong
manifest for some of them, and agent configs/runtimes wired to a real broker."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.agent.bundles import make_tiny_bundle

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
