"""Frame sources: cameras (OpenCV device / V4L2 / RTSP-HTTP URL / GStreamer / Jetson CSI), video
files, and replay folders in ABID layout.

A source is opened and read by one capture thread (:mod:`agent.intake.capture`). ``read()`` returns a
:class:`Frame`, raises :class:`SourceLost` when the camera is gone (the watchdog reopens it with
backoff) or :class:`EndOfStream` when a file or replay folder is finished.
"""

from __future__ import annotations

import logging
import os
import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union
from urllib.parse import urlparse

import numpy as np

from contract import abid

log = logging.getLogger(__name__)

__all__ = [
    "EndOfStream",
    "Frame",
    "FrameSource",
    "OpenCVSource",
    "ReplaySource",
    "SourceLost",
    "classify_source",
    "csi_pipeline",
    "display_source",
    "make_source",
]

URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")


class SourceLost(RuntimeError):
    """The camera cannot be opened or stopped delivering frames."""


class EndOfStream(Exception):
    """A finite source (video file, replay folder) has no more frames."""


@dataclass
class Frame:
    """One captured frame. ``image`` is BGR uint8; ``jpeg`` holds the original encoded bytes
    when the source had them (replay), so a snapshot needs no re-encoding."""

    camera: str
    image: np.ndarray
    ts: float  # wall-clock capture time (epoch seconds)
    index: int  # position in the source (replay: index into its key list)
    mono: float = field(default_factory=time.monotonic)  # for latency measurement
    jpeg: Optional[bytes] = None
    bin_id: Optional[str] = None  # replay: the key
    expected_qty: Optional[int] = None  # replay: from the frame's own metadata
    tensor: Optional[np.ndarray] = None  # preprocessed in the capture thread when possible
    tensor_spec: Any = None  # the InputSpec the tensor was made with
    decode_s: float = 0.0
    preprocess_s: float = 0.0


class FrameSource(ABC):
    """Base class. ``live`` sources drop stale frames (latest wins); finite ones block instead."""

    live: bool = True
    kind: str = "abstract"

    def __init__(self, name: str) -> None:
        self.name = name
        self.decode_errors = 0
        self.skipped: dict[str, int] = {}

    def count_skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def read(self) -> Frame: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def describe(self) -> str:
        return self.kind

    @property
    def position(self) -> int:
        return 0


# -- OpenCV cameras and files -----------------------------------------------------------------


def csi_pipeline(
    sensor_id: int = 0,
    width: int = 1920,
    height: int = 1080,
    fps: int = 30,
    flip_method: int = 0,
    out_width: Optional[int] = None,
    out_height: Optional[int] = None,
    sensor_mode: Optional[int] = None,
) -> str:
    """GStreamer pipeline string for a Jetson CSI camera (``nvarguscamerasrc``) ending in an
    ``appsink`` that OpenCV reads as BGR (latest buffer only)."""
    mode = f" sensor-mode={sensor_mode}" if sensor_mode is not None else ""
    ow, oh = out_width or width, out_height or height
    return (
        f"nvarguscamerasrc sensor-id={sensor_id}{mode} ! "
        f"video/x-raw(memory:NVMM), width=(int){width}, height=(int){height}, "
        f"framerate=(fraction){fps}/1, format=(string)NV12 ! "
        f"nvvidconv flip-method={flip_method} ! "
        f"video/x-raw, width=(int){ow}, height=(int){oh}, format=(string)BGRx ! "
        f"videoconvert ! video/x-raw, format=(string)BGR ! appsink drop=true max-buffers=1 sync=false"
    )


def classify_source(source: Union[int, str]) -> str:
    """``device`` | ``v4l2`` | ``url`` | ``gstreamer`` | ``csi`` | ``replay`` | ``file``."""
    if isinstance(source, int) or (isinstance(source, str) and source.strip().isdigit()):
        return "device"
    s = source.strip()
    if s.startswith("/dev/video"):
        return "v4l2"
    if s == "csi" or s.startswith("csi:"):
        return "csi"
    if s.startswith("replay:"):
        return "replay"
    scheme = urlparse(s).scheme.lower()
    if scheme in URL_SCHEMES:
        return "url"
    if "!" in s:
        return "gstreamer"
    p = Path(s).expanduser()
    if p.is_dir() or (not p.suffix and (p / abid.IMAGES_DIR).exists()):
        return "replay"
    return "file"


