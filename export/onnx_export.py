"""PyTorch run -> FP32 ONNX (``binwatch export onnx RUN``).

Uses the ``torch.export``-based exporter (``dynamo=True``, the default since PyTorch 2.9) with a
dynamic batch axis; input and output tensor names come from the model card, so every backend
(ONNX Runtime, TensorRT) finds its tensors by the names the agent reads from ``card.json``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from contract.card import ModelCard
from contract.files import atomic_path
from export.artifacts import FP32_ONNX, onnx_opset, read_card
from export.errors import CheckFailed, ExportError

if TYPE_CHECKING:
    from export.parity import ParityReport

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_OPSET", "MIN_OPSET", "export_model", "export_run", "load_run_model"]

DEFAULT_OPSET = 18  # the torch.export-based exporter's lowest native opset
MIN_OPSET = 17
MAX_BATCH_DIM = 4096


def load_run_model(run_dir: Path | str) -> tuple[Any, ModelCard]:
    """``(torch model in eval mode on CPU, card)`` of a run folder; problems are ExportError."""
    from training.model import load_run

    run = Path(run_dir)
    read_card(run)  # a clear error for a folder without a (valid) card
    try:
        return load_run(run)
    except FileNotFoundError as e:
        raise ExportError(f"{e}. Fix: export a run folder written by `binwatch train --out RUN`") from e
    except (RuntimeError, ValueError) as e:  # state dict does not fit the card's arch/head
        raise ExportError(
            f"{run}/weights.pt does not match the card (model {e.__class__.__name__}: {str(e)[:300]}). "
            "Fix: the card's model.arch and model.num_classes must describe the saved weights"
        ) from e


def export_model(model: Any, card: ModelCard, out_path: Path, opset: int = DEFAULT_OPSET) -> Path:
    """Export a torch module (eval mode) to ``out_path`` with the card's tensor names and a dynamic batch."""
    import torch

    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old: binwatch exports opset {MIN_OPSET} or newer")
    spec = card.input
    shape = (2, 3, spec.height, spec.width) if spec.layout == "NCHW" else (2, spec.height, spec.width, 3)
    example = torch.zeros(shape, dtype=torch.float32)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH_DIM)
    model = model.eval().cpu()
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx"):  # pass-by-pass INFO chatter
        logging.getLogger(noisy).setLevel(logging.WARNING)
    log.info(
        "exporting %s to ONNX (opset %d, input %s %s)", card.model.arch, opset, spec.name, tuple(shape[1:])
    )
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                (example,),
                None,
                input_names=[spec.name],
                output_names=[card.output.name],
                opset_version=opset,
                dynamo=True,
                dynamic_shapes=({0: batch},),
                external_data=False,
                verbose=False,
            )
    except Exception as e:
        raise ExportError(f"torch.onnx.export failed for {card.model.arch}: {type(e).__name__}: {e}") from e
    assert program is not None
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        program.save(str(tmp), external_data=False)
    got = onnx_opset(out_path)
    if got != opset:
        log.warning("requested opset %d, the exporter wrote opset %d", opset, got)
    return out_path


def export_run(
    run_dir: Path | str,
    out_path: Optional[Path | str] = None,
    *,
    opset: int = DEFAULT_OPSET,
    atol: Optional[float] = None,
    images: Optional[Sequence[Path]] = None,
    n_parity: int = 16,
    record: bool = True,
) -> tuple[Path, ParityReport]:
    """Export, check parity against PyTorch and record the FP32 artifact in ``RUN/card.json``.

    Raises :class:`CheckFailed` (and records nothing) when parity is above tolerance.
    """
    from export.artifacts import record_artifact
    from export.parity import DEFAULT_ATOL, check_parity, parity_inputs

    run = Path(run_dir)
    model, card = load_run_model(run)
    out = Path(out_path) if out_path is not None else run / FP32_ONNX
    export_model(model, card, out, opset)
    x, source = parity_inputs(card, images, n=n_parity)
    report = check_parity(model, out, x, atol=DEFAULT_ATOL if atol is None else atol, source=source)
    if not report.passed:
        raise CheckFailed(
            f"{out}: {report.summary()}. The ONNX model does not reproduce PyTorch; it was left in place "
            "but not recorded in the card. Fix: try another --opset, or report the model"
        )
    if record:
        inside = out.resolve().is_relative_to(run.resolve())
        if inside:
            record_artifact(run, out, kind="onnx", precision="fp32", target="any", opset=onnx_opset(out))
        else:
            log.info("%s is outside %s: not recorded in the card", out, run)
    return out, report
