"""The summary table the demo ends with."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from demo.agent_proc import DEVICE
from demo.model import Recipe, Sets, heldout_figures
from demo.passes import PassResult
from demo.summary import latency_ms, score_alerts

log = logging.getLogger(__name__)

__all__ = ["build_summary", "print_summary"]


def build_summary(
    *,
    out: Path,
    recipe: Recipe,
    sets: Sets,
    made: dict[str, Any],
    result: PassResult,
    truth: dict[str, Any],
    fused: Optional[dict[str, Any]],
) -> dict[str, Any]:
    """The summary of the scored pass (summary.json without broker, console and timings)."""
    alerts = result.monitor.snapshot_alerts()
    score = score_alerts(alerts, result.presented, truth)
    pairs = [
        (datetime.fromisoformat(str(a["frame_ts"])).timestamp(), float(a["_received"]))
        for a in alerts
        if "frame_ts" in a and "_received" in a
    ]
    stats = result.monitor.stats.get(DEVICE, {})
    reports = made.get("reports", [])
    return {
        "evaluated_on": (
            f"held-out synthetic bins (seed {recipe.eval_seed}; training used seed {recipe.seed}, the "
            f"fused thresholds validation bins of seed {recipe.val_seed}): a pipeline check, not an ABID "
            "accuracy figure"
            if sets.synthetic
            else f"real images replayed from {sets.heldout}, with manifest errors injected by the demo"
        ),
        "synthetic": sets.synthetic,
        "bins": len(result.presented),
        "views_per_bin": recipe.views if sets.synthetic else 1,
        "frames": result.frames,
        "seconds": round(result.seconds, 1),
        "frames_per_s": round(result.frames / result.seconds, 2) if result.seconds > 0 else None,
        "score": score.as_dict(),
        "outcomes": result.outcomes,
        "events_without_outcome": result.timed_out,
        "thresholds": fused or {"from": "the model card (fitted per image)"},
        "frame_to_broker_ms": latency_ms(pairs),
        "agent_stats": {
            k: stats.get(k) for k in ("frames_total", "fps", "latency", "verdicts", "alerts_published")
        },
        "heldout_eval": heldout_figures(reports[-1]) if reports else {},
        "in_sample_eval": heldout_figures(reports[0]) if len(reports) > 1 else {},
        "recipe": dict(vars(recipe)),
        "paths": {
            "out": str(out),
            "bundle": str(made["bundle"]),
            "run": str(made["run"]) if made.get("run") else None,
            "reports": [str(p / "report.md") for p in reports],
            "agent_log": str(result.agent.log_path),
            "agent_state": str(result.state_dir),
            "summary": str(out / "summary.json"),
            "alerts": str(out / "alerts.jsonl"),
        },
    }


def _pct(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _ms(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.0f} ms"


def print_summary(summary: dict[str, Any], console: Console) -> None:
    """Print the figures and where everything is."""
    sc = summary["score"]
    lat = summary["frame_to_broker_ms"]
    t = Table(title="binwatch demo: summary", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("evaluated on", escape(summary["evaluated_on"]))
    t.add_row(
        "bins / frames",
        f"{summary['bins']} bins, {summary['frames']} frames ({summary['views_per_bin']} per bin)",
    )
    t.add_row("alerts", f"{sc['alerts']} received ({sc['unique_alerts']} distinct)")
    t.add_row(
        "injected errors",
        f"{sc['injected']}: caught {sc['caught']}, missed {sc['missed']} (recall {_pct(sc['recall'])})",
    )
    t.add_row(
        "false alarms",
        f"{sc['false_alarms']} of {sc['correct']} correct manifests ({_pct(sc['false_alarm_rate'])})",
    )
    fps = summary.get("frames_per_s")
    lat_stages = (summary.get("agent_stats") or {}).get("latency") or {}
    infer = lat_stages.get("infer", {}).get("p50_ms")
    t.add_row(
        "throughput",
        (
            f"{fps} frames/s over {summary['seconds']} s "
            + ("(paced by the stand-in cameras; " if summary["synthetic"] else "(replay; ")
            + f"the model's inference p50 {infer} ms per batch)"
        )
        if fps
        else "n/a",
    )
    th = summary.get("thresholds", {})
    if "mismatch_threshold" in th:
        t.add_row(
            "alert threshold", f"p_expected < {th['mismatch_threshold']:.3f}, fitted on {th['fitted_on']}"
        )
    t.add_row("frame -> broker", f"p50 {_ms(lat['p50'])}, p95 {_ms(lat['p95'])} ({lat['n']} alerts)")
    ho = summary.get("heldout_eval") or {}
    if ho.get("accuracy") is not None:
        t.add_row(
            "held-out accuracy",
            f"{ho['accuracy']:.1%} per image ({ho.get('n_images')} images), RMSE {ho['rmse']:.2f}",
        )
    paths = summary["paths"]
    for report in paths.get("reports", []):
        t.add_row("report (+ plots)", escape(report))
    t.add_row("bundle", escape(paths["bundle"]))
    con = summary.get("console", {})
    t.add_row(
        "console",
        escape(f"{con['url']} (user {con['user']}, password in {con['password_file']})")
        if con.get("url")
        else "not started",
    )
    t.add_row("summary file", escape(paths["summary"]))
    t.add_row("wall time", f"{summary.get('wall_s', 0):.0f} s (steps: {summary.get('timings_s', {})})")
    console.print(t)
    if con.get("url"):
        console.print(
            f"[dim]The console's store is kept: binwatch console serve --data-dir {escape(con['data_dir'])} "
            "shows these alerts again (with a broker to follow).[/dim]"
        )
    if summary["synthetic"]:
        console.print("[dim]Synthetic bins: a pipeline check, never an ABID accuracy figure.[/dim]")
