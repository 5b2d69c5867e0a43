"""The classical baseline (thumbnails -> PCA -> SVM / logistic regression) on real image files."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from binwatch.cli import app
from contract.card import InputSpec, ModelCard, ModelSpec, OutputSpec, TrainedFrom, save_card
from training.baseline import BaselineError, run_baseline
from training.dataset import items_from_dir
from training.splits import split_items


def squares_dataset(root: Path, n: int, max_count: int = 2, seed: int = 0) -> Path:
    """ABID layout: ``count`` bright 10x10 squares on a dark 64x64 background (JPEG + metadata).

    Brightness grows with the count, so a linear model on pixels can learn it.
    """
    rng = np.random.default_rng(seed)
    (root / "bin-images").mkdir(parents=True)
    (root / "metadata").mkdir()
    for i in range(n):
        count = i % (max_count + 1)
        img = np.full((64, 64, 3), 30, np.uint8) + rng.integers(0, 10, (64, 64, 3), dtype=np.uint8)
        for y, x in rng.choice(
            [(r, c) for r in range(0, 60, 16) for c in range(0, 60, 16)], count, replace=False
        ):
            img[y : y + 10, x : x + 10] = (200, 180, 160)
        key = f"{i + 1:05d}"
        cv2.imwrite(str(root / "bin-images" / f"{key}.jpg"), img)
        (root / "metadata" / f"{key}.json").write_text(json.dumps({"EXPECTED_QUANTITY": count}))
    return root


@pytest.fixture(scope="module")
def squares(tmp_path_factory) -> Path:
    return squares_dataset(tmp_path_factory.mktemp("squares"), 120)


def test_baseline_learns_and_uses_the_training_split(squares, tmp_path):
    out = tmp_path / "baseline.json"
    r = run_baseline(
        squares, size=16, pca=20, models=("linear_svm", "rbf_svm", "logreg"), max_count=2, out=out
    )
    saved = json.loads(out.read_text())
    assert saved["models"].keys() == {"linear_svm", "rbf_svm", "logreg"}
    # same split as `binwatch train` makes by default (seeded 60/20/20 random split)
    items, _ = items_from_dir(squares)
    splits, _ = split_items(items, ratios=(0.6, 0.2, 0.2), seed=0)
    assert saved["n_train"] == len(splits["train"])
    assert saved["split"] == "test"
    for m in saved["models"].values():
        assert m["n"] == len(splits["test"])
        assert sum(v["n"] for v in m["per_class"].values()) == m["n"]
        assert np.array(m["confusion"]).sum() == m["n"]
    # brightness tells the count: every model does far better than chance (1/3, balanced classes)
    for m in saved["models"].values():
        assert m["accuracy"] >= 0.6
    assert r["features"] == {"size": 16, "color": "gray", "pca_components": 20, "whiten": True}


def test_baseline_follows_a_runs_splits_and_head(squares, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    items, _ = items_from_dir(squares)
    keys = [it.key for it in items]
    (run / "splits.json").write_text(
        json.dumps({"how": "test", "train": keys[:80], "val": keys[80:95], "test": []})
    )
    card = ModelCard(
        name="m",
        version=1,
        trained_from=TrainedFrom(run_id="run", data=str(squares)),
        model=ModelSpec(arch="resnet18", num_classes=3),
        input=InputSpec(height=32, width=32),
        output=OutputSpec(counts=[0, 1, 2]),
    )
    save_card(card, run)
    r = run_baseline(squares, run=run, size=16, pca=10, models=("logreg",), out=run / "baseline.json")
    assert r["n_train"] == 80 and r["split"] == "val" and r["models"]["logreg"]["n"] == 15
    assert set(r["splits"]) == {"val"}


def test_baseline_errors_name_the_cause(squares, tmp_path):
    with pytest.raises(BaselineError, match="unknown baseline model"):
        run_baseline(squares, models=("knn",))
    with pytest.raises(BaselineError, match="no such folder"):
        run_baseline(tmp_path / "missing")


def test_baseline_cli(squares, tmp_path):
    runner = CliRunner()
    out = tmp_path / "b.json"
    res = runner.invoke(
        app,
        [
            "baseline",
            "--data",
            str(squares),
            "--size",
            "16",
            "--pca",
            "10",
            "--max-count",
            "2",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "linear_svm" in res.output and out.is_file()
    res = runner.invoke(app, ["baseline", "--data", str(tmp_path / "nope"), "--out", str(out)])
    assert res.exit_code == 2
    assert "no such folder" in " ".join(res.output.split())
