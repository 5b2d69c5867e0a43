"""``binwatch eval``: score a training run on a labelled dataset, calibrate it, and choose the
agent's mismatch thresholds.

What it does, in order:

1. loads the run (``training.model.load_run``) and the data (ABID folder or prepared cache), keeps
   the images the head can represent (counts beyond the head without an overflow class are left out
   and counted, as abid_challenge's "moderate" task does);
2. picks the evaluated split: ``--split-file`` files, else the run's own ``splits.json`` (the same
   keys as in training), else, for data the run never saw (no key in common), every image;
3. runs the model with the card's eval transform (optionally also on horizontally flipped images,
   averaging the probabilities);
4. fits the temperature on the validation split (when it is in the data) and stores it in the card;
5. scores accuracy / RMSE / MAE, per class, confusion matrix, for argmax and RMSE-optimal decoding;
   ECE before and after the temperature;
6. simulates manifest errors and measures the ``p_expected`` rule against the argmax rule; on the
   validation split it chooses ``decision.mismatch_threshold`` / ``match_threshold`` for the card;
7. writes ``metrics.json``, ``report.md`` and PNG plots to ``RUN/eval-<dataset>/`` (or ``--out``),
   and, with ``--park-results``, abid_challenge's ``counting_result.txt``.

Steps 1-2 live in :mod:`training.eval_data` and step 3 in :mod:`training.eval_predict`; this module
drives them and assembles the metrics, the report and the card update.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from contract.files import write_atomic
from training.eval_card import card_metrics, update_card
from training.eval_data import (
    EvalError,
    load_items,
    pick_split,
    select_splits,
    shared_items,
    split_file_entries,
    trained_on_synthetic,
)
from training.eval_predict import Progress, infer, resolve_device

log = logging.getLogger(__name__)

# EvalError and infer are re-exported: they were defined here before eval_data / eval_predict
__all__ = ["EvalError", "EvalOptions", "infer", "run_eval", "write_park_results"]


@dataclass
class EvalOptions:
    run: Path
    data: Path
    split_files: Sequence[str] = ()
    split: Optional[str] = None  # val | test | all; None: test, else val, else all
    tta_flip: bool = False
    calibrate: bool = True
    park_results: Optional[Path] = None
    park_decoding: str = "argmax"
    out: Optional[Path] = None
    batch_size: int = 64
    workers: int = 0
    device: str = "auto"
    false_alarm_rate: float = 0.01
    match_false_alarm_rate: float = 0.05
    mismatch_rate: float = 0.5
    mismatch_ks: Sequence[int] = (1, 2)
    seed: int = 0
    baseline: Optional[Path] = None
    update_card: bool = True


# -- outputs -------------------------------------------------------------------------------------


def write_park_results(path: Path, predictions: Sequence[int]) -> Path:
    """abid_challenge's ``counting_result.txt``: one predicted count per line (``'%d\\n'``), in the
    order of the split file's entries (its ``counting/evaluate.py`` pairs line n with entry n)."""
    return write_atomic(path, "".join(f"{int(p)}\n" for p in predictions), mode=0o644)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n", mode=0o644)


# -- the driver ----------------------------------------------------------------------------------


@dataclass
class _Data:
    """The evaluated images: the dataset, its split and the split scored."""

    name: str
    id: str
    synthetic: bool
    excluded: int  # images whose count the head cannot express
    split: str
    split_how: str
    seen: bool
    eval_items: list[Any]
    val_items: list[Any]
    training_images: int = 0  # scored images from the run's training split (--split all)


def _check_options(opts: EvalOptions) -> None:
    if not 0.0 < opts.mismatch_rate < 1.0:
        raise EvalError(f"--mismatch-rate {opts.mismatch_rate}: give a share strictly between 0 and 1")
    if not 0.0 <= opts.false_alarm_rate <= opts.match_false_alarm_rate <= 1.0:
        raise EvalError("need 0 <= --false-alarm-rate <= --match-false-alarm-rate <= 1")


def _select_data(opts: EvalOptions, run: Path, card, counts: list[int], overflow: bool) -> _Data:
    items, ds_name, ds_id, synthetic = load_items(Path(opts.data))
    kept = [it for it in items if it.count in counts or (overflow and it.count > counts[-1])]
    excluded = len(items) - len(kept)
    if excluded:
        log.info("left out %d images whose count the head (%s) cannot express", excluded, counts)
    splits, split_how, seen = select_splits(
        kept, card, ds_id, synthetic, run=run, split_files=opts.split_files
    )
    split = pick_split(opts.split, splits, Path(opts.data))
    eval_items = splits[split] if split != "all" else (splits.get("all") or kept)
    if not eval_items:
        raise EvalError(f"no images to evaluate in {opts.data} (split {split}, {split_how})")
    n_train = shared_items(eval_items, splits.get("train") or [])
    if n_train:
        log.warning("%d of the %d scored images are from the run's training split", n_train, len(eval_items))
    return _Data(
        ds_name,
        ds_id,
        synthetic,
        excluded,
        split,
        split_how,
        seen,
        eval_items,
        splits.get("val") or [],
        n_train,
    )


