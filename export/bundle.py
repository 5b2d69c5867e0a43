"""Model bundles (``binwatch export bundle`` / ``binwatch export verify``); see docs/export.md.

A bundle is a folder (or a ``.tar`` of one)::

    card.json               the model card; its artifact rows name the ONNX files below
    model.fp32.onnx         parity-checked FP32 export
    model.int8-trt.onnx     Q/DQ, signed symmetric INT8, per-channel weights (TensorRT)
    model.int8-cpu.onnx     Q/DQ U8S8 (ONNX Runtime on x86/ARM CPUs)
    golden/                 a few images + expected.json with the FP32 distributions
    MANIFEST.json           sha256 and size of every file (contract.bundle)
    [MANIFEST.sig]          ed25519 signature, added by ``binwatch deploy sign``

Verification checks every hash against the manifest, the card, the card's artifact hashes, the
golden set, and (optionally) runs the golden images through each model.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import numpy as np

from contract.base import ContractError
from contract.bundle import MANIFEST_NAME, build_manifest, load_manifest, verify_manifest, write_manifest
from contract.card import ModelCard, load_card, save_card
from contract.files import UnsafeArchiveError, atomic_path, safe_extract_tar, sha256_file
from contract.golden import (
    DEFAULT_TOLERANCE,
    GOLDEN_DIR,
    GOLDEN_FILE,
    GoldenItem,
    GoldenSet,
    compare_golden,
    load_golden,
    softmax,
)
from export.artifacts import FP32_ONNX, INT8_CPU_ONNX, INT8_TRT_ONNX, read_card
from export.errors import ExportError
from export.progress import ProgressHook, no_progress

log = logging.getLogger(__name__)

__all__ = ["BUNDLE_MODELS", "TAR_SUFFIXES", "is_tar", "make_bundle", "open_bundle", "verify_bundle"]

BUNDLE_MODELS = (FP32_ONNX, INT8_TRT_ONNX, INT8_CPU_ONNX)
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
REQUIRED = ("card.json", *BUNDLE_MODELS, GOLDEN_FILE)
_MODEL_PRECISION = {FP32_ONNX: "fp32", INT8_TRT_ONNX: "int8", INT8_CPU_ONNX: "int8"}


def is_tar(path: Path | str) -> bool:
    return str(path).lower().endswith(TAR_SUFFIXES)


# -- building -------------------------------------------------------------------------------------


def _ensure_models(
    run: Path,
    calib: Optional[Path],
    n_calib: int,
    eval_dir: Optional[Path],
    force: bool,
    progress: ProgressHook,
) -> ModelCard:
    """Make sure the run holds all three ONNX files (exporting/quantizing when asked) and that the
    card's artifact rows match them."""
    if not (run / FP32_ONNX).is_file():
        from export.onnx_export import export_run

        export_run(run)
    missing = [f for f in (INT8_TRT_ONNX, INT8_CPU_ONNX) if not (run / f).is_file()]
    if missing:
        if calib is None:
            raise ExportError(
                f"{run} has no {', '.join(missing)}. Fix: run `binwatch export quantize {run} --calib DIR` "
                "first, or pass --calib DIR to bundle"
            )
        from export.quantize import quantize_run

        quantize_run(run, calib, n=n_calib, eval_dir=eval_dir, force=force, progress=progress)
    card = read_card(run)
    for name in BUNDLE_MODELS:
        rows = [a for a in card.artifacts if a.file == name]
        if not rows:
            raise ExportError(
                f"{run}/card.json has no artifact row for {name}. Fix: re-run `binwatch export quantize`"
            )
        digest = sha256_file(run / name)
        if rows[0].sha256 != digest:
            raise ExportError(
                f"{run}/{name} changed after it was recorded in card.json (sha256 {digest[:12]}..., card "
                f"{rows[0].sha256[:12]}...). Fix: re-run `binwatch export onnx` and `export quantize`"
            )
    return card


