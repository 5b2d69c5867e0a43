"""binwatch eval on a real tiny training run: report, plots, calibration, card, park results."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from binwatch.cli import app
from contract.card import load_card
from tests.fixtures_train import synth_dir
from tests.hw import ABID_SAMPLE, requires_shared_data
from training.dataset import items_from_dir, read_image
from training.evaluate import EvalError, EvalOptions, run_eval
from training.model import load_run
from training.splits import load_splits_json
from training.transforms import eval_transform

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def trained(trained_run) -> tuple[Path, Path]:
    """(run, data): the session's ResNet18 trained on synthetic bins (tests/fixtures_train.py)."""
    return trained_run, synth_dir(trained_run)


@pytest.fixture()
def run_copy(trained, tmp_path) -> tuple[Path, Path]:
    run, data = trained
    dst = tmp_path / "run"
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns("checkpoint.pt", "eval-*"))
    return dst, data


def predict_counts(run: Path, keys: list[str], data: Path) -> np.ndarray:
    """Argmax counts computed independently of training.evaluate (model + eval transform)."""
    model, card = load_run(run)
    tf = eval_transform(card.input)
    x = torch.stack([tf(read_image(data / "bin-images" / f"{k}.jpg")) for k in keys])
    with torch.no_grad():
        idx = model(x).argmax(1).numpy()
    return np.asarray(card.output.counts)[idx]


def test_eval_report_plots_and_card(run_copy):
    run, data = run_copy
    r = run_eval(EvalOptions(run=run, data=data, tta_flip=True))
    out = Path(r["out"])
    assert out == run / f"eval-{data.name}"
    for name in (
        "confusion.png",
        "confusion_rmse_optimal.png",
        "reliability.png",
        "mismatch_roc.png",
        "learning_curves.png",
    ):
        assert (out / name).read_bytes()[:8] == PNG, name
    saved = json.loads((out / "metrics.json").read_text())
    report = (out / "report.md").read_text()
    assert "Pipeline check, not an ABID result" in report
    assert (
        "*published reference*: ResNet34 from scratch" in report and "55.67%" in report and "0.93" in report
    )
    assert "56.20%" in report

    # the numbers are those of the model on the run's validation split, recomputed independently
    items, _ = items_from_dir(data)
    splits, _ = load_splits_json(run / "splits.json", items)
    keys = [it.key for it in splits["val"]]
    true = np.array([it.count for it in splits["val"]])
    pred = predict_counts(run, keys, data)
    assert saved["split"] == "val" and saved["n"] == len(keys)
    assert saved["decodings"]["argmax"]["accuracy"] == pytest.approx(np.mean(pred == true))
    assert saved["decodings"]["argmax"]["rmse"] == pytest.approx(np.sqrt(np.mean((pred - true) ** 2)))
    assert saved["decodings_tta_flip"]["argmax"]["n"] == len(keys)

    # the card now carries the temperature, the decision defaults and calibrated metrics
    card = load_card(run)
    assert card.output.temperature == pytest.approx(saved["temperature"])
    assert "validation split" in saved["calibration"]["source"]
    assert "in-sample" in report  # T fitted and measured on the same split: said so
    assert card.decision is not None and card.decision.mismatch_threshold <= card.decision.match_threshold
    assert card.decision.false_alarm_rate == 0.01
    entry = next(m for m in card.metrics if m.split == "val" and m.ece is not None)
    assert entry.ece == pytest.approx(saved["calibration"]["ece"])
    assert entry.ece_uncalibrated == pytest.approx(saved["calibration"]["ece_uncalibrated"])
    assert entry.is_synthetic and entry.accuracy == pytest.approx(np.mean(pred == true))


def val_halves(run: Path, data: Path, tmp_path: Path) -> list[str]:
    """Split files: the run's validation keys, first half as val, second half as test."""
    items, _ = items_from_dir(data)
    splits, _ = load_splits_json(run / "splits.json", items)
    keys = [it.key for it in splits["val"]]
    half = len(keys) // 2
    (tmp_path / "a.json").write_text(json.dumps(keys[:half]))
    (tmp_path / "b.json").write_text(json.dumps(keys[half:]))
    return [f"val={tmp_path / 'a.json'}", f"test={tmp_path / 'b.json'}"]


def test_temperature_fitted_on_val_lowers_error_on_held_out_data(trained, tmp_path):
    run, data = trained
    files = val_halves(run, data, tmp_path)
    r = run_eval(EvalOptions(run=run, data=data, split_files=files, out=tmp_path / "ev", update_card=False))
    assert r["split"] == "test"
    cal = r["calibration"]
    assert "fitted on the validation split" in cal["source"] and cal["temperature"] != 1.0
    assert cal["nll"] < cal["nll_uncalibrated"]
    assert cal["ece"] < cal["ece_uncalibrated"]