def _calibrate(opts: EvalOptions, model, card, d: _Data, logits, true, counts, overflow, kw):
    """(temperature, where it comes from, validation logits or None): the temperature is fitted on
    the validation split when it is in the data (and --calibrate)."""
    from training.calibration import fit_temperature
    from training.metrics import head_counts

    temperature, t_source = float(card.output.temperature), "kept from the card (no validation split here)"
    val_logits = None
    if opts.calibrate and d.val_items:
        if d.split == "val":
            val_logits, val_true = logits, true
        else:
            val_logits, _ = infer(model, d.val_items, card, stage="calibrate on val", **kw)
            val_true = head_counts([it.count for it in d.val_items], counts, overflow)
        val_labels = np.searchsorted(counts, val_true)
        temperature = fit_temperature(val_logits, val_labels)
        t_source = f"fitted on the validation split ({len(val_labels)} images)"
    elif not opts.calibrate:
        t_source = "kept from the card (--no-calibrate)"
    return temperature, t_source, val_logits


def _score(logits, flipped, true, raw_true, temperature: float, counts: list[int]):
    """(probabilities, those of the flip TTA when scored else the same, metrics by decoding, the
    flip TTA's metrics by decoding or None); RMSE/MAE against the unclipped ``raw_true``."""
    from training.metrics import DECODINGS, count_metrics, decode, softmax

    def table(p: np.ndarray) -> dict[str, Any]:
        return {how: count_metrics(true, decode(p, counts, how), counts, raw_true) for how in DECODINGS}

    probs = softmax(logits, temperature)
    tables = table(probs)
    if flipped is None:
        return probs, probs, tables, None
    probs_tta = 0.5 * (probs + softmax(flipped, temperature))
    tta_tables = table(probs_tta)
    return probs, probs_tta, tables, tta_tables


def _mismatch(opts: EvalOptions, card, d: _Data, probs, raw_true, val_logits, temperature, counts, overflow):
    """Mismatch detection: thresholds chosen on val (when scored there), measured on the evaluated
    split; returns (report, decision or None, p_expected, is-mismatch)."""
    from training.metrics import softmax
    from training.mismatch import choose_thresholds, mismatch_report, simulate_scores

    mm_kw = {"rate": opts.mismatch_rate, "ks": tuple(opts.mismatch_ks), "seed": opts.seed}
    try:
        mismatch = mismatch_report(probs, raw_true, counts, overflow, **mm_kw)
    except ValueError as e:  # e.g. no shift in --mismatch-k fits a small head
        raise EvalError(f"simulated manifest errors: {e}; choose other --mismatch-k") from e
    decision = None
    if val_logits is not None:
        val_raw = np.asarray([it.count for it in d.val_items]) if d.split != "val" else raw_true
        decision = choose_thresholds(
            softmax(val_logits, temperature),
            val_raw,
            counts,
            overflow,
            false_alarm_rate=opts.false_alarm_rate,
            match_false_alarm_rate=opts.match_false_alarm_rate,
            fitted_on=f"{d.name} val ({len(val_raw)} images, simulated manifest errors: "
            f"rate {opts.mismatch_rate}, k in {list(opts.mismatch_ks)}, seed {opts.seed})",
            **mm_kw,
        )
    active = decision or (card.decision.model_dump() if card.decision else None)
    pe, _argmax_alarm, is_mm = simulate_scores(probs, raw_true, counts, overflow, **mm_kw)
    if active is not None:
        alarm = pe < active["mismatch_threshold"]
        match = pe >= active["match_threshold"]
        mismatch["at_card_thresholds"] = {
            "mismatch_threshold": active["mismatch_threshold"],
            "match_threshold": active["match_threshold"],
            "source": "chosen on val in this eval" if decision else "from the card",
            "false_alarm_rate": float(alarm[~is_mm].mean()) if (~is_mm).any() else 0.0,
            "recall": float(alarm[is_mm].mean()) if is_mm.any() else 0.0,
            "uncertain_share": float((~alarm & ~match).mean()),
        }
    return mismatch, decision, pe, is_mm


