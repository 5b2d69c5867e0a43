"""Bad input to ``binwatch deploy push|rollback|status`` exits 2 with a message that names the
problem, before anything is published; and the plan itself (stages, threshold, inventory)."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from binwatch.cli import app
from deploy.plan import allowed_failures, parse_max_failures, parse_stages, plan_stages, read_inventory
from tests.agent.bundles import make_tiny_bundle
from tests.deploy.test_push import signed_tar

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("input")
    unsigned = make_tiny_bundle(root / "unsigned", version=2)
    with tarfile.open(root / "unsigned.tar", "w") as tar:
        for p in sorted(unsigned.rglob("*")):
            tar.add(p, arcname=p.relative_to(unsigned).as_posix(), recursive=False)
    (root / "notatar.tar").write_bytes(b"hello")
    (root / "other.tar").write_bytes(b"another file")
    (root / "garbage.json").write_text('{"kind": "something else"}')
    (root / "devices.txt").write_text("s1/d1 aisle-a\ns2/d9 aisle-b\n")
    return {
        "signed": signed_tar(root / "signed", 2),
        "folder": unsigned,
        "unsigned": root / "unsigned.tar",
        "notatar": root / "notatar.tar",
        "other": root / "other.tar",
        "garbage": root / "garbage.json",
        "inventory": root / "devices.txt",
        "missing": root / "missing.tar",
    }


def _push(files: dict[str, Path], *args: Any, bundle: str = "signed") -> tuple[int, str]:
    argv = ["deploy", "push", str(files[bundle]), "--site", "s1", *map(str, args)]
    r = runner.invoke(app, argv, env={"COLUMNS": "300"})
    return r.exit_code, " ".join(r.output.split())


OK_URL = ("--bundle-url", "http://127.0.0.1:9/b.tar")
CASES = [
    ((*OK_URL,), "signed", "choose the devices with one of --devices a,b, --group G or --all"),
    (("--devices", "d1", "--all", *OK_URL), "signed", "choose the devices with one of"),
    (("--group", "aisle-a", *OK_URL), "signed", "--group aisle-a needs --inventory FILE"),
    (("--devices", "d1/x", *OK_URL), "signed", "--devices: device"),
    (("--devices", "d1", *OK_URL), "folder", "is a folder: push a bundle .tar"),
    (("--devices", "d1", *OK_URL), "unsigned", "unsigned bundle (no MANIFEST.sig)"),
    (("--devices", "d1", *OK_URL), "notatar", "not a tar archive"),
    (("--devices", "d1", *OK_URL), "missing", "no such bundle file"),
    (("--devices", "d1", "--stages", "50%,10%", *OK_URL), "signed", "the shares must increase"),
    (("--devices", "d1", "--stages", "half", *OK_URL), "signed", "'half' is not a percentage"),
    (("--devices", "d1", "--max-failures", "1.5", *OK_URL), "signed", "--max-failures '1.5': give a count"),
    (("--devices", "d1", "--max-failures", "-1", *OK_URL), "signed", "--max-failures '-1': give a count"),
    (("--devices", "d1"), "signed", "say where devices fetch the bundle"),
    (("--devices", "d1", "--url-base", "http://h:8088"), "signed", "--url-base needs --publish-dir"),
    (("--devices", "d1", "--canary", "-1", *OK_URL), "signed", "Invalid value for '--canary'"),
    (("--devices", "d1", "--broker", "http://x", *OK_URL), "signed", "must start with mqtt:// or mqtts://"),
    (("--all", "--inventory", "{inventory}", "--group", "g", *OK_URL), "signed", "choose the devices"),
    (
        ("--group", "aisle-b", "--inventory", "{inventory}", *OK_URL),
        "signed",
        "no device of site s1 is in group",
    ),
]


@pytest.mark.parametrize(("args", "bundle", "message"), CASES)
def test_bad_push_input_exits_2_naming_the_problem(
    files: dict[str, Path], args: tuple[str, ...], bundle: str, message: str
) -> None:
    args = tuple(a.replace("{inventory}", str(files["inventory"])) for a in args)
    code, output = _push(files, *args, bundle=bundle)
    assert code == 2, output
    assert message in output


def test_a_local_bundle_url_must_hold_the_bundle(files: dict[str, Path], tmp_path: Path) -> None:
    code, output = _push(files, "--devices", "d1", "--bundle-url", files["other"])
    assert code == 2 and "holds another file than" in output
    code, output = _push(files, "--devices", "d1", "--bundle-url", "ftp://h/b.tar")
    assert code == 2 and "use a path, file:// or http(s):// URL" in output


def test_bad_site_state_files_and_resume_exit_2(files: dict[str, Path], tmp_path: Path) -> None:
    r = runner.invoke(app, ["deploy", "push", str(files["signed"]), "--site", "_fleet", "--devices", "d1"])
    assert r.exit_code == 2 and "reserved" in r.output
    r = runner.invoke(app, ["deploy", "push", "--resume", str(tmp_path / "none.json")])
    assert r.exit_code == 2 and "cannot read the rollout state" in r.output
    r = runner.invoke(app, ["deploy", "push", "--resume", str(files["garbage"])])
    assert r.exit_code == 2 and "not a binwatch rollout state" in r.output
    r = runner.invoke(app, ["deploy", "push", str(files["signed"]), "--resume", str(files["garbage"])])
    assert r.exit_code == 2 and "--resume continues a saved rollout" in r.output
    r = runner.invoke(app, ["deploy", "rollback", str(files["garbage"])])
    assert r.exit_code == 2 and "not a binwatch rollout state" in r.output
    r = runner.invoke(app, ["deploy", "push", "--site", "s1", "--devices", "d1"])
    assert r.exit_code == 2 and "give the bundle .tar to push" in r.output
    r = runner.invoke(app, ["deploy", "status", "--site", "a/b"])
    assert r.exit_code == 2 and "--site" in r.output


@pytest.mark.mqtt
def test_all_with_no_online_device_exits_2(mosquitto: Any, files: dict[str, Path]) -> None:
    code, output = _push(files, "--all", *OK_URL, "--broker", mosquitto.url, "--wait", "0.2")
    assert code == 2 and "--all: no device of site s1 has a retained status 'online'" in output


def test_an_unreachable_broker_exits_1(files: dict[str, Path]) -> None:
    from tests.broker import free_port

    code, output = _push(files, "--devices", "d1", *OK_URL, "--broker", f"mqtt://127.0.0.1:{free_port()}")
    assert code == 1 and "cannot connect to mqtt://127.0.0.1" in output


def test_the_plan() -> None:
    devices = [f"d{i}" for i in range(10)]
    assert plan_stages(devices, 1, parse_stages("10%,50%,100%")) == [["d0"], devices[1:5], devices[5:]]
    assert plan_stages(devices, 0, parse_stages("10%,50%")) == [["d0"], devices[1:5], devices[5:]]
    assert plan_stages(devices[:2], 5, [1.0]) == [devices[:2]]
    assert plan_stages(devices[:3], 1, parse_stages("34%")) == [["d0"], ["d1"], ["d2"]]
    assert parse_stages("25%, 100%") == [0.25, 1.0]
    assert [allowed_failures(parse_max_failures(t), 10) for t in ("0", "2", "0.1", "25%", "0.05")] == [
        0,
        2,
        1,
        2,
        0,
    ]


def test_the_inventory(files: dict[str, Path], tmp_path: Path) -> None:
    assert read_inventory(files["inventory"], "s1") == ["d1"]
    assert read_inventory(files["inventory"], "s2", "aisle-b") == ["d9"]
    bad = tmp_path / "bad.txt"
    bad.write_text("just-a-device\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: 'just-a-device' is not SITE/DEVICE"):
        read_inventory(bad, "s1")