def _golden_candidates(sources: Sequence[Optional[Path]]) -> list[Path]:
    from export.calib import find_images

    for src in sources:
        if src is not None and Path(src).exists():
            try:
                return find_images(src)
            except ExportError:
                continue
    raise ExportError(
        "no images for the golden set. Fix: pass --golden DIR (a few bin images), or --calib DIR"
    )


def _golden_inputs(card: ModelCard, candidates: Sequence[Path], pool: int) -> tuple[np.ndarray, list[Path]]:
    """Up to ``pool`` of the candidate images (a fixed random pick), preprocessed: ``(x, paths)``."""
    from export.calib import ImageLoader, LabelledImage

    rng = np.random.default_rng(0)
    cand = list(candidates)
    if len(cand) > pool:
        cand = [cand[i] for i in sorted(rng.choice(len(cand), pool, replace=False))]
    loader = ImageLoader(card.input, batch_size=pool)
    xs, items = [], []
    for x, its in loader.batches([LabelledImage(p, p.stem, None) for p in cand]):
        xs.append(x)
        items.extend(its)
    loader.check_usable(len(items), "golden", "the golden source")
    return np.concatenate(xs), [it.path for it in items]


def _choose_golden(probs: dict[str, np.ndarray], n: int) -> list[int]:
    """Indices of ``n`` images: confidently predicted by FP32 and reproduced by both INT8 models
    within the INT8 tolerance first, one per predicted class first, then by FP32 margin."""
    ref = probs[FP32_ONNX]
    top = np.sort(ref, axis=1)
    margin = top[:, -1] - top[:, -2]
    int8_ok = np.all(
        [
            (np.argmax(probs[m], 1) == np.argmax(ref, 1))
            & (np.abs(probs[m] - ref).max(1) <= DEFAULT_TOLERANCE["int8"])
            for m in (INT8_TRT_ONNX, INT8_CPU_ONNX)
        ],
        axis=0,
    )
    order = sorted(range(len(ref)), key=lambda i: (not int8_ok[i], -margin[i]))
    chosen: list[int] = []
    seen: set[int] = set()
    for i in order:  # first pass: one per predicted class, most confident first
        cls = int(np.argmax(ref[i]))
        if cls not in seen and int8_ok[i]:
            chosen.append(i)
            seen.add(cls)
    chosen = (chosen + [i for i in order if i not in chosen])[:n]
    if not all(int8_ok[i] for i in chosen):
        log.warning(
            "some golden images are not reproduced by an INT8 model within %s", DEFAULT_TOLERANCE["int8"]
        )
    return chosen


def _write_golden(
    stage: Path, card: ModelCard, images: Sequence[Path], logits: np.ndarray, probs: np.ndarray
) -> GoldenSet:
    """Copy the chosen images into ``stage/golden/``; write their FP32 outputs to expected.json."""
    (stage / GOLDEN_DIR).mkdir()
    golden_items = []
    used: set[str] = set()
    for src, row_logits, row_probs in zip(images, logits, probs, strict=True):
        name = src.name if src.name not in used else f"{len(used)}-{src.name}"
        used.add(name)
        dst = stage / GOLDEN_DIR / name
        shutil.copyfile(src, dst)
        golden_items.append(
            GoldenItem(
                file=f"{GOLDEN_DIR}/{name}",
                sha256=sha256_file(dst),
                logits=[float(v) for v in row_logits],
                probs=[float(v) for v in row_probs],
                count=card.output.counts[int(np.argmax(row_probs))],
            )
        )
    golden = GoldenSet(
        model=FP32_ONNX,
        model_sha256=sha256_file(stage / FP32_ONNX),
        temperature=card.output.temperature,
        counts=list(card.output.counts),
        items=golden_items,
    )
    (stage / GOLDEN_FILE).write_bytes(golden.model_dump_json(by_alias=True, indent=1).encode() + b"\n")
    return golden


