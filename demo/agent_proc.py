"""The agent of the demo: its config file (stand-in MJPEG cameras with bin events, or a replay
folder), and the ``python -m binwatch agent run`` process, started and stopped cleanly."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from contract.files import write_atomic
from demo.steps import DemoError, binwatch_cmd, error_line, stop_process

log = logging.getLogger(__name__)

__all__ = ["AgentProcess", "agent_config"]

SITE = "demo"
DEVICE = "cam-01"


def agent_config(
    *,
    state_dir: Path,
    broker: str,
    protocol: str,
    bundle: Path,
    cameras: Optional[dict[str, str]] = None,
    views: int = 1,
    replay: Optional[Path] = None,
    manifest_dir: Optional[Path] = None,
    manifest_csv: Optional[Path] = None,
    publish_snapshots: bool = False,
    threads: int = 2,
    thresholds: Optional[tuple[float, float]] = None,
) -> dict[str, Any]:
    """The agent config: ``cameras`` (name -> MJPEG URL, decided per ``bin`` event on ``views``
    frames fused) or a ``replay`` folder (one frame per bin). ``thresholds`` = (mismatch, match) replace
    the card's."""
    if replay is not None:
        cams: list[dict[str, Any]] = [
            {"name": "replay", "source": str(replay), "kind": "replay", "resume": False}
        ]
    else:
        cams = [
            {"name": name, "source": url, "kind": "url", "trigger": "event", "stale_after_s": 30.0}
            for name, url in sorted((cameras or {}).items())
        ]
    return {
        "agent": {"site": SITE, "device": DEVICE, "state_dir": str(state_dir), "log_level": "INFO"},
        "mqtt": {"broker": broker, "protocol": protocol, "stats_interval_s": 2.0, "stop_drain_s": 10.0},
        "cameras": cams,
        "model": {
            "bundle": str(bundle),
            "backend": "onnxruntime",
            "threads": threads,
            "batch": max(4, views),
        },
        "update": {"enabled": False},
        "decision": {
            "frames_per_event": views,
            "event_timeout_s": 20.0,
            "event_max_age_s": 60.0,
            **({"mismatch_threshold": thresholds[0], "match_threshold": thresholds[1]} if thresholds else {}),
        },
        "manifest": {
            "dir": str(manifest_dir) if manifest_dir else None,
            "csv": str(manifest_csv) if manifest_csv else None,
            "mqtt": False,
        },
        "snapshots": {"enabled": True, "publish": publish_snapshots},
        "http": {"enabled": False},
    }


@dataclass
class AgentProcess:
    """``binwatch agent run -c CONFIG`` as a child process, its output in ``log_path``."""

    config: dict[str, Any]
    folder: Path
    extra_args: Sequence[str] = ()
    proc: Optional[subprocess.Popen[bytes]] = None

    @property
    def log_path(self) -> Path:
        return self.folder / "agent.log"

    @property
    def config_path(self) -> Path:
        return self.folder / "agent.yaml"

    def start(self) -> AgentProcess:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self.config_path, yaml.safe_dump(self.config, sort_keys=False))
        cmd = binwatch_cmd("agent", "run", "-c", self.config_path, *self.extra_args)
        with open(self.log_path, "wb") as f:
            f.write(("$ " + " ".join(cmd) + "\n").encode())
            f.flush()
            self.proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        return self

    def check_running(self) -> None:
        """Raise :class:`DemoError` when the agent has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise DemoError(
                f"the agent exited (exit {self.proc.returncode}): {error_line(self.log_path)}",
                f"see {self.log_path}",
            )

    def wait(self, timeout_s: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as e:
            raise DemoError(
                f"the agent did not finish within {timeout_s:.0f} s", f"see {self.log_path}"
            ) from e

    def stop(self, timeout_s: float = 30.0) -> Optional[int]:
        """SIGTERM (a clean stop: decided verdicts delivered, outbox drained), then SIGKILL."""
        return stop_process(self.proc, timeout_s, kill_wait_s=10, what="the agent")