def display_source(source: Union[int, str]) -> str:
    """``source`` for logs and status: a URL's password is replaced by ``***``."""
    s = str(source)
    u = urlparse(s)
    if u.scheme.lower() in URL_SCHEMES and u.password:
        netloc = f"{u.username}:***@{u.hostname}" + (f":{u.port}" if u.port else "")
        return u._replace(netloc=netloc).geturl()
    return s


def _has_gstreamer() -> bool:
    import cv2

    info = cv2.getBuildInformation()
    i = info.find("GStreamer:")
    return i >= 0 and info[i : i + 60].split(":", 1)[1].strip().upper().startswith("YES")


class OpenCVSource(FrameSource):
    """``cv2.VideoCapture`` over a device index, V4L2 path, URL, GStreamer pipeline or video file."""

    def __init__(
        self,
        name: str,
        target: Union[int, str],
        kind: str,
        *,
        width: Optional[int] = None,
        height: Optional[int] = None,
        fps: Optional[float] = None,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 10.0,
    ) -> None:
        super().__init__(name)
        self.target = int(target) if kind == "device" else target
        self.kind = kind
        self.live = kind != "file"
        self.width, self.height, self.fps = width, height, fps
        self.open_timeout_s, self.read_timeout_s = open_timeout_s, read_timeout_s
        self._cap = None
        self._index = 0

    def describe(self) -> str:
        return f"{self.kind}:{display_source(self.target)}"

    def open(self) -> None:
        import cv2

        self.close()
        api = cv2.CAP_ANY
        params: list[int] = []
        target = self.target
        if self.kind == "v4l2":
            # OpenCV's V4L2 backend opens devices by index: /dev/video2 (or a by-id link to it) -> 2
            api = cv2.CAP_V4L2
            m = re.match(r"^/dev/video(\d+)$", os.path.realpath(str(self.target)))
            if m is None:
                raise SourceLost(f"camera {self.name}: {self.target} is not a /dev/videoN device")
            target = int(m.group(1))
        elif self.kind in ("gstreamer", "csi"):
            if not _has_gstreamer():
                raise SourceLost(
                    f"camera {self.name}: this OpenCV has no GStreamer support (pip wheels do not); "
                    "on a Jetson use JetPack's python3-opencv, or give a device index / URL instead"
                )
            api = cv2.CAP_GSTREAMER
        elif self.kind in ("url", "file"):
            api = cv2.CAP_FFMPEG
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                int(self.open_timeout_s * 1000),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                int(self.read_timeout_s * 1000),
            ]
        if self.kind == "file" and not Path(str(self.target)).is_file():
            raise SourceLost(f"camera {self.name}: video file {self.target} not found")
        if self.kind == "v4l2" and not Path(str(self.target)).exists():
            raise SourceLost(f"camera {self.name}: cannot open {self.describe()} (no such device)")
        cap = cv2.VideoCapture(target, api, params) if params else cv2.VideoCapture(target, api)
        if not cap.isOpened():
            cap.release()
            raise SourceLost(f"camera {self.name}: cannot open {self.describe()}")
        if self.live:
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # latest frame, not a backlog
            if self.width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            if self.height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            if self.fps:
                cap.set(cv2.CAP_PROP_FPS, self.fps)
        self._cap = cap
        self._index = 0
        log.info("camera %s: opened %s", self.name, self.describe())

    def read(self) -> Frame:
        if self._cap is None:
            raise SourceLost(f"camera {self.name}: not open")
        ok, img = self._cap.read()
        if not ok or img is None or img.size == 0:
            if self.kind == "file":
                raise EndOfStream(f"camera {self.name}: end of {self.target}")
            raise SourceLost(f"camera {self.name}: no frame from {self.describe()} (camera gone?)")
        self._index += 1
        return Frame(camera=self.name, image=img, ts=time.time(), index=self._index)

    @property
    def position(self) -> int:
        return self._index

    def close(self) -> None:
        if self._cap is not None:
            try:
                self._cap.release()
            finally:
                self._cap = None