def _read_baseline(opts: EvalOptions, run: Path) -> Optional[dict[str, Any]]:
    bpath = Path(opts.baseline) if opts.baseline else run / "baseline.json"
    if bpath.is_file():
        try:
            return json.loads(bpath.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            log.warning("ignoring %s: %s", bpath, e)
    return None


def _park(opts: EvalOptions, probs, counts: list[int], split: str) -> dict[str, Any]:
    """Write ``--park-results``; what the result records about it."""
    from training.metrics import decode

    preds = decode(probs, counts, opts.park_decoding)
    entries = split_file_entries(opts.split_files, split)
    if entries is not None and entries != len(preds):
        log.warning(
            "%d of %d split-file entries are missing from %s: counting_result.txt has the %d present "
            "ones, and abid_challenge's evaluate.py pairs lines by position, so score it with this "
            "tool's numbers",
            entries - len(preds),
            entries,
            opts.data,
            len(preds),
        )
    return {
        "file": str(write_park_results(Path(opts.park_results), preds)),
        "lines": len(preds),
        "split_file_entries": entries,
        "decoding": opts.park_decoding,
    }


def _result(run: Path, card, d: _Data, **parts: Any) -> dict[str, Any]:
    """What ``metrics.json`` holds; ``parts`` are the measured sections (temperature, tables, ...)."""
    return {
        "run": str(run),
        "model": {"name": card.name, "version": card.version, "arch": card.model.arch},
        "dataset": d.name,
        "dataset_id": d.id,
        "split": d.split,
        "split_how": d.split_how,
        "data_seen_in_training_split": d.seen,
        "official_val_split": d.split == "val" and "counting_val" in d.split_how,
        "n": len(d.eval_items),
        "excluded_beyond_head": d.excluded,
        "counts": list(card.output.counts),
        "overflow": card.output.overflow,
        "is_synthetic": d.synthetic,
        "trained_on_synthetic": trained_on_synthetic(card),
        "temperature": parts["temperature"],
        "tta_flip": parts["tta_flip"],
        "decodings": parts["decodings"],
        "decodings_tta_flip": parts["decodings_tta_flip"],
        "calibration": parts["calibration"],
        "mismatch": parts["mismatch"],
        "decision": parts["decision"],
        "baseline": parts["baseline"],
        "plots": parts["plots"],
        "in_sample": {"calibration": parts["in_sample"], "training_images": d.training_images},
    }


def run_eval(opts: EvalOptions, progress: Optional[Progress] = None) -> dict[str, Any]:
    """Evaluate, calibrate, write the report; returns what ``metrics.json`` holds (plus ``out``)."""
    from contract.base import ContractError
    from training import plots
    from training.calibration import calibration_summary
    from training.metrics import head_counts
    from training.model import load_run
    from training.report import write_report

    _check_options(opts)
    run = Path(opts.run)
    try:
        model, card = load_run(run)
    except (FileNotFoundError, ContractError) as e:
        raise EvalError(f"cannot load run {run}: {e}") from e
    counts, overflow = list(card.output.counts), card.output.overflow
    d = _select_data(opts, run, card, counts, overflow)

    kw = {"device": resolve_device(opts.device), "batch_size": opts.batch_size, "workers": opts.workers}
    kw["progress"] = progress
    logits, flipped = infer(model, d.eval_items, card, tta_flip=opts.tta_flip, stage=f"eval {d.split}", **kw)
    raw_true = np.asarray([it.count for it in d.eval_items], dtype=np.int64)
    true = head_counts(raw_true, counts, overflow)
    temperature, t_source, val_logits = _calibrate(opts, model, card, d, logits, true, counts, overflow, kw)

    probs, park_probs, tables, tta_tables = _score(logits, flipped, true, raw_true, temperature, counts)
    calib = calibration_summary(logits, np.searchsorted(counts, true), temperature)
    calib["source"] = t_source
    in_sample = val_logits is not None and (d.split == "val" or shared_items(d.eval_items, d.val_items) > 0)
    mismatch, decision, pe, is_mm = _mismatch(
        opts, card, d, probs, raw_true, val_logits, temperature, counts, overflow
    )

    out = Path(opts.out) if opts.out else run / f"eval-{d.name}"
    out.mkdir(parents=True, exist_ok=True)
    am = mismatch["rules"]["argmax"]
    pngs = plots.eval_plots(
        out,
        title=f"{card.name} on {d.name}/{d.split}",
        tables=tables,
        calibration=calib,
        counts=counts,
        overflow=overflow,
        p_expected=pe,
        is_mismatch=is_mm,
        argmax_point=(am["false_alarm_rate"], am["recall"]),
        metrics_csv=run / "metrics.csv",
        model_name=card.name,
    )
    result = _result(
        run,
        card,
        d,
        temperature=temperature,
        tta_flip=bool(opts.tta_flip),
        decodings=tables,
        decodings_tta_flip=tta_tables,
        calibration=calib,
        mismatch=mismatch,
        decision=decision,
        baseline=_read_baseline(opts, run),
        plots=pngs,
        in_sample=in_sample,
    )
    if opts.park_results is not None:
        result["park_results"] = _park(opts, park_probs, counts, d.split)
    _write_json(out / "metrics.json", result)
    write_report(out / "report.md", result)
    if opts.update_card:
        update_card(
            run,
            card,
            metrics_entry=card_metrics(tables["argmax"], calib, d, in_sample),
            temperature=temperature if val_logits is not None else None,
            decision=decision,
        )
    result["out"] = str(out)
    return result
