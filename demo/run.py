"""``binwatch demo`` from start to end: check ports and disk, make data and model, start the broker,
the console and the agent, present the held-out bins, show alerts as they arrive, and score them.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from rich.console import Console
from rich.markup import escape

from contract.files import write_atomic
from contract.topics import Topics
from demo.agent_proc import DEVICE, SITE, AgentProcess, agent_config
from demo.bins import inject_errors, load_bins, load_truth
from demo.broker import Broker, require_free_port, start_broker
from demo.console_proc import USER, ConsoleProcess
from demo.live import Driver, Monitor
from demo.model import Recipe, build_bundle, heldout_figures, make_sets
from demo.report import print_summary
from demo.steps import DemoError, StepRunner, check_free_space
from demo.stream import MjpegCamera
from demo.summary import latency_ms, score_alerts, write_summary
from mqttconn.config import BrokerConfig

log = logging.getLogger(__name__)

__all__ = ["Settings", "run_demo"]


@dataclass
class Settings:
    out: Path = Path("demo-out")
    reuse: bool = True
    model: Optional[Path] = None
    broker: Optional[str] = None
    images: Optional[Path] = None
    console: bool = True
    port: int = 0
    console_port: int = 0
    cameras: int = 4
    recipe: Recipe = field(default_factory=Recipe)
    hold: bool = False  # keep broker and console up after the summary until Ctrl-C


@dataclass
class _Live:
    """What runs while the bins are shown (stopped in reverse order)."""

    broker: Optional[Broker] = None
    console: Optional[ConsoleProcess] = None
    agent: Optional[AgentProcess] = None
    monitor: Optional[Monitor] = None
    cameras: dict[str, MjpegCamera] = field(default_factory=dict)

    def stop(self) -> None:
        for cam in self.cameras.values():
            cam.close()
        if self.agent is not None:
            self.agent.stop()
        if self.monitor is not None:
            self.monitor.stop()
        if self.console is not None:
            self.console.stop()
        if self.broker is not None:
            self.broker.stop()


def run_demo(s: Settings, console: Console) -> dict[str, Any]:
    """Run the demo; returns the summary (also written to OUT/summary.json). Raises DemoError."""
    t0 = time.monotonic()
    out = s.out.expanduser().resolve()
    check_free_space(out)
    broker_port = 0 if s.broker else require_free_port(s.port, "broker", "--port")
    console_port = require_free_port(s.console_port, "console", "--console-port") if s.console else 0
    runner = StepRunner(out, console, reuse=s.reuse)
    r = s.recipe
    bundled = s.model is not None and (s.model / "MANIFEST.json").is_file()
    sets = make_sets(runner, r, images=s.images, need_train=not bundled)
    made = build_bundle(runner, r, sets, s.model)
    live = _Live()
    try:
        live.broker = start_broker(out / "broker", broker_port, s.broker)
        console.print(f"[green]✓[/green] MQTT broker: {live.broker.kind} at {live.broker.url}")
        cfg = BrokerConfig(broker=live.broker.url, protocol=live.broker.protocol)  # type: ignore[arg-type]
        if s.console:
            live.console = _start_console(out, live.broker, console_port, console)
        truth, presented, seconds, frames = _show_bins(s, out, sets, made["bundle"], live, cfg, console)
        if live.agent is not None:
            live.agent.stop()
        time.sleep(1.0)  # the last stats (final totals) and alerts still in flight
        summary = _summarize(s, out, sets, made, live, truth, presented, seconds, frames)
        summary["timings_s"] = runner.timings
        summary["reused_steps"] = runner.reused
        summary["wall_s"] = round(time.monotonic() - t0, 1)
        write_summary(out / "summary.json", summary)
        print_summary(summary, console)
        if s.hold and live.console is not None:
            console.print(f"Console up at {live.console.url}; Ctrl-C stops it and the broker.")
            try:
                while live.console.proc is not None and live.console.proc.poll() is None:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
    finally:
        live.stop()
    return summary


def _start_console(out: Path, broker: Broker, port: int, console: Console) -> Optional[ConsoleProcess]:
    proc = ConsoleProcess(folder=out / "console", broker=broker.url, site=SITE, port=port)
    with console.status("Starting the operator console …"):
        ok = proc.start()
    if not ok:
        console.print(
            f"[yellow]![/yellow] console skipped: {escape(proc.problem)} "
            f"(log: {proc.log_path}; run with --no-console to leave it out)"
        )
        return None
    console.print(
        f"[green]✓[/green] Operator console: {proc.url} (user {USER!r}, password in {proc.password_file})"
    )
    return proc


def _on_alert(console: Console, truth: dict[str, Any]):  # -> Callable[[dict], None]
    def show(a: dict[str, Any]) -> None:
        bin_id = str(a.get("bin_id"))
        verdict = "[green]injected error caught[/green]" if bin_id in truth else "[red]false alarm[/red]"
        p = a.get("p_expected")
        p_text = f", p_expected {p:.3f}" if isinstance(p, (int, float)) else ""
        console.print(
            f"  [bold]ALERT[/bold] bin {escape(bin_id)}: manifest {a.get('expected_qty')}, "
            f"counted {a.get('predicted_qty')}{p_text} -> {verdict}"
        )

    return show


def _show_bins(
    s: Settings, out: Path, sets: Any, bundle: Path, live: _Live, cfg: BrokerConfig, console: Console
) -> tuple[dict[str, Any], list[str], float, int]:
    """Start the agent and present the bins; returns (truth, presented bin ids, seconds, frames)."""
    state = out / "agent" / f"state-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if sets.synthetic:
        truth = load_truth(sets.heldout)
        manifest_dir, manifest_csv = sets.heldout / "manifest-mismatch", None
    else:
        manifest_csv, truth = inject_errors(
            sets.heldout, out / "data" / "images-manifest", s.recipe.mismatch, 0
        )
        manifest_dir = None
    live.monitor = Monitor(cfg, SITE, on_alert=_on_alert(console, truth)).start()
    common = dict(state_dir=state, broker=cfg.broker, protocol=cfg.protocol, bundle=bundle)
    common.update(
        manifest_dir=manifest_dir, manifest_csv=manifest_csv, publish_snapshots=live.console is not None
    )
    if not sets.synthetic:
        return _replay(live, common, sets.heldout, truth, manifest_csv, out, console)
    bins = load_bins(sets.heldout)
    blank = bins[0].views[0]
    live.cameras = {f"cam{i + 1}": MjpegCamera(blank).start() for i in range(max(1, s.cameras))}
    config = agent_config(cameras={n: c.url for n, c in live.cameras.items()}, views=s.recipe.views, **common)
    live.agent = AgentProcess(config, out / "agent").start()
    with console.status("Starting the agent (model load, cameras) …"):
        deadline = time.monotonic() + 120
        while not live.monitor.wait_for(lambda: live.monitor.cameras_live(DEVICE, list(live.cameras)), 1.0):
            live.agent.check_running()
            if time.monotonic() > deadline:
                raise DemoError(
                    "the agent's cameras did not go live within 120 s", f"see {live.agent.log_path}"
                )
    console.print(f"[green]✓[/green] Agent running ({len(live.cameras)} cameras; log {live.agent.log_path})")
    topics = Topics(SITE, DEVICE)
    driver = Driver(live.monitor, topics, live.cameras)
    with console.status("") as status:
        done = [0]

        def progress(bin_id: str, outcome: Optional[dict[str, Any]]) -> None:
            done[0] += 1
            status.update(f"Presenting bins: {done[0]}/{len(bins)} ({s.recipe.views} views each)")

        driver.on_outcome = progress
        seconds = driver.run(bins)
    console.print(f"[green]✓[/green] Presented {len(driver.presented)} bins in {seconds:.0f} s")
    return truth, driver.presented, seconds, driver.frames


def _replay(
    live: _Live,
    common: dict[str, Any],
    folder: Path,
    truth: dict[str, Any],
    csv: Path,
    out: Path,
    console: Console,
) -> tuple[dict[str, Any], list[str], float, int]:
    """Real images: the agent replays the folder, one frame per bin, and exits when done."""
    config = agent_config(replay=folder, **common)
    live.agent = AgentProcess(config, out / "agent", extra_args=["--exit-when-done"]).start()
    t0 = time.monotonic()
    with console.status(f"Agent replaying {folder} …"):
        rc = live.agent.wait(3600)
    if rc != 0:
        live.agent.check_running()
    presented = [ln.split(",")[0] for ln in csv.read_text().splitlines()[1:] if ln.strip()]
    return truth, presented, time.monotonic() - t0, len(presented)


def _summarize(
    s: Settings,
    out: Path,
    sets: Any,
    made: dict[str, Any],
    live: _Live,
    truth: dict[str, Any],
    presented: list[str],
    seconds: float,
    frames: int,
) -> dict[str, Any]:
    assert live.monitor is not None
    alerts = live.monitor.snapshot_alerts()
    write_atomic(out / "alerts.jsonl", "".join(json.dumps(a, sort_keys=True) + "\n" for a in alerts))
    score = score_alerts(alerts, presented, truth)
    pairs = [
        (datetime.fromisoformat(str(a["frame_ts"])).timestamp(), a["_received"])
        for a in alerts
        if "frame_ts" in a
    ]
    stats = live.monitor.stats.get(DEVICE, {})
    outcomes: dict[str, int] = {}
    for o in live.monitor.outcomes.values():
        outcomes[str(o.get("outcome"))] = outcomes.get(str(o.get("outcome")), 0) + 1
    reports = made.get("reports", [])
    return {
        "evaluated_on": (
            f"held-out synthetic bins (seed {s.recipe.eval_seed}; training used seed {s.recipe.seed}): "
            "a pipeline check, not an ABID accuracy figure"
            if sets.synthetic
            else f"real images replayed from {sets.heldout}, with manifest errors injected by the demo"
        ),
        "synthetic": sets.synthetic,
        "bins": len(presented),
        "views_per_bin": s.recipe.views if sets.synthetic else 1,
        "frames": frames,
        "seconds": round(seconds, 1),
        "frames_per_s": round(frames / seconds, 2) if seconds > 0 else None,
        "score": score.as_dict(),
        "outcomes": outcomes,
        "frame_to_broker_ms": latency_ms(pairs),
        "agent_stats": {
            k: stats.get(k) for k in ("frames_total", "fps", "latency", "verdicts", "alerts_published")
        },
        "heldout_eval": heldout_figures(reports[-1]) if reports else {},
        "in_sample_eval": heldout_figures(reports[0]) if len(reports) > 1 else {},
        "recipe": {k: v for k, v in vars(s.recipe).items()},
        "broker": {
            "kind": live.broker.kind if live.broker else None,
            "url": live.broker.url if live.broker else None,
        },
        "console": (
            {
                "url": live.console.url,
                "user": USER,
                "password_file": str(live.console.password_file),
                "data_dir": str(live.console.folder / "data"),
            }
            if live.console
            else {"skipped": True}
        ),
        "paths": {
            "out": str(out),
            "bundle": str(made["bundle"]),
            "run": str(made["run"]) if made.get("run") else None,
            "reports": [str(p / "report.md") for p in reports],
            "agent_log": str(live.agent.log_path) if live.agent else None,
            "summary": str(out / "summary.json"),
            "alerts": str(out / "alerts.jsonl"),
        },
    }
