"""binwatch demo: the summary's arithmetic, a taken broker port, and one tiny run end to end."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from demo.calibrate import fit_threshold, fit_thresholds
from demo.summary import latency_ms, percentile, score_alerts
from tests.hw import requires_mosquitto

REPO = Path(__file__).resolve().parents[2]


def _alert(bin_id: str, n: int = 0) -> dict[str, object]:
    return {"bin_id": bin_id, "alert_id": f"{bin_id}-{n}"}


def test_score_counts_caught_missed_and_false_alarms() -> None:
    presented = [f"{i:05d}" for i in range(1, 21)]  # 20 bins
    wrong = ["00002", "00005", "00007", "00011", "99999"]  # 99999 was never presented
    alerts = [
        _alert("00002"),
        _alert("00002"),  # the same alert delivered twice (at least once)
        _alert("00002", 1),  # a second alert for the same bin
        _alert("00005"),
        _alert("00003"),  # a correct manifest: false alarm
        _alert("77777"),  # a bin the demo never showed
    ]
    s = score_alerts(alerts, presented, wrong)
    assert (s.bins, s.injected, s.correct) == (20, 4, 16)
    assert (s.caught, s.missed, s.false_alarms) == (2, 2, 1)
    assert s.caught_bins == ["00002", "00005"]
    assert s.missed_bins == ["00007", "00011"]
    assert s.false_alarm_bins == ["00003"]
    assert (s.alerts, s.unique_alerts, s.unknown_bins) == (6, 5, 1)
    assert s.recall == pytest.approx(0.5)
    assert s.false_alarm_rate == pytest.approx(1 / 16)
    d = s.as_dict()
    assert d["recall"] == pytest.approx(0.5) and d["false_alarm_rate"] == pytest.approx(1 / 16)


def test_score_without_alerts_or_errors() -> None:
    s = score_alerts([], ["a", "b"], [])
    assert (s.caught, s.missed, s.false_alarms, s.correct) == (0, 0, 0, 2)
    assert s.recall is None and s.false_alarm_rate == 0.0


def test_latency_percentiles() -> None:
    assert percentile([], 50) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    lat = latency_ms([(100.0, 100.010), (100.0, 100.020), (100.0, 100.030), (100.0, 100.100)])
    assert lat["n"] == 4
    assert lat["p50"] == pytest.approx(25.0)
    assert lat["p95"] == pytest.approx(89.5)
    assert lat["max"] == pytest.approx(100.0)


def test_fitted_threshold_keeps_false_alarms_at_or_below_the_target() -> None:
    ok = [{"bin_id": f"ok{i}", "p_expected": (i + 1) / 200} for i in range(200)]  # 0.005 .. 1.0
    wrong = [{"bin_id": f"bad{i}", "p_expected": p} for i, p in enumerate((0.001, 0.004, 0.012, 0.2, 0.9))]
    no_head = [{"bin_id": "bad9", "p_expected": None}]  # expected beyond the model's counts
    fitted = fit_thresholds(ok + wrong + no_head, [f"bad{i}" for i in (0, 1, 2, 3, 4, 9)])
    assert fitted["mismatch_threshold"] == pytest.approx(0.015)  # 2 of 200 correct below it: 1%
    assert fitted["false_alarms"] == 2 and fitted["n_correct"] == 200 and fitted["n_wrong"] == 5
    assert fitted["recall"] == pytest.approx(3 / 5)
    assert fitted["match_threshold"] == pytest.approx(0.055)  # 5%: 10 below it
    assert fit_threshold([], 0.01) is None
    assert fit_threshold([0.5, 0.1], 0.01) == 0.1  # too few to allow any: below the lowest
    with pytest.raises(ValueError):
        fit_thresholds(wrong, [w["bin_id"] for w in wrong])


def _demo(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "binwatch", "demo", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_demo_fails_clearly_when_its_broker_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = _demo("--out", str(tmp_path / "out"), "--port", str(port), "--no-console", timeout=60)
    assert r.returncode != 0
    err = " ".join(r.stderr.split())
    assert f"broker port {port}" in err and "taken" in err
    assert "--port" in err  # the fix
    assert not (tmp_path / "out" / "data").exists()  # it stopped before doing any work


@pytest.mark.slow
@requires_mosquitto
def test_tiny_demo_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "demo"
    r = _demo(
        "--fresh", "--out", str(out), "--count", "200", "--epochs", "1", "--img", "32",
        "--eval-count", "20", "--val-count", "20", "--views", "2", "--cameras", "2", "--no-console",
        timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["schema"] == "binwatch.demo_summary" and summary["synthetic"] is True
    assert "held-out" in summary["evaluated_on"]
    assert summary["bins"] == 20 and summary["views_per_bin"] == 2 and summary["frames"] == 40
    sc = summary["score"]
    assert sc["bins"] == 20 and sc["injected"] == 4 and sc["correct"] == 16
    assert sc["caught"] + sc["missed"] == sc["injected"]
    assert 0 <= sc["false_alarms"] <= sc["correct"]
    assert sc["unknown_bins"] == 0
    assert sum(summary["outcomes"].values()) == 20  # one outcome per bin event, none lost
    assert "failed" not in summary["outcomes"] and summary["events_without_outcome"] == []
    assert summary["agent_stats"]["frames_total"] == 40
    assert set(summary["frame_to_broker_ms"]) == {"n", "p50", "p95", "max"}
    assert summary["frame_to_broker_ms"]["n"] == sc["alerts"]
    for key in ("bundle", "run", "summary"):
        assert Path(summary["paths"][key]).exists(), key
    assert all(Path(p).is_file() for p in summary["paths"]["reports"])
    assert summary["heldout_eval"]["n_images"] == 40
    th = summary["thresholds"]
    assert 0.0 <= th["mismatch_threshold"] <= th["match_threshold"] <= 1.0
    assert th["n_correct"] == 16 and th["false_alarms"] == 0  # 1% of 16: none allowed
    assert (Path(summary["paths"]["bundle"]) / "MANIFEST.json").is_file()
    # a second run reuses every step that made something
    r2 = _demo(
        "--out", str(out), "--count", "200", "--epochs", "1", "--img", "32",
        "--eval-count", "20", "--val-count", "20", "--views", "2", "--cameras", "2", "--no-console",
        timeout=300,
    )  # fmt: skip
    assert r2.returncode == 0, r2.stderr[-3000:]
    again = json.loads((out / "summary.json").read_text())
    assert {"synth-train", "synth-heldout", "synth-val", "prepare", "train", "export"} <= set(
        again["reused_steps"]
    )
    assert again["thresholds"] == summary["thresholds"]  # the fused thresholds, fitted once
