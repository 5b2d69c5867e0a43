"""Run-folder bookkeeping shared by the export steps: file names, card loading, artifact rows.

A run folder (``RUN/``) holds ``card.json`` and ``weights.pt`` from training; export adds
``model.fp32.onnx``, ``model.int8-trt.onnx`` and ``model.int8-cpu.onnx`` next to them and records
each one as an :class:`~contract.card.Artifact` row of the card (file relative to the card).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from contract.base import ContractError
from contract.card import Artifact, ModelCard, load_card, save_card
from contract.files import sha256_file
from export.errors import ExportError

log = logging.getLogger(__name__)

__all__ = [
    "FP32_ONNX",
    "INT8_CPU_ONNX",
    "INT8_TRT_ONNX",
    "check_onnx_file",
    "onnx_opset",
    "read_card",
    "record_artifact",
    "upsert_artifact",
]

FP32_ONNX = "model.fp32.onnx"
INT8_TRT_ONNX = "model.int8-trt.onnx"
INT8_CPU_ONNX = "model.int8-cpu.onnx"


def read_card(folder: Path | str) -> ModelCard:
    """The card of a run folder or bundle; a missing or invalid card is an :class:`ExportError`."""
    folder = Path(folder)
    if not folder.exists():
        raise ExportError(f"{folder} does not exist: pass a run folder written by `binwatch train`")
    try:
        return load_card(folder)
    except ContractError as e:
        raise ExportError(
            f"{e}. Fix: point at a run folder written by `binwatch train --out RUN` (it holds card.json "
            "and weights.pt), or repair the card (`binwatch contract validate` names the field)"
        ) from e


def check_onnx_file(path: Path | str) -> Any:
    """Load and check an ONNX file; return the ``onnx.ModelProto``. Corrupt files raise ExportError.

    The check itself is the agent-side builder's (one place for the rule and its message)."""
    from agent.surface import BackendError, load_checked_onnx

    try:
        return load_checked_onnx(Path(path))
    except BackendError as e:
        raise ExportError(str(e)) from e


def onnx_opset(model_or_path: Any) -> int:
    """The default-domain opset of an ONNX model (proto or path)."""
    import onnx

    model = (
        onnx.load(str(model_or_path), load_external_data=False)
        if isinstance(model_or_path, (str, Path))
        else model_or_path
    )
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    raise ExportError("ONNX model has no default-domain opset import")


def upsert_artifact(card: ModelCard, artifact: Artifact) -> ModelCard:
    """A copy of ``card`` whose artifact list holds ``artifact`` in place of any row for the same file."""
    rows = [a for a in card.artifacts if a.file != artifact.file]
    rows.append(artifact)
    return card.model_copy(update={"artifacts": rows})


def record_artifact(folder: Path | str, file: Path | str, **fields: Any) -> ModelCard:
    """Hash ``file`` (inside ``folder``), write its artifact row into ``folder/card.json``, return card."""
    folder = Path(folder)
    file = Path(file)
    rel = file.resolve().relative_to(folder.resolve()).as_posix()
    card = read_card(folder)
    artifact = Artifact(file=rel, sha256=sha256_file(file), **fields)
    card = upsert_artifact(card, artifact)
    save_card(card, folder / "card.json")
    log.info(
        "recorded artifact %s (%s %s) in %s", rel, artifact.precision, artifact.target, folder / "card.json"
    )
    return card
