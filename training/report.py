"""``report.md`` of an evaluation: tables from ``metrics.json``, the published ABID references, and
an honest label of what the numbers mean (synthetic bins are a pipeline check, not an ABID result)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from contract.files import write_atomic

log = logging.getLogger(__name__)

__all__ = ["PUBLISHED_REFERENCES", "render_report", "write_report"]

# Published results on ABID's counting task (counts 0-5). Not measured by binwatch.
PUBLISHED_REFERENCES: list[dict[str, Any]] = [
    {
        "model": "ResNet34 from scratch (abid_challenge baseline)",
        "data": "official abid_challenge val split (36,032 images)",
        "accuracy": 0.5567,
        "rmse": 0.930,
        "per_class_accuracy": {"0": 0.977, "1": 0.834, "2": 0.672, "3": 0.549, "4": 0.426, "5": 0.449},
    },
    {
        "model": "ResNet34 ImageNet-pretrained + Adam (Stanford CS229 report)",
        "data": "its own validation split (trained on 324K images)",
        "accuracy": 0.562,
        "rmse": 0.90,
        "per_class_accuracy": {},
    },
]


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _num(v: Optional[float], nd: int = 3) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _banner(r: dict[str, Any]) -> list[str]:
    if r["is_synthetic"]:
        return [
            "> **Pipeline check, not an ABID result.** These images are synthetic bins from "
            "`binwatch data synth`: the numbers show that training, evaluation, calibration and the "
            "decision rule work end to end. They say nothing about accuracy on real ABID photos.",
        ]
    lines = []
    if r["trained_on_synthetic"]:
        lines.append(
            "> **Pipeline check on real images.** This model was trained on synthetic bins; its scores on "
            "real ABID photos show that the pipeline runs on real data, not what a model trained on ABID "
            "reaches. Compare with the published references only for a model trained on ABID."
        )
    if not r.get("official_val_split"):
        lines.append(
            f"> The evaluated images ({r['dataset']}, {r['n']} images) are not the official abid_challenge "
            "val split, so the published reference rows below are context, not a like-for-like comparison."
        )
    return lines


def _in_sample(r: dict[str, Any]) -> list[str]:
    """Warnings when the scores are not held-out: training images scored, or T and the thresholds
    fitted on images that are also scored."""
    ins = r.get("in_sample") or {}
    lines = []
    if ins.get("training_images"):
        lines.append(
            f"> **Not held-out:** {ins['training_images']} of the {r['n']} scored images are from the run's "
            "training split (`--split all`); these scores overstate the model. Use `--split test` or `val`."
        )
    if ins.get("calibration"):
        lines.append(
            "> **In-sample calibration:** the temperature and the decision thresholds were fitted on the "
            "validation images, which are also scored here: the calibrated ECE and the rates at the card's "
            "thresholds are in-sample."
        )
    return lines


def render_report(r: dict[str, Any]) -> str:
    L: list[str] = [
        f"# Evaluation: {r['model']['name']} v{r['model']['version']} on {r['dataset']} / {r['split']}",
        "",
    ]
    banner = _banner(r) + _in_sample(r)
    if banner:
        L += [*banner, ""]
    L += [
        f"- run: `{r['run']}` ({r['model']['arch']})",
        f"- data: `{r['dataset_id']}`; split: **{r['split']}** ({r['split_how']}); {r['n']} images"
        + (
            f"; {r['excluded_beyond_head']} left out (count beyond the head {r['counts']})"
            if r["excluded_beyond_head"]
            else ""
        ),
        f"- head counts {r['counts']}" + (" (last = that many or more)" if r["overflow"] else ""),
        f"- temperature {r['temperature']:.4f} ({r['calibration']['source']})",
        "",
        "## Counting accuracy and RMSE",
        "",
        "abid_challenge definitions: accuracy = mean(pred == true), RMSE = sqrt(mean((pred - true)^2)), "
        "one predicted count per image. *argmax* takes the most likely count; *RMSE-optimal* takes the "
        "integer nearest the expected count (calibrated probabilities).",
        "",
    ]
    for section in (_accuracy, _per_class, _calibration, _mismatch, _tail):
        L += section(r)
    return "\n".join(L).rstrip() + "\n"


def _accuracy(r: dict[str, Any]) -> list[str]:
    """The accuracy / RMSE table: this model, flip TTA, the classical baseline, published references."""
    L: list[str] = []
    rows = []
    what = "synthetic (pipeline check)" if r["is_synthetic"] else r["dataset"]
    for how, label in (("argmax", "argmax"), ("rmse_optimal", "RMSE-optimal")):
        t = r["decodings"][how]
        rows.append(
            [
                f"**this model**, {label}",
                f"{what} / {r['split']}",
                str(t["n"]),
                _pct(t["accuracy"]),
                _num(t["rmse"]),
                _num(t["mae"]),
            ]
        )
    if r.get("decodings_tta_flip"):
        for how, label in (("argmax", "argmax"), ("rmse_optimal", "RMSE-optimal")):
            t = r["decodings_tta_flip"][how]
            rows.append(
                [
                    f"this model + flip TTA, {label}",
                    f"{what} / {r['split']}",
                    str(t["n"]),
                    _pct(t["accuracy"]),
                    _num(t["rmse"]),
                    _num(t["mae"]),
                ]
            )
    b = r.get("baseline")
    if b:
        for name, m in b.get("models", {}).items():
            tag = " (synthetic, pipeline check)" if b.get("is_synthetic") else ""
            rows.append(
                [
                    f"classical baseline: {name}",
                    f"{b.get('dataset', '?')} / {b.get('split', '?')}{tag}",
                    str(m.get("n", "-")),
                    _pct(m.get("accuracy")),
                    _num(m.get("rmse")),
                    _num(m.get("mae")),
                ]
            )
    for ref in PUBLISHED_REFERENCES:
        rows.append(
            [
                f"*published reference*: {ref['model']}",
                ref["data"],
                "-",
                _pct(ref["accuracy"]),
                _num(ref["rmse"], 2 if ref["rmse"] == round(ref["rmse"], 2) else 3),
                "-",
            ]
        )
    L += _table(["model", "data / split", "n", "accuracy", "RMSE", "MAE"], rows)
    L += ["", "Published references are quoted from their authors, not measured by binwatch.", ""]
    return L


def _per_class(r: dict[str, Any]) -> list[str]:
    """Per-class accuracy and RMSE, and the confusion matrix."""
    L: list[str] = ["## Per class", ""]
    ref_pc = PUBLISHED_REFERENCES[0]["per_class_accuracy"]
    rows = []
    for c in (str(x) for x in r["counts"]):
        a, o = r["decodings"]["argmax"]["per_class"][c], r["decodings"]["rmse_optimal"]["per_class"][c]
        label = c + ("+" if r["overflow"] and c == str(r["counts"][-1]) else "")
        rows.append(
            [
                label,
                str(a["n"]),
                _pct(a["accuracy"]),
                _num(a["rmse"]),
                _pct(o["accuracy"]),
                _num(o["rmse"]),
                _pct(ref_pc.get(c)),
            ]
        )
    L += _table(
        [
            "true count",
            "n",
            "accuracy (argmax)",
            "RMSE (argmax)",
            "accuracy (RMSE-opt.)",
            "RMSE (RMSE-opt.)",
            "abid_challenge ResNet34 (published)",
        ],
        rows,
    )
    L += ["", "### Confusion matrix (argmax; rows true, columns predicted)", ""]
    cm = r["decodings"]["argmax"]["confusion"]
    L += _table(
        ["true \\ pred", *[str(c) for c in r["counts"]]],
        [[str(c), *[str(v) for v in row]] for c, row in zip(r["counts"], cm, strict=False)],
    )
    L += [
        "",
        f"![confusion matrix]({r['plots']['confusion']})",
        f"![confusion matrix, RMSE-optimal]({r['plots']['confusion_rmse_optimal']})",
        "",
    ]
    return L


def _calibration(r: dict[str, Any]) -> list[str]:
    """Temperature scaling and the calibration errors before and after."""
    L: list[str] = []
    cal = r["calibration"]
    L += [
        "## Calibration",
        "",
        f"Temperature scaling: logits / T before the softmax, T = **{cal['temperature']:.4f}** "
        f"({cal['source']}). Expected calibration error (15 equal-width confidence bins) on this split:",
        "",
    ]
    L += _table(
        ["", "ECE", "NLL"],
        [
            ["uncalibrated (T = 1)", _num(cal["ece_uncalibrated"], 4), _num(cal["nll_uncalibrated"], 4)],
            [f"calibrated (T = {cal['temperature']:.3f})", _num(cal["ece"], 4), _num(cal["nll"], 4)],
        ],
    )
    if (r.get("in_sample") or {}).get("calibration"):
        L += [
            "",
            "T was fitted on images scored here (the validation split), so the calibrated row is in-sample.",
        ]
    L += ["", f"![reliability diagram]({r['plots']['reliability']})", ""]
    return L


def _mismatch(r: dict[str, Any]) -> list[str]:
    """Mismatch detection on simulated manifest errors: both rules, the card's thresholds."""
    L: list[str] = []
    mm = r["mismatch"]
    L += [
        "## Mismatch detection (simulated manifest errors)",
        "",
        f"{mm['n_mismatch']} of {mm['n']} images get a wrong expected quantity (true +- k, k in {mm['ks']}, "
        f"seed {mm['seed']}); the rest keep the true count. Rules: **p_expected** alerts when "
        "P(count = expected) < threshold (the agent's decision rule); **argmax** alerts when the most "
        "likely count differs from the expected one. Thresholds below are the ones that reach each "
        "false-alarm rate on this split.",
        "",
    ]
    pe, am = mm["rules"]["p_expected"], mm["rules"]["argmax"]
    hdr = ["rule", "AUROC"]
    row_pe, row_am = ["p_expected < t", _num(pe["auroc"])], ["argmax != expected", _num(am["auroc"])]
    for op_pe, op_am in zip(pe["operating_points"], am["operating_points"], strict=False):
        a = op_pe["target_false_alarm_rate"]
        hdr.append(f"recall at {100 * a:g}% false alarms")
        row_pe.append(
            f"{_pct(op_pe['recall'])} (t = {op_pe['threshold']:.4g}, FA {_pct(op_pe['false_alarm_rate'])})"
        )
        row_am.append(_pct(op_am["recall"]) + ("" if am["false_alarm_rate"] <= a else " (own FA too high)"))
    hdr.append("own operating point")
    row_pe.append("-")
    row_am.append(f"FA {_pct(am['false_alarm_rate'])}, recall {_pct(am['recall'])}")
    L += _table(hdr, [row_pe, row_am])
    same = mm.get("p_expected_at_argmax_false_alarm_rate")
    if same:
        L += [
            "",
            f"At the argmax rule's own false-alarm rate ({_pct(am['false_alarm_rate'])}), the p_expected "
            f"rule has recall {_pct(same['recall'])} (threshold {same['threshold']:.4g}) against "
            f"{_pct(am['recall'])}.",
        ]
    at = mm.get("at_card_thresholds")
    if at:
        L += [
            "",
            f"Card thresholds ({at['source']}): mismatch below {at['mismatch_threshold']:.4g}, match from "
            f"{at['match_threshold']:.4g}. On this split they give false-alarm rate "
            f"{_pct(at['false_alarm_rate'])}, recall {_pct(at['recall'])}, "
            f"{_pct(at['uncertain_share'])} of bins uncertain.",
        ]
    if r.get("decision"):
        d = r["decision"]
        L += [
            "",
            f"Written to the card's `decision`: mismatch_threshold {d['mismatch_threshold']:.4g} (target "
            f"false-alarm rate {_pct(d['false_alarm_rate'])}, recall {_pct(d['recall'])} on val), "
            f"match_threshold {d['match_threshold']:.4g} (the threshold reaching the looser false-alarm "
            "rate; bins between the two are uncertain and worth more frames). Fitted on: "
            + str(d.get("fitted_on"))
            + ".",
        ]
    L += [
        "",
        "Scored one frame at a time; the agent fuses several frames per presentation.",
        "",
        f"![mismatch ROC]({r['plots']['mismatch_roc']})",
        "",
    ]
    return L


def _tail(r: dict[str, Any]) -> list[str]:
    """Training curves and the abid_challenge submission file, when there are."""
    L: list[str] = []
    if "learning_curves" in r["plots"]:
        L += ["## Training curves", "", f"![learning curves]({r['plots']['learning_curves']})", ""]
    if r.get("park_results"):
        p = r["park_results"]
        L += [
            "## abid_challenge submission file",
            "",
            f"`{p['file']}`: {p['lines']} lines, one predicted count per line ({p['decoding']} decoding), "
            "in the order of the split file."
            + (
                f" The split file has {p['split_file_entries']} entries: lines pair with "
                "entries only when every image was present."
                if p.get("split_file_entries") not in (None, p["lines"])
                else ""
            ),
            "",
        ]
    return L


def write_report(path: Path, result: dict[str, Any]) -> Path:
    return write_atomic(path, render_report(result), mode=0o644)
