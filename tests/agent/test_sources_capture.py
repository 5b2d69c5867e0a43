"""Frame sources and capture threads: replay order and bad files, video files, source kinds,
latest-frame-wins with dropped-frame counts, and the watchdog's reopen with backoff."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.camera_config import CameraConfig
from agent.intake.capture import CameraWorker, CaptureManager
from agent.intake.hub import CameraState, FrameHub
from agent.intake.sources import (
    EndOfStream,
    Frame,
    FrameSource,
    OpenCVSource,
    ReplaySource,
    SourceLost,
    classify_source,
    csi_pipeline,
    display_source,
    make_source,
)
from tests.agent.mqtt_helpers import wait_until


def _abid(root: Path, n: int, *, size: int = 24) -> Path:
    (root / "bin-images").mkdir(parents=True)
    (root / "metadata").mkdir()
    for i in range(n):
        key = f"{i + 1:05d}"
        img = np.full((size, size, 3), i * 10 % 255, np.uint8)
        cv2.imwrite(str(root / "bin-images" / f"{key}.jpg"), img)
        (root / "metadata" / f"{key}.json").write_text(f'{{"EXPECTED_QUANTITY": {i % 4}}}')
    return root


def _drain(src: FrameSource) -> list[Frame]:
    out = []
    while True:
        try:
            out.append(src.read())
        except EndOfStream:
            return out


def test_replay_gives_key_and_expected_in_fixed_order(tmp_path: Path) -> None:
    root = _abid(tmp_path / "bins", 5)
    (root / "bin-images" / "121.jpg").write_bytes((root / "bin-images" / "00001.jpg").read_bytes())
    src = ReplaySource("r", root)
    src.open()
    frames = _drain(src)
    assert [f.bin_id for f in frames] == ["00001", "00002", "00003", "00004", "00005", "121"]
    assert [f.expected_qty for f in frames] == [0, 1, 2, 3, 0, None]  # 121 has no metadata
    assert all(f.jpeg and f.image.shape == (24, 24, 3) for f in frames)
    assert [f.index for f in frames] == list(range(6))


def test_replay_counts_and_skips_corrupt_and_empty_jpegs(tmp_path: Path) -> None:
    root = _abid(tmp_path / "bins", 6)
    (root / "bin-images" / "00002.jpg").write_bytes(b"")
    (root / "bin-images" / "00004.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (root / "bin-images" / "00005.jpg").unlink()
    src = ReplaySource("r", root)
    src.open()
    frames = _drain(src)
    assert [f.bin_id for f in frames] == ["00001", "00003", "00006"]
    assert src.decode_errors == 2
    assert src.skipped == {"empty-image": 1, "corrupt-image": 1, "missing-image": 1}


def test_replay_resumes_at_a_position(tmp_path: Path) -> None:
    root = _abid(tmp_path / "bins", 5)
    src = ReplaySource("r", root, start=3)
    src.open()
    assert [f.bin_id for f in _drain(src)] == ["00004", "00005"]


def test_replay_folder_that_disappears_is_a_lost_source(tmp_path: Path) -> None:
    import shutil

    root = _abid(tmp_path / "bins", 3)
    src = ReplaySource("r", root)
    src.open()
    src.read()
    shutil.rmtree(root)
    with pytest.raises(SourceLost, match="disappeared"):
        src.read()
    with pytest.raises(SourceLost):
        ReplaySource("r", root).open()


def test_video_file_source_reads_frames_then_ends(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for i in range(7):
        w.write(np.full((24, 32, 3), i * 30, np.uint8))
    w.release()
    cam = CameraConfig(name="f", source=str(path))
    assert cam.resolved_kind == "file"
    src = make_source(cam)
    assert not src.live
    src.open()
    frames = _drain(src)
    src.close()
    assert len(frames) == 7 and frames[0].image.shape == (24, 32, 3)
    with pytest.raises(SourceLost, match="not found"):
        OpenCVSource("g", str(tmp_path / "nope.mp4"), "file").open()


def test_missing_v4l2_device_is_lost_not_a_crash() -> None:
    src = make_source(CameraConfig(name="usb", source="/dev/video99"))
    with pytest.raises(SourceLost, match="cannot open"):
        src.open()


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        (0, "device"),
        ("2", "device"),
        ("/dev/video1", "v4l2"),
        ("rtsp://10.0.0.1:554/s", "url"),
        ("https://cam.local/mjpg", "url"),
        ("csi", "csi"),
        ("csi:1", "csi"),
        ("videotestsrc ! videoconvert ! appsink", "gstreamer"),
        ("clip.mp4", "file"),
        ("replay:/data/bins", "replay"),
    ],
)
def test_classify_source(source: object, kind: str) -> None:
    assert classify_source(source) == kind  # type: ignore[arg-type]


def test_csi_pipeline_builder() -> None:
    p = csi_pipeline(
        sensor_id=1, width=1280, height=720, fps=60, flip_method=2, out_width=640, out_height=360
    )
    assert p.startswith("nvarguscamerasrc sensor-id=1 ! ")
    assert "width=(int)1280, height=(int)720, framerate=(fraction)60/1" in p
    assert "nvvidconv flip-method=2" in p and "width=(int)640, height=(int)360" in p
    assert p.endswith("appsink drop=true max-buffers=1 sync=false")
    src = make_source(CameraConfig(name="c", source="csi:3", csi={"width": 640, "height": 480}))
    assert isinstance(src, OpenCVSource) and "sensor-id=3" in str(src.target) and src.kind == "csi"


def test_display_source_hides_passwords() -> None:
    assert display_source("rtsp://u:pw@10.0.0.1:554/s") == "rtsp://u:***@10.0.0.1:554/s"
    assert display_source("rtsp://10.0.0.1/s") == "rtsp://10.0.0.1/s"


# -- capture threads ----------------------------------------------------------------------------


class CountingSource(FrameSource):
    """A live camera at the seam: frames as fast as asked; can fail to open / lose frames."""

    live = True
    kind = "test"

    def __init__(self, name: str, script: dict, start: int = 0) -> None:
        super().__init__(name)
        self.script = script
        self.n = 0

    def open(self) -> None:
        self.script["opens"] += 1
        if self.script["opens"] <= self.script.get("fail_opens", 0):
            raise SourceLost(f"camera {self.name}: cannot open (attempt {self.script['opens']})")

    def read(self) -> Frame:
        self.script["reads"] += 1
        if self.script["reads"] == self.script.get("lose_at", -1):
            raise SourceLost(f"camera {self.name}: unplugged")
        time.sleep(self.script.get("delay", 0.001))
        self.n += 1
        return Frame(camera=self.name, image=np.zeros((4, 4, 3), np.uint8), ts=time.time(), index=self.n)


def test_latest_frame_wins_and_drops_are_counted() -> None:
    cam = CameraConfig(name="c", source=0)
    hub, stop = FrameHub(), threading.Event()
    script = {"opens": 0, "reads": 0}
    mgr = CaptureManager([cam], hub, stop, source_factory=lambda c, start=0: CountingSource(c.name, script))
    mgr.start()
    try:
        wait_until(lambda: mgr.states["c"].frames >= 50, timeout=20)
        got = hub.take(8, timeout=1)
        assert len(got) == 1  # one slot: only the newest frame waits
        st = mgr.states["c"]
        assert st.state == "live"
        assert st.dropped >= st.frames - 2  # the rest were replaced unseen
        assert got[0].index >= 40
    finally:
        stop.set()
        mgr.join()
    assert mgr.states["c"].state == "stopped"


def test_finite_sources_block_instead_of_dropping(tmp_path: Path) -> None:
    root = _abid(tmp_path / "bins", 12)
    cam = CameraConfig(name="r", source=str(root))
    hub, stop = FrameHub(), threading.Event()
    finished = []
    mgr = CaptureManager([cam], hub, stop, batch=4)
    mgr.on_finished = finished.append
    mgr.start()
    seen = []
    try:
        while len(seen) < 12:
            frames = hub.take(4, timeout=5)
            assert frames, "replay stalled"
            seen += [f.bin_id for f in frames]
            hub.ack(len(frames))
            time.sleep(0.02)
        wait_until(lambda: mgr.finished(), timeout=5)
    finally:
        stop.set()
        mgr.join()
    assert seen == [f"{i:05d}" for i in range(1, 13)]
    assert mgr.states["r"].dropped == 0 and mgr.states["r"].state == "finished"


def test_watchdog_reopens_a_lost_camera_with_backoff() -> None:
    cam = CameraConfig(name="c", source=0, backoff_min_s=0.05, backoff_max_s=0.4)
    script = {"opens": 0, "reads": 0, "fail_opens": 3, "lose_at": 5}
    hub, stop = FrameHub(), threading.Event()
    state = CameraState(name="c")
    hub.add_camera(state)
    opened_at: list[float] = []

    def factory(c: CameraConfig, start: int = 0) -> CountingSource:
        opened_at.append(time.monotonic())
        return CountingSource(c.name, script)

    w = CameraWorker(cam, hub, stop, state, source_factory=factory)
    w.start()
    try:
        # 3 failed opens (backoff 0.05, 0.1, 0.2), then live, lost at read 5, then live again
        assert wait_until(
            lambda: state.reconnects >= 1 and state.state == "live" and state.frames >= 8, timeout=20
        )
    finally:
        stop.set()
        w.join(5)
    assert state.open_failures == 3
    gaps = np.diff(opened_at[:4])
    assert gaps[0] < gaps[1] < gaps[2]  # exponential backoff (with jitter of +-20%)
    assert state.last_error is None


def test_a_stuck_read_is_marked_stalled_and_its_thread_replaced() -> None:
    release = threading.Event()

    class Hanging(CountingSource):
        def read(self) -> Frame:
            if self.script["reads"] == 2:
                self.script["reads"] += 1
                release.wait(10)  # a driver that never returns
            return super().read()

    cam = CameraConfig(name="c", source=0, stale_after_s=0.3, backoff_min_s=0.05)
    script = {"opens": 0, "reads": 0, "delay": 0.01}
    hub, stop = FrameHub(), threading.Event()
    mgr = CaptureManager([cam], hub, stop, source_factory=lambda c, start=0: Hanging(c.name, script))
    mgr.start()
    try:
        assert wait_until(lambda: mgr.states["c"].restarts == 1, timeout=20)
        assert wait_until(lambda: mgr.states["c"].state == "live" and script["reads"] > 10, timeout=20)
    finally:
        release.set()
        stop.set()
        mgr.join()


def test_replay_of_real_abid_images_keeps_keys_verbatim(abid_sample: Path) -> None:
    src = ReplaySource("abid", abid_sample)
    src.open()
    assert src.total == 578
    first = src.read()
    assert first.bin_id == "00001" and first.image.ndim == 3 and first.expected_qty is not None
    from contract.abid import list_keys

    unpadded = ReplaySource("abid", abid_sample, start=list_keys(abid_sample).index("121"))
    unpadded.open()
    f = unpadded.read()
    assert f.bin_id == "121"  # the second naming family, never re-padded
    assert f.jpeg != (abid_sample / "bin-images" / "00121.jpg").read_bytes()


def test_hub_batches_frames_of_several_cameras_ready_together() -> None:
    hub, stop = FrameHub(), threading.Event()
    for name in ("a", "b", "c"):
        hub.add_camera(CameraState(name=name))
    img = np.zeros((2, 2, 3), np.uint8)
    for name in ("a", "b"):
        hub.put(Frame(camera=name, image=img, ts=time.time(), index=1), stop)
    got = hub.take(4, timeout=1)
    assert sorted(f.camera for f in got) == ["a", "b"]
    assert not hub.idle()
    hub.ack(len(got))
    assert hub.idle() and hub.take(4, timeout=0.05) == []
