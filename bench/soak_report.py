"""Summary, printout and plot of a ``bench/soak.py`` run (samples + end-of-run counts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

MIB = 1024 * 1024
RSS_GROWTH_LIMIT = 10.0  # % after warm-up


def warmup_s(duration_s: float, override: Optional[float]) -> float:
    """Warm-up: the first 20% of the run, at most 3 minutes (``--warmup-s`` overrides)."""
    return override if override is not None else min(0.2 * duration_s, 180.0)


def _after(samples: list[dict[str, Any]], t0: float) -> list[dict[str, Any]]:
    return [s for s in samples if s["t"] >= t0 and s.get("rss_mib") is not None]


def resources(samples: list[dict[str, Any]], warm_s: float) -> dict[str, Any]:
    """RSS at the end of warm-up vs at the end, fds and threads min/max after warm-up."""
    steady = _after(samples, warm_s)
    if not steady:
        return {"warmup_s": warm_s, "note": "no samples after warm-up"}
    first, last = steady[0], steady[-1]
    growth = (last["rss_mib"] - first["rss_mib"]) / first["rss_mib"] * 100 if first["rss_mib"] else 0.0
    return {
        "warmup_s": round(warm_s, 1),
        "rss_warm_mib": round(first["rss_mib"], 1),
        "rss_end_mib": round(last["rss_mib"], 1),
        "rss_max_mib": round(max(s["rss_mib"] for s in steady), 1),
        "rss_growth_pct": round(growth, 2),
        "fds_warm": first["fds"],
        "fds_end": last["fds"],
        "fds_kinds_warm": first.get("fd_kinds"),
        "fds_kinds_end": last.get("fd_kinds"),
        "fds_min": min(s["fds"] for s in steady),
        "fds_max": max(s["fds"] for s in steady),
        "threads_min": min(s["threads"] for s in steady),
        "threads_max": max(s["threads"] for s in steady),
    }


def verdicts(records: list[dict[str, Any]], event_camera: str) -> dict[str, Any]:
    """What the agent's own verdict log says it decided: the seqs of its alerts, the bin events
    (of the event camera) it handled."""
    seqs = {int(r["seq"]) for r in records if r.get("verdict") == "mismatch" and "seq" in r}
    events = {str(r["event_id"]) for r in records if r.get("camera") == event_camera}
    return {"alert_seqs": seqs, "event_ids": events}


def failures(summary: dict[str, Any]) -> list[str]:
    out = []
    a, e, r = summary["alerts"], summary["events"], summary["resources"]
    if a["lost"]:
        out.append(f"{a['lost']} alert(s) decided but never received")
    if e["never_reached_agent"]:
        out.append(
            f"{e['never_reached_agent']} bin event(s) acknowledged by the broker never reached the agent"
        )
    if e.get("outcomes_supported") and e["lost"]:
        out.append(f"{e['lost']} bin event(s) sent without an outcome")
    if r.get("rss_growth_pct", 0.0) > RSS_GROWTH_LIMIT:
        out.append(f"RSS grew {r['rss_growth_pct']:.1f}% after warm-up (limit {RSS_GROWTH_LIMIT:.0f}%)")
    if summary["agent"]["exit_code"] not in (0, None) or summary["agent"]["died"]:
        out.append(
            f"agent exited with {summary['agent']['exit_code']} "
            f"(died during the run: {summary['agent']['died']})"
        )
    return out


def warnings(summary: dict[str, Any]) -> list[str]:
    """Worth a look, not a failure: open fds growing after warm-up (by kind, to see what)."""
    r = summary["resources"]
    if "fds_end" in r and r["fds_end"] > r["fds_warm"] + 4:
        return [
            f"fds grew after warm-up {r['fds_warm']} -> {r['fds_end']}: "
            f"{r['fds_kinds_warm']} -> {r['fds_kinds_end']}"
        ]
    return []


def print_summary(s: dict[str, Any]) -> None:
    r, a, e = s["resources"], s["alerts"], s["events"]
    print(f"soak: {s['duration_s']:.0f} s, {s['samples']} samples, {s['broker_restarts']} broker restarts")
    if "rss_warm_mib" in r:
        print(
            f"  RSS     {r['rss_warm_mib']:.1f} MiB at warm-up end ({r['warmup_s']:.0f} s) -> "
            f"{r['rss_end_mib']:.1f} MiB at the end ({r['rss_growth_pct']:+.1f}%), max {r['rss_max_mib']:.1f}"
        )
        print(
            f"  fds     {r['fds_warm']} -> {r['fds_end']} (min {r['fds_min']}, max {r['fds_max']})   "
            f"threads {r['threads_min']}..{r['threads_max']} (after warm-up)"
        )
    else:
        print(f"  resources: {r.get('note')}")
    print(
        f"  alerts  decided {a['decided']} (stats verdicts.mismatch {a['stats_mismatch']}), "
        f"received {a['received']} (+{a['duplicates']} duplicates), lost {a['lost']}, "
        f"seq gaps {a['seq_gaps']}"
    )
    if e.get("outcomes_supported"):
        print(
            f"  events  sent {e['sent']} (made {e['generated']}), reached the agent {e['reached_agent']}, "
            f"outcomes {e['outcomes']} {e['outcome_kinds']}, lost {e['lost']}"
        )
        if e.get("failed_reasons"):
            print(f"          failed outcomes by reason: {e['failed_reasons']}")
    else:
        print(
            f"  events  sent {e['sent']} (made {e['generated']}), reached the agent {e['reached_agent']}; "
            "no outcomes: agent does not publish bin/outcome yet"
        )
    print(f"  outbox depth at the end {s['outbox_depth_end']}, drained in {s['drain_s']:.1f} s")
    for w in s.get("warnings", []):
        print(f"  WARN: {w}")
    for f in s["failures"]:
        print(f"  FAIL: {f}")
    print("  OK" if not s["failures"] else "  -> non-zero exit")


def plot(samples: list[dict[str, Any]], restarts: list[float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] / 60 for s in samples]
    fig, axes = plt.subplots(3, 2, figsize=(12, 9), sharex=True)
    panels = [
        ("RSS (MiB)", [("rss_mib", "agent RSS")]),
        ("open fds", [("fds", "fds")]),
        ("threads", [("threads", "threads")]),
        ("outbox", [("outbox_depth", "stats.outbox_depth"), ("outbox_rows_db", "rows in agent.db")]),
        ("alerts (cumulative)", [("alerts_decided", "decided (stats)"), ("alerts_received", "received")]),
        ("bin events (cumulative)", [("events_sent", "sent (acked)"), ("outcomes_received", "outcomes")]),
    ]
    for ax, (label, series) in zip(axes.flat, panels, strict=True):
        for key, name in series:
            ax.plot(t, [s.get(key) if s.get(key) is not None else float("nan") for s in samples], label=name)
        for x in restarts:
            ax.axvline(x / 60, color="tab:red", alpha=0.35, linestyle="--", linewidth=0.8)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("minutes (dashed red: broker restarts)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
