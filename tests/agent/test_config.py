"""Agent config: YAML + BINWATCH__* environment + secrets from files; errors name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli import app, build_overrides
from agent.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "agent" / "configs"


@pytest.mark.parametrize("name", ["usb.yaml", "jetson-csi.yaml", "rtsp.yaml", "replay.yaml"])
def test_sample_configs_are_valid(name: str) -> None:
    cfg = load_config(CONFIGS / name, env={})
    assert cfg.cameras, "every sample configures a camera"
    assert cfg.agent.site and cfg.agent.device


def test_sample_kinds_are_what_their_comments_say() -> None:
    kinds = {
        n: [c.resolved_kind for c in load_config(CONFIGS / n, env={}).cameras]
        for n in ("usb.yaml", "jetson-csi.yaml", "rtsp.yaml", "replay.yaml")
    }
    assert kinds == {
        "usb.yaml": ["v4l2"],
        "jetson-csi.yaml": ["csi"],
        "rtsp.yaml": ["url", "url"],
        "replay.yaml": ["replay"],
    }


def test_defaults_without_a_file() -> None:
    cfg = load_config(None, env={})
    assert cfg.http.host == "127.0.0.1"
    assert cfg.model.backend == "auto"
    assert cfg.cameras == []
    assert cfg.validate_for_run()  # no model, no camera: cannot run


def test_env_overrides_file_and_converts_types(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("agent: {site: dc1}\nhttp: {port: 9000}\ncameras:\n  - {name: c0, source: 0}\n")
    env = {
        "BINWATCH__HTTP__PORT": "9100",
        "BINWATCH__AGENT__DEVICE": "edge-9",
        "BINWATCH__MQTT__TLS__INSECURE": "true",
        "BINWATCH__CAMERAS__0__SOURCE": "rtsp://10.0.0.1/s",
        "BINWATCH__CAMERAS__1": '{"name": "c1", "source": "/dev/video1"}',
        "OTHER": "ignored",
    }
    cfg = load_config(f, env=env)
    assert cfg.http.port == 9100
    assert cfg.agent.site == "dc1" and cfg.agent.device == "edge-9"
    assert cfg.mqtt.tls.insecure is True
    assert [c.source for c in cfg.cameras] == ["rtsp://10.0.0.1/s", "/dev/video1"]
    assert [c.resolved_kind for c in cfg.cameras] == ["url", "v4l2"]


def test_flags_override_env_and_file(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("mqtt: {broker: 'mqtt://file:1883'}\ncameras:\n  - {name: c0, source: 0}\n")
    replay = tmp_path / "bins"
    (replay / "bin-images").mkdir(parents=True)
    over = build_overrides(
        broker="mqtt://flag:1883", replay=replay, replay_rate=5.0, manifest=tmp_path / "m.csv"
    )
    cfg = load_config(f, env={"BINWATCH__MQTT__BROKER": "mqtt://env:1883"}, overrides=over)
    assert cfg.mqtt.broker == "mqtt://flag:1883"
    assert [(c.name, c.resolved_kind, c.replay_rate) for c in cfg.cameras] == [("replay", "replay", 5.0)]
    assert cfg.manifest.csv == tmp_path / "m.csv" and cfg.manifest.dir is None


def test_secret_from_env_and_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    cfg = load_config(
        None, env={"BINWATCH__MQTT__USERNAME": "dev", "BINWATCH__MQTT__PASSWORD_FILE": str(secret)}
    )
    assert cfg.mqtt.resolve_password() == "s3cret"
    cfg = load_config(None, env={"BINWATCH__MQTT__USERNAME": "dev", "BINWATCH__MQTT__PASSWORD": "0123"})
    assert cfg.mqtt.resolve_password() == "0123"  # stays text (not the number 123)
    assert "0123" not in cfg.model_dump_json()  # masked when shown


@pytest.mark.parametrize(
    ("yaml_text", "env", "names"),
    [
        ("http: {port: 70000}\n", {}, ["http.port"]),
        ("mqtt: {brokr: 'mqtt://x:1'}\n", {}, ["mqtt.brokr", "unknown key"]),
        ("cameras:\n  - {name: 'bad/name', source: 0}\n", {}, ["cameras.0.name"]),
        (
            "decision: {mismatch_threshold: 0.9, match_threshold: 0.2}\n",
            {},
            ["decision", "mismatch_threshold"],
        ),
        ("{}\n", {"BINWATCH__MODEL__BATCH": "many"}, ["model.batch", "BINWATCH__MODEL__BATCH"]),
        ("agent: {site: '_fleet'}\n", {}, ["agent.site", "reserved"]),
    ],
)
def test_errors_name_the_offending_key(
    tmp_path: Path, yaml_text: str, env: dict[str, str], names: list[str]
) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(yaml_text)
    with pytest.raises(ConfigError) as e:
        load_config(f, env=env)
    for n in names:
        assert n in str(e.value)
    assert str(f) in str(e.value)


def test_unreadable_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml", env={})
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml", env={})
    (tmp_path / "broken.yaml").write_text("agent: {site: [\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_config(tmp_path / "broken.yaml", env={})


def test_duplicate_camera_names_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("cameras:\n  - {name: c, source: 0}\n  - {name: c, source: 1}\n")
    with pytest.raises(ConfigError, match="repeated: c"):
        load_config(f, env={})


def test_check_config_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["check-config", str(CONFIGS / "rtsp.yaml")])
    assert ok.exit_code == 0, ok.output
    assert "camera aisle4-top: url" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {backend: cuda}\n")
    res = runner.invoke(app, ["check-config", str(bad)])
    assert res.exit_code == 2
    assert "model.backend" in res.output
    assert "Traceback" not in res.output


def test_check_config_masks_url_passwords(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("cameras:\n  - {name: c, source: 'rtsp://user:hunter2@10.0.0.1:554/s'}\n")
    res = CliRunner().invoke(app, ["check-config", str(f)])
    assert res.exit_code == 0, res.output
    assert "hunter2" not in res.output and "user:***@10.0.0.1:554" in res.output


def test_run_without_model_or_camera_explains(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["run", "--state-dir", str(tmp_path / "st")])
    assert res.exit_code == 2
    assert "--model" in res.output and "--replay" in res.output


def test_run_with_a_broken_bundle_fails_cleanly(tmp_path: Path) -> None:
    from tests.broker import free_port

    (tmp_path / "bins" / "bin-images").mkdir(parents=True)
    (tmp_path / "notabundle").mkdir()
    res = CliRunner().invoke(
        app,
        [
            "run",
            "--model",
            str(tmp_path / "notabundle"),
            "--replay",
            str(tmp_path / "bins"),
            "--state-dir",
            str(tmp_path / "st"),
            "--broker",
            f"mqtt://127.0.0.1:{free_port()}",
            "--no-http",
        ],
    )
    assert res.exit_code == 2, res.output
    assert "no model card" in res.output and "Traceback" not in res.output


def test_validate_for_run_reports_every_missing_file(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    f = tmp_path / "a.yaml"
    f.write_text(
        f"""
