"""The run folder: resolved ``args.yaml``, per-epoch ``metrics.csv`` and TensorBoard logs, ``card.json``.

Only rank 0 writes (callers check); nothing here touches the model or the data.
"""

from __future__ import annotations

import argparse
import csv
import logging
import subprocess
from pathlib import Path
from typing import Any, Optional

import yaml

from contract.card import (
    Artifact,
    InputSpec,
    Metrics,
    ModelCard,
    ModelSpec,
    OutputSpec,
    ParentRun,
    TrainedFrom,
    save_card,
)
from contract.files import write_atomic

__all__ = ["CSV_FIELDS", "MetricsLog", "git_sha", "make_card", "write_args"]

log = logging.getLogger(__name__)

CSV_FIELDS = (
    "epoch",
    "lr",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "val_rmse",
    "val_mae",
    "images_per_s",
    "epoch_seconds",
)


def _plain(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def write_args(path: Path, args: argparse.Namespace) -> None:
    """The resolved arguments; ``binwatch train --config RUN/args.yaml`` repeats the run."""
    data = {k: _plain(v) for k, v in sorted(vars(args).items()) if k not in ("config",)}
    write_atomic(path, yaml.safe_dump(data, sort_keys=True), mode=0o644)


class MetricsLog:
    """``metrics.csv`` (appended per epoch; rows from an interrupted epoch are dropped on resume)
    and TensorBoard scalars under ``tb/``."""

    def __init__(self, run: Path, start_epoch: int, tensorboard: bool = True) -> None:
        self.csv_path = run / "metrics.csv"
        rows: list[dict[str, str]] = []
        if self.csv_path.is_file() and start_epoch > 0:
            with self.csv_path.open(newline="", encoding="utf-8") as f:
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < start_epoch]
        with self.csv_path.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            w.writeheader()
            w.writerows(rows)
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run / "tb"), purge_step=start_epoch)
            except ImportError as e:  # tensorboard is in the train extra; keep training without it
                log.warning("TensorBoard logging off (%s); pip install tensorboard", e)

    def write(self, epoch: int, train: dict[str, float], val: dict[str, Any]) -> dict[str, float]:
        row = {
            "epoch": epoch,
            "lr": train["lr"],
            "train_loss": train["loss"],
            "train_accuracy": train["accuracy"],
            "val_loss": val["loss"],
            "val_accuracy": val["accuracy"],
            "val_rmse": val["rmse"],
            "val_mae": val["mae"],
            "images_per_s": train["images_per_s"],
            "epoch_seconds": train["seconds"],
        }
        with self.csv_path.open("a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=CSV_FIELDS).writerow(row)
        if self.tb is not None:
            self.tb.add_scalar("train/loss", train["loss"], epoch)
            self.tb.add_scalar("train/accuracy", train["accuracy"], epoch)
            self.tb.add_scalar("val/loss", val["loss"], epoch)
            self.tb.add_scalar("val/accuracy", val["accuracy"], epoch)
            self.tb.add_scalar("val/rmse", val["rmse"], epoch)
            self.tb.add_scalar("val/mae", val["mae"], epoch)
            self.tb.add_scalar("perf/images_per_s", train["images_per_s"], epoch)
            self.tb.add_scalar("lr", train["lr"], epoch)
            self.tb.flush()
        return row

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def git_sha() -> Optional[str]:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else None


def to_card_metrics(
    m: dict[str, Any], *, dataset: str, split: str, is_synthetic: bool, model: str = "pytorch"
) -> Metrics:
    return Metrics(
        dataset=dataset,
        split=split,
        n=int(m["n"]),
        accuracy=float(m["accuracy"]),
        rmse=float(m["rmse"]),
        mae=float(m["mae"]),
        per_class_accuracy={k: float(v) for k, v in m.get("per_class_accuracy", {}).items()},
        model=model,
        is_synthetic=is_synthetic,
    )


def make_card(
    *,
    run: Path,
    args: argparse.Namespace,
    spec: InputSpec,
    counts: list[int],
    overflow: bool,
    metrics: list[Metrics],
    dataset: str,
    split_how: str,
    epochs: int,
    weights_sha256: str,
    parent: Optional[ParentRun] = None,
) -> ModelCard:
    return ModelCard(
        name=args.name or f"{args.arch}-count",
        version=args.model_version,
        trained_from=TrainedFrom(
            run_id=run.resolve().name,
            git_sha=git_sha(),
            data=dataset,
            split=split_how,
            epochs=epochs,
            parent=parent,
        ),
        model=ModelSpec(arch=args.arch, num_classes=len(counts), pretrained=args.pretrained),
        input=spec,
        output=OutputSpec(counts=counts, overflow=overflow),
        metrics=metrics,
        artifacts=[
            Artifact(kind="pytorch", file="weights.pt", sha256=weights_sha256, precision="fp32", target="any")
        ],
    )


def save_run_card(card: ModelCard, run: Path) -> Path:
    return save_card(card, run / "card.json")
