"""Synthetic bins in the ABID layout (``binwatch data synth``): what tests, the demo and CI train on.

``synthesize`` writes ``DIR/bin-images/<key>.jpg`` and ``DIR/metadata/<key>.json`` (keys ``00001``,
``00002``, ...), metadata shaped like real ABID (``EXPECTED_QUANTITY``, ``BIN_FCSKU_DATA`` per SKU,
``image_fname``) plus a ``synthetic`` record (seed, index, generator version). With a mismatch rate it
also writes ``DIR/manifest-mismatch/<key>.json``, the "inventory record" in which that fraction of bins
states a wrong quantity, and ``DIR/mismatch.json`` listing those bins.

Output is deterministic per seed: image ``i`` draws from its own generator seeded with ``(seed, i)``,
so the number of worker processes does not change a single byte. numpy + opencv only (no torch).
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from contract.files import write_atomic
from training.data.synth_items import random_sku
from training.data.synth_render import (
    GENERATOR_VERSION,
    MIN_VISIBLE,
    BinRender,
    ItemInfo,
    generate_bin,
    render_bin,
)

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_SIZE",
    "DEFAULT_MIN_SIZE",
    "GENERATOR_VERSION",
    "MIN_VISIBLE",
    "BinRender",
    "ItemInfo",
    "SynthSummary",
    "bin_params",
    "generate_bin",
    "key_for",
    "make_manifest_errors",
    "render_bin",
    "rng_for",
    "synthesize",
]

DEFAULT_MIN_SIZE = 320
DEFAULT_MAX_SIZE = 560
_MISMATCH_STREAM = 0x6D69736D  # seeds the choice of manifest errors, apart from the per-image streams
_OUTPUTS = ("bin-images", "metadata", "manifest-mismatch", "mismatch.json", "synth.json", "views.json")
_VIEW_TRIES = 8  # re-renders of a view until it shows every item of the bin


@dataclass
class SynthSummary:
    """What ``synthesize`` wrote."""

    out: Path
    count: int
    counts: dict[int, int]  # EXPECTED_QUANTITY -> number of bins
    mismatched: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("inf")


def rng_for(seed: int, index: int) -> np.random.Generator:
    """The generator of image ``index`` in a run seeded with ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def key_for(index: int, count: int) -> str:
    """Key of image ``index`` (0-based): ``00001`` style, wider only past 99999 images."""
    return f"{index + 1:0{max(5, len(str(count)))}d}"


def bin_params(
    rng: np.random.Generator,
    min_items: int,
    max_items: int,
    size: Optional[tuple[int, int]],
    min_size: int,
    max_size: int,
) -> tuple[int, tuple[int, int]]:
    """Item count (uniform in min..max) and (width, height) of one bin, drawn from its generator."""
    n = int(rng.integers(min_items, max_items + 1))
    if size is None:
        size = (int(rng.integers(min_size, max_size + 1)), int(rng.integers(min_size, max_size + 1)))
    return n, size


@dataclass(frozen=True)
class _Job:
    out: str
    seed: int
    count: int
    min_items: int
    max_items: int
    size: Optional[tuple[int, int]]
    min_size: int
    max_size: int
    views: int = 1
    min_visible: float = MIN_VISIBLE


def _make_one(job: _Job, index: int) -> list[tuple[str, dict]]:
    """Bin ``index``: one image (key ``00001``), or with ``views`` > 1 that many pictures of the same
    items, each placed and lit anew (keys ``00001-v1``, ``00001-v2``, ...; metadata ``view``)."""
    rng = rng_for(job.seed, index)
    n, size = bin_params(rng, job.min_items, job.max_items, job.size, job.min_size, job.max_size)
    first = render_bin(rng, n, size, min_visible=job.min_visible)
    key = key_for(index, job.count)
    if job.views == 1:
        return [_write_image(job, index, key, first.image, first.metadata, rng)]
    out = []
    for v in range(job.views):
        r = first if v == 0 else _other_view(job, index, v, first, size)
        vrng = (
            rng if v == 0 else np.random.default_rng(np.random.SeedSequence(job.seed, spawn_key=(index, v)))
        )
        meta = dict(r.metadata, view={"bin": key, "index": v + 1, "of": job.views})
        out.append(_write_image(job, index, f"{key}-v{v + 1}", r.image, meta, vrng))
    return out


def _other_view(job: _Job, index: int, v: int, first: BinRender, size: tuple[int, int]) -> BinRender:
    """View ``v`` of bin ``index``: the first view's items, re-placed until all of them show."""
    r = first
    for attempt in range(_VIEW_TRIES):
        rng = np.random.default_rng(np.random.SeedSequence(job.seed, spawn_key=(index, v, attempt + 1)))
        r = render_bin(rng, len(first.skus), size, skus=first.skus, min_visible=job.min_visible)
        if len(r.items) == len(first.items):
            return r
    raise RuntimeError(
        f"bin {index}: view {v + 1} could not place all {len(first.items)} items; use larger images"
    )


