"""The rollout state file: everything ``push --resume`` and ``rollback`` need, written atomically
after every change (``./.binwatch-rollouts/<rollout_id>.json`` unless ``--state`` says otherwise).

It holds the published desired state, the stages, the index of the stage in progress, one record
per device (its result, whether our desired state was published to it, and the retained desired
state it had before, as it was on the broker) and the rollout's status. Broker credentials are
never written; the broker URL and topic prefix are, as defaults for resume and rollback.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deploy.plan import InputError

__all__ = ["DEFAULT_DIR", "BundleRecord", "DeviceRecord", "RolloutState", "load_state", "now_text"]

DEFAULT_DIR = Path(".binwatch-rollouts")

Result = Literal["pending", "active", "failed", "timeout"]
Status = Literal["running", "completed", "halted", "rolled_back"]


def now_text() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class BundleRecord(_Model):
    file: str
    name: str
    version: int
    sha256: str
    url: str


class DeviceRecord(_Model):
    stage: int = Field(description="index into stages")
    result: Result = "pending"
    detail: str = ""
    moved: bool = Field(default=False, description="our desired state was published to the device")
    previous: Optional[str] = Field(
        default=None, description="the retained desired payload before ours (text); null: there was none"
    )
    rolled_back: bool = False
    ts: Optional[str] = Field(default=None, description="when the result was decided")


class RolloutState(_Model):
    kind: Literal["binwatch.rollout"] = "binwatch.rollout"
    format: Literal[1] = 1
    rollout_id: str
    site: str
    prefix: str
    broker: str
    created: str = Field(default_factory=now_text)
    updated: str = Field(default_factory=now_text)
    bundle: BundleRecord
    desired: str = Field(description="the ModelDesired payload published to every device (JSON text)")
    canary: int = Field(default=0, description="devices in the canary stage (stage 0 when > 0)")
    stages: list[list[str]]
    stage: int = Field(default=0, description="index of the stage in progress; len(stages) when done")
    max_failures: float
    allowed_failures: int
    stage_timeout_s: float
    soak_s: float = Field(default=0.0, description="seconds a passed stage is watched for roll-backs")
    status: Status = "running"
    halt_reason: str = ""
    devices: dict[str, DeviceRecord]
    skipped: dict[str, str] = Field(default_factory=dict, description="device -> why it was left out")

    def failures(self) -> list[str]:
        return [d for d, r in self.devices.items() if r.result in ("failed", "timeout")]

    def moved(self) -> list[str]:
        return [d for d, r in self.devices.items() if r.moved]

    def save(self, path: Path) -> None:
        from contract.files import write_atomic

        self.updated = now_text()
        write_atomic(path, json.dumps(self.model_dump(mode="json"), indent=2) + "\n")


def load_state(path: Path) -> RolloutState:
    """Read a state file; InputError naming the file and the first bad field."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"{path}: cannot read the rollout state ({e.strerror or e})") from e
    try:
        return RolloutState.model_validate_json(text)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "file"
        raise InputError(f"{path}: not a binwatch rollout state ({where}: {first.get('msg')})") from e
