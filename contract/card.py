"""The model card (``card.json``): written by training, completed by export, read by the agent.

It is the data config that travels with the weights (docs/architecture.md, "Model card and
bundle"): how a frame is brought to the model's input, what the output heads mean, how the model
scored, and which artifacts exist.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from contract.base import ContractError, Strict, Versioned, utcnow
from contract.files import write_atomic

__all__ = [
    "Artifact",
    "BatchProfile",
    "DecisionDefaults",
    "InputSpec",
    "Metrics",
    "ModelCard",
    "ModelSpec",
    "OutputSpec",
    "ParentRun",
    "ResizeSpec",
    "TrainedFrom",
    "load_card",
    "save_card",
]


class ResizeSpec(Strict):
    """How a camera frame (any size) is brought to ``input.height x input.width``.

    ``stretch`` resizes straight to the target (the whole bin stays in view, so no item is cropped
    away, which matters for counting); ``letterbox`` keeps the aspect ratio and pads with ``pad``.
    Both sides (training's eval transform and the agent's numpy preprocessing) use OpenCV's
    ``cv2.resize`` with this interpolation, so they agree to 1e-3.
    """

    method: Literal["stretch", "letterbox"] = "stretch"
    interpolation: Literal["area", "linear", "cubic"] = "area"
    pad: int = Field(default=0, ge=0, le=255)


class InputSpec(Strict):
    name: str = "input"
    height: int = Field(gt=0, le=4096)
    width: int = Field(gt=0, le=4096)
    color: Literal["RGB", "BGR"] = "RGB"
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    resize: ResizeSpec = Field(default_factory=ResizeSpec)
    # Applied to pixel values scaled to [0, 1]: (x / 255 - mean) / std, per channel in ``color`` order.
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @field_validator("std")
    @classmethod
    def _positive_std(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(s <= 0 for s in v):
            raise ValueError("every std must be > 0")
        return v


class OutputSpec(Strict):
    name: str = "logits"
    counts: list[int] = Field(min_length=2, description="head index -> item count")
    overflow: bool = Field(default=False, description="the last class means 'this many or more'")
    temperature: float = Field(default=1.0, gt=0, description="fitted on validation data")

    @field_validator("counts")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        if any(c < 0 for c in v) or any(b <= a for a, b in itertools.pairwise(v)):
            raise ValueError("counts must be non-negative and strictly increasing")
        return v

    def class_of(self, count: int) -> Optional[int]:
        """Head index for an item count; beyond the head maps to the overflow class (else None)."""
        if count in self.counts:
            return self.counts.index(count)
        if self.overflow and count > self.counts[-1]:
            return len(self.counts) - 1
        return None


class ModelSpec(Strict):
    arch: str = Field(description="torchvision model name, e.g. resnet18")
    num_classes: int = Field(gt=1)
    pretrained: Optional[str] = Field(default=None, description="torchvision weights enum used at init")


class ParentRun(Strict):
    """The run a fine-tuned run started from (``binwatch train --init RUN``), as its card named it."""

    run_id: str = Field(description="the parent run folder's name")
    name: str = Field(description="the parent card's model name")
    version: int = Field(ge=0, description="the parent card's model version")
    weights_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the weights.pt loaded")


class TrainedFrom(Strict):
    run_id: str
    git_sha: Optional[str] = None
    data: Optional[str] = Field(default=None, description="dataset name or path trained on")
    split: Optional[str] = None
    epochs: Optional[int] = None
    parent: Optional[ParentRun] = Field(
        default=None, description="card version 2: the run whose weights this run was fine-tuned from"
    )


class Metrics(Strict):
    """Scores on one named dataset and split (abid_challenge definitions for accuracy and RMSE)."""

    dataset: str
    split: str
    n: int = Field(ge=0)
    accuracy: float = Field(ge=0, le=1)
    rmse: float = Field(ge=0)
    mae: Optional[float] = Field(default=None, ge=0)
    per_class_accuracy: dict[str, float] = Field(default_factory=dict)
    ece: Optional[float] = Field(default=None, ge=0, description="expected calibration error (after T)")
    ece_uncalibrated: Optional[float] = Field(default=None, ge=0)
    model: Optional[str] = Field(
        default=None, description="which artifact: pytorch, onnx-fp32, int8-cpu, ..."
    )
    is_synthetic: bool = Field(default=False, description="synthetic-bin scores are pipeline checks only")
    calibrated_in_sample: Optional[bool] = Field(
        default=None,
        description="True: the temperature (and decision thresholds) were fitted on images that are "
        "also scored here (e.g. --split val), so ece is in-sample; None: not recorded (older cards)",
    )
    training_images: Optional[int] = Field(
        default=None,
        ge=0,
        description="scored images from the run's training split (--split all): above 0 the scores are "
        "not held-out; None: not recorded (older cards)",
    )


class DecisionDefaults(Strict):
    """Thresholds on p_expected chosen on validation data (docs/evaluation.md)."""

    mismatch_threshold: float = Field(ge=0, le=1)
    match_threshold: float = Field(ge=0, le=1)
    false_alarm_rate: Optional[float] = Field(default=None, ge=0, le=1)
    recall: Optional[float] = Field(default=None, ge=0, le=1)
    fitted_on: Optional[str] = None

    @model_validator(mode="after")
    def _ordered(self) -> DecisionDefaults:
        if self.mismatch_threshold > self.match_threshold:
            raise ValueError("mismatch_threshold must be <= match_threshold")
        return self


class BatchProfile(Strict):
    min: int = Field(ge=1)
    opt: int = Field(ge=1)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> BatchProfile:
        if not (self.min <= self.opt <= self.max):
            raise ValueError("batch profile needs min <= opt <= max")
        return self


class Artifact(Strict):
    kind: Literal["onnx", "tensorrt", "pytorch"]
    file: str = Field(min_length=1, description="path relative to the card's folder")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    precision: Literal["fp32", "fp16", "int8"]
    target: Literal["cpu", "tensorrt", "any"]
    opset: Optional[int] = None
    trt_version: Optional[str] = None
    compute_capability: Optional[str] = None
    l4t: Optional[str] = None
    batch_profile: Optional[BatchProfile] = None
    accuracy: Optional[float] = Field(default=None, ge=0, le=1)
    accuracy_drop: Optional[float] = Field(default=None, description="points vs FP32 on the same set")

    @field_validator("file")
    @classmethod
    def _relative(cls, v: str) -> str:
        p = Path(v)
        if p.is_absolute() or ".." in p.parts:
            raise ValueError("artifact file must be a relative path inside the bundle")
        return v


class ModelCard(Versioned):
    SCHEMA = "binwatch.card"
    VERSION = 2
    OLDER_VERSIONS = (1,)  # version 1's trained_from had no ``parent``

    name: str = Field(min_length=1, max_length=128)
    version: int = Field(ge=0, description="monotonic model version")
    created: datetime = Field(default_factory=utcnow)
    trained_from: Optional[TrainedFrom] = None
    model: ModelSpec
    input: InputSpec
    output: OutputSpec
    metrics: list[Metrics] = Field(default_factory=list)
    decision: Optional[DecisionDefaults] = None
    artifacts: list[Artifact] = Field(default_factory=list)

    @model_validator(mode="after")
    def _heads_agree(self) -> ModelCard:
        if self.model.num_classes != len(self.output.counts):
            raise ValueError(
                f"model.num_classes={self.model.num_classes} but output.counts has {len(self.output.counts)}"
            )
        return self

    def artifact(self, kind: str, precision: str, target: Optional[str] = None) -> Optional[Artifact]:
        for a in self.artifacts:
            if a.kind == kind and a.precision == precision and (target is None or a.target == target):
                return a
        return None


def load_card(path: Path | str) -> ModelCard:
    """Read ``card.json`` (or the one inside a folder); errors name the file and the field."""
    p = Path(path)
    if p.is_dir():
        p = p / "card.json"
    if p.is_dir():  # a folder named card.json
        raise ContractError(f"no model card at {p}: expected a run folder or bundle with card.json")
    return ModelCard.read_file(
        p, missing="no model card at {path}: expected a run folder or bundle with card.json"
    )


def save_card(card: ModelCard, path: Path | str) -> Path:
    """Write atomically (temp file then ``os.replace``)."""
    p = Path(path)
    if p.is_dir():
        p = p / "card.json"
    data = card.model_dump_json(by_alias=True, indent=2).encode("utf-8") + b"\n"
    return write_atomic(p, data, mode=0o644)  # a run folder is shared with other users