mqtt:
  broker: mqtts://127.0.0.1:8883
  username: u
  password_file: {gone}/passwd
  tls: {{ca: {gone}/ca.pem, cert: {gone}/client.pem, key: {gone}/client.key}}
model: {{bundle: {gone}/bundle, trusted_keys: [{gone}/k1.pem, {gone}/k2.pem]}}
manifest: {{dir: {gone}/manifest, csv: {gone}/manifest.csv}}
cameras:
  - {{name: r, source: {gone}/bins, kind: replay}}
  - {{name: v, source: {gone}/clip.mp4, kind: file}}
  - {{name: p, source: 'replay:{gone}/other'}}
"""
    )
    problems = load_config(f, env={}).validate_for_run(env={})
    text = "\n".join(problems)
    for key in (
        "mqtt.tls.ca",
        "mqtt.tls.cert",
        "mqtt.tls.key",
        "mqtt.password_file",
        "model.bundle",
        "manifest.dir",
        "manifest.csv",
        "cameras[0] (r).source (replay folder)",
        "cameras[1] (v).source (video file)",
        "cameras[2] (p).source (replay folder)",
    ):
        assert key in text, key
    assert text.count("model.trusted_keys") == 2
    res = CliRunner().invoke(app, ["check-config", str(f)], env={"BINWATCH_ALLOW_FAKE_BACKEND": ""})
    assert res.exit_code == 0, res.output  # missing files are warnings: the file itself is valid
    assert res.output.count("warning:") == len(problems) == 12


def test_fake_backend_refused_outside_tests(tmp_path: Path) -> None:
    (tmp_path / "bins").mkdir()
    f = tmp_path / "a.yaml"
    f.write_text(f"model: {{backend: fake}}\ncameras:\n  - {{name: r, source: {tmp_path / 'bins'}}}\n")
    cfg = load_config(f, env={})
    assert any("for tests and demos" in p for p in cfg.validate_for_run(env={}))
    assert cfg.validate_for_run(env={"BINWATCH_ALLOW_FAKE_BACKEND": "1"}) == []
    runner = CliRunner()
    res = runner.invoke(app, ["check-config", str(f)], env={"BINWATCH_ALLOW_FAKE_BACKEND": ""})
    assert res.exit_code == 2 and "tests and demos" in res.output, res.output
    run = runner.invoke(
        app,
        ["run", "-c", str(f), "--state-dir", str(tmp_path / "st")],
        env={"BINWATCH_ALLOW_FAKE_BACKEND": ""},
    )
    assert run.exit_code == 2 and "tests and demos" in run.output, run.output
    ok = runner.invoke(app, ["check-config", str(f)], env={"BINWATCH_ALLOW_FAKE_BACKEND": "1"})
    assert ok.exit_code == 0, ok.output
