"""``binwatch demo`` from start to end: check ports and disk, make data and model, start the broker
and the console, fit the fused decision thresholds on validation bins, show the agent the held-out
bins with alerts printed as they arrive, and score them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from rich.console import Console
from rich.markup import escape

from contract.files import write_atomic
from demo.broker import Broker, require_free_port, start_broker
from demo.calibrate import fit_thresholds
from demo.console_proc import USER, ConsoleProcess
from demo.model import Recipe, Sets, build_bundle, make_sets
from demo.passes import PassResult, agent_pass, read_verdicts
from demo.report import build_summary, print_summary
from demo.steps import DemoError, StepRunner, check_free_space, options_key
from demo.summary import write_summary
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
    cameras: int = 6
    recipe: Recipe = field(default_factory=Recipe)
    hold: bool = False  # keep broker and console up after the summary until Ctrl-C


def run_demo(s: Settings, console: Console) -> dict[str, Any]:
    """Run the demo; returns the summary (also written to OUT/summary.json). Raises DemoError."""
    t0 = time.monotonic()
    out = s.out.expanduser().resolve()
    check_free_space(out)
    broker_port = 0 if s.broker else require_free_port(s.port, "broker", "--port")
    console_port = require_free_port(s.console_port, "console", "--console-port") if s.console else 0
    if s.images is not None:
        from demo.bins import check_images

        check_images(s.images)
    runner = StepRunner(out, console, reuse=s.reuse)
    bundled = s.model is not None and (s.model / "MANIFEST.json").is_file()
    sets = make_sets(runner, s.recipe, images=s.images, need_train=not bundled)
    made = build_bundle(runner, s.recipe, sets, s.model)
    broker: Optional[Broker] = None
    con: Optional[ConsoleProcess] = None
    try:
        broker = start_broker(out / "broker", broker_port, s.broker)
        console.print(f"[green]✓[/green] MQTT broker: {broker.kind} at {broker.url}")
        cfg = BrokerConfig(broker=broker.url, protocol=broker.protocol)  # type: ignore[arg-type]
        if s.console:
            con = _start_console(out, broker, console_port, console)
        fused = _fused_thresholds(s, out, sets, made["bundle"], cfg, console, runner)
        result, truth = _heldout_pass(s, out, sets, made["bundle"], cfg, console, con, fused)
        alerts = result.monitor.snapshot_alerts()
        write_atomic(out / "alerts.jsonl", "".join(json.dumps(a, sort_keys=True) + "\n" for a in alerts))
        summary = build_summary(
            out=out, recipe=s.recipe, sets=sets, made=made, result=result, truth=truth, fused=fused
        )
        summary["broker"] = {"kind": broker.kind, "url": broker.url}
        summary["console"] = _console_info(con)
        summary.update(timings_s=runner.timings, reused_steps=runner.reused)
        summary["wall_s"] = round(time.monotonic() - t0, 1)
        write_summary(out / "summary.json", summary)
        print_summary(summary, console)
        if s.hold and con is not None:
            _hold(con, console)
    finally:
        if con is not None:
            con.stop()
        if broker is not None:
            broker.stop()
    return summary


def _hold(con: ConsoleProcess, console: Console) -> None:
    console.print(f"Console up at {con.url}; Ctrl-C stops it and the broker.")
    try:
        while con.proc is not None and con.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass


def _console_info(con: Optional[ConsoleProcess]) -> dict[str, Any]:
    if con is None:
        return {"skipped": True}
    return {
        "url": con.url,
        "user": USER,
        "password_file": str(con.password_file),
        "data_dir": str(con.folder / "data"),
    }


def _start_console(out: Path, broker: Broker, port: int, console: Console) -> Optional[ConsoleProcess]:
    proc = ConsoleProcess(folder=out / "console", broker=broker.url, site="demo", port=port)
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


def _on_alert(console: Console, truth: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
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


def _fused_thresholds(
    s: Settings, out: Path, sets: Sets, bundle: Path, cfg: BrokerConfig, console: Console, runner: StepRunner
) -> Optional[dict[str, Any]]:
    """Thresholds for the fused views, fitted on the validation bins (reused when the bundle and the
    bins are the same); None with one view per bin (the card's thresholds apply)."""
    if sets.val is None or s.recipe.views < 2:
        return None
    key = options_key(
        {"bundle": str(bundle), "manifest": _read(bundle / "MANIFEST.json"), "val": str(sets.val)}
    )
    path = out / "thresholds" / f"fused-{key}.json"
    if s.reuse and path.is_file():
        fitted = json.loads(path.read_text())
        console.print(f"[green]✓[/green] Fused-view thresholds [dim](reused {path})[/dim]")
        return fitted
    t0 = time.monotonic()
    result = agent_pass(
        name="validation",
        folder=sets.val,
        out=out,
        cfg=cfg,
        console=console,
        agent_options={"bundle": bundle, "manifest_dir": sets.val / "manifest-mismatch"},
        views=s.recipe.views,
        cameras=s.cameras,
    )
    wrong = json.loads((sets.val / "mismatch.json").read_text())["mismatched"]
    try:
        fitted = fit_thresholds(read_verdicts(result.state_dir), wrong)
    except ValueError as e:
        raise DemoError(f"cannot fit the fused thresholds: {e}", f"see {result.agent.log_path}") from e
    fitted["fitted_on"] = (
        f"{len(result.presented)} validation bins x {s.recipe.views} views ({sets.val.name})"
    )
    write_atomic(path, json.dumps(fitted, indent=2) + "\n")
    runner.timings["fit-thresholds"] = round(time.monotonic() - t0, 1)
    console.print(
        f"[green]✓[/green] Fused-view thresholds from {fitted['fitted_on']}: alert below "
        f"p_expected {fitted['mismatch_threshold']:.3f} ({fitted['false_alarms']} of {fitted['n_correct']} "
        f"correct manifests below it)"
    )
    return fitted


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _heldout_pass(
    s: Settings,
    out: Path,
    sets: Sets,
    bundle: Path,
    cfg: BrokerConfig,
    console: Console,
    con: Optional[ConsoleProcess],
    fused: Optional[dict[str, Any]],
) -> tuple[PassResult, dict[str, Any]]:
    """The scored pass: held-out bins (or the replayed images) against the manifest with errors."""
    from demo.bins import inject_errors, load_truth

    options: dict[str, Any] = {"bundle": bundle, "publish_snapshots": con is not None}
    if fused is not None:
        options["thresholds"] = (fused["mismatch_threshold"], fused["match_threshold"])
    if sets.synthetic:
        truth = load_truth(sets.heldout)
        options["manifest_dir"] = sets.heldout / "manifest-mismatch"
    else:
        csv, truth = inject_errors(sets.heldout, out / "data" / "images-manifest", s.recipe.mismatch, 0)
        options["manifest_csv"] = csv
    console.print("Alerts as they arrive:")
    result = agent_pass(
        name="heldout",
        folder=sets.heldout,
        out=out,
        cfg=cfg,
        console=console,
        agent_options=options,
        views=s.recipe.views if sets.synthetic else 1,
        cameras=s.cameras,
        on_alert=_on_alert(console, truth),
        replay=not sets.synthetic,
    )
    console.print(f"[green]✓[/green] Presented {len(result.presented)} bins in {result.seconds:.0f} s")
    return result, truth