def _make_golden(
    stage: Path, card: ModelCard, candidates: Sequence[Path], n: int, pool: int = 32
) -> GoldenSet:
    """Pick ``n`` confidently predicted images (spread over predicted counts), store them and the FP32
    outputs; the INT8 models are checked against them with the INT8 tolerance."""
    from export.parity import ort_session, run_onnx

    x, paths = _golden_inputs(card, candidates, pool)
    temp = card.output.temperature
    outs = {name: run_onnx(ort_session(stage / name), x) for name in BUNDLE_MODELS}
    probs = {name: np.array([softmax(row.tolist(), temp) for row in o]) for name, o in outs.items()}
    chosen = _choose_golden(probs, n)
    return _write_golden(
        stage, card, [paths[i] for i in chosen], outs[FP32_ONNX][chosen], probs[FP32_ONNX][chosen]
    )


def _write_tar(src_dir: Path, out: Path) -> None:
    """A deterministic tar of ``src_dir``'s contents (sorted, mtime 0, root-owned, no compression
    unless the name says .gz)."""
    mode = "w:gz" if str(out).lower().endswith((".gz", ".tgz")) else "w"
    with atomic_path(out) as tmp, tarfile.open(tmp, mode, format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(src_dir.rglob("*")):
            rel = path.relative_to(src_dir).as_posix()
            info = tar.gettarinfo(str(path), arcname=rel)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "root", "root"
            info.mode = 0o755 if path.is_dir() else 0o644
            if path.is_file():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)


def make_bundle(
    run_dir: Path | str,
    out: Path | str,
    *,
    golden: Optional[Path | str] = None,
    n_golden: int = 4,
    calib: Optional[Path | str] = None,
    n_calib: int = 512,
    eval_dir: Optional[Path | str] = None,
    force: bool = False,
    overwrite: bool = False,
    progress: ProgressHook = no_progress,
) -> Path:
    """Assemble a bundle from a run folder into ``out`` (a folder, or a ``.tar``/``.tar.gz`` file).

    Missing ONNX files are produced first (export with parity; quantization needs ``calib``). Golden
    images come from ``golden``, else ``calib``, else the data the card says the model was trained on.
    """
    run = Path(run_dir)
    out = Path(out)
    read_card(run)
    if out.exists() and not overwrite and (out.is_file() or any(out.iterdir())):
        raise ExportError(f"{out} already exists. Fix: choose another --out or pass --overwrite")
    if n_golden < 1:
        raise ExportError("--n-golden must be >= 1")
    card = _ensure_models(
        run, Path(calib) if calib else None, n_calib, Path(eval_dir) if eval_dir else None, force, progress
    )
    trained_on = Path(card.trained_from.data) if card.trained_from and card.trained_from.data else None
    candidates = _golden_candidates(
        [Path(golden) if golden else None, Path(calib) if calib else None, trained_on]
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".bundle-", dir=out.parent))
    try:
        advance = progress("writing bundle", 4)
        for name in BUNDLE_MODELS:
            shutil.copyfile(run / name, stage / name)
        advance(1)
        # the bundle's card lists exactly the bundle's ONNX files
        rows = [a for a in card.artifacts if a.file in BUNDLE_MODELS]
        save_card(card.model_copy(update={"artifacts": rows}), stage / "card.json")
        _make_golden(stage, card, candidates, n_golden)
        advance(1)
        write_manifest(stage, build_manifest(stage, model_name=card.name, model_version=card.version))
        problems = verify_dir(stage, run_golden=False)
        if problems:
            raise ExportError("the new bundle does not verify: " + "; ".join(problems))
        advance(1)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        if is_tar(out):
            _write_tar(stage, out)
        else:
            os.replace(stage, out)  # the staged folder becomes the bundle in one rename
        advance(1)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    log.info("wrote bundle %s", out)
    return out


# -- opening and verifying -----------------------------------------------------------------------


