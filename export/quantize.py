"""FP32 ONNX -> INT8 Q/DQ ONNX for TensorRT and for the CPU (``binwatch export quantize``).

Static quantization with ONNX Runtime (``quantize_static``, ``QuantFormat.QDQ``), calibrated on real
images preprocessed exactly as the agent does (:mod:`export.calib`). Two targets:

- ``tensorrt``: signed INT8 activations with symmetric scales, per-channel signed INT8 weights, every
  zero point 0, FP32 biases, Q/DQ on the inputs of Conv/Gemm/MatMul/Add (TensorRT's explicit
  quantization placement: weighted layers' inputs and the residual input, not their outputs).
- ``cpu``: unsigned activations with signed per-channel weights (U8S8), which ONNX Runtime fuses
  into QLinearConv and runs fast on x86.

Each INT8 model is scored against the FP32 model on held-out labelled images; a drop above the
threshold fails the step (unless forced) and nothing is written or recorded.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from contract.card import Artifact, InputSpec, ModelCard, save_card
from contract.files import sha256_file
from export.artifacts import (
    FP32_ONNX,
    INT8_CPU_ONNX,
    INT8_TRT_ONNX,
    check_onnx_file,
    onnx_opset,
    read_card,
    upsert_artifact,
)
from export.calib import (
    CalibrationReader,
    ImageLoader,
    LabelledImage,
    check_disjoint,
    labelled_images,
    split_calib_eval,
    stand_in_eval,
)
from export.errors import CheckFailed, ExportError
from export.progress import ProgressHook, no_progress

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_DROP",
    "TARGET_FILES",
    "EvalScore",
    "QuantReport",
    "TargetResult",
    "evaluate",
    "quant_settings",
    "quantize_onnx",
    "quantize_run",
]

TARGET_FILES: dict[str, str] = {"tensorrt": INT8_TRT_ONNX, "cpu": INT8_CPU_ONNX}
DEFAULT_MAX_DROP = 1.0  # accuracy points
_TRT_OPS = ["Conv", "ConvTranspose", "Gemm", "MatMul", "Add"]


def quant_settings(target: str) -> dict[str, Any]:
    """Keyword arguments of ``onnxruntime.quantization.quantize_static`` for a target."""
    from onnxruntime.quantization import QuantFormat, QuantType

    common: dict[str, Any] = {"quant_format": QuantFormat.QDQ, "per_channel": True, "reduce_range": False}
    if target == "tensorrt":
        return {
            **common,
            "activation_type": QuantType.QInt8,
            "weight_type": QuantType.QInt8,
            "op_types_to_quantize": _TRT_OPS,
            "extra_options": {
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                "QuantizeBias": False,  # TensorRT wants float biases (no INT32 DequantizeLinear)
                "OpTypesToExcludeOutputQuantization": _TRT_OPS,
            },
        }
    if target == "cpu":
        return {
            **common,
            "activation_type": QuantType.QUInt8,
            "weight_type": QuantType.QInt8,
            "extra_options": {"WeightSymmetric": True},
        }
    raise ExportError(f"unknown quantization target {target!r}: use tensorrt, cpu or both")


def _method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    table = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if name not in table:
        raise ExportError(f"unknown calibration method {name!r}: use {', '.join(table)}")
    return table[name]


def preprocess_for_quant(fp32: Path, out: Path) -> Path:
    """``quant_pre_process`` (shape inference, Conv+BN folding); falls back to the model as is."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(fp32), str(out), skip_symbolic_shape=False)
        return out
    except Exception as e:  # the step is an optimisation, not a requirement
        log.warning("quant_pre_process failed (%s); quantizing the FP32 model as exported", e)
        return fp32


def quantize_onnx(
    model_in: Path,
    model_out: Path,
    reader: Any,
    target: str,
    *,
    method: str = "minmax",
    calibration_cache: Optional[Path] = None,
) -> Path:
    """Quantize one model for ``target``; ``calibration_cache`` lets several targets share one calibration."""
    from onnxruntime.quantization import quantize_static

    settings = quant_settings(target)
    kwargs: dict[str, Any] = {}
    if calibration_cache is not None:
        kwargs["calibration_cache_path"] = str(calibration_cache)
    try:
        quantize_static(
            str(model_in), str(model_out), reader, calibrate_method=_method(method), **settings, **kwargs
        )
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"quantization for {target} failed: {type(e).__name__}: {e}") from e
    return model_out


@dataclass
class EvalScore:
    n: int
    accuracy: dict[str, float]  # model name -> accuracy in [0, 1]
    agreement: dict[str, float]  # model name -> share of argmax equal to FP32's