# -- replay folders ---------------------------------------------------------------------------


class ReplaySource(FrameSource):
    """An ABID-layout folder replayed in natural key order.

    Each frame carries its bin id (the key) and the expected quantity from its own metadata
    (``None`` when the metadata is missing or bad). Empty and corrupt JPEGs are counted
    (``skipped['empty-image'|'corrupt-image']``) and skipped. ``start`` resumes at a position.
    If the folder disappears the source is lost (the watchdog retries it).
    """

    live = False
    kind = "replay"

    def __init__(self, name: str, root: Union[str, Path], *, start: int = 0) -> None:
        super().__init__(name)
        root_s = str(root)
        self.root = Path(root_s[len("replay:") :] if root_s.startswith("replay:") else root_s).expanduser()
        self._keys: list[str] = []
        self._pos = start

    def describe(self) -> str:
        return f"replay:{self.root}"

    @property
    def position(self) -> int:
        return self._pos

    @property
    def total(self) -> int:
        return len(self._keys)

    def open(self) -> None:
        try:
            self._keys = abid.list_keys(self.root)
        except (abid.AbidError, OSError) as e:
            raise SourceLost(f"camera {self.name}: replay folder unusable: {e}") from e
        if self._pos > len(self._keys):
            self._pos = len(self._keys)
        log.info(
            "camera %s: replaying %d images from %s (starting at %d)",
            self.name,
            len(self._keys),
            self.root,
            self._pos,
        )

    def rewind(self) -> None:
        self._pos = 0

    def read(self) -> Frame:
        from agent.intake.decode import DecodeError, decode_jpeg

        while True:
            if self._pos >= len(self._keys):
                raise EndOfStream(f"camera {self.name}: replay of {self.root} finished")
            if not self.root.is_dir():
                raise SourceLost(f"camera {self.name}: replay folder {self.root} disappeared")
            index = self._pos
            key = self._keys[index]
            self._pos += 1
            image_path = self.root / abid.IMAGES_DIR / f"{key}{abid.IMAGE_SUFFIX}"
            try:
                data = image_path.read_bytes()
            except FileNotFoundError:
                self.count_skip(abid.MISSING_IMAGE)
                log.warning("camera %s: %s: image missing, skipped", self.name, image_path)
                continue
            except OSError as e:
                self.count_skip("unreadable-image")
                log.warning("camera %s: %s: cannot read (%s), skipped", self.name, image_path, e)
                continue
            t0 = time.perf_counter()
            try:
                img = decode_jpeg(data)
            except DecodeError as e:
                self.decode_errors += 1
                self.count_skip(abid.EMPTY_IMAGE if not data else "corrupt-image")
                log.warning("camera %s: %s: %s, skipped", self.name, image_path, e)
                continue
            decode_s = time.perf_counter() - t0
            expected: Optional[int] = None
            try:
                meta = abid.read_metadata(self.root / abid.METADATA_DIR / f"{key}{abid.METADATA_SUFFIX}")
                expected = abid.expected_quantity(meta)
            except (abid.AbidError, ValueError) as e:
                log.debug("camera %s: %s has no usable metadata: %s", self.name, key, e)
            return Frame(
                camera=self.name,
                image=img,
                ts=time.time(),
                index=index,
                jpeg=data,
                bin_id=key,
                expected_qty=expected,
                decode_s=decode_s,
            )


def make_source(cam: Any, *, start: int = 0) -> FrameSource:
    """Build the source of a :class:`agent.config.CameraConfig`."""
    kind = cam.kind if getattr(cam, "kind", "auto") != "auto" else classify_source(cam.source)
    if kind == "replay":
        return ReplaySource(cam.name, str(cam.source), start=start)
    if kind == "csi":
        opts = dict(cam.csi.model_dump()) if getattr(cam, "csi", None) is not None else {}
        src = str(cam.source)
        if src.startswith("csi:") and src[4:].isdigit():
            opts["sensor_id"] = int(src[4:])
        return OpenCVSource(cam.name, csi_pipeline(**opts), "csi")
    return OpenCVSource(
        cam.name,
        cam.source,
        kind,
        width=getattr(cam, "width", None),
        height=getattr(cam, "height", None),
        fps=getattr(cam, "fps", None),
    )
