"""The ``cameras:`` config section: one entry per camera (source, kind, trigger, rates, watchdog),
and the Jetson CSI options. Unknown keys are refused."""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contract.fields import check_id

__all__ = ["CameraConfig", "CsiOptions"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _id(value: str, what: str) -> str:
    return check_id(value, what)


class CsiOptions(_Section):
    """Jetson CSI camera (``nvarguscamerasrc``) settings; see :func:`agent.intake.sources.csi_pipeline`."""

    sensor_id: int = Field(default=0, ge=0)
    width: int = Field(default=1920, gt=0)
    height: int = Field(default=1080, gt=0)
    fps: int = Field(default=30, gt=0)
    flip_method: int = Field(default=0, ge=0, le=7)
    out_width: Optional[int] = Field(default=None, gt=0)
    out_height: Optional[int] = Field(default=None, gt=0)
    sensor_mode: Optional[int] = Field(default=None, ge=0)


class CameraConfig(_Section):
    name: str = Field(description="camera id (one MQTT topic level)")
    source: Union[int, str] = Field(
        description="device index (0), /dev/videoN, rtsp://... or http://... URL, a GStreamer pipeline "
        "ending in appsink, 'csi' or 'csi:N' (Jetson), a video file, or a replay folder (ABID layout)"
    )
    kind: Literal["auto", "device", "v4l2", "url", "gstreamer", "csi", "file", "replay"] = Field(
        default="auto", description="what source is; auto guesses from its form"
    )
    csi: Optional[CsiOptions] = None
    width: Optional[int] = Field(default=None, gt=0, description="requested capture width (cameras)")
    height: Optional[int] = Field(default=None, gt=0, description="requested capture height (cameras)")
    fps: Optional[float] = Field(default=None, gt=0, description="requested camera frame rate")
    replay_rate: Optional[float] = Field(
        default=None, gt=0, description="replay/video: frames per second (default: as fast as processed)"
    )
    loop: bool = Field(default=False, description="replay/video: start again at the end")
    resume: bool = Field(default=True, description="replay: continue where a crashed run stopped")
    drop_frames: Optional[bool] = Field(
        default=None, description="latest frame wins (default: yes for cameras, no for replay/video)"
    )
    trigger: Literal["auto", "per_frame", "event"] = Field(
        default="auto",
        description="per_frame: every frame is a presentation (replay frames carry their bin id; "
        "cameras need bin_id); event: decide on MQTT bin events; auto: per_frame for replay, else event",
    )
    bin_id: Optional[str] = Field(default=None, description="per_frame camera fixed on one bin")
    interval_s: float = Field(
        default=0.0, ge=0, description="per_frame cameras: least seconds between decisions"
    )
    backoff_min_s: float = Field(default=0.5, gt=0, description="first reopen delay of a lost camera")
    backoff_max_s: float = Field(default=30.0, gt=0, description="reopen delay cap")
    stale_after_s: float = Field(
        default=10.0, ge=0, description="a read blocked this long = stalled (0: never)"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _id(v, "camera name")

    @field_validator("bin_id")
    @classmethod
    def _bin(cls, v: Optional[str]) -> Optional[str]:
        return None if v is None else _id(v, "bin_id")

    @field_validator("source")
    @classmethod
    def _source(cls, v: Union[int, str]) -> Union[int, str]:
        if isinstance(v, bool):
            raise ValueError("source must be a device index, a path, a URL or a pipeline")
        if isinstance(v, int):
            if v < 0:
                raise ValueError("a device index is >= 0")
            return v
        if not v.strip():
            raise ValueError("source must not be empty")
        return v.strip()

    @model_validator(mode="after")
    def _check(self) -> CameraConfig:
        if self.backoff_max_s < self.backoff_min_s:
            raise ValueError("backoff_max_s must be >= backoff_min_s")
        return self

    @property
    def resolved_kind(self) -> str:
        from agent.intake.sources import classify_source

        return self.kind if self.kind != "auto" else classify_source(self.source)

    @property
    def resolved_trigger(self) -> str:
        if self.trigger != "auto":
            return self.trigger
        return "per_frame" if self.resolved_kind == "replay" or self.bin_id else "event"
