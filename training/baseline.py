"""The classical baseline of the CS229 seed: small thumbnails -> PCA -> SVM / logistic regression.

Each image is decoded, resized to ``size x size`` (OpenCV area interpolation), optionally turned
to grayscale, flattened and scaled to [0, 1]. A scikit-learn pipeline standardises the pixels,
projects them on the first ``pca`` principal components (fitted on the training split only) and
fits a classifier on the count classes. Scores use the abid_challenge definitions
(:mod:`training.metrics`), on the same splits as a training run (its ``splits.json``) or as
``binwatch train`` would make them (split files, else a seeded 60/20/20 random split).

The result, ``baseline.json``, is a reference row that ``binwatch eval`` adds to its report.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

import numpy as np

from contract.files import write_atomic

log = logging.getLogger(__name__)

__all__ = ["MODELS", "BaselineError", "make_classifier", "run_baseline", "thumbnails"]

MODELS = ("linear_svm", "rbf_svm", "logreg")


class BaselineError(ValueError):
    """A bad dataset or option; the message names the cause and the fix."""


def _thumb(path: Path, size: int, color: str) -> np.ndarray:
    import cv2

    from training.dataset import read_image

    img = cv2.resize(read_image(path), (size, size), interpolation=cv2.INTER_AREA)
    if color == "gray":
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return img.reshape(-1)


def thumbnails(
    items: Sequence[Any],
    size: int = 32,
    color: str = "gray",
    workers: int = 2,
    progress: Optional[Callable[[int], None]] = None,
) -> np.ndarray:
    """``(n, size*size[*3])`` float32 features in [0, 1] (OpenCV releases the GIL: threads suffice)."""
    if color not in ("gray", "rgb"):
        raise BaselineError(f"color {color!r}: choose gray or rgb")
    d = size * size * (1 if color == "gray" else 3)
    out = np.zeros((len(items), d), dtype=np.float32)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, row in enumerate(pool.map(lambda it: _thumb(it.image, size, color), items)):
            out[i] = row.astype(np.float32) / 255.0
            if progress is not None:
                progress(i + 1)
    return out


def make_classifier(name: str, n_components: int, seed: int = 0):
    """StandardScaler -> PCA(n_components, whitened) -> classifier ``name`` (see :data:`MODELS`)."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, LinearSVC

    if name == "linear_svm":
        clf = LinearSVC(C=0.1, max_iter=5000, random_state=seed)
    elif name == "rbf_svm":
        clf = SVC(kernel="rbf", C=1.0, gamma="scale", random_state=seed)
    elif name == "logreg":
        clf = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
    else:
        raise BaselineError(f"unknown baseline model {name!r}; choose from {', '.join(MODELS)}")
    return make_pipeline(
        StandardScaler(), PCA(n_components=n_components, whiten=True, random_state=seed), clf
    )


def _splits(
    items: list[Any], run: Optional[Path], split_files: Sequence[str], ratios: Sequence[float], seed: int
) -> tuple[dict[str, list[Any]], str]:
    from training.splits import load_splits_json, parse_split_files, split_items

    if split_files:
        try:
            return split_items(items, split_files=parse_split_files(split_files))
        except (ValueError, OSError) as e:
            raise BaselineError(f"--split-file: {e}") from e
    if run is not None and (run / "splits.json").is_file():
        splits, how = load_splits_json(run / "splits.json", items)
        return splits, f"the run's splits.json ({how})"
    return split_items(items, ratios=ratios, seed=seed)


def _head(run: Optional[Path], max_count: int, overflow: bool) -> tuple[list[int], bool]:
    """The counts and overflow flag of the head: the run's card, else ``0..max_count``."""
    if run is None:
        return list(range(max_count + 1)), overflow
    from contract.base import ContractError
    from contract.card import load_card

    try:
        card = load_card(run)
    except ContractError as e:
        raise BaselineError(f"--run {run}: {e}") from e
    return list(card.output.counts), card.output.overflow


def _load_items(data: Path) -> tuple[list[Any], bool]:
    """(items, synthetic?) of an ABID folder or a prepared cache."""
    from contract.abid import AbidError
    from training.dataset import is_synthetic, items_from_cache, items_from_dir

    if not data.is_dir():
        raise BaselineError(f"--data {data}: no such folder (an ABID-layout folder or a prepared cache)")
    try:
        if (data / "index.json").is_file():
            items = items_from_cache(data)
        else:
            items, _ = items_from_dir(data)
    except (AbidError, FileNotFoundError, ValueError) as e:
        raise BaselineError(str(e)) from e
    return items, is_synthetic(data, items)


