"""``binwatch deploy serve`` + ``push`` + ``status`` with three REAL agent runtimes (devices d1..d3 of
site s1, each with its own state dir and trust list) on a real mosquitto: the agents fetch the
signed bundle over HTTP from ``deploy serve``, check it and switch; ``status`` then shows every
device active on the new version. No fakes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from binwatch.cli import app
from contract.signing import generate_keypair, sign_bundle
from tests.agent.bundles import make_tiny_bundle
from tests.agent.mqtt_helpers import wait_until
from tests.deploy.test_push import signed_tar
from tests.deploy.test_serve import deploy_serve

pytestmark = pytest.mark.mqtt

DEVICES = ["d1", "d2", "d3"]


@pytest.fixture()
def serve(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """``binwatch deploy serve`` on a free port: (its folder, its URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    with deploy_serve(folder, tmp_path / "serve.log") as port:
        yield folder, f"http://127.0.0.1:{port}"


@pytest.fixture()
def agents(mosquitto: Any, tmp_path: Path) -> Iterator[tuple[dict[str, Any], Path]]:
    """Three running agents on a signed version 1; yields them and the signed version 2 .tar (same key)."""
    from agent.runtime import Runtime
    from tests.agent.conftest import agent_config

    private, public = generate_keypair()
    (tmp_path / "release.key").write_bytes(private)
    (tmp_path / "release.pub").write_bytes(public)
    v1 = make_tiny_bundle(tmp_path / "v1", version=1)
    sign_bundle(v1, tmp_path / "release.key")
    v2 = signed_tar(tmp_path / "release", 2, key=tmp_path / "release.key")
    runtimes: dict[str, Any] = {}
    try:
        for device in DEVICES:
            cfg = agent_config(
                bundle=v1,
                state_dir=tmp_path / device / "state",
                broker=mosquitto.url,
                agent={"device": device},
                model={"trusted_keys": [str(tmp_path / "release.pub")]},
                update={"retry_min_s": 0.1},
            )
            runtimes[device] = Runtime(cfg)
            runtimes[device].start()
        assert wait_until(lambda: all(rt.link.connected for rt in runtimes.values()))
        yield runtimes, v2
    finally:
        for rt in runtimes.values():
            rt.stop()


def test_push_with_a_canary_updates_three_real_agents_and_status_shows_them_active(
    mosquitto: Any, agents: tuple[dict[str, Any], Path], serve: tuple[Path, str], tmp_path: Path
) -> None:
    runtimes, v2 = agents
    folder, url = serve
    state_file = tmp_path / "rollout.json"
    runner = CliRunner()
    argv = [
        "deploy", "push", str(v2), "--site", "s1", "--devices", ",".join(DEVICES), "--canary", "1",
        "--publish-dir", str(folder), "--url-base", url, "--stage-timeout", "90",
        "--broker", mosquitto.url, "--state", str(state_file), "--wait", "0.5",
    ]  # fmt: skip
    result = runner.invoke(app, argv, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "canary: d1; stage 2: d2, d3" in result.output
    assert "done: 3 device(s) active on version 2" in result.output
    state = json.loads(state_file.read_text())
    assert list(folder.iterdir()) == [folder / Path(state["bundle"]["url"]).name]  # published, then fetched
    for device, rt in runtimes.items():
        assert rt.store.current.card.version == 2, device
    # the agents' retained status and model/reported, as deploy status shows them
    status = runner.invoke(app, ["deploy", "status", "--site", "s1", "--broker", mosquitto.url, "--json"])
    assert status.exit_code == 0, status.output
    rows = {r["device"]: r for r in json.loads(status.stdout)}
    assert sorted(rows) == DEVICES
    for device in DEVICES:
        row = rows[device]
        assert (row["online"], row["version"], row["update"], row["desired"]) == ("online", 2, "active", 2), (
            row
        )
        assert row["rollout"] == state["rollout_id"]


def test_a_download_that_fails_for_a_while_does_not_fail_the_rollout(
    mosquitto: Any, agents: tuple[dict[str, Any], Path], serve: tuple[Path, str], tmp_path: Path
) -> None:
    """The served file appears only after the agents' first attempts (404): they report
    ``downloading`` with the error and retry with backoff, and the rollout completes; a retried
    download is not a failed device (it fails only when its stage times out)."""
    import shutil
    import threading

    runtimes, v2 = agents
    folder, url = serve
    late = folder / "late.tar"
    argv = [
        "deploy", "push", str(v2), "--site", "s1", "--devices", ",".join(DEVICES), "--canary", "1",
        "--bundle-url", f"{url}/late.tar", "--stage-timeout", "90",
        "--broker", mosquitto.url, "--state", str(tmp_path / "rollout.json"), "--wait", "0.5",
    ]  # fmt: skip
    out: dict[str, Any] = {}
    pusher = threading.Thread(
        target=lambda: out.update(r=CliRunner().invoke(app, argv, env={"COLUMNS": "200"}))
    )
    pusher.start()
    d1 = runtimes["d1"]
    retried = wait_until(
        lambda: d1.updater is not None and d1.updater.failed == 0 and _retrying(mosquitto), timeout=60
    )
    assert retried, "the canary never reported a failing download"
    shutil.copyfile(v2, late)  # the file reaches the server
    pusher.join(120)
    result = out["r"]
    assert result.exit_code == 0, result.output
    assert "done: 3 device(s) active on version 2" in result.output
    assert all(rt.store.current.card.version == 2 for rt in runtimes.values())


def _retrying(mosquitto: Any) -> bool:
    from tests.agent.mqtt_helpers import retained

    raw = retained(mosquitto.url, "binwatch/v1/s1/d1/model/reported", 1.0)
    if not raw:
        return False
    report = json.loads(raw)
    return report["state"] == "downloading" and "retry in" in report.get("detail", "")