def test_park_results_in_abid_challenge_format(trained, tmp_path):
    run, data = trained
    items, _ = items_from_dir(data)
    chosen = items[::10][::-1]  # a split file in its own (reversed) order
    split = tmp_path / "counting_val.json"
    split.write_text(json.dumps([[int(it.key) - 1, it.count] for it in chosen]))
    park = tmp_path / "counting_result.txt"
    r = run_eval(
        EvalOptions(
            run=run,
            data=data,
            split_files=[str(split)],
            park_results=park,
            out=tmp_path / "ev",
            update_card=False,
        )
    )
    lines = park.read_text().splitlines()
    assert len(lines) == len(chosen) and all(line.strip().isdigit() for line in lines)
    pred = np.array([int(line) for line in lines])
    assert (pred == predict_counts(run, [it.key for it in chosen], data)).all()
    # abid_challenge's counting/evaluate.py pairs line n with split entry n
    gt = np.array([c for _, c in json.loads(split.read_text())])
    assert r["decodings"]["argmax"]["accuracy"] == pytest.approx(np.mean(pred == gt))
    assert r["split"] == "val" and "counting_val.json" in r["split_how"]


def test_baseline_row_and_cli(trained, tmp_path):
    run, data = trained
    baseline = tmp_path / "baseline.json"
    baseline.write_text(
        json.dumps(
            {
                "dataset": "syn",
                "split": "test",
                "is_synthetic": True,
                "models": {"logreg": {"n": 12, "accuracy": 0.5, "rmse": 0.8, "mae": 0.5}},
            }
        )
    )
    runner = CliRunner()
    split_args = [a for f in val_halves(run, data, tmp_path) for a in ("--split-file", f)]
    res = runner.invoke(
        app,
        [
            "eval",
            str(run),
            "--data",
            str(data),
            *split_args,
            "--out",
            str(tmp_path / "ev"),
            "--baseline",
            str(baseline),
            "--no-update-card",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "classical baseline: logreg" in (tmp_path / "ev" / "report.md").read_text()
    res = runner.invoke(app, ["eval", str(tmp_path / "no-run"), "--data", str(data)])
    assert res.exit_code == 2 and "cannot load run" in " ".join(res.output.split())
    res = runner.invoke(app, ["eval", str(run), "--data", str(data), "--split", "train2"])
    assert res.exit_code == 2
    with pytest.raises(EvalError, match="no such folder"):
        run_eval(EvalOptions(run=run, data=tmp_path / "missing"))


@requires_shared_data
def test_eval_on_real_abid_sample(trained, tmp_path):
    run, _ = trained
    out = tmp_path / "ev"
    r = run_eval(EvalOptions(run=run, data=ABID_SAMPLE, out=out, update_card=False))
    # the synthetic run never saw these images: every image its head can express is scored
    assert r["split"] == "all" and not r["is_synthetic"] and r["trained_on_synthetic"]
    items, _ = items_from_dir(ABID_SAMPLE)
    head_max = max(load_card(run).output.counts)
    assert r["n"] == sum(it.count <= head_max for it in items)
    assert r["n"] + r["excluded_beyond_head"] == len(items)
    report = (out / "report.md").read_text()
    assert "Pipeline check on real images" in report and "not the official abid_challenge val split" in report
    for name in ("confusion.png", "reliability.png", "mismatch_roc.png"):
        assert (out / name).read_bytes()[:8] == PNG
    assert "kept from the card" in r["calibration"]["source"]


def test_card_and_report_say_when_scores_are_in_sample(run_copy, tmp_path):
    """--split all scores training images and T/thresholds fitted on val images also scored: the
    card's metrics entry and the report say so; a held-out split with val elsewhere is clean."""
    run, data = run_copy
    r = run_eval(EvalOptions(run=run, data=data, split="all", out=tmp_path / "all"))
    items, _ = items_from_dir(data)
    n_train = len(load_splits_json(run / "splits.json", items)[0]["train"])
    assert n_train > 0 and r["in_sample"] == {"calibration": True, "training_images": n_train}
    entry = next(m for m in load_card(run).metrics if m.split == "all" and m.model == "pytorch")
    assert entry.training_images == n_train and entry.calibrated_in_sample is True
    report = (tmp_path / "all" / "report.md").read_text()
    assert "Not held-out" in report and "In-sample calibration" in report

    files = val_halves(run, data, tmp_path)
    held = run_eval(EvalOptions(run=run, data=data, split_files=files, out=tmp_path / "ev"))
    assert held["split"] == "test" and held["in_sample"] == {"calibration": False, "training_images": 0}
    entry = next(m for m in load_card(run).metrics if m.split == "test" and m.model == "pytorch")
    assert entry.training_images == 0 and entry.calibrated_in_sample is False
    assert "Not held-out" not in (tmp_path / "ev" / "report.md").read_text()
