"""The summary table the demo ends with."""

from __future__ import annotations

import logging
from typing import Any, Optional

from rich.console import Console
from rich.markup import escape
from rich.table import Table

log = logging.getLogger(__name__)

__all__ = ["print_summary"]


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
    t.add_row("throughput", f"{fps} frames/s over {summary['seconds']} s" if fps else "n/a")
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
