"""The operator console of the demo (``binwatch console serve``), with a login made for the demo.

Optional: when it cannot start (not installed, not ready), the demo says so and goes on without it.
"""

from __future__ import annotations

import logging
import secrets
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from contract.files import write_atomic
from demo.steps import binwatch_cmd, error_line, stop_process

log = logging.getLogger(__name__)

__all__ = ["ConsoleProcess"]

USER = "demo"


@dataclass
class ConsoleProcess:
    """``binwatch console serve`` on 127.0.0.1:``port`` with its data under ``folder``."""

    folder: Path
    broker: str
    site: str
    port: int
    proc: Optional[subprocess.Popen[bytes]] = None
    problem: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def password_file(self) -> Path:
        return self.folder / "demo-password.txt"

    @property
    def log_path(self) -> Path:
        return self.folder / "console.log"

    def start(self, timeout_s: float = 60.0) -> bool:
        """Start it and wait until it answers; False (``problem`` says why) when it does not."""
        self.folder.mkdir(parents=True, exist_ok=True)
        data = self.folder / "data"
        if not self.password_file.is_file():
            write_atomic(self.password_file, secrets.token_urlsafe(12) + "\n", mode=0o600)
        with open(self.folder / "user-add.log", "wb") as f:
            rc = subprocess.run(
                binwatch_cmd(
                    "console", "user", "add", USER, "--password-file", self.password_file, "--data-dir", data
                ),
                stdout=f,
                stderr=subprocess.STDOUT,
                check=False,
                timeout=120,
            ).returncode
        if rc != 0 and "exist" not in (self.folder / "user-add.log").read_text(errors="replace").lower():
            self.problem = f"`binwatch console user add` failed: {error_line(self.folder / 'user-add.log')}"
            return False
        cmd = binwatch_cmd(
            "console",
            "serve",
            "--broker",
            self.broker,
            "--site",
            self.site,
            "--port",
            self.port,
            "--data-dir",
            data,
        )
        with open(self.log_path, "wb") as f:
            self.proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.problem = (
                    f"`binwatch console serve` exited ({self.proc.returncode}): {error_line(self.log_path)}"
                )
                return False
            if self._answers():
                return True
            time.sleep(0.5)
        self.problem = f"`binwatch console serve` did not answer on {self.url} within {timeout_s:.0f} s"
        self.stop()
        return False

    def _answers(self) -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", self.port)) != 0:
                return False
        try:
            with urllib.request.urlopen(self.url, timeout=2) as r:
                return r.status < 500
        except OSError as e:
            return getattr(e, "code", 500) < 500

    def stop(self) -> None:
        stop_process(self.proc, 10)
