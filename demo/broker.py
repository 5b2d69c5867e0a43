"""The demo's MQTT broker: a local mosquitto when one is installed, else the embedded amqtt broker
(``pip install 'binwatch[demo]'``), or a real broker given by URL (``--broker``).

Ports are checked before anything starts: a port that is taken stops the demo with the fix.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

from demo.steps import DemoError, stop_process

log = logging.getLogger(__name__)

__all__ = ["Broker", "find_mosquitto", "free_port", "require_free_port", "start_broker"]

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A TCP port the OS says is free now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def require_free_port(port: int, what: str, option: str, host: str = HOST) -> int:
    """``port`` (0: pick a free one) once it is known to be free; else :class:`DemoError`."""
    if port == 0:
        return free_port(host)
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise DemoError(
                f"the {what} port {port} on {host} is taken ({e.strerror or e})",
                f"choose another with {option} PORT (0 picks a free one), or stop what listens there "
                f"(`ss -ltnp 'sport = :{port}'` shows it)",
                code=3,
            ) from e
    return port


def find_mosquitto() -> Optional[str]:
    """mosquitto on PATH, or the Debian/Ubuntu location outside a normal user's PATH."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


@dataclass
class Broker:
    """A running (or external) broker: its URL, the protocol to speak, the process we started."""

    url: str
    kind: str  # mosquitto | amqtt | external
    protocol: str = "5"
    proc: Optional[subprocess.Popen[bytes]] = field(default=None, repr=False)
    log_path: Optional[Path] = None

    def stop(self) -> None:
        stop_process(self.proc, 5)


def _wait_listening(
    port: int, proc: subprocess.Popen[bytes], log_path: Path, timeout_s: float = 15.0
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:] if log_path.exists() else []
            raise DemoError(
                f"the broker exited at start (exit {proc.returncode}): {' | '.join(tail) or 'no output'}",
                f"see {log_path}; if its port is taken choose another with --port",
                code=3,
            )
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.1)
    proc.terminate()
    raise DemoError(f"the broker did not listen on port {port} within {timeout_s:.0f} s", f"see {log_path}")


def _check_external(url: str) -> Broker:
    u = urlparse(url)
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
        raise DemoError(f"--broker {url!r} is not mqtt://host:port or mqtts://host:port", "fix the URL")
    port = u.port or (8883 if u.scheme == "mqtts" else 1883)
    try:
        socket.create_connection((u.hostname, port), timeout=5).close()
    except OSError as e:
        raise DemoError(
            f"cannot reach the broker {url} ({e.strerror or e})",
            "start it, fix --broker, or leave --broker out to run a local one",
            code=3,
        ) from e
    return Broker(url=url, kind="external")


def start_broker(folder: Path, port: int, url: Optional[str] = None) -> Broker:
    """Start mosquitto (or amqtt) on ``port`` (already checked free) writing into ``folder``, or
    check the external ``url``."""
    if url:
        return _check_external(url)
    folder.mkdir(parents=True, exist_ok=True)
    # BINWATCH_DEMO_BROKER=amqtt tries the embedded broker even where mosquitto is installed
    mosquitto = None if os.environ.get("BINWATCH_DEMO_BROKER") == "amqtt" else find_mosquitto()
    if mosquitto:
        conf = folder / "mosquitto.conf"
        lines = [f"listener {port} {HOST}", "allow_anonymous true", "persistence false"]
        if os.getuid() == 0:
            lines.append("user root")
        conf.write_text("\n".join(lines) + "\n")
        cmd, kind, protocol = [mosquitto, "-c", str(conf)], "mosquitto", "5"
    else:
        try:
            import amqtt  # noqa: F401  (only to say what to install)
        except ImportError as e:
            raise DemoError(
                "no MQTT broker: mosquitto is not installed and the embedded amqtt broker is missing",
                "pip install 'binwatch[demo]' (amqtt), or apt-get install mosquitto, or pass --broker URL",
            ) from e
        conf = folder / "amqtt.yaml"
        conf.write_text(
            "listeners:\n  default:\n    type: tcp\n"
            f"    bind: {HOST}:{port}\n"
            "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n"
        )
        script = shutil.which("amqtt") or str(Path(sys.executable).with_name("amqtt"))
        cmd, kind, protocol = [script, "-c", str(conf)], "amqtt", "3.1.1"
    log_path = folder / f"{kind}.log"
    with open(log_path, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    _wait_listening(port, proc, log_path)
    return Broker(url=f"mqtt://{HOST}:{port}", kind=kind, protocol=protocol, proc=proc, log_path=log_path)
