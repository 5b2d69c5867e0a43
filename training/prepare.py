"""``binwatch data prepare``: decode every image once into a pre-resized cache.

Full-size ABID JPEGs cost most of an epoch's time to decode. The cache holds each image already
brought to the model's input size, exactly as the model card's ``input.resize`` says (stretch or
letterbox, OpenCV interpolation), so the training/eval transforms' resize step becomes a copy.

Decoding uses libjpeg's DCT scaling (``cv2.IMREAD_REDUCED_COLOR_{2,4,8}``) when the image is big
enough that the reduced image is still at least ``reduce_margin`` times the size it is resized to;
the final resize then goes from that to the target. This is the one difference from the agent's
path (full decode, then the same resize): on the real ABID sample at 224x224 it moves pixels by 1.4
grey levels on average in the images it applies to (a third of them); ``--no-reduce`` turns it off
and the cache is then bit-exact with the agent's preprocessing. Images are stored lossless (raw
``.npy`` by default, the fastest to read; ``png`` takes half the disk), so nothing else changes.

Layout of a cache::

    CACHE/index.json          settings + one entry per image (key, count, split, file, source size)
    CACHE/images/<key>.npy    (or .png / .jpg with --encoding)

Re-running the same command resumes: images already written (files are written to a temp name,
then renamed) are not decoded again.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Literal, Optional

import cv2
import numpy as np

from contract.abid import SkipReport, iter_dataset
from contract.card import InputSpec
from contract.files import write_atomic
from training.cache import IMAGES, INDEX, CacheEntry, CacheIndex, load_index, write_index
from training.splits import read_split_file

# CacheEntry, CacheIndex and load_index live in training.cache; re-exported: they were defined here
__all__ = ["CacheEntry", "CacheIndex", "decode_reduced", "load_index", "prepare", "reduce_factor"]

log = logging.getLogger(__name__)

_EXT = {"png": ".png", "jpg": ".jpg", "npy": ".npy"}
_REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def reduce_factor(src_wh: tuple[int, int], spec: InputSpec, margin: Optional[float]) -> int:
    """Largest DCT-scaling factor (1, 2, 4, 8) that keeps the decoded image >= margin x the size the
    resize brings it to (1 when ``margin`` is None)."""
    if margin is None:
        return 1
    sw, sh = src_wh
    if spec.resize.method == "stretch":
        limit = min(sw / spec.width, sh / spec.height)
    else:  # letterbox: the image is scaled by min(h/sh, w/sw)
        limit = 1.0 / min(spec.height / sh, spec.width / sw)
    best = 1
    for r in (2, 4, 8):
        if limit / r >= margin:
            best = r
    return best


def _is_jpeg(data: np.ndarray) -> bool:
    return data.size > 3 and data[0] == 0xFF and data[1] == 0xD8


def _jpeg_size(path: Path) -> Optional[tuple[int, int]]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except OSError:
        return None


def decode_reduced(
    path: Path, spec: InputSpec, margin: Optional[float]
) -> tuple[np.ndarray, int, tuple[int, int]]:
    """Decode ``path`` (reduced when worthwhile), return (BGR uint8, factor used, source (w, h))."""
    data = np.fromfile(path, dtype=np.uint8)
    if not data.size:
        raise OSError(f"{path}: empty file")
    factor = 1
    src: Optional[tuple[int, int]] = None
    if margin is not None and _is_jpeg(data):
        src = _jpeg_size(path)
        if src is not None:
            factor = reduce_factor(src, spec, margin)
    img = cv2.imdecode(data, _REDUCED[factor] if factor > 1 else cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"{path}: not a decodable image")
    if src is None:
        src = (img.shape[1], img.shape[0])
    return img, factor, src


@dataclass(frozen=True)
class _Job:
    key: str
    count: int
    split: Optional[str]
    src: str
    dst: str


@dataclass(frozen=True)
class _Result:
    key: str
    entry: Optional[dict]
    error: Optional[str]


_SPEC: Optional[InputSpec] = None
_MARGIN: Optional[float] = None
_ENCODING = "npy"


def _init_worker(spec_json: str, margin: Optional[float], encoding: str) -> None:
    global _SPEC, _MARGIN, _ENCODING
    cv2.setNumThreads(1)
    _SPEC = InputSpec.model_validate_json(spec_json)
    _MARGIN, _ENCODING = margin, encoding


def _encode(img: np.ndarray, dst: Path, encoding: str) -> None:
    if encoding == "npy":
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(img), allow_pickle=False)
        data = buf.getbuffer()
    else:
        params = [cv2.IMWRITE_PNG_COMPRESSION, 1] if encoding == "png" else [cv2.IMWRITE_JPEG_QUALITY, 95]
        ok, encoded = cv2.imencode(dst.suffix, img, params)
        if not ok:
            raise OSError(f"cannot encode {dst}")
        data = encoded.tobytes()
    write_atomic(dst, data, mode=0o644)


def _work(job: _Job) -> _Result:
    from training.resize import resize_bgr

    assert _SPEC is not None
    try:
        img, factor, (sw, sh) = decode_reduced(Path(job.src), _SPEC, _MARGIN)
        out = resize_bgr(img, _SPEC)
        _encode(out, Path(job.dst), _ENCODING)
    except (OSError, cv2.error, ValueError) as e:
        return _Result(job.key, None, str(e))
    entry = {"src_width": sw, "src_height": sh, "reduce": factor}
    return _Result(job.key, entry, None)


def _split_of(split_files: Optional[dict[str, Path]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, path in (split_files or {}).items():
        for key, _count in read_split_file(path):
            out.setdefault(key, name)
    return out


def _previous_entries(out: Path, index: CacheIndex) -> dict[str, CacheEntry]:
    """The entries of a cache already in ``out`` (resume); refuses one made with other settings."""
    if not (out / INDEX).is_file():
        return {}
    old = load_index(out)
    if old.settings() != index.settings():
        raise ValueError(
            f"{out} holds a cache made with other settings ({old.settings()}); "
            "use another --out folder or delete that one"
        )
    return {e.key: e for e in old.items}


def _plan(
    items: list, previous: dict[str, CacheEntry], splits: dict[str, str], out: Path, ext: str
) -> tuple[dict[str, CacheEntry], list[_Job]]:
    """(entries already cached, jobs for the rest)."""
    entries: dict[str, CacheEntry] = {}
    jobs: list[_Job] = []
    for it in items:
        rel = f"{IMAGES}/{it.key}{ext}"
        old_entry = previous.get(it.key)
        if old_entry is not None and old_entry.file == rel and (out / rel).is_file():
            entries[it.key] = old_entry.model_copy(update={"count": it.count, "split": splits.get(it.key)})
            continue
        jobs.append(_Job(it.key, it.count, splits.get(it.key), str(it.image), str(out / rel)))
    return entries, jobs


def _run_jobs(
    jobs: list[_Job],
    entries: dict[str, CacheEntry],
    out: Path,
    index: CacheIndex,
    initargs: tuple[str, Optional[float], str],
    workers: int,
    on_item: Optional[Callable[[str, Optional[str]], None]],
) -> dict[str, str]:
    """Decode and write every job's image (in a process pool when worthwhile), adding each to
    ``entries``; returns the failures by key. A partial index is written every 2000 images."""
    failures: dict[str, str] = {}
    by_key = {j.key: j for j in jobs}
    done_since_save = 0

    def _record(res: _Result) -> None:
        nonlocal done_since_save
        job = by_key[res.key]
        if res.error is not None:
            failures[res.key] = res.error
            log.warning("cannot prepare %s: %s", res.key, res.error)
        else:
            assert res.entry is not None
            rel = f"{IMAGES}/{Path(job.dst).name}"
            entries[res.key] = CacheEntry(
                key=job.key, count=job.count, split=job.split, file=rel, **res.entry
            )
            done_since_save += 1
            if done_since_save >= 2000:  # a partial index makes an interrupted run resumable
                done_since_save = 0
                write_index(out, index.model_copy(update={"items": list(entries.values())}))
        if on_item:
            on_item(res.key, res.error)

    if workers == 1 or len(jobs) < 2 * workers:
        _init_worker(*initargs)
        for job in jobs:
            _record(_work(job))
    else:
        # never fork: the parent may hold torch/OpenMP threads, and a forked child can deadlock on
        # their locks. Workers import only numpy/cv2/pydantic (training.resize), so start-up is cheap.
        method = "forkserver" if "forkserver" in get_all_start_methods() else "spawn"
        with get_context(method).Pool(workers, initializer=_init_worker, initargs=initargs) as pool:
            for res in pool.imap_unordered(_work, jobs, chunksize=8):
                _record(res)
    return failures


def prepare(
    src: Path | str,
    out: Path | str,
    spec: InputSpec,
    *,
    encoding: Literal["png", "jpg", "npy"] = "npy",
    reduce_margin: Optional[float] = 1.0,
    workers: Optional[int] = None,
    split_files: Optional[dict[str, Path]] = None,
    keys: Optional[Sequence[str]] = None,
    max_count: Optional[int] = None,
    on_total: Optional[Callable[[int], None]] = None,
    on_item: Optional[Callable[[str, Optional[str]], None]] = None,
) -> tuple[CacheIndex, dict[str, str]]:
    """Build (or resume) the cache of ``src`` in ``out``; returns the index and the failures by key.

    ``split_files`` (``{"train": counting_train.json, ...}``) records each key's split in the index;
    with split files, only keys they list are prepared. ``on_total(n)`` is called once with the
    number of images, ``on_item(key, error)`` after each.
    """
    from training.dataset import is_synthetic

    src, out = Path(src), Path(out)
    (out / IMAGES).mkdir(parents=True, exist_ok=True)
    index = CacheIndex(
        source=str(src.resolve()),
        height=spec.height,
        width=spec.width,
        resize=spec.resize,
        encoding=encoding,
        reduce_margin=reduce_margin,
    )
    previous = _previous_entries(out, index)
    splits = _split_of(split_files)
    if split_files and keys is None:
        keys = [k for k in splits]
    report = SkipReport()
    items = list(iter_dataset(src, keys=keys, skip_bad=True, report=report, max_count=max_count))
    if report.total:
        log.warning("%s: skipped %s", src, report.summary())
    index.synthetic = is_synthetic(src, items)

    entries, jobs = _plan(items, previous, splits, out, _EXT[encoding])
    if on_total:
        on_total(len(items))
    for key in entries:
        if on_item:
            on_item(key, None)
    log.info("prepare %s -> %s: %d images, %d already cached", src, out, len(items), len(entries))
    initargs = (spec.model_dump_json(), reduce_margin, encoding)
    workers = max(1, workers or os.cpu_count() or 1)
    failures = _run_jobs(jobs, entries, out, index, initargs, workers, on_item)

    order = {it.key: i for i, it in enumerate(items)}
    index.items = sorted(entries.values(), key=lambda e: order.get(e.key, len(order)))
    write_index(out, index)
    return index, failures


def summary(index: CacheIndex) -> dict[str, object]:
    splits: dict[str, int] = {}
    for e in index.items:
        splits[e.split or "-"] = splits.get(e.split or "-", 0) + 1
    reduced = sum(1 for e in index.items if e.reduce > 1)
    return {"images": len(index.items), "splits": splits, "reduced_decodes": reduced}


def dump_summary(index: CacheIndex) -> str:
    return json.dumps(summary(index))
