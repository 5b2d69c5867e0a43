"""Acceptance: ResNet18 trained from scratch on synthetic bins (CPU) learns to count.

Validation accuracy at least twice the majority-class rate, and RMSE below predicting the mean count,
measured here on the raw synthetic images (the agent's preprocessing path), not on the training cache.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from torch.utils.data import DataLoader

from contract.abid import iter_dataset
from contract.files import sha256_file
from tests.fixtures_train import EPOCHS, INPUT, synth_dir
from training.dataset import CountDataset
from training.engine import evaluate
from training.model import load_run
from training.train import parse_args
from training.transforms import eval_transform

pytestmark = pytest.mark.slow


def test_resnet18_learns_to_count_synthetic_bins(trained_run: Path) -> None:
    model, card = load_run(trained_run)
    splits = json.loads((trained_run / "splits.json").read_text())
    data = synth_dir(trained_run)
    items = {it.key: it for it in iter_dataset(data)}
    train = [items[k] for k in splits["train"]]
    val = [items[k] for k in splits["val"]]
    assert len(val) >= 500 and not set(splits["train"]) & set(splits["val"])

    ds = CountDataset(
        val, eval_transform(card.input), counts=card.output.counts, overflow=card.output.overflow
    )
    m = evaluate(model, DataLoader(ds, batch_size=128), "cpu", count_values=ds.count_values)

    val_counts = [it.count for it in val]
    majority_rate = max(Counter(val_counts).values()) / len(val_counts)
    train_mean = sum(it.count for it in train) / len(train)
    mean_rmse = math.sqrt(sum((c - train_mean) ** 2 for c in val_counts) / len(val_counts))
    assert m["n"] == len(val)
    assert m["accuracy"] >= 2 * majority_rate, (m["accuracy"], majority_rate)
    assert m["rmse"] < mean_rmse, (m["rmse"], mean_rmse)


def test_run_folder_holds_card_logs_and_args(trained_run: Path) -> None:
    _, card = load_run(trained_run)
    assert card.model.arch == "resnet18" and card.model.num_classes == 6 and card.model.pretrained is None
    assert (card.input.height, card.input.width, card.input.resize.method) == (INPUT, INPUT, "stretch")
    assert card.output.counts == [0, 1, 2, 3, 4, 5] and card.output.overflow is False
    (val,) = [mt for mt in card.metrics if mt.split == "val"]
    assert val.is_synthetic and val.model == "pytorch" and val.n >= 500
    (art,) = card.artifacts
    assert art.kind == "pytorch" and art.sha256 == sha256_file(trained_run / art.file)

    with (trained_run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(EPOCHS))
    assert all(float(r["images_per_s"]) > 0 and float(r["lr"]) >= 0 for r in rows)
    best = max(rows, key=lambda r: float(r["val_accuracy"]))
    assert float(best["val_accuracy"]) == pytest.approx(val.accuracy)  # weights.pt is the best epoch
    assert any(p.name.startswith("events.out.tfevents") for p in (trained_run / "tb").iterdir())

    # args.yaml is the resolved configuration; --config replays it
    saved = yaml.safe_load((trained_run / "args.yaml").read_text())
    assert saved["lr"] == 1e-3 and saved["amp"] == "none" and saved["img_size"] == [INPUT, INPUT]
    again = parse_args(["--config", str(trained_run / "args.yaml")])
    assert again.arch == "resnet18" and again.epochs == EPOCHS and again.img_size == (INPUT, INPUT)
    ckpt = torch.load(trained_run / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == EPOCHS - 1 and set(ckpt) >= {"model", "optimizer", "scheduler", "rng", "best"}