def _write_image(
    job: _Job, index: int, key: str, image: np.ndarray, meta: dict, rng: np.random.Generator
) -> tuple[str, dict]:
    import cv2

    meta["image_fname"] = f"{key}.jpg"
    meta["image_width"], meta["image_height"] = int(image.shape[1]), int(image.shape[0])
    meta["synthetic"] = {"seed": job.seed, "index": index, "generator_version": GENERATOR_VERSION}
    quality = int(rng.integers(82, 96))
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for synthetic bin {key}")
    out = Path(job.out)
    write_atomic(out / "bin-images" / f"{key}.jpg", buf.tobytes(), mode=0o644)
    write_atomic(out / "metadata" / f"{key}.json", _dumps(meta), mode=0o644)
    return key, meta


def _make_chunk(job: _Job, indices: list[int]) -> list[tuple[str, dict]]:
    import cv2

    cv2.setNumThreads(1)  # one process per core; no oversubscription
    return [kv for i in indices for kv in _make_one(job, i)]


def _dumps(obj: dict) -> bytes:
    return (json.dumps(obj, indent=4, sort_keys=True) + "\n").encode()


def make_manifest_errors(
    quantities: dict[str, int], rate: float, seed: int, max_quantity: Optional[int] = None
) -> dict[str, int]:
    """Pick ``round(rate * len)`` bins and give each a wrong quantity (true +-1..2, never negative,
    never above ``max_quantity`` when given)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"mismatch rate must be within 0..1, got {rate}")
    keys = sorted(quantities)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_MISMATCH_STREAM,)))
    chosen = sorted(rng.choice(len(keys), size=round(rate * len(keys)), replace=False).tolist())
    wrong: dict[str, int] = {}
    for i in chosen:
        q = quantities[keys[i]]
        deltas = [d for d in (-2, -1, 1, 2) if q + d >= 0 and (max_quantity is None or q + d <= max_quantity)]
        wrong[keys[i]] = q + int(rng.choice(deltas))
    return wrong


def _manifest_metadata(meta: dict, quantity: int, rng: np.random.Generator) -> dict:
    """A copy of ``meta`` stating ``quantity``, with per-SKU quantities that still add up."""
    m = copy.deepcopy(meta)
    skus = m["BIN_FCSKU_DATA"]
    delta = quantity - int(m["EXPECTED_QUANTITY"])
    while delta > 0:  # the record lists units that are not in the bin
        if not skus or rng.uniform() < 0.25:
            sku = random_sku(rng)
            asin = sku.asin
            skus[asin] = sku.metadata(0)
        else:
            asin = sorted(skus)[int(rng.integers(0, len(skus)))]
        skus[asin]["quantity"] += 1
        delta -= 1
    while delta < 0:  # the record misses units that are in the bin
        asin = sorted(skus)[int(rng.integers(0, len(skus)))]
        skus[asin]["quantity"] -= 1
        if skus[asin]["quantity"] == 0:
            del skus[asin]
        delta += 1
    m["EXPECTED_QUANTITY"] = quantity
    m["BIN_FCSKU_DATA"] = dict(sorted(skus.items()))
    return m


def _chunks(n: int, size: int) -> Iterator[list[int]]:
    for start in range(0, n, size):
        yield list(range(start, min(start + size, n)))


def synthesize(
    out: Path,
    count: int,
    max_items: int,
    seed: int,
    *,
    min_items: int = 0,
    mismatch: float = 0.0,
    workers: int = 1,
    progress: Union[bool, Callable[[int], None]] = True,
    size: Optional[tuple[int, int]] = None,
    min_size: int = DEFAULT_MIN_SIZE,
    max_size: int = DEFAULT_MAX_SIZE,
    overwrite: bool = False,
    views: int = 1,
    min_visible: float = MIN_VISIBLE,
    mismatch_max: Optional[int] = None,
) -> SynthSummary:
    """Write ``count`` synthetic bins (0-based index i -> key ``key_for(i, count)``) under ``out``.

    Item counts are uniform in ``min_items..max_items``; image sizes are ``size`` = (width, height) or
    each side uniform in ``min_size..max_size``. ``workers`` > 1 renders in a process pool (same bytes).
    ``mismatch`` > 0 also writes ``manifest-mismatch/`` and ``mismatch.json``. ``progress``: True shows a
    rich progress bar, a callable is called with the number of bins just finished. ``views`` > 1 writes
    that many pictures of each bin (keys ``<bin>-v1``...; ``views.json`` maps bin -> keys; the manifest
    and ``mismatch.json`` are per bin); ``min_visible``: the least visible part of each item;
    ``mismatch_max``: the most a wrong manifest states. ValueError: bad arguments; FileExistsError:
    ``out`` holds a dataset and not ``overwrite``."""
    _check_args(count, max_items, min_items, mismatch, size, min_size, max_size, workers)
    if views < 1 or not 0.0 < min_visible <= 1.0:
        raise ValueError(f"need views >= 1 and 0 < min_visible <= 1, got {views} and {min_visible}")
    out = Path(out)
    existing = [out / name for name in _OUTPUTS if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{out} already holds a dataset ({existing[0].name}); pass overwrite=True to replace it"
        )
    for p in existing:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    (out / "bin-images").mkdir(parents=True, exist_ok=True)
    (out / "metadata").mkdir(parents=True, exist_ok=True)

    job = _Job(str(out), int(seed), count, min_items, max_items, size, min_size, max_size, views, min_visible)
    start = time.perf_counter()
    metas = _render_all(job, workers, progress)
    if views > 1:
        metas = _write_views(out, metas)
    quantities = {k: int(m["EXPECTED_QUANTITY"]) for k, m in metas.items()}
    wrong: dict[str, int] = {}
    if mismatch > 0:
        wrong = _write_mismatch(out, metas, quantities, mismatch, int(seed), mismatch_max)
    seconds = time.perf_counter() - start
    counts = dict(sorted(Counter(quantities.values()).items()))
    record = {
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "count": count,
        "min_items": min_items,
        "max_items": max_items,
        "size": list(size) if size else None,
        "min_size": min_size,
        "max_size": max_size,
        "mismatch": mismatch,
        "views": views,
        "mismatch_max": mismatch_max,
        "min_visible": min_visible,
        "counts": {str(k): v for k, v in counts.items()},
    }
    write_atomic(out / "synth.json", _dumps(record), mode=0o644)
    log.info("wrote %d synthetic bins to %s in %.1f s", count, out, seconds)
    return SynthSummary(out=out, count=count, counts=counts, mismatched=len(wrong), seconds=seconds)


def _write_views(out: Path, metas: dict[str, dict]) -> dict[str, dict]:
    """Write ``views.json`` (bin -> its image keys); return the first view's metadata per bin."""
    bins: dict[str, list[str]] = {}
    first: dict[str, dict] = {}
    for key, meta in metas.items():
        b = meta["view"]["bin"]
        bins.setdefault(b, []).append(key)
        first.setdefault(b, meta)
    record = {"views": max(len(v) for v in bins.values()), "bins": dict(sorted(bins.items()))}
    write_atomic(out / "views.json", _dumps(record), mode=0o644)
    return dict(sorted(first.items()))