def evaluate(
    models: dict[str, Path],
    items: Sequence[LabelledImage],
    spec: InputSpec,
    *,
    reference: str = "fp32",
    threads: Optional[int] = None,
    progress: ProgressHook = no_progress,
) -> EvalScore:
    """Accuracy of each ONNX model (and argmax agreement with ``reference``) on labelled images."""
    from export.parity import ort_session

    sessions = {name: ort_session(p, threads) for name, p in models.items()}
    inp = {name: s.get_inputs()[0].name for name, s in sessions.items()}
    correct = dict.fromkeys(models, 0)
    agree = dict.fromkeys(models, 0)
    n = 0
    loader = ImageLoader(spec, batch_size=16)
    advance = progress("evaluating FP32 vs INT8", len(items))
    for x, its in loader.batches(items):
        labels = np.array([it.label for it in its])
        preds = {name: np.argmax(s.run(None, {inp[name]: x})[0], axis=1) for name, s in sessions.items()}
        for name, p in preds.items():
            correct[name] += int(np.sum(p == labels))
            agree[name] += int(np.sum(p == preds[reference])) if reference in preds else 0
        n += len(its)
        advance(len(its))
    loader.check_usable(n, "evaluation", "the evaluation set")
    return EvalScore(
        n=n,
        accuracy={k: v / n for k, v in correct.items()},
        agreement={k: v / n for k, v in agree.items()},
    )


@dataclass
class TargetResult:
    target: str
    path: Path
    accuracy: float
    accuracy_drop: float  # points vs FP32
    agreement: float
    passed: bool


@dataclass
class QuantReport:
    n_calib: int
    n_eval: int
    fp32_accuracy: float
    max_drop: float
    results: list[TargetResult] = field(default_factory=list)
    skipped_images: list[tuple[Path, str]] = field(default_factory=list)
    written: bool = False
    in_sample: bool = False  # scored on calibration images (nothing else to score on)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "written": self.written,
            "n_calib": self.n_calib,
            "n_eval": self.n_eval,
            "in_sample": self.in_sample,
            "fp32_accuracy": self.fp32_accuracy,
            "max_drop": self.max_drop,
            "targets": [
                {
                    "target": r.target,
                    "file": r.path.name,
                    "accuracy": r.accuracy,
                    "accuracy_drop": r.accuracy_drop,
                    "agreement": r.agreement,
                    "passed": r.passed,
                }
                for r in self.results
            ],
            "skipped_images": [str(p) for p, _ in self.skipped_images],
        }


def _targets(target: str) -> list[str]:
    if target == "both":
        return ["tensorrt", "cpu"]
    if target in TARGET_FILES:
        return [target]
    raise ExportError(f"unknown --target {target!r}: use tensorrt, cpu or both")


def _fp32_model(run: Path, card: ModelCard) -> Path:
    fp32 = run / FP32_ONNX
    if not fp32.is_file():
        from export.onnx_export import export_run

        log.info("%s missing: exporting it first (with parity check)", fp32)
        export_run(run)
    check_onnx_file(fp32)
    return fp32


def _calibrate(
    pre: Path,
    tmp: Path,
    targets: list[str],
    reader: CalibrationReader,
    calib_dir: Path | str,
    method: str,
    progress: ProgressHook,
) -> tuple[dict[str, Path], list[tuple[Path, str]]]:
    """``({target: INT8 model in tmp}, undecodable images)``; one calibration pass serves all targets."""
    cache = tmp / "calibration.json"
    outs: dict[str, Path] = {}
    bad: list[tuple[Path, str]] = []
    # cpu first: it calibrates every quantizable tensor, a superset of what tensorrt reuses from the cache
    for t in sorted(targets, key=lambda t: t != "cpu"):
        reader.rewind()
        reader.on_batch = progress(f"calibrating ({t})", len(reader.items)) if not cache.exists() else None
        try:
            outs[t] = quantize_onnx(
                pre, tmp / TARGET_FILES[t], reader, t, method=method, calibration_cache=cache
            )
        except ExportError:
            if reader.n_ok == 0 and reader.loader.bad:  # the real cause: no image decoded
                reader.loader.check_usable(0, "calibration", calib_dir)
            raise
        if reader.on_batch is not None:
            reader.loader.check_usable(reader.n_ok, "calibration", calib_dir)
            bad = list(reader.loader.bad)
    return outs, bad


