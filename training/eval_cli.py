"""``binwatch eval RUN --data DIR``: accuracy/RMSE, calibration, mismatch thresholds, report.

:func:`register` adds it to :data:`training.cli.app`. Only typer/rich/stdlib at module level.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from binwatch.cliutil import fail, setup_logging
from training.cli_progress import stage_progress

_err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add ``eval`` to the training command group."""
    app.command("eval")(eval_cmd)


def _ks(text: str) -> list[int]:
    try:
        ks = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        ks = []
    if not ks or any(k < 1 for k in ks):
        raise fail(f"--mismatch-k {text!r}: give positive integers, e.g. 1,2")
    return ks


def eval_cmd(
    run: Path = typer.Argument(..., help="Training run folder (weights.pt + card.json)."),
    data: Path = typer.Option(..., "--data", help="ABID-layout folder or prepared cache with labels."),
    split_file: list[str] = typer.Option(
        [],
        "--split-file",
        help="Split file(s), e.g. counting_val.json (NAME=FILE allowed). Repeatable. "
        "Default: the run's splits.json when its keys are in --data, else every image.",
    ),
    split: Optional[str] = typer.Option(
        None, "--split", help="val | test | all (default: test if present, else val, else all)."
    ),
    tta_flip: bool = typer.Option(
        False, "--tta-flip", help="Also score with horizontal-flip TTA (mean probs)."
    ),
    calibrate: bool = typer.Option(
        True,
        "--calibrate/--no-calibrate",
        help="Fit temperature and decision thresholds on the validation split; store them in the card.",
    ),
    park_results: Optional[Path] = typer.Option(
        None,
        "--park-results",
        help="Write abid_challenge's counting_result.txt (one count per line, split order).",
    ),
    park_decoding: str = typer.Option(
        "argmax", "--park-decoding", help="argmax | rmse_optimal for --park-results."
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Report folder (default RUN/eval-<dataset>)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    workers: int = typer.Option(2, "--workers", min=0, help="DataLoader worker processes (image decoding)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N."),
    false_alarm_rate: float = typer.Option(
        0.01, "--false-alarm-rate", min=0.0, max=1.0, help="Target false-alarm rate of mismatch_threshold."
    ),
    match_false_alarm_rate: float = typer.Option(
        0.05,
        "--match-false-alarm-rate",
        min=0.0,
        max=1.0,
        help="Looser rate that sets match_threshold (between the two: uncertain).",
    ),
    mismatch_rate: float = typer.Option(
        0.5, "--mismatch-rate", min=0.0, max=1.0, help="Share of bins given a simulated wrong manifest."
    ),
    mismatch_k: str = typer.Option(
        "1,2", "--mismatch-k", help="Simulated manifest errors: true +- k, k from this list."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the simulated manifest errors."),
    baseline: Optional[Path] = typer.Option(
        None, "--baseline", help="baseline.json to include (default RUN/baseline.json when present)."
    ),
    update_card: bool = typer.Option(
        True, "--update-card/--no-update-card", help="Write results into RUN/card.json."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print metrics.json to stdout."),
) -> None:
    """Evaluate a run: abid_challenge accuracy and RMSE (argmax and RMSE-optimal decoding), per class,
    confusion matrix, calibration (temperature, ECE), mismatch detection; writes metrics.json, report.md
    and plots."""
    opts = _options(**locals())  # the parameters: every option but --json is an EvalOptions field
    setup_logging(logging.WARNING, logger="training")
    r = _run(opts)
    if as_json:
        typer.echo(json.dumps(r, indent=2))
        return
    _summary(r)


def _options(*, split_file: list[str], mismatch_k: str, as_json: bool, **fields: Any):
    """The :class:`~training.evaluate.EvalOptions` of the command's options (a bad one exits 2)."""
    from training.evaluate import EvalOptions

    split, park_decoding = fields["split"], fields["park_decoding"]
    if split is not None and split not in ("val", "test", "all"):
        raise fail(f"--split {split!r}: choose val, test or all")
    if park_decoding not in ("argmax", "rmse_optimal"):
        raise fail(f"--park-decoding {park_decoding!r}: choose argmax or rmse_optimal")
    return EvalOptions(split_files=split_file, mismatch_ks=_ks(mismatch_k), **fields)


def _run(opts) -> dict:
    """``run_eval`` with a progress bar per stage; its errors exit 2 (bad input) or 1 (OS error)."""
    from training.evaluate import EvalError, run_eval

    with stage_progress(_err, eta=True) as progress:
        try:
            return run_eval(opts, progress=progress)
        except EvalError as e:
            raise fail(str(e)) from None
        except OSError as e:
            raise fail(str(e), 1) from None


def _summary(r: dict) -> None:
    from rich.table import Table

    console = Console()
    label = " [yellow](synthetic: pipeline check, not an ABID result)[/yellow]" if r["is_synthetic"] else ""
    if not r["is_synthetic"] and r["trained_on_synthetic"]:
        label = " [yellow](model trained on synthetic bins: pipeline check on real images)[/yellow]"
    console.print(
        f"{r['model']['name']} on {r['dataset']}/{r['split']}: {r['n']} images{label}", highlight=False
    )
    t = Table("decoding", "accuracy", "RMSE", "MAE")
    for name, tables in (("", r["decodings"]), (" + flip TTA", r.get("decodings_tta_flip") or {})):
        for how, m in tables.items():
            t.add_row(how + name, f"{100 * m['accuracy']:.2f}%", f"{m['rmse']:.3f}", f"{m['mae']:.3f}")
    console.print(t)
    cal = r["calibration"]
    console.print(
        f"temperature {cal['temperature']:.3f} ({cal['source']}): "
        f"ECE {cal['ece_uncalibrated']:.4f} -> {cal['ece']:.4f}",
        highlight=False,
    )
    pe, am = r["mismatch"]["rules"]["p_expected"], r["mismatch"]["rules"]["argmax"]
    ops = ", ".join(
        f"recall {100 * op['recall']:.1f}% at {100 * op['target_false_alarm_rate']:g}% FA"
        for op in pe["operating_points"]
    )
    auroc = "-" if pe["auroc"] is None else f"{pe['auroc']:.3f}"
    console.print(
        f"mismatch (p_expected rule): AUROC {auroc}, {ops}; "
        f"argmax rule: FA {100 * am['false_alarm_rate']:.1f}%, recall {100 * am['recall']:.1f}%",
        highlight=False,
    )
    if r.get("decision"):
        d = r["decision"]
        console.print(
            f"card decision: mismatch_threshold {d['mismatch_threshold']:.4g}, "
            f"match_threshold {d['match_threshold']:.4g}",
            highlight=False,
        )
    if r.get("park_results"):
        console.print(f"counting_result: {r['park_results']['file']} ({r['park_results']['lines']} lines)")
    ins = r.get("in_sample") or {}
    if ins.get("training_images"):
        console.print(
            f"[yellow]not held-out: {ins['training_images']} of {r['n']} scored images "
            "are training images[/yellow]"
        )
    if ins.get("calibration"):
        console.print("[yellow]temperature and thresholds were fitted on scored images: in-sample[/yellow]")
    console.print(f"report: {Path(r['out']) / 'report.md'}", highlight=False)
