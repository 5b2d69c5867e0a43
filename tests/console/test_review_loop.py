"""The whole loop on synthetic bins (issue 12): a trained run's bundle -> an agent replaying frames
against a wrong manifest -> alerts and their pictures in the console's store -> a review of each
-> ``binwatch console export`` layout -> ``binwatch train --init`` fine-tunes from the first run ->
a new bundle.

Real parts: mosquitto, the agent runtime with ONNX Runtime, the console store (SQLite) and ingest,
torch training and export as ``python -m binwatch`` processes. Synthetic bins: a pipeline check,
not an accuracy figure. Reviews are made from the synthetic ground truth, standing in for a person.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.hw import REPO, requires_mosquitto

pytestmark = requires_mosquitto
pytest.importorskip("torch", reason="the loop trains: pip install -e '.[train,export]'")
pytest.importorskip("sqlalchemy", reason="the console store: pip install -e '.[console]'")


def _binwatch(*args: Any, timeout: float = 900) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-m", "binwatch", *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, (
        f"binwatch {' '.join(map(str, args))}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


def _truth(data: Path, bin_id: str) -> int:
    return int(json.loads((data / "metadata" / f"{bin_id}.json").read_text())["EXPECTED_QUANTITY"])


def _run_agent(bundle: Path, data: Path, state: Path, broker: str) -> set[str]:
    """Replay ``data`` against its wrong manifest to the end; the mismatch alert ids decided."""
    from agent.delivery.records import read_verdicts
    from agent.runtime import Runtime
    from tests.agent.conftest import agent_config

    cfg = agent_config(
        bundle=bundle,
        state_dir=state,
        broker=broker,
        replay=data,
        manifest=data / "manifest-mismatch",
        snapshots={"enabled": True, "publish": True},
    )
    rt = Runtime(cfg, exit_when_done=True)
    rt.start()
    assert rt.run() == 0
    return {v["alert_id"] for v in read_verdicts(state / "verdicts.jsonl") if v["verdict"] == "mismatch"}


def _review_all(store: Any, data: Path, alert_ids: set[str]) -> dict[str, int]:
    """One review per alert from the ground truth: confirmed with the true count, or a false alarm."""
    from contract.base import utcnow
    from contract.reviews import Review

    labels = {}
    for alert_id in sorted(alert_ids):
        row = store.alert(alert_id)
        a = row.alert
        truth = _truth(data, a.bin_id)
        wrong = truth != a.expected_qty
        store.add_review(
            Review(
                alert_id=a.alert_id,
                site=a.site,
                device=a.device,
                camera=a.camera,
                bin_id=a.bin_id,
                event_id=a.event_id,
                decision="confirmed" if wrong else "false_alarm",
                actual_qty=truth if wrong else None,
                reviewer="test",
                ts=utcnow(),
            )
        )
        labels[a.bin_id] = truth
    return labels


def test_alerts_to_reviews_to_export_to_finetune_to_bundle(
    mosquitto: Any, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from console.export import export_reviews
    from console.images import FolderImages
    from console.ingest import Ingest
    from console.store import ConsoleStore
    from contract.card import load_card
    from mqttconn.config import BrokerConfig
    from tests.agent.mqtt_helpers import wait_until
    from tests.fixtures_train import INPUT, MAX_ITEMS, make_trained_run, synth_dir
    from training.data.synth import synthesize

    parent = make_trained_run(tmp_path_factory.mktemp("trained"))  # shared by the session
    data = tmp_path / "bins"  # held out: another seed than the run's training bins
    synthesize(data, 120, MAX_ITEMS, seed=31, mismatch=0.25, size=(64, 64), progress=False)
    run = tmp_path / "parent"
    shutil.copytree(parent, run, ignore=shutil.ignore_patterns("checkpoint.pt", "tb"))
    _binwatch(
        "export",
        "bundle",
        run,
        "--out",
        tmp_path / "b1",
        "--calib",
        synth_dir(parent),
        "--n",
        64,
        "--eval",
        data,
    )

    store = ConsoleStore.open(f"sqlite:///{tmp_path / 'console.db'}", FolderImages(tmp_path / "images"))
    ingest = Ingest(BrokerConfig(broker=mosquitto.url), store)
    ingest.start()
    try:
        assert wait_until(lambda: ingest.connected)
        decided = _run_agent(tmp_path / "b1", data, tmp_path / "state", mosquitto.url)
        assert decided, "the agent raised no alert on a manifest with 25% wrong quantities"
        assert wait_until(
            lambda: all((r := store.alert(i)) is not None and r.has_snapshot for i in decided), timeout=60
        ), "alerts or their pictures did not reach the console"
        labels = _review_all(store, data, decided)
        summary = export_reviews(store, tmp_path / "reviewed")
    finally:
        ingest.stop()
    assert summary.items == len(decided)
    exported = [
        json.loads(p.read_text()) for p in sorted((tmp_path / "reviewed" / "metadata").glob("*.json"))
    ]
    assert len(exported) == len(decided)
    assert sorted(m["EXPECTED_QUANTITY"] for m in exported) == sorted(labels.values())  # the reviewed counts
    _binwatch("data", "stats", tmp_path / "reviewed")

    child = tmp_path / "child"
    _binwatch(
        "train", "--data", tmp_path / "reviewed", "--init", run, "--out", child,
        "--arch", "resnet18", "--max-count", MAX_ITEMS, "--img-size", INPUT, "--epochs", 1,
        "--batch-size", 8, "--split-ratios", "0.8,0.2,0", "--workers", 0, "--no-progress", "--no-tensorboard",
    )  # fmt: skip
    card = load_card(child)
    assert (
        card.trained_from.parent is not None
        and card.trained_from.parent.run_id == load_card(run).trained_from.run_id
    )
    _binwatch(
        "export", "bundle", child, "--out", tmp_path / "b2", "--calib", tmp_path / "reviewed", "--n", 16
    )
    _binwatch("export", "verify", tmp_path / "b2")
