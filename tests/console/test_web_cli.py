"""``binwatch console user add|export`` and the help of every console command (typer's CliRunner,
real store in tmp_path)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.console.browser import skip_without_console_extra

skip_without_console_extra()

from typer.testing import CliRunner  # noqa: E402

from binwatch.cli import app as root  # noqa: E402
from console.web.auth import verify_password  # noqa: E402
from console.web.server import open_store  # noqa: E402
from contract import Review  # noqa: E402
from tests.agent.mqtt_helpers import make_alert  # noqa: E402

JPEG = b"\xff\xd8\xff\xe0" + b"binwatch cli test" * 8 + b"\xff\xd9"


def run(*args: str, input: str | None = None) -> object:
    return CliRunner().invoke(root, ["console", *args], input=input)


@pytest.mark.parametrize(
    "cmd", [[], ["serve"], ["user"], ["user", "add"], ["user", "passwd"], ["user", "remove"], ["export"]]
)
def test_every_command_has_help(cmd: list[str]) -> None:
    r = run(*cmd, "--help")
    assert r.exit_code == 0 and "Usage" in r.output  # type: ignore[attr-defined]


def test_user_add_prompts_and_hashes(tmp_path: Path) -> None:
    r = run("user", "add", "ana", "--data-dir", str(tmp_path), input="a long password\na long password\n")
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    store = open_store(f"sqlite:///{tmp_path / 'console.db'}", str(tmp_path / "images"))
    try:
        password_hash, role = store.user("ana")  # type: ignore[misc]
    finally:
        store.close()
    assert role == "reviewer" and password_hash.startswith("$argon2id$")
    assert verify_password(password_hash, "a long password") and not verify_password(password_hash, "x")
    bad_role = run("user", "add", "bob", "--role", "admin", "--data-dir", str(tmp_path))
    assert bad_role.exit_code == 2 and "use one of reviewer, viewer" in bad_role.output  # type: ignore[attr-defined]


def test_user_passwd_and_remove(tmp_path: Path) -> None:
    d = str(tmp_path)
    assert run("user", "add", "ana", "--data-dir", d, input="first password\nfirst password\n").exit_code == 0  # type: ignore[attr-defined]
    r = run("user", "passwd", "ana", "--data-dir", d, input="second password\nsecond password\n")
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    store = open_store(f"sqlite:///{tmp_path / 'console.db'}", str(tmp_path / "images"))
    try:
        password_hash, _role = store.user("ana")  # type: ignore[misc]
        assert verify_password(password_hash, "second password")
        assert not verify_password(password_hash, "first password")
    finally:
        store.close()
    gone = run("user", "passwd", "bob", "--data-dir", d, input="x password\nx password\n")
    assert gone.exit_code == 1 and "no user 'bob'" in gone.output  # type: ignore[attr-defined]
    assert run("user", "remove", "ana", "--data-dir", d).exit_code == 0  # type: ignore[attr-defined]
    again = run("user", "remove", "ana", "--data-dir", d)
    assert again.exit_code == 1 and "nothing removed" in again.output  # type: ignore[attr-defined]
    store = open_store(f"sqlite:///{tmp_path / 'console.db'}", str(tmp_path / "images"))
    try:
        assert store.user("ana") is None
    finally:
        store.close()


def test_export_writes_the_abid_layout_and_says_what_next(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'console.db'}", str(tmp_path / "images"))
    a, b = make_alert(expected_qty=4), make_alert()
    try:
        for alert in (a, b):
            store.add_alert(alert)
            store.add_snapshot(alert.alert_id, JPEG)
        fields = {"site": "s1", "device": "d1", "camera": "cam0", "bin_id": "bin-1", "reviewer": "ana"}
        ts = a.frame_ts
        store.add_review(Review(alert_id=a.alert_id, decision="confirmed", actual_qty=3, ts=ts, **fields))
        store.add_review(Review(alert_id=b.alert_id, decision="cant_tell", ts=ts, **fields))
    finally:
        store.close()
    out = tmp_path / "export"
    r = run("export", "--out", str(out), "--data-dir", str(tmp_path))
    text = r.output  # type: ignore[attr-defined]
    assert r.exit_code == 0, text
    assert f"1 reviewed snapshot(s) in {out}" in text and "items per count: 3: 1" in text
    assert f"binwatch train --data {out} --init RUN_DIR" in text
    (meta,) = (out / "metadata").glob("*.json")
    assert json.loads(meta.read_text())["EXPECTED_QUANTITY"] == 3
    assert (out / "bin-images" / (meta.stem + ".jpg")).read_bytes() == JPEG


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("web:\n  hots: 0.0.0.0\n")
    r = run("serve", "--config", str(cfg))
    assert r.exit_code == 2 and "web.hots: unknown key" in r.output  # type: ignore[attr-defined]


def test_serve_names_a_bad_data_folder_and_database(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    r = run("serve", "--port", "0", "--data-dir", str(a_file / "sub"))
    text = r.output  # type: ignore[attr-defined]
    assert (
        r.exit_code == 1 and f"cannot use the data folder {a_file / 'sub'}" in text and "--data-dir" in text
    )
    db = "postgresql+psycopg://console:s3cret@127.0.0.1:1/console"
    r = run("serve", "--port", "0", "--data-dir", str(tmp_path / "d"), "--db", db)
    text = r.output  # type: ignore[attr-defined]
    assert r.exit_code == 1 and "cannot open the console database" in text and "--db" in text
    assert "s3cret" not in text and "console:***@127.0.0.1:1" in text
