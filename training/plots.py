"""PNG plots for the evaluation report (matplotlib's object API with the Agg canvas: no pyplot,
no display, no global state, safe in threads and on headless servers)."""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from contract.files import atomic_path

log = logging.getLogger(__name__)

__all__ = [
    "eval_plots",
    "plot_confusion",
    "plot_learning_curves",
    "plot_reliability",
    "plot_roc",
    "read_metrics_csv",
]


def _figure(w: float = 5.0, h: float = 4.0, **adjust: float):
    """A figure with fixed margins (a layout engine would cost more than the drawing itself)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    margins = {"left": 0.8 / w, "right": 1 - 0.25 / w, "bottom": 0.6 / h, "top": 1 - 0.4 / h}
    margins.update(adjust)
    fig.subplots_adjust(**margins)
    return fig


def _save(fig, path: Path) -> Path:
    path = Path(path)
    with atomic_path(path, mode=0o644, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", pil_kwargs={"compress_level": 3})
    return path


def plot_confusion(
    confusion: Sequence[Sequence[int]],
    counts: Sequence[int],
    path: Path,
    title: str = "",
    overflow: bool = False,
) -> Path:
    """Row-normalised confusion matrix (true count down, predicted across) with raw counts printed."""
    m = np.asarray(confusion, dtype=np.float64)
    rows = m.sum(axis=1, keepdims=True)
    frac = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    labels = [str(c) for c in counts]
    if overflow and labels:
        labels[-1] += "+"
    w, h = 2.2 + 0.55 * len(counts), 1.5 + 0.5 * len(counts)
    fig = _figure(w, h, right=1 - 1.0 / w)
    ax = fig.add_subplot()
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(
                j,
                i,
                f"{int(m[i, j])}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if frac[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted count")
    ax.set_ylabel("true count")
    ax.set_title(title or "confusion matrix (row-normalised colour, raw counts)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)


def plot_reliability(curves: dict[str, dict[str, Any]], path: Path, title: str = "") -> Path:
    """Reliability diagram: accuracy vs confidence per bin, one line per curve (e.g. before/after T)."""
    fig = _figure(5.0, 4.2)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfectly calibrated")
    for (name, r), marker in zip(curves.items(), "os^v", strict=False):
        pairs = [
            (c, a)
            for c, a in zip(r["confidence"], r["accuracy"], strict=True)
            if c is not None and a is not None
        ]
        conf, acc = [c for c, _ in pairs], [a for _, a in pairs]
        ax.plot(conf, acc, marker=marker, ms=4, label=f"{name} (ECE {r['ece']:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(title or "reliability diagram (15 bins)", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)


def plot_roc(
    p_expected: Sequence[float],
    is_mismatch: Sequence[bool],
    path: Path,
    argmax_point: Optional[tuple[float, float]] = None,
    title: str = "",
) -> Path:
    """ROC of the p_expected rule on simulated manifests, with the argmax rule's single point."""
    from sklearn.metrics import roc_curve

    y = np.asarray(is_mismatch, dtype=bool)
    fig = _figure(5.0, 4.2)
    ax = fig.add_subplot()
    if y.any() and (~y).any():
        fpr, tpr, _ = roc_curve(y, 1.0 - np.asarray(p_expected, dtype=np.float64))
        ax.plot(fpr, tpr, label="alert when p_expected < t")
    if argmax_point is not None:
        ax.plot([argmax_point[0]], [argmax_point[1]], "o", color="C3", label="alert when argmax != expected")
    for a in (0.01, 0.05):
        ax.axvline(a, color="grey", lw=0.8, ls=":")
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false-alarm rate (correct manifests flagged)")
    ax.set_ylabel("recall (manifest errors flagged)")
    ax.set_title(title or "mismatch detection on simulated manifest errors", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def read_metrics_csv(path: Path) -> dict[str, list[float]]:
    """Numeric columns of a run's ``metrics.csv`` (non-numeric cells become NaN)."""
    cols: dict[str, list[float]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            for k, v in row.items():
                if k is None:
                    continue
                try:
                    val = float(v) if v not in (None, "") else float("nan")
                except ValueError:
                    val = float("nan")
                cols.setdefault(k, []).append(val)
    return {k: v for k, v in cols.items() if not all(np.isnan(v))}


_PANELS = (("loss", "loss"), ("acc", "accuracy"), ("rmse", "RMSE"), ("lr", "learning rate"))


def plot_learning_curves(metrics_csv: Path, path: Path, title: str = "") -> Optional[Path]:
    """Loss, accuracy, RMSE and learning rate per epoch from ``RUN/metrics.csv`` (None if empty)."""
    cols = read_metrics_csv(metrics_csv)
    x_name = next((k for k in ("epoch", "step") if k in cols), None)
    if not cols or x_name is None:
        log.warning("%s has no epoch column; no learning curves", metrics_csv)
        return None
    x = cols[x_name]
    panels = []
    for key, label in _PANELS:
        names = [k for k in cols if k != x_name and key in k.lower() and not (key == "acc" and "rmse" in k)]
        if key == "lr":
            names = [k for k in cols if k.lower() in ("lr", "learning_rate") or k.lower().endswith("_lr")]
        if names:
            panels.append((label, names))
    if not panels:
        return None
    w = 4.0 * len(panels)
    fig = _figure(w, 3.4, left=0.7 / w, wspace=0.3, top=0.82 if title else 0.9)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (label, names) in zip(axes, panels, strict=False):
        for k in names:
            ax.plot(x, cols[k], marker=".", label=k)
        ax.set_xlabel(x_name)
        ax.set_title(label, fontsize=9)
        if label == "learning rate" and all(v > 0 for k in names for v in cols[k] if not np.isnan(v)):
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def eval_plots(
    out: Path,
    *,
    title: str,
    tables: dict[str, Any],
    calibration: dict[str, Any],
    counts: Sequence[int],
    overflow: bool,
    p_expected: Sequence[float],
    is_mismatch: Sequence[bool],
    argmax_point: tuple[float, float],
    metrics_csv: Optional[Path] = None,
    model_name: str = "",
) -> dict[str, str]:
    """Every plot of ``binwatch eval`` into ``out``; returns {plot: file name}."""
    out = Path(out)
    pngs = {
        "confusion": plot_confusion(
            tables["argmax"]["confusion"], counts, out / "confusion.png", f"{title} (argmax)", overflow
        ).name,
        "confusion_rmse_optimal": plot_confusion(
            tables["rmse_optimal"]["confusion"],
            counts,
            out / "confusion_rmse_optimal.png",
            f"{title} (RMSE-optimal decoding)",
            overflow,
        ).name,
        "reliability": plot_reliability(
            {
                "T = 1 (uncalibrated)": calibration["reliability_uncalibrated"],
                f"T = {calibration['temperature']:.3f}": calibration["reliability"],
            },
            out / "reliability.png",
            f"reliability, {title}",
        ).name,
        "mismatch_roc": plot_roc(
            p_expected, is_mismatch, out / "mismatch_roc.png", argmax_point, f"mismatch detection, {title}"
        ).name,
    }
    if metrics_csv is not None and Path(metrics_csv).is_file():
        lc = plot_learning_curves(Path(metrics_csv), out / "learning_curves.png", f"training of {model_name}")
        if lc is not None:
            pngs["learning_curves"] = lc.name
    return pngs
