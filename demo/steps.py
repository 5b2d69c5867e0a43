"""Running the demo's steps: each is a ``python -m binwatch ...`` subprocess (the demo never imports
training, export, agent or console), shown as one rich status line, logged to ``OUT/logs/<step>.log``,
and reused on a second run when its options did not change (a ``.done`` marker holding them).

A failing step raises :class:`DemoError` with its cause and the fix; the CLI prints them and exits
non-zero.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from rich.console import Console

from contract.files import write_atomic

log = logging.getLogger(__name__)

__all__ = ["DemoError", "StepRunner", "binwatch_cmd", "marker_path", "options_key", "stop_process"]

_MARKER = ".done.json"  # beside the step's folder (never inside: a bundle must hold only its files)
_MIN_FREE_BYTES = 300 * 1024 * 1024


class DemoError(RuntimeError):
    """A demo step failed: ``cause`` (what happened) and ``fix`` (what to do)."""

    def __init__(self, cause: str, fix: str, code: int = 1) -> None:
        super().__init__(f"{cause}; {fix}")
        self.cause, self.fix, self.code = cause, fix, code


def binwatch_cmd(*args: object) -> list[str]:
    """``python -m binwatch ARGS`` with this interpreter (works without the script on PATH)."""
    return [sys.executable, "-m", "binwatch", *(str(a) for a in args)]


def options_key(options: Mapping[str, Any]) -> str:
    """A short stable key of a step's options (folder names, reuse markers)."""
    text = json.dumps(dict(options), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def marker_path(folder: Path) -> Path:
    """The reuse marker of a step's ``folder``: ``<folder>.done.json`` beside it."""
    return folder.with_name(folder.name + _MARKER)


def check_free_space(folder: Path, need: int = _MIN_FREE_BYTES) -> None:
    """Refuse to start with less than ``need`` bytes free where the demo writes."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < need:
        raise DemoError(
            f"only {free // 2**20} MiB free on the disk of {folder} "
            f"(the demo needs about {need // 2**20} MiB)",
            "free some space, or choose another folder with --out",
        )


@dataclass
class StepRunner:
    """Runs and records the steps of one demo run under ``out``."""

    out: Path
    console: Console
    reuse: bool = True
    env: Optional[dict[str, str]] = None
    timings: dict[str, float] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)

    @property
    def logs(self) -> Path:
        return self.out / "logs"

    def done(self, folder: Path, options: Mapping[str, Any]) -> bool:
        """``folder`` was made by a finished step with the same ``options`` (and reuse is on)."""
        marker = marker_path(folder)
        if not self.reuse or not marker.is_file():
            return False
        try:
            return json.loads(marker.read_text()) == json.loads(json.dumps(dict(options), default=str))
        except (OSError, ValueError):
            return False

    def mark(self, folder: Path, options: Mapping[str, Any]) -> None:
        write_atomic(marker_path(folder), json.dumps(dict(options), sort_keys=True, default=str) + "\n")

    def step(
        self,
        name: str,
        title: str,
        cmd: Sequence[str],
        *,
        folder: Optional[Path] = None,
        options: Optional[Mapping[str, Any]] = None,
        fix: str = "see the log",
        timeout_s: Optional[float] = None,
    ) -> bool:
        """Run ``cmd`` unless ``folder`` already holds its result for ``options``; returns True when
        it ran, False when reused. Raises :class:`DemoError` when the command fails."""
        opts = dict(options or {})
        if folder is not None and self.done(folder, opts):
            self.console.print(f"[green]✓[/green] {title} [dim](reused {folder})[/dim]")
            self.reused.append(name)
            return False
        if folder is not None:
            marker_path(folder).unlink(missing_ok=True)
            if folder.exists() and not self.reuse:
                shutil.rmtree(folder)
        self.run(name, title, cmd, fix=fix, timeout_s=timeout_s)
        if folder is not None:
            self.mark(folder, opts)
        return True

    def run(
        self, name: str, title: str, cmd: Sequence[str], *, fix: str, timeout_s: Optional[float] = None
    ) -> None:
        """Run ``cmd`` with a status line; its output goes to ``logs/<name>.log``."""
        self.logs.mkdir(parents=True, exist_ok=True)
        logfile = self.logs / f"{name}.log"
        t0 = time.monotonic()
        with open(logfile, "wb") as f, self.console.status(f"{title} …"):
            f.write(("$ " + " ".join(cmd) + "\n").encode())
            f.flush()
            try:
                rc = subprocess.run(
                    list(cmd),
                    stdout=f,
                    stderr=subprocess.STDOUT,
                    env=self._env(),
                    timeout=timeout_s,
                    check=False,
                ).returncode
            except subprocess.TimeoutExpired:
                rc = -1
            except OSError as e:
                raise DemoError(f"step {name!r} could not start: {e}", "check the installation") from e
        seconds = time.monotonic() - t0
        self.timings[name] = round(seconds, 1)
        if rc != 0:
            raise DemoError(
                f"step {name!r} failed (exit {rc}{', timed out' if rc == -1 else ''}): {error_line(logfile)}",
                f"{fix} (full log: {logfile})",
            )
        self.console.print(f"[green]✓[/green] {title} [dim]({seconds:.0f} s)[/dim]")

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env["COLUMNS"] = "120"
        env.update(self.env or {})
        return env


def error_line(logfile: Path, limit: int = 300) -> str:
    """The most telling line of a failed step's log: its last ``error:`` line, else its last line."""
    try:
        lines = [ln.strip() for ln in logfile.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    for ln in reversed(lines):
        low = ln.lower()
        if low.startswith("error") or "error:" in low or "Error:" in ln:
            return ln[:limit]
    return lines[-1][:limit] if lines else "(empty log)"


def stop_process(
    proc: Optional[subprocess.Popen[bytes]],
    timeout_s: float,
    *,
    kill_wait_s: float = 5.0,
    what: Optional[str] = None,
) -> Optional[int]:
    """SIGTERM a child the demo started, wait up to ``timeout_s``, then SIGKILL it (logging that,
    naming ``what``, when given). Its exit status; None when there is no process."""
    if proc is None:
        return None
    if proc.poll() is not None:
        return proc.returncode
    proc.terminate()
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        if what:
            log.warning("%s did not stop within %.0f s; killing it", what, timeout_s)
        proc.kill()
        return proc.wait(timeout=kill_wait_s)
