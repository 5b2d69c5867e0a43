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
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from training.eval_data import (
    EvalError,
    load_items,
    pick_split,
    select_splits,
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(f"{int(p)}\n" for p in predictions), encoding="ascii")
    os.replace(tmp, path)
    return path


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _update_card(
    run: Path, card, *, metrics_entry, temperature: Optional[float], decision: Optional[dict]
) -> None:
    from contract.card import DecisionDefaults, save_card

    card.metrics = [
        m
        for m in card.metrics
        if not (
            m.dataset == metrics_entry.dataset
            and m.split == metrics_entry.split
            and m.model == metrics_entry.model
        )
    ] + [metrics_entry]
    if temperature is not None:
        card.output.temperature = float(temperature)
    if decision is not None:
        card.decision = DecisionDefaults(**decision)
    save_card(card, run / "card.json")


# -- the driver ----------------------------------------------------------------------------------


def run_eval(opts: EvalOptions, progress: Optional[Progress] = None) -> dict[str, Any]:
    """Evaluate, calibrate, write the report; returns what ``metrics.json`` holds (plus ``out``)."""
    from contract.base import ContractError
    from contract.card import Metrics
    from training import plots
    from training.calibration import calibration_summary, fit_temperature
    from training.metrics import DECODINGS, count_metrics, decode, head_counts, softmax
    from training.mismatch import choose_thresholds, mismatch_report, simulate_scores
    from training.model import load_run
    from training.report import write_report

    if not 0.0 < opts.mismatch_rate < 1.0:
        raise EvalError(f"--mismatch-rate {opts.mismatch_rate}: give a share strictly between 0 and 1")
    if not 0.0 <= opts.false_alarm_rate <= opts.match_false_alarm_rate <= 1.0:
        raise EvalError("need 0 <= --false-alarm-rate <= --match-false-alarm-rate <= 1")
    run = Path(opts.run)
    try:
        model, card = load_run(run)
    except (FileNotFoundError, ContractError) as e:
        raise EvalError(f"cannot load run {run}: {e}") from e
    counts, overflow = list(card.output.counts), card.output.overflow

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
    val_items = splits.get("val") or []

    device = resolve_device(opts.device)
    kw = {"device": device, "batch_size": opts.batch_size, "workers": opts.workers, "progress": progress}
    logits, flipped = infer(model, eval_items, card, tta_flip=opts.tta_flip, stage=f"eval {split}", **kw)
    raw_true = np.asarray([it.count for it in eval_items], dtype=np.int64)
    true = head_counts(raw_true, counts, overflow)
    labels = np.searchsorted(counts, true)

    # -- temperature: fitted on the validation split when it is in the data --
    temperature, t_source = float(card.output.temperature), "kept from the card (no validation split here)"
    val_logits = val_labels = None
    if opts.calibrate and val_items:
        if split == "val":
            val_logits, val_true = logits, true
        else:
            val_logits, _ = infer(model, val_items, card, stage="calibrate on val", **kw)
            val_true = head_counts([it.count for it in val_items], counts, overflow)
        val_labels = np.searchsorted(counts, val_true)
        temperature = fit_temperature(val_logits, val_labels)
        t_source = f"fitted on the validation split ({len(val_labels)} images)"
    elif not opts.calibrate:
        t_source = "kept from the card (--no-calibrate)"

    probs = softmax(logits, temperature)
    tables: dict[str, Any] = {
        how: count_metrics(true, decode(probs, counts, how), counts) for how in DECODINGS
    }
    tta_tables = None
    if flipped is not None:
        probs_tta = 0.5 * (probs + softmax(flipped, temperature))
        tta_tables = {how: count_metrics(true, decode(probs_tta, counts, how), counts) for how in DECODINGS}
    calib = calibration_summary(logits, labels, temperature)
    calib["source"] = t_source

    # -- mismatch detection: thresholds chosen on val, measured on the evaluated split --
    mm_kw = {"rate": opts.mismatch_rate, "ks": tuple(opts.mismatch_ks), "seed": opts.seed}
    try:
        mismatch = mismatch_report(probs, raw_true, counts, overflow, **mm_kw)
    except ValueError as e:  # e.g. no shift in --mismatch-k fits a small head
        raise EvalError(f"simulated manifest errors: {e}; choose other --mismatch-k") from e
    decision = None
    if val_logits is not None:
        val_raw = np.asarray([it.count for it in val_items]) if split != "val" else raw_true
        decision = choose_thresholds(
            softmax(val_logits, temperature),
            val_raw,
            counts,
            overflow,
            false_alarm_rate=opts.false_alarm_rate,
            match_false_alarm_rate=opts.match_false_alarm_rate,
            fitted_on=f"{ds_name} val ({len(val_raw)} images, simulated manifest errors: "
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

    out = Path(opts.out) if opts.out else run / f"eval-{ds_name}"
    out.mkdir(parents=True, exist_ok=True)
    am = mismatch["rules"]["argmax"]
    pngs = plots.eval_plots(
        out,
        title=f"{card.name} on {ds_name}/{split}",
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

    baseline = None
    bpath = Path(opts.baseline) if opts.baseline else run / "baseline.json"
    if bpath.is_file():
        try:
            baseline = json.loads(bpath.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            log.warning("ignoring %s: %s", bpath, e)

    result: dict[str, Any] = {
        "run": str(run),
        "model": {"name": card.name, "version": card.version, "arch": card.model.arch},
        "dataset": ds_name,
        "dataset_id": ds_id,
        "split": split,
        "split_how": split_how,
        "data_seen_in_training_split": seen,
        "official_val_split": split == "val" and "counting_val" in split_how,
        "n": len(eval_items),
        "excluded_beyond_head": excluded,
        "counts": counts,
        "overflow": overflow,
        "is_synthetic": synthetic,
        "trained_on_synthetic": trained_on_synthetic(card),
        "temperature": temperature,
        "tta_flip": bool(opts.tta_flip),
        "decodings": tables,
        "decodings_tta_flip": tta_tables,
        "calibration": calib,
        "mismatch": mismatch,
        "decision": decision,
        "baseline": baseline,
        "plots": pngs,
    }

    if opts.park_results is not None:
        preds = decode(probs if flipped is None else probs_tta, counts, opts.park_decoding)
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
        result["park_results"] = {
            "file": str(write_park_results(Path(opts.park_results), preds)),
            "lines": len(preds),
            "split_file_entries": entries,
            "decoding": opts.park_decoding,
        }

    _write_json(out / "metrics.json", result)
    write_report(out / "report.md", result)

    if opts.update_card:
        argmax = tables["argmax"]
        entry = Metrics(
            dataset=ds_id,
            split=split,
            n=argmax["n"],
            accuracy=argmax["accuracy"],
            rmse=argmax["rmse"],
            mae=argmax["mae"],
            per_class_accuracy={
                k: v["accuracy"] for k, v in argmax["per_class"].items() if v["accuracy"] is not None
            },
            ece=calib["ece"],
            ece_uncalibrated=calib["ece_uncalibrated"],
            model="pytorch",
            is_synthetic=synthetic,
        )
        _update_card(
            run,
            card,
            metrics_entry=entry,
            temperature=temperature if val_logits is not None else None,
            decision=decision,
        )
    result["out"] = str(out)
    return result
