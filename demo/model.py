"""The data and model steps of the demo: synthetic training bins, a held-out set with several views
per bin and injected manifest errors, the prepared cache, training, evaluation (in-sample split and
held-out set), export with the INT8 accuracy gate. Each step is a ``python -m binwatch`` process,
reused on a second run when its options did not change.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from demo.steps import DemoError, StepRunner, binwatch_cmd, marker_path, options_key

log = logging.getLogger(__name__)

__all__ = ["Recipe", "Sets", "build_bundle", "make_sets"]

SYNTH_FIX = "lower --count, or check the disk and the `binwatch data synth` log"


@dataclass(frozen=True)
class Recipe:
    """What the demo synthesizes and how it trains (its own presets; training's defaults are untouched)."""

    count: int = 2400  # training bins (one view each)
    eval_count: int = 300  # held-out bins shown to the agent
    views: int = 3  # pictures per held-out bin, fused by the agent
    max_items: int = 4
    min_size: int = 128
    max_size: int = 160
    min_visible: float = 0.35
    mismatch: float = 0.2
    seed: int = 0  # training data; the held-out bins use seed + 1000, the validation bins seed + 2000
    val_count: int = 300  # validation bins (several views) that fit the fused decision thresholds
    epochs: int = 12
    img: int = 64
    arch: str = "resnet18"
    optimizer: str = "adamw"
    lr: float = 2e-3
    sched: str = "onecycle"
    batch_size: int = 64
    calib_n: int = 128

    @property
    def eval_seed(self) -> int:
        return self.seed + 1000

    @property
    def val_seed(self) -> int:
        return self.seed + 2000

    def synth_args(self) -> list[object]:
        return [
            "--max-items", self.max_items, "--min-size", self.min_size, "--max-size", self.max_size,
            "--min-visible", self.min_visible, "--workers", 0, "--overwrite",
        ]  # fmt: skip

    def train_args(self) -> list[object]:
        return [
            "--arch", self.arch, "--epochs", self.epochs, "--img-size", self.img,
            "--max-count", self.max_items, "--optimizer", self.optimizer, "--lr", self.lr,
            "--sched", self.sched, "--batch-size", self.batch_size, "--workers", 0,
            "--no-tensorboard", "--no-progress", "--exist-ok",
        ]  # fmt: skip


@dataclass
class Sets:
    """The folders the data steps made."""

    train: Optional[Path]  # synthetic training bins (None: not needed)
    heldout: Path  # what the agent is shown
    synthetic: bool  # heldout is synthetic (False: --images)
    val: Optional[Path] = None  # validation bins with views: fit the fused thresholds


def make_sets(runner: StepRunner, r: Recipe, *, images: Optional[Path], need_train: bool) -> Sets:
    """Synthesize the training bins (when a model is to be trained or exported) and the held-out bins
    (unless real ``images`` are replayed)."""
    data = runner.out / "data"
    train: Optional[Path] = None
    if need_train:
        opts = {"count": r.count, "seed": r.seed, **_synth_opts(r)}
        train = data / f"train-{options_key(opts)}"
        runner.step(
            "synth-train",
            f"Synthesizing {r.count} training bins (seed {r.seed})",
            binwatch_cmd(
                "data", "synth", "--out", train, "--count", r.count, "--seed", r.seed, *r.synth_args()
            ),
            folder=train,
            options=opts,
            fix=SYNTH_FIX,
        )
    if images is not None:
        return Sets(train=train, heldout=images, synthetic=False)
    heldout = _views_set(runner, "heldout", "held-out", r.eval_count, r.eval_seed, r)
    val = _views_set(runner, "val", "validation", r.val_count, r.val_seed, r)
    return Sets(train=train, heldout=heldout, synthetic=True, val=val)


def _views_set(runner: StepRunner, name: str, what: str, count: int, seed: int, r: Recipe) -> Path:
    """Bins with ``r.views`` pictures each, ``r.mismatch`` of their manifests wrong (in 0..max_items)."""
    opts = {"count": count, "seed": seed, "views": r.views, "mismatch": r.mismatch, **_synth_opts(r)}
    opts["mismatch_max"] = r.max_items
    folder = runner.out / "data" / f"{name}-{options_key(opts)}"
    runner.step(
        f"synth-{name}",
        f"Synthesizing {count} {what} bins x {r.views} views "
        f"(seed {seed}, {r.mismatch:.0%} of manifests wrong)",
        binwatch_cmd(
            "data",
            "synth",
            "--out",
            folder,
            "--count",
            count,
            "--seed",
            seed,
            "--views",
            r.views,
            "--mismatch",
            r.mismatch,
            "--mismatch-max",
            r.max_items,
            *r.synth_args(),
        ),
        folder=folder,
        options=opts,
        fix=SYNTH_FIX,
    )
    return folder


def _synth_opts(r: Recipe) -> dict[str, Any]:
    return {k: getattr(r, k) for k in ("max_items", "min_size", "max_size", "min_visible")}


def build_bundle(runner: StepRunner, r: Recipe, sets: Sets, model: Optional[Path]) -> dict[str, Any]:
    """Train (unless ``model``), evaluate and export; returns the paths and held-out figures."""
    if model is not None and (model / "MANIFEST.json").is_file():
        return {"bundle": model, "run": None, "reports": []}
    assert sets.train is not None
    if model is not None:
        if not (model / "card.json").is_file():
            raise DemoError(
                f"--model {model} is neither a bundle nor a training run", "pass a bundle or run folder"
            )
        run = model
    else:
        run = _train(runner, r, sets.train)
    reports = _evaluate(runner, run, sets, r)
    bopts = {"run": str(run), "run_key": _marker_key(run), "calib": str(sets.train), "n": r.calib_n}
    bundle = runner.out / "bundles" / options_key(bopts)
    runner.step(
        "export",
        "Exporting ONNX + INT8 (accuracy gate on) into a bundle",
        binwatch_cmd(
            "export",
            "bundle",
            run,
            "--out",
            bundle,
            "--calib",
            sets.train,
            "--n",
            r.calib_n,
            "--eval",
            sets.heldout if sets.synthetic else sets.train,
            "--overwrite",
        ),
        folder=bundle,
        options=bopts,
        fix="the INT8 model may have failed its accuracy gate: train longer (--epochs) or use --model",
    )
    return {"bundle": bundle, "run": run, "reports": reports}


def _marker_key(folder: Path) -> str:
    marker = marker_path(folder)
    return options_key({"m": marker.read_text()}) if marker.is_file() else "external"


def _train(runner: StepRunner, r: Recipe, train: Path) -> Path:
    copts = {"data": str(train), "size": r.img}
    cache = runner.out / "cache" / options_key(copts)
    runner.step(
        "prepare",
        f"Preparing the training cache ({r.img}px)",
        binwatch_cmd("data", "prepare", train, "--out", cache, "--size", r.img),
        folder=cache,
        options=copts,
        fix="check the disk and the `binwatch data prepare` log",
    )
    topts = {"cache": str(cache), **asdict(r)}
    for k in ("eval_count", "val_count", "views", "mismatch", "calib_n"):
        topts.pop(k)
    run = runner.out / "runs" / options_key(topts)
    runner.step(
        "train",
        f"Training {r.arch} for {r.epochs} epochs at {r.img}px on {r.count} bins (CPU: minutes)",
        binwatch_cmd("train", "--cache", cache, "--out", run, *r.train_args()),
        folder=run,
        options=topts,
        fix="see the training log; fewer --epochs or a smaller --count make it faster",
    )
    return run


def _evaluate(runner: StepRunner, run: Path, sets: Sets, r: Recipe) -> list[Path]:
    """Thresholds fitted on the run's validation split (in-distribution, not trained on), then a report
    on the held-out set (another seed, several views per bin) with the card left as it is."""
    reports = []
    if sets.train is not None and (run / "splits.json").is_file():
        out = run / "eval-val"
        runner.step(
            "eval-val",
            "Evaluating on the run's own test split; fitting thresholds on its validation split",
            binwatch_cmd("eval", run, "--data", sets.train, "--out", out, "--workers", 0),
            folder=out,
            options={"run": _marker_key(run)},
            fix="see the evaluation log",
        )
        reports.append(out)
    out = run / ("eval-heldout" if sets.synthetic else "eval-images")
    runner.step(
        "eval-heldout",
        f"Evaluating on the held-out bins ({sets.heldout.name})",
        binwatch_cmd(
            "eval",
            run,
            "--data",
            sets.heldout,
            "--out",
            out,
            "--split",
            "all",
            "--no-calibrate",
            "--no-update-card",
            "--workers",
            0,
        ),
        folder=out,
        options={"run": _marker_key(run), "data": str(sets.heldout)},
        fix="see the evaluation log",
    )
    reports.append(out)
    return reports


def heldout_figures(report: Path) -> dict[str, Any]:
    """Accuracy, RMSE and the mismatch operating points of an eval report (metrics.json)."""
    try:
        m = json.loads((report / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    argmax = m.get("decodings", {}).get("argmax", {})
    return {
        "report": str(report / "report.md"),
        "plots": str(report),
        "dataset": m.get("dataset_id"),
        "split": m.get("split"),
        "n_images": m.get("n"),
        "accuracy": argmax.get("accuracy"),
        "rmse": argmax.get("rmse"),
        "mismatch_per_image": m.get("mismatch", {}).get("rules", {}).get("p_expected", {}),
        "thresholds": m.get("decision"),
    }
