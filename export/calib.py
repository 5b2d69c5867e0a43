"""Images for INT8 calibration and evaluation, preprocessed exactly as the agent does.

Calibration and the accuracy check read real image files, decode them with
:func:`agent.surface.decode_jpeg` and bring them to the model input with
:func:`agent.surface.preprocess` (the card's ``input`` section): the INT8 scales are fitted on the
same tensors the agent will feed the model on the device.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from contract.card import InputSpec, ModelCard
from export.errors import ExportError

log = logging.getLogger(__name__)

__all__ = [
    "IMAGE_SUFFIXES",
    "CalibrationReader",
    "ImageLoader",
    "LabelledImage",
    "check_disjoint",
    "find_images",
    "labelled_images",
    "split_calib_eval",
    "stand_in_eval",
]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    key: str
    label: Optional[int]  # head index (card.output.class_of(count)); None when unlabelled


def find_images(root: Path | str) -> list[Path]:
    """Image files under ``root`` (ABID ``bin-images/`` when present, else any folder), sorted."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise ExportError(f"{root}: no such folder. Fix: pass a folder of images (e.g. an ABID layout)")
    base = root / "bin-images" if (root / "bin-images").is_dir() else root
    files = sorted(p for p in base.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ExportError(
            f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}). "
            "Fix: pass a folder of bin images (`binwatch data synth --out DIR` makes one)"
        )
    return files


def labelled_images(root: Path | str, card: ModelCard) -> list[LabelledImage]:
    """Images of ``root`` with their head index when the folder is an ABID layout with metadata.

    Counts the head cannot represent (beyond the last class without overflow) are left out.
    Without ``metadata/`` every image is returned unlabelled.
    """
    from contract.abid import AbidError, iter_dataset

    root = Path(root)
    if not (root / "metadata").is_dir():
        return [LabelledImage(p, p.stem, None) for p in find_images(root)]
    out: list[LabelledImage] = []
    dropped = 0
    try:
        for item in iter_dataset(root, skip_bad=True):
            cls = card.output.class_of(item.count)
            if cls is None:
                dropped += 1
                continue
            out.append(LabelledImage(item.image, item.key, cls))
    except AbidError as e:
        raise ExportError(f"cannot read labels: {e}") from e
    if dropped:
        log.info("%s: %d images with counts beyond the model's head left out", root, dropped)
    if not out:
        raise ExportError(f"{root}: no labelled images the model can score (counts {card.output.counts})")
    return out


def _train_keys(run_dir: Optional[Path]) -> tuple[set[str], set[str]]:
    """(train keys, test keys) from ``RUN/splits.json`` when the run recorded its split."""
    if run_dir is None or not (run_dir / "splits.json").is_file():
        return set(), set()
    try:
        data = json.loads((run_dir / "splits.json").read_text(encoding="utf-8"))
        return set(map(str, data.get("train", []))), set(map(str, data.get("test", [])))
    except (OSError, ValueError, AttributeError) as e:
        log.warning("ignoring unreadable %s: %s", run_dir / "splits.json", e)
        return set(), set()


