"""What the demo shows the agent, read from a folder in the ABID layout: the bins with their views
(``views.json`` of ``binwatch data synth --views N``, else one image per bin), and the injected
manifest errors (``mismatch.json``), or, for a folder of real images, errors the demo injects itself
into a CSV manifest.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

from contract import abid
from contract.files import write_atomic
from demo.live import Bin
from demo.steps import DemoError

log = logging.getLogger(__name__)

__all__ = ["check_images", "inject_errors", "load_bins", "load_truth"]


def check_images(folder: Path) -> Path:
    """``--images``: an ABID-layout folder, else :class:`DemoError` naming the ones inside it."""
    try:
        abid.list_keys(folder)
        return folder
    except abid.AbidError as e:
        inside = sorted(
            str(p) for p in (folder.iterdir() if folder.is_dir() else []) if (p / abid.IMAGES_DIR).is_dir()
        )
        hint = (
            f"pass one of {', '.join(inside)}" if inside else "pass a folder with bin-images/ and metadata/"
        )
        raise DemoError(f"--images {folder}: {e}", hint) from e


def load_bins(folder: Path, limit: int = 0) -> list[Bin]:
    """The bins of ``folder`` in key order, each with its views' JPEG bytes (``limit`` > 0: the first
    ``limit`` bins)."""
    views_file = folder / "views.json"
    if views_file.is_file():
        groups: dict[str, list[str]] = json.loads(views_file.read_text())["bins"]
    else:
        try:
            groups = {k: [k] for k in abid.list_keys(folder)}
        except abid.AbidError as e:
            raise DemoError(
                f"{folder} is not an ABID-layout folder: {e}", "pass a folder with bin-images/"
            ) from e
    keys = list(groups)[:limit] if limit > 0 else list(groups)
    bins = []
    for key in keys:
        images = [folder / abid.IMAGES_DIR / f"{k}{abid.IMAGE_SUFFIX}" for k in groups[key]]
        present = [p.read_bytes() for p in images if p.is_file() and p.stat().st_size > 0]
        if present:
            bins.append(Bin(bin_id=key, views=present))
    if not bins:
        raise DemoError(f"no bin images in {folder}", "pass a folder with bin-images/<key>.jpg")
    return bins


def load_truth(folder: Path) -> dict[str, dict[str, Any]]:
    """The injected errors: bin id -> ``{"true_quantity", "manifest_quantity"}`` (``mismatch.json``)."""
    path = folder / "mismatch.json"
    try:
        return dict(json.loads(path.read_text())["mismatched"])
    except (OSError, ValueError, KeyError) as e:
        raise DemoError(f"cannot read the injected errors {path}: {e}", "run the demo with --fresh") from e


def inject_errors(folder: Path, out: Path, rate: float, seed: int) -> tuple[Path, dict[str, dict[str, Any]]]:
    """For a folder of real images: a manifest CSV ``bin_id,expected_qty`` in ``out`` in which
    ``rate`` of the bins with a known quantity state a wrong one (true +-1..2, never negative), and
    the truth as :func:`load_truth` gives it (also written to ``out/mismatch.json``)."""
    known: dict[str, int] = {}
    for key in abid.list_keys(folder):
        try:
            q = abid.expected_quantity(
                abid.read_metadata(folder / abid.METADATA_DIR / f"{key}{abid.METADATA_SUFFIX}")
            )
        except (abid.AbidError, ValueError, OSError):
            continue
        if q is not None:
            known[key] = int(q)
    if not known:
        raise DemoError(
            f"no image in {folder} has metadata with EXPECTED_QUANTITY", "pass an ABID-layout folder"
        )
    rng = random.Random(seed)
    chosen = sorted(rng.sample(sorted(known), round(rate * len(known))))
    truth: dict[str, dict[str, Any]] = {}
    for key in chosen:
        q = known[key]
        wrong = q + rng.choice([d for d in (-2, -1, 1, 2) if q + d >= 0])
        truth[key] = {"true_quantity": q, "manifest_quantity": wrong}
    rows = ["bin_id,expected_qty"] + [
        f"{k},{truth[k]['manifest_quantity'] if k in truth else q}" for k, q in sorted(known.items())
    ]
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "manifest.csv"
    write_atomic(csv, "\n".join(rows) + "\n")
    write_atomic(
        out / "mismatch.json", json.dumps({"seed": seed, "rate": rate, "mismatched": truth}, indent=2)
    )
    return csv, truth