def _check_args(
    count: int,
    max_items: int,
    min_items: int,
    mismatch: float,
    size: Optional[tuple[int, int]],
    min_size: int,
    max_size: int,
    workers: int,
) -> None:
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if not 0 <= min_items <= max_items:
        raise ValueError(f"need 0 <= min_items <= max_items, got min_items={min_items} max_items={max_items}")
    if not 0.0 <= mismatch <= 1.0:
        raise ValueError(f"mismatch rate must be within 0..1, got {mismatch}")
    if size is not None and min(size) < 64:
        raise ValueError(f"image size {size[0]}x{size[1]} is too small; use at least 64x64")
    if size is None and not 64 <= min_size <= max_size:
        raise ValueError(f"need 64 <= min_size <= max_size, got {min_size}..{max_size}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")


def _render_all(job: _Job, workers: int, progress: Union[bool, Callable[[int], None]]) -> dict[str, dict]:
    if callable(progress):
        return _render_with(job, workers, progress)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("synthesizing bins", total=job.count)
        return _render_with(job, workers, lambda n: bar.advance(task, n))


def _render_with(job: _Job, workers: int, advance: Callable[[int], None]) -> dict[str, dict]:
    metas: dict[str, dict] = {}
    if workers == 1:
        for i in range(job.count):
            metas.update(_make_one(job, i))
            advance(1)
    else:
        import multiprocessing as mp

        chunk = max(1, min(32, job.count // (workers * 4)))
        ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = [pool.submit(_make_chunk, job, idx) for idx in _chunks(job.count, chunk)]
            for fut in as_completed(futures):
                done = fut.result()
                metas.update(done)
                advance(len(done) // job.views)
    return dict(sorted(metas.items()))


def _write_mismatch(
    out: Path,
    metas: dict[str, dict],
    quantities: dict[str, int],
    rate: float,
    seed: int,
    max_quantity: Optional[int] = None,
) -> dict[str, int]:
    wrong = make_manifest_errors(quantities, rate, seed, max_quantity)
    folder = out / "manifest-mismatch"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_MISMATCH_STREAM, 1)))
    for key, meta in metas.items():
        manifest = _manifest_metadata(meta, wrong[key], rng) if key in wrong else meta
        write_atomic(folder / f"{key}.json", _dumps(manifest), mode=0o644)
    listing = {
        "seed": seed,
        "rate": rate,
        "total": len(metas),
        "mismatched": {
            k: {"true_quantity": quantities[k], "manifest_quantity": q} for k, q in sorted(wrong.items())
        },
    }
    write_atomic(out / "mismatch.json", _dumps(listing), mode=0o644)
    return wrong