def split_calib_eval(
    calib: Sequence[LabelledImage],
    evals: Optional[Sequence[LabelledImage]],
    n_calib: int,
    n_eval: int,
    *,
    seed: int = 0,
    run_dir: Optional[Path] = None,
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """Pick ``n_calib`` calibration images and up to ``n_eval`` held-out evaluation images.

    With a separate evaluation set it is sampled on its own. Otherwise evaluation images come from
    the calibration folder, never the ones picked for calibration, preferring the run's test split
    and never its training split (``RUN/splits.json``) when those keys are present.
    """
    rng = random.Random(seed)
    calib = list(calib)
    picks = calib if len(calib) <= n_calib else rng.sample(calib, n_calib)
    if evals is not None:
        pool = list(evals)
    else:
        chosen = {p.path for p in picks}
        pool = [p for p in calib if p.path not in chosen]
        train, test = _train_keys(run_dir)
        if test and any(p.key in test for p in pool):
            pool = [p for p in pool if p.key in test]
        elif train:
            pool = [p for p in pool if p.key not in train]
    pool = [p for p in pool if p.label is not None]
    eval_set = pool if len(pool) <= n_eval else rng.sample(pool, n_eval)
    return picks, sorted(eval_set, key=lambda p: str(p.path))


def stand_in_eval(
    picks: list[LabelledImage],
    held_out: list[LabelledImage],
    calib_items: list[LabelledImage],
    eval_items: Optional[list[LabelledImage]],
    eval_n: int,
) -> tuple[list[LabelledImage], bool]:
    """``(evaluation images, labelled)``: the labelled held-out images, or without any, images that
    stand in unlabelled (scored by agreement with FP32); as a last resort the calibration picks
    themselves, which :func:`check_disjoint` then reports as in-sample."""
    if held_out:
        return held_out, True
    log.warning("no labelled held-out images: INT8 models are scored by agreement with FP32")
    chosen = {it.path for it in picks}
    pool = list(eval_items) if eval_items is not None else [it for it in calib_items if it.path not in chosen]
    return [LabelledImage(it.path, it.key, 0) for it in (pool or picks)][:eval_n], False


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.resolve() == b.resolve():
            return True
        return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()
    except OSError:
        return False


def check_disjoint(
    evals: Sequence[LabelledImage], picks: Sequence[LabelledImage], *, eval_given: bool
) -> bool:
    """Whether the gate's images overlap the calibration images (the same file, or a copy under the
    same key): with ``--eval`` that is refused (:class:`ExportError`); for the stand-in images of the
    calibration folder it returns True and the figure is in-sample."""
    paths = {p.path.resolve() for p in picks}
    by_key: dict[str, list[Path]] = {}
    for p in picks:
        by_key.setdefault(p.key, []).append(p.path)
    shared = [
        e
        for e in evals
        if e.path.resolve() in paths or any(_same_file(e.path, q) for q in by_key.get(e.key, ()))
    ]
    if not shared:
        return False
    if eval_given:
        names = ", ".join(str(e.path) for e in shared[:3]) + (" ..." if len(shared) > 3 else "")
        raise ExportError(
            f"{len(shared)} of the {len(evals)} --eval images are also calibration images ({names}): "
            "an accuracy scored on them is in-sample. Fix: pass an --eval folder disjoint from --calib, "
            "or leave --eval out to score on --calib images not used for calibration"
        )
    log.warning(
        "%d of %d evaluation images are calibration images (no other images to score on): the INT8 "
        "figures are in-sample",
        len(shared),
        len(evals),
    )
    return True


@dataclass
class ImageLoader:
    """Decode + preprocess image files in batches; undecodable files are skipped and recorded."""

    spec: InputSpec
    batch_size: int = 16
    bad: list[tuple[Path, str]] = field(default_factory=list)

    def load(self, path: Path) -> Optional[np.ndarray]:
        from agent.surface import DecodeError, decode_jpeg, preprocess

        try:
            bgr = decode_jpeg(Path(path).read_bytes())
            return preprocess(bgr, self.spec)
        except (DecodeError, OSError, ValueError) as e:
            log.warning("skipping %s: %s", path, e)
            self.bad.append((Path(path), str(e)))
            return None

    def batches(self, items: Sequence[LabelledImage]) -> Iterator[tuple[np.ndarray, list[LabelledImage]]]:
        """Yield ``(NCHW float32 batch, the items in it)``, leaving out files that do not decode."""
        buf: list[np.ndarray] = []
        its: list[LabelledImage] = []
        for it in items:
            x = self.load(it.path)
            if x is None:
                continue
            buf.append(x)
            its.append(it)
            if len(buf) == self.batch_size:
                yield np.stack(buf), its
                buf, its = [], []
        if buf:
            yield np.stack(buf), its

    def check_usable(self, n_ok: int, what: str, root: Any) -> None:
        """ExportError when nothing decoded; a warning naming the skipped files otherwise."""
        if n_ok == 0:
            named = ", ".join(f"{p.name} ({why})" for p, why in self.bad[:3])
            raise ExportError(
                f"none of the {what} images in {root} could be decoded ({len(self.bad)} failed: {named}). "
                "Fix: pass a folder of readable JPEG/PNG images"
            )
        if self.bad:
            log.warning("%d %s images did not decode and were skipped", len(self.bad), what)


class CalibrationReader:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over image files (batches of NCHW).

    Streams: only one batch is held at a time. ``n_ok`` counts the images fed so far.
    """

    def __init__(self, items: Sequence[LabelledImage], spec: InputSpec, input_name: str, batch_size: int = 8):
        # CalibrationDataReader's __subclasshook__ accepts any class with get_next(): no import needed.
        self.items = list(items)
        self.input_name = input_name
        self.loader = ImageLoader(spec, batch_size)
        self.n_ok = 0
        self._it: Optional[Iterator[tuple[np.ndarray, list[LabelledImage]]]] = None
        self.on_batch: Any = None  # optional callback(n_images) for progress bars

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        if self._it is None:
            self._it = self.loader.batches(self.items)
        nxt = next(self._it, None)
        if nxt is None:
            return None
        x, its = nxt
        self.n_ok += len(its)
        if self.on_batch is not None:
            self.on_batch(len(its))
        return {self.input_name: x}

    def rewind(self) -> None:
        self._it = None
        self.n_ok = 0
        self.loader.bad.clear()
