"""One agent pass: start an agent on stand-in cameras (or a replay folder), show it a set of bins,
stop it cleanly, and keep what it published and decided."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from rich.console import Console

from contract.topics import Topics
from demo.agent_proc import DEVICE, SITE, AgentProcess, agent_config
from demo.bins import load_bins
from demo.live import Driver, Monitor
from demo.steps import DemoError
from demo.stream import MjpegCamera
from mqttconn.config import BrokerConfig

log = logging.getLogger(__name__)

__all__ = ["PassResult", "agent_pass", "read_verdicts"]


@dataclass
class PassResult:
    """What one pass showed and what came back."""

    presented: list[str]
    frames: int
    seconds: float
    monitor: Monitor
    agent: AgentProcess
    state_dir: Path
    outcomes: dict[str, int] = field(default_factory=dict)
    timed_out: list[str] = field(default_factory=list)  # bin events without an outcome in time


def read_verdicts(state_dir: Path) -> list[dict[str, Any]]:
    """The agent's verdict log of a pass (``verdicts.jsonl``)."""
    path = state_dir / "verdicts.jsonl"
    if not path.is_file():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def agent_pass(
    *,
    name: str,
    folder: Path,
    out: Path,
    cfg: BrokerConfig,
    console: Console,
    agent_options: dict[str, Any],
    views: int,
    cameras: int,
    on_alert: Optional[Callable[[dict[str, Any]], None]] = None,
    replay: bool = False,
) -> PassResult:
    """Run an agent on ``folder``'s bins (``agent_options``: :func:`agent_config`'s keywords)."""
    state = out / "agent" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    monitor = Monitor(cfg, SITE, on_alert=on_alert).start()
    cams: dict[str, MjpegCamera] = {}
    agent: Optional[AgentProcess] = None
    try:
        common = dict(state_dir=state, broker=cfg.broker, protocol=cfg.protocol, **agent_options)
        if replay:
            agent = AgentProcess(agent_config(replay=folder, **common), state, ["--exit-when-done"]).start()
            t0 = time.monotonic()
            with console.status(f"Agent replaying {folder} …"):
                if agent.wait(3600) != 0:
                    agent.check_running()
            seconds = time.monotonic() - t0
            verdicts = read_verdicts(state)
            presented = sorted({str(v["bin_id"]) for v in verdicts if v.get("verdict") != "no_manifest"})
            frames, timed_out = len(verdicts), []
        else:
            bins = load_bins(folder)
            cams = {f"cam{i + 1}": MjpegCamera(bins[0].views[0]).start() for i in range(max(1, cameras))}
            config = agent_config(cameras={n: c.url for n, c in cams.items()}, views=views, **common)
            agent = AgentProcess(config, state).start()
            _wait_cameras(monitor, agent, list(cams), console)
            driver = Driver(monitor, Topics(SITE, DEVICE), cams)
            with console.status(f"{name}: presenting bins …") as status:
                count = [0]

                def progress(bin_id: str, outcome: Optional[dict[str, Any]]) -> None:
                    count[0] += 1
                    status.update(f"{name}: presented {count[0]}/{len(bins)} bins ({views} views each)")

                driver.on_outcome = progress
                seconds = driver.run(bins)
            presented, frames, timed_out = driver.presented, driver.frames, driver.timed_out
        agent.stop()
        time.sleep(1.0)  # the agent's last stats (final totals) and alerts still in flight
    finally:
        for cam in cams.values():
            cam.close()
        if agent is not None:
            agent.stop()
        monitor.stop()
    result = PassResult(presented, frames, seconds, monitor, agent, state, timed_out=timed_out)
    for o in monitor.outcomes.values():
        result.outcomes[str(o.get("outcome"))] = result.outcomes.get(str(o.get("outcome")), 0) + 1
    return result


def _wait_cameras(monitor: Monitor, agent: AgentProcess, names: list[str], console: Console) -> None:
    with console.status("Starting the agent (model load, cameras) …"):
        deadline = time.monotonic() + 120
        while not monitor.wait_for(lambda: monitor.cameras_live(DEVICE, names), 1.0):
            agent.check_running()
            if time.monotonic() > deadline:
                raise DemoError("the agent's cameras did not go live within 120 s", f"see {agent.log_path}")
    console.print(f"[green]✓[/green] Agent running ({len(names)} cameras; log {agent.log_path})")