def _fit_and_score(
    models: Sequence[str],
    x_train: np.ndarray,
    y_train: np.ndarray,
    xs: dict[str, np.ndarray],
    truths: tuple[dict[str, np.ndarray], dict[str, list[int]]],
    counts: list[int],
    n_comp: int,
    seed: int,
    progress: Optional[Callable[[str, int, int], None]],
) -> dict[str, dict[str, Any]]:
    """Fit each model on the train features; its metrics on every scored split, by split and model.
    ``truths``: (the head's classes, the unclipped true counts) per split."""
    from training.metrics import count_metrics

    ys, raws = truths

    per_split: dict[str, dict[str, Any]] = {name: {} for name in xs}
    for i, m in enumerate(models):
        if progress is not None:
            progress("fitting", i, len(models))
        clf = make_classifier(m, n_comp, seed).fit(x_train, y_train)
        for name in xs:
            pred = np.asarray(clf.predict(xs[name]), dtype=np.int64)
            per_split[name][m] = count_metrics(ys[name], pred, counts, raws[name])
            log.info(
                "%s on %s: accuracy %.3f RMSE %.3f",
                m,
                name,
                per_split[name][m]["accuracy"],
                per_split[name][m]["rmse"],
            )
    return per_split


def run_baseline(
    data: Path,
    *,
    split_files: Sequence[str] = (),
    run: Optional[Path] = None,
    size: int = 32,
    color: str = "gray",
    pca: int = 50,
    models: Sequence[str] = ("linear_svm", "logreg"),
    max_count: int = 5,
    overflow: bool = False,
    ratios: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    workers: int = 2,
    out: Optional[Path] = None,
    progress: Optional[Callable[[str, int, int], None]] = None,
) -> dict[str, Any]:
    """Fit each baseline on the train split, score val and test; write and return ``baseline.json``."""
    from training.metrics import head_counts

    data = Path(data)
    for m in models:
        if m not in MODELS:
            raise BaselineError(f"unknown baseline model {m!r}; choose from {', '.join(MODELS)}")
    counts, overflow = _head(run, max_count, overflow)
    items, synthetic = _load_items(data)
    items = [it for it in items if it.count in counts or (overflow and it.count > counts[-1])]
    splits, how = _splits(items, run, split_files, ratios, seed)
    train = splits.get("train") or []
    scored = [name for name in ("val", "test") if splits.get(name)]
    if len(train) < 2 or len({it.count for it in train}) < 2 or not scored:
        raise BaselineError(
            f"need a train split with two or more counts and a val or test split; got "
            f"train={len(train)} val={len(splits.get('val') or [])} "
            f"test={len(splits.get('test') or [])} ({how})"
        )

    def feats(name: str, its: list[Any]) -> np.ndarray:
        cb = (lambda k: progress(f"thumbnails {name}", k, len(its))) if progress else None
        return thumbnails(its, size, color, workers, cb)

    x_train = feats("train", train)
    y_train = head_counts([it.count for it in train], counts, overflow)
    xs = {name: feats(name, splits[name]) for name in scored}
    ys = {name: head_counts([it.count for it in splits[name]], counts, overflow) for name in scored}
    n_comp = int(max(1, min(pca, x_train.shape[0] - 1, x_train.shape[1])))
    raws = {name: [it.count for it in splits[name]] for name in scored}
    per_split = _fit_and_score(models, x_train, y_train, xs, (ys, raws), counts, n_comp, seed, progress)
    main_split = "test" if "test" in scored else "val"
    result = {
        "kind": "binwatch.baseline",
        "dataset": data.resolve().name,
        "dataset_id": str(data.resolve()),
        "is_synthetic": synthetic,
        "split": main_split,
        "split_how": how,
        "counts": counts,
        "overflow": overflow,
        "features": {"size": size, "color": color, "pca_components": n_comp, "whiten": True},
        "n_train": len(train),
        "models": {m: {"split": main_split, **per_split[main_split][m]} for m in models},
        "splits": per_split,
    }
    if out is not None:
        out = write_atomic(out, json.dumps(result, indent=2) + "\n", mode=0o644)
        result["out"] = str(out)
    return result