def _score(report: QuantReport, score: EvalScore, targets: list[str], run: Path, labelled: bool) -> None:
    """Add each target's accuracy, drop against FP32 and pass/fail to ``report``."""
    fp32_acc = report.fp32_accuracy
    for t in targets:
        acc = score.accuracy[t] if labelled else score.agreement[t]
        # rounded so that float noise does not decide the gate: 5 flips of 500 is exactly 1.0 point
        drop = round(100.0 * (fp32_acc - acc), 6)
        ok = drop <= report.max_drop
        report.results.append(TargetResult(t, run / TARGET_FILES[t], acc, drop, score.agreement[t], ok))
        log.info(
            "%s INT8: accuracy %.2f%% (FP32 %.2f%%), drop %.2f points, agreement %.2f%%",
            t,
            100 * acc,
            100 * fp32_acc,
            drop,
            100 * score.agreement[t],
        )


def _record(run: Path, outs: dict[str, Path], report: QuantReport, labelled: bool) -> None:
    """Move the INT8 models into the run and write their artifact rows (and FP32's accuracy)."""
    for t, p in outs.items():
        shutil.move(str(p), run / TARGET_FILES[t])
    card = read_card(run)
    if labelled and (fp32_row := card.artifact("onnx", "fp32")) is not None:
        card = upsert_artifact(card, fp32_row.model_copy(update={"accuracy": report.fp32_accuracy}))
    for r in report.results:
        card = upsert_artifact(
            card,
            Artifact(
                kind="onnx",
                file=TARGET_FILES[r.target],
                sha256=sha256_file(r.path),
                precision="int8",
                target=r.target,  # type: ignore[arg-type]
                opset=onnx_opset(r.path),
                accuracy=r.accuracy if labelled else None,
                accuracy_drop=round(r.accuracy_drop, 4) if labelled else None,
            ),
        )
    save_card(card, run / "card.json")
    report.written = True


def quantize_run(
    run_dir: Path | str,
    calib_dir: Path | str,
    *,
    n: int = 512,
    target: str = "both",
    eval_dir: Optional[Path | str] = None,
    eval_n: int = 500,
    max_drop: float = DEFAULT_MAX_DROP,
    force: bool = False,
    method: str = "minmax",
    seed: int = 0,
    threads: Optional[int] = None,
    progress: ProgressHook = no_progress,
) -> QuantReport:
    """Quantize ``RUN/model.fp32.onnx`` (exported first if missing) for each target, score it, and
    on success (or ``force``) write ``RUN/model.int8-*.onnx`` and their artifact rows in the card.

    Raises :class:`CheckFailed` when a target loses more than ``max_drop`` accuracy points and not
    ``force``; nothing is written then. Evaluation images are labelled ABID-layout images: ``eval_dir``,
    or else the calibration folder's images not used for calibration (and not in the run's training
    split). Without labels the argmax agreement with FP32 stands in for accuracy (its complement bounds
    the drop).
    """
    run = Path(run_dir)
    card = read_card(run)
    targets = _targets(target)
    if n < 1:
        raise ExportError(f"--n must be >= 1, got {n}")
    calib_items = labelled_images(calib_dir, card)
    eval_items = labelled_images(eval_dir, card) if eval_dir is not None else None
    fp32 = _fp32_model(run, card)
    picks, held_out = split_calib_eval(calib_items, eval_items, n, eval_n, seed=seed, run_dir=run)
    log.info("calibrating on %d images, evaluating on %d held-out images", len(picks), len(held_out))
    held_out, labelled = stand_in_eval(picks, held_out, calib_items, eval_items, eval_n)
    in_sample = check_disjoint(held_out, picks, eval_given=eval_dir is not None)

    with tempfile.TemporaryDirectory(prefix="binwatch-quant-") as tmp_s:
        tmp = Path(tmp_s)
        pre = preprocess_for_quant(fp32, tmp / "pre.onnx")
        reader = CalibrationReader(picks, card.input, card.input.name, batch_size=8)
        outs, bad = _calibrate(pre, tmp, targets, reader, calib_dir, method, progress)
        score = evaluate({"fp32": fp32, **outs}, held_out, card.input, threads=threads, progress=progress)
        fp32_acc = score.accuracy["fp32"] if labelled else 1.0
        report = QuantReport(len(picks), score.n, fp32_acc, max_drop, skipped_images=bad, in_sample=in_sample)
        _score(report, score, targets, run, labelled)
        if not report.passed and not force:
            failed = ", ".join(
                f"{r.target} drops {r.accuracy_drop:.2f} points" for r in report.results if not r.passed
            )
            raise CheckFailed(
                f"INT8 accuracy check failed ({failed}; limit {max_drop} points on {score.n} images); "
                "nothing written. Fix: calibrate on more or more representative images (--n, --calib), try "
                "--method percentile or entropy, or pass --force to keep the models anyway"
            )
        _record(run, outs, report, labelled)
    return report
