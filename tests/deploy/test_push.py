"""``binwatch deploy push|rollback|status`` against a real mosquitto, with simulated devices
(``tests/deploy/fake_devices.py``: a test fake at the model/desired -> model/reported seam).

Proves: the canary goes first and alone, then each stage only after the previous one is active; a
failing canary halts the rollout and gives every moved device its previous retained desired state
(or clears it); failures beyond --max-failures (a count or a fraction) halt and roll back; a device
that never answers times out; --soak catches a device whose trial rolls it back after active; --resume
continues an interrupted rollout without moving a device twice; rollback undoes a completed one;
--all and --group choose the devices; status shows the fleet. The real agents are in
test_push_agents.py, bad input in test_push_input.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest
from click.testing import Result
from typer.testing import CliRunner

from binwatch.cli import app
from contract.messages import ModelDesired
from contract.signing import generate_keypair, sign_bundle
from tests.agent.bundles import make_tiny_bundle
from tests.agent.mqtt_helpers import publish, retained, wait_until
from tests.deploy.fake_devices import FakeDevices

pytestmark = pytest.mark.mqtt

runner = CliRunner()
SITE = "s1"


def signed_tar(root: Path, version: int, key: Optional[Path] = None) -> Path:
    """A tiny bundle of ``version`` signed with ``key`` (a new one when None), tarred from inside
    its folder (as docs/deploy.md says)."""
    root.mkdir(parents=True, exist_ok=True)
    if key is None:
        key = root / "release.key"
        key.write_bytes(generate_keypair()[0])
    folder = make_tiny_bundle(root / f"v{version}", version=version)
    sign_bundle(folder, key)
    out = root / f"v{version}.tar"
    with tarfile.open(out, "w") as tar:
        for p in sorted(folder.rglob("*")):
            tar.add(p, arcname=p.relative_to(folder).as_posix(), recursive=False)
    return out


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return signed_tar(tmp_path_factory.mktemp("bundle"), 2)


@pytest.fixture()
def fakes(mosquitto: Any) -> Iterator[list[FakeDevices]]:
    made: list[FakeDevices] = []
    yield made
    for f in made:
        f.close()


def deploy(*args: Any, code: int = 0) -> Result:
    result = runner.invoke(app, ["deploy", *map(str, args)], env={"COLUMNS": "200"})
    assert result.exit_code == code, (args, result.output)
    return result


def push_args(mosquitto: Any, bundle: Path, state: Path, *extra: Any) -> list[Any]:
    return [
        "push", bundle, "--site", SITE, "--broker", mosquitto.url, "--bundle-url", bundle,
        "--state", state, "--wait", "0.3", *extra,
    ]  # fmt: skip


def desired_on_broker(mosquitto: Any, device: str) -> Optional[bytes]:
    return retained(mosquitto.url, f"binwatch/v1/{SITE}/{device}/model/desired", timeout=1.0)


def previous_state(version: int = 1) -> bytes:
    return ModelDesired(
        version=version,
        bundle_url="http://old.example/tiny-v1.tar",
        sha256="1" * 64,
        signature="A" * 86 + "==",
        rollout_id="r-before",
    ).to_json_bytes()


def same_desired(raw: Optional[bytes], expected: bytes) -> bool:
    """The restored state is the previous one (``rollback`` may be set where the contract has it)."""
    if raw is None:
        return False
    got, want = ModelDesired.parse(raw).to_dict(), ModelDesired.parse(expected).to_dict()
    got.pop("rollback", None)
    want.pop("rollback", None)
    return got == want


def test_the_canary_goes_first_then_each_stage_after_the_previous_one_is_active(
    mosquitto: Any, fakes: list[FakeDevices], bundle: Path, tmp_path: Path
) -> None:
    devices = ["d1", "d2", "d3", "d4"]
    fake = FakeDevices(mosquitto.url, SITE, devices)
    fakes.append(fake)
    state_file = tmp_path / "rollout.json"
    out = deploy(*push_args(mosquitto, bundle, state_file, "--devices", ",".join(devices), "--stages", "50%"))
    assert "canary: d1; stage 2: d2; stage 3: d3, d4" in out.stdout
    assert "done: 4 device(s) active on version 2" in out.stdout
    # stage by stage: each device of a stage got the desired state after the last one before was active
    assert fake.first_received("d2", 2) >= fake.answered_at("d1", "active")
    for later in ("d3", "d4"):
        assert fake.first_received(later, 2) >= fake.answered_at("d2", "active")
    state = json.loads(state_file.read_text())
    assert state["status"] == "completed" and state["stage"] == 3
    assert {d: r["result"] for d, r in state["devices"].items()} == dict.fromkeys(devices, "active")
    desired = ModelDesired.parse(desired_on_broker(mosquitto, "d4") or b"")
    assert desired.version == 2 and desired.rollout_id == state["rollout_id"]
    assert (
        desired.bundle_url == str(bundle)
        and desired.signature == (bundle.parent / "v2" / "MANIFEST.sig").read_text()
    )


def test_a_failing_canary_halts_and_every_moved_device_gets_its_previous_desired_state_back(
    mosquitto: Any, fakes: list[FakeDevices], bundle: Path, tmp_path: Path
) -> None:
    before = previous_state()
    publish(mosquitto.url, f"binwatch/v1/{SITE}/d2/model/desired", before, retain=True)
    fake = FakeDevices(mosquitto.url, SITE, ["d1", "d2", "d3"], fail=("d2",))
    fakes.append(fake)
    state_file = tmp_path / "rollout.json"
    out = deploy(*push_args(mosquitto, bundle, state_file, "--devices", "d1,d2,d3", "--canary", "2"), code=1)
    assert "halted: canary d2 failed: fake: refused" in out.stdout
    # d2 had a desired state: restored; d1 had none: cleared (the agent keeps its model); d3 untouched
    assert same_desired(desired_on_broker(mosquitto, "d2"), before)
    assert desired_on_broker(mosquitto, "d1") is None
    assert wait_until(lambda: fake.got("d1")[-1:] == [None], timeout=5)
    assert fake.got("d3") == []
    state = json.loads(state_file.read_text())
    assert state["status"] == "rolled_back" and state["halt_reason"].startswith("canary d2 failed")
    assert state["devices"]["d2"]["previous"] == before.decode()
    assert state["devices"]["d1"]["previous"] is None
    assert [d for d, r in state["devices"].items() if r["rolled_back"]] == ["d1", "d2"]


@pytest.mark.parametrize("threshold", ["1", "0.2"])
def test_failures_beyond_the_threshold_halt_and_roll_back(
    mosquitto: Any, fakes: list[FakeDevices], bundle: Path, tmp_path: Path, threshold: str
) -> None:
    devices = [f"d{i}" for i in range(1, 7)]  # canary d1; 50%: d2 d3; 100%: d4 d5 d6
    fake = FakeDevices(mosquitto.url, SITE, devices, fail=("d3", "d4"))
    fakes.append(fake)
    state_file = tmp_path / "rollout.json"
    args = ("--devices", ",".join(devices), "--stages", "50%,100%", "--max-failures", threshold)
    out = deploy(*push_args(mosquitto, bundle, state_file, *args), code=1)
    assert "tolerated failures: 1" in out.stdout
    assert "halted: 2 device(s) failed, more than the 1 allowed" in out.stdout
    state = json.loads(state_file.read_text())
    assert state["stage"] == 2 and state["status"] == "rolled_back"  # stage 2 (one failure) passed
    assert all(r["moved"] and r["rolled_back"] for r in state["devices"].values())
    for d in devices:
        assert desired_on_broker(mosquitto, d) is None


def test_failures_within_the_threshold_complete_the_rollout(
    mosquitto: Any, fakes: list[FakeDevices], bundle: Path, tmp_path: Path
) -> None:
    fake = FakeDevices(mosquitto.url, SITE, ["d1", "d2", "d3"], fail=("d3",))
    fakes.append(fake)
    out = deploy(
        *push_args(mosquitto, bundle, tmp_path / "r.json", "--devices", "d1,d2,d3", "--max-failures", "1")
    )
    assert "done: 2 device(s) active on version 2; failed, within --max-failures: d3" in out.stdout


def test_a_device_that_never_answers_times_out(
    mosquitto: Any, fakes: list[FakeDevices], bundle: Path, tmp_path: Path
) -> None:
    fakes.append(FakeDevices(mosquitto.url, SITE, ["d1", "d2"], silent=("d1",)))
    args = ("--devices", "d1,d2", "--stage-timeout", "1")
    out = deploy(*push_args(mosquitto, bundle, tmp_path / "r.json", *args), code=1)
    assert "halted: canary d1 timeout: no result within 1 s" in out.stdout


def test_soak_catches_a_device_that_rolls_back_after_active(
    mosquitto: Any, fakes: list[FakeDevices], bundle: Path, tmp_path: Path
) -> None:
    fake = FakeDevices(mosquitto.url, SITE, ["d1", "d2"], trial_fail=("d1",))
    fakes.append(fake)
    args = ("--devices", "d1,d2", "--soak", "5")
    out = deploy(*push_args(mosquitto, bundle, tmp_path / "r.json", *args), code=1)
    assert "halted: canary d1 failed: rolled back: fake: trial failed (health check)" in out.stdout
    assert fake.got("d2") == []


def test_resume_continues_an_interrupted_rollout(
    mosquitto: Any, fakes: list[FakeDevices], bundle: Path, tmp_path: Path
) -> None:
    fake = FakeDevices(mosquitto.url, SITE, ["d1", "d2", "d3"], hold=("d1",))
    fakes.append(fake)
    state_file = tmp_path / "rollout.json"
    cmd = [sys.executable, "-m", "binwatch.cli", "deploy"]
    cmd += [str(a) for a in push_args(mosquitto, bundle, state_file, "--devices", "d1,d2,d3")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_until(lambda: fake.got("d1"), timeout=30), "the canary got no desired state"
        proc.send_signal(signal.SIGINT)  # Ctrl-C while the canary is updating
        output, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, output
    assert f"binwatch deploy push --resume {state_file}" in output
    saved = json.loads(state_file.read_text())
    assert saved["status"] == "running" and saved["stage"] == 0
    assert saved["devices"]["d1"]["moved"] and not saved["devices"]["d2"]["moved"]
    fake.release("d1")  # the canary finishes while nobody watches
    out = deploy("push", "--resume", state_file, "--broker", mosquitto.url, "--wait", "0.3")
    assert "done: 3 device(s) active on version 2" in out.stdout
    assert len(fake.got("d1")) == 1  # not published again
    assert fake.first_received("d2", 2) >= fake.answered_at("d1", "active")
    again = deploy("push", "--resume", state_file, code=2)
    assert "nothing to resume: it completed" in again.output


def test_rollback_undoes_a_completed_rollout(
    mosquitto: Any, fakes: list[FakeDevices], bundle: Path, tmp_path: Path
) -> None:
    before = previous_state()
    publish(mosquitto.url, f"binwatch/v1/{SITE}/d1/model/desired", before, retain=True)
    fakes.append(FakeDevices(mosquitto.url, SITE, ["d1", "d2"]))
    state_file = tmp_path / "rollout.json"
    deploy(*push_args(mosquitto, bundle, state_file, "--devices", "d1,d2"))
    assert ModelDesired.parse(desired_on_broker(mosquitto, "d1") or b"").version == 2
    out = deploy("rollback", state_file, "--broker", mosquitto.url, "--wait", "0.3")
    assert "rolled back 2 device(s)" in out.stdout
    assert same_desired(desired_on_broker(mosquitto, "d1"), before)
    assert desired_on_broker(mosquitto, "d2") is None
    assert json.loads(state_file.read_text())["status"] == "rolled_back"
    assert "nothing to roll back" in deploy("rollback", state_file).stdout


def test_all_takes_the_online_devices_and_group_the_inventory_members(
    mosquitto: Any, fakes: list[FakeDevices], bundle: Path, tmp_path: Path
) -> None:
    fake = FakeDevices(mosquitto.url, SITE, ["d1", "d2", "d3"], states={"d3": "offline"})
    fakes.append(fake)
    out = deploy(*push_args(mosquitto, bundle, tmp_path / "all.json", "--all"))
    assert "skipped d3 (status offline)" in out.stdout and "done: 2 device(s)" in out.stdout
    assert fake.got("d3") == []
    inventory = tmp_path / "devices.txt"
    inventory.write_text("# SITE/DEVICE [GROUP ...]\ns1/d1 aisle-a\ns1/d2\ns1/d3 aisle-a\ns2/d1 aisle-a\n")
    v3 = signed_tar(tmp_path / "v3", 3)
    out = deploy(
        *push_args(mosquitto, v3, tmp_path / "g.json", "--group", "aisle-a", "--inventory", inventory)
    )
    assert "canary: d1; stage 2: d3" in out.stdout
    assert [d.version for d in fake.got("d2") if d] == [2]  # not a member: left on version 2


def test_status_shows_every_device_of_the_site(
    mosquitto: Any, fakes: list[FakeDevices], bundle: Path, tmp_path: Path
) -> None:
    fake = FakeDevices(mosquitto.url, SITE, ["d1", "d2"], states={"d2": "stopped"}, fail=("d2",))
    fakes.append(fake)
    deploy(*push_args(mosquitto, bundle, tmp_path / "r.json", "--devices", "d1,d2", "--canary", "0",
                      "--max-failures", "1"))  # fmt: skip
    rows = json.loads(deploy("status", "--site", SITE, "--broker", mosquitto.url, "--json").stdout)
    by_device = {r["device"]: r for r in rows}
    assert by_device["d1"]["online"] == "online" and by_device["d1"]["version"] == 2
    assert by_device["d1"]["update"] == "active" and by_device["d1"]["desired"] == 2
    assert by_device["d2"]["online"] == "stopped" and by_device["d2"]["version"] == 1
    assert by_device["d2"]["update"] == "failed" and "fake: refused" in by_device["d2"]["detail"]
    table = deploy("status", "--site", SITE, "--broker", mosquitto.url).stdout
    assert "devices of site s1" in table and "v2 active" in table and "stopped" in table