@contextmanager
def open_bundle(path: Path | str) -> Iterator[Path]:
    """Yield a folder holding the bundle: the folder itself, or a temporary extraction of a tar."""
    p = Path(path)
    if p.is_dir():
        yield p
        return
    if p.is_file() and (is_tar(p) or tarfile.is_tarfile(p)):
        with tempfile.TemporaryDirectory(prefix="binwatch-bundle-") as tmp:
            try:
                safe_extract_tar(p, tmp)
            except UnsafeArchiveError as e:
                raise ExportError(str(e)) from e
            yield Path(tmp)
        return
    raise ExportError(f"{p} is not a bundle (a folder or .tar from `binwatch export bundle`)")


def _run_golden(root: Path, card: ModelCard, golden: GoldenSet) -> list[str]:
    from agent.surface import DecodeError, decode_jpeg, preprocess
    from export.parity import ort_session, run_onnx

    try:
        x = np.stack(
            [preprocess(decode_jpeg((root / it.file).read_bytes()), card.input) for it in golden.items]
        )
    except (DecodeError, OSError, ValueError) as e:
        return [f"{GOLDEN_DIR}: cannot read golden images ({e})"]
    problems = []
    for name in BUNDLE_MODELS:
        try:
            sess = ort_session(root / name)
        except ExportError as e:
            problems.append(f"{name}: {e}")
            continue
        logits = run_onnx(sess, x)
        probs = {
            it.file: softmax(row.tolist(), card.output.temperature)
            for it, row in zip(golden.items, logits, strict=True)
        }
        problems += [f"{name}: {p}" for p in compare_golden(golden, probs, _MODEL_PRECISION[name])]
    return problems


def verify_dir(root: Path, *, run_golden: bool = True) -> list[str]:
    """Problems of an unpacked bundle (empty list: it verifies). Each names the file at fault."""
    problems = list(verify_manifest(root))
    if any(p.startswith(f"{MANIFEST_NAME}:") for p in problems):
        return problems
    for name in REQUIRED:
        if not (root / name).is_file() and not any(p.startswith(f"{name}:") for p in problems):
            problems.append(f"{name}: missing (every bundle has it)")
    try:
        card = load_card(root / "card.json")
    except ContractError as e:
        problems.append(f"card.json: invalid model card ({e})")
        return problems
    manifest = load_manifest(root)
    if (manifest.model_name, manifest.model_version) != (card.name, card.version):
        problems.append(
            f"{MANIFEST_NAME}: names model {manifest.model_name} v{manifest.model_version}, "
            f"card.json says {card.name} v{card.version}"
        )
    for a in card.artifacts:
        f = root / a.file
        if not f.is_file():
            problems.append(f"{a.file}: listed in card.json artifacts but missing")
        elif a.sha256 != sha256_file(f):
            problems.append(f"{a.file}: sha256 differs from its card.json artifact row")
    for name in BUNDLE_MODELS:
        if not any(a.file == name for a in card.artifacts):
            problems.append(f"card.json: no artifact row for {name}")
    try:
        golden = load_golden(root)
    except ContractError as e:
        problems.append(f"{GOLDEN_FILE}: {e}")
        return problems
    for it in golden.items:
        f = root / it.file
        if not f.is_file():
            problems.append(f"{it.file}: golden image missing")
        elif sha256_file(f) != it.sha256:
            problems.append(f"{it.file}: sha256 differs from {GOLDEN_FILE}")
    ref = root / golden.model
    if not ref.is_file() or golden.model_sha256 != sha256_file(ref):
        problems.append(f"{GOLDEN_FILE}: reference model {golden.model} does not match the bundle's file")
    if run_golden and not problems:
        problems += _run_golden(root, card, golden)
    return problems


def verify_bundle(path: Path | str, *, run_golden: bool = True) -> list[str]:
    """Verify a bundle folder or tar: every hash (manifest, card artifacts, golden images), the card,
    and with ``run_golden`` the golden images through every model. Returns the problems (empty: OK).

    ``MANIFEST.sig`` is not checked here (``binwatch deploy verify`` holds the public key).
    """
    with open_bundle(path) as root:
        return verify_dir(root, run_golden=run_golden)
