"""A tiny ONNX count model in a real bundle folder, built without torch (onnx.helper).

Global average pool -> Gemm -> 6 logits: fast enough for end-to-end tests on a 2-core box, and
its verdicts vary from image to image (the weights spread the channel means over the classes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from contract.bundle import build_manifest, sha256_file, write_manifest
from contract.card import (
    Artifact,
    DecisionDefaults,
    InputSpec,
    ModelCard,
    ModelSpec,
    OutputSpec,
    save_card,
)

COUNTS = [0, 1, 2, 3, 4, 5]


def tiny_onnx(path: Path, *, size: int = 32, seed: int = 0, scale: float = 4.0, num_classes: int = 6) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((num_classes, 3)) * scale).astype(np.float32)
    b = (rng.standard_normal(num_classes) * 0.5).astype(np.float32)
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "B"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny-count",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", num_classes])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="binwatch-tests"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def make_tiny_bundle(
    out: Path,
    *,
    version: int = 1,
    size: int = 32,
    seed: int = 0,
    scale: float = 4.0,
    decision: Optional[tuple[float, float]] = (0.1, 0.3),
    overflow: bool = True,
    manifest: bool = True,
    name: str = "tiny-count",
) -> Path:
    """A bundle folder: card.json + model.fp32.onnx (+ MANIFEST.json)."""
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = tiny_onnx(out / "model.fp32.onnx", size=size, seed=seed, scale=scale)
    card = ModelCard(
        name=name,
        version=version,
        model=ModelSpec(arch="tiny-gap", num_classes=len(COUNTS)),
        input=InputSpec(height=size, width=size),
        output=OutputSpec(counts=COUNTS, overflow=overflow, temperature=1.0),
        decision=DecisionDefaults(mismatch_threshold=decision[0], match_threshold=decision[1])
        if decision
        else None,
        artifacts=[
            Artifact(
                kind="onnx",
                file="model.fp32.onnx",
                sha256=sha256_file(onnx_path),
                precision="fp32",
                target="any",
                opset=17,
            )
        ],
    )
    save_card(card, out)
    if manifest:
        write_manifest(out, build_manifest(out, model_name=name, model_version=version))
    return out
